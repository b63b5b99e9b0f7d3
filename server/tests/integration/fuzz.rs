//! Fuzzing the JSON API with proptest: at least 10 000 generated requests
//! (methods, paths, ids, keys, headers, bodies: valid, malformed, hostile).
//! No answer may be a 5xx, and every error of the API has the
//! `{code, message, retryable}` shape.

use crate::harness::{ADMIN_TOKEN, Setup, spawn_app};
use futures_util::StreamExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use std::sync::atomic::{AtomicUsize, Ordering};

const CASES: usize = 10_000;

#[derive(Debug, Clone)]
struct Request {
    method: &'static str,
    path: String,
    key: Option<String>,
    content_type: Option<&'static str>,
    admin: Option<String>,
    with_session: bool,
    body: Vec<u8>,
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        (-5i64..50).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("99999999999999999999999".to_owned()),
        "[a-zA-Z0-9_.~:-]{1,40}",
        "\\PC{0,20}".prop_map(|s| s.replace(['/', '?', '#'], "")),
        Just(String::new()),
        Just("%00".to_owned()),
        Just("..%2F..".to_owned()),
    ]
    // A client resolves `.` and `..` segments before sending: `/api/..`
    // leaves the API and reaches the shop's `/` (a page, not the API's
    // error contract). The encoded `..%2F..` above still reaches the API.
    .prop_filter("dot segments are resolved by the client", |s| {
        s != "." && s != ".."
    })
}

fn path() -> impl Strategy<Value = String> {
    (0usize..10, segment()).prop_map(|(route, s)| match route {
        0 => "/api/orders".to_owned(),
        1 => format!("/api/orders/by-key/{s}"),
        2 => format!("/api/items/{s}"),
        3 => "/api/items".to_owned(),
        4 => "/api/session".to_owned(),
        5 => "/api/guard-events".to_owned(),
        6 => "/api/admin/items".to_owned(),
        7 => format!("/api/admin/items/{s}/restock"),
        8 => format!("/api/admin/items/{s}/stats"),
        _ => format!("/api/{s}"),
    })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-3i64..15).prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "\\PC{0,30}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("item_id".to_owned()),
                    Just("qty".to_owned()),
                    Just("delta".to_owned()),
                    Just("title".to_owned()),
                    Just("price_cents".to_owned()),
                    Just("stock".to_owned()),
                    Just("max_per_buyer".to_owned()),
                    Just("swallowed_taps".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        2 => ((-3i64..8), (-3i64..14)).prop_map(|(item, qty)| format!(r#"{{"item_id":{item},"qty":{qty}}}"#).into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(br#"{"item_id": 1, "qty": "#.to_vec()),
        1 => Just(vec![b'x'; 20_000]),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop_oneof![
            Just("GET"),
            Just("POST"),
            Just("POST"),
            Just("PUT"),
            Just("DELETE")
        ],
        path(),
        proptest::option::of(prop_oneof!["[a-zA-Z0-9_.~:-]{1,64}", "\\PC{0,300}"]),
        proptest::option::of(prop_oneof![
            Just("application/json"),
            Just("text/plain"),
            Just("application/x-www-form-urlencoded")
        ]),
        proptest::option::of(prop_oneof![Just(ADMIN_TOKEN.to_owned()), "[ -~]{0,40}"]),
        any::<bool>(),
        body(),
    )
        .prop_map(
            |(method, path, key, content_type, admin, with_session, body)| Request {
                method,
                path,
                key,
                content_type,
                admin,
                with_session,
                body,
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_generated_requests_get_no_5xx_and_well_formed_errors() {
    let app = spawn_app(Setup::embedded()).await;
    for stock in [0, 1, 5, 1000] {
        app.create_item(stock, Some(3)).await;
    }
    let session = app.buyer().await;
    let anonymous = reqwest::Client::new();
    let mut runner = TestRunner::new(RunnerConfig::default());
    let strategy = request();
    let requests: Vec<Request> = (0..CASES)
        .map(|_| strategy.new_tree(&mut runner).map(|tree| tree.current()))
        .collect::<Result<_, _>>()
        .expect("generate requests");
    let sent = AtomicUsize::new(0);
    let failures: Vec<String> = futures_util::stream::iter(requests)
        .map(|r| {
            let client = if r.with_session {
                session.client.clone()
            } else {
                anonymous.clone()
            };
            let base = app.base.clone();
            let sent = &sent;
            async move {
                let method = reqwest::Method::from_bytes(r.method.as_bytes()).expect("method");
                let mut builder = client
                    .request(method, format!("{base}{}", r.path))
                    .body(r.body.clone());
                if let Some(key) = &r.key
                    && let Ok(value) = reqwest::header::HeaderValue::from_str(key)
                {
                    builder = builder.header("Idempotency-Key", value);
                }
                if let Some(content_type) = r.content_type {
                    builder = builder.header("content-type", content_type);
                }
                if let Some(token) = &r.admin
                    && let Ok(value) =
                        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                {
                    builder = builder.header("authorization", value);
                }
                let response = builder.send().await;
                sent.fetch_add(1, Ordering::Relaxed);
                let Ok(response) = response else {
                    return Some(format!("no answer to {} {}", r.method, r.path));
                };
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                if status >= 500 {
                    return Some(format!("{status} for {} {}: {text}", r.method, r.path));
                }
                if status >= 400 {
                    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    let shaped = json["code"].is_string()
                        && json["message"].is_string()
                        && json["retryable"].is_boolean();
                    if !shaped {
                        return Some(format!(
                            "{status} without the error shape for {} {}: {}",
                            r.method,
                            r.path,
                            text.chars().take(200).collect::<String>()
                        ));
                    }
                }
                None
            }
        })
        .buffer_unordered(16)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    assert_eq!(
        sent.load(Ordering::Relaxed),
        CASES,
        "every generated request was sent"
    );
    assert!(
        failures.is_empty(),
        "{} of {CASES} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(app.duplicate_orders().await, 0);
}
