//! dnstap's real collector in tests: runs `fstrm_capture` (Debian `fstrm-bin`) and
//! reads what a Frame Streams file it captured holds.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `fstrm_capture`.
pub struct Capture {
    /// The collector process (a test may kill it to play a collector that dies).
    pub child: Child,
    file: PathBuf,
}

impl Capture {
    /// Listens on the Unix socket `socket` and writes to `file`; returns once the
    /// socket exists.
    pub fn unix(socket: &Path, file: &Path) -> Capture {
        let child = Command::new("fstrm_capture")
            .args(["-t", "protobuf:dnstap.Dnstap", "-u"])
            .arg(socket)
            .arg("-w")
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fstrm_capture (Debian fstrm-bin) installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "fstrm_capture's socket never appeared"
            );
            std::thread::yield_now();
        }
        Capture {
            child,
            file: file.to_owned(),
        }
    }

    /// Listens on 127.0.0.1:`port` and writes to `file`.
    pub fn tcp(port: u16, file: &Path) -> Capture {
        let child = Command::new("fstrm_capture")
            .args(["-t", "protobuf:dnstap.Dnstap", "-a", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("-w")
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fstrm_capture (Debian fstrm-bin) installed");
        Capture {
            child,
            file: file.to_owned(),
        }
    }

    /// Stops the capture (SIGTERM: it closes the file) and returns the file.
    pub fn finish(mut self) -> PathBuf {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap();
        self.file.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `socket_protocol` (Message field 3) of every dnstap message (Dnstap field
/// 14) in a Frame Streams file's data frames.
pub fn socket_protocols(mut file: &[u8]) -> Vec<u64> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0;
        for shift in (0..64).step_by(7) {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        v
    }
    /// (field, varint value or length-delimited bytes) of a protobuf message.
    fn fields(mut b: &[u8]) -> Vec<(u64, u64, &[u8])> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b);
            match key & 7 {
                0 => out.push((key >> 3, varint(&mut b), &b[..0])),
                2 => {
                    let len = varint(&mut b) as usize;
                    out.push((key >> 3, 0, &b[..len]));
                    b = &b[len..];
                }
                1 => b = &b[8..],
                5 => b = &b[4..],
                other => panic!("wire type {other}"),
            }
        }
        out
    }
    let mut protocols = Vec::new();
    let u32_at = |b: &mut &[u8]| {
        let v = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
        *b = &b[4..];
        v
    };
    while !file.is_empty() {
        let len = u32_at(&mut file);
        if len == 0 {
            let control = u32_at(&mut file);
            file = &file[control..];
            continue;
        }
        let (frame, rest) = file.split_at(len);
        file = rest;
        for (_, _, message) in fields(frame).into_iter().filter(|f| f.0 == 14) {
            protocols.extend(fields(message).iter().filter(|f| f.0 == 3).map(|f| f.1));
        }
    }
    protocols
}
