//! Incremental UTF-8 validation of text messages across fragments (RFC 6455 §8.1).
//!
//! STUB: to be implemented with simdutf8, failing fast.

/// Invalid UTF-8 was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error;

/// Validates a text message fed in arbitrary pieces; carries at most 3 bytes of an
/// incomplete sequence from one piece to the next.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carry_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Self {
            carry: [0; 4],
            carry_len: 0,
        }
    }

    /// Validates the next piece. Fails as soon as an invalid sequence is seen, even when
    /// more pieces follow; a sequence cut at the end of `piece` is carried over.
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), Utf8Error> {
        let _ = (piece, &mut self.carry);
        todo!()
    }

    /// Ends the message: fails if an incomplete sequence is still carried. Resets.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let r = if self.carry_len == 0 { Ok(()) } else { Err(Utf8Error) };
        self.reset();
        r
    }

    /// Forgets any carried bytes.
    pub fn reset(&mut self) {
        self.carry_len = 0;
    }
}
