//! Plain HTML form endpoints, for pages before hydration or without
//! JavaScript.
//!
//! `POST /items/{id}/buy` runs the same order pipeline as the Buy button and
//! redirects (303, Post/Redirect/Get) to the item page with `?order_key=`,
//! which renders that attempt's outcome. The key comes from the form's hidden
//! field, minted by the server when it rendered the page, so a double submit
//! is one intent and one order.
//!
//! `POST /items/{id}/queue` joins the item's waiting room (joining again
//! keeps the place) and goes back to the item page (303), which shows where
//! the buyer stands and refreshes itself while they wait.
//!
//! `POST /pay/{order_id}` is the demo payment provider's "Pay" button (on
//! the clearly labelled demo checkout page `/pay/{order_id}`): it signs a
//! `payment.succeeded` webhook for the order's total with the webhook
//! secret and delivers it to this server's own webhook route, through the
//! same router, signature check and handler a real provider's delivery
//! takes, then shows the buyer's orders (303 to `/orders`), or the checkout
//! again with `?error=1` when the webhook refused.
//!
//! `GET /lang/{tag}?back=/path` remembers the language switch in a cookie;
//! `POST /dashboard/login` and `/dashboard/logout` open and close the admin
//! session of the dashboard.

use super::item_id;
use crate::error::ApiError;
use crate::state::AppState;
use app::domain::{BuyerId, IdempotencyKey, Quantity};
use app::i18n::Lang;
use app::model::OrderRequest;
use app::pages::ORDER_KEY_PARAM;
use app::ports::Checkout;
use axum::Form;
use axum::extract::{Extension, Path, Query, State};
use axum::http::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct BuyForm {
    qty: Option<String>,
    idempotency_key: String,
    /// The waiting-room pass, for an item with a waiting room.
    #[serde(default)]
    queue_pass: Option<String>,
}

/// `POST /items/{id}/buy` (form-encoded: `qty`, `idempotency_key`).
pub async fn buy(
    State(state): State<AppState>,
    Extension(buyer): Extension<BuyerId>,
    Path(id): Path<String>,
    Form(form): Form<BuyForm>,
) -> Result<Response, ApiError> {
    let item_id = item_id(&id)?;
    let qty = match form.qty.as_deref() {
        None | Some("") => Quantity::ONE,
        Some(raw) => Quantity::new(
            raw.trim()
                .parse()
                .map_err(|_| ApiError::invalid("qty must be a number"))?,
        )?,
    };
    let key = IdempotencyKey::parse(&form.idempotency_key)?;
    let pass = form
        .queue_pass
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty());
    state
        .0
        .place_order(&buyer, &key, OrderRequest { item_id, qty }, pass)
        .await;
    Ok(see_other(&format!(
        "/items/{item_id}?{ORDER_KEY_PARAM}={key}"
    )))
}

/// `POST /items/{id}/queue`: joins the waiting room from a plain form.
pub async fn join_queue(
    State(state): State<AppState>,
    Extension(buyer): Extension<BuyerId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let item_id = item_id(&id)?;
    state.0.join_queue(&buyer, item_id).await?;
    Ok(see_other(&format!("/items/{item_id}")))
}

/// `POST /pay/{order_id}`: the demo provider pays the buyer's order.
pub async fn pay_demo(
    State(state): State<AppState>,
    Extension(buyer): Extension<BuyerId>,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    use tower::ServiceExt;
    let no_such_order = || ApiError::not_found("no such order to pay here");
    let desk = state.payments.as_ref().ok_or_else(no_such_order)?;
    let delivery = desk
        .demo_delivery(&buyer, &order_id)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(no_such_order)?;
    let request = axum::http::Request::post("/payments/webhook")
        .header(crate::payments::signature::HEADER, delivery.signature)
        .header(CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(delivery.body))
        .map_err(ApiError::internal)?;
    let answer = match super::router()
        .with_state(state.clone())
        .oneshot(request)
        .await
    {
        Ok(answer) => answer,
        Err(never) => match never {},
    };
    if answer.status() == StatusCode::OK {
        Ok(see_other("/orders"))
    } else {
        tracing::warn!(status = %answer.status(), order = %order_id, "the demo payment's webhook was refused");
        Ok(see_other(&format!("/pay/{order_id}?error=1")))
    }
}

#[derive(Debug, Deserialize)]
pub struct Back {
    back: Option<String>,
}

/// `GET /lang/{tag}`: sets the `lang` cookie and goes back.
pub async fn switch_language(Path(tag): Path<String>, Query(back): Query<Back>) -> Response {
    let Some(lang) = Lang::from_tag(&tag) else {
        return ApiError::invalid("unsupported language").into_response();
    };
    // Only same-site paths: `//host` or a scheme would be an open redirect.
    let target = back
        .back
        .filter(|b| b.starts_with('/') && !b.starts_with("//") && !b.contains('\\'))
        .unwrap_or_else(|| "/".to_owned());
    let mut response = see_other(&target);
    let cookie = format!(
        "lang={}; Path=/; Max-Age=31536000; SameSite=Lax",
        lang.tag()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    token: String,
}

/// `POST /dashboard/login`: the admin token, checked in constant time, opens
/// a signed admin session; a wrong one goes back with `?error=1`.
pub async fn dashboard_login(State(state): State<AppState>, Form(form): Form<SignIn>) -> Response {
    use subtle::ConstantTimeEq;
    let valid: bool = form
        .token
        .as_bytes()
        .ct_eq(state.admin_token.as_bytes())
        .into();
    if !valid {
        tracing::warn!("dashboard sign-in with a wrong token");
        return see_other("/dashboard?error=1");
    }
    let mut response = see_other("/dashboard");
    if let Some(cookie) = crate::session::admin_cookie(
        state.sessions.key(),
        state.config.sessions.cookie_secure,
        true,
    ) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

/// `POST /dashboard/logout`: ends the admin session.
pub async fn dashboard_logout(State(state): State<AppState>) -> Response {
    let mut response = see_other("/dashboard");
    if let Some(cookie) = crate::session::admin_cookie(
        state.sessions.key(),
        state.config.sessions.cookie_secure,
        false,
    ) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}
