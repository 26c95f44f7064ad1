//! RFC 6455 §5.6 and §8.1: text messages must be valid UTF-8, checked across fragments and
//! failing fast (Autobahn|Testsuite category 6). The vectors are Markus Kuhn's UTF-8 decoder
//! stress test (numbered as in UTF-8-test.txt) plus a few of Autobahn's.

use crate::util;

use ringcast::server::Backend;
use util::{Frame, check_cases, for_each_backend, fragments, hex, op, start_server};

const KOSME: &[u8] = "κόσμε".as_bytes();

/// Valid UTF-8, including the boundary code points and noncharacters (which are valid).
const VALID: &[(&str, &[u8])] = &[
    ("empty", b""),
    ("1 kosme", KOSME),
    (
        "Hello-µ@ßöäüàá-UTF-8!!",
        "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
    ),
    ("2.1.1 U+0000", b"\x00"),
    ("2.1.2 U+0080", b"\xc2\x80"),
    ("2.1.3 U+0800", b"\xe0\xa0\x80"),
    ("2.1.4 U+10000", b"\xf0\x90\x80\x80"),
    ("2.2.1 U+007F", b"\x7f"),
    ("2.2.2 U+07FF", b"\xdf\xbf"),
    ("2.2.3 U+FFFF", b"\xef\xbf\xbf"),
    ("2.3.1 U+D7FF", b"\xed\x9f\xbf"),
    ("2.3.2 U+E000", b"\xee\x80\x80"),
    ("2.3.3 U+FFFD", b"\xef\xbf\xbd"),
    ("2.3.4 U+10FFFF", b"\xf4\x8f\xbf\xbf"),
    ("5.3.1 U+FFFE", b"\xef\xbf\xbe"),
    ("5.3.3 U+FDD0", b"\xef\xb7\x90"),
    ("5.3.3 U+FDEF", b"\xef\xb7\xaf"),
    ("5.3.4 U+1FFFE", b"\xf0\x9f\xbf\xbe"),
    ("5.3.4 U+10FFFE", b"\xf4\x8f\xbf\xbe"),
    ("4-byte symbols", "𝄞😀𝄞".as_bytes()),
];

/// Kuhn's malformed sequences, surrogates, overlong and 5/6-byte forms, plus a few of
/// Autobahn's (6.3.1: valid text ending in a surrogate, then more text).
fn invalid_vectors() -> Vec<(String, Vec<u8>)> {
    let fixed: &[(&str, &[u8])] = &[
        ("2.1.5 5-byte U+200000", b"\xf8\x88\x80\x80\x80"),
        ("2.1.6 6-byte U+4000000", b"\xfc\x84\x80\x80\x80\x80"),
        ("2.2.4 U+1FFFFF", b"\xf7\xbf\xbf\xbf"),
        ("2.2.5 5-byte U+3FFFFFF", b"\xfb\xbf\xbf\xbf\xbf"),
        ("2.2.6 6-byte U+7FFFFFFF", b"\xfd\xbf\xbf\xbf\xbf\xbf"),
        ("2.3.5 U+110000", b"\xf4\x90\x80\x80"),
        ("3.1.1 continuation 80", b"\x80"),
        ("3.1.2 continuation bf", b"\xbf"),
        ("3.1.3 2 continuations", b"\x80\xbf"),
        ("3.1.4 3 continuations", b"\x80\xbf\x80"),
        ("3.1.5 4 continuations", b"\x80\xbf\x80\xbf"),
        ("3.1.6 5 continuations", b"\x80\xbf\x80\xbf\x80"),
        ("3.1.7 6 continuations", b"\x80\xbf\x80\xbf\x80\xbf"),
        ("3.1.8 7 continuations", b"\x80\xbf\x80\xbf\x80\xbf\x80"),
        ("3.3.1 2-byte U+0000 missing last", b"\xc0"),
        ("3.3.2 3-byte U+0000 missing last", b"\xe0\x80"),
        ("3.3.3 4-byte U+0000 missing last", b"\xf0\x80\x80"),
        ("3.3.4 5-byte U+0000 missing last", b"\xf8\x80\x80\x80"),
        ("3.3.5 6-byte U+0000 missing last", b"\xfc\x80\x80\x80\x80"),
        ("3.3.6 2-byte U+07FF missing last", b"\xdf"),
        ("3.3.7 3-byte U+FFFF missing last", b"\xef\xbf"),
        ("3.3.8 4-byte U+1FFFFF missing last", b"\xf7\xbf\xbf"),
        ("3.3.9 5-byte U+3FFFFFF missing last", b"\xfb\xbf\xbf\xbf"),
        ("3.3.10 6-byte U+7FFFFFFF missing last", b"\xfd\xbf\xbf\xbf\xbf"),
        ("3.4 concatenation of 3.3", b"\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80\xfc\x80\x80\x80\x80\xdf\xef\xbf\xf7\xbf\xbf\xfb\xbf\xbf\xbf\xfd\xbf\xbf\xbf\xbf"),
        ("3.5.1 fe", b"\xfe"),
        ("3.5.2 ff", b"\xff"),
        ("3.5.3 fe fe ff ff", b"\xfe\xfe\xff\xff"),
        ("4.1.1 overlong / 2 bytes", b"\xc0\xaf"),
        ("4.1.2 overlong / 3 bytes", b"\xe0\x80\xaf"),
        ("4.1.3 overlong / 4 bytes", b"\xf0\x80\x80\xaf"),
        ("4.1.4 overlong / 5 bytes", b"\xf8\x80\x80\x80\xaf"),
        ("4.1.5 overlong / 6 bytes", b"\xfc\x80\x80\x80\x80\xaf"),
        ("4.2.1 max overlong 2 bytes", b"\xc1\xbf"),
        ("4.2.2 max overlong 3 bytes", b"\xe0\x9f\xbf"),
        ("4.2.3 max overlong 4 bytes", b"\xf0\x8f\xbf\xbf"),
        ("4.2.4 max overlong 5 bytes", b"\xf8\x87\xbf\xbf\xbf"),
        ("4.2.5 max overlong 6 bytes", b"\xfc\x83\xbf\xbf\xbf\xbf"),
        ("4.3.1 overlong NUL 2 bytes", b"\xc0\x80"),
        ("4.3.2 overlong NUL 3 bytes", b"\xe0\x80\x80"),
        ("4.3.3 overlong NUL 4 bytes", b"\xf0\x80\x80\x80"),
        ("4.3.4 overlong NUL 5 bytes", b"\xf8\x80\x80\x80\x80"),
        ("4.3.5 overlong NUL 6 bytes", b"\xfc\x80\x80\x80\x80\x80"),
        ("5.1.1 U+D800", b"\xed\xa0\x80"),
        ("5.1.2 U+DB7F", b"\xed\xad\xbf"),
        ("5.1.3 U+DB80", b"\xed\xae\x80"),
        ("5.1.4 U+DBFF", b"\xed\xaf\xbf"),
        ("5.1.5 U+DC00", b"\xed\xb0\x80"),
        ("5.1.6 U+DF80", b"\xed\xbe\x80"),
        ("5.1.7 U+DFFF", b"\xed\xbf\xbf"),
        ("5.2.1 U+D800 U+DC00", b"\xed\xa0\x80\xed\xb0\x80"),
        ("5.2.2 U+D800 U+DFFF", b"\xed\xa0\x80\xed\xbf\xbf"),
        ("5.2.3 U+DB7F U+DC00", b"\xed\xad\xbf\xed\xb0\x80"),
        ("5.2.4 U+DB7F U+DFFF", b"\xed\xad\xbf\xed\xbf\xbf"),
        ("5.2.5 U+DB80 U+DC00", b"\xed\xae\x80\xed\xb0\x80"),
        ("5.2.6 U+DB80 U+DFFF", b"\xed\xae\x80\xed\xbf\xbf"),
        ("5.2.7 U+DBFF U+DC00", b"\xed\xaf\xbf\xed\xb0\x80"),
        ("5.2.8 U+DBFF U+DFFF", b"\xed\xaf\xbf\xed\xbf\xbf"),
        ("autobahn 6.3.1 kosme, surrogate, edited", b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"),
        ("valid text then truncated 4-byte", b"abc\xf0\x9d\x84"),
    ];
    let mut vectors: Vec<(String, Vec<u8>)> = fixed
        .iter()
        .map(|(name, v)| ((*name).to_owned(), v.to_vec()))
        .collect();
    vectors.push((
        "3.1.9 all 64 continuation bytes".to_owned(),
        (0x80..=0xbf).collect(),
    ));
    // 3.2: every lonely start byte, followed by a space.
    for start in 0xc0..=0xfdu8 {
        vectors.push((format!("3.2 lonely start {start:#04x}"), vec![start, b' ']));
    }
    for (name, v) in &vectors {
        assert!(
            std::str::from_utf8(v).is_err(),
            "vector {name} is valid UTF-8"
        );
    }
    vectors
}

fn few_invalid_vectors() -> Vec<(String, Vec<u8>)> {
    let keep = [
        "2.3.5",
        "3.3.7",
        "4.2.3",
        "5.1.1",
        "5.2.1",
        "autobahn 6.3.1",
        "valid text then",
    ];
    invalid_vectors()
        .into_iter()
        .filter(|(name, _)| keep.iter().any(|k| name.starts_with(k)))
        .collect()
}

fn valid_cases() -> impl Iterator<Item = (String, &'static [u8])> {
    VALID.iter().map(|(name, v)| {
        assert!(
            std::str::from_utf8(v).is_ok(),
            "vector {name} ({}) is not valid UTF-8",
            hex(v)
        );
        ((*name).to_owned(), *v)
    })
}

/// A text message in two fragments split at `at`.
fn split_in_two(payload: &[u8], at: usize) -> [Frame; 2] {
    [
        Frame::text(&payload[..at]).fin(false),
        Frame::continuation(&payload[at..]),
    ]
}

fn valid_vectors_in_one_frame(backend: Backend) {
    let server = start_server(backend, 2);
    check_cases(valid_cases(), |v| {
        let mut client = server.client();
        client.send_text(v);
        client.expect_text(v);
    });
}

/// Every multi-byte sequence is split across fragments.
fn valid_vectors_one_byte_per_fragment(backend: Backend) {
    let server = start_server(backend, 2);
    check_cases(valid_cases().filter(|(_, v)| !v.is_empty()), |v| {
        let mut client = server.client();
        client.send_all(&fragments(op::TEXT, v, 1));
        client.expect_text(v);
    });
}

fn valid_text_split_in_two_at_every_byte(backend: Backend) {
    let server = start_server(backend, 2);
    let text = "κόσμε-𝄞-€-Hello-µ@ßöäüàá".as_bytes();
    check_cases(
        (0..=text.len()).map(|at| (format!("split at {at}"), at)),
        |at| {
            let mut client = server.client();
            client.send_all(&split_in_two(text, at));
            client.expect_text(text);
        },
    );
}

/// Autobahn 6.2.2-6.2.4: one frame written one byte at a time (reads split sequences).
fn valid_text_written_one_byte_at_a_time(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let text = "κόσμε-𝄞-Hello-µ@ßöäüàá-UTF-8!!";
    client.send_chunked(Frame::text(text), 1);
    client.expect_text(text);
}

fn invalid_vectors_in_one_frame(backend: Backend) {
    let server = start_server(backend, 2);
    check_cases(invalid_vectors(), |v| {
        let mut client = server.client();
        client.send_text(&v);
        client.expect_close(1007);
    });
}

fn invalid_vectors_one_byte_per_fragment(backend: Backend) {
    let server = start_server(backend, 2);
    check_cases(invalid_vectors(), |v| {
        let mut client = server.client();
        client.send_all(&fragments(op::TEXT, &v, 1));
        client.expect_close(1007);
    });
}

fn invalid_vectors_split_in_two_at_every_byte(backend: Backend) {
    let server = start_server(backend, 2);
    let cases = few_invalid_vectors().into_iter().flat_map(|(name, v)| {
        (0..=v.len()).map(move |at| (format!("{name}, split at {at}"), (v.clone(), at)))
    });
    check_cases(cases, |(v, at)| {
        let mut client = server.client();
        client.send_all(&split_in_two(&v, at));
        client.expect_close(1007);
    });
}

/// Autobahn 6.3.2: an invalid frame written one byte at a time.
fn invalid_text_written_one_byte_at_a_time(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_chunked(
        Frame::text(
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
        ),
        1,
    );
    client.expect_close(1007);
}

/// The invalid sequence arrives in a non-final fragment and the final fragment is never sent:
/// the server must close with 1007 on what it has. A vector that is only invalid because it
/// ends early gets one ASCII byte appended, which makes it invalid on its own.
fn invalid_vectors_fail_fast_in_non_final_fragment(backend: Backend) {
    let server = start_server(backend, 2);
    check_cases(invalid_vectors(), |mut v| {
        let error = std::str::from_utf8(&v).expect_err("invalid vector");
        if error.error_len().is_none() {
            v.push(b'x');
        }
        let mut client = server.client();
        client.send(Frame::text(&v).fin(false));
        client.expect_close(1007);
    });
}

/// Autobahn 6.4.1: a valid first fragment, then an invalid non-final one.
fn invalid_second_fragment_fails_fast(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::text(KOSME).fin(false));
    client.send(Frame::continuation(b"\xf4\x90\x80\x80").fin(false));
    client.expect_close(1007);
}

/// Autobahn 6.4.2: the invalid code point is split: its first byte (a possible start) ends
/// one fragment, the byte that makes it invalid starts the next, non-final, one.
fn invalid_sequence_split_across_fragments_fails_fast(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let mut first = KOSME.to_vec();
    first.push(0xf4);
    client.send(Frame::text(first).fin(false));
    client.send(Frame::continuation(b"\x90\x80\x80").fin(false));
    client.expect_close(1007);
}

/// Autobahn 6.4.3-6.4.4 (strict form): a single frame whose invalid bytes arrive while the
/// rest of the frame is still unsent. The server has everything it needs to fail.
fn invalid_bytes_in_partly_sent_frame_fail_fast(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let mut payload = KOSME.to_vec();
    payload.extend_from_slice(b"\xf4\x90\x80\x80");
    let invalid_end = payload.len();
    payload.extend_from_slice(b"edited");
    let bytes = client.encode(&Frame::text(&payload));
    let header_len = bytes.len() - payload.len();
    client.write_raw(&bytes[..header_len + invalid_end]);
    client.expect_close(1007);
}

/// Binary messages are not UTF-8 checked.
fn invalid_utf8_in_binary_message_is_echoed(backend: Backend) {
    let server = start_server(backend, 2);
    check_cases(few_invalid_vectors(), |v| {
        let mut client = server.client();
        client.send_binary(v.clone());
        client.expect_binary(&v);
    });
}

/// No validator state leaks from one message into the next.
fn validator_state_does_not_leak_between_messages(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::text("𝄞"),
        Frame::text("a"),
        Frame::text("€").fin(false),
        Frame::continuation("b"),
    ]);
    client.expect_text("𝄞");
    client.expect_text("a");
    client.expect_text("€b");
}

for_each_backend!(
    valid_vectors_in_one_frame,
    valid_vectors_one_byte_per_fragment,
    valid_text_split_in_two_at_every_byte,
    valid_text_written_one_byte_at_a_time,
    invalid_vectors_in_one_frame,
    invalid_vectors_one_byte_per_fragment,
    invalid_vectors_split_in_two_at_every_byte,
    invalid_text_written_one_byte_at_a_time,
    invalid_vectors_fail_fast_in_non_final_fragment,
    invalid_second_fragment_fails_fast,
    invalid_sequence_split_across_fragments_fails_fast,
    invalid_bytes_in_partly_sent_frame_fail_fast,
    invalid_utf8_in_binary_message_is_echoed,
    validator_state_does_not_leak_between_messages,
);
