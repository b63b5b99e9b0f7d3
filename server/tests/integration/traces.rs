//! Traces over OTLP and JSON logs, from the real server binary: this test
//! starts its own OTLP/HTTP endpoint, runs `server` with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at it and `LOG_FORMAT=json`,
//! places an order, and finds the order's spans for every layer in one trace
//! and its request id in the logs.

use crate::harness::ADMIN_TOKEN;
use axum::Router;
use axum::routing::post;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Received = Arc<Mutex<Vec<Value>>>;

/// The server process, killed even when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn otlp_endpoint() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: String| {
            let sink = sink.clone();
            async move {
                if let Ok(json) = serde_json::from_str::<Value>(&body) {
                    sink.lock().expect("lock").push(json);
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, received)
}

/// (trace id, span name, attributes) of every span received so far.
fn spans(received: &Received) -> Vec<(String, String, HashMap<String, String>)> {
    let batches = received.lock().expect("lock").clone();
    let mut out = Vec::new();
    for batch in batches {
        for resource in batch["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let attributes = span["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| {
                            let value = &a["value"];
                            let text = value["stringValue"]
                                .as_str()
                                .map(str::to_owned)
                                .or_else(|| value["intValue"].as_str().map(str::to_owned))
                                .or_else(|| value["intValue"].as_i64().map(|v| v.to_string()))?;
                            Some((a["key"].as_str()?.to_owned(), text))
                        })
                        .collect();
                    out.push((
                        span["traceId"].as_str().unwrap_or_default().to_owned(),
                        span["name"].as_str().unwrap_or_default().to_owned(),
                        attributes,
                    ));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_traced_through_every_layer_and_logged_as_json() {
    let (endpoint, received) = otlp_endpoint().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_server"))
            .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
            .env("LEPTOS_OUTPUT_NAME", "oversell-guard")
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/traces.sqlite3", dir.path().display()),
            )
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("COOKIE_SECRET", "traces-cookie-secret-of-at-least-32-bytes")
            .env("SEED_DEMO_ITEMS", "false")
            .env("REDIS_URL", "")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info,tower_http=debug")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .stdout(Stdio::piped())
            .spawn()
            .expect("the server binary runs"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut logs = Vec::new();
    let base = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("server starts within 30 s")
            .expect("server still running");
        match line.split("running at ").nth(1) {
            Some(url) => break url.trim().to_owned(),
            None => logs.push(line),
        }
    };

    let client = crate::harness::http_client();
    let item: Value = client
        .post(format!("{base}/api/admin/items"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"title": "Traced camera", "price_cents": 100, "stock": 3}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("item");
    assert_eq!(
        client
            .post(format!("{base}/api/session"))
            .send()
            .await
            .expect("session")
            .status(),
        201
    );
    let order = client
        .post(format!("{base}/api/orders"))
        .header("Idempotency-Key", "traced-order")
        .json(&serde_json::json!({"item_id": item["id"], "qty": 1}))
        .send()
        .await
        .expect("order");
    assert_eq!(order.status(), 201);
    let request_id = order
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        !request_id.is_empty(),
        "every response names its request id"
    );

    let layers = [
        "http",
        "order",
        "idempotency",
        "reserve",
        "ledger",
        "settle",
    ];
    let found = crate::harness::eventually(Duration::from_secs(20), || {
        let received = received.clone();
        async move {
            let spans = spans(&received);
            let Some((trace, _, _)) = spans.iter().find(|(_, name, attrs)| {
                name == "order" && attrs.get("key").map(String::as_str) == Some("traced-order")
            }) else {
                return false;
            };
            let names: HashSet<&str> = spans
                .iter()
                .filter(|(t, _, _)| t == trace)
                .map(|(_, name, _)| name.as_str())
                .collect();
            layers.iter().all(|layer| names.contains(layer))
        }
    })
    .await;
    let names: Vec<String> = spans(&received).into_iter().map(|(_, n, _)| n).collect();
    assert!(
        found,
        "one trace with a span per layer; received: {names:?}"
    );
    let http_span_id = spans(&received)
        .into_iter()
        .find(|(_, name, attrs)| name == "http" && attrs.get("request_id") == Some(&request_id));
    assert!(
        http_span_id.is_some(),
        "the http span carries the request id {request_id}"
    );

    drop(child);
    let _ = reader.join();
    while let Ok(line) = rx.try_recv() {
        logs.push(line);
    }
    let json: Vec<Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(json.len(), logs.len(), "every log line is JSON: {logs:?}");
    let tagged = json.iter().any(|line| {
        line["spans"].as_array().is_some_and(|spans| {
            spans
                .iter()
                .any(|s| s["request_id"] == Value::String(request_id.clone()))
        })
    });
    assert!(tagged, "a log line of the order carries its request id");
}
