//! Webhook signatures, the scheme Stripe uses.
//!
//! The provider sends `Payment-Signature: t=<unix seconds>,v1=<hex>` where
//! the hex is the lowercase HMAC-SHA256 of `"<t>.<raw body>"` keyed with
//! the shared secret (`PAYMENT_WEBHOOK_SECRET`). Signing the timestamp with
//! the body stops an old delivery from being replayed later: a timestamp
//! more than [`TOLERANCE_SECS`] away from this server's clock is refused.
//! Several `v1` entries may be given (a provider rolling its secret); one
//! matching is enough. Entries of other schemes (`v0=`) are ignored. The
//! comparison runs in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt::Write as _;
use subtle::ConstantTimeEq;

/// The header the provider signs with.
pub const HEADER: &str = "payment-signature";

/// How far a signature's timestamp may be from this server's clock.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused (all of them answer 400 `invalid_signature`;
/// the reason goes to the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Payment-Signature header")]
    Missing,
    #[error("Payment-Signature is not t=<seconds>,v1=<hex>")]
    Malformed,
    #[error("the signature's timestamp is {off_by_secs} s away from this server's clock")]
    OutsideTolerance { off_by_secs: i64 },
    #[error("no v1 signature matches")]
    Mismatch,
}

/// The shared secret webhooks are signed with.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    pub fn new(secret: &str) -> Self {
        Self(secret.as_bytes().to_vec())
    }

    fn mac(&self, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The header value that signs `body` at `timestamp` (unix seconds).
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let digest = self.mac(timestamp, body).finalize().into_bytes();
        let mut header = format!("t={timestamp},v1=");
        for byte in digest {
            // Writing to a String cannot fail.
            let _ = write!(header, "{byte:02x}");
        }
        header
    }

    /// Checks a `Payment-Signature` header against the raw body, at
    /// `now_secs` (unix seconds).
    ///
    /// # Errors
    /// Missing, malformed, too old (or too far ahead), or no match.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let mut timestamp = None;
        let mut candidates = Vec::new();
        for part in header.split(',') {
            let (key, value) = part
                .trim()
                .split_once('=')
                .ok_or(SignatureError::Malformed)?;
            match key {
                "t" => {
                    let t: i64 = value.parse().map_err(|_| SignatureError::Malformed)?;
                    if timestamp.replace(t).is_some() {
                        return Err(SignatureError::Malformed);
                    }
                }
                "v1" => candidates.push(decode_hex(value).ok_or(SignatureError::Malformed)?),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
        if candidates.is_empty() {
            return Err(SignatureError::Malformed);
        }
        let off_by_secs = now_secs.saturating_sub(timestamp);
        if off_by_secs.abs() > TOLERANCE_SECS {
            return Err(SignatureError::OutsideTolerance { off_by_secs });
        }
        let expected = self.mac(timestamp, body).finalize().into_bytes();
        let matched = candidates
            .iter()
            .fold(subtle::Choice::from(0), |any, candidate| {
                any | candidate.as_slice().ct_eq(expected.as_slice())
            });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Lowercase hex of a SHA-256 size, exactly; anything else is malformed.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    hex.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] =
        br#"{"event_id":"evt_1","type":"payment.succeeded","order_id":"o","amount_cents":100}"#;

    fn secret() -> WebhookSecret {
        WebhookSecret::new("whsec_test_secret_0123456789")
    }

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let header = secret().sign(NOW, BODY);
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        assert_eq!(secret().verify(Some(&header), BODY, NOW), Ok(()));
        assert_eq!(
            secret().verify(Some(&header), BODY, NOW + TOLERANCE_SECS),
            Ok(()),
            "inside the tolerance"
        );
    }

    #[test]
    fn the_signature_matches_an_independent_hmac() {
        // HMAC-SHA256("key", "1.x"), computed with openssl:
        // printf '1.x' | openssl dgst -sha256 -hmac key
        let header = WebhookSecret::new("key").sign(1, b"x");
        assert_eq!(
            header,
            "t=1,v1=fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec"
        );
    }

    #[test]
    fn a_changed_body_another_secret_or_timestamp_does_not_verify() {
        let header = secret().sign(NOW, BODY);
        assert_eq!(
            secret().verify(Some(&header), b"{}", NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            WebhookSecret::new("another_secret_entirely").verify(Some(&header), BODY, NOW),
            Err(SignatureError::Mismatch)
        );
        let v1 = header
            .split_once(",v1=")
            .map(|(_, v)| v)
            .unwrap_or_default();
        let moved = format!("t={},v1={v1}", NOW - 1);
        assert_eq!(
            secret().verify(Some(&moved), BODY, NOW),
            Err(SignatureError::Mismatch),
            "the timestamp is signed too"
        );
    }

    #[test]
    fn old_and_far_future_timestamps_are_refused() {
        let old = secret().sign(NOW - TOLERANCE_SECS - 1, BODY);
        assert_eq!(
            secret().verify(Some(&old), BODY, NOW),
            Err(SignatureError::OutsideTolerance { off_by_secs: 301 })
        );
        let ahead = secret().sign(NOW + TOLERANCE_SECS + 1, BODY);
        assert!(matches!(
            secret().verify(Some(&ahead), BODY, NOW),
            Err(SignatureError::OutsideTolerance { .. })
        ));
    }

    #[test]
    fn malformed_headers_are_refused_before_any_hmac() {
        let good = secret().sign(NOW, BODY);
        let v1 = good.split_once(",v1=").map(|(_, v)| v).unwrap_or_default();
        for header in [
            "".to_owned(),
            "garbage".to_owned(),
            format!("v1={v1}"),
            format!("t=soon,v1={v1}"),
            format!("t={NOW}"),
            format!("t={NOW},v1={}", &v1[..10]),
            format!("t={NOW},v1={}", v1.to_ascii_uppercase()),
            format!("t={NOW},t={NOW},v1={v1}"),
        ] {
            assert_eq!(
                secret().verify(Some(&header), BODY, NOW),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
        assert_eq!(
            secret().verify(None, BODY, NOW),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn one_matching_v1_among_several_is_enough_and_v0_is_ignored() {
        let good = secret().sign(NOW, BODY);
        let v1 = good.split_once(",v1=").map(|(_, v)| v).unwrap_or_default();
        let rolled = format!("t={NOW},v0=abc,v1={},v1={v1}", "0".repeat(64));
        assert_eq!(secret().verify(Some(&rolled), BODY, NOW), Ok(()));
    }
}
