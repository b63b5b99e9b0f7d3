//! Anonymous buyer sessions: a signed, HttpOnly, SameSite=Lax cookie that
//! carries a random buyer id.
//!
//! The JSON API needs the cookie (`POST /api/session` sets it; a call without
//! it answers 401). The pages and their server functions mint one on first
//! visit through [`ensure_buyer`], so a shopper never sees a session step.
//! The signature (HMAC with `COOKIE_SECRET`, or with the secret the database
//! keeps when that is unset) makes a forged or edited buyer id read as no
//! buyer at all, and lets every instance that shares the database read it.

use crate::error::ApiError;
use crate::state::AppState;
use app::domain::BuyerId;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderValue;
use axum::http::header::COOKIE;
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, Key, SameSite, SignedCookieJar};
use std::collections::HashMap;
use std::sync::Mutex;

pub const BUYER_COOKIE: &str = "buyer";
const MAX_AGE_DAYS: i64 = 30;
/// The dashboard's admin session: signed, HttpOnly, SameSite=Strict, 12 h.
pub const ADMIN_COOKIE: &str = "admin";
const ADMIN_MAX_AGE_HOURS: i64 = 12;

/// Buyer cookies whose signature this process has checked, at most this
/// many at once.
const VERIFIED_BUYERS_MAX: usize = 16_384;

/// The key that signs the session cookies, and the buyer cookies this
/// process has verified, by their whole signed value.
///
/// In a frenzy each buyer sends many requests with the same cookie, and
/// checking it (parsing every cookie into a jar, two HMACs) cost a third of
/// a sold-out answer's work. Only a value whose signature held is kept, so a
/// forged or edited cookie never matches and is checked as before. The map's
/// hasher is keyed at random per process, so a guessed value cannot aim its
/// comparison at a kept one.
pub struct SessionCookies {
    key: Key,
    seen: Mutex<HashMap<Box<str>, BuyerId>>,
}

impl SessionCookies {
    pub fn new(key: Key) -> Self {
        Self {
            key,
            seen: Mutex::default(),
        }
    }

    /// The key that signs and checks the cookies.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The buyer a request's signed cookie names, if the signature holds.
    pub fn buyer_of(&self, headers: &axum::http::HeaderMap) -> Option<BuyerId> {
        let Some(signed) = lone_buyer_cookie(headers) else {
            return verified_buyer(headers, &self.key);
        };
        if let Some(buyer) = self.seen().get(signed) {
            return Some(buyer.clone());
        }
        let buyer = verified_buyer(headers, &self.key)?;
        let mut seen = self.seen();
        if seen.len() >= VERIFIED_BUYERS_MAX
            && let Some(evicted) = seen.keys().next().cloned()
        {
            seen.remove(&evicted);
        }
        seen.insert(signed.into(), buyer.clone());
        Some(buyer)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, BuyerId>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The raw value of the request's buyer cookie, when it sends exactly one.
fn lone_buyer_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    let mut found = None;
    for header in headers.get_all(COOKIE) {
        for cookie in Cookie::split_parse(header.to_str().ok()?).flatten() {
            if cookie.name() == BUYER_COOKIE {
                if found.is_some() {
                    return None;
                }
                found = Some(cookie.value_raw()?);
            }
        }
    }
    found
}

/// The buyer the cookie jar finds after checking the signatures.
fn verified_buyer(headers: &axum::http::HeaderMap, key: &Key) -> Option<BuyerId> {
    let jar = SignedCookieJar::from_headers(headers, key.clone());
    jar.get(BUYER_COOKIE)
        .and_then(|c| BuyerId::parse(c.value()).ok())
}

/// A fresh buyer id and the `Set-Cookie` value that signs it.
pub fn mint(key: &Key, secure: bool) -> (BuyerId, Option<HeaderValue>) {
    let raw = uuid::Uuid::new_v4().to_string();
    let buyer = BuyerId::parse(&raw).unwrap_or_else(|_| unreachable!("a v4 UUID is a buyer id"));
    let cookie = Cookie::build((BUYER_COOKIE, raw))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .path("/")
        .max_age(time_days(MAX_AGE_DAYS))
        .build();
    let signed = SignedCookieJar::new(key.clone())
        .add(cookie)
        .into_response();
    (buyer, signed.headers().get(SET_COOKIE).cloned())
}

fn time_days(days: i64) -> cookie::time::Duration {
    cookie::time::Duration::days(days)
}

/// Whether the request carries a valid admin session.
pub fn is_admin(headers: &axum::http::HeaderMap, key: &Key) -> bool {
    let jar = SignedCookieJar::from_headers(headers, key.clone());
    jar.get(ADMIN_COOKIE).is_some_and(|c| c.value() == "1")
}

/// The `Set-Cookie` value of a new admin session, or of its removal.
pub fn admin_cookie(key: &Key, secure: bool, signed_in: bool) -> Option<HeaderValue> {
    let mut cookie = Cookie::build((ADMIN_COOKIE, if signed_in { "1" } else { "" }))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .path("/");
    cookie = if signed_in {
        cookie.max_age(cookie::time::Duration::hours(ADMIN_MAX_AGE_HOURS))
    } else {
        cookie.max_age(cookie::time::Duration::ZERO)
    };
    let signed = SignedCookieJar::new(key.clone())
        .add(cookie.build())
        .into_response();
    signed.headers().get(SET_COOKIE).cloned()
}

/// The buyer of an API call; 401 without a valid cookie.
pub struct Buyer(pub BuyerId);

impl FromRequestParts<AppState> for Buyer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state
            .sessions
            .buyer_of(&parts.headers)
            .map(Buyer)
            .ok_or_else(|| {
                ApiError::unauthorized("no valid buyer session: POST /api/session first")
            })
    }
}

/// Middleware for pages, server functions and the no-JavaScript form: puts
/// the request's buyer (and an admin session marker, when signed in) into its
/// extensions, minting one (and setting its
/// cookie on the response) on a first visit.
pub async fn ensure_buyer(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let (buyer, set_cookie) = match state.sessions.buyer_of(request.headers()) {
        Some(buyer) => (buyer, None),
        None => {
            let (buyer, cookie) = mint(state.sessions.key(), state.config.sessions.cookie_secure);
            state.welcome_buyer(&buyer).await;
            (buyer, cookie)
        }
    };
    request.extensions_mut().insert(buyer);
    if is_admin(request.headers(), state.sessions.key()) {
        request.extensions_mut().insert(app::ports::AdminSession);
    }
    let mut response = next.run(request).await;
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    /// A request's headers carrying `cookies` (`name=value; ...`).
    fn sending(cookies: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(cookies).unwrap());
        headers
    }

    /// A freshly minted buyer and its cookie as a browser sends it back.
    fn minted(key: &Key) -> (BuyerId, String) {
        let (buyer, set_cookie) = mint(key, false);
        let set_cookie = set_cookie.unwrap();
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        (buyer, pair.to_owned())
    }

    fn remembered(sessions: &SessionCookies) -> usize {
        sessions.seen().len()
    }

    #[test]
    fn a_verified_cookie_is_remembered_and_reads_the_same_buyer() {
        let sessions = SessionCookies::new(Key::generate());
        let (buyer, cookie) = minted(sessions.key());
        let headers = sending(&format!("theme=dark; {cookie}"));
        assert_eq!(sessions.buyer_of(&headers), Some(buyer.clone()));
        assert_eq!(remembered(&sessions), 1);
        assert_eq!(sessions.buyer_of(&headers), Some(buyer));
        assert_eq!(remembered(&sessions), 1);
    }

    #[test]
    fn an_edited_or_foreign_cookie_is_refused_after_a_genuine_one_was_remembered() {
        let sessions = SessionCookies::new(Key::generate());
        let (buyer, cookie) = minted(sessions.key());
        assert_eq!(sessions.buyer_of(&sending(&cookie)), Some(buyer));

        let (name, value) = cookie.split_once('=').unwrap();
        let last = value.chars().last().unwrap();
        let edited_last = if last == 'a' { 'b' } else { 'a' };
        let edited = format!("{name}={}{edited_last}", &value[..value.len() - 1]);
        assert_eq!(sessions.buyer_of(&sending(&edited)), None);

        let (_, foreign) = minted(&Key::generate());
        assert_eq!(sessions.buyer_of(&sending(&foreign)), None);
        assert_eq!(remembered(&sessions), 1, "only verified values are kept");
    }

    #[test]
    fn two_buyer_cookies_are_left_to_the_jar_and_not_remembered() {
        let sessions = SessionCookies::new(Key::generate());
        let (first_buyer, first) = minted(sessions.key());
        let (second_buyer, second) = minted(sessions.key());
        let headers = sending(&format!("{first}; {second}"));
        let read = sessions.buyer_of(&headers);
        assert_eq!(read, verified_buyer(&headers, sessions.key()));
        assert!(read == Some(first_buyer) || read == Some(second_buyer));
        assert_eq!(remembered(&sessions), 0);
    }

    #[test]
    fn the_memory_is_bounded() {
        let sessions = SessionCookies::new(Key::generate());
        for _ in 0..VERIFIED_BUYERS_MAX + 10 {
            let (buyer, cookie) = minted(sessions.key());
            assert_eq!(sessions.buyer_of(&sending(&cookie)), Some(buyer));
        }
        assert_eq!(remembered(&sessions), VERIFIED_BUYERS_MAX);
    }

    #[test]
    fn no_cookie_is_no_buyer() {
        let sessions = SessionCookies::new(Key::generate());
        assert_eq!(sessions.buyer_of(&HeaderMap::new()), None);
        assert_eq!(sessions.buyer_of(&sending("buyer=")), None);
        assert_eq!(remembered(&sessions), 0);
    }
}
