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
//!
//! TLS 1.3 (RFC 8446 §4.6.1): the context is the server's NewSessionTicket as OpenSSL's client
//! keeps it — the ticket, its lifetime, `ticket_age_add`, `max_early_data` — and the resumption
//! PSK OpenSSL derived from the resumption master secret and the ticket's nonce (it stores it
//! as the session's master key). No session ID: TLS 1.3 resumes by the ticket alone.

use openssl::ssl::{SslRef, SslSession, SslVersion};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::ContextError;
use crate::openssl_ext;

/// DTLS 1.2 on the wire.
pub const DTLS1_2: u16 = 0xFEFD;
/// TLS 1.2 on the wire.
pub const TLS1_2: u16 = 0x0303;
/// TLS 1.3 on the wire.
pub const TLS1_3: u16 = 0x0304;
/// Length of a TLS 1.2 master secret.
pub const MASTER_SECRET_LEN: usize = 48;
/// Length of a TLS 1.3 resumption PSK of the SHA-256 suites (the only ones delegated).
pub const PSK_LEN: usize = 32;
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

    /// The TLS 1.3 suite with the same AEAD (TLS 1.3 suites name no key exchange):
    /// TLS_AES_128_CCM_8_SHA256 (0x1305) or TLS_AES_128_GCM_SHA256 (0x1301).
    pub fn tls13_id(self) -> u16 {
        match self {
            Suite::EcdheEcdsaAes128Ccm8 => 0x1305,
            Suite::EcdheEcdsaAes128GcmSha256 => 0x1301,
        }
    }

    /// OpenSSL's name of [`Suite::tls13_id`] (for `set_ciphersuites`).
    pub fn tls13_name(self) -> &'static str {
        match self {
            Suite::EcdheEcdsaAes128Ccm8 => "TLS_AES_128_CCM_8_SHA256",
            Suite::EcdheEcdsaAes128GcmSha256 => "TLS_AES_128_GCM_SHA256",
        }
    }

    /// The code point of this suite in protocol `version`.
    pub fn id_for(self, version: u16) -> u16 {
        if version == TLS1_3 {
            self.tls13_id()
        } else {
            self.id()
        }
    }

    /// From the code point of a context of protocol `version`.
    pub fn from_id_for(version: u16, id: u16) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.id_for(version) == id)
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
    /// Protocol version on the wire: [`DTLS1_2`], [`TLS1_2`] or [`TLS1_3`].
    pub version: u16,
    /// IANA cipher suite.
    pub suite: u16,
    /// Session ID the server assigned (1..=32 bytes); empty in TLS 1.3.
    pub session_id: Vec<u8>,
    /// The 48-byte master secret (TLS 1.2), or the 32-byte resumption PSK in the first
    /// [`PSK_LEN`] bytes, the rest zero (TLS 1.3); boxed so that moving the context never
    /// copies it. [`SessionContext::secret`] is the part in use.
    pub master_secret: Box<[u8; MASTER_SECRET_LEN]>,
    /// Whether the handshake used the extended master secret (RFC 7627).
    pub extended_master_secret: bool,
    /// Seconds the device may resume this session for.
    pub lifetime_secs: u32,
    /// The server's session ticket (RFC 5077), empty when it issued none (then the device
    /// resumes by session ID). Opaque to the device: the server encrypted it for itself.
    pub ticket: Vec<u8>,
    /// The server's lifetime hint for the ticket, in seconds (0: none given); in TLS 1.3 the
    /// ticket's lifetime.
    pub ticket_lifetime_hint: u32,
    /// TLS 1.3: the ticket's `ticket_age_add`, which obfuscates the age the device reports.
    pub ticket_age_add: u32,
    /// TLS 1.3: the most early data (0-RTT) the ticket allows; 0 = none.
    pub max_early_data: u32,
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
            .field("max_early_data", &self.max_early_data)
            .finish_non_exhaustive()
    }
}

impl SessionContext {
    /// Exports the context of a finished client handshake. With a ticket whose lifetime hint
    /// is shorter than `lifetime_secs`, the context lives as long as the hint says. In TLS 1.3
    /// the session must hold the server's NewSessionTicket ([`crate::tls::await_ticket`]).
    pub fn from_ssl(ssl: &SslRef, lifetime_secs: u32) -> Result<SessionContext, ContextError> {
        let session = ssl.session().ok_or(ContextError::NoSession)?;
        let version = match session.protocol_version() {
            v if v == SslVersion::DTLS1_2 => DTLS1_2,
            v if v == SslVersion::TLS1_2 => TLS1_2,
            v if v == SslVersion::TLS1_3 => TLS1_3,
            _ => return Err(ContextError::Version(0)),
        };
        let cipher = ssl.current_cipher().ok_or(ContextError::NoSession)?;
        let suite = u16::from_be_bytes(cipher.protocol_id());
        let want = if version == TLS1_3 {
            PSK_LEN
        } else {
            MASTER_SECRET_LEN
        };
        let mut master_secret = Box::new([0u8; MASTER_SECRET_LEN]);
        if session.master_key_len() != want || session.master_key(&mut master_secret[..]) != want {
            master_secret.zeroize();
            return Err(ContextError::MasterSecretLength(session.master_key_len()));
        }
        let (ticket, hint) = openssl_ext::session_ticket(session).unwrap_or_default();
        let ticket_lifetime_hint = u32::try_from(hint).unwrap_or(u32::MAX);
        let lifetime_secs = match ticket_lifetime_hint {
            0 => lifetime_secs,
            hint => lifetime_secs.min(hint),
        };
        let mut ctx = SessionContext {
            version,
            suite,
            session_id: session.id().to_vec(),
            master_secret,
            extended_master_secret: openssl_ext::extended_master_secret(ssl).unwrap_or(false),
            lifetime_secs,
            ticket,
            ticket_lifetime_hint,
            ticket_age_add: 0,
            max_early_data: 0,
        };
        if version == TLS1_3 {
            if ctx.ticket.is_empty() {
                return Err(ContextError::NoTicket);
            }
            // OpenSSL 3.0 has no getter for ticket_age_add: read it from its own encoding of
            // the session (field [14]; the encoding holds the PSK, so it is wiped).
            let der = Zeroizing::new(session.to_der().map_err(ContextError::Import)?);
            ctx.ticket_age_add = explicit_uint(&der, 14)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0);
            ctx.max_early_data = session.max_early_data();
            ctx.session_id.clear();
            ctx.extended_master_secret = false;
        }
        ctx.validate()?;
        Ok(ctx)
    }

    /// The secret in use: the master secret (TLS 1.2) or the resumption PSK (TLS 1.3).
    pub fn secret(&self) -> &[u8] {
        if self.version == TLS1_3 {
            &self.master_secret[..PSK_LEN]
        } else {
            &self.master_secret[..]
        }
    }

    /// Checks every field against what D2TLS delegates.
    pub fn validate(&self) -> Result<(), ContextError> {
        if self.version == TLS1_3 {
            return self.validate_tls13();
        }
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

    /// TLS 1.3: a SHA-256 suite, a 32-byte PSK, a ticket, no session ID and no EMS flag (both
    /// TLS 1.2 notions).
    fn validate_tls13(&self) -> Result<(), ContextError> {
        if Suite::from_id_for(TLS1_3, self.suite).is_none() {
            return Err(ContextError::Suite(self.suite));
        }
        if !self.session_id.is_empty() {
            return Err(ContextError::Tls13Field("a session ID"));
        }
        if self.extended_master_secret {
            return Err(ContextError::Tls13Field("the extended-master-secret flag"));
        }
        let (psk, rest) = self.master_secret.split_at(PSK_LEN);
        if psk.iter().all(|b| *b == 0) {
            return Err(ContextError::MasterSecretZero);
        }
        if rest.iter().any(|b| *b != 0) {
            return Err(ContextError::Tls13Field("a secret longer than 32 bytes"));
        }
        if self.ticket.is_empty() {
            return Err(ContextError::NoTicket);
        }
        if self.ticket.len() > MAX_TICKET {
            return Err(ContextError::TicketLength(self.ticket.len()));
        }
        if self.lifetime_secs == 0 {
            return Err(ContextError::Lifetime);
        }
        Ok(())
    }

    /// The minimal `SSL_SESSION` DER OpenSSL imports (`time` is the Unix time of creation;
    /// `hostname`, TLS 1.3 only, the SNI the device sends, which OpenSSL checks before it
    /// sends early data).
    pub fn to_der(&self, time: u64, hostname: Option<&str>) -> Zeroizing<Vec<u8>> {
        let tls13 = self.version == TLS1_3;
        let mut body = Zeroizing::new(Vec::with_capacity(160 + self.ticket.len()));
        der_uint(&mut body, 1); // SSL_SESSION_ASN1_VERSION
        der_uint(&mut body, u64::from(self.version));
        der_octets(&mut body, &self.suite.to_be_bytes());
        der_octets(&mut body, &self.session_id);
        der_octets(&mut body, self.secret());
        der_explicit_uint(&mut body, 1, time);
        der_explicit_uint(&mut body, 2, u64::from(self.lifetime_secs));
        if let Some(host) = hostname.filter(|_| tls13) {
            let mut inner = Vec::with_capacity(host.len() + 4);
            der_octets(&mut inner, host.as_bytes());
            out_explicit(&mut body, 6, &inner);
        }
        if !self.ticket.is_empty() {
            der_explicit_uint(&mut body, 9, u64::from(self.ticket_lifetime_hint));
            let mut tick = Vec::with_capacity(self.ticket.len() + 4);
            der_octets(&mut tick, &self.ticket);
            out_explicit(&mut body, 10, &tick);
        }
        if self.extended_master_secret {
            der_explicit_uint(&mut body, 13, SSL_SESS_FLAG_EXTMS);
        }
        // Zero is the default of both (OpenSSL leaves them out then).
        if tls13 && self.ticket_age_add != 0 {
            der_explicit_uint(&mut body, 14, u64::from(self.ticket_age_add));
        }
        if tls13 && self.max_early_data != 0 {
            der_explicit_uint(&mut body, 15, u64::from(self.max_early_data));
        }
        let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 4));
        out.push(0x30);
        der_len(&mut out, body.len());
        out.extend_from_slice(&body);
        out
    }

    /// An OpenSSL session ready for `SSL_set_session`, made now.
    pub fn to_ssl_session(&self) -> Result<SslSession, ContextError> {
        self.to_ssl_session_aged(0, None)
    }

    /// An OpenSSL session ready for `SSL_set_session`, received `age_secs` ago: TLS 1.3
    /// reports a ticket's age to the server (the session's time is when the ticket came).
    pub fn to_ssl_session_aged(
        &self,
        age_secs: u64,
        hostname: Option<&str>,
    ) -> Result<SslSession, ContextError> {
        self.validate()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1);
        let time = now.saturating_sub(age_secs).max(1);
        SslSession::from_der(&self.to_der(time, hostname)).map_err(ContextError::Import)
    }
}

/// The value of `[tag] EXPLICIT INTEGER` among the fields of a DER `SEQUENCE` (the agent reads
/// what OpenSSL 3.0 has no getter for from OpenSSL's own session encoding). `None` if absent
/// or malformed.
fn explicit_uint(der: &[u8], tag: u8) -> Option<u64> {
    let (t, body, _) = der_tlv(der)?;
    if t != 0x30 {
        return None;
    }
    let mut rest = body;
    while !rest.is_empty() {
        let (t, value, next) = der_tlv(rest)?;
        if t == 0xA0 | tag {
            let (it, int, _) = der_tlv(value)?;
            if it != 0x02 || int.is_empty() || int.len() > 9 {
                return None;
            }
            return int.iter().try_fold(0u64, |acc, b| {
                acc.checked_mul(256).map(|a| a | u64::from(*b))
            });
        }
        rest = next;
    }
    None
}

/// One DER TLV: (tag, value, what follows). Short tags only; lengths up to 4 bytes.
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let (len, rest) = b.split_at(n);
        b = rest;
        len.iter().fold(0usize, |a, x| (a << 8) | usize::from(*x))
    };
    if b.len() < len {
        return None;
    }
    let (value, rest) = b.split_at(len);
    Some((tag, value, rest))
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
            ticket_age_add: 0,
            max_early_data: 0,
        }
    }

    #[test]
    fn a_ticket_travels_in_fields_9_and_10() {
        let mut ctx = sample();
        ctx.ticket = (0..=255u8).cycle().take(700).collect();
        ctx.ticket_lifetime_hint = 7200;
        let der = ctx.to_der(0x6000_0000, None);
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

    fn tls13() -> SessionContext {
        let mut master_secret = Box::new([0u8; 48]);
        master_secret[..PSK_LEN].fill(9);
        SessionContext {
            version: TLS1_3,
            suite: 0x1301,
            session_id: vec![],
            master_secret,
            extended_master_secret: false,
            lifetime_secs: 7200,
            ticket: vec![0x5A; 300],
            ticket_lifetime_hint: 7200,
            ticket_age_add: 0x0102_0304,
            max_early_data: 16384,
        }
    }

    #[test]
    fn a_tls13_context_imports_with_its_psk_and_ticket() {
        let ctx = tls13();
        let der = ctx.to_der(0x6000_0000, Some("cloud.example"));
        // The 32-byte PSK, not 48 bytes; SNI in [6]; age_add in [14]; max_early_data in [15].
        assert!(
            der.windows(34)
                .any(|w| w[..2] == [0x04, 32] && w[2..] == [9; 32])
        );
        let sni = [&[0xA6, 15, 0x04, 13][..], b"cloud.example"].concat();
        assert!(der.windows(sni.len()).any(|w| w == sni));
        let age_add = [0xAE, 0x06, 0x02, 0x04, 0x01, 0x02, 0x03, 0x04];
        assert!(der.windows(8).any(|w| w == age_add));
        assert_eq!(explicit_uint(&der, 14), Some(0x0102_0304));
        assert_eq!(explicit_uint(&der, 15), Some(16384));
        // No EMS flag in TLS 1.3.
        assert_eq!(explicit_uint(&der, 13), None);
        let session = ctx.to_ssl_session_aged(5, Some("cloud.example")).unwrap();
        assert_eq!(session.protocol_version(), SslVersion::TLS1_3);
        assert_eq!(session.max_early_data(), 16384);
        let mut psk = [0u8; 48];
        assert_eq!(session.master_key(&mut psk), 32);
        assert_eq!(psk[..32], [9; 32]);
        let (ticket, hint) = openssl_ext::session_ticket(&session).expect("ticket");
        assert_eq!((ticket, hint), (ctx.ticket.clone(), 7200));
        // OpenSSL's own encoding of it keeps age_add (how the agent reads it).
        assert_eq!(
            explicit_uint(&session.to_der().unwrap(), 14),
            Some(0x0102_0304)
        );
    }

    #[test]
    fn bad_tls13_contexts_are_named() {
        type Tweak = fn(&mut SessionContext);
        let cases: [(Tweak, &str); 6] = [
            (|c| c.suite = 0xC02B, "cipher suite"),
            (|c| c.session_id = vec![1; 32], "session ID"),
            (
                |c| c.extended_master_secret = true,
                "extended-master-secret",
            ),
            (|c| c.master_secret[40] = 1, "longer than 32"),
            (|c| c.master_secret[..32].fill(0), "all zero"),
            (|c| c.ticket.clear(), "without a ticket"),
        ];
        for (tweak, want) in cases {
            let mut c = tls13();
            tweak(&mut c);
            let e = c.validate().expect_err(want).to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        assert!(tls13().validate().is_ok());
    }

    #[test]
    fn der_fields_are_found_and_bad_der_is_none() {
        assert_eq!(explicit_uint(&[], 14), None);
        assert_eq!(explicit_uint(&[0x30, 0x05, 0xAE, 0x03, 0x02], 14), None);
        assert_eq!(
            explicit_uint(&[0x30, 0x05, 0xAE, 0x03, 0x02, 0x01, 0x07], 14),
            Some(7)
        );
        assert_eq!(explicit_uint(&[0x31, 0x00], 14), None);
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
        let der = ctx.to_der(0x6000_0000, None);
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
        c.version = 0x0302;
        assert!(matches!(c.validate(), Err(ContextError::Version(0x0302))));
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
