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
