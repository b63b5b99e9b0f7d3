//! `POST /api/guard-events`: batched browser-layer counters, sent by the Buy
//! panel with `navigator.sendBeacon` (so the body may arrive as text/plain).
//! Counts are bounded per batch; unknown fields are refused.

use crate::error::ApiError;
use crate::metrics as m;
use crate::state::AppState;
use app::guard::Intercepts;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;

/// The most one page can plausibly report in one batch, per reason.
pub const MAX_COUNT_PER_BATCH: u32 = 1_000;

pub async fn record(State(state): State<AppState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let invalid = |e: serde_json::Error| ApiError::invalid(format!("invalid guard events: {e}"));
    // An object only: serde would also read a struct from an array.
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(invalid)?;
    if !value.is_object() {
        return Err(ApiError::invalid("guard events must be a JSON object"));
    }
    let batch: Intercepts = serde_json::from_value(value).map_err(invalid)?;
    let counts = [
        ("swallowed_tap", batch.swallowed_taps),
        ("restore_lookup", batch.restore_lookups),
        ("hidden_block", batch.hidden_blocks),
    ];
    if let Some((reason, _)) = counts.iter().find(|(_, n)| *n > MAX_COUNT_PER_BATCH) {
        return Err(ApiError::invalid(format!(
            "{reason} count above {MAX_COUNT_PER_BATCH} in one batch"
        )));
    }
    for (reason, n) in counts {
        if n > 0 {
            state
                .metrics
                .counter(m::BROWSER_INTERCEPTS, &[("reason", reason)])
                .increment(u64::from(n));
        }
    }
    state.guard_totals.add(batch);
    Ok(StatusCode::NO_CONTENT)
}
