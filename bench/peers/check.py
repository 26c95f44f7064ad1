#!/usr/bin/env python3
"""Contract check for a broadcast server: python3 check.py ws://127.0.0.1:PORT

3 subscribers on /sub each receive, in order and with the same opcode, the 100 messages
(text and binary, 0 B to 70 KiB) one publisher sends on /pub; the publisher gets no echo;
an unknown path is refused; abrupt subscriber/publisher disconnects leave the server working.
Needs `python3 -m pip install websockets`.
"""

import asyncio
import socket
import sys
from urllib.parse import urlparse

import websockets

SIZES = [0, 1, 64, 125, 126, 1000, 65535, 65536, 70000]


def messages(n, tag):
    out = []
    for i in range(n):
        size = SIZES[i % len(SIZES)]
        if i % 2 == 0:
            body = f"{tag}-{i}:"
            out.append(body + "x" * max(0, size - len(body)))
        else:
            head = f"{tag}-{i}:".encode()
            out.append(head + bytes((i + j) & 0xFF for j in range(max(0, size - len(head)))))
    return out


async def receive(ws, n):
    return [await asyncio.wait_for(ws.recv(), 10) for _ in range(n)]


async def round_trip(url, n_subs, msgs):
    subs = [await websockets.connect(url + "/sub", max_size=None) for _ in range(n_subs)]
    pub = await websockets.connect(url + "/pub", max_size=None)
    tasks = [asyncio.create_task(receive(s, len(msgs))) for s in subs]
    for m in msgs:
        await pub.send(m)
    got = await asyncio.gather(*tasks)
    for i, g in enumerate(got):
        assert g == msgs, f"subscriber {i}: got {len(g)} messages, differing from what was sent"
    try:
        extra = await asyncio.wait_for(pub.recv(), 0.3)
        raise AssertionError(f"publisher got an echo: {extra!r:.40}")
    except asyncio.TimeoutError:
        pass
    await pub.close()
    for s in subs:
        await s.close()


def abrupt(host, port, path):
    """Upgrade on `path`, then reset the connection without a close frame."""
    s = socket.create_connection((host, port))
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    resp = s.recv(4096)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    return resp


async def main(url):
    u = urlparse(url)
    await round_trip(url, 3, messages(100, "a"))
    print("ok: 3 subscribers x 100 messages (text+binary, 0..70000 B), in order, no echo")

    resp = abrupt(u.hostname, u.port, "/nope")
    assert b" 404 " in resp.split(b"\r\n")[0], resp[:60]
    resp = abrupt(u.hostname, u.port, "/sub")
    assert resp.startswith(b"HTTP/1.1 101"), resp[:60]
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in resp, "bad Sec-WebSocket-Accept"
    abrupt(u.hostname, u.port, "/pub")
    # A subscriber that vanishes mid-stream (reset while messages are in flight).
    gone = await websockets.connect(url + "/sub", max_size=None)
    pub = await websockets.connect(url + "/pub", max_size=None)
    for m in messages(50, "b"):
        await pub.send(m)
    gone.transport.abort()
    await pub.close()
    await asyncio.sleep(0.2)
    await round_trip(url, 3, messages(100, "c"))
    print("ok: 404 on unknown path, accept key, abrupt disconnects survived")

    # A fragmented message arrives whole.
    sub = await websockets.connect(url + "/sub")
    pub = await websockets.connect(url + "/pub")
    await pub.send(["frag", "men", "ted"])
    await pub.send([b"\x01\x02", b"\x03"])
    assert await receive(sub, 2) == ["fragmented", b"\x01\x02\x03"]
    await pub.close()
    await sub.close()
    print("ok: fragmented text and binary messages")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:9000"))
