#!/usr/bin/env python3
"""TLS handshakes per second against a DNS-over-TLS server, each connection a
fresh TCP connection: handshake, one query (`localhost A`, answered locally by
both servers; reading its answer also reads the TLS 1.3 session ticket), close.

    handshakes.py PORT SECONDS new|reuse PID

`new` makes a full handshake every time; `reuse` offers the session of the
previous connection (TLS 1.3 resumption, PSK + ECDHE, as DoT clients such as
kdig and systemd-resolved do). Prints connections, seconds, connections/s, how
many the server actually resumed, and the server's CPU seconds (from
/proc/PID/stat) so that handshakes per server core second can be derived.
"""
import os
import socket
import ssl
import struct
import sys
import time

QUERY = bytes.fromhex("1234 0100 0001 0000 0000 0000") + b"\x09localhost\x00" + struct.pack(">HH", 1, 1)


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed before the answer")
        buf += chunk
    return buf


def main():
    port, secs, mode, pid = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    session, count, reused, errors = None, 0, 0, 0
    cpu0, t0 = cpu_s(pid), time.monotonic()
    end = t0 + secs
    while time.monotonic() < end:
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            s = ctx.wrap_socket(raw, session=session if mode == "reuse" else None)
            s.sendall(struct.pack(">H", len(QUERY)) + QUERY)
            (n,) = struct.unpack(">H", read_exact(s, 2))
            read_exact(s, n)
            count += 1
            reused += s.session_reused
            if mode == "reuse":
                session = s.session
            s.close()
        except (OSError, ssl.SSLError):
            errors += 1
    elapsed, cpu = time.monotonic() - t0, cpu_s(pid) - cpu0
    per_core = count / cpu if cpu > 0 else 0
    print(f"mode={mode} conns={count} secs={elapsed:.2f} conns_per_s={count / elapsed:.0f} "
          f"resumed={reused} errors={errors} server_cpu_s={cpu:.2f} per_server_core_s={per_core:.0f}")


if __name__ == "__main__":
    main()
