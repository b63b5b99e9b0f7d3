//! How the shop's files reach a phone: precompressed, content-hashed assets
//! cached for a year, and pages compressed on the fly but never cached.
//!
//! - `/pkg/*` (the wasm, its JavaScript loader and the stylesheet) comes
//!   from the site's pkg directory. A release build (`scripts/build-release`)
//!   names every file after its content (`oversell-guard.<hash>.wasm`) and
//!   writes a `.br` and a `.gz` beside it; the one the request's
//!   `Accept-Encoding` prefers is sent as it is, so nothing is compressed per
//!   request. A content-hashed name never changes meaning, so it is
//!   `Cache-Control: public, max-age=31536000, immutable` and a second visit
//!   downloads nothing again. An unhashed name (a debug build under
//!   `cargo leptos watch`) is `no-cache`: revalidated on every load, so an
//!   edit shows on the next reload.
//! - Pages (and everything else served outside `/api`, `/metrics` and the
//!   probes) are compressed per response, brotli or gzip as accepted, and
//!   `Cache-Control: private, no-cache`: each render carries a freshly minted
//!   idempotency key and a buyer cookie, so a cached copy must never be
//!   reused without asking the server.
//!
//! Clients that send no `Accept-Encoding` get every response uncompressed.

use axum::Router;
use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, VARY};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use leptos::config::LeptosOptions;
use std::path::Path;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// What a content-hashed asset may be cached as.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// What an asset under a name that may be reused is cached as.
pub const REVALIDATE: &str = "no-cache";
/// What a page is cached as.
pub const PAGE: &str = "private, no-cache";

/// Length of the hash cargo-leptos puts into a name: an MD5 digest in
/// unpadded base64url.
const HASH_LEN: usize = 22;

/// The `/pkg` service: precompressed files, cached by what their names say.
pub fn pkg_router<S: Clone + Send + Sync + 'static>(options: &LeptosOptions) -> Router<S> {
    let dir = Path::new(options.site_root.as_ref()).join(options.site_pkg_dir.as_ref());
    let files = ServeDir::new(dir).precompressed_br().precompressed_gzip();
    Router::new()
        .fallback_service(files)
        .layer(axum::middleware::from_fn(cache_by_name))
}

/// Layers for pages: compressed per response (brotli at quality 4, the
/// tower-http default, cheap enough for a burst of shoppers; or gzip: the
/// only codecs this crate enables) and never stored as reusable.
pub fn pages<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .layer(SetResponseHeaderLayer::if_not_present(
            CACHE_CONTROL,
            HeaderValue::from_static(PAGE),
        ))
        .layer(CompressionLayer::new().quality(CompressionLevel::Default))
}

async fn cache_by_name(request: Request, next: Next) -> Response {
    let hashed = is_content_hashed(request.uri().path());
    let mut response = next.run(request).await;
    let status = response.status();
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        let headers = response.headers_mut();
        let policy = if hashed { IMMUTABLE } else { REVALIDATE };
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(policy));
        // The body depends on Accept-Encoding (`.br`, `.gz` or as is).
        headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// Whether the file a path names carries its content hash, as cargo-leptos
/// writes it: `stem.<22 base64url characters>.ext`.
pub fn is_content_hashed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() >= 3
        && parts[1..parts.len() - 1].iter().any(|part| {
            part.len() == HASH_LEN
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::is_content_hashed;

    #[test]
    fn names_with_a_content_hash_are_recognised() {
        assert!(is_content_hashed(
            "/pkg/oversell-guard.q1w2e3r4t5y6u7i8o9p0a_.wasm"
        ));
        assert!(is_content_hashed(
            "/pkg/oversell-guard.S9oG_WeLbw-NbFz8uULmfA.css"
        ));
    }

    #[test]
    fn plain_names_are_not() {
        assert!(!is_content_hashed("/pkg/oversell-guard.wasm"));
        assert!(!is_content_hashed("/pkg/oversell-guard_bg.wasm"));
        assert!(!is_content_hashed("/pkg/q1w2e3r4t5y6u7i8o9p0a_.js"));
        assert!(!is_content_hashed("/pkg/oversell-guard.short.js"));
        assert!(!is_content_hashed(
            "/pkg/oversell-guard.q1w2e3r4t5y6u7i8o9p0a!.js"
        ));
        assert!(!is_content_hashed("/pkg/"));
    }
}
