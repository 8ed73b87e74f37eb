//! One error enum per layer; each names what was wrong and where.

use thiserror::Error;

/// An error and its sources on one line, `outer: inner`, each reason once: a source whose text
/// the line already shows (an error that prints its source itself) is not repeated.
pub fn one_line<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut line = String::new();
    for e in chain {
        let text = e.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A message or frame of the agent<->device channel that does not decode.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// The bytes end inside a field.
    #[error("truncated {field} at byte {offset}")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Offset where it started.
        offset: usize,
    },
    /// A version this build does not speak.
    #[error("unsupported {what} version {version} (this build speaks 1)")]
    Version {
        /// Frame or message.
        what: &'static str,
        /// Version byte received.
        version: u8,
    },
    /// An unknown frame or message type.
    #[error("unknown {what} type {kind:#04x}")]
    UnknownType {
        /// Frame or message.
        what: &'static str,
        /// Type byte received.
        kind: u8,
    },
    /// A field outside its allowed range.
    #[error("bad {field} at byte {offset}: {reason}")]
    Field {
        /// Field name.
        field: &'static str,
        /// Offset where it started.
        offset: usize,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A field too long for its length prefix or limit (encoding refuses, never cuts).
    #[error("{field} of {len} bytes is longer than the {max} bytes allowed")]
    TooLong {
        /// Field being written.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The most it may have.
        max: usize,
    },
    /// Bytes after the last field.
    #[error("{count} trailing bytes after the {what}")]
    Trailing {
        /// Frame or message.
        what: &'static str,
        /// Number of extra bytes.
        count: usize,
    },
}

/// Failure of the channel layer (AEAD records, replay window, hello).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChannelError {
    /// Frame or message does not decode.
    #[error("channel frame: {0}")]
    Wire(#[from] WireError),
    /// AEAD tag check failed: a tampered record, or (only for a connection's first record,
    /// before any opened) a different pairing key.
    #[error(
        "channel record {seq} failed authentication ({})",
        if *seq == 0 { "tampered, or a different pairing key" } else { "tampered in transit" }
    )]
    Authentication {
        /// Sequence number claimed by the record.
        seq: u64,
    },
    /// A record out of order: a replay, a drop or a reordering.
    #[error("channel record has sequence {got}, expected {expected} (replayed or reordered)")]
    Sequence {
        /// Next sequence number expected.
        expected: u64,
        /// Sequence number received.
        got: u64,
    },
    /// Sequence space exhausted; a new channel must be opened.
    #[error("channel sequence numbers exhausted")]
    Exhausted,
    /// A frame that is not allowed in this state.
    #[error("unexpected {0} frame")]
    Unexpected(&'static str),
    /// The pairing key is not usable.
    #[error("pairing key: {0}")]
    Key(&'static str),
}

/// A session context that cannot be used.
#[derive(Debug, Error)]
pub enum ContextError {
    /// The handshake produced no session.
    #[error("no session after the handshake")]
    NoSession,
    /// Not DTLS 1.2, TLS 1.2 or TLS 1.3.
    #[error("session context: protocol version {0:#06x} is not DTLS 1.2, TLS 1.2 or TLS 1.3")]
    Version(u16),
    /// A suite D2TLS does not delegate.
    #[error("session context: cipher suite {0:#06x} is not delegated")]
    Suite(u16),
    /// Session ID empty or longer than 32 bytes.
    #[error("session context: session ID of {0} bytes (1..=32 allowed)")]
    SessionIdLength(usize),
    /// Master secret not 48 bytes (TLS 1.2), PSK not 32 bytes (TLS 1.3).
    #[error(
        "session context: secret of {0} bytes (48 for a TLS 1.2 master secret, 32 for a TLS 1.3 PSK)"
    )]
    MasterSecretLength(usize),
    /// Master secret all zero.
    #[error("session context: master secret is all zero")]
    MasterSecretZero,
    /// The handshake did not use the extended master secret.
    #[error("session context: no extended master secret (RFC 7627); refusing to resume")]
    NoExtendedMasterSecret,
    /// A session ticket longer than RFC 5077 allows.
    #[error("session context: session ticket of {0} bytes (at most 65535)")]
    TicketLength(usize),
    /// A TLS 1.3 session without the server's NewSessionTicket (TLS 1.3 resumes by ticket only).
    #[error(
        "session context: TLS 1.3 session without a ticket (the server sent no NewSessionTicket)"
    )]
    NoTicket,
    /// A TLS 1.2 field in a TLS 1.3 context.
    #[error("session context: a TLS 1.3 context has {0}")]
    Tls13Field(&'static str),
    /// Zero lifetime.
    #[error("session context: lifetime of 0 s")]
    Lifetime,
    /// OpenSSL refused the session DER.
    #[error("session context: OpenSSL refused the session: {0}")]
    Import(openssl::error::ErrorStack),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_first_record_suggests_the_pairing_key() {
        let first = ChannelError::Authentication { seq: 0 }.to_string();
        assert!(first.contains("different pairing key"), "{first}");
        let later = ChannelError::Authentication { seq: 5 }.to_string();
        assert!(
            later.contains("tampered in transit") && !later.contains("pairing key"),
            "{later}"
        );
    }

    #[test]
    fn one_line_says_each_reason_once() {
        let e = ChannelError::from(WireError::Truncated {
            field: "nonce",
            offset: 3,
        });
        // thiserror's `{0}` with #[from] shows the source and also returns it as source().
        assert_eq!(
            one_line(
                [&e as &(dyn std::error::Error + 'static)]
                    .into_iter()
                    .chain(std::error::Error::source(&e))
            ),
            "channel frame: truncated nonce at byte 3"
        );
        let io = std::io::Error::other("disk on fire");
        assert_eq!(
            one_line([&io as &(dyn std::error::Error + 'static)]),
            "disk on fire"
        );
    }
}
