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
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, Key, SameSite, SignedCookieJar};

pub const BUYER_COOKIE: &str = "buyer";
const MAX_AGE_DAYS: i64 = 30;
/// The dashboard's admin session: signed, HttpOnly, SameSite=Strict, 12 h.
pub const ADMIN_COOKIE: &str = "admin";
const ADMIN_MAX_AGE_HOURS: i64 = 12;

/// The buyer a request's signed cookie names, if the signature holds.
pub fn buyer_of(headers: &axum::http::HeaderMap, key: &Key) -> Option<BuyerId> {
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
        buyer_of(&parts.headers, &state.cookie_key)
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
    let (buyer, set_cookie) = match buyer_of(request.headers(), &state.cookie_key) {
        Some(buyer) => (buyer, None),
        None => {
            let (buyer, cookie) = mint(&state.cookie_key, state.config.sessions.cookie_secure);
            state.welcome_buyer(&buyer).await;
            (buyer, cookie)
        }
    };
    request.extensions_mut().insert(buyer);
    if is_admin(request.headers(), &state.cookie_key) {
        request.extensions_mut().insert(app::ports::AdminSession);
    }
    let mut response = next.run(request).await;
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}
