//! STUB
use std::time::Duration;

/// Limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Max message.
    pub max_message: usize,
    /// Max frame.
    pub max_frame: usize,
    /// Fragments.
    pub max_fragments: Option<u32>,
    /// Close timeout.
    pub close_timeout: Duration,
}
impl Default for Limits {
    fn default() -> Self {
        Self { max_message: 16 << 20, max_frame: 16 << 20, max_fragments: None, close_timeout: Duration::from_secs(5) }
    }
}
/// Event.
#[derive(Debug)]
pub enum Event<'a> {
    /// Text.
    Text(&'a [u8]),
}
/// Conn.
#[derive(Debug)]
pub struct Connection;
