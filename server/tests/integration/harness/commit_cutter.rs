//! A TCP proxy between a test server and its database that can lose a
//! COMMIT's acknowledgement: once armed, it forwards the next COMMIT to the
//! database and then cuts the client's connection, so the database commits
//! while the server never hears it did.
//!
//! It looks for the bytes `COMMIT` in what the client sends (PostgreSQL's
//! Query and Parse messages and MySQL's COM_QUERY carry the statement as
//! text; none of the server's other statements contain the word), keeps
//! forwarding to the database for a moment so the whole statement arrives,
//! sends nothing back, and closes both sides.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct CommitCutter {
    pub port: u16,
    armed: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CommitCutter {
    /// Listens on a free port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let armed = Arc::new(AtomicUsize::new(0));
        let cut = Arc::new(AtomicUsize::new(0));
        let (armed_task, cut_task) = (armed.clone(), cut.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (armed, cut, upstream) =
                    (armed_task.clone(), cut_task.clone(), upstream.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, armed, cut).await;
                    }
                });
            }
        });
        Self {
            port,
            armed,
            cut,
            task,
        }
    }

    /// Cuts the connection after each of the next `commits` COMMITs.
    pub fn arm(&self, commits: usize) {
        self.armed.store(commits, Ordering::SeqCst);
    }

    /// How many COMMITs were forwarded and then cut.
    pub fn cut(&self) -> usize {
        self.cut.load(Ordering::SeqCst)
    }
}

impl Drop for CommitCutter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long the proxy keeps forwarding to the database after a COMMIT it
/// cuts, so the rest of the statement's messages arrive (the database then
/// commits); nothing comes back to the client meanwhile.
const GRACE: std::time::Duration = std::time::Duration::from_millis(100);

async fn relay(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let silenced = AtomicBool::new(false);
    let upstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut cut_at = None;
        loop {
            let read = match cut_at {
                None => client_read.read(&mut buf).await,
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, client_read.read(&mut buf)).await {
                        Ok(read) => read,
                        Err(_) => return,
                    }
                }
            };
            let n = match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
            let commit = buf[..n].windows(6).any(|w| w == b"COMMIT");
            if cut_at.is_none()
                && commit
                && armed
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                cut.fetch_add(1, Ordering::SeqCst);
                silenced.store(true, Ordering::SeqCst);
                cut_at = Some(tokio::time::Instant::now() + GRACE);
            }
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if silenced.load(Ordering::SeqCst) {
                continue;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = upstream => {},
        () = downstream => {},
    }
}
