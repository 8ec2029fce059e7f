//! The status page: served by the admin listener at `/`, its assets embedded in the binary
//! at build time (`src/admin/page/`: one HTML page, a stylesheet and a script, no build
//! step), its data from the `/ui/` endpoints of [`super::page_api`].
//!
//! # Who may see it
//! With `server.admin_token` set, the page needs the same token as the API: as a bearer
//! token, or typed once into the login form, which answers with a session cookie
//! ([`super::session`]: `HttpOnly`, `SameSite=Strict`, signed with the token, expiring).
//! The cookie opens the page and its `/ui/` data only; the JSON API stays bearer-only, so
//! the CLI and scripts work as before. Without a token the page is as open as the API.
//!
//! # Against other sites
//! Every state-changing request is a POST. Any POST from another site's page is refused by
//! [`super::origin`] before it gets here; `/ui/` POSTs must also carry the header
//! `X-Hookrouter-Page: 1`, which a cross-site form cannot send and a cross-site script
//! cannot add without a CORS preflight, which the admin listener never grants. The page
//! may not be framed, and its Content-Security-Policy allows only its own script.
//!
//! # Secrets
//! Nothing here prints one: destination URLs are shown as scheme and host (as `check`
//! does), the admin token never leaves the login form's POST, and conditions on `${VAR}`
//! values show `<secret>` in explanations as in `route --explain`.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::handlers::query_pairs;
use super::session;
use super::AdminState;
use crate::config::SecretString;
use crate::http_server::response::{error, JsonResponse};
use crate::queue::now_ms;

const INDEX_HTML: &str = include_str!("page/index.html");
const LOGIN_HTML: &str = include_str!("page/login.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");
const FAVICON_SVG: &str = include_str!("page/favicon.svg");

/// The header every `/ui/` POST must carry (see the module doc).
pub const PAGE_HEADER: &str = "x-hookrouter-page";
/// Largest login form read.
const MAX_LOGIN_BODY: usize = 4096;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Is `path` the page's (rather than the JSON API's)?
pub fn serves(path: &str) -> bool {
    matches!(path, "/" | "/login" | "/logout" | "/ui")
        || path.starts_with("/assets/")
        || path.starts_with("/ui/")
}

/// What the configured token is, if any.
fn configured_token(state: &AdminState) -> Option<SecretString> {
    state.config.load().server.admin_token.clone()
}

/// Does the request carry the token (as a bearer token or a login cookie), or is none
/// configured?
fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    let Some(token) = configured_token(state) else {
        return true;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(presented) = bearer {
        return token.matches(presented.as_bytes());
    }
    let now = now_ms();
    session::cookies(headers, session::COOKIE).any(|c| session::valid(c, token.expose(), now))
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> JsonResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn html(status: StatusCode, body: String) -> JsonResponse {
    respond(status, "text/html; charset=utf-8", body)
}

fn redirect(to: &'static str, cookie: Option<String>) -> JsonResponse {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// The login form, with a message when a login was refused.
fn login_page(status: StatusCode, refused: bool) -> JsonResponse {
    let message = if refused {
        r#"<p class="error" role="alert" id="login-error">That is not the admin token.</p>"#
    } else {
        ""
    };
    let mut r = html(status, LOGIN_HTML.replace("{{MESSAGE}}", message));
    if status == StatusCode::UNAUTHORIZED {
        // Bearer, not Basic: a browser shows the form rather than its own password prompt.
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// The page itself, with a logout button when there is a login to end.
fn index(state: &AdminState) -> JsonResponse {
    let logout = if configured_token(state).is_some() {
        r#"<form method="post" action="/logout" class="logout"><button type="submit" id="logout">Log out</button></form>"#
    } else {
        ""
    };
    html(StatusCode::OK, INDEX_HTML.replace("{{LOGOUT}}", logout))
}

/// `POST /login`: the form's `token` against `server.admin_token`.
async fn login(state: &AdminState, req: Request<Incoming>) -> JsonResponse {
    let Some(token) = configured_token(state) else {
        return redirect("/", None);
    };
    // Over HTTPS (a TLS proxy in front) the browser says so in Origin.
    let secure = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"));
    let body = match Limited::new(req.into_body(), MAX_LOGIN_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_body",
                format!("the login form takes at most {MAX_LOGIN_BODY} bytes"),
            )
        }
    };
    let form = query_pairs(std::str::from_utf8(&body).ok());
    let presented = form.get("token").map(String::as_str).unwrap_or("");
    if token.matches(presented.as_bytes()) {
        tracing::info!("status page login");
        let cookie = session::set_cookie(&session::issue(token.expose(), now_ms()), secure);
        redirect("/", Some(cookie))
    } else {
        tracing::warn!("status page login refused: wrong token");
        login_page(StatusCode::UNAUTHORIZED, true)
    }
}

/// `/ui/...`: the page's data, for a logged-in browser (or a bearer token).
async fn ui(state: &Arc<AdminState>, req: Request<Incoming>) -> JsonResponse {
    if !authorized(state, req.headers()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in on the status page, or send the bearer token from server.admin_token",
        );
    }
    if req.method() == Method::POST
        && req.headers().get(PAGE_HEADER).map(HeaderValue::as_bytes) != Some(b"1")
    {
        return error(
            StatusCode::FORBIDDEN,
            "cross_site",
            format!("status page actions must carry the header {PAGE_HEADER}: 1"),
        );
    }
    super::page_api::route(state, req).await
}

fn with_security_headers(mut r: JsonResponse) -> JsonResponse {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Answers a request for one of the page's paths ([`serves`]).
pub async fn handle(state: &Arc<AdminState>, req: Request<Incoming>) -> JsonResponse {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let response = match (&method, path.as_str()) {
        (&Method::GET, "/assets/app.js") => {
            respond(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS)
        }
        (&Method::GET, "/assets/style.css") => {
            respond(StatusCode::OK, "text/css; charset=utf-8", STYLE_CSS)
        }
        (&Method::GET, "/assets/favicon.svg") => {
            respond(StatusCode::OK, "image/svg+xml", FAVICON_SVG)
        }
        (&Method::GET, "/") if authorized(state, req.headers()) => index(state),
        (&Method::GET, "/") => login_page(StatusCode::UNAUTHORIZED, false),
        (&Method::GET, "/login") if configured_token(state).is_none() => redirect("/", None),
        (&Method::GET, "/login") => login_page(StatusCode::OK, false),
        (&Method::POST, "/login") => login(state, req).await,
        (&Method::POST, "/logout") => redirect("/", Some(session::clear_cookie())),
        (_, p) if p == "/ui" || p.starts_with("/ui/") => ui(state, req).await,
        (_, "/" | "/login" | "/logout") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no page asset at {path}"),
        ),
    };
    with_security_headers(response)
}
