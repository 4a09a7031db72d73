//! The backup page at `/backups/`: plain HTML, CSS and JavaScript compiled into the binary with
//! `include_str!` (three small files; no embedding crate, no Node build, no CDN — the worker
//! may run offline). The page only calls the REST API ([`crate::api`]) with the caller's
//! RiverEdge token, so it can do nothing the API would not let that token do.
//!
//! Every answer carries a Content-Security-Policy that allows scripts, styles and `fetch` from
//! this origin only, no inline script or style, no plugins, no forms posting elsewhere and
//! framing only by the same origin (RiverEdge may embed it when served under one host).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// Where the page is served.
pub const PATH: &str = "/backups";

/// What the page may load and where it may connect: only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; \
     manifest-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'self'";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// The page's routes: `/backups` redirects to `/backups/` (relative asset URLs need the slash).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PATH, get(|| async { Redirect::permanent("/backups/") }))
        .route(
            "/backups/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/backups/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/backups/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/backups/icon.svg",
            get(|| async { asset("image/svg+xml", ICON_SVG) }),
        )
        .route(
            "/backups/{*rest}",
            get(|| async { with_headers(StatusCode::NOT_FOUND, "text/plain", "not found") }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    with_headers(StatusCode::OK, content_type, body)
}

fn with_headers(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_TYPE, content_type);
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    // The assets change with the binary: revalidate rather than run an old script against a
    // newer API.
    set(headers, header::CACHE_CONTROL, "no-cache");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        // No inline script or style anywhere: the CSP would block it.
        assert!(!INDEX_HTML.contains("<script>"), "inline script");
        assert!(!INDEX_HTML.contains("style="), "inline style");
        assert!(!INDEX_HTML.contains("<style"), "inline style element");
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"));
        assert!(INDEX_HTML.contains(r#"src="app.js""#));
        for sink in [
            ".innerHTML",
            ".outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!APP_JS.contains(sink), "no HTML parsing of data: {sink}");
        }
        assert!(!APP_JS.contains("eval("));
    }
}
