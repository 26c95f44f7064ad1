//! Entry points of the fuzz targets that reach above the protocol core (built only under
//! `--cfg fuzzing`, which `cargo fuzz` sets). The protocol targets are in
//! [`protocol::fuzzing`](crate::protocol::fuzzing); this module holds the ones for
//! layers above it, so that `protocol` never names a higher layer for its fuzzing.

#![forbid(unsafe_code)]

use crate::fanout::topic::{TopicError, TopicName, TopicRules};

/// The characters a topic name may contain, as [`TopicError::BadChar`] documents them
/// (`A-Z a-z 0-9 - _ . : @`), spelt out rather than computed.
const TOPIC_CHARSET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:@";

/// `topic_name`: [`TopicRules::check`] never panics and accepts exactly the documented
/// names: non-empty, at most `max_name_len` bytes, every character in
/// `A-Z a-z 0-9 - _ . : @`; the error names the first rule broken, in that order.
///
/// Input: byte 0 is `max_name_len` (0 to 255, with 64, the default, at 0xFF); the rest is
/// the name, as UTF-8 if it is valid, otherwise with invalid sequences replaced by U+FFFD
/// (which is refused).
pub fn topic_name(data: &[u8]) {
    let Some((&max, name)) = data.split_first() else {
        return;
    };
    let rules = TopicRules {
        max_name_len: if max == 0xFF { 64 } else { usize::from(max) },
        ..TopicRules::default()
    };
    let name = String::from_utf8_lossy(name);
    let expected = if name.is_empty() {
        Err(TopicError::Empty)
    } else if name.len() > rules.max_name_len {
        Err(TopicError::TooLong(rules.max_name_len))
    } else if !name.chars().all(|c| TOPIC_CHARSET.contains(c)) {
        Err(TopicError::BadChar)
    } else {
        Ok(())
    };
    let verdict = rules.check(&name);
    assert_eq!(verdict, expected, "{name:?} with {rules:?}");
    if let Err(e) = verdict {
        assert!(!e.to_string().is_empty());
    } else {
        assert_eq!(TopicName::new(&name).as_str(), name);
    }
}

/// `control`: a subscriber's control message (`{"op":"subscribe","topics":[…],"since":{…}}`)
/// never panics the parser or the start computation; see `server::broadcast`.
pub fn control(data: &[u8]) {
    crate::server::broadcast::fuzz_control(data);
}

/// `envelope`: a `ringcast.v1` envelope of any topic and payload is a well-formed frame:
/// a text one is a JSON object of exactly `topic`, `seq`, `data`, where `data` is the
/// payload itself when it is JSON and the payload as a string otherwise; a binary one is
/// tag, topic length, topic, big-endian `seq`, payload. `gap` and `heartbeat` are JSON.
///
/// Input: byte 0 picks text or binary (low bit), byte 1 the topic length, then the topic,
/// then the payload; the sequence number is derived from the length.
pub fn envelope(data: &[u8]) {
    use crate::protocol::envelope;
    use crate::protocol::frame::{Decoded, OpCode, decode};

    let [kind, len, rest @ ..] = data else {
        return;
    };
    let (topic, payload) = rest.split_at(usize::from(*len).min(rest.len()));
    let topic = String::from_utf8_lossy(topic);
    let seq = (data.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let body = |f: &bytes::Bytes| -> Vec<u8> {
        let Ok(Decoded::Header(h, n)) = decode(f) else {
            panic!("not a frame")
        };
        assert!(h.fin && h.mask.is_none());
        assert_eq!(h.len as usize, f.len() - n);
        f[n..].to_vec()
    };
    if kind & 1 == 1 && topic.len() <= 255 {
        let f = envelope::frame(&topic, seq, OpCode::Binary, payload, false);
        let b = body(&f);
        let n = topic.len();
        assert_eq!(b[0], envelope::BINARY_TAG);
        assert_eq!(usize::from(b[1]), n);
        assert_eq!(&b[2..2 + n], topic.as_bytes());
        assert_eq!(b[2 + n..10 + n], seq.to_be_bytes());
        assert_eq!(&b[10 + n..], payload);
    } else {
        let json = envelope::is_json(payload);
        let f = envelope::frame(&topic, seq, OpCode::Text, payload, json);
        let b = body(&f);
        assert!(envelope::is_json(&b), "the envelope is JSON");
        let v: serde_json::Value = if json {
            // The payload goes in verbatim (a JSON number may be beyond what `Value`
            // holds, so compare bytes, and read the rest with `data` set aside).
            let head = b.len() - payload.len() - 1;
            assert_eq!(&b[head..b.len() - 1], payload);
            assert_eq!(b[b.len() - 1], b'}');
            let mut rest = b[..head].to_vec();
            rest.extend_from_slice(b"null}");
            serde_json::from_slice(&rest).expect("the envelope around the data is JSON")
        } else {
            let v: serde_json::Value = serde_json::from_slice(&b).expect("text envelope is JSON");
            assert_eq!(
                v["data"],
                serde_json::Value::from(String::from_utf8_lossy(payload))
            );
            v
        };
        let obj = v.as_object().expect("an object");
        assert_eq!(obj.len(), 3);
        assert_eq!(v["topic"], serde_json::Value::from(topic.as_ref()));
        assert_eq!(v["seq"].as_u64(), Some(seq));
    }
    let gap: serde_json::Value =
        serde_json::from_slice(&body(&envelope::gap(&topic, seq, seq))).expect("gap is JSON");
    assert_eq!(gap["topic"], serde_json::Value::from(topic.as_ref()));
    let beat = envelope::heartbeat([(topic.as_ref(), seq)]);
    let beat: serde_json::Value = serde_json::from_slice(&body(&beat)).expect("heartbeat is JSON");
    assert_eq!(beat["seq"][topic.as_ref()].as_u64(), Some(seq));
}
