//! Liveness, readiness and the Prometheus endpoint.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::json;
use std::time::Duration;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the database answers; the reservation store and
/// the Redis circuit breaker are reported beside it (orders still work with
/// Redis down: the breaker sends them to the database). 503 (in the error
/// shape, with the checks) when the database does not answer.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = match tokio::time::timeout(CHECK_TIMEOUT, state.db.ping()).await {
        Ok(Ok(())) => json!({ "ok": true, "dialect": state.db.dialect().name() }),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database check failed");
            json!({ "ok": false, "dialect": state.db.dialect().name() })
        }
        Err(_) => json!({ "ok": false, "dialect": state.db.dialect().name(), "timeout": true }),
    };
    let reservation = match &state.reservation {
        None => json!({ "kind": "none", "ok": true }),
        Some(store) => match tokio::time::timeout(CHECK_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => json!({ "kind": store.kind(), "ok": true }),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: reservation store check failed");
                json!({ "kind": store.kind(), "ok": false })
            }
            Err(_) => json!({ "kind": store.kind(), "ok": false, "timeout": true }),
        },
    };
    let database_ok = database["ok"] == json!(true);
    let breaker = state
        .pipeline
        .guard()
        .map_or("none", |guard| guard.state().label());
    let checks = json!({
        "database": database,
        "reservation": reservation,
        "redis_breaker": breaker,
        "idempotency": state.pipeline.records_kind(),
        "strategy": state.pipeline.strategy().label(),
    });
    if database_ok {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "checks": checks })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "code": "unavailable",
                "message": "the database does not answer",
                "retryable": true,
                "status": "unready",
                "checks": checks,
            })),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}
