//! DoH's HTTP/2 connections, served with the `h2` crate directly: hyper's HTTP/2
//! layer spawned a task per stream and built a request and a response object for
//! each, about half of what a DoH query cost. Here a GET whose answer is known at
//! once (a hit, a block) is answered inside the connection's task, and every
//! request already read is answered before the connection next writes, so their
//! responses leave together (one TLS record, one write). A request that waits (a
//! POST body, the resolver) gets its own task, which notices the client's
//! cancellation (RST_STREAM) and counts it against the connection's budget.
//!
//! [`sniff`] tells the HTTP/2 preface from HTTP/1.1, so HTTP/2 needs no ALPN
//! (prior knowledge, e.g. a reverse proxy's h2c), as hyper's automatic server did.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use hyper::header::{self, HeaderValue};
use hyper::{StatusCode, http};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::{Answer, Ask, Conn, Doh, MAX_MESSAGE, Pending, Step, response};

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the start of a connection until it is clearly the HTTP/2 preface or
/// clearly not (an HTTP/1 request line differs at its first byte); returns the
/// connection with those bytes put back, and whether it speaks HTTP/2.
pub(super) async fn sniff<S: AsyncRead + Unpin>(mut io: S) -> io::Result<(Sniffed<S>, bool)> {
    let mut head = [0u8; PREFACE.len()];
    let mut len = 0;
    while len < head.len() && head[..len] == PREFACE[..len] {
        let n = io.read(&mut head[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let h2 = head[..len] == PREFACE[..];
    let sniffed = Sniffed {
        head,
        pos: 0,
        len,
        io,
    };
    Ok((sniffed, h2))
}

/// A connection whose first bytes were read by [`sniff`]: they are read again
/// first.
pub(super) struct Sniffed<S> {
    head: [u8; PREFACE.len()],
    pos: usize,
    len: usize,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.len {
            let n = (self.len - self.pos).min(buf.remaining());
            let from = self.pos;
            buf.put_slice(&self.head[from..from + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

type Accepted = (http::Request<RecvStream>, SendResponse<Bytes>);

/// Serves one HTTP/2 connection until the client closes it or it fails.
pub(super) async fn serve<S>(doh: &Arc<Doh>, conn: &Arc<Conn>, io: S) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut h2 = doh.http2.handshake::<_, Bytes>(io).await?;
    let mut batch: Vec<Accepted> = Vec::new();
    loop {
        // Every request already read: accepting drives the connection, which
        // writes what is queued, so answering the batch first makes its
        // responses one write.
        let end = poll_fn(|cx| {
            loop {
                match h2.poll_accept(cx) {
                    Poll::Ready(Some(Ok(accepted))) => batch.push(accepted),
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                    Poll::Ready(None) => return Poll::Ready(Some(Ok(()))),
                    Poll::Pending if batch.is_empty() => return Poll::Pending,
                    Poll::Pending => return Poll::Ready(None),
                }
            }
        })
        .await;
        for (req, respond) in batch.drain(..) {
            request(doh, conn, req, respond);
        }
        // An idle connection keeps no room for a past burst of 100 requests.
        batch.shrink_to(16);
        if let Some(end) = end {
            // Closed (or failed): what was queued still goes out.
            poll_fn(|cx| h2.poll_closed(cx)).await.ok();
            return Ok(end?);
        }
    }
}

/// One request: answered now when it can be, else in a task of its own.
fn request(
    doh: &Arc<Doh>,
    conn: &Arc<Conn>,
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    conn.slot.touch();
    let (parts, mut body) = req.into_parts();
    match doh.ask(conn, &parts) {
        Err(answer) => send(&mut respond, answer),
        Ok(Ask {
            presented,
            message: Some(message),
        }) => match doh.decide(conn, &parts.headers, message, presented) {
            Step::Now(answer) => send(&mut respond, answer),
            Step::Later(work) => {
                let permits = conn.permits.clone();
                tokio::spawn(waited(conn.clone(), respond, async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return Answer::Status(StatusCode::SERVICE_UNAVAILABLE);
                    };
                    work.run().await
                }));
            }
        },
        Ok(Ask {
            presented,
            message: None,
        }) => {
            let (doh, task_conn) = (doh.clone(), conn.clone());
            tokio::spawn(waited(conn.clone(), respond, async move {
                let conn = &task_conn;
                let read = read_body(&mut body);
                let message = match doh.read_body(conn, &parts.headers, read).await {
                    Ok(message) => message,
                    Err(code) => return Answer::Status(code),
                };
                match doh.decide(conn, &parts.headers, message, presented) {
                    Step::Now(answer) => answer,
                    Step::Later(work) => {
                        let Ok(_permit) = conn.permits.acquire().await else {
                            return Answer::Status(StatusCode::SERVICE_UNAVAILABLE);
                        };
                        work.run().await
                    }
                }
            }));
        }
    }
}

/// Sends `work`'s answer, unless the client cancels the request first: that
/// counts against the connection's budget, and the work still finishes (and is
/// logged) like any other, its permit bounding how much of it one connection
/// can leave behind.
async fn waited(
    conn: Arc<Conn>,
    mut respond: SendResponse<Bytes>,
    work: impl Future<Output = Answer>,
) {
    let mut pending = Pending::new(&conn);
    let mut work = pin!(work);
    tokio::select! {
        answer = &mut work => {
            pending.done = true;
            send(&mut respond, answer);
        }
        _ = poll_fn(|cx| respond.poll_reset(cx)) => {
            drop(pending);
            work.await;
        }
    }
}

/// A POST body, at most [`MAX_MESSAGE`] bytes; each chunk's flow-control window
/// is given back as it is taken.
async fn read_body(body: &mut RecvStream) -> Result<Vec<u8>, StatusCode> {
    let mut message = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| StatusCode::BAD_REQUEST)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if message.len() + chunk.len() > MAX_MESSAGE {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        if message.is_empty() && body.is_end_stream() {
            return Ok(Vec::from(chunk));
        }
        message.extend_from_slice(&chunk);
    }
    Ok(message)
}

/// Queues `answer` on its stream (the connection writes it); a stream the
/// client has reset meanwhile takes nothing.
fn send(respond: &mut SendResponse<Bytes>, answer: Answer) {
    let (mut head, body) = response(answer).into_parts();
    head.headers.insert(header::DATE, date());
    let head = http::Response::from_parts(head, ());
    match respond.send_response(head, body.is_empty()) {
        Ok(mut stream) if !body.is_empty() => {
            if let Err(error) = stream.send_data(body, true) {
                tracing::debug!(%error, "DoH answer not sent");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::debug!(%error, "DoH answer not sent"),
    }
}

thread_local! {
    /// This second's `Date` value, made once a second per thread.
    static DATE: RefCell<(u64, HeaderValue)> =
        const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

/// The `Date` header of a response now (RFC 9110 §6.6.1: an origin server with a
/// clock sends it), IMF-fixdate.
fn date() -> HeaderValue {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != now {
            *cached = (now, imf_fixdate(now));
        }
        cached.1.clone()
    })
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for `secs` since the Unix epoch.
fn imf_fixdate(secs: u64) -> HeaderValue {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let text = format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[usize::from(t.weekday().number_days_from_monday())],
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    );
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(imf_fixdate(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(imf_fixdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[tokio::test]
    async fn sniffing_puts_the_bytes_back() {
        let mut h2 = PREFACE.to_vec();
        h2.extend_from_slice(b"\0\0\0\x04");
        let (mut io, is_h2) = sniff(&h2[..]).await.unwrap();
        assert!(is_h2);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, h2);
        let h1 = b"GET /dns-query?dns=AAE HTTP/1.1\r\n\r\n";
        let (mut io, is_h2) = sniff(&h1[..]).await.unwrap();
        assert!(!is_h2);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, h1);
        // A prefix of the preface, then the end: not HTTP/2.
        let (_, is_h2) = sniff(&PREFACE[..10]).await.unwrap();
        assert!(!is_h2);
    }
}
