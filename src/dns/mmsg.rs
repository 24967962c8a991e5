//! Batched UDP I/O for the per-core workers: `recvmmsg` takes every query waiting
//! on a socket (up to [`Batch`]'s size) in one system call, and `sendmmsg` sends
//! the replies written in place in one more. The per-packet work in the kernel
//! stays; the per-call cost is shared by the batch.
//!
//! [`watch`] registers a worker's socket with its runtime, so the worker waits
//! for queries without blocking the thread's other tasks.
//!
//! This is the only `unsafe` of the DNS path: the message headers point into
//! buffers the [`Batch`] owns and never moves (boxed slices, allocated once).

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Receive and reply buffers for `size` datagrams, with their headers.
pub struct Batch {
    packets: Box<[u8]>,
    replies: Box<[u8]>,
    buffer: usize,
    addrs: Box<[libc::sockaddr_storage]>,
    in_iov: Box<[libc::iovec]>,
    in_hdr: Box<[libc::mmsghdr]>,
    out_iov: Box<[libc::iovec]>,
    out_hdr: Box<[libc::mmsghdr]>,
    received: usize,
    queued: usize,
}

// SAFETY: the raw pointers in the headers only point into the batch's own
// buffers; a batch is used by one thread at a time.
unsafe impl Send for Batch {}

impl Batch {
    /// Room for `size` datagrams of at most `buffer` bytes each way.
    pub fn new(size: usize, buffer: usize) -> Batch {
        let size = size.max(1);
        // SAFETY: all zeros is valid for these C structs; the headers are
        // filled in before every system call.
        let (addrs, in_iov, in_hdr, out_iov, out_hdr) = unsafe {
            (
                zeroed(size),
                zeroed(size),
                zeroed(size),
                zeroed(size),
                zeroed(size),
            )
        };
        let mut b = Batch {
            packets: vec![0u8; size * buffer].into_boxed_slice(),
            replies: vec![0u8; size * buffer].into_boxed_slice(),
            buffer,
            addrs,
            in_iov,
            in_hdr,
            out_iov,
            out_hdr,
            received: 0,
            queued: 0,
        };
        let base = b.packets.as_mut_ptr();
        for i in 0..size {
            b.in_iov[i] = libc::iovec {
                // SAFETY: i * buffer < size * buffer, inside `packets`.
                iov_base: unsafe { base.add(i * buffer) }.cast(),
                iov_len: buffer,
            };
        }
        b
    }

    /// Takes every datagram already queued, up to the batch size, without
    /// waiting: `WouldBlock` when there is none (wait with [`watch`]).
    pub fn try_recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.received = 0;
        self.queued = 0;
        let n = self.in_hdr.len();
        for i in 0..n {
            let h = &mut self.in_hdr[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.in_iov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.in_hdr[i].msg_len = 0;
        }
        // SAFETY: every header points at an address slot and an iovec of this
        // batch, each iovec at a `buffer`-byte slice of `packets`; `n` headers.
        let got = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.in_hdr.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_WAITFORONE | libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = got as usize;
        Ok(self.received)
    }

    /// Datagram `i` of the last [`recv`](Self::recv), its sender (`None` for an
    /// address family other than IPv4/IPv6), and reply buffer `i`.
    pub fn slot(&mut self, i: usize) -> (&[u8], Option<SocketAddr>, &mut [u8]) {
        let len = (self.in_hdr[i].msg_len as usize).min(self.buffer);
        let from = sockaddr(&self.addrs[i]);
        let at = i * self.buffer;
        (
            &self.packets[at..at + len],
            from,
            &mut self.replies[at..at + self.buffer],
        )
    }

    /// Queues the first `len` bytes of reply buffer `i` for the sender of
    /// datagram `i`.
    pub fn reply(&mut self, i: usize, len: usize) {
        let q = self.queued;
        let at = i * self.buffer;
        self.out_iov[q] = libc::iovec {
            // SAFETY: `at` + `len` stays inside `replies` (len <= buffer).
            iov_base: unsafe { self.replies.as_mut_ptr().add(at) }.cast(),
            iov_len: len.min(self.buffer),
        };
        let h = &mut self.out_hdr[q].msg_hdr;
        h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = self.in_hdr[i].msg_hdr.msg_namelen;
        h.msg_iov = &mut self.out_iov[q];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
        self.queued += 1;
    }

    /// Sends the queued replies. A reply the kernel refuses (e.g. an ICMP error
    /// left on the socket) is skipped, as a lost datagram would be; returns the
    /// number sent.
    pub fn send(&mut self, socket: &UdpSocket) -> usize {
        let mut sent = 0;
        while sent < self.queued {
            // SAFETY: headers [sent, queued) were filled by `reply` and point at
            // this batch's address slots, iovecs and reply buffers.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.out_hdr[sent..].as_mut_ptr(),
                    (self.queued - sent) as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::debug!(error = %e, "UDP send failed");
                sent += 1; // skip the reply that failed
            } else {
                sent += n as usize;
            }
        }
        self.queued = 0;
        sent
    }
}

/// Registers `socket` with the current tokio runtime, to wait until it is
/// readable before [`Batch::try_recv`].
pub fn watch(socket: Arc<UdpSocket>) -> io::Result<AsyncFd<Arc<UdpSocket>>> {
    // SAFETY: the `Arc` the `AsyncFd` holds keeps the socket, and so its file
    // descriptor, open and unchanged for as long as the registration lives.
    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }.map_err(io::Error::from)
}

/// `n` all-zero values of a C struct.
///
/// # Safety
/// All zeros must be a valid `T` (true of sockaddr_storage, iovec and mmsghdr:
/// null pointers and zero lengths).
unsafe fn zeroed<T>(n: usize) -> Box<[T]> {
    // SAFETY: the caller guarantees all zeros is a valid T.
    (0..n).map(|_| unsafe { std::mem::zeroed() }).collect()
}

/// The socket address in `s`, for IPv4 and IPv6.
fn sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (at most 5 s) until `s` has a datagram queued.
    fn wait_readable(s: &UdpSocket) {
        let mut p = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a socket this test owns.
        let n = unsafe { libc::poll(&mut p, 1, 5000) };
        assert_eq!(n, 1, "no datagram within 5 s");
    }

    #[test]
    fn an_empty_socket_would_block() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = Batch::new(2, 64);
        let e = batch.try_recv(&server).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn receives_a_burst_and_replies_to_each_sender() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let clients: Vec<UdpSocket> = (0..5)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(&[i as u8; 3], server.local_addr().unwrap())
                .unwrap();
        }
        let mut batch = Batch::new(4, 512);
        let mut seen = 0;
        while seen < clients.len() {
            wait_readable(&server);
            let n = batch.try_recv(&server).unwrap();
            assert!((1..=4).contains(&n));
            for i in 0..n {
                let (packet, from, out) = batch.slot(i);
                let from = from.unwrap();
                let who = clients
                    .iter()
                    .position(|c| c.local_addr().unwrap() == from)
                    .unwrap();
                assert_eq!(packet, [who as u8; 3]);
                out[..2].copy_from_slice(&[0xAB, who as u8]);
                batch.reply(i, 2);
            }
            assert_eq!(batch.send(&server), n);
            seen += n;
        }
        for (i, c) in clients.iter().enumerate() {
            let mut buf = [0u8; 16];
            c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let (len, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(from, server.local_addr().unwrap());
            assert_eq!(&buf[..len], &[0xAB, i as u8]);
        }
    }

    #[test]
    fn ipv6_senders_round_trip() {
        let Ok(server) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback in this sandbox
        };
        let client = UdpSocket::bind("[::1]:0").unwrap();
        client.send_to(b"q", server.local_addr().unwrap()).unwrap();
        let mut batch = Batch::new(2, 64);
        wait_readable(&server);
        assert_eq!(batch.try_recv(&server).unwrap(), 1);
        let (_, from, out) = batch.slot(0);
        assert_eq!(from, Some(client.local_addr().unwrap()));
        out[0] = b'r';
        batch.reply(0, 1);
        assert_eq!(batch.send(&server), 1);
        let mut buf = [0u8; 4];
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        assert_eq!(client.recv(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'r');
    }
}
