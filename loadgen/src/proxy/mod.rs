//! A database proxy for the fault run: it forwards TCP between the servers
//! and PostgreSQL or MySQL/MariaDB, reads what the clients send, and when
//! armed cuts a client's connection right after forwarding its COMMIT.
//!
//! That is the fault no other tool here makes: the database commits, but
//! the server never hears so. Its transaction's outcome is unknown to it,
//! and whatever it answers the buyer, the order exists. A correct shop
//! answers a retry of that key with the order.
//!
//! # How a cut goes
//!
//! `POST /cut?commits=N` on the `--control` endpoint arms the next `N`
//! COMMITs (`N = 0` disarms). For each connection one task copies client
//! bytes upstream through a protocol [`Scanner`] ([`postgres`],
//! [`mysql`]), which marks where each BEGIN, COMMIT and ROLLBACK ends; the
//! other copies the database's bytes back. When a COMMIT ends and a cut is
//! armed, the first task marks the connection cut, forwards the bytes up to
//! and including the COMMIT, and closes the client's side; the database's
//! answer (the acknowledgement) is read and thrown away, and only then is
//! the upstream side closed, so the database runs the COMMIT to its end.
//!
//! `GET /stats` tells what passed: connections, messages by type, the
//! transaction statements by how they were sent (which is how the fault
//! run checks what sqlx really sends), COMMITs cut and acknowledgements
//! swallowed.

pub mod mysql;
pub mod postgres;

use crate::control::{self, Command, Reply};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

/// How long a cut connection waits for the database's acknowledgement
/// before closing the upstream side anyway.
const ACK_WAIT: Duration = Duration::from_secs(5);
const BUFFER: usize = 64 * 1024;

/// Which wire protocol the proxy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Postgres,
    Mysql,
}

/// A transaction statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement {
    Begin,
    Commit,
    Rollback,
}

/// How a statement was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// PostgreSQL `'Q'`.
    PgSimpleQuery,
    /// PostgreSQL Parse/Bind/Execute/Sync.
    PgExtended,
    /// MySQL `COM_QUERY`.
    MySqlQuery,
}

impl Form {
    fn label(self) -> &'static str {
        match self {
            Self::PgSimpleQuery => "simple_query",
            Self::PgExtended => "extended_query",
            Self::MySqlQuery => "com_query",
        }
    }
}

/// What a scanner found in a chunk of client bytes; offsets are in the
/// chunk, `end` one past the last byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A whole message of this type (PostgreSQL) or command (MySQL).
    Message(u8),
    Statement {
        statement: Statement,
        form: Form,
        end: usize,
    },
    /// A PostgreSQL SSLRequest/GSSENCRequest: not forwarded, answered `N`.
    RefuseEncryption { start: usize, end: usize },
}

/// Reads one direction (client to database) of one connection's protocol.
pub trait Scanner: Send {
    /// Reads the next bytes of the stream, adding what it finds to `marks`.
    fn scan(&mut self, chunk: &[u8], marks: &mut Vec<Mark>);
}

/// The transaction statement `sql` is, if any: `BEGIN`, `START
/// TRANSACTION ...`, `COMMIT` or `ROLLBACK` (not to a savepoint), in any
/// case, with or without a final `;`.
pub fn classify(sql: &[u8]) -> Option<Statement> {
    let text = std::str::from_utf8(sql).ok()?;
    let text = text.trim().trim_end_matches(';').trim_end();
    let starts = |word: &str| {
        text.get(..word.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(word))
            && text[word.len()..]
                .chars()
                .next()
                .is_none_or(char::is_whitespace)
    };
    let only = |word: &str| text.eq_ignore_ascii_case(word);
    if starts("BEGIN") || starts("START TRANSACTION") {
        Some(Statement::Begin)
    } else if only("COMMIT") || only("COMMIT WORK") {
        Some(Statement::Commit)
    } else if only("ROLLBACK") || only("ROLLBACK WORK") {
        Some(Statement::Rollback)
    } else {
        None
    }
}

/// What every connection shares: the arming and the counters.
struct Shared {
    protocol: Protocol,
    armed: AtomicU64,
    connections: AtomicU64,
    encryption_refused: AtomicU64,
    commits_cut: AtomicU64,
    acks_swallowed: AtomicU64,
    messages: [AtomicU64; 256],
    statements: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            armed: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            encryption_refused: AtomicU64::new(0),
            commits_cut: AtomicU64::new(0),
            acks_swallowed: AtomicU64::new(0),
            messages: std::array::from_fn(|_| AtomicU64::new(0)),
            statements: Mutex::new(BTreeMap::new()),
        }
    }

    /// Takes one armed cut, if any is left.
    fn take_cut(&self) -> bool {
        self.armed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    fn count_statement(&self, statement: Statement, form: Form) {
        let name = format!("{statement:?}/{}", form.label()).to_lowercase();
        *self
            .statements
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name)
            .or_default() += 1;
    }

    fn message_name(&self, kind: u8) -> String {
        match self.protocol {
            Protocol::Postgres if kind.is_ascii_graphic() => (kind as char).to_string(),
            Protocol::Postgres => format!("0x{kind:02x}"),
            Protocol::Mysql => match kind {
                0x01 => "COM_QUIT".into(),
                0x02 => "COM_INIT_DB".into(),
                0x03 => "COM_QUERY".into(),
                0x0e => "COM_PING".into(),
                0x11 => "COM_CHANGE_USER".into(),
                0x16 => "COM_STMT_PREPARE".into(),
                0x17 => "COM_STMT_EXECUTE".into(),
                0x19 => "COM_STMT_CLOSE".into(),
                0x1a => "COM_STMT_RESET".into(),
                0x1f => "COM_RESET_CONNECTION".into(),
                other => format!("0x{other:02x}"),
            },
        }
    }

    fn stats(&self) -> serde_json::Value {
        let messages: BTreeMap<String, u64> = self
            .messages
            .iter()
            .enumerate()
            .map(|(kind, n)| (kind as u8, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| (self.message_name(kind), n))
            .collect();
        let statements = self
            .statements
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        serde_json::json!({
            "protocol": format!("{:?}", self.protocol).to_lowercase(),
            "connections": self.connections.load(Ordering::Relaxed),
            "encryption_refused": self.encryption_refused.load(Ordering::Relaxed),
            "armed": self.armed.load(Ordering::Relaxed),
            "commits_cut": self.commits_cut.load(Ordering::Relaxed),
            "acks_swallowed": self.acks_swallowed.load(Ordering::Relaxed),
            "statements": statements,
            "messages": messages,
        })
    }

    /// `POST /cut?commits=N`, `GET /stats`.
    fn command(&self, c: Command<'_>) -> Reply {
        match (c.method, c.path) {
            ("GET", "/stats") => Reply::ok(self.stats()),
            ("POST", "/cut") => match c.param("commits").and_then(|n| n.parse::<u64>().ok()) {
                Some(n) => {
                    self.armed.store(n, Ordering::Release);
                    Reply::ok(self.stats())
                }
                None => Reply::bad("commits= must be a number (0 disarms)"),
            },
            _ => Reply::not_found(),
        }
    }
}

/// The client's side for the database's bytes (and the proxy's own
/// refusal of encryption); `None` once closed.
type ClientWriter = Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>>;

/// Copies the database's bytes to the client until either side closes. On
/// a cut connection the first bytes to come are the COMMIT's
/// acknowledgement: they are dropped with the client's side.
async fn downstream(
    mut upstream: tokio::net::tcp::OwnedReadHalf,
    client: ClientWriter,
    cut: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match upstream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut writer = client.lock().await;
        if cut.load(Ordering::Acquire) {
            shared.acks_swallowed.fetch_add(1, Ordering::Relaxed);
            break;
        }
        let Some(w) = writer.as_mut() else { break };
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // Closes the client's side (a FIN, or nothing if it is gone already).
    client.lock().await.take();
}

/// One client connection, until both sides are done.
async fn serve(client: TcpStream, upstream: String, shared: Arc<Shared>) {
    let Ok(database) = TcpStream::connect(&upstream).await else {
        return;
    };
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let _ = database.set_nodelay(true);
    let (mut client_in, client_out) = client.into_split();
    let (database_in, mut database_out) = database.into_split();
    let client_out: ClientWriter = Arc::new(tokio::sync::Mutex::new(Some(client_out)));
    let cut = Arc::new(AtomicBool::new(false));
    let back = tokio::spawn(downstream(
        database_in,
        client_out.clone(),
        cut.clone(),
        shared.clone(),
    ));
    let mut scanner: Box<dyn Scanner> = match shared.protocol {
        Protocol::Postgres => Box::new(postgres::PgScanner::default()),
        Protocol::Mysql => Box::new(mysql::MySqlScanner::default()),
    };
    let mut buf = vec![0u8; BUFFER];
    let mut marks = Vec::new();
    'connection: loop {
        let n = match client_in.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = database_out.shutdown().await;
                break;
            }
            Ok(n) => n,
        };
        marks.clear();
        scanner.scan(&buf[..n], &mut marks);
        let mut forwarded = 0;
        for mark in &marks {
            match *mark {
                Mark::Message(kind) => {
                    shared.messages[usize::from(kind)].fetch_add(1, Ordering::Relaxed);
                }
                Mark::RefuseEncryption { start, end } => {
                    if database_out
                        .write_all(&buf[forwarded..start])
                        .await
                        .is_err()
                    {
                        break 'connection;
                    }
                    if let Some(w) = client_out.lock().await.as_mut() {
                        let _ = w.write_all(b"N").await;
                    }
                    shared.encryption_refused.fetch_add(1, Ordering::Relaxed);
                    forwarded = end;
                }
                Mark::Statement {
                    statement,
                    form,
                    end,
                } => {
                    shared.count_statement(statement, form);
                    if statement == Statement::Commit && shared.take_cut() {
                        cut.store(true, Ordering::Release);
                        let _ = database_out.write_all(&buf[forwarded..end]).await;
                        client_out.lock().await.take();
                        shared.commits_cut.fetch_add(1, Ordering::Relaxed);
                        // Let the database finish and answer before its
                        // side is closed too.
                        let _ = tokio::time::timeout(ACK_WAIT, back).await;
                        return;
                    }
                }
            }
        }
        if database_out.write_all(&buf[forwarded..n]).await.is_err() {
            break;
        }
    }
    let _ = tokio::time::timeout(ACK_WAIT, back).await;
}

/// Runs the proxy until SIGINT or SIGTERM, then prints its stats.
///
/// # Errors
/// An address is not loopback, or cannot be bound.
pub async fn run(args: crate::cli::ProxyArgs) -> anyhow::Result<bool> {
    let upstream: std::net::SocketAddr = args
        .upstream
        .parse()
        .map_err(|_| anyhow::anyhow!("--upstream must be ip:port"))?;
    anyhow::ensure!(
        upstream.ip().is_loopback(),
        "the proxy forwards to loopback only"
    );
    let listener = control::bind_loopback(&args.listen).await?;
    let shared = Arc::new(Shared::new(args.protocol));
    let control = match &args.control {
        Some(addr) => {
            let listener = control::bind_loopback(addr).await?;
            let shared = shared.clone();
            Some(control::spawn(
                listener,
                Arc::new(move |c: Command<'_>| shared.command(c)),
            ))
        }
        None => None,
    };
    println!(
        "proxy: {} → {} ({:?})",
        args.listen, args.upstream, args.protocol
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(serve(client, upstream.to_string(), shared.clone()));
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    if let Some(control) = control {
        control.abort();
    }
    println!("proxy: {}", shared.stats());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_statements_are_told_apart() {
        assert_eq!(classify(b"COMMIT"), Some(Statement::Commit));
        assert_eq!(classify(b"  commit ;\n"), Some(Statement::Commit));
        assert_eq!(classify(b"COMMIT WORK"), Some(Statement::Commit));
        assert_eq!(classify(b"BEGIN"), Some(Statement::Begin));
        assert_eq!(
            classify(b"START TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            Some(Statement::Begin)
        );
        assert_eq!(classify(b"ROLLBACK"), Some(Statement::Rollback));
        assert_eq!(classify(b"ROLLBACK TO SAVEPOINT a"), None);
        assert_eq!(classify(b"RELEASE SAVEPOINT _sqlx_savepoint_1"), None);
        assert_eq!(classify(b"COMMITTED_ORDERS"), None);
        assert_eq!(classify(b"BEGINNING"), None);
        assert_eq!(classify(b"\xff\xfe"), None);
    }

    #[test]
    fn armed_cuts_are_used_up_one_by_one() {
        let shared = Shared::new(Protocol::Postgres);
        assert!(!shared.take_cut());
        let reply = shared.command(Command::new("POST", "/cut", "commits=2"));
        assert_eq!(reply.status, 200);
        assert!(shared.take_cut() && shared.take_cut());
        assert!(!shared.take_cut(), "two were armed");
        assert_eq!(
            shared
                .command(Command::new("POST", "/cut", "commits=x"))
                .status,
            400
        );
    }

    /// A fake database that answers every client chunk with `ack` and
    /// counts what it received, behind a proxy armed to cut one COMMIT.
    #[tokio::test]
    async fn a_cut_commit_reaches_the_database_but_its_acknowledgement_never_reaches_the_client() {
        let database = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let database_addr = database.local_addr().expect("address").to_string();
        let received = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let received_by_db = received.clone();
        tokio::spawn(async move {
            let (mut conn, _) = database.accept().await.expect("accepts");
            let mut buf = [0u8; 1024];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        received_by_db.lock().await.extend_from_slice(&buf[..n]);
                        let _ = conn.write_all(b"ack").await;
                    }
                }
            }
        });
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let proxy_addr = proxy.local_addr().expect("address");
        let shared = Arc::new(Shared::new(Protocol::Mysql));
        shared.armed.store(1, Ordering::Release);
        let serving = shared.clone();
        tokio::spawn(async move {
            let (client, _) = proxy.accept().await.expect("accepts");
            serve(client, database_addr, serving).await;
        });

        let mut client = TcpStream::connect(proxy_addr).await.expect("connects");
        let select = b"\x09\x00\x00\x00\x03SELECT 1";
        client.write_all(select).await.expect("writes");
        let mut ack = [0u8; 3];
        client.read_exact(&mut ack).await.expect("an answer");
        assert_eq!(&ack, b"ack");
        let commit = b"\x07\x00\x00\x00\x03COMMIT";
        client.write_all(commit).await.expect("writes");
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
            .await
            .expect("the client's side is closed");
        assert!(
            read.is_err() || rest.is_empty(),
            "no acknowledgement: {rest:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut expected = select.to_vec();
        expected.extend_from_slice(commit);
        assert_eq!(*received.lock().await, expected, "the COMMIT was forwarded");
        assert_eq!(shared.commits_cut.load(Ordering::Relaxed), 1);
        assert_eq!(shared.acks_swallowed.load(Ordering::Relaxed), 1);
    }
}
