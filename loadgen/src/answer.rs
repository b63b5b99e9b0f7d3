//! What an answer of the shop says, read one way for every sender.
//!
//! Both senders (reqwest in the open model, raw keep-alive hyper in the
//! closed loop) hand the status line, the `Idempotent-Replayed` header and
//! the body bytes to [`Answer::read`], which knows the public contract:
//!
//! - a 201 to `POST /api/orders` is `{"order_id", "item_id", "qty", ...}`;
//! - every 4xx and 5xx body is `{"code", "message", "retryable"}`, and the
//!   body, not a list of codes kept here, says whether the same request may
//!   be sent again (`sold_out` is final, `stock_conflict` or `rate_limited`
//!   are not);
//! - a replayed answer carries `Idempotent-Replayed: true`.
//!
//! What the contract does not say is settled on the careful side: no answer
//! at all (connection error, timeout, a body cut short) and a 5xx whose body
//! does not parse count as retryable, since the request may or may not have
//! run. A 4xx whose body does not parse is taken as final (the request was
//! refused as sent) and flagged [`Answer::malformed`].
//!
//! Reading is cheap: the body is parsed once into three borrowed fields and
//! everything else in it is skipped; 2xx answers other than 201 are not
//! parsed at all.

use hyper::body::Bytes;
use serde::Deserialize;
use std::borrow::Cow;
use std::time::Duration;

/// The header a replayed answer carries.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// One answer (or its absence) as the load generator and the history
/// checker see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status; `None` when no answer came.
    pub status: Option<u16>,
    /// `code` of an error body.
    pub code: Option<String>,
    /// Whether the same request may be sent again with the same key.
    pub retryable: bool,
    /// `Idempotent-Replayed: true` was on the answer.
    pub replayed: bool,
    /// `order_id` of a 201 body.
    pub order_id: Option<String>,
    /// The body broke the contract: a 201 without a string `order_id`, or
    /// a 4xx/5xx that is not `{"code", "message", "retryable"}`.
    pub malformed: bool,
}

/// The fields of a body the generator needs; the rest is skipped unparsed.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(default)]
    message: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    retryable: Option<bool>,
    #[serde(borrow, default)]
    order_id: Option<Cow<'a, str>>,
}

impl Answer {
    /// No answer came: the request may or may not have run.
    pub fn none() -> Self {
        Self {
            status: None,
            code: None,
            retryable: true,
            replayed: false,
            order_id: None,
            malformed: false,
        }
    }

    /// Reads an answer from its status, the value of its
    /// `Idempotent-Replayed` header (if any) and its body.
    pub fn read(status: u16, replayed_header: Option<&[u8]>, body: &[u8]) -> Self {
        let replayed = replayed_header.is_some_and(|v| v.eq_ignore_ascii_case(b"true"));
        let mut answer = Self {
            status: Some(status),
            code: None,
            retryable: false,
            replayed,
            order_id: None,
            malformed: false,
        };
        match status {
            201 => match serde_json::from_slice::<Fields<'_>>(body) {
                Ok(Fields {
                    order_id: Some(id), ..
                }) if !id.is_empty() => answer.order_id = Some(id.into_owned()),
                _ => answer.malformed = true,
            },
            200..=299 => {}
            _ => match serde_json::from_slice::<Fields<'_>>(body) {
                Ok(Fields {
                    code: Some(code),
                    message: Some(_),
                    retryable: Some(retryable),
                    ..
                }) => {
                    answer.code = Some(code.into_owned());
                    answer.retryable = retryable;
                }
                _ => {
                    answer.malformed = true;
                    answer.retryable = status >= 500;
                }
            },
        }
        answer
    }
}

/// Sends one request through reqwest and reads its answer; the body comes
/// back too (none when no answer came).
pub async fn send(request: reqwest::RequestBuilder) -> (Answer, Option<Bytes>) {
    let Ok(response) = request.send().await else {
        return (Answer::none(), None);
    };
    let status = response.status().as_u16();
    let replayed = response.headers().get(IDEMPOTENT_REPLAYED).cloned();
    match response.bytes().await {
        Ok(body) => (
            Answer::read(status, replayed.as_ref().map(|v| v.as_bytes()), &body),
            Some(body),
        ),
        Err(_) => (Answer::none(), None),
    }
}

/// How long a careful client waits before retry `attempt` (from 1): 100 ms
/// more each time, at most a second.
pub fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(100 * u64::from(attempt.min(10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECEIPT: &[u8] = br#"{"order_id":"0c6f5e1e-8d0a-4a57-9a53-5b0c6a1f2d3e","item_id":7,"qty":1,"unit_price_cents":100,"total_cents":100,"idempotency_key":"k-1","status":"confirmed","created_at_ms":1700000000000}"#;

    fn error(code: &str, retryable: bool) -> Vec<u8> {
        format!(r#"{{"code":"{code}","message":"m","retryable":{retryable}}}"#).into_bytes()
    }

    #[test]
    fn a_201_carries_its_order_id() {
        let a = Answer::read(201, None, RECEIPT);
        assert_eq!(
            a.order_id.as_deref(),
            Some("0c6f5e1e-8d0a-4a57-9a53-5b0c6a1f2d3e")
        );
        assert!(!a.retryable && !a.malformed);
        assert!(!a.replayed);
    }

    #[test]
    fn the_replay_header_is_read_whatever_its_case() {
        assert!(Answer::read(201, Some(b"true"), RECEIPT).replayed);
        assert!(Answer::read(201, Some(b"TRUE"), RECEIPT).replayed);
        assert!(!Answer::read(201, Some(b"false"), RECEIPT).replayed);
    }

    #[test]
    fn a_201_without_an_order_id_breaks_the_contract() {
        assert!(Answer::read(201, None, br#"{"item_id":7}"#).malformed);
        assert!(Answer::read(201, None, br#"{"order_id":""}"#).malformed);
        assert!(Answer::read(201, None, br#"{"order_id":17}"#).malformed);
        assert!(Answer::read(201, None, b"").malformed);
    }

    #[test]
    fn retryability_comes_from_the_body_not_from_a_list_of_codes() {
        let sold_out = Answer::read(409, None, &error("sold_out", false));
        assert_eq!(sold_out.code.as_deref(), Some("sold_out"));
        assert!(!sold_out.retryable);

        let conflict = Answer::read(409, None, &error("stock_conflict", true));
        assert!(conflict.retryable);

        let limited = Answer::read(429, None, &error("rate_limited", true));
        assert!(limited.retryable);

        // A code this generator never heard of is judged by its flag alone.
        let novel = Answer::read(409, None, &error("sale_not_started", true));
        assert!(novel.retryable && !novel.malformed);
    }

    #[test]
    fn no_answer_and_a_5xx_without_a_body_are_retryable() {
        let none = Answer::none();
        assert!(none.retryable && none.status.is_none());

        let bare = Answer::read(502, None, b"Bad Gateway");
        assert!(bare.retryable && bare.malformed && bare.code.is_none());
    }

    #[test]
    fn a_4xx_out_of_shape_is_final_and_flagged() {
        let a = Answer::read(400, None, b"<html>");
        assert!(!a.retryable && a.malformed);
        // retryable must be a boolean, and message is part of the shape.
        assert!(
            Answer::read(409, None, br#"{"code":"x","message":"m","retryable":"no"}"#).malformed
        );
        assert!(Answer::read(409, None, br#"{"code":"x","retryable":false}"#).malformed);
    }

    #[test]
    fn other_2xx_answers_are_not_parsed() {
        let a = Answer::read(200, None, b"not json at all");
        assert!(!a.malformed && !a.retryable && a.code.is_none());
    }
}
