//! The dashboard's pages and assets, embedded from the top-level `web/` folder so
//! the release binary is self-contained, and the security headers every response
//! carries.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// The files of `web/`, compiled in.
#[derive(rust_embed::RustEmbed)]
#[folder = "web/"]
struct Assets;

/// Content-Security-Policy: only our own scripts and styles, never framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds CSP, `X-Content-Type-Options`, `Referrer-Policy` and `X-Frame-Options` to
/// every response (pages, API, errors).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Serves an embedded file by path (`/` is the dashboard), 404 otherwise. The
/// auth layer in front decides who gets here.
pub async fn asset(uri: Uri) -> Response {
    let path = match uri.path().trim_start_matches('/') {
        "" => "index.html",
        p => p,
    };
    match Assets::get(path) {
        Some(f) => (
            [
                (header::CONTENT_TYPE, content_type(path)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            f.data.into_owned(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The command that sets this server's password: with the configuration file it
/// was started with, or, on the embedded default, from the directory it was
/// started in (its data directory is relative to it).
pub(super) fn set_password_command(config_path: Option<&std::path::Path>) -> String {
    match config_path {
        Some(path) => format!("dnsguard set-password --config {}", path.display()),
        None => match std::env::current_dir() {
            Ok(dir) => format!("cd {} && dnsguard set-password", dir.display()),
            Err(_) => "dnsguard set-password (where dnsguard serve was started)".into(),
        },
    }
}

/// The login page with a message; with no password set (`password_set` false)
/// it says how to set one and has no form to submit.
pub fn login_page(
    st: &AppState,
    status: StatusCode,
    message: &str,
    password_set: bool,
) -> Response {
    let template = Assets::get("login.html")
        .map(|f| String::from_utf8_lossy(&f.data).into_owned())
        .unwrap_or_default();
    let (message, form_state) = if password_set {
        (escape(message), "")
    } else {
        (
            format!(
                "No dashboard password is set yet. On the server, run \
                 <code>{}</code>, then reload this page.",
                escape(&set_password_command(st.live.config_path.as_deref()))
            ),
            "hidden",
        )
    };
    let html = template
        .replace("{{message}}", &message)
        .replace("{{form_state}}", form_state);
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}
