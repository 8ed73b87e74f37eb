//! Messages of the agent<->device channel (the plaintext inside an AEAD record).
//!
//! Every message starts with `version (1) ‖ type`; integers are big-endian; `lp8(x)` is a
//! one-byte length then x, `lp16(x)` a two-byte length then x. docs/d2tls.md lists every byte.

use zeroize::Zeroizing;

use crate::error::WireError;
use crate::session::{DTLS1_2, MASTER_SECRET_LEN, PSK_LEN, SessionContext, TLS1_2, TLS1_3};

/// Message format version.
pub const MESSAGE_VERSION: u8 = 1;
/// `ecdsa_secp256r1_sha256` (TLS SignatureScheme), the only scheme the device signs.
pub const SIG_ECDSA_P256_SHA256: u16 = 0x0403;

const T_READY: u8 = 0x10;
const T_DELEGATION: u8 = 0x11;
const T_SIGN: u8 = 0x12;
const T_SIGNATURE: u8 = 0x13;
const T_CONTEXT: u8 = 0x14;
const T_CONTEXT_TICKET: u8 = 0x15;
const T_CONTEXT_TLS13: u8 = 0x16;
const T_EXPECT: u8 = 0x17;
const T_ERROR: u8 = 0x1F;

/// Transport the device wants the session for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// DTLS 1.2 over UDP.
    Dtls,
    /// TLS 1.2 over TCP.
    Tls,
    /// TLS 1.3 over TCP.
    Tls13,
}

impl Transport {
    fn code(self) -> u8 {
        match self {
            Transport::Dtls => 1,
            Transport::Tls => 2,
            Transport::Tls13 => 3,
        }
    }

    /// Parses `dtls` / `tls` / `tls13`.
    pub fn parse(s: &str) -> Option<Transport> {
        match s.to_ascii_lowercase().as_str() {
            "dtls" | "dtls1.2" => Some(Transport::Dtls),
            "tls" | "tls1.2" => Some(Transport::Tls),
            "tls13" | "tls1.3" => Some(Transport::Tls13),
            _ => None,
        }
    }

    /// The protocol version on the wire.
    pub fn version(self) -> u16 {
        match self {
            Transport::Dtls => DTLS1_2,
            Transport::Tls => TLS1_2,
            Transport::Tls13 => TLS1_3,
        }
    }

    /// Whether it runs over TCP (TLS 1.2 and 1.3) rather than UDP.
    pub fn is_tcp(self) -> bool {
        self != Transport::Dtls
    }
}

/// Error codes carried by [`Message::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// A message that does not decode or is not allowed now.
    BadMessage = 1,
    /// A sign request for a delegation the device did not ask for (or already signed).
    UnexpectedSignRequest = 2,
    /// The agent's handshake with the server failed.
    HandshakeFailed = 3,
    /// The request is refused by the agent's policy.
    NotAllowed = 4,
    /// A peer did not answer in time.
    Timeout = 5,
    /// The device refused to sign.
    SignatureRefused = 6,
    /// Anything else.
    Other = 0xFFFF,
}

impl ErrorCode {
    fn from_u16(v: u16) -> ErrorCode {
        match v {
            1 => ErrorCode::BadMessage,
            2 => ErrorCode::UnexpectedSignRequest,
            3 => ErrorCode::HandshakeFailed,
            4 => ErrorCode::NotAllowed,
            5 => ErrorCode::Timeout,
            6 => ErrorCode::SignatureRefused,
            _ => ErrorCode::Other,
        }
    }
}

/// A delegation request: "run a handshake with this server for me, as me".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelegationRequest {
    /// Chosen at random by the device; every later message about it carries it.
    pub delegation_id: u64,
    /// DTLS or TLS.
    pub transport: Transport,
    /// Wanted suite (IANA), or 0 to let the agent offer every delegated suite.
    pub suite: u16,
    /// `host:port` of the server.
    pub server: String,
    /// Name to verify the server certificate against (and SNI); empty = host of `server`.
    pub server_name: String,
    /// The device's certificate chain, leaf first, DER.
    pub cert_chain: Vec<Vec<u8>>,
}

/// A channel message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Agent → device, first record: the channel keys are confirmed.
    Ready,
    /// Device → agent.
    Delegation(DelegationRequest),
    /// Agent → device: sign this digest for the CertificateVerify of this delegation.
    SignRequest {
        /// The delegation it belongs to.
        delegation_id: u64,
        /// TLS SignatureScheme.
        scheme: u16,
        /// SHA-256 of the handshake transcript.
        digest: Vec<u8>,
    },
    /// Device → agent: DER ECDSA signature.
    Signature {
        /// The delegation it belongs to.
        delegation_id: u64,
        /// DER-encoded ECDSA signature.
        signature: Vec<u8>,
    },
    /// Agent → device: what the device needs to resume.
    Context {
        /// The delegation it belongs to.
        delegation_id: u64,
        /// The context.
        context: SessionContext,
    },
    /// Device → agent, after a session: "I will ask for this delegation again in about
    /// `in_ms`". The agent may start that handshake ahead and hold it at the signature; the
    /// request's own `delegation_id` is 0 (the device picks one when it asks). A hint: the
    /// agent does not answer it.
    Expect {
        /// Milliseconds from now until the device expects to ask.
        in_ms: u32,
        /// What it will ask for (`delegation_id` 0).
        request: DelegationRequest,
    },
    /// Either way: the delegation (or the channel, id 0) failed.
    Error {
        /// The delegation it belongs to (0: the channel).
        delegation_id: u64,
        /// Code.
        code: ErrorCode,
        /// Human-readable reason, never secret.
        reason: String,
    },
}

impl Message {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Ready => "ready",
            Message::Delegation(_) => "delegation-request",
            Message::SignRequest { .. } => "sign-request",
            Message::Signature { .. } => "signature",
            Message::Context { .. } => "session-context",
            Message::Expect { .. } => "expect-delegation",
            Message::Error { .. } => "error",
        }
    }

    /// An error message whose reason is shortened to fit the 255 bytes its field holds: at a
    /// character boundary, ending in "…" so that a reader sees it was cut.
    pub fn error(delegation_id: u64, code: ErrorCode, reason: &str) -> Message {
        let reason = if reason.len() <= MAX_REASON {
            reason.to_owned()
        } else {
            let mut end = MAX_REASON - ELLIPSIS.len();
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}{ELLIPSIS}", &reason[..end])
        };
        Message::Error {
            delegation_id,
            code,
            reason,
        }
    }

    /// Encodes into a buffer that is wiped when dropped (it may hold a master secret).
    /// A field too long for its length prefix is an error, never cut.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, WireError> {
        let mut b = Zeroizing::new(Vec::with_capacity(256));
        b.push(MESSAGE_VERSION);
        match self {
            Message::Ready => b.push(T_READY),
            Message::Delegation(r) => {
                b.push(T_DELEGATION);
                put_request(&mut b, r)?;
            }
            Message::Expect { in_ms, request } => {
                b.push(T_EXPECT);
                b.extend_from_slice(&in_ms.to_be_bytes());
                put_request(&mut b, request)?;
            }
            Message::SignRequest {
                delegation_id,
                scheme,
                digest,
            } => {
                b.push(T_SIGN);
                b.extend_from_slice(&delegation_id.to_be_bytes());
                b.extend_from_slice(&scheme.to_be_bytes());
                lp8(&mut b, "digest", digest)?;
            }
            Message::Signature {
                delegation_id,
                signature,
            } => {
                b.push(T_SIGNATURE);
                b.extend_from_slice(&delegation_id.to_be_bytes());
                lp8(&mut b, "signature", signature)?;
            }
            Message::Context {
                delegation_id,
                context,
            } if context.version == TLS1_3 => {
                // TLS 1.3: the PSK and the NewSessionTicket; no session ID, no EMS flag.
                b.push(T_CONTEXT_TLS13);
                b.extend_from_slice(&delegation_id.to_be_bytes());
                b.extend_from_slice(&context.version.to_be_bytes());
                b.extend_from_slice(&context.suite.to_be_bytes());
                b.extend_from_slice(context.secret());
                b.extend_from_slice(&context.lifetime_secs.to_be_bytes());
                lp16(&mut b, "session ticket", &context.ticket)?;
                b.extend_from_slice(&context.ticket_lifetime_hint.to_be_bytes());
                b.extend_from_slice(&context.ticket_age_add.to_be_bytes());
                b.extend_from_slice(&context.max_early_data.to_be_bytes());
            }
            Message::Context {
                delegation_id,
                context,
            } => {
                // A context without a ticket keeps the first version's bytes (type 0x14); a
                // ticket context (0x15) adds the ticket and its lifetime hint.
                let ticket = !context.ticket.is_empty();
                b.push(if ticket { T_CONTEXT_TICKET } else { T_CONTEXT });
                b.extend_from_slice(&delegation_id.to_be_bytes());
                b.extend_from_slice(&context.version.to_be_bytes());
                b.extend_from_slice(&context.suite.to_be_bytes());
                lp8(&mut b, "session id", &context.session_id)?;
                b.extend_from_slice(&context.master_secret[..]);
                b.push(u8::from(context.extended_master_secret));
                b.extend_from_slice(&context.lifetime_secs.to_be_bytes());
                if ticket {
                    lp16(&mut b, "session ticket", &context.ticket)?;
                    b.extend_from_slice(&context.ticket_lifetime_hint.to_be_bytes());
                }
            }
            Message::Error {
                delegation_id,
                code,
                reason,
            } => {
                b.push(T_ERROR);
                b.extend_from_slice(&delegation_id.to_be_bytes());
                b.extend_from_slice(&(*code as u16).to_be_bytes());
                lp8(&mut b, "reason", reason.as_bytes())?;
            }
        }
        Ok(b)
    }

    /// Decodes one message; every field is checked.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8("message version")?;
        if version != MESSAGE_VERSION {
            return Err(WireError::Version {
                what: "message",
                version,
            });
        }
        let kind = r.u8("message type")?;
        let msg = match kind {
            T_READY => Message::Ready,
            T_DELEGATION => Message::Delegation(r.request()?),
            T_EXPECT => {
                let in_ms = r.u32("expected in (ms)")?;
                Message::Expect {
                    in_ms,
                    request: r.request()?,
                }
            }
            T_SIGN => {
                let delegation_id = r.u64("delegation id")?;
                let scheme = r.u16("signature scheme")?;
                let digest = r.lp8("digest")?.to_vec();
                Message::SignRequest {
                    delegation_id,
                    scheme,
                    digest,
                }
            }
            T_SIGNATURE => {
                let delegation_id = r.u64("delegation id")?;
                let signature = r.lp8("signature")?.to_vec();
                Message::Signature {
                    delegation_id,
                    signature,
                }
            }
            T_CONTEXT | T_CONTEXT_TICKET => {
                let delegation_id = r.u64("delegation id")?;
                let version = r.u16("protocol version")?;
                let suite = r.u16("suite")?;
                let session_id = r.lp8("session id")?.to_vec();
                let ms = r.take("master secret", MASTER_SECRET_LEN)?;
                let mut master_secret = Box::new([0u8; MASTER_SECRET_LEN]);
                master_secret.copy_from_slice(ms);
                let at = r.pos;
                let extended_master_secret = match r.u8("ems flag")? {
                    0 => false,
                    1 => true,
                    _ => return Err(r.bad("ems flag", at, "not 0 or 1")),
                };
                let lifetime_secs = r.u32("lifetime")?;
                let (ticket, ticket_lifetime_hint) = if kind == T_CONTEXT_TICKET {
                    let at = r.pos;
                    let ticket = r.lp16("session ticket")?.to_vec();
                    if ticket.is_empty() {
                        return Err(r.bad("session ticket", at, "empty (type 0x14 has none)"));
                    }
                    (ticket, r.u32("ticket lifetime hint")?)
                } else {
                    (Vec::new(), 0)
                };
                Message::Context {
                    delegation_id,
                    context: SessionContext {
                        version,
                        suite,
                        session_id,
                        master_secret,
                        extended_master_secret,
                        lifetime_secs,
                        ticket,
                        ticket_lifetime_hint,
                        ticket_age_add: 0,
                        max_early_data: 0,
                    },
                }
            }
            T_CONTEXT_TLS13 => {
                let delegation_id = r.u64("delegation id")?;
                let at = r.pos;
                let version = r.u16("protocol version")?;
                if version != TLS1_3 {
                    return Err(r.bad("protocol version", at, "type 0x16 is TLS 1.3 (0304)"));
                }
                let suite = r.u16("suite")?;
                let psk = r.take("resumption psk", PSK_LEN)?;
                let mut master_secret = Box::new([0u8; MASTER_SECRET_LEN]);
                master_secret[..PSK_LEN].copy_from_slice(psk);
                let lifetime_secs = r.u32("lifetime")?;
                let at = r.pos;
                let ticket = r.lp16("session ticket")?.to_vec();
                if ticket.is_empty() {
                    return Err(r.bad("session ticket", at, "empty (TLS 1.3 resumes by ticket)"));
                }
                Message::Context {
                    delegation_id,
                    context: SessionContext {
                        version,
                        suite,
                        session_id: Vec::new(),
                        master_secret,
                        extended_master_secret: false,
                        lifetime_secs,
                        ticket,
                        ticket_lifetime_hint: r.u32("ticket lifetime")?,
                        ticket_age_add: r.u32("ticket age add")?,
                        max_early_data: r.u32("max early data")?,
                    },
                }
            }
            T_ERROR => {
                let delegation_id = r.u64("delegation id")?;
                let code = ErrorCode::from_u16(r.u16("error code")?);
                let reason = r.text("reason")?;
                Message::Error {
                    delegation_id,
                    code,
                    reason,
                }
            }
            kind => {
                return Err(WireError::UnknownType {
                    what: "message",
                    kind,
                });
            }
        };
        if r.pos != bytes.len() {
            return Err(WireError::Trailing {
                what: "message",
                count: bytes.len() - r.pos,
            });
        }
        Ok(msg)
    }
}

/// A delegation request's fields, after its type (and an expectation's time).
fn put_request(b: &mut Vec<u8>, r: &DelegationRequest) -> Result<(), WireError> {
    b.extend_from_slice(&r.delegation_id.to_be_bytes());
    b.push(r.transport.code());
    b.extend_from_slice(&r.suite.to_be_bytes());
    lp8(b, "server", r.server.as_bytes())?;
    lp8(b, "server name", r.server_name.as_bytes())?;
    let count = u8::try_from(r.cert_chain.len()).map_err(|_| WireError::TooLong {
        field: "certificate chain (certificates)",
        len: r.cert_chain.len(),
        max: 255,
    })?;
    b.push(count);
    for cert in &r.cert_chain {
        lp16(b, "certificate", cert)?;
    }
    Ok(())
}

/// The most bytes an error message's reason holds (its `lp8` field).
pub const MAX_REASON: usize = 255;
const ELLIPSIS: &str = "…";

/// Writes `lp8(v)`; longer than 255 bytes is an error naming `field`.
pub(crate) fn lp8(b: &mut Vec<u8>, field: &'static str, v: &[u8]) -> Result<(), WireError> {
    let len = u8::try_from(v.len()).map_err(|_| WireError::TooLong {
        field,
        len: v.len(),
        max: usize::from(u8::MAX),
    })?;
    b.push(len);
    b.extend_from_slice(v);
    Ok(())
}

fn lp16(b: &mut Vec<u8>, field: &'static str, v: &[u8]) -> Result<(), WireError> {
    let len = u16::try_from(v.len()).map_err(|_| WireError::TooLong {
        field,
        len: v.len(),
        max: usize::from(u16::MAX),
    })?;
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(v);
    Ok(())
}

/// Bounds-checked reader naming the field that failed.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(WireError::Truncated {
                field,
                offset: self.pos,
            })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    /// A delegation request's fields ([`put_request`]).
    fn request(&mut self) -> Result<DelegationRequest, WireError> {
        let delegation_id = self.u64("delegation id")?;
        let at = self.pos;
        let transport = match self.u8("transport")? {
            1 => Transport::Dtls,
            2 => Transport::Tls,
            3 => Transport::Tls13,
            _ => {
                return Err(self.bad(
                    "transport",
                    at,
                    "not 1 (DTLS 1.2), 2 (TLS 1.2) or 3 (TLS 1.3)",
                ));
            }
        };
        let suite = self.u16("suite")?;
        let at = self.pos;
        let server = self.text("server")?;
        if server.is_empty() {
            return Err(self.bad("server", at, "empty"));
        }
        let server_name = self.text("server name")?;
        let count = self.u8("certificate count")?;
        if count == 0 {
            return Err(self.bad("certificate count", self.pos - 1, "no certificate"));
        }
        let mut cert_chain = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            cert_chain.push(self.lp16("certificate")?.to_vec());
        }
        Ok(DelegationRequest {
            delegation_id,
            transport,
            suite,
            server,
            server_name,
            cert_chain,
        })
    }
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take(field, 1)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        let b = self.take(field, 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        let b = self.take(field, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        let b = self.take(field, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    pub(crate) fn lp8(&mut self, field: &'static str) -> Result<&'a [u8], WireError> {
        let n = self.u8(field)?;
        self.take(field, usize::from(n))
    }
    fn lp16(&mut self, field: &'static str) -> Result<&'a [u8], WireError> {
        let n = self.u16(field)?;
        self.take(field, usize::from(n))
    }
    fn text(&mut self, field: &'static str) -> Result<String, WireError> {
        let at = self.pos;
        let b = self.lp8(field)?;
        let s = std::str::from_utf8(b).map_err(|_| self.bad(field, at, "not UTF-8"))?;
        if s.chars().any(char::is_control) {
            return Err(self.bad(field, at, "control character"));
        }
        Ok(s.to_owned())
    }
    pub(crate) fn bad(
        &self,
        field: &'static str,
        offset: usize,
        reason: &'static str,
    ) -> WireError {
        WireError::Field {
            field,
            offset,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Message> {
        vec![
            Message::Ready,
            Message::Delegation(DelegationRequest {
                delegation_id: 0x0102030405060708,
                transport: Transport::Dtls,
                suite: 0xC0AE,
                server: "127.0.0.1:4433".into(),
                server_name: "localhost".into(),
                cert_chain: vec![vec![0x30, 0x82, 1, 2], vec![9; 300]],
            }),
            Message::SignRequest {
                delegation_id: 7,
                scheme: SIG_ECDSA_P256_SHA256,
                digest: vec![0xAB; 32],
            },
            Message::Signature {
                delegation_id: 7,
                signature: vec![0x30; 70],
            },
            Message::Context {
                delegation_id: 7,
                context: SessionContext {
                    version: DTLS1_2,
                    suite: 0xC02B,
                    session_id: vec![5; 32],
                    master_secret: Box::new([3; 48]),
                    extended_master_secret: true,
                    lifetime_secs: 300,
                    ticket: vec![],
                    ticket_lifetime_hint: 0,
                    ticket_age_add: 0,
                    max_early_data: 0,
                },
            },
            Message::Context {
                delegation_id: 8,
                context: SessionContext {
                    version: TLS1_2,
                    suite: 0xC0AE,
                    session_id: vec![6; 32],
                    master_secret: Box::new([4; 48]),
                    extended_master_secret: true,
                    lifetime_secs: 7200,
                    ticket: vec![0x77; 900],
                    ticket_lifetime_hint: 7200,
                    ticket_age_add: 0,
                    max_early_data: 0,
                },
            },
            Message::Context {
                delegation_id: 9,
                context: SessionContext {
                    version: TLS1_3,
                    suite: 0x1301,
                    session_id: vec![],
                    master_secret: Box::new({
                        let mut s = [0; 48];
                        s[..32].fill(8);
                        s
                    }),
                    extended_master_secret: false,
                    lifetime_secs: 3600,
                    ticket: vec![0x55; 600],
                    ticket_lifetime_hint: 7200,
                    ticket_age_add: 0xDEAD_BEEF,
                    max_early_data: 16384,
                },
            },
            Message::Expect {
                in_ms: 900_000,
                request: DelegationRequest {
                    delegation_id: 0,
                    transport: Transport::Tls,
                    suite: 0,
                    server: "127.0.0.1:4433".into(),
                    server_name: String::new(),
                    cert_chain: vec![vec![0x30; 40]],
                },
            },
            Message::Error {
                delegation_id: 0,
                code: ErrorCode::UnexpectedSignRequest,
                reason: "no such delegation".into(),
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in all() {
            assert_eq!(
                Message::decode(&m.encode().unwrap()).unwrap(),
                m,
                "{}",
                m.name()
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for m in all() {
            let bytes = m.encode().unwrap();
            for cut in 0..bytes.len() {
                assert!(
                    Message::decode(&bytes[..cut]).is_err(),
                    "{} cut {cut}",
                    m.name()
                );
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert!(matches!(
                Message::decode(&longer),
                Err(WireError::Trailing { count: 1, .. })
            ));
        }
    }

    #[test]
    fn byte_exact_sign_request() {
        let m = Message::SignRequest {
            delegation_id: 1,
            scheme: SIG_ECDSA_P256_SHA256,
            digest: vec![0xEE; 2],
        };
        assert_eq!(
            &m.encode().unwrap()[..],
            &[1, 0x12, 0, 0, 0, 0, 0, 0, 0, 1, 0x04, 0x03, 2, 0xEE, 0xEE]
        );
    }

    #[test]
    fn long_fields_are_refused_not_cut() {
        let Message::Delegation(req) = all()[1].clone() else {
            unreachable!()
        };
        let cases = [
            (
                Message::Delegation(DelegationRequest {
                    server: "s".repeat(256),
                    ..req.clone()
                }),
                "server",
                256,
            ),
            (
                Message::Delegation(DelegationRequest {
                    server_name: "n".repeat(300),
                    ..req.clone()
                }),
                "server name",
                300,
            ),
            (
                Message::Delegation(DelegationRequest {
                    cert_chain: vec![vec![1]; 256],
                    ..req.clone()
                }),
                "certificate chain (certificates)",
                256,
            ),
            (
                Message::Delegation(DelegationRequest {
                    cert_chain: vec![vec![0; 65536]],
                    ..req
                }),
                "certificate",
                65536,
            ),
            (
                Message::Signature {
                    delegation_id: 1,
                    signature: vec![0; 256],
                },
                "signature",
                256,
            ),
            (
                Message::SignRequest {
                    delegation_id: 1,
                    scheme: SIG_ECDSA_P256_SHA256,
                    digest: vec![0; 1000],
                },
                "digest",
                1000,
            ),
            (
                Message::Error {
                    delegation_id: 1,
                    code: ErrorCode::Other,
                    reason: "r".repeat(256),
                },
                "reason",
                256,
            ),
        ];
        for (m, field, len) in cases {
            match m.encode() {
                Err(WireError::TooLong {
                    field: f, len: l, ..
                }) => {
                    assert_eq!((f, l), (field, len), "{}", m.name())
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        // Exactly at the limit is fine.
        let m = Message::Signature {
            delegation_id: 1,
            signature: vec![0; 255],
        };
        assert_eq!(Message::decode(&m.encode().unwrap()).unwrap(), m);
    }

    #[test]
    fn a_long_reason_is_shortened_visibly() {
        let long = "é".repeat(200); // 400 bytes, two per character
        let m = Message::error(3, ErrorCode::HandshakeFailed, &long);
        let Message::Error { reason, .. } = &m else {
            unreachable!()
        };
        assert!(
            reason.len() <= MAX_REASON && reason.ends_with('…'),
            "{reason}"
        );
        assert!(long.starts_with(reason.trim_end_matches('…')));
        assert_eq!(Message::decode(&m.encode().unwrap()).unwrap(), m);
        let short = Message::error(3, ErrorCode::HandshakeFailed, "short");
        assert!(matches!(short, Message::Error { ref reason, .. } if reason == "short"));
    }

    #[test]
    fn an_expectation_is_its_request_and_a_time() {
        let Message::Delegation(req) = all()[1].clone() else {
            panic!("all()[1] is a delegation request")
        };
        let request = DelegationRequest {
            delegation_id: 0,
            ..req.clone()
        };
        let expect = Message::Expect {
            in_ms: 0x0102_0304,
            request,
        }
        .encode()
        .unwrap();
        let delegation = Message::Delegation(DelegationRequest {
            delegation_id: 0,
            ..req
        })
        .encode()
        .unwrap();
        assert_eq!(expect.len(), delegation.len() + 4);
        assert_eq!(&expect[..6], &[MESSAGE_VERSION, T_EXPECT, 1, 2, 3, 4]);
        assert_eq!(&expect[6..], &delegation[2..]);
        // Its request is checked as a delegation's is: an empty server is named.
        let mut bad = expect.to_vec();
        let at = 6 + 8 + 1 + 2;
        bad[at] = 0;
        bad.truncate(at + 1);
        let e = Message::decode(&bad).unwrap_err().to_string();
        assert!(e.contains("server"), "{e}");
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            Message::decode(&[2, 0x10]),
            Err(WireError::Version {
                what: "message",
                version: 2
            })
        );
        assert_eq!(
            Message::decode(&[1, 0x77]),
            Err(WireError::UnknownType {
                what: "message",
                kind: 0x77
            })
        );
        let mut d = all()[1].encode().unwrap().to_vec();
        d[10] = 9; // transport
        assert!(matches!(
            Message::decode(&d),
            Err(WireError::Field {
                field: "transport",
                ..
            })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small deterministic generator is enough to walk odd inputs.
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 80) as usize;
            let mut buf = vec![1u8, 0x10 + (x % 6) as u8];
            for i in 0..len {
                buf.push((x >> (i % 56)) as u8);
            }
            let _ = Message::decode(&buf);
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::channel::{Channel, PairingKey, Role, parse_hello, parse_hello_reply};
    use proptest::prelude::*;

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            Just(Message::Ready),
            (
                any::<u64>(),
                any::<bool>(),
                any::<u16>(),
                "[a-z0-9.:]{1,40}",
                "[a-z0-9.]{0,40}",
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..4)
            )
                .prop_map(|(id, dtls, suite, server, name, certs)| {
                    Message::Delegation(DelegationRequest {
                        delegation_id: id,
                        transport: if dtls {
                            Transport::Dtls
                        } else {
                            Transport::Tls
                        },
                        suite,
                        server,
                        server_name: name,
                        cert_chain: certs,
                    })
                }),
            (
                any::<u64>(),
                any::<u16>(),
                proptest::collection::vec(any::<u8>(), 0..255)
            )
                .prop_map(|(delegation_id, scheme, digest)| Message::SignRequest {
                    delegation_id,
                    scheme,
                    digest
                }),
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..255)).prop_map(
                |(delegation_id, signature)| Message::Signature {
                    delegation_id,
                    signature
                }
            ),
            (
                any::<u64>(),
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 1..=32),
                any::<[u8; 48]>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..1500),
                any::<u32>(),
            )
                .prop_map(|(id, dtls, session_id, ms, lifetime, ticket, hint)| {
                    Message::Context {
                        delegation_id: id,
                        context: crate::session::SessionContext {
                            version: if dtls {
                                crate::session::DTLS1_2
                            } else {
                                crate::session::TLS1_2
                            },
                            suite: 0xC0AE,
                            session_id,
                            master_secret: Box::new(ms),
                            extended_master_secret: true,
                            lifetime_secs: lifetime,
                            // An empty ticket travels as type 0x14, without the hint.
                            ticket_lifetime_hint: if ticket.is_empty() { 0 } else { hint },
                            ticket,
                            ticket_age_add: 0,
                            max_early_data: 0,
                        },
                    }
                }),
            (
                any::<u64>(),
                any::<[u8; 32]>(),
                proptest::collection::vec(any::<u8>(), 1..1500),
                any::<(u32, u32, u32, u32)>(),
            )
                .prop_map(|(id, psk, ticket, (lifetime, hint, age_add, early))| {
                    let mut master_secret = Box::new([0u8; 48]);
                    master_secret[..32].copy_from_slice(&psk);
                    Message::Context {
                        delegation_id: id,
                        context: crate::session::SessionContext {
                            version: TLS1_3,
                            suite: 0x1301,
                            session_id: vec![],
                            master_secret,
                            extended_master_secret: false,
                            lifetime_secs: lifetime,
                            ticket,
                            ticket_lifetime_hint: hint,
                            ticket_age_add: age_add,
                            max_early_data: early,
                        },
                    }
                }),
            (any::<u64>(), any::<u16>(), "[ -~]{0,200}").prop_map(|(id, code, reason)| {
                Message::Error {
                    delegation_id: id,
                    code: ErrorCode::from_u16(code),
                    reason,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Message::decode(&bytes);
            let _ = parse_hello(&bytes);
            let _ = parse_hello_reply(&bytes);
            let key = PairingKey::from_bytes([9; 32]).unwrap();
            let mut ch = Channel::new(Role::Device, &key, "d", &[1; 32], &[2; 32]);
            prop_assert!(ch.opener.open(&bytes).is_err());
        }

        #[test]
        fn messages_round_trip_through_the_channel(m in message()) {
            let key = PairingKey::from_bytes([9; 32]).unwrap();
            let mut d = Channel::new(Role::Device, &key, "dev", &[1; 32], &[2; 32]);
            let mut a = Channel::new(Role::Agent, &key, "dev", &[1; 32], &[2; 32]);
            let frame = d.sealer.seal(&m).unwrap();
            let got = a.opener.open(&frame).unwrap();
            // Codes outside the known set decode as Other; compare what is defined.
            match (&m, &got) {
                (Message::Error { code, .. }, Message::Error { code: c2, .. }) => {
                    prop_assert_eq!(*code, *c2)
                }
                _ => prop_assert_eq!(&got, &m),
            }
        }
    }
}
