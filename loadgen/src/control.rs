//! A small HTTP control endpoint on loopback, through which a script steers
//! a running process with `curl`:
//!
//! - the load generator (`run --control ADDR`): `POST /fault?name=NAME`
//!   says a fault just happened, so the history marks it and a burst of
//!   replays follows (see [`crate::history`]);
//! - the database proxy (`proxy --control ADDR`): `POST /cut?commits=N`
//!   arms it to cut the client side of the next `N` COMMITs, `GET /stats`
//!   tells what it saw (see [`crate::proxy`]).
//!
//! Commands are a method, a path and query parameters; answers are JSON.
//! It binds loopback addresses only and serves until its task is aborted.

use http_body_util::Full;
use hyper::body::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;

/// One command: `POST /fault?name=flushall`.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    pub method: &'a str,
    pub path: &'a str,
    query: &'a str,
}

impl<'a> Command<'a> {
    pub fn new(method: &'a str, path: &'a str, query: &'a str) -> Self {
        Self {
            method,
            path,
            query,
        }
    }

    /// The value of query parameter `name` (not percent-decoded: commands
    /// use plain words and numbers).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// The answer to a command: a status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn ok(body: serde_json::Value) -> Self {
        Self {
            status: 200,
            body: body.to_string(),
        }
    }

    pub fn bad(message: &str) -> Self {
        Self {
            status: 400,
            body: serde_json::json!({ "error": message }).to_string(),
        }
    }

    pub fn not_found() -> Self {
        Self {
            status: 404,
            body: serde_json::json!({ "error": "no such command" }).to_string(),
        }
    }
}

pub type Handler = Arc<dyn Fn(Command<'_>) -> Reply + Send + Sync>;

/// Binds `addr`, which must be a loopback address (the control endpoint
/// and the proxy listen on loopback only).
///
/// # Errors
/// Not a loopback `ip:port`, or the port cannot be bound.
pub async fn bind_loopback(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| anyhow::anyhow!("a listening address must be ip:port, got {addr}"))?;
    anyhow::ensure!(
        parsed.ip().is_loopback(),
        "listening on loopback only, not {addr}"
    );
    tokio::net::TcpListener::bind(parsed)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))
}

/// Serves commands on `listener` with `handler` until the task is aborted.
pub fn spawn(listener: tokio::net::TcpListener, handler: Handler) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let reply = answer(&handler, &request);
                    async move {
                        hyper::Response::builder()
                            .status(reply.status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(reply.body)))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                // A client that hangs up early is its own business.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    })
}

fn answer<B>(handler: &Handler, request: &hyper::Request<B>) -> Reply {
    handler(Command::new(
        request.method().as_str(),
        request.uri().path(),
        request.uri().query().unwrap_or(""),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_read_from_the_query() {
        let c = Command::new("POST", "/cut", "commits=20&note=x");
        assert_eq!(c.param("commits"), Some("20"));
        assert_eq!(c.param("note"), Some("x"));
        assert_eq!(c.param("missing"), None);
    }

    #[tokio::test]
    async fn only_loopback_is_bound() {
        assert!(bind_loopback("0.0.0.0:0").await.is_err());
        assert!(bind_loopback("localhost").await.is_err());
        assert!(bind_loopback("127.0.0.1:0").await.is_ok());
    }

    #[tokio::test]
    async fn a_command_reaches_the_handler_and_its_reply_the_client() {
        let listener = bind_loopback("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("address");
        let handler: Handler = Arc::new(|c: Command<'_>| match (c.method, c.path) {
            ("POST", "/fault") => Reply::ok(serde_json::json!({ "name": c.param("name") })),
            _ => Reply::not_found(),
        });
        let task = spawn(listener, handler);
        let client = reqwest::Client::new();
        let reply = client
            .post(format!("http://{addr}/fault?name=flushall"))
            .send()
            .await
            .expect("answers");
        assert_eq!(reply.status().as_u16(), 200);
        let body: serde_json::Value = reply.json().await.expect("json");
        assert_eq!(body["name"], "flushall");
        let missing = client
            .get(format!("http://{addr}/nothing"))
            .send()
            .await
            .expect("answers");
        assert_eq!(missing.status().as_u16(), 404);
        task.abort();
    }
}
