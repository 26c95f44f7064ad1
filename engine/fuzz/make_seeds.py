#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: engine/fuzz/corpus/<target>/<name>.

Each seed is named by what it contains. The input layout of every target is documented
on its entry point in engine/src/protocol/fuzzing.rs (and engine/src/fuzzing.rs); this
script follows it. Rerunning it rewrites the same files (deterministic), so the committed
corpus can be regenerated and reviewed: python3 engine/fuzz/make_seeds.py
"""

import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def mask(payload, key, phase=0):
    return bytes(b ^ key[(phase + i) % 4] for i, b in enumerate(payload))


def header(op, length, key=None, fin=True, rsv=0, form=None):
    """A frame header; `form` forces the 7/16/64-bit length encoding (non-minimal too)."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    m = 0x80 if key is not None else 0
    form = form or (7 if length < 126 else 16 if length <= 0xFFFF else 64)
    if form == 7:
        out = bytes([b0, m | length])
    elif form == 16:
        out = bytes([b0, m | 126]) + struct.pack(">H", length)
    else:
        out = bytes([b0, m | 127]) + struct.pack(">Q", length)
    return out + (key or b"")


def frame(op, payload, key=KEY, fin=True, rsv=0):
    """A whole client frame, masked with `key` (None: unmasked)."""
    body = mask(payload, key) if key is not None else payload
    return header(op, len(payload), key, fin, rsv) + body


def pattern(n):
    return bytes(i % 251 for i in range(n))


# --- frame_decode: header bytes (and a little payload) ----------------------------------

def frame_decode():
    t = "frame_decode"
    write(t, "text_hello_unmasked", frame(TEXT, b"Hello", key=None))
    write(t, "text_hello_masked_rfc", frame(TEXT, b"Hello"))
    write(t, "text_fragment_hel_unmasked", frame(TEXT, b"Hel", key=None, fin=False))
    write(t, "continuation_lo_final_unmasked", frame(CONT, b"lo", key=None))
    write(t, "ping_hello_unmasked", frame(PING, b"Hello", key=None))
    write(t, "pong_hello_masked", frame(PONG, b"Hello"))
    write(t, "close_1000_masked", frame(CLOSE, struct.pack(">H", 1000)))
    for n in [0, 125, 126, 65535, 65536]:
        write(t, f"binary_len_{n}_masked_header", header(BINARY, n, KEY))
        write(t, f"binary_len_{n}_unmasked_header", header(BINARY, n))
    write(t, "binary_len_2p63_minus_1_masked_header", header(BINARY, (1 << 63) - 1, KEY))
    write(t, "binary_len_64bit_top_bit_set", header(BINARY, 1 << 63, KEY, form=64))
    write(t, "binary_len_125_in_16bit_nonminimal", header(BINARY, 125, KEY, form=16))
    write(t, "binary_len_65535_in_64bit_nonminimal", header(BINARY, 65535, KEY, form=64))
    write(t, "reserved_opcode_3", header(0x3, 0, KEY))
    write(t, "reserved_opcode_b", header(0xB, 0, KEY))
    write(t, "ping_len_126_too_long", header(PING, 126, KEY))
    write(t, "ping_not_fin", header(PING, 0, KEY, fin=False))
    write(t, "text_rsv1_set", header(TEXT, 5, KEY, rsv=4))
    write(t, "truncated_64bit_header", header(BINARY, 70000, KEY)[:5])
    write(t, "one_byte", b"\x81")


# --- handshake: request heads ------------------------------------------------------------

def request(target="/", headers=None, line=None, drop=(), extra=(), body=b""):
    base = [
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
    hs = [h for h in (headers or base) if h[0].lower() not in [d.lower() for d in drop]]
    hs += list(extra)
    head = (line or f"GET {target} HTTP/1.1") + "\r\n"
    head += "".join(f"{n}: {v}\r\n" for n, v in hs) + "\r\n"
    return head.encode() + body


def handshake():
    t = "handshake"
    write(t, "rfc6455_example", request("/chat", headers=[
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Origin", "http://example.com"),
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Sec-WebSocket-Version", "13"),
    ]))
    write(t, "valid_minimal", request())
    write(t, "valid_browser_like", request("/sub?topic=btc", headers=[
        ("Host", "127.0.0.1:9000"),
        ("Connection", "keep-alive, Upgrade"),
        ("Pragma", "no-cache"),
        ("User-Agent", "Mozilla/5.0"),
        ("Upgrade", "websocket"),
        ("Origin", "https://ok.example"),
        ("Sec-WebSocket-Version", "13"),
        ("Accept-Encoding", "gzip, deflate"),
        ("Sec-WebSocket-Key", "x3JJHMbDL1EzLkh9GBhXDw=="),
        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
    ]))
    write(t, "valid_then_masked_text_frame", request() + frame(TEXT, b"Hello"))
    write(t, "valid_lowercase_names_token_lists", request(headers=[
        ("host", "a"),
        ("upgrade", "h2c, WebSocket"),
        ("connection", "keep-alive"),
        ("CONNECTION", "UPGRADE"),
        ("sec-websocket-key", " \tdGhlIHNhbXBsZSBub25jZQ==  "),
        ("sec-websocket-version", "13"),
        ("sec-websocket-protocol", "superchat"),
        ("sec-websocket-protocol", "chat"),
    ]))
    write(t, "origin_evil", request(extra=[("Origin", "https://evil.example")]))
    write(t, "content_length_0", request(extra=[("Content-Length", "0")]))
    write(t, "content_length_5_with_body", request(extra=[("Content-Length", "5")], body=b"hello"))
    write(t, "transfer_encoding_chunked", request(
        extra=[("Transfer-Encoding", "chunked")], body=b"5\r\nhello\r\n0\r\n\r\n"))
    write(t, "duplicate_host", request(extra=[("Host", "other.example.com")]))
    write(t, "duplicate_key", request(extra=[("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==")]))
    write(t, "duplicate_version", request(extra=[("sec-websocket-version", "13")]))
    write(t, "version_8", request(drop=["Sec-WebSocket-Version"],
                                  extra=[("Sec-WebSocket-Version", "8")]))
    write(t, "missing_key", request(drop=["Sec-WebSocket-Key"]))
    write(t, "key_of_15_bytes", request(drop=["Sec-WebSocket-Key"],
                                        extra=[("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25j")]))
    write(t, "missing_upgrade", request(drop=["Upgrade"]))
    write(t, "method_post", request(line="POST / HTTP/1.1"))
    write(t, "http_1_0", request(line="GET / HTTP/1.0"))
    write(t, "target_absolute_form", request(line="GET ws://example.com/ HTTP/1.1"))
    write(t, "header_without_colon", b"GET / HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n")
    write(t, "partial_head", request()[:40])
    write(t, "too_many_headers_65", request(extra=[(f"X-{i}", "v") for i in range(65)]))
    write(t, "head_over_8k", request(extra=[("X-Padding", "a" * 9000)]))
    write(t, "tls_client_hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")


# --- conn_feed: [limits byte, cuts byte] + client stream ----------------------------------

DEFAULTS = b"\x00\x00"


def conn_feed():
    t = "conn_feed"

    def seed(name, stream, config=0x00, cuts=0x00):
        write(t, name, bytes([config, cuts]) + stream)

    seed("text_hello_masked", frame(TEXT, b"Hello"))
    seed("text_hello_unmasked_is_1002", frame(TEXT, b"Hello", key=None))
    for n in [0, 125, 126, 65535, 65536]:
        seed(f"binary_len_{n}_masked", frame(BINARY, pattern(n)), cuts=n % 128)
    seed("text_fragmented_with_ping_between",
         frame(TEXT, "κό".encode(), fin=False) + frame(PING, b"ping!")
         + frame(CONT, "σμε".encode()))
    seed("binary_three_fragments",
         frame(BINARY, b"ab", fin=False) + frame(CONT, b"", fin=False) + frame(CONT, b"cd"))
    seed("text_utf8_char_split_across_fragments",
         frame(TEXT, b"\xf0\x9f", fin=False) + frame(CONT, b"\xa6\x80 crab"))
    seed("text_bad_utf8_is_1007", frame(TEXT, b"ok \xed\xa0\x80 surrogate"))
    seed("text_bad_utf8_in_first_fragment",
         frame(TEXT, b"\xc0\xaf", fin=False) + frame(CONT, b"rest"))
    seed("close_1000_bye", frame(CLOSE, struct.pack(">H", 1000) + b"bye"))
    seed("close_empty", frame(CLOSE, b""))
    seed("close_one_byte_is_1002", frame(CLOSE, b"\x03"))
    seed("close_code_1005_is_1002", frame(CLOSE, struct.pack(">H", 1005)))
    seed("close_reason_bad_utf8_is_1007", frame(CLOSE, struct.pack(">H", 1000) + b"\xff"))
    seed("close_then_text_ignored", frame(CLOSE, struct.pack(">H", 4000)) + frame(TEXT, b"late"))
    seed("ping_125", frame(PING, pattern(125)))
    seed("pong_unsolicited", frame(PONG, b"x"))
    seed("continuation_without_message_is_1002", frame(CONT, b"x"))
    seed("text_inside_fragmented_message_is_1002",
         frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"))
    seed("reserved_opcode_is_1002", frame(0x3, b""))
    seed("rsv1_set_is_1002", frame(TEXT, b"x", rsv=4))
    seed("many_small_messages",
         b"".join(frame(TEXT if i % 2 else BINARY, pattern(i)) for i in range(40)), cuts=7)
    # Limits: bits 0-2 frame limit, 3-5 message limit, 6-7 fragment limit.
    seed("frame_limit_125_with_126_byte_frame", frame(BINARY, pattern(126)), config=0x03)
    seed("message_limit_1000_over_fragments",
         frame(BINARY, pattern(600), fin=False) + frame(CONT, pattern(600)), config=0x05 << 3)
    seed("fragment_limit_2_with_3_fragments",
         frame(TEXT, b"a", fin=False) + frame(CONT, b"b", fin=False) + frame(CONT, b"c"),
         config=0x80)
    seed("server_closed_first_then_reply", frame(TEXT, b"dropped") + frame(PING, b"p")
         + frame(CLOSE, struct.pack(">H", 1001)), cuts=0x80)


# --- unmask_differential: key, phase, offset, cut, buffer ---------------------------------

def unmask_differential():
    t = "unmask_differential"
    write(t, "rfc_masked_hello_cut_2", KEY + bytes([0, 0, 2]) + mask(b"Hello", KEY))
    for n, phase, offset, cut in [
        (0, 0, 0, 0), (1, 3, 1, 0), (15, 1, 0, 7), (16, 2, 3, 5), (17, 3, 7, 16),
        (31, 0, 1, 30), (32, 1, 0, 1), (33, 2, 5, 32), (63, 3, 15, 33), (64, 0, 0, 32),
        (65, 1, 17, 64), (128, 2, 31, 63), (200, 5, 33, 99), (1000, 255, 63, 250),
    ]:
        write(t, f"len_{n}_phase_{phase}_offset_{offset}_cut_{cut}",
              bytes([0xDE, 0xAD, 0xBE, 0xEF, phase, offset, cut]) + pattern(n))


# --- utf8_incremental: n, n piece lengths, text --------------------------------------------

def utf8_incremental():
    t = "utf8_incremental"

    def seed(name, text, lengths=()):
        write(t, name, bytes([len(lengths)]) + bytes(lengths) + text)

    seed("ascii_whole", b"Hello, world")
    seed("kosme_in_pieces_of_3", "κόσμε".encode(), [3])
    seed("emoji_one_byte_pieces", "🦀 crab 🦀".encode(), [1])
    seed("four_byte_char_split_1_2_1", "\U0010FFFF".encode(), [1, 2, 1])
    seed("mixed_scripts_pieces_5_0_7", "Grüße, κόσμε, 日本語 🦀".encode(), [5, 0, 7])
    seed("long_valid_over_64_bytes", ("aé€🦀" * 20).encode(), [61, 3])
    seed("long_with_bad_byte_at_70", b"a" * 70 + b"\xff" + b"b" * 30, [64])
    seed("surrogate_ed_a0_80", b"ab\xed\xa0\x80cd", [3])
    seed("overlong_c0_af", b"\xc0\xaf")
    seed("above_max_f4_90_80_80", b"x\xf4\x90\x80\x80", [2])
    seed("truncated_e2_82", "€".encode()[:2])
    seed("interrupted_e2_82_41", b"\xe2\x82\x41", [1])
    seed("lone_continuation_80", b"ok\x80")
    seed("five_byte_sequence_f8", b"\xf8\x88\x80\x80\x80")
    seed("fe_ff", b"\xfe\xff")
    seed("empty", b"")


# --- topic_name: max_name_len, name ---------------------------------------------------------

def topic_name():
    t = "topic_name"

    def seed(name, topic, max_len=0xFF):
        write(t, name, bytes([max_len]) + topic)

    seed("btc_usd", b"BTC-USD")
    seed("default", b"default")
    seed("whole_charset", b"ABCXYZabcxyz0189-_.:@")
    seed("space_refused", b"sp ace")
    seed("slash_refused", b"a/b")
    seed("kappa_refused", "κ".encode())
    seed("invalid_utf8_refused", b"a\xffb")
    seed("empty_refused", b"")
    seed("len_64_at_default_limit", b"x" * 64)
    seed("len_65_over_default_limit", b"x" * 65)
    seed("limit_0", b"a", max_len=0)
    seed("limit_3_len_3", b"a:b", max_len=3)


# --- http_request: head limit (64 << b % 8), request ----------------------------------------

def http_request():
    t = "http_request"

    def seed(name, request, limit=7):
        write(t, name, bytes([limit]) + request)

    seed("get_metrics", b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    seed("get_metrics_bearer",
         b"GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\n\r\n")
    seed("head_root_http_1_0", b"HEAD / HTTP/1.0\r\n\r\n")
    seed("get_query", b"GET /stats?x=1&y=%20 HTTP/1.1\r\nHost: a\r\n\r\n")
    seed("get_with_body", b"GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    seed("get_bare_lf", b"GET /readyz HTTP/1.1\nHost: a\n\n")
    seed("post_405", b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    seed("options_star_405", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    seed("absolute_form_400", b"GET http://a/metrics HTTP/1.1\r\nHost: a\r\n\r\n")
    seed("partial_head", b"GET /metrics HTTP/1.1\r\nHost: a\r\n")
    seed("head_over_64", b"GET /" + b"x" * 80 + b" HTTP/1.1\r\n\r\n", limit=0)
    seed("upgrade_is_not_plain",
         b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


if __name__ == "__main__":
    frame_decode()
    handshake()
    conn_feed()
    unmask_differential()
    utf8_incremental()
    topic_name()
    http_request()
