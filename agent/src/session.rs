//! The session context the agent hands to the device, and its conversion to and from OpenSSL.
//!
//! The device imports a context with `SslSession::from_der` of a minimal `SSL_SESSION` DER
//! (OpenSSL's `SSL_SESSION_ASN1`): version, protocol, suite, session ID, master key, time,
//! timeout, the session ticket and its lifetime hint when the server issued one (RFC 5077),
//! and flags. Field [13] (flags) must carry the extended-master-secret bit when the full
//! handshake used EMS, or the server refuses the resumption with handshake_failure.
//!
//! With a ticket, the session ID is the one OpenSSL's client gives a ticket session: the
//! SHA-256 of the ticket (the server echoes it in its ServerHello when it accepts the ticket,
//! which is how the client knows). A server that keeps no session cache resumes only so.

use openssl::ssl::{SslRef, SslSession, SslVersion};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::ContextError;
use crate::openssl_ext;

/// DTLS 1.2 on the wire.
pub const DTLS1_2: u16 = 0xFEFD;
/// TLS 1.2 on the wire.
pub const TLS1_2: u16 = 0x0303;
/// Length of a TLS 1.2 master secret.
pub const MASTER_SECRET_LEN: usize = 48;
const SSL_SESS_FLAG_EXTMS: u64 = 0x1;
/// Longest session ticket (RFC 5077: `opaque ticket<0..2^16-1>`).
pub const MAX_TICKET: usize = 0xFFFF;

/// A cipher suite we delegate: ECDHE-ECDSA with AES-128 in CCM-8 or GCM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (0xC0AE)
    EcdheEcdsaAes128Ccm8,
    /// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (0xC02B)
    EcdheEcdsaAes128GcmSha256,
}

impl Suite {
    /// Every suite, in the agent's order of preference.
    pub const ALL: [Suite; 2] = [
        Suite::EcdheEcdsaAes128Ccm8,
        Suite::EcdheEcdsaAes128GcmSha256,
    ];

    /// IANA code point.
    pub fn id(self) -> u16 {
        match self {
            Suite::EcdheEcdsaAes128Ccm8 => 0xC0AE,
            Suite::EcdheEcdsaAes128GcmSha256 => 0xC02B,
        }
    }

    /// From an IANA code point.
    pub fn from_id(id: u16) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.id() == id)
    }

    /// OpenSSL's name (for cipher lists).
    pub fn openssl_name(self) -> &'static str {
        match self {
            Suite::EcdheEcdsaAes128Ccm8 => "ECDHE-ECDSA-AES128-CCM8",
            Suite::EcdheEcdsaAes128GcmSha256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        }
    }

    /// From a config/CLI name: OpenSSL's name or a short form (`ccm8`, `gcm`).
    pub fn parse(name: &str) -> Option<Suite> {
        match name.to_ascii_lowercase().as_str() {
            "ccm8" | "ecdhe-ecdsa-aes128-ccm8" => Some(Suite::EcdheEcdsaAes128Ccm8),
            "gcm" | "ecdhe-ecdsa-aes128-gcm-sha256" => Some(Suite::EcdheEcdsaAes128GcmSha256),
            _ => None,
        }
    }
}

/// What the device needs to resume: nothing more (no keys of the handshake, no transcript).
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SessionContext {
    /// Protocol version on the wire: [`DTLS1_2`] or [`TLS1_2`].
    pub version: u16,
    /// IANA cipher suite.
    pub suite: u16,
    /// Session ID the server assigned (1..=32 bytes).
    pub session_id: Vec<u8>,
    /// The 48-byte master secret, boxed so that moving the context never copies it.
    pub master_secret: Box<[u8; MASTER_SECRET_LEN]>,
    /// Whether the handshake used the extended master secret (RFC 7627).
    pub extended_master_secret: bool,
    /// Seconds the device may resume this session for.
    pub lifetime_secs: u32,
    /// The server's session ticket (RFC 5077), empty when it issued none (then the device
    /// resumes by session ID). Opaque to the device: the server encrypted it for itself.
    pub ticket: Vec<u8>,
    /// The server's lifetime hint for the ticket, in seconds (0: none given).
    pub ticket_lifetime_hint: u32,
}

impl std::fmt::Debug for SessionContext {
    // The master secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionContext")
            .field("version", &format_args!("{:#06x}", self.version))
            .field("suite", &format_args!("{:#06x}", self.suite))
            .field("session_id", &hex::encode(&self.session_id))
            .field("extended_master_secret", &self.extended_master_secret)
            .field("lifetime_secs", &self.lifetime_secs)
            .field("ticket_len", &self.ticket.len())
            .field("ticket_lifetime_hint", &self.ticket_lifetime_hint)
            .finish_non_exhaustive()
    }
}

impl SessionContext {
    /// Exports the context of a finished client handshake. With a ticket whose lifetime hint
    /// is shorter than `lifetime_secs`, the context lives as long as the hint says.
    pub fn from_ssl(ssl: &SslRef, lifetime_secs: u32) -> Result<SessionContext, ContextError> {
        let session = ssl.session().ok_or(ContextError::NoSession)?;
        let version = match session.protocol_version() {
            v if v == SslVersion::DTLS1_2 => DTLS1_2,
            v if v == SslVersion::TLS1_2 => TLS1_2,
            _ => return Err(ContextError::Version(0)),
        };
        let cipher = ssl.current_cipher().ok_or(ContextError::NoSession)?;
        let suite = u16::from_be_bytes(cipher.protocol_id());
        let mut master_secret = Box::new([0u8; MASTER_SECRET_LEN]);
        if session.master_key_len() != MASTER_SECRET_LEN
            || session.master_key(&mut master_secret[..]) != MASTER_SECRET_LEN
        {
            master_secret.zeroize();
            return Err(ContextError::MasterSecretLength(session.master_key_len()));
        }
        let (ticket, hint) = openssl_ext::session_ticket(session).unwrap_or_default();
        let ticket_lifetime_hint = u32::try_from(hint).unwrap_or(u32::MAX);
        let lifetime_secs = match ticket_lifetime_hint {
            0 => lifetime_secs,
            hint => lifetime_secs.min(hint),
        };
        let ctx = SessionContext {
            version,
            suite,
            session_id: session.id().to_vec(),
            master_secret,
            extended_master_secret: openssl_ext::extended_master_secret(ssl).unwrap_or(false),
            lifetime_secs,
            ticket,
            ticket_lifetime_hint,
        };
        ctx.validate()?;
        Ok(ctx)
    }

    /// Checks every field against what D2TLS delegates.
    pub fn validate(&self) -> Result<(), ContextError> {
        if self.version != DTLS1_2 && self.version != TLS1_2 {
            return Err(ContextError::Version(self.version));
        }
        if Suite::from_id(self.suite).is_none() {
            return Err(ContextError::Suite(self.suite));
        }
        if self.session_id.is_empty() || self.session_id.len() > 32 {
            return Err(ContextError::SessionIdLength(self.session_id.len()));
        }
        if self.master_secret.iter().all(|b| *b == 0) {
            return Err(ContextError::MasterSecretZero);
        }
        // Without EMS a resumed session is open to the triple-handshake attack (RFC 7627).
        if !self.extended_master_secret {
            return Err(ContextError::NoExtendedMasterSecret);
        }
        if self.lifetime_secs == 0 {
            return Err(ContextError::Lifetime);
        }
        if self.ticket.len() > MAX_TICKET {
            return Err(ContextError::TicketLength(self.ticket.len()));
        }
        Ok(())
    }

    /// The minimal `SSL_SESSION` DER OpenSSL imports (`time` is the Unix time of creation).
    pub fn to_der(&self, time: u64) -> Zeroizing<Vec<u8>> {
        let mut body = Zeroizing::new(Vec::with_capacity(160 + self.ticket.len()));
        der_uint(&mut body, 1); // SSL_SESSION_ASN1_VERSION
        der_uint(&mut body, u64::from(self.version));
        der_octets(&mut body, &self.suite.to_be_bytes());
        der_octets(&mut body, &self.session_id);
        der_octets(&mut body, &self.master_secret[..]);
        der_explicit_uint(&mut body, 1, time);
        der_explicit_uint(&mut body, 2, u64::from(self.lifetime_secs));
        if !self.ticket.is_empty() {
            der_explicit_uint(&mut body, 9, u64::from(self.ticket_lifetime_hint));
            let mut tick = Vec::with_capacity(self.ticket.len() + 4);
            der_octets(&mut tick, &self.ticket);
            out_explicit(&mut body, 10, &tick);
        }
        if self.extended_master_secret {
            der_explicit_uint(&mut body, 13, SSL_SESS_FLAG_EXTMS);
        }
        let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 4));
        out.push(0x30);
        der_len(&mut out, body.len());
        out.extend_from_slice(&body);
        out
    }

    /// An OpenSSL session ready for `SSL_set_session`.
    pub fn to_ssl_session(&self) -> Result<SslSession, ContextError> {
        self.validate()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1);
        SslSession::from_der(&self.to_der(now)).map_err(ContextError::Import)
    }
}

/// A DER length: short form below 128, else the long form in as few bytes as it takes.
fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    out.push(0x80 | (bytes.len() - first) as u8);
    out.extend_from_slice(&bytes[first..]);
}

fn der_uint(out: &mut Vec<u8>, v: u64) {
    let bytes = v.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(7);
    let mut content = bytes[first..].to_vec();
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    out.push(0x02);
    der_len(out, content.len());
    out.extend_from_slice(&content);
}

fn der_octets(out: &mut Vec<u8>, v: &[u8]) {
    out.push(0x04);
    der_len(out, v.len());
    out.extend_from_slice(v);
}

fn der_explicit_uint(out: &mut Vec<u8>, tag: u8, v: u64) {
    let mut inner = Vec::with_capacity(10);
    der_uint(&mut inner, v);
    out_explicit(out, tag, &inner);
}

/// `[tag] EXPLICIT` around the encoded `inner` (context-specific, constructed).
fn out_explicit(out: &mut Vec<u8>, tag: u8, inner: &[u8]) {
    out.push(0xA0 | tag);
    der_len(out, inner.len());
    out.extend_from_slice(inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SessionContext {
        SessionContext {
            version: DTLS1_2,
            suite: 0xC0AE,
            session_id: (1..=32).collect(),
            master_secret: Box::new([7u8; 48]),
            extended_master_secret: true,
            lifetime_secs: 300,
            ticket: vec![],
            ticket_lifetime_hint: 0,
        }
    }

    #[test]
    fn a_ticket_travels_in_fields_9_and_10() {
        let mut ctx = sample();
        ctx.ticket = (0..=255u8).cycle().take(700).collect();
        ctx.ticket_lifetime_hint = 7200;
        let der = ctx.to_der(0x6000_0000);
        // [9] { INTEGER 7200 } then [10] { OCTET STRING (700) } then [13].
        let hint = [0xA9, 0x04, 0x02, 0x02, 0x1C, 0x20];
        let at = der.windows(6).position(|w| w == hint).expect("field 9");
        assert_eq!(
            &der[at + 6..at + 14],
            &[0xAA, 0x82, 0x02, 0xC0, 0x04, 0x82, 0x02, 0xBC]
        );
        assert_eq!(&der[at + 14..at + 714], &ctx.ticket[..]);
        assert_eq!(&der[at + 714..at + 719], &[0xAD, 0x03, 0x02, 0x01, 0x01]);
        assert_eq!(&der[..2], &[0x30, 0x82]);
        assert_eq!(
            usize::from(u16::from_be_bytes([der[2], der[3]])),
            der.len() - 4
        );
        // OpenSSL reads it back as a ticket session.
        let session = ctx.to_ssl_session().unwrap();
        let (ticket, hint) = openssl_ext::session_ticket(&session).expect("ticket");
        assert_eq!((ticket, hint), (ctx.ticket.clone(), 7200));
        assert_eq!(session.id(), &ctx.session_id[..]);
        // A ticket longer than RFC 5077 allows is refused, not cut.
        ctx.ticket = vec![1; MAX_TICKET + 1];
        assert!(matches!(
            ctx.validate(),
            Err(ContextError::TicketLength(65536))
        ));
    }

    #[test]
    fn der_lengths_take_as_many_bytes_as_needed() {
        for (len, want) in [
            (5usize, vec![5u8]),
            (0x80, vec![0x81, 0x80]),
            (0x1234, vec![0x82, 0x12, 0x34]),
            (0x01_0000, vec![0x83, 1, 0, 0]),
        ] {
            let mut out = vec![];
            der_len(&mut out, len);
            assert_eq!(out, want, "{len}");
        }
    }

    #[test]
    fn der_imports_into_openssl_with_every_field() {
        let ctx = sample();
        let session = ctx.to_ssl_session().unwrap();
        assert_eq!(session.id(), &ctx.session_id[..]);
        let mut mk = [0u8; 48];
        assert_eq!(session.master_key(&mut mk), 48);
        assert_eq!(mk, *ctx.master_secret);
        assert_eq!(session.protocol_version(), SslVersion::DTLS1_2);
        assert_eq!(session.timeout(), 300);
        // OpenSSL re-encodes field [13] = 1 (EMS flag): our DER survives a round trip.
        let again = session.to_der().unwrap();
        assert!(
            again
                .windows(5)
                .any(|w| w == [0xAD, 0x03, 0x02, 0x01, 0x01])
        );
    }

    #[test]
    fn der_is_byte_exact() {
        let mut ctx = sample();
        ctx.version = TLS1_2;
        ctx.suite = 0xC02B;
        ctx.session_id = vec![0xAA; 2];
        ctx.lifetime_secs = 7200;
        let der = ctx.to_der(0x6000_0000);
        let mut want = vec![0x30, 0x54, 0x02, 0x01, 0x01, 0x02, 0x02, 0x03, 0x03];
        want.extend_from_slice(&[0x04, 0x02, 0xC0, 0x2B, 0x04, 0x02, 0xAA, 0xAA, 0x04, 0x30]);
        want.extend_from_slice(&[7u8; 48]);
        want.extend_from_slice(&[0xA1, 0x06, 0x02, 0x04, 0x60, 0x00, 0x00, 0x00]);
        want.extend_from_slice(&[0xA2, 0x04, 0x02, 0x02, 0x1C, 0x20]);
        want.extend_from_slice(&[0xAD, 0x03, 0x02, 0x01, 0x01]);
        assert_eq!(want[1] as usize, want.len() - 2);
        assert_eq!(&der[..], &want[..]);
    }

    #[test]
    fn bad_contexts_are_named() {
        let mut c = sample();
        c.version = 0x0304;
        assert!(matches!(c.validate(), Err(ContextError::Version(0x0304))));
        let mut c = sample();
        c.suite = 0x1301;
        assert!(matches!(c.validate(), Err(ContextError::Suite(0x1301))));
        let mut c = sample();
        c.session_id = vec![];
        assert!(matches!(
            c.validate(),
            Err(ContextError::SessionIdLength(0))
        ));
        let mut c = sample();
        c.session_id = vec![1; 33];
        assert!(matches!(
            c.validate(),
            Err(ContextError::SessionIdLength(33))
        ));
        let mut c = sample();
        *c.master_secret = [0; 48];
        assert!(matches!(c.validate(), Err(ContextError::MasterSecretZero)));
        let mut c = sample();
        c.extended_master_secret = false;
        assert!(matches!(
            c.validate(),
            Err(ContextError::NoExtendedMasterSecret)
        ));
    }

    #[test]
    fn debug_hides_the_master_secret() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("master_secret: ["));
        assert!(!text.contains("7, 7"));
    }

    #[test]
    fn suite_names() {
        for s in Suite::ALL {
            assert_eq!(Suite::from_id(s.id()), Some(s));
            assert_eq!(Suite::parse(s.openssl_name()), Some(s));
        }
        assert_eq!(Suite::parse("gcm"), Some(Suite::EcdheEcdsaAes128GcmSha256));
        assert_eq!(Suite::parse("rc4"), None);
    }
}
