"""A DNS-over-QUIC client for tests/doq.rs: dnspython (with aioquic) for queries,
aioquic directly to put raw bytes on a stream.

  doq_client.py query HOST PORT CA SNI NAME TYPE   -> the answer, as dnspython prints it
  doq_client.py raw HOST PORT CA SNI HEX[+N] [fin|open] [CERT KEY] -> what the server did with
      the stream (HEX, then N zero bytes; fin ends the stream, open leaves it open; CERT and
      KEY: a client certificate to present):
      "answer <rcode>", "closed <error code>" (connection) or "reset <error code>" (stream)
  doq_client.py hold HOST PORT CA SNI              -> "held" once a connection is answered;
      then keeps it open until killed
"""

import asyncio
import sys

import dns.message
import dns.query
import dns.rcode
from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived, StreamReset

TIMEOUT = 20


def query(host, port, ca, sni, name, qtype):
    q = dns.message.make_query(name, qtype)
    r = dns.query.quic(q, host, port=int(port), timeout=TIMEOUT, verify=ca, hostname=sni)
    print(r.to_text())


class Events(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.queue = asyncio.Queue()

    def quic_event_received(self, event):
        self.queue.put_nowait(event)


async def raw(host, port, ca, sni, payload, fin, cert=None, key=None):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["doq"], server_name=sni)
    cfg.load_verify_locations(ca)
    if cert:
        cfg.load_cert_chain(cert, key)
    async with connect(host, int(port), configuration=cfg, create_protocol=Events) as client:
        sid = client._quic.get_next_available_stream_id()
        client._quic.send_stream_data(sid, payload, end_stream=fin)
        client.transmit()
        data = b""
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:
            # PINGs keep the connection alive: a stream the server gives up on is
            # reset, not lost with an idle connection.
            try:
                event = await asyncio.wait_for(client.queue.get(), 0.25)
            except asyncio.TimeoutError:
                if asyncio.get_running_loop().time() > deadline:
                    return "no reaction"
                client._quic.send_ping(0)
                client.transmit()
                continue
            if isinstance(event, ConnectionTerminated):
                return f"closed {event.error_code}"
            if isinstance(event, StreamReset) and event.stream_id == sid:
                return f"reset {event.error_code}"
            if isinstance(event, StreamDataReceived) and event.stream_id == sid:
                data += event.data
                if event.end_stream:
                    msg = dns.message.from_wire(data[2:])
                    return f"answer {dns.rcode.to_text(msg.rcode())} id={msg.id}"


async def hold(host, port, ca, sni):
    """Opens a connection, asks one query on it, prints "held" and keeps the
    connection alive (PINGs) until killed (or TIMEOUT seconds)."""
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["doq"], server_name=sni)
    cfg.load_verify_locations(ca)
    async with connect(host, int(port), configuration=cfg, create_protocol=Events) as client:
        sid = client._quic.get_next_available_stream_id()
        q = dns.message.make_query("www.fwd.test", "A")
        q.id = 0
        wire = q.to_wire()
        client._quic.send_stream_data(sid, len(wire).to_bytes(2, "big") + wire, end_stream=True)
        client.transmit()
        while True:
            event = await asyncio.wait_for(client.queue.get(), TIMEOUT)
            if isinstance(event, StreamDataReceived) and event.end_stream:
                break
        print("held", flush=True)
        for _ in range(TIMEOUT * 5):  # bounded, should the test not kill it
            await asyncio.sleep(0.2)
            client._quic.send_ping(0)
            client.transmit()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "query":
        query(*args)
    elif cmd == "raw":
        host, port, ca, sni, hexed = args[:5]
        fin = args[5] != "open" if len(args) > 5 else True
        cert_key = args[6:8]
        # HEX+N: the bytes, then N zero bytes (too many for an argument in hex).
        hexed, _, zeros = hexed.partition("+")
        payload = bytes.fromhex(hexed) + bytes(int(zeros or 0))
        print(asyncio.run(raw(host, port, ca, sni, payload, fin, *cert_key)))
    elif cmd == "hold":
        asyncio.run(hold(*args))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
