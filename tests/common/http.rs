//! A minimal HTTP/1.1 server on a real loopback socket, for list-download and
//! webhook tests: the test sets the response (or a sequence of them); the server
//! counts requests, keeps their bodies and remembers the last `If-None-Match`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

/// What the server answers.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
    /// ETag header, if any; a request with a matching If-None-Match gets 304.
    pub etag: Option<String>,
    /// Claim this Content-Length instead of the body's (for "huge body" tests).
    pub claimed_length: Option<u64>,
    /// Instead of `body`, stream this many bytes of list lines with no
    /// Content-Length (the end is the connection's close), generated on the fly:
    /// a multi-gigabyte body never exists in memory.
    pub stream_bytes: Option<u64>,
}

impl Response {
    /// 200 with this body.
    pub fn ok(body: &str) -> Self {
        Self {
            status: 200,
            body: body.as_bytes().to_vec(),
            etag: None,
            claimed_length: None,
            stream_bytes: None,
        }
    }
}

#[derive(Default)]
struct State {
    response: Option<Response>,
    /// Answered first, in order, before `response`.
    queue: std::collections::VecDeque<Response>,
    requests: u64,
    bodies: Vec<String>,
    last_if_none_match: Option<String>,
    streamed: u64,
}

/// A running server; it stops when the test process ends.
#[derive(Clone)]
pub struct HttpServer {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl HttpServer {
    /// Starts serving `response` on 127.0.0.1 and a free port.
    pub fn start(response: Response) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            response: Some(response),
            ..State::default()
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut if_none_match = None;
                let mut content_length = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("if-none-match") {
                            if_none_match = Some(v.trim().to_owned());
                        } else if k.eq_ignore_ascii_case("content-length") {
                            content_length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; content_length];
                let _ = std::io::Read::read_exact(&mut reader, &mut body);
                let resp = {
                    let mut s = st.lock().unwrap();
                    s.requests += 1;
                    s.bodies.push(String::from_utf8_lossy(&body).into_owned());
                    if if_none_match.is_some() {
                        s.last_if_none_match = if_none_match.clone();
                    }
                    match s.queue.pop_front() {
                        Some(r) => r,
                        None => s.response.clone().unwrap(),
                    }
                };
                let not_modified = resp.etag.is_some() && resp.etag == if_none_match;
                let (status, body): (u16, &[u8]) = if not_modified {
                    (304, b"")
                } else {
                    (resp.status, &resp.body)
                };
                if let (Some(total), false) = (resp.stream_bytes, not_modified) {
                    let head =
                        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n";
                    if stream.write_all(head.as_bytes()).is_err() {
                        continue;
                    }
                    let chunk = "||streamed.test^\n".repeat(4096);
                    let mut sent = 0u64;
                    while sent < total {
                        let n = chunk.len().min((total - sent) as usize);
                        if stream.write_all(&chunk.as_bytes()[..n]).is_err() {
                            break; // the client hung up
                        }
                        sent += n as u64;
                        st.lock().unwrap().streamed = sent;
                    }
                    continue;
                }
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\nContent-Type: text/plain\r\n",
                    resp.claimed_length.unwrap_or(body.len() as u64)
                );
                if let Some(etag) = &resp.etag {
                    head.push_str(&format!("ETag: {etag}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            }
        });
        Self { addr, state }
    }

    /// Changes what the server answers from now on.
    pub fn set(&self, response: Response) {
        self.state.lock().unwrap().response = Some(response);
    }

    /// Answers these first, in order, then the usual response again.
    pub fn answer_next(&self, responses: Vec<Response>) {
        self.state.lock().unwrap().queue.extend(responses);
    }

    /// Bodies of the requests served so far.
    pub fn bodies(&self) -> Vec<String> {
        self.state.lock().unwrap().bodies.clone()
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.state.lock().unwrap().requests
    }

    /// Bytes of the last streamed body written to the socket (for `stream_bytes`).
    pub fn streamed(&self) -> u64 {
        self.state.lock().unwrap().streamed
    }

    /// The If-None-Match header of the last request that had one (a dnsguard
    /// secondary's other requests, its seen-set exchange, carry none).
    pub fn last_if_none_match(&self) -> Option<String> {
        self.state.lock().unwrap().last_if_none_match.clone()
    }

    /// The URL of a path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A plain HTTP/1.1 GET on a real socket; returns (status, body).
pub fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::Read;
    let hostport = base
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A reply of [`request`].
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Header lines (name lower-cased, value).
    pub headers: Vec<(String, String)>,
    /// Body (chunked encoding undone).
    pub body: String,
}

impl Reply {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// Any HTTP/1.1 request on a real socket (`Connection: close`); `body` is sent
/// with its length. For the dashboard API and the WebDriver protocol.
pub fn request(
    method: &str,
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    use std::io::Read;
    let hostport = base
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method != "GET" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    // Read until the body is complete by its length (or chunked end, or EOF):
    // some servers keep the connection open despite `Connection: close`.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if body_complete(&raw) {
            break;
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(end) = rest[i..].windows(2).position(|w| w == b"\r\n") {
            let size_line = String::from_utf8_lossy(&rest[i..i + end]).into_owned();
            let size =
                usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap_or(0);
            i += end + 2;
            if size == 0 || i + size > rest.len() {
                break;
            }
            out.extend_from_slice(&rest[i..i + size]);
            i += size + 2;
        }
        rest = out;
    }
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&rest).into_owned(),
    }
}

/// Whether `raw` (a response so far) holds its whole body.
fn body_complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= len;
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    false
}
