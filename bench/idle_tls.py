#!/usr/bin/env python3
"""Memory per idle DNS-over-TLS connection: opens N TLS connections to a server
that complete the handshake and then stay silent, and prints the server's VmRSS
before and after, and the difference per connection.

    idle_tls.py PORT PID N

Connections come from 127.0.0.1 (the server's per-client bound must allow N).
The certificate is not verified (the servers under test are self-signed).
"""
import socket
import ssl
import sys
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def main():
    port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # One connection first, so the server's lazily made state (the TLS config,
    # the session cache, the connection table) is in the baseline, not the delta.
    warm = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    time.sleep(0.5)
    before = rss_kb(pid)
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        conns.append(ctx.wrap_socket(s))  # the handshake completes here
    # The server finishes its side of each handshake (and frees the handshake's
    # temporaries) after the client's Finished; let it settle, bounded.
    deadline = time.monotonic() + 10
    last = rss_kb(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss_kb(pid)
        if abs(now - last) < 64:
            break
        last = now
    after = rss_kb(pid)
    # Every connection must still be open (not evicted by the server's bounds):
    # a closed one reads EOF at once; an idle open one times out.
    alive = 0
    for c in conns:
        c.settimeout(0.001)
        try:
            alive += 0 if c.recv(1) == b"" else 1
        except (TimeoutError, socket.timeout, ssl.SSLWantReadError):
            alive += 1
        except (ConnectionError, ssl.SSLError):
            pass
    for c in conns + [warm]:
        c.close()
    per = (after - before) / n
    print(f"connections={n} alive={alive} rss_before_kb={before} rss_after_kb={after} per_conn_kb={per:.1f}")


if __name__ == "__main__":
    main()
