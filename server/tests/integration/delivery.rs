//! How files and pages reach a browser: precompressed assets picked by
//! `Accept-Encoding`, cached for a year only under a content-hashed name;
//! pages compressed per response and never cached; the API and `/metrics`
//! unchanged for clients that accept no encoding.
//!
//! The site here is a temporary directory with files written by the test
//! (their compressed copies are marked so the test can tell which one was
//! sent), so this runs without a release build.

use crate::harness::{Setup, http_client, spawn_app_serving};
use std::path::Path;

const HASHED: &str = "oversell-guard.AbCdEfGhIjKlMnOpQrStUv.js";
const UNHASHED: &str = "oversell-guard.js";

fn write_site(root: &Path) {
    let pkg = root.join("pkg");
    std::fs::create_dir_all(&pkg).expect("pkg dir");
    for name in [HASHED, UNHASHED] {
        std::fs::write(pkg.join(name), format!("plain {name}")).expect("asset");
        std::fs::write(pkg.join(format!("{name}.br")), format!("brotli {name}")).expect("br");
        std::fs::write(pkg.join(format!("{name}.gz")), format!("gzip {name}")).expect("gz");
    }
}

/// GET with exactly the given `Accept-Encoding` (none when `None`): status,
/// headers and the raw bytes as they came over the wire.
async fn get(
    url: &str,
    accept_encoding: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = http_client().get(url);
    if let Some(value) = accept_encoding {
        request = request.header("accept-encoding", value);
    }
    let response = request.send().await.expect("get");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    (status, headers, body)
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn assets_are_sent_precompressed_as_accepted_and_hashed_names_are_immutable() {
    let site = tempfile::tempdir().expect("site dir");
    write_site(site.path());
    let app = spawn_app_serving(Setup::embedded(), &site.path().display().to_string()).await;
    let hashed = format!("{}/pkg/{HASHED}", app.base);

    let (status, headers, body) = get(&hashed, Some("br, gzip")).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("brotli {HASHED}").as_bytes());
    assert_eq!(header(&headers, "content-encoding"), Some("br"));
    assert_eq!(
        header(&headers, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(
        header(&headers, "vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")),
        "{headers:?}"
    );
    assert_eq!(header(&headers, "content-type"), Some("text/javascript"));

    let (_, headers, body) = get(&hashed, Some("gzip")).await;
    assert_eq!(body, format!("gzip {HASHED}").as_bytes());
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));

    let (_, headers, body) = get(&hashed, Some("gzip;q=0.5, br;q=0")).await;
    assert_eq!(body, format!("gzip {HASHED}").as_bytes(), "br refused");
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));

    let (status, headers, body) = get(&hashed, None).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("plain {HASHED}").as_bytes());
    assert_eq!(header(&headers, "content-encoding"), None);

    // An unhashed name may get other content later: revalidate every time.
    let (status, headers, body) = get(&format!("{}/pkg/{UNHASHED}", app.base), Some("br")).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("brotli {UNHASHED}").as_bytes());
    assert_eq!(header(&headers, "cache-control"), Some("no-cache"));

    // A missing file is not cached as anything.
    let (status, headers, _) = get(
        &format!(
            "{}/pkg/oversell-guard.ZZZZZZZZZZZZZZZZZZZZZZ.wasm",
            app.base
        ),
        Some("br"),
    )
    .await;
    assert_eq!(status, 404);
    assert!(header(&headers, "cache-control").is_none_or(|v| !v.contains("immutable")));
}

#[tokio::test]
async fn pages_are_compressed_per_response_and_never_cached() {
    let site = tempfile::tempdir().expect("site dir");
    write_site(site.path());
    let app = spawn_app_serving(Setup::embedded(), &site.path().display().to_string()).await;
    let item = app.create_item(3, None).await;
    let page = format!("{}/items/{}", app.base, item.id);

    let (status, plain_headers, plain) = get(&page, None).await;
    assert_eq!(status, 200);
    assert_eq!(header(&plain_headers, "content-encoding"), None);
    assert_eq!(
        header(&plain_headers, "cache-control"),
        Some("private, no-cache")
    );
    let html = String::from_utf8(plain).expect("utf-8 html");
    assert!(html.contains("Test camera"), "the page names the item");

    for (accepted, expected) in [("br, gzip", "br"), ("gzip", "gzip")] {
        let (status, headers, body) = get(&page, Some(accepted)).await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-encoding"), Some(expected));
        assert_eq!(header(&headers, "cache-control"), Some("private, no-cache"));
        assert!(
            body.len() * 2 < html.len(),
            "{expected}: {} bytes for {} bytes of HTML",
            body.len(),
            html.len()
        );
    }

    // A page that does not exist is a page too.
    let (status, headers, _) = get(&format!("{}/no-such-page", app.base), Some("br")).await;
    assert_eq!(status, 404);
    assert_eq!(header(&headers, "cache-control"), Some("private, no-cache"));
}

#[tokio::test]
async fn the_api_and_metrics_answer_plainly_to_clients_that_accept_no_encoding() {
    let app = spawn_app_serving(Setup::embedded(), "no-site-needed").await;
    app.create_item(2, None).await;
    for path in ["/api/items", "/metrics", "/healthz"] {
        let (status, headers, body) = get(&format!("{}{path}", app.base), None).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&headers, "content-encoding"), None, "{path}");
        assert!(
            header(&headers, "cache-control").is_none_or(|v| !v.contains("immutable")),
            "{path}"
        );
        let text = String::from_utf8(body).expect("utf-8");
        if path == "/api/items" {
            let items: serde_json::Value = serde_json::from_str(&text).expect("json");
            assert_eq!(items.as_array().map(Vec::len), Some(1));
        }
    }
}
