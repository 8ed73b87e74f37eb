//! The TPKEY record: one certificateless public key of one (name, IP), pre-signed by the
//! issuing key server. Wire and presentation codecs, RFC 3597 generic form, signing and
//! verification. The byte layout is documented in `docs/records.md`.

use std::fmt;
use std::net::IpAddr;

use crate::clpkc::{self, CompressedPoint, EntityKey, Identity, KgcParams, PublicKey};
use crate::time;

/// RR type code of TPKEY (private-use range; 65305 is avoided because hickory maps it to ANAME).
pub const TPKEY: u16 = 65300;
/// Mnemonic used in zone files and in our decoded views.
pub const TPKEY_MNEMONIC: &str = "TPKEY";
/// Version of the RDATA layout.
pub const RDATA_VERSION: u8 = 1;
/// Flag bit: the record is a key server's (it carries the port and P_pub).
pub const FLAG_KEY_SERVER: u8 = 0x01;

const POINT_LEN: usize = 33;
const DIGEST_LEN: usize = 32;
const SIG_LEN: usize = 64;

/// Why a record could not be decoded, parsed or verified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// RDATA ended before a field was complete.
    #[error("RDATA truncated: {field} needs {need} more bytes")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes missing.
        need: usize,
    },
    /// Bytes left after the signature.
    #[error("RDATA has {0} trailing bytes after the signature")]
    Trailing(usize),
    /// An RDATA version this code does not know.
    #[error("unsupported TPKEY version {0} (this build reads version {RDATA_VERSION})")]
    Version(u8),
    /// Reserved flag bits set.
    #[error("unknown TPKEY flags 0x{0:02x}")]
    Flags(u8),
    /// Address family byte not 4 or 6.
    #[error("bad address family {0} (expected 4 or 6)")]
    Family(u8),
    /// A point that is not on P-256.
    #[error("{0} is not a valid compressed P-256 point")]
    Point(&'static str),
    /// Presentation-format problem.
    #[error("{0}")]
    Syntax(String),
    /// The record carries no signature.
    #[error("record is unsigned")]
    Unsigned,
    /// The signature does not verify under the issuer's key.
    #[error("signature does not verify under the issuing key server's key")]
    BadSignature,
    /// The record was issued under other params than the ones it is checked against.
    #[error("issuer digest {found} does not match the key server's params digest {expected}")]
    WrongIssuer {
        /// Digest in the record.
        found: String,
        /// Digest of the params checked against.
        expected: String,
    },
    /// Validity window does not contain the time of the check, or is empty.
    #[error("outside its validity window {not_before}..{not_after}")]
    Validity {
        /// Start of the window (presentation form).
        not_before: String,
        /// End of the window (presentation form).
        not_after: String,
    },
    /// Name not usable as an identity.
    #[error("bad owner name: {0}")]
    Name(String),
}

/// What a key-server record adds: where the key server listens and its KGC public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyServerInfo {
    /// DNS port of the key server (at the record's IP).
    pub port: u16,
    /// The key server's KGC public key `P_pub`.
    pub p_pub: PublicKey,
}

/// A decoded TPKEY record (owner name and TTL live in the DNS record around it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The address this key is bound to.
    pub ip: IpAddr,
    /// The public part `W` of the partial key, as it travels (decompressed when a key is
    /// derived or a signature checked).
    pub w: CompressedPoint,
    /// SHA-256 of the issuing key server's params.
    pub issuer: [u8; DIGEST_LEN],
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: u32,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: u32,
    /// Present on key-server records (boxed: entity records, the many, stay small).
    pub key_server: Option<Box<KeyServerInfo>>,
    /// The issuing key server's signature, absent until signed.
    pub signature: Option<[u8; SIG_LEN]>,
}

impl KeyRecord {
    /// Flags byte of the wire form.
    pub fn flags(&self) -> u8 {
        if self.key_server.is_some() {
            FLAG_KEY_SERVER
        } else {
            0
        }
    }

    /// The RDATA without the signature: the part the signature covers.
    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 1 + 1 + 16 + POINT_LEN + DIGEST_LEN + 8 + 35);
        out.push(RDATA_VERSION);
        out.push(self.flags());
        match self.ip {
            IpAddr::V4(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.push(6);
                out.extend_from_slice(&a.octets());
            }
        }
        out.extend_from_slice(self.w.as_bytes());
        out.extend_from_slice(&self.issuer);
        out.extend_from_slice(&self.not_before.to_be_bytes());
        out.extend_from_slice(&self.not_after.to_be_bytes());
        if let Some(ks) = &self.key_server {
            out.extend_from_slice(&ks.port.to_be_bytes());
            out.extend_from_slice(&clpkc::point_to_bytes(&ks.p_pub));
        }
        out
    }

    /// Wire form (RDATA). An unsigned record has no wire form: it must be signed first.
    pub fn to_wire(&self) -> Result<Vec<u8>, RecordError> {
        let sig = self.signature.ok_or(RecordError::Unsigned)?;
        let mut out = self.body();
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// Decode RDATA. Every field is checked; nothing here panics on any input.
    pub fn from_wire(rdata: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader { buf: rdata, pos: 0 };
        let version = r.u8("version")?;
        if version != RDATA_VERSION {
            return Err(RecordError::Version(version));
        }
        let flags = r.u8("flags")?;
        if flags & !FLAG_KEY_SERVER != 0 {
            return Err(RecordError::Flags(flags));
        }
        let ip = match r.u8("address family")? {
            4 => IpAddr::from(<[u8; 4]>::try_from(r.take("IPv4 address", 4)?).unwrap_or_default()),
            6 => {
                IpAddr::from(<[u8; 16]>::try_from(r.take("IPv6 address", 16)?).unwrap_or_default())
            }
            f => return Err(RecordError::Family(f)),
        };
        let w = CompressedPoint::from_bytes(r.take("W", POINT_LEN)?)
            .map_err(|_| RecordError::Point("W"))?;
        let mut issuer = [0u8; DIGEST_LEN];
        issuer.copy_from_slice(r.take("issuer digest", DIGEST_LEN)?);
        let not_before = r.u32("not-before")?;
        let not_after = r.u32("not-after")?;
        let key_server = if flags & FLAG_KEY_SERVER != 0 {
            let port = u16::from_be_bytes([r.u8("port")?, r.u8("port")?]);
            let p_pub = clpkc::point_from_bytes(r.take("P_pub", POINT_LEN)?)
                .map_err(|_| RecordError::Point("P_pub"))?;
            Some(KeyServerInfo { port, p_pub })
        } else {
            None
        };
        let mut sig = [0u8; SIG_LEN];
        sig.copy_from_slice(r.take("signature", SIG_LEN)?);
        if r.pos != rdata.len() {
            return Err(RecordError::Trailing(rdata.len() - r.pos));
        }
        Ok(Self {
            ip,
            w,
            issuer,
            not_before,
            not_after,
            key_server: key_server.map(Box::new),
            signature: Some(sig),
        })
    }

    /// The message the issuer signs: the type, the owner name and the unsigned RDATA, so a
    /// signature cannot be moved to another name, type or field value.
    pub fn signed_message(&self, owner: &str) -> Result<Vec<u8>, RecordError> {
        let owner = clpkc::canonical_name(owner).map_err(|e| RecordError::Name(e.to_string()))?;
        let body = self.body();
        let mut msg = Vec::with_capacity(8 + owner.len() + body.len());
        msg.extend_from_slice(&TPKEY.to_be_bytes());
        msg.extend_from_slice(&(owner.len() as u16).to_be_bytes());
        msg.extend_from_slice(owner.as_bytes());
        msg.extend_from_slice(&body);
        Ok(msg)
    }

    /// Sign with the issuing key server's own entity key.
    pub fn sign(&mut self, owner: &str, issuer_key: &EntityKey) -> Result<(), RecordError> {
        // Never sign a point that is not on the curve (the signature would vouch for it).
        self.w_point()?;
        let msg = self.signed_message(owner)?;
        self.signature = Some(issuer_key.sign(&msg));
        Ok(())
    }

    /// Check the issuer's signature with the issuer's public key `Q`.
    pub fn verify_signature(&self, owner: &str, issuer_q: &PublicKey) -> Result<(), RecordError> {
        let sig = self.signature.as_ref().ok_or(RecordError::Unsigned)?;
        // A signed record must also carry a point on the curve: whoever takes it as checked
        // (a key server's digest cache) may then skip decompressing it.
        self.w_point()?;
        let msg = self.signed_message(owner)?;
        clpkc::verify(issuer_q, &msg, sig).map_err(|_| RecordError::BadSignature)
    }

    /// Check the validity window at `now` (seconds since the epoch).
    pub fn check_validity(&self, now: u64) -> Result<(), RecordError> {
        if self.not_before >= self.not_after
            || now < u64::from(self.not_before)
            || now > u64::from(self.not_after)
        {
            return Err(RecordError::Validity {
                not_before: time::format(self.not_before),
                not_after: time::format(self.not_after),
            });
        }
        Ok(())
    }

    /// The identity this record binds: owner name, IP, issuer digest.
    pub fn identity(&self, owner: &str) -> Result<Identity, RecordError> {
        Identity::with_issuer_digest(owner, self.ip, self.issuer)
            .map_err(|e| RecordError::Name(e.to_string()))
    }

    /// `W`, decompressed.
    pub fn w_point(&self) -> Result<PublicKey, RecordError> {
        self.w.point().map_err(|_| RecordError::Point("W"))
    }

    /// The entity's public key `Q`, derived from the record and the issuer's params.
    pub fn public_key(&self, owner: &str, issuer: &KgcParams) -> Result<PublicKey, RecordError> {
        let expected = issuer.digest();
        if expected != self.issuer {
            return Err(RecordError::WrongIssuer {
                found: hex::encode(self.issuer),
                expected: hex::encode(expected),
            });
        }
        let id = self.identity(owner)?;
        Ok(clpkc::derive_public_key(
            &id,
            &self.w_point()?,
            &issuer.p_pub,
        ))
    }

    /// Full check as a client does it: issuer, signature, validity. Returns `Q`.
    pub fn verify(
        &self,
        owner: &str,
        issuer: &KgcParams,
        issuer_q: &PublicKey,
        now: u64,
    ) -> Result<PublicKey, RecordError> {
        let q = self.public_key(owner, issuer)?;
        self.verify_signature(owner, issuer_q)?;
        self.check_validity(now)?;
        Ok(q)
    }

    /// The params of the key server this record describes (key-server records only).
    pub fn key_server_params(&self, owner: &str) -> Option<KgcParams> {
        let ks = self.key_server.as_ref()?;
        KgcParams::new(owner, ks.p_pub).ok()
    }

    /// Parse the presentation fields that follow `TPKEY` in a zone file:
    /// `1 ENTITY <ip> <not-before> <not-after> <issuer> <W> <signature|->` or
    /// `1 KS <ip> <not-before> <not-after> <issuer> <W> <port> <P_pub> <signature|->`.
    pub fn from_presentation(fields: &[&str]) -> Result<Self, RecordError> {
        let syntax = |m: String| RecordError::Syntax(m);
        let mut it = fields.iter().copied();
        let mut next = |what: &str| {
            it.next()
                .ok_or_else(|| syntax(format!("missing {what} (fields: {PRESENTATION_HELP})")))
        };
        let version = next("version")?;
        if version != "1" {
            return Err(syntax(format!("unsupported TPKEY version `{version}`")));
        }
        let kind = next("kind (ENTITY or KS)")?;
        let is_ks = match kind.to_ascii_uppercase().as_str() {
            "ENTITY" => false,
            "KS" => true,
            other => return Err(syntax(format!("kind `{other}` is neither ENTITY nor KS"))),
        };
        let ip_s = next("IP address")?;
        let ip: IpAddr = ip_s
            .parse()
            .map_err(|_| syntax(format!("`{ip_s}` is not an IPv4 or IPv6 address")))?;
        let not_before = time::parse(next("not-before")?).map_err(syntax)?;
        let not_after = time::parse(next("not-after")?).map_err(syntax)?;
        let issuer = hex_array::<DIGEST_LEN>("issuer digest", next("issuer digest")?)?;
        let w = CompressedPoint::from_bytes(&hex_array::<POINT_LEN>("W", next("W")?)?)
            .map_err(|_| RecordError::Point("W"))?;
        let key_server = if is_ks {
            let port_s = next("port")?;
            let port = port_s
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| syntax(format!("`{port_s}` is not a port (1-65535)")))?;
            let p_pub = parse_point("P_pub", next("P_pub")?)?;
            Some(KeyServerInfo { port, p_pub })
        } else {
            None
        };
        let sig_s = next("signature (or - to have the key server sign it)")?;
        let signature = if sig_s == "-" {
            None
        } else {
            Some(hex_array::<SIG_LEN>("signature", sig_s)?)
        };
        if let Some(extra) = it.next() {
            return Err(syntax(format!(
                "unexpected field `{extra}` after the signature"
            )));
        }
        Ok(Self {
            ip,
            w,
            issuer,
            not_before,
            not_after,
            key_server: key_server.map(Box::new),
            signature,
        })
    }
}

/// Field order of the presentation form, for error messages and docs.
pub const PRESENTATION_HELP: &str =
    "1 ENTITY|KS <ip> <not-before> <not-after> <issuer> <W> [<port> <P_pub>] <signature|->";

impl fmt::Display for KeyRecord {
    /// Presentation form of the RDATA (what follows `TPKEY` in a zone file).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.key_server.is_some() {
            "KS"
        } else {
            "ENTITY"
        };
        write!(
            f,
            "{RDATA_VERSION} {kind} {} {} {} {} {}",
            self.ip,
            time::format(self.not_before),
            time::format(self.not_after),
            hex::encode(self.issuer),
            hex::encode(self.w.as_bytes()),
        )?;
        if let Some(ks) = &self.key_server {
            write!(
                f,
                " {} {}",
                ks.port,
                hex::encode(clpkc::point_to_bytes(&ks.p_pub))
            )?;
        }
        match &self.signature {
            Some(s) => write!(f, " {}", hex::encode(s)),
            None => write!(f, " -"),
        }
    }
}

/// RFC 3597 generic RDATA: `\# <len> <hex>`.
pub fn generic_rdata(rdata: &[u8]) -> String {
    if rdata.is_empty() {
        "\\# 0".to_string()
    } else {
        format!("\\# {} {}", rdata.len(), hex::encode_upper(rdata))
    }
}

/// Parse the fields of RFC 3597 generic RDATA (`\#`, length, hex words).
pub fn parse_generic_rdata(fields: &[&str]) -> Result<Vec<u8>, RecordError> {
    let syntax = RecordError::Syntax;
    match fields.first() {
        Some(&"\\#") => {}
        _ => return Err(syntax("generic RDATA must start with \\#".into())),
    }
    let len_s = fields
        .get(1)
        .ok_or_else(|| syntax("generic RDATA lacks its length after \\#".into()))?;
    let len: usize = len_s
        .parse()
        .map_err(|_| syntax(format!("generic RDATA length `{len_s}` is not a number")))?;
    let hex_s: String = fields[2..].concat();
    let data = hex::decode(&hex_s)
        .map_err(|e| syntax(format!("generic RDATA is not hexadecimal: {e}")))?;
    if data.len() != len {
        return Err(syntax(format!(
            "generic RDATA declares {len} bytes but carries {}",
            data.len()
        )));
    }
    Ok(data)
}

fn hex_array<const N: usize>(what: &str, s: &str) -> Result<[u8; N], RecordError> {
    let v =
        hex::decode(s).map_err(|_| RecordError::Syntax(format!("{what} is not hexadecimal")))?;
    <[u8; N]>::try_from(v.as_slice()).map_err(|_| {
        RecordError::Syntax(format!(
            "{what} must be {N} bytes ({} hex digits), found {}",
            2 * N,
            v.len()
        ))
    })
}

fn parse_point(what: &'static str, s: &str) -> Result<PublicKey, RecordError> {
    let b = hex_array::<POINT_LEN>(what, s)?;
    clpkc::point_from_bytes(&b).map_err(|_| RecordError::Point(what))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.pos.saturating_add(n);
        if end > self.buf.len() {
            return Err(RecordError::Truncated {
                field,
                need: end - self.buf.len(),
            });
        }
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, RecordError> {
        Ok(self.take(field, 1)?[0])
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, RecordError> {
        let b = self.take(field, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clpkc::{KeyRequest, Kgc, SecretValue};
    use rand_core::OsRng;

    fn issued(name: &str, ip: &str, ks: bool) -> (Kgc, EntityKey, KeyRecord) {
        let kgc = Kgc::setup("example.com.", &mut OsRng).unwrap();
        // The key server's own key, self-issued.
        let own_id =
            Identity::new("example.com.", "127.0.0.3".parse().unwrap(), kgc.params()).unwrap();
        let own_x = SecretValue::generate(&mut OsRng);
        let own_pk = kgc
            .extract(&KeyRequest::new(own_id.clone(), &own_x), &mut OsRng)
            .unwrap();
        let own = EntityKey::combine(&own_id, &own_x, &own_pk, kgc.params()).unwrap();

        let id = Identity::new(name, ip.parse().unwrap(), kgc.params()).unwrap();
        let x = SecretValue::generate(&mut OsRng);
        let pk = kgc
            .extract(&KeyRequest::new(id.clone(), &x), &mut OsRng)
            .unwrap();
        let mut rec = KeyRecord {
            ip: id.ip,
            w: pk.w.into(),
            issuer: kgc.params().digest(),
            not_before: 1_700_000_000,
            not_after: 1_900_000_000,
            key_server: ks.then(|| {
                Box::new(KeyServerInfo {
                    port: 5300,
                    p_pub: own.public().to_owned(),
                })
            }),
            signature: None,
        };
        rec.sign(name, &own).unwrap();
        (kgc, own, rec)
    }

    #[test]
    fn a_w_off_the_curve_decodes_but_is_never_signed_verified_or_used() {
        let (kgc, own, rec) = issued("www.example.com.", "192.0.2.1", false);
        // The first x with no point on P-256 (prefix 0x02).
        let off = (1u8..)
            .map(|x| {
                let mut b = [0u8; POINT_LEN];
                b[0] = 0x02;
                b[32] = x;
                b
            })
            .find(|b| clpkc::point_from_bytes(b).is_err())
            .unwrap();
        let mut bad = rec.clone();
        bad.w = CompressedPoint::from_bytes(&off).unwrap();
        // It travels (a key server serves bytes) ...
        let wire = bad.to_wire().unwrap();
        assert_eq!(KeyRecord::from_wire(&wire).unwrap(), bad);
        // ... but no check passes it and no key comes of it.
        let point = Err(RecordError::Point("W"));
        assert_eq!(
            bad.verify_signature("www.example.com.", own.public()),
            point
        );
        assert_eq!(
            bad.public_key("www.example.com.", kgc.params()).map(|_| ()),
            point
        );
        let mut unsigned = KeyRecord {
            signature: None,
            ..bad
        };
        assert_eq!(unsigned.sign("www.example.com.", &own), point);
        // A wrong prefix is refused at once.
        let mut wire = rec.to_wire().unwrap();
        wire[7] = 0x04;
        assert_eq!(KeyRecord::from_wire(&wire), Err(RecordError::Point("W")));
    }

    #[test]
    fn wire_round_trip_and_sizes() {
        for (ip, ks, len) in [
            ("192.0.2.1", false, 144),
            ("2001:db8::1", false, 156),
            ("192.0.2.1", true, 179),
        ] {
            let (_, _, rec) = issued("www.example.com.", ip, ks);
            let wire = rec.to_wire().unwrap();
            assert_eq!(wire.len(), len);
            assert_eq!(KeyRecord::from_wire(&wire).unwrap(), rec);
        }
    }

    #[test]
    fn presentation_round_trip() {
        let (_, _, rec) = issued("www.example.com.", "192.0.2.1", true);
        let text = rec.to_string();
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(KeyRecord::from_presentation(&fields).unwrap(), rec);
    }

    #[test]
    fn generic_round_trip() {
        let (_, _, rec) = issued("www.example.com.", "192.0.2.1", false);
        let wire = rec.to_wire().unwrap();
        let g = generic_rdata(&wire);
        let fields: Vec<&str> = g.split_whitespace().collect();
        assert_eq!(parse_generic_rdata(&fields).unwrap(), wire);
        assert!(parse_generic_rdata(&["\\#", "3", "0102"]).is_err());
    }

    #[test]
    fn signature_binds_owner_and_fields() {
        let (kgc, own, rec) = issued("www.example.com.", "192.0.2.1", false);
        let now = 1_800_000_000;
        rec.verify("www.example.com.", kgc.params(), own.public(), now)
            .unwrap();
        assert_eq!(
            rec.verify_signature("mail.example.com.", own.public()),
            Err(RecordError::BadSignature)
        );
        let mut moved = rec.clone();
        moved.ip = "192.0.2.2".parse().unwrap();
        assert_eq!(
            moved.verify_signature("www.example.com.", own.public()),
            Err(RecordError::BadSignature)
        );
        assert!(rec.check_validity(1_950_000_000).is_err());
    }

    #[test]
    fn truncated_and_garbage_rdata_are_errors() {
        let (_, _, rec) = issued("www.example.com.", "192.0.2.1", true);
        let wire = rec.to_wire().unwrap();
        for n in 0..wire.len() {
            assert!(KeyRecord::from_wire(&wire[..n]).is_err(), "prefix {n}");
        }
        let mut long = wire.clone();
        long.push(0);
        assert_eq!(KeyRecord::from_wire(&long), Err(RecordError::Trailing(1)));
        let mut bad_flags = wire;
        bad_flags[1] = 0x80 | FLAG_KEY_SERVER;
        assert!(matches!(
            KeyRecord::from_wire(&bad_flags),
            Err(RecordError::Flags(_))
        ));
    }
}
