//! Who may use the dashboard and the API, and how they prove it.
//!
//! * The CLI sends the API token (`Authorization: Bearer …`, `DATA_DIR/api-token`);
//!   such requests need no CSRF token (a browser never sends that header by itself).
//! * People log in with the password set by `dnsguard set-password` (an argon2id
//!   hash with a random salt in `DATA_DIR/web-password`, mode 0600, re-read at
//!   every login so a new password works without a restart). A login makes a
//!   server-side session (in memory, 12 hours) named by an HttpOnly,
//!   SameSite=Strict cookie; every state change with a session must also carry
//!   the session's CSRF token in `X-CSRF-Token`.
//! * A session is bound to the password hash it logged in with: once the file
//!   holds another one (`dnsguard set-password` while the server runs), every
//!   older session is refused, so a changed password locks out whoever knew the
//!   old one.
//! * Logins are rate limited per client address (a token bucket).
//! * With no password set, nobody logs in: the login page says how to set one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use parking_lot::Mutex;

use super::AppState;

/// Name of the session cookie.
pub const COOKIE: &str = "dnsguard_session";
/// Header carrying the CSRF token on state changes.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after login.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Login attempts a client may make at once…
const LOGIN_BURST: f64 = 5.0;
/// …and how fast its allowance comes back (one attempt per this many seconds).
const LOGIN_REFILL_SECS: f64 = 10.0;

/// Errors of password handling.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The password file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Hashing failed or the stored hash is malformed.
    #[error("password hash: {0}")]
    Hash(String),
    /// The password is unusable.
    #[error("{0}")]
    Weak(&'static str),
}

/// The password hash file under the data directory.
pub fn password_path(data_dir: &Path) -> PathBuf {
    data_dir.join("web-password")
}

/// Hashes `password` (argon2id, random salt) and stores it in
/// `DATA_DIR/web-password` with mode 0600, replacing any previous one atomically.
pub fn set_password(data_dir: &Path, password: &str) -> Result<(), AuthError> {
    if password.chars().count() < 8 {
        return Err(AuthError::Weak("the password needs at least 8 characters"));
    }
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| AuthError::Hash(e.to_string()))?
        .to_string();
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| AuthError::Io { path, source }
    };
    crate::datadir::create_dir(data_dir).map_err(io(data_dir))?;
    crate::datadir::write_atomically(&password_path(data_dir), hash.as_bytes(), 0o600)
        .map_err(io(&password_path(data_dir)))
}

/// Whether a password has been set.
pub fn password_is_set(data_dir: &Path) -> bool {
    std::fs::read_to_string(password_path(data_dir)).is_ok_and(|s| !s.trim().is_empty())
}

/// The stored password hash (its salt makes every `set-password` differ), if a
/// password is set.
pub fn stored_hash(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(password_path(data_dir)).ok()?;
    let hash = text.trim();
    (!hash.is_empty()).then(|| hash.to_owned())
}

/// Checks `password` against the stored hash: the hash it matched (sessions are
/// bound to it), `None` when it does not match or no password is set.
pub fn verify_password(data_dir: &Path, password: &str) -> Option<String> {
    let hash = stored_hash(data_dir)?;
    Argon2::default()
        .verify_password(password.as_bytes(), hash.as_str())
        .is_ok()
        .then_some(hash)
}

/// 32 random bytes from the system as 64 hex digits: session ids, CSRF tokens,
/// the API token.
pub fn random_hex() -> String {
    use ring::rand::SecureRandom as _;
    let mut raw = [0u8; 32];
    // Without random numbers the system is unusable for secrets: stop rather than
    // go on weakly.
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .expect("no random numbers from the system");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token state changes must echo in `X-CSRF-Token`.
    pub csrf: String,
    expires: Instant,
    /// The password hash the session logged in with.
    password: String,
}

/// Sessions and login attempts, in memory (a restart logs everyone out).
#[derive(Default)]
pub struct AuthState {
    sessions: Mutex<HashMap<String, Session>>,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl AuthState {
    /// Makes a session for a login with the password whose stored hash is
    /// `password`, ending those of other passwords; returns (session id, CSRF token).
    pub fn create(&self, password: String) -> (String, String) {
        let id = random_hex();
        let csrf = random_hex();
        let now = Instant::now();
        let mut s = self.sessions.lock();
        s.retain(|_, v| v.expires > now && v.password == password);
        s.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
                password,
            },
        );
        (id, csrf)
    }

    /// The live session named `id`, if it logged in with the password whose hash
    /// is stored now (`current`); one that did not, or expired, is ended.
    pub fn get(&self, id: &str, current: Option<&str>) -> Option<Session> {
        let now = Instant::now();
        let mut s = self.sessions.lock();
        match s.get(id) {
            Some(v) if v.expires > now && current == Some(v.password.as_str()) => Some(v.clone()),
            Some(_) => {
                s.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.sessions.lock().remove(id);
    }

    /// Takes one login attempt from `ip`'s bucket; false when it is empty.
    pub fn allow_login(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut b = self.buckets.lock();
        if b.len() > 10_000 {
            b.retain(|_, (_, t)| now.duration_since(*t).as_secs_f64() < 3600.0);
        }
        let (tokens, last) = b.entry(ip).or_insert((LOGIN_BURST, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() / LOGIN_REFILL_SECS)
            .min(LOGIN_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Compares secrets without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request carries the API token.
pub fn has_bearer(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Paths anyone may fetch: the login page and what it loads, and the health check.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/login" | "/api/v1/health" | "/assets/login.js" | "/assets/style.css" | "/favicon.svg"
    )
}

/// The gate in front of every route: public paths pass; the API token passes;
/// a session passes, with its CSRF token required on anything but GET/HEAD.
/// Others get 401 (API) or a redirect to the login page (pages).
pub async fn require_auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if is_public(path) || path == "/metrics" {
        return next.run(req).await;
    }
    if has_bearer(req.headers(), &st.token) {
        return next.run(req).await;
    }
    let Some(session) = live_session(&st, req.headers()) else {
        if path.starts_with("/api/") {
            return (StatusCode::UNAUTHORIZED, "log in or send the API token\n").into_response();
        }
        return Redirect::to("/login").into_response();
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if !safe {
        let given = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), session.csrf.as_bytes()) {
            return (StatusCode::FORBIDDEN, "missing or wrong CSRF token\n").into_response();
        }
    }
    next.run(req).await
}

/// The session the request's cookie names, if it is still valid under the
/// password stored now (read here, so a change made by the CLI counts at once).
pub fn live_session(st: &AppState, headers: &HeaderMap) -> Option<Session> {
    let id = cookie(headers, COOKIE)?;
    st.auth.get(id, stored_hash(&st.data_dir).as_deref())
}

/// The login form's fields.
#[derive(Debug, serde::Deserialize)]
pub struct LoginForm {
    /// The dashboard password.
    pub password: String,
}

/// `GET /login`: the login form (or how to set a password when none is).
pub async fn login_form(State(st): State<AppState>) -> Response {
    let set = password_is_set(&st.data_dir);
    super::pages::login_page(&st, StatusCode::OK, "", set)
}

/// `POST /login`: checks the password, rate limited per address; on success sets
/// the session cookie and sends the browser to the overview.
pub async fn login(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    // A login posted from another site (login CSRF): browsers say so in
    // Sec-Fetch-Site, older ones with a foreign Origin ("null" is what a page
    // with `Referrer-Policy: no-referrer` sends for itself).
    if cross_site(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site login refused\n").into_response();
    }
    if !st.auth.allow_login(peer.ip()) {
        return super::pages::login_page(
            &st,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts; wait a minute and try again.",
            password_is_set(&st.data_dir),
        );
    }
    let data_dir = st.data_dir.clone();
    let password = form.password;
    let matched = tokio::task::spawn_blocking(move || verify_password(&data_dir, &password))
        .await
        .ok()
        .flatten();
    let Some(hash) = matched else {
        tracing::warn!(client = %peer.ip(), "dashboard login failed");
        return super::pages::login_page(
            &st,
            StatusCode::UNAUTHORIZED,
            "Wrong password.",
            password_is_set(&st.data_dir),
        );
    };
    let (id, _) = st.auth.create(hash);
    let secure = if st.secure_cookie { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    );
    (
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, cookie), (header::LOCATION, "/".into())],
    )
        .into_response()
}

/// Whether a request says it comes from another site.
fn cross_site(headers: &HeaderMap) -> bool {
    let get = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    if let Some(site) = get("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (get(header::ORIGIN.as_str()), get(header::HOST.as_str())) {
        (Some("null"), _) | (None, _) => false,
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, h)| h) != Some(host),
        (Some(_), None) => true,
    }
}

/// `POST /api/v1/logout`: ends the session and clears the cookie.
pub async fn logout(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, COOKIE) {
        st.auth.remove(id);
    }
    (
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )],
    )
        .into_response()
}

/// `GET /api/v1/session`: the CSRF token of the caller's session, for the pages.
pub async fn session(State(st): State<AppState>, headers: HeaderMap) -> Response {
    match live_session(&st, &headers) {
        Some(s) => axum::Json(serde_json::json!({ "csrf": s.csrf })).into_response(),
        None => axum::Json(serde_json::json!({ "csrf": null })).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_roundtrip_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(!password_is_set(dir.path()));
        assert!(set_password(dir.path(), "short").is_err());
        set_password(dir.path(), "correct horse").unwrap();
        assert!(password_is_set(dir.path()));
        assert_eq!(
            verify_password(dir.path(), "correct horse"),
            stored_hash(dir.path())
        );
        assert!(verify_password(dir.path(), "correct horse").is_some());
        assert!(verify_password(dir.path(), "wrong horse!").is_none());
        let mode = std::fs::metadata(password_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn login_bucket_empties() {
        let a = AuthState::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let granted = (0..20).filter(|_| a.allow_login(ip)).count();
        assert_eq!(granted, LOGIN_BURST as usize);
        assert!(a.allow_login("192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn sessions_expire_and_end() {
        let a = AuthState::default();
        let (id, csrf) = a.create("hash-1".into());
        assert_eq!(a.get(&id, Some("hash-1")).unwrap().csrf, csrf);
        a.remove(&id);
        assert!(a.get(&id, Some("hash-1")).is_none());
    }

    #[test]
    fn a_new_password_ends_older_sessions() {
        let a = AuthState::default();
        let (old, _) = a.create("hash-1".into());
        assert!(
            a.get(&old, Some("hash-2")).is_none(),
            "refused under another hash"
        );
        assert!(a.get(&old, Some("hash-1")).is_none(), "and ended for good");
        let (kept, _) = a.create("hash-2".into());
        assert!(
            a.get(&kept, None).is_none(),
            "no password stored: no session"
        );
        let (kept, _) = a.create("hash-2".into());
        a.create("hash-3".into());
        assert!(
            a.sessions.lock().get(&kept).is_none(),
            "a login with a newer password ends it"
        );
    }
}
