//! Frame Streams (the fstrm protocol dnstap travels in), bidirectional mode:
//! READY (with the content type) → ACCEPT → START → data frames → STOP → FINISH.
//!
//! A data frame is a big-endian u32 length and that many bytes. A control frame
//! starts with the escape, a zero length; then the control frame's length (u32),
//! its type (u32) and fields, each a type (u32, 1 = content type), a length (u32)
//! and the bytes. Control frames are at most 512 bytes.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::Target;

/// The content type dnstap collectors accept.
pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";

const ACCEPT: u32 = 1;
const START: u32 = 2;
const STOP: u32 = 3;
const READY: u32 = 4;
const FINISH: u32 = 5;
const FIELD_CONTENT_TYPE: u32 = 1;
const MAX_CONTROL: u32 = 512;

/// Why a collector connection failed.
#[derive(Debug, thiserror::Error)]
pub enum FstrmError {
    /// The socket failed (refused, reset, timed out).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The collector sent something that is not the control frame expected.
    #[error("collector sent {0}")]
    Protocol(&'static str),
}

/// A connection to a collector.
pub enum Stream {
    /// `unix:PATH`.
    Unix(UnixStream),
    /// `tcp:HOST:PORT`.
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// Connects to `target` and completes the handshake; every read and write on the
/// stream then gives up after `timeout` (a collector that stops reading cannot
/// hold the writer).
pub fn connect(target: &Target, timeout: Duration) -> Result<Stream, FstrmError> {
    let mut stream = match target {
        Target::Unix(path) => {
            let s = UnixStream::connect(path)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            Stream::Unix(s)
        }
        Target::Tcp(addr) => {
            let mut last = io::Error::other("no address");
            let mut found = None;
            for a in std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())? {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(s) => {
                        found = Some(s);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            let s = found.ok_or(last)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            s.set_nodelay(true)?;
            Stream::Tcp(s)
        }
    };
    stream.write_all(&control(READY, true))?;
    let (kind, types) = read_control(&mut stream)?;
    if kind != ACCEPT {
        return Err(FstrmError::Protocol("a control frame other than ACCEPT"));
    }
    if !types.is_empty() && !types.iter().any(|t| t == CONTENT_TYPE) {
        return Err(FstrmError::Protocol("ACCEPT without our content type"));
    }
    stream.write_all(&control(START, true))?;
    Ok(stream)
}

/// Ends the stream: STOP, then the collector's FINISH.
pub fn finish(stream: &mut Stream) -> Result<(), FstrmError> {
    stream.write_all(&control(STOP, false))?;
    match read_control(stream)? {
        (FINISH, _) => Ok(()),
        _ => Err(FstrmError::Protocol("a control frame other than FINISH")),
    }
}

/// A control frame of `kind`, with our content type if `typed`.
pub fn control(kind: u32, typed: bool) -> Vec<u8> {
    let mut body = kind.to_be_bytes().to_vec();
    if typed {
        body.extend_from_slice(&FIELD_CONTENT_TYPE.to_be_bytes());
        body.extend_from_slice(&(CONTENT_TYPE.len() as u32).to_be_bytes());
        body.extend_from_slice(CONTENT_TYPE);
    }
    let mut frame = 0u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Reads one control frame: its type and the content types it lists.
pub fn read_control(r: &mut impl Read) -> Result<(u32, Vec<Vec<u8>>), FstrmError> {
    if read_u32(r)? != 0 {
        return Err(FstrmError::Protocol(
            "a data frame where a control frame belongs",
        ));
    }
    let len = read_u32(r)?;
    if !(4..=MAX_CONTROL).contains(&len) {
        return Err(FstrmError::Protocol("a control frame of impossible length"));
    }
    let mut body = vec![0; len as usize];
    r.read_exact(&mut body)?;
    let kind = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let mut rest = &body[4..];
    let mut types = Vec::new();
    while !rest.is_empty() {
        let (Some(field), Some(flen)) = (be32(rest, 0), be32(rest, 4)) else {
            return Err(FstrmError::Protocol("a truncated control field"));
        };
        let end = 8usize.saturating_add(flen as usize);
        let Some(value) = rest.get(8..end) else {
            return Err(FstrmError::Protocol(
                "a control field longer than its frame",
            ));
        };
        if field == FIELD_CONTENT_TYPE {
            types.push(value.to_vec());
        }
        rest = &rest[end..];
    }
    Ok((kind, types))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_round_trip() {
        let ready = control(READY, true);
        // escape, length, type, field type, field length, content type
        assert_eq!(&ready[..4], &[0, 0, 0, 0]);
        assert_eq!(ready.len(), 8 + 4 + 8 + CONTENT_TYPE.len());
        let (kind, types) = read_control(&mut &ready[..]).unwrap();
        assert_eq!(kind, READY);
        assert_eq!(types, vec![CONTENT_TYPE.to_vec()]);
        assert_eq!(control(STOP, false), [0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 3]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff][..],
            &[
                0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0, 0,
            ][..],
            &[][..],
        ] {
            assert!(read_control(&mut &bad[..]).is_err());
        }
    }
}
