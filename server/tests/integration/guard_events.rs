//! `POST /api/guard-events`: bounded counts of known reasons; anything else
//! is a 400.

use crate::harness::{Setup, answer, http_client, spawn_app};
use std::sync::atomic::Ordering;

#[tokio::test]
async fn guard_events_are_validated_and_added_up() {
    let app = spawn_app(Setup::embedded()).await;
    let url = format!("{}/api/guard-events", app.base);
    let client = http_client();
    let send = |body: &'static str| {
        client
            .post(&url)
            .header("content-type", "text/plain;charset=UTF-8")
            .body(body)
            .send()
    };

    let ok = send(r#"{"swallowed_taps": 9, "restore_lookups": 1, "hidden_blocks": 2}"#)
        .await
        .expect("send");
    assert_eq!(
        ok.status().as_u16(),
        204,
        "a beacon's text/plain body is accepted"
    );
    let partial = send(r#"{"swallowed_taps": 1}"#).await.expect("send");
    assert_eq!(partial.status().as_u16(), 204);
    let totals = &app.state.guard_totals;
    assert_eq!(totals.swallowed_taps.load(Ordering::Relaxed), 10);
    assert_eq!(totals.restore_lookups.load(Ordering::Relaxed), 1);
    assert_eq!(totals.hidden_blocks.load(Ordering::Relaxed), 2);

    for bad in [
        r#"{"swallowed_taps": 1001}"#,
        r#"{"swallowed_taps": -1}"#,
        r#"{"double_clicks": 3}"#,
        r#"{"swallowed_taps": "many"}"#,
        r#"not json"#,
        r#"[]"#,
    ] {
        let a = answer(send(bad).await.expect("send")).await;
        assert_eq!((a.status, a.code()), (400, "invalid_request"), "{bad}");
    }
    assert_eq!(
        totals.swallowed_taps.load(Ordering::Relaxed),
        10,
        "refused batches count nothing"
    );
}
