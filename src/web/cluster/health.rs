//! `GET /api/v1/health`: is this node ready to hold the virtual address? Ready
//! means its UDP listener answers a real query through the whole pipeline: the
//! handler asks its own listener for [`PROBE_NAME`] `A` (a name under
//! `localhost`, RFC 6761) from loopback and wants a NOERROR answer within
//! [`PROBE_TIMEOUT`]. The filter is compiled before any listener opens, so an
//! answer also says the policy is in force.
//!
//! The route is public (keepalived's `track_script` runs `curl`) and says only
//! `ok` (200) or `not ready` (503): nothing about the configuration or clients.
//! The probe's query is left out of the query log, metrics, guard and dnstap
//! (`Pipeline::record`): keepalived asks every second.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::cluster::{LISTENING, PROBE_NAME, PROBE_TIMEOUT};
use crate::web::AppState;

/// `GET /api/v1/health`.
pub async fn health(State(_): State<AppState>) -> Response {
    if ready().await {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Whether the DNS listener answers (see the module doc).
pub async fn ready() -> bool {
    let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
    // The listeners may be binding right now (the API starts first): wait for
    // them within the probe's time rather than answer "not ready" for a node
    // that is a moment from ready.
    let listening = loop {
        if let Some(l) = LISTENING.get() {
            break l;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let Some(target) = probe_target(listening) else {
        return false;
    };
    match tokio::time::timeout_at(deadline, probe(target)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(%target, error = %e, "health check: the DNS listener gave no good answer");
            false
        }
        Err(_) => {
            tracing::warn!(%target, "health check: the DNS listener did not answer in time");
            false
        }
    }
}

/// The listen address to ask: a loopback one if there is one (a virtual
/// address this node does not hold would reach the peer), else the first, a
/// wildcard address meaning loopback.
fn probe_target(listen: &[SocketAddr]) -> Option<SocketAddr> {
    let first = listen
        .iter()
        .find(|a| a.ip().is_loopback())
        .or_else(|| listen.first())?;
    let ip = match first.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(SocketAddr::new(ip, first.port()))
}

/// One [`PROBE_NAME`] `A` query to `target`; Ok on a NOERROR reply to it.
async fn probe(target: SocketAddr) -> std::io::Result<()> {
    use std::io::Error;
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(target).await?;
    let id: u16 = rand::random();
    let mut query = Vec::with_capacity(32);
    query.extend_from_slice(&id.to_be_bytes());
    // RD; one question.
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in PROBE_NAME.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    sock.send(&query).await?;
    let mut buf = [0u8; 512];
    loop {
        let n = sock.recv(&mut buf).await?;
        if n < 12 || buf[..2] != id.to_be_bytes() || buf[2] & 0x80 == 0 {
            continue; // not the reply to this query
        }
        return match buf[3] & 0x0f {
            0 => Ok(()),
            rcode => Err(Error::other(format!("rcode {rcode}"))),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_loopback_first_and_maps_wildcards() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            probe_target(&[a("10.0.0.100:53"), a("127.0.0.1:5300")]),
            Some(a("127.0.0.1:5300"))
        );
        assert_eq!(probe_target(&[a("0.0.0.0:53")]), Some(a("127.0.0.1:53")));
        assert_eq!(probe_target(&[a("[::]:53")]), Some(a("[::1]:53")));
        assert_eq!(probe_target(&[]), None);
    }
}
