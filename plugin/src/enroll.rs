//! Online enrollment over DNS UPDATE signed with TSIG (RFC 2136, RFC 8945): the TPREQ record a
//! requester sends, the TPRESP record its key server answers with, the TSIG keys a key server
//! accepts with the names each may enroll, and the [`Enroller`] the request path hands a
//! checked request to (the server crate implements it). Wire format: docs/enrollment.md.

use std::sync::Arc;

use hickory_proto::rr::{LowerName, Name, RecordType, TSigner, rdata::tsig::TsigAlgorithm};

use crate::clpkc::{KeyRequest, KgcParams};

/// Private-use type of the enrollment request record.
pub const TPREQ: u16 = 65301;
/// Private-use type of the enrollment response record.
pub const TPRESP: u16 = 65302;
/// [`TPREQ`] as a record type.
pub const TPREQ_TYPE: RecordType = RecordType::Unknown(TPREQ);
/// [`TPRESP`] as a record type.
pub const TPRESP_TYPE: RecordType = RecordType::Unknown(TPRESP);
/// Version byte of both RDATA formats.
pub const ENROLL_VERSION: u8 = 1;
/// Largest UPDATE message a key server reads as an enrollment, bytes.
pub const MAX_UPDATE_BYTES: usize = 4096;

/// An enrollment request as carried in a TPREQ record.
#[derive(Clone, Debug)]
pub struct EnrollRequest {
    /// The key request (identity, X, proof of possession).
    pub request: KeyRequest,
    /// For a child key server: its DNS port and its KGC params.
    pub key_server: Option<(u16, KgcParams)>,
}

/// Why a TPREQ RDATA does not decode.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The RDATA is shorter than its fields say.
    #[error("TPREQ is truncated: {0}")]
    Truncated(&'static str),
    /// A version this key server does not know.
    #[error("TPREQ version {0} is not supported (1 is)")]
    Version(u8),
    /// A field does not decode.
    #[error("TPREQ {what}: {reason}")]
    Field {
        /// Which field.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Bytes after the last field.
    #[error("TPREQ has {0} bytes after its last field")]
    Trailing(usize),
}

fn take<'a>(b: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
    if b.len() < n {
        return Err(WireError::Truncated(what));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn take_u16(b: &mut &[u8], what: &'static str) -> Result<u16, WireError> {
    let s = take(b, 2, what)?;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

impl EnrollRequest {
    /// TPREQ RDATA: `1 ‖ u16 len ‖ request [‖ u16 port ‖ u16 len ‖ params]`.
    pub fn encode(&self) -> Vec<u8> {
        let req = self.request.encode();
        let mut out = Vec::with_capacity(3 + req.len() + 80);
        out.push(ENROLL_VERSION);
        out.extend_from_slice(&(req.len() as u16).to_be_bytes());
        out.extend_from_slice(&req);
        if let Some((port, params)) = &self.key_server {
            let p = params.encode();
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
            out.extend_from_slice(&p);
        }
        out
    }

    /// Decode TPREQ RDATA. The proof of possession is not checked here.
    pub fn decode(mut b: &[u8]) -> Result<Self, WireError> {
        let v = take(&mut b, 1, "version")?[0];
        if v != ENROLL_VERSION {
            return Err(WireError::Version(v));
        }
        let n = take_u16(&mut b, "request length")? as usize;
        let request =
            KeyRequest::decode(take(&mut b, n, "request")?).map_err(|e| WireError::Field {
                what: "request",
                reason: e.to_string(),
            })?;
        let key_server = if b.is_empty() {
            None
        } else {
            let port = take_u16(&mut b, "key-server port")?;
            let n = take_u16(&mut b, "params length")? as usize;
            let params =
                KgcParams::decode(take(&mut b, n, "params")?).map_err(|e| WireError::Field {
                    what: "child params",
                    reason: e.to_string(),
                })?;
            if !b.is_empty() {
                return Err(WireError::Trailing(b.len()));
            }
            Some((port, params))
        };
        Ok(Self {
            request,
            key_server,
        })
    }
}

/// TPRESP RDATA: `1 ‖ the response file's text (UTF-8, to the end of the RDATA)`.
pub fn encode_response(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + text.len());
    out.push(ENROLL_VERSION);
    out.extend_from_slice(text.as_bytes());
    out
}

/// Decode TPRESP RDATA into the response file's text.
pub fn decode_response(b: &[u8]) -> Result<String, String> {
    match b.split_first() {
        Some((&ENROLL_VERSION, text)) => {
            String::from_utf8(text.to_vec()).map_err(|_| "TPRESP text is not UTF-8".to_string())
        }
        Some((v, _)) => Err(format!("TPRESP version {v} is not supported (1 is)")),
        None => Err("TPRESP is empty".into()),
    }
}

/// The mnemonic of an RCODE as dig and nsupdate print it (`REFUSED`, `NOTAUTH`…).
pub fn rcode_mnemonic(rcode: hickory_proto::op::ResponseCode) -> String {
    let code = u16::from(rcode);
    match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return format!("RCODE{code}"),
    }
    .to_string()
}

/// The TSIG algorithm named `s` (`hmac-sha256`, `hmac-sha384`, `hmac-sha512`).
pub fn tsig_algorithm(s: &str) -> Result<TsigAlgorithm, String> {
    match s.trim_end_matches('.').to_ascii_lowercase().as_str() {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        other => Err(format!(
            "TSIG algorithm `{other}` is not supported (hmac-sha256, hmac-sha384, hmac-sha512)"
        )),
    }
}

/// A TSIG key a key server accepts, and the names it may enroll.
#[derive(Clone)]
pub struct TsigKey {
    /// The key (name, algorithm, secret, fudge).
    pub signer: TSigner,
    /// The names it may enroll.
    pub allow: Vec<NamePattern>,
}

impl TsigKey {
    /// Whether this key may enroll `name`.
    pub fn allows(&self, name: &LowerName) -> bool {
        self.allow.iter().any(|p| p.matches(name))
    }
}

impl std::fmt::Debug for TsigKey {
    // Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", self.signer.signer_name())
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

/// A name a TSIG key may enroll: `www.example.com.` (that name) or `*.example.com.` (any name
/// strictly below it).
#[derive(Clone, PartialEq, Eq)]
pub struct NamePattern {
    wild: bool,
    base: LowerName,
    text: String,
}

impl NamePattern {
    /// Parse a pattern; it must lie within `zone` (a wildcard's base may be the zone itself).
    pub fn parse(pattern: &str, zone: &str) -> Result<Self, String> {
        let (wild, base) = match pattern.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        if base.contains('*') {
            return Err(format!(
                "pattern {pattern:?}: `*.` may only start a pattern"
            ));
        }
        let mut name = Name::from_ascii(base)
            .map_err(|e| format!("pattern {pattern:?} is not a DNS name: {e}"))?;
        name.set_fqdn(true);
        let base = LowerName::new(&name);
        let zone = Name::from_ascii(zone)
            .map_err(|e| format!("zone {zone:?}: {e}"))
            .map(|z| LowerName::new(&z))?;
        if !zone.zone_of(&base) {
            return Err(format!("pattern {pattern:?} is outside the zone {zone}"));
        }
        Ok(Self {
            wild,
            base,
            text: pattern.to_string(),
        })
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &LowerName) -> bool {
        if self.wild {
            self.base.zone_of(name) && name.num_labels() > self.base.num_labels()
        } else {
            &self.base == name
        }
    }
}

impl std::fmt::Debug for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A TSIG secret from its base64 text: refused if not base64 or shorter than 16 bytes (an
/// HMAC key that short can be guessed; `tsig-keygen` makes 32).
pub fn decode_tsig_secret(text: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    use base64::Engine as _;
    let secret = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "the TSIG secret is not base64".to_string())?,
    );
    if secret.len() < 16 {
        return Err(format!(
            "the TSIG secret is {} bytes; give at least 16 (tsig-keygen makes 32)",
            secret.len()
        ));
    }
    Ok(secret)
}

/// Why an enrollment was refused by the key server.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The name already has a key for this IP (RCODE YXRRSET).
    #[error("{0}")]
    Duplicate(String),
    /// The request is not acceptable (RCODE REFUSED).
    #[error("{0}")]
    Refused(String),
    /// The key server failed (RCODE SERVFAIL).
    #[error("{0}")]
    Failed(String),
}

/// What issues, stores and serves an enrollment (tpkd's key server): returns the response
/// file's text, the partial key in it sealed to the requester.
pub trait Enroller: Send + Sync + 'static {
    /// Enroll `req`, refusing a second key for the same name and IP.
    fn enroll_new(&self, req: &EnrollRequest) -> Result<String, EnrollError>;
}

/// Enrollment over UPDATE: who enrolls, with which keys.
#[derive(Clone)]
pub struct UpdateEnrollment {
    /// Issues, stores, serves.
    pub enroller: Arc<dyn Enroller>,
    /// Accepted keys (one algorithm per key name, RFC 8945 §5.5).
    pub keys: Vec<TsigKey>,
}

/// What a key server answered to an enrollment sent by [`submit`].
#[derive(Debug)]
pub enum Submitted {
    /// Enrolled: the response file's text (from the TPRESP record), TSIG verified.
    Enrolled(String),
    /// Refused with this RCODE (the answer's TSIG verified).
    Refused(hickory_proto::op::ResponseCode),
}

/// Send `req` for `owner` as a TSIG-signed UPDATE of `zone` to `server` over TCP with hickory's
/// client (which signs the request and checks the answer's TSIG), and read the answer.
pub async fn submit(
    server: std::net::SocketAddr,
    zone: &Name,
    owner: &Name,
    req: &EnrollRequest,
    signer: TSigner,
    timeout: std::time::Duration,
) -> Result<Submitted, String> {
    use futures_util::StreamExt;
    use hickory_net::runtime::TokioRuntimeProvider;
    use hickory_net::tcp::TcpClientStream;
    use hickory_net::xfer::{DnsExchange, DnsHandle, DnsMultiplexer};
    use hickory_proto::op::{
        DnsRequest, DnsRequestOptions, Message, OpCode, Query, ResponseCode, UpdateMessage,
    };
    use hickory_proto::rr::rdata::NULL;
    use hickory_proto::rr::{DNSClass, RData, Record};

    let key = signer.signer_name().clone();
    let provider = TokioRuntimeProvider::default();
    let (connect, handle) = TcpClientStream::new(server, None, Some(timeout), provider);
    let stream = connect
        .await
        .map_err(|e| format!("{server}: cannot connect over TCP: {e}"))?;
    let mux = DnsMultiplexer::new(stream, handle)
        .with_timeout(timeout)
        .with_signer(signer);
    let (exchange, bg): (DnsExchange<TokioRuntimeProvider>, _) = DnsExchange::from_stream(mux);
    let bg = tokio::spawn(bg);

    let mut zone_q = Query::new();
    zone_q
        .set_name(zone.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    let mut msg = Message::query();
    msg.metadata.op_code = OpCode::Update;
    msg.metadata.recursion_desired = false;
    msg.add_zone(zone_q);
    let mut rec = Record::from_rdata(
        owner.clone(),
        0,
        RData::Unknown {
            code: TPREQ_TYPE,
            rdata: NULL::with(req.encode()),
        },
    );
    rec.dns_class = DNSClass::IN;
    msg.add_update(rec);
    let mut responses = exchange.send(DnsRequest::new(msg, DnsRequestOptions::default()));
    let answer = responses.next().await;
    bg.abort();
    let answer = match answer {
        Some(Ok(a)) => a,
        Some(Err(e)) => {
            return Err(format!(
                "{server}: the answer is not signed with key {key}: the key server did not accept the key name, algorithm or secret (BADKEY or BADSIG), or did not answer properly; its log says why (hickory: {e})"
            ));
        }
        None => return Err(format!("{server}: connection closed without an answer")),
    };
    let rcode = answer.metadata.response_code;
    if rcode != ResponseCode::NoError {
        return Ok(Submitted::Refused(rcode));
    }
    let text = answer
        .additionals
        .iter()
        .chain(answer.answers.iter())
        .find_map(|r| match &r.data {
            RData::Unknown { code, rdata } if *code == TPRESP_TYPE => {
                Some(decode_response(&rdata.anything))
            }
            _ => None,
        })
        .ok_or_else(|| format!("{server}: NOERROR without a TYPE{TPRESP} record"))??;
    Ok(Submitted::Enrolled(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(s: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(s).unwrap())
    }

    #[test]
    fn patterns() {
        let m = |p: &str, n: &str| {
            NamePattern::parse(p, "example.com.")
                .unwrap()
                .matches(&lower(n))
        };
        assert!(m("*.example.com.", "www.example.com."));
        assert!(m("*.example.com.", "a.b.example.com."));
        assert!(!m("*.example.com.", "example.com."));
        assert!(!m("*.example.com.", "wwwexample.com."));
        assert!(m("www.example.com.", "WWW.example.com."));
        assert!(!m("www.example.com.", "x.www.example.com."));
        assert!(m("WWW.Example.com", "www.example.com."));
        for (bad, why) in [
            ("*.example.org.", "outside the zone"),
            ("www.*.example.com.", "may only start"),
            ("**.example.com.", "may only start"),
            ("a..example.com.", "not a DNS name"),
            ("com.", "outside the zone"),
        ] {
            let e = NamePattern::parse(bad, "example.com.").unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn tsig_secrets() {
        assert_eq!(
            decode_tsig_secret(" AAAAAAAAAAAAAAAAAAAAAA== \n")
                .unwrap()
                .len(),
            16
        );
        assert!(decode_tsig_secret("").unwrap_err().contains("0 bytes"));
        assert!(decode_tsig_secret("AAAA").unwrap_err().contains("3 bytes"));
        assert!(
            decode_tsig_secret("not base64!")
                .unwrap_err()
                .contains("not base64")
        );
    }

    #[test]
    fn response_round_trip() {
        let b = encode_response("name = \"x\"\n");
        assert_eq!(decode_response(&b).unwrap(), "name = \"x\"\n");
        assert!(decode_response(&[2, b'a']).is_err());
        assert!(decode_response(&[]).is_err());
    }

    #[test]
    fn request_round_trip_and_garbage() {
        use rand_core::OsRng;
        let kgc = crate::clpkc::Kgc::setup("example.com.", &mut OsRng).unwrap();
        let id = crate::clpkc::Identity::new(
            "www.example.com.",
            "192.0.2.1".parse().unwrap(),
            kgc.params(),
        )
        .unwrap();
        let x = crate::clpkc::SecretValue::generate(&mut OsRng);
        let r = EnrollRequest {
            request: KeyRequest::new(id, &x),
            key_server: Some((5300, kgc.params().clone())),
        };
        let b = r.encode();
        let d = EnrollRequest::decode(&b).unwrap();
        assert_eq!(d.request.encode(), r.request.encode());
        assert_eq!(d.key_server.unwrap().0, 5300);
        for cut in 0..b.len() {
            assert!(
                EnrollRequest::decode(&b[..cut]).is_err() || cut == 3 + r.request.encode().len()
            );
        }
        let mut long = b.clone();
        long.push(0);
        assert!(EnrollRequest::decode(&long).is_err());
        let mut v2 = b;
        v2[0] = 2;
        assert!(EnrollRequest::decode(&v2).is_err());
    }
}
