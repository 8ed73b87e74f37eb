//! Enrollment over DNS UPDATE (RFC 2136) signed with TSIG (RFC 8945): the key server checks
//! the signature, the zone, the one TPREQ record and the key's allowed names, hands the request
//! to its [`crate::enroll::Enroller`] and answers with a TPRESP record, signed. Every refusal
//! has its RCODE (and TSIG error), one log line saying why, and changes nothing stored.
//! Wire format: docs/enrollment.md.

use hickory_proto::op::{Metadata, ResponseCode};
use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::rdata::tsig::TsigError;
use hickory_proto::rr::{DNSClass, LowerName, RData, Record, RecordType, TSigResponseContext};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::{info, warn};

use crate::enroll::{
    EnrollError, EnrollRequest, MAX_UPDATE_BYTES, TPREQ_TYPE, TPRESP_TYPE, TsigKey,
    encode_response, rcode_mnemonic,
};
use crate::server::{KeyServerHandler, LogLimit, failed, quiet, response_edns, send_rcode};

// Refusals before the TSIG check: any peer can cause them at will, one datagram each, so
// each kind is logged at most LOG_BURST times a minute.
static TOO_LARGE_LOG: LogLimit = LogLimit::new();
static OFF_LOG: LogLimit = LogLimit::new();
static UNSIGNED_LOG: LogLimit = LogLimit::new();
static BADKEY_LOG: LogLimit = LogLimit::new();
static BADSIG_LOG: LogLimit = LogLimit::new();
static BADTIME_LOG: LogLimit = LogLimit::new();

/// Answer an UPDATE.
pub(crate) async fn handle<R: ResponseHandler>(
    h: &KeyServerHandler,
    request: &Request,
    handle: R,
) -> ResponseInfo {
    let peer = request.src();
    let len = request.as_slice().len();
    if len > MAX_UPDATE_BYTES {
        if let Some(last) = TOO_LARGE_LOG.allow() {
            warn!(%peer, bytes = len, limit = MAX_UPDATE_BYTES, "enrollment refused (REFUSED): UPDATE too large{}", quiet(last));
        }
        return send_rcode(request, ResponseCode::Refused, handle).await;
    }
    let Some(enr) = h.enrollment() else {
        if let Some(last) = OFF_LOG.allow() {
            warn!(%peer, "UPDATE refused (REFUSED): no [[tsig]] keys configured, enrollment over UPDATE is off{}", quiet(last));
        }
        return send_rcode(request, ResponseCode::Refused, handle).await;
    };
    let Some(tsig) = request.signature.as_deref() else {
        if let Some(last) = UNSIGNED_LOG.allow() {
            warn!(%peer, "enrollment refused (REFUSED): UPDATE is not TSIG-signed{}", quiet(last));
        }
        return send_rcode(request, ResponseCode::Refused, handle).await;
    };
    let id = request.metadata.id;
    let now = crate::time::now();
    let key_name = &tsig.name;
    let Some(key) = enr.keys.iter().find(|k| {
        k.signer.signer_name() == key_name && *k.signer.algorithm() == tsig.data.algorithm
    }) else {
        if let Some(last) = BADKEY_LOG.allow() {
            warn!(%peer, key = %key_name, algorithm = %tsig.data.algorithm, "enrollment refused (NOTAUTH/BADKEY): unknown TSIG key or algorithm{}", quiet(last));
        }
        let ctx = TSigResponseContext::unknown_key(id, now, key_name.clone());
        return send(request, ResponseCode::NotAuth, None, Some(ctx), handle).await;
    };
    match key
        .signer
        .verify_message_byte(request.as_slice(), None, true)
    {
        Err(error) => {
            if let Some(last) = BADSIG_LOG.allow() {
                warn!(%peer, key = %key_name, %error, "enrollment refused (NOTAUTH/BADSIG): TSIG MAC does not verify{}", quiet(last));
            }
            let ctx = TSigResponseContext::bad_signature(id, now, key.signer.clone());
            return send(request, ResponseCode::NotAuth, None, Some(ctx), handle).await;
        }
        Ok((_, signed, range)) if !range.contains(&now) => {
            if let Some(last) = BADTIME_LOG.allow() {
                warn!(%peer, key = %key_name, signed, now, fudge = tsig.data.fudge, "enrollment refused (NOTAUTH/BADTIME): TSIG time outside the fudge window{}", quiet(last));
            }
            let ctx = TSigResponseContext::new(
                id,
                now,
                key.signer.clone(),
                tsig.data.mac.clone(),
                Some(TsigError::BadTime),
            );
            return send(request, ResponseCode::NotAuth, None, Some(ctx), handle).await;
        }
        Ok(_) => {}
    }
    // From here on every answer is signed with the request's key.
    let ctx = || {
        Some(TSigResponseContext::new(
            id,
            now,
            key.signer.clone(),
            tsig.data.mac.clone(),
            None,
        ))
    };
    // The answer (about 1,100 bytes) would not fit this UDP message: refuse before enrolling
    // anything, with TC set, so a client that honours TC asks again over TCP (RFC 7766) and
    // one that does not (nsupdate without -v) reports REFUSED rather than a bare NOERROR.
    if request.protocol() == hickory_net::xfer::Protocol::Udp
        && usize::from(request.max_payload()) < UDP_ANSWER_BYTES
    {
        warn!(%peer, key = %key_name, max_payload = request.max_payload(), "enrollment refused (REFUSED, TC): the answer does not fit this UDP message; send it over TCP (nsupdate -v)");
        return send_tc(request, ctx(), handle).await;
    }
    let (rcode, why) = match check(h, key, request) {
        Ok(Checked { req, owner }) => {
            let enroller = enr.enroller.clone();
            let req2 = req.clone();
            match tokio::task::spawn_blocking(move || enroller.enroll_new(&req2)).await {
                Ok(Ok(text)) => {
                    info!(%peer, key = %key_name, member = %req.request.identity.name, ip = %req.request.identity.ip, key_server = req.key_server.is_some(), "member enrolled (UPDATE)");
                    let rec = Record::from_rdata(
                        owner.into(),
                        0,
                        RData::Unknown {
                            code: TPRESP_TYPE,
                            rdata: NULL::with(encode_response(&text)),
                        },
                    );
                    return send(request, ResponseCode::NoError, Some(rec), ctx(), handle).await;
                }
                Ok(Err(EnrollError::Duplicate(e))) => (ResponseCode::YXRRSet, e),
                Ok(Err(EnrollError::Refused(e))) => (ResponseCode::Refused, e),
                Ok(Err(EnrollError::Failed(e))) => (ResponseCode::ServFail, e),
                Err(e) => (ResponseCode::ServFail, format!("enrollment task: {e}")),
            }
        }
        Err(refusal) => refusal,
    };
    let mnemonic = rcode_mnemonic(rcode);
    warn!(%peer, key = %key_name, "enrollment refused ({mnemonic}): {why}");
    send(request, rcode, None, ctx(), handle).await
}

/// `TYPE65300` for a type hickory does not name (RFC 3597), else its mnemonic.
fn type_name(t: RecordType) -> String {
    match t {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        t => t.to_string(),
    }
}

struct Checked {
    req: EnrollRequest,
    owner: LowerName,
}

/// Everything about the message but the signature and the store.
fn check(
    h: &KeyServerHandler,
    key: &TsigKey,
    request: &Request,
) -> Result<Checked, (ResponseCode, String)> {
    let refused = |why: String| (ResponseCode::Refused, why);
    let info = request.request_info().map_err(|_| {
        (
            ResponseCode::FormErr,
            "the zone section must hold exactly one zone".to_string(),
        )
    })?;
    let zone = info.query;
    if zone.query_type() != RecordType::SOA {
        return Err((
            ResponseCode::FormErr,
            format!("zone section type is {}, not SOA", zone.query_type()),
        ));
    }
    let Some(cell) = h
        .zone_at(zone.name())
        .filter(|_| zone.query_class() == DNSClass::IN)
    else {
        return Err((
            ResponseCode::NotAuth,
            format!(
                "zone {} {} is not served here",
                zone.name(),
                zone.query_class()
            ),
        ));
    };
    if !request.answers.is_empty() {
        return Err(refused(format!(
            "not an enrollment: {} prerequisite records",
            request.answers.len()
        )));
    }
    let updates = &request.authorities;
    let [rec] = updates.as_slice() else {
        return Err(refused(format!(
            "not an enrollment: {} update records (exactly one TYPE65301 is)",
            updates.len()
        )));
    };
    if rec.record_type() != TPREQ_TYPE || rec.dns_class != DNSClass::IN {
        return Err(refused(format!(
            "not an enrollment: update record {} {} {} (an add of one TYPE65301 IN is)",
            rec.name,
            rec.dns_class,
            type_name(rec.record_type())
        )));
    }
    let owner = LowerName::new(&rec.name);
    if !cell.load().origin().zone_of(&owner) {
        return Err((
            ResponseCode::NotZone,
            format!("{owner} is not in zone {}", zone.name()),
        ));
    }
    if !key.allows(&owner) {
        return Err(refused(format!(
            "key {} may not enroll {owner} (allow = {:?})",
            key.signer.signer_name(),
            key.allow
        )));
    }
    let RData::Unknown { rdata, .. } = &rec.data else {
        return Err((ResponseCode::FormErr, "TPREQ RDATA is not opaque".into()));
    };
    let req = EnrollRequest::decode(&rdata.anything)
        .map_err(|e| (ResponseCode::FormErr, format!("malformed TPREQ: {e}")))?;
    let id = &req.request.identity;
    if !id.name.eq_ignore_ascii_case(&owner.to_string()) {
        return Err(refused(format!(
            "the request is for {}, the record's owner is {owner}",
            id.name
        )));
    }
    // The proof of possession is checked by the issuance, off the I/O threads.
    Ok(Checked { req, owner })
}

/// Largest answer to an enrollment, with room to spare: a key-server member's response text
/// (~1,000 bytes), the question, the TPRESP header and the TSIG record.
const UDP_ANSWER_BYTES: usize = 1400;

async fn send<R: ResponseHandler>(
    request: &Request,
    rcode: ResponseCode,
    extra: Option<Record>,
    ctx: Option<TSigResponseContext>,
    handle: R,
) -> ResponseInfo {
    send_meta(request, rcode, false, extra, ctx, handle).await
}

async fn send_tc<R: ResponseHandler>(
    request: &Request,
    ctx: Option<TSigResponseContext>,
    handle: R,
) -> ResponseInfo {
    send_meta(request, ResponseCode::Refused, true, None, ctx, handle).await
}

/// Send `rcode` (TC set when `tc`) with `extra` in the additional section, signed by `ctx`.
async fn send_meta<R: ResponseHandler>(
    request: &Request,
    rcode: ResponseCode,
    tc: bool,
    extra: Option<Record>,
    ctx: Option<TSigResponseContext>,
    mut handle: R,
) -> ResponseInfo {
    let edns = response_edns(request);
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.response_code = rcode;
    meta.truncation = tc;
    let build = || {
        MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            meta,
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
            extra.iter(),
        )
    };
    let mut msg = build();
    if let Some(ctx) = ctx {
        let mut tbs = Vec::with_capacity(1024);
        let mut enc = BinEncoder::new(&mut tbs);
        if let Err(error) = build().destructive_emit(&mut enc) {
            warn!(%error, "encoding the UPDATE response failed");
            return send_rcode(request, ResponseCode::ServFail, handle).await;
        }
        match ctx.sign(&tbs) {
            Ok(sig) => msg.set_signature(sig),
            Err(error) => {
                warn!(%error, "signing the UPDATE response failed");
                return send_rcode(request, ResponseCode::ServFail, handle).await;
            }
        }
    }
    match handle.send_response(msg).await {
        Ok(info) => info,
        Err(error) => {
            warn!(%error, peer = %request.src(), "failed to send UPDATE response");
            failed(request)
        }
    }
}
