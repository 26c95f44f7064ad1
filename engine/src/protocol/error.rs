//! Errors of the protocol core: each maps to what goes on the wire.
//!
//! A [`ProtocolError`] ends a WebSocket connection with a close frame; [`close_code`]
//! and [`reason`] give its code and a short human reason (at most 123 bytes, so it fits
//! a control frame). A [`HandshakeError`] is answered with an HTTP status and a reason.
//!
//! [`close_code`]: ProtocolError::close_code
//! [`reason`]: ProtocolError::reason

#![forbid(unsafe_code)]

use super::close::CloseCode;

/// A violation of RFC 6455 (or of a configured limit) by the peer, after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1-3 set while no extension that defines them was negotiated (§5.2).
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// Opcode 3-7 or 0xB-0xF (§5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A client frame without the mask bit (§5.1).
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A server frame with the mask bit, seen by a client (§5.1).
    #[error("server frame is masked")]
    MaskedFrame,
    /// A control frame with a payload over 125 bytes (§5.5).
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooLong,
    /// A control frame with FIN clear (§5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A 16- or 64-bit length that a shorter form could have held (§5.2).
    #[error("payload length not minimally encoded")]
    NonMinimalLength,
    /// A 64-bit length with the most significant bit set (§5.2).
    #[error("payload length has the top bit set")]
    LengthTopBit,
    /// A continuation frame with no fragmented message in progress (§5.4).
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress (§5.4).
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A text message or close reason that is not valid UTF-8 (§8.1).
    #[error("invalid UTF-8 in text payload")]
    InvalidUtf8,
    /// A close frame whose payload is one byte long (§5.5.1).
    #[error("close payload of one byte")]
    CloseTooShort,
    /// A close code that may not appear on the wire (§7.4).
    #[error("close code {0} is not valid on the wire")]
    InvalidCloseCode(u16),
    /// A frame larger than the configured frame limit.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// Announced payload length.
        len: u64,
        /// Configured limit.
        limit: u64,
    },
    /// A message larger than the configured message limit.
    #[error("message of {len} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Bytes the message has reached (at least).
        len: u64,
        /// Configured limit.
        limit: u64,
    },
    /// A fragmented message with more fragments than the configured limit.
    #[error("message has more than {0} fragments")]
    TooManyFragments(u32),
    /// A large message that would take the connections' shared
    /// [`MessageBudget`](super::MessageBudget) past its size (the server is short of
    /// memory for messages in progress, not this peer at fault).
    #[error("large messages in progress hold the server's {0} bytes for them")]
    MessageBudget(usize),
}

impl ProtocolError {
    /// The close code this error is answered with (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooLarge { .. } | Self::MessageTooLarge { .. } => CloseCode::TOO_BIG,
            Self::TooManyFragments(_) => CloseCode::POLICY,
            Self::MessageBudget(_) => CloseCode::TRY_AGAIN_LATER,
            _ => CloseCode::PROTOCOL,
        }
    }

    /// A short reason for the close frame (always under 123 bytes).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ReservedBits => "reserved bits set",
            Self::ReservedOpcode(_) => "reserved opcode",
            Self::UnmaskedFrame => "client frames must be masked",
            Self::MaskedFrame => "server frames must not be masked",
            Self::ControlFrameTooLong => "control frame too long",
            Self::FragmentedControlFrame => "fragmented control frame",
            Self::NonMinimalLength => "length not minimally encoded",
            Self::LengthTopBit => "length top bit set",
            Self::UnexpectedContinuation => "unexpected continuation frame",
            Self::ExpectedContinuation => "expected continuation frame",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::CloseTooShort => "close payload of one byte",
            Self::InvalidCloseCode(_) => "invalid close code",
            Self::FrameTooLarge { .. } => "frame too large",
            Self::MessageTooLarge { .. } => "message too large",
            Self::TooManyFragments(_) => "too many fragments",
            Self::MessageBudget(_) => "server busy: too many large messages in progress",
        }
    }
}

/// Why an opening handshake is refused; each variant maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The request is not valid HTTP/1.1 or lacks a required header (400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// An upgrade request with a method other than GET (405, with `Allow: GET`).
    #[error("method not allowed: only GET upgrades to WebSocket")]
    MethodNotAllowed,
    /// A plain request (no `Upgrade`) with a method other than GET or HEAD (405, with
    /// `Allow: GET, HEAD`).
    #[error("method not allowed: plain HTTP endpoints answer GET and HEAD")]
    HttpMethodNotAllowed,
    /// `Sec-WebSocket-Version` other than 13 (426, with `Sec-WebSocket-Version: 13`).
    #[error("unsupported WebSocket version")]
    UnsupportedVersion,
    /// The `Origin` is not on the allow-list (403).
    #[error("origin not allowed")]
    OriginRefused,
    /// No endpoint serves the requested path (404).
    #[error("no WebSocket endpoint at this path")]
    NotFound,
    /// The request head is over the configured limit (431).
    #[error("request head over {0} bytes")]
    HeadTooLarge(usize),
    /// The request has more header fields than the server parses (431).
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// The application refused the upgrade with its own status and reason.
    #[error("refused: {status} {reason}")]
    Refused {
        /// HTTP status code (4xx or 5xx).
        status: u16,
        /// Short reason sent as the response body.
        reason: String,
    },
    /// The server is over one of its connection limits (503, with `Retry-After: 1`); the
    /// reason names the limit.
    #[error("{0}")]
    Unavailable(String),
}

impl HandshakeError {
    /// The HTTP status code of the rejection.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::MethodNotAllowed | Self::HttpMethodNotAllowed => 405,
            Self::UnsupportedVersion => 426,
            Self::OriginRefused => 403,
            Self::NotFound => 404,
            Self::HeadTooLarge(_) | Self::TooManyHeaders(_) => 431,
            Self::Refused { status, .. } => *status,
            Self::Unavailable(_) => 503,
        }
    }
}
