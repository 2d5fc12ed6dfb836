//! The browser pages, embedded in the binary: the booking app at `/` (cities, shows,
//! the seat map, lock, countdown, payment, bookings) and the SRE page at `/cluster`.
//! They are plain HTML, CSS and JavaScript from `api/web/`, talk only to this api's
//! REST endpoints, and load nothing from elsewhere (the Content-Security-Policy says so
//! to the browser too).
//!
//! The pages are not part of the OpenAPI document; they hold no state on the server.

use crate::app::Shared;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// Every page and asset, by the path it is served under.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../web/index.html"),
    },
    Asset {
        path: "/cluster",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../web/cluster.html"),
    },
    Asset {
        path: "/assets/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../web/style.css"),
    },
    Asset {
        path: "/assets/common.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/common.js"),
    },
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/app.js"),
    },
    Asset {
        path: "/assets/cluster.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/cluster.js"),
    },
];

/// Only this origin's scripts, styles and API; no inline script, no frames.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

fn serve(asset: &'static Asset) -> Response {
    let mut response = (StatusCode::OK, asset.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // The assets change only with the binary; revalidating keeps an upgrade visible.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The routes of the pages and their assets.
pub fn router() -> Router<Shared> {
    let mut router = Router::new();
    for asset in ASSETS {
        router = router.route(asset.path, get(move || async move { serve(asset) }));
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages reference only embedded assets, and nothing outside this origin.
    #[test]
    fn pages_load_only_embedded_assets() {
        for asset in ASSETS {
            for marker in ["http://", "https://", "//fonts.", "cdn"] {
                assert!(
                    !asset.body.contains(marker),
                    "{} mentions {marker:?}: assets must come from this binary",
                    asset.path
                );
            }
        }
        for page in ASSETS
            .iter()
            .filter(|a| a.content_type.starts_with("text/html"))
        {
            for reference in page
                .body
                .split("src=\"")
                .skip(1)
                .chain(page.body.split("href=\"").skip(1))
            {
                let target = reference.split('"').next().unwrap_or_default();
                if target.starts_with('#') || !target.starts_with('/') {
                    continue;
                }
                assert!(
                    ASSETS.iter().any(|a| a.path == target),
                    "{} references {target}, which is not embedded",
                    page.path
                );
            }
        }
    }
}
