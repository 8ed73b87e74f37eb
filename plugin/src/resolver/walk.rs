//! Checking one key server's reply: every record decoded, inside the server's zone, issued
//! under the server's params, signed by the server, within its validity window; answers and
//! referrals told apart. Pure functions of (server, question, message, time): the walk in
//! `mod.rs` does the I/O.

use std::net::SocketAddr;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record};

use crate::clpkc::{self, KgcParams};
use crate::record::{KeyRecord, RecordError};
use crate::zone::TPKEY_TYPE;

use super::anchors::KeyServer;
use super::{Check, ResolveError, VerifiedKey};

/// What a checked reply says about the name asked.
#[derive(Debug)]
pub enum Step {
    /// Verified records of the name asked (authoritative answer).
    Answer(Vec<VerifiedKey>),
    /// Verified key-server records of a child zone on the way (referral in AUTHORITY).
    Referral(Vec<VerifiedKey>),
    /// The name exists and has no key.
    NoData {
        /// Negative-caching TTL from the SOA (RFC 2308), if one came.
        neg_ttl: Option<u32>,
    },
    /// The name does not exist.
    NxDomain {
        /// Negative-caching TTL from the SOA (RFC 2308), if one came.
        neg_ttl: Option<u32>,
    },
}

/// Validity with an allowance for clock skew on either side of the window.
pub fn check_validity(rec: &KeyRecord, now: u64, skew: u64) -> Result<(), RecordError> {
    let (nb, na) = (u64::from(rec.not_before), u64::from(rec.not_after));
    let t = if now < nb && nb - now <= skew {
        nb
    } else if now > na && now - na <= skew {
        na
    } else {
        now
    };
    rec.check_validity(t)
}

fn verify_err(
    server: &KeyServer,
    from: SocketAddr,
    owner: &str,
    check: Check,
    detail: String,
) -> ResolveError {
    ResolveError::Verify {
        server: format!("{} ({from})", server.label()),
        owner: owner.to_string(),
        check,
        detail,
    }
}

/// Check one record from `server` for `owner`: scope, issuer, signature, validity.
pub fn verify_record(
    server: &KeyServer,
    from: SocketAddr,
    owner: &str,
    ttl: u32,
    rdata: &[u8],
    now: u64,
    skew: u64,
) -> Result<VerifiedKey, ResolveError> {
    let fail = |check, detail: String| verify_err(server, from, owner, check, detail);
    if !clpkc::is_within(owner, &server.name) {
        return Err(fail(
            Check::Scope,
            format!("{owner} is outside the key server's zone {}", server.name),
        ));
    }
    let rec = KeyRecord::from_wire(rdata).map_err(|e| fail(Check::Decode, e.to_string()))?;
    // W travels compressed: a W off the curve is a record that does not decode.
    rec.w_point()
        .map_err(|e| fail(Check::Decode, e.to_string()))?;
    let q = rec
        .public_key(owner, &server.params)
        .map_err(|e| fail(Check::Issuer, e.to_string()))?;
    let signed = server
        .identities
        .iter()
        .any(|(_, sq)| rec.verify_signature(owner, sq).is_ok());
    if !signed {
        return Err(fail(
            Check::Signature,
            format!(
                "signature does not verify under the key of {}",
                server.label()
            ),
        ));
    }
    check_validity(&rec, now, skew).map_err(|e| fail(Check::Validity, e.to_string()))?;
    Ok(VerifiedKey {
        name: owner.to_string(),
        ttl,
        record: rec,
        q,
    })
}

fn tpkey_records(records: &[Record]) -> impl Iterator<Item = (String, u32, &[u8])> {
    records.iter().filter_map(|r| match &r.data {
        RData::Unknown { code, rdata } if *code == TPKEY_TYPE => Some((
            r.name.to_ascii().to_ascii_lowercase(),
            r.ttl,
            rdata.anything.as_slice(),
        )),
        _ => None,
    })
}

/// TPKEY records of a section, decoded: (owner, TTL, record or why it did not decode).
pub fn key_records(records: &[Record]) -> Vec<(String, u32, Result<KeyRecord, RecordError>)> {
    tpkey_records(records)
        .map(|(o, t, r)| (o, t, KeyRecord::from_wire(r)))
        .collect()
}

fn negative_ttl(msg: &Message) -> Option<u32> {
    msg.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    })
}

/// Check `server`'s reply to the question `qname TPKEY`.
pub fn check_reply(
    server: &KeyServer,
    from: SocketAddr,
    qname: &str,
    msg: &Message,
    now: u64,
    skew: u64,
) -> Result<Step, ResolveError> {
    match msg.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        rcode => {
            return Err(ResolveError::Rcode {
                server: format!("{} ({from})", server.label()),
                name: qname.to_string(),
                rcode: rcode.to_string(),
            });
        }
    }
    let mut answers = Vec::new();
    for (owner, ttl, rdata) in tpkey_records(&msg.answers) {
        if owner != qname {
            let check = if clpkc::is_within(&owner, &server.name) {
                Check::Shape
            } else {
                Check::Scope
            };
            return Err(verify_err(
                server,
                from,
                &owner,
                check,
                format!("answered for {owner} when asked for {qname}"),
            ));
        }
        answers.push(verify_record(server, from, &owner, ttl, rdata, now, skew)?);
    }
    if !answers.is_empty() {
        return Ok(Step::Answer(answers));
    }
    let mut referral: Vec<VerifiedKey> = Vec::new();
    for (owner, ttl, rdata) in tpkey_records(&msg.authorities) {
        // A referral leads strictly down from the server's zone, towards the name asked.
        if owner == server.name
            || !clpkc::is_within(&owner, &server.name)
            || !clpkc::is_within(qname, &owner)
        {
            return Err(verify_err(
                server,
                from,
                &owner,
                Check::Scope,
                format!(
                    "referral to {owner} does not lead from {} towards {qname}",
                    server.name
                ),
            ));
        }
        if let Some(first) = referral.first()
            && first.name != owner
        {
            return Err(verify_err(
                server,
                from,
                &owner,
                Check::Shape,
                format!("referral names two zones, {} and {owner}", first.name),
            ));
        }
        let k = verify_record(server, from, &owner, ttl, rdata, now, skew)?;
        if k.record.key_server.is_none() {
            return Err(verify_err(
                server,
                from,
                &owner,
                Check::Shape,
                "a referral carries an entity record, not a key-server record".into(),
            ));
        }
        referral.push(k);
    }
    if !referral.is_empty() {
        return Ok(Step::Referral(referral));
    }
    let neg_ttl = negative_ttl(msg);
    Ok(match msg.metadata.response_code {
        ResponseCode::NXDomain => Step::NxDomain { neg_ttl },
        _ => Step::NoData { neg_ttl },
    })
}

/// The child key server that verified KS records of one owner describe: all must name the
/// same params; each record is one identity (address and key) of the child.
pub fn child_server(
    parent: &KeyServer,
    records: &[VerifiedKey],
    secondaries: &[SocketAddr],
) -> Result<Option<KeyServer>, ResolveError> {
    let ks: Vec<&VerifiedKey> = records
        .iter()
        .filter(|k| k.record.key_server.is_some())
        .collect();
    let Some(first) = ks.first() else {
        return Ok(None);
    };
    let owner = &first.name;
    let mut params: Option<KgcParams> = None;
    let mut identities = Vec::new();
    for k in &ks {
        let p = k
            .record
            .key_server_params(owner)
            .ok_or_else(|| ResolveError::Verify {
                server: parent.label(),
                owner: owner.clone(),
                check: Check::Shape,
                detail: "key-server record without usable params".into(),
            })?;
        if let Some(prev) = &params
            && *prev != p
        {
            return Err(ResolveError::Verify {
                server: parent.label(),
                owner: owner.clone(),
                check: Check::Shape,
                detail: "the key-server records of this zone disagree on its params".into(),
            });
        }
        params = Some(p);
        let port = k.record.key_server.as_ref().map(|i| i.port).unwrap_or(53);
        identities.push((SocketAddr::new(k.record.ip, port), k.q));
    }
    let Some(params) = params else {
        return Ok(None);
    };
    let mut servers: Vec<SocketAddr> = identities.iter().map(|(a, _)| *a).collect();
    servers.extend(
        secondaries
            .iter()
            .filter(|a| !servers.contains(a))
            .copied()
            .collect::<Vec<_>>(),
    );
    Ok(Some(KeyServer {
        name: owner.clone(),
        identities,
        params,
        servers,
    }))
}
