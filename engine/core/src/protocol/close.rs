//! WebSocket close codes that Fanwire sends, defined once.

/// A close code with its standard reason, as the reference servers send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// The connection finished normally (legacy `connection_terminate`).
    Normal = 1000,
    /// The server is going away (shutdown).
    GoingAway = 1001,
    /// The peer broke the WebSocket framing (RFC 6455: unmasked, reserved
    /// bits or opcodes, a bad control frame).
    ProtocolError = 1002,
    /// A text message that is not UTF-8.
    InvalidPayload = 1007,
    /// A message exceeded the configured frame size.
    MessageTooBig = 1009,
    /// Malformed or unexpected client message.
    BadRequest = 4400,
    /// `subscribe` before the connection was acknowledged.
    Unauthorized = 4401,
    /// The connection policy rejected the connection.
    Forbidden = 4403,
    /// The client offered no subprotocol that this server speaks.
    SubprotocolNotAcceptable = 4406,
    /// No `connection_init` within the configured wait.
    ConnectionInitialisationTimeout = 4408,
    /// `subscribe` with an id that is still active.
    SubscriberAlreadyExists = 4409,
    /// A second `connection_init`.
    TooManyInitialisationRequests = 4429,
    /// The client stopped reading and its queue stayed full.
    SlowConsumer = 4413,
    /// An unexpected server-side failure.
    InternalServerError = 4500,
}

impl CloseCode {
    /// The numeric code on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The reason the reference implementation sends with this code.
    pub fn default_reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "Normal closure",
            CloseCode::GoingAway => "Server shutting down",
            CloseCode::ProtocolError => "Protocol error",
            CloseCode::InvalidPayload => "Invalid frame payload data",
            CloseCode::MessageTooBig => "Message too big",
            CloseCode::BadRequest => "Invalid message received",
            CloseCode::Unauthorized => "Unauthorized",
            CloseCode::Forbidden => "Forbidden",
            CloseCode::SubprotocolNotAcceptable => "Subprotocol not acceptable",
            CloseCode::ConnectionInitialisationTimeout => "Connection initialisation timeout",
            CloseCode::SubscriberAlreadyExists => "Subscriber already exists",
            CloseCode::TooManyInitialisationRequests => "Too many initialisation requests",
            CloseCode::SlowConsumer => "Slow consumer: outgoing queue stayed full",
            CloseCode::InternalServerError => "Internal server error",
        }
    }
}

/// A close decision: the code and a reason of at most 123 bytes, as RFC 6455 allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The code.
    pub code: CloseCode,
    /// The human-readable reason.
    pub reason: String,
}

impl Close {
    /// A close with the code's standard reason.
    pub fn new(code: CloseCode) -> Self {
        Close {
            code,
            reason: code.default_reason().to_owned(),
        }
    }

    /// A close with a specific reason, cut to fit in a close frame.
    pub fn with_reason(code: CloseCode, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > 123 {
            let mut cut = 123;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Close { code, reason }
    }
}
