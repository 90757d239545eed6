//! The web console: server-rendered pages at `/` on the HTTP listener.
//!
//! Pages are askama templates (`templates/console/`), compiled into the
//! binary and checked with it; the one script and stylesheet
//! (`assets/`) are compiled in too. Each screen has a stable URL and
//! works without script; the script only copies to the clipboard and
//! refreshes the regions marked `data-live`.
//!
//! - [`session`]: sign-in with the admin token, the session cookie, CSRF.
//! - [`agents`], [`deployments`], [`runs`], [`providers`], [`settings`], [`audit`], [`tokens`]: one module per screen.
//! - [`markdown`]: `mdMessage` as sanitized CommonMark.
//! - [`graph`]: a deployment's targets laid out as their `dependsOn` graph.
//! - [`page`]: what every page shares: the frame, rendering, failures as pages.
//!
//! Like the API handlers, pages call the domain through the same helpers
//! in [`crate::http`]; a [`Problem`] becomes an HTML page only here.

mod access;
pub mod agents;
pub mod audit;
pub mod deployments;
pub mod graph;
pub mod markdown;
pub mod page;
pub mod providers;
pub mod runs;
pub mod session;
pub mod settings;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::state::AppState;

/// No inline script or style, no `eval`, nothing from elsewhere; never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes: sign-in and the assets are open; every other page
/// needs a session, and every form posted to it the session's CSRF token.
pub fn router(state: Arc<AppState>) -> Router {
    let signed_in = Router::new()
        .route("/", get(|| async { Redirect::to("/agents") }))
        .route("/sign-out", post(session::sign_out))
        .route("/agents", get(agents::page).post(agents::register))
        .route("/agents/{id}/revoke", get(agents::confirm_revoke).post(agents::revoke))
        .route("/deployments", get(deployments::list))
        .route("/deployments/{id}", get(deployments::page))
        .route("/deployments/{id}/live", get(deployments::live))
        .route("/deployments/{id}/targets/{target}/{decision}", post(deployments::decide))
        .route("/deployments/{id}/abort", get(deployments::confirm_abort).post(deployments::abort))
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::page))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/providers", get(providers::page).post(providers::create))
        .route("/providers/{name}/delete", get(providers::confirm_delete).post(providers::delete))
        .route("/secrets", get(settings::secrets).post(settings::set_secret))
        .route("/secrets/{name}/delete", get(settings::confirm_delete_secret).post(settings::delete_secret))
        .route("/clients", get(settings::clients).post(settings::create_client))
        .route("/clients/{name}/revoke", get(settings::confirm_revoke_client).post(settings::revoke_client))
        .route("/audit", get(audit::page))
        .route("/tokens", get(tokens::page).post(tokens::create))
        .route("/tokens/{id}/revoke", get(tokens::confirm_revoke).post(tokens::revoke))
        .route_layer(middleware::from_fn_with_state(state.clone(), session::require_session));
    Router::new()
        .merge(signed_in)
        .route("/sign-in/oidc", get(session::oidc_start))
        .route("/sign-in/oidc/callback", get(session::oidc_callback))
        .route(
            "/sign-in",
            get(session::sign_in_page)
                .post(session::sign_in)
                .layer(axum::extract::DefaultBodyLimit::max(session::MAX_SIGN_IN_BYTES)),
        )
        .route("/assets/console.css", get(|| async { asset("text/css", include_str!("../../assets/console.css")) }))
        .route(
            "/assets/favicon.svg",
            get(|| async { asset("image/svg+xml", include_str!("../../assets/favicon.svg")) }),
        )
        .route(
            "/assets/console.js",
            get(|| async { asset("text/javascript", include_str!("../../assets/console.js")) }),
        )
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}

/// Every console response: the CSP and frame options; pages are not cached
/// (a credential shown once must not come back from the history).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
