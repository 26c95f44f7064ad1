#!/usr/bin/env python3
"""Hostile and broken clients for scripts/soak.sh, each bounded in time and count.

  abuse.py stall    HOST PORT SECONDS N PATH   N subscribers that never read (replaced every 10 s)
  abuse.py garbage  HOST PORT SECONDS          clients sending random bytes, bad heads, bad frames
  abuse.py slowhead HOST PORT SECONDS N        N clients trickling a request head, one byte at a time

Prints one JSON line of counts when done. Only talks to 127.0.0.0/8.
"""
import base64
import json
import os
import random
import socket
import sys
import time

HEAD = (
    "GET {path} HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def loopback(host):
    if not host.startswith("127."):
        sys.exit("abuse.py: only 127.0.0.0/8")
    return host


def head(path):
    return HEAD.format(path=path, key=base64.b64encode(os.urandom(16)).decode()).encode()


def connect(host, port, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect((host, port))
    return s


def stall(host, port, seconds, n, path):
    """Subscribers that complete the handshake and then never read; every 10 s they are
    dropped (unread data: the server sees a reset) and replaced by new ones. The server's
    close of a stalled subscriber cannot be seen from here: its close frame and FIN wait
    behind the unread data."""
    end = time.monotonic() + seconds
    opened, generations = 0, 0
    while time.monotonic() < end:
        socks = []
        for _ in range(n):
            try:
                s = connect(host, port, rcvbuf=4096)
                s.sendall(head(path))
                socks.append(s)
                opened += 1
            except OSError:
                break
        generations += 1
        time.sleep(max(0.0, min(10.0, end - time.monotonic())))
        for s in socks:
            s.close()
    return {"role": "stall", "opened": opened, "generations": generations}


def garbage(host, port, seconds):
    """Clients that send what a WebSocket server must refuse."""
    end = time.monotonic() + seconds
    rng = random.Random(7)
    kinds = {"random": 0, "bad_head": 0, "bad_frames": 0, "answered": 0}
    while time.monotonic() < end:
        kind = rng.choice(list(kinds)[:3])
        kinds[kind] += 1
        try:
            s = connect(host, port)
            if kind == "random":
                s.sendall(os.urandom(rng.randint(1, 4096)))
            elif kind == "bad_head":
                s.sendall(b"GET /sub HTTP/1.1\r\nUpgrade: websocket\r\n" + b"X: " + b"a" * rng.randint(1, 20000) + b"\r\n\r\n")
            else:
                s.sendall(head("/sub/h0"))
                # Unmasked frames, reserved opcodes, bad lengths: the server closes (1002).
                s.sendall(bytes([0x81, 0x05]) + b"hello" + bytes([0x8B, 0x80, 1, 2, 3, 4]) + os.urandom(64))
            s.settimeout(2)
            if s.recv(65536):
                kinds["answered"] += 1
            s.close()
        except OSError:
            pass
        time.sleep(0.02)
    kinds["role"] = "garbage"
    return kinds


def slowhead(host, port, seconds, n):
    """Clients that send their request head one byte at a time, slower than allowed."""
    end = time.monotonic() + seconds
    data = head("/sub/h0")
    conns, dropped = {}, 0
    while time.monotonic() < end:
        while len(conns) < n:
            try:
                conns[connect(host, port)] = 0
            except OSError:
                break
        for s in list(conns):
            i = conns[s]
            try:
                s.send(data[i % len(data):i % len(data) + 1])
                conns[s] = i + 1
            except OSError:
                del conns[s]
                s.close()
                dropped += 1
        time.sleep(0.5)
    for s in conns:
        s.close()
    return {"role": "slowhead", "dropped_by_server": dropped}


def main():
    role, host, port, seconds = sys.argv[1], loopback(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    if role == "stall":
        out = stall(host, port, seconds, int(sys.argv[5]), sys.argv[6])
    elif role == "garbage":
        out = garbage(host, port, seconds)
    elif role == "slowhead":
        out = slowhead(host, port, seconds, int(sys.argv[5]))
    else:
        sys.exit(f"abuse.py: unknown role {role}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
