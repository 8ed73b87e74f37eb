//! The encode stage of a key zone: the response to every plain query about a name of the
//! zone, encoded once when the zone is built, byte for byte as the hickory path encodes it
//! (the server's front handler for referrals, the `Catalog` over `KeyZoneHandler` for the
//! rest), for a question in lower case with ID 0, RD and CD clear and no EDNS. The UDP fast
//! path copies one and patches ID, flags, case, QTYPE and OPT (`crate::wire::write_answer`).
//! Built with the zone and swapped with it, so an answer is always of the zone being served.

use std::collections::HashMap;

use hickory_proto::op::{MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

use super::{Answer, KeyZone, TPKEY_TYPE};

/// QTYPEs that can have answers of their own at a name. Any other QTYPE gets what `OTHER`
/// gets there (NODATA, or a referral below or at a delegation), with its own QTYPE.
const TYPES: [RecordType; 6] = [
    TPKEY_TYPE,
    RecordType::SOA,
    RecordType::NS,
    RecordType::A,
    RecordType::AAAA,
    RecordType::ANY,
];
const OTHER: RecordType = RecordType::TXT;
/// Offset of the QTYPE in a response whose question's name is `n` bytes long.
const fn qtype_at(n: usize) -> usize {
    12 + n
}

/// The encoded answers of one zone, by lower-cased wire name.
#[derive(Default)]
pub struct Encoded {
    names: HashMap<Box<[u8]>, Owner>,
}

struct Owner {
    /// QTYPEs whose answer is not the last blob's, with the index of theirs.
    types: Box<[(u16, u8)]>,
    /// Distinct responses, QTYPE zeroed; the last one answers every QTYPE not in `types`.
    blobs: Box<[Box<[u8]>]>,
}

/// Whether the fast path may answer `qtype` from encoded answers: not a meta type (OPT, zone
/// transfers, MAILA/MAILB and the rest of 128–254) nor type 0, which take the hickory path.
pub fn answerable(qtype: u16) -> bool {
    !(qtype == 0 || qtype == 41 || (128..=254).contains(&qtype))
}

impl Encoded {
    /// Encode every answer of `zone`: for each name that exists in it (owners, empty
    /// non-terminals, delegations) and each QTYPE that can differ there.
    pub(super) fn build(zone: &KeyZone) -> Self {
        let mut names = HashMap::with_capacity(zone.names.len() + zone.delegations.len());
        for lower in zone.names.iter().chain(&zone.delegations) {
            let name = Name::from(lower.clone());
            let Ok(wire) = name.to_bytes() else { continue };
            if names.contains_key(wire.as_slice()) {
                continue;
            }
            if let Some(owner) = encode_owner(zone, lower, &wire) {
                names.insert(wire.into_boxed_slice(), owner);
            }
        }
        Self { names }
    }

    /// The encoded response to `qtype` at the lower-cased wire name `name` (QTYPE zeroed).
    pub fn get(&self, name: &[u8], qtype: u16) -> Option<&[u8]> {
        if !answerable(qtype) {
            return None;
        }
        let owner = self.names.get(name)?;
        let i = owner
            .types
            .iter()
            .find(|(t, _)| *t == qtype)
            .map_or(owner.blobs.len().checked_sub(1)?, |&(_, i)| usize::from(i));
        owner.blobs.get(i).map(|b| &b[..])
    }

    /// Names with encoded answers.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

fn encode_owner(zone: &KeyZone, name: &LowerName, wire: &[u8]) -> Option<Owner> {
    let zeroed = |rtype: RecordType| {
        let mut b = encode(zone, name, wire, rtype)?;
        let at = qtype_at(wire.len());
        b.get_mut(at..at + 2)?.copy_from_slice(&[0, 0]);
        Some(b)
    };
    let other = zeroed(OTHER)?;
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut types = Vec::new();
    for rtype in TYPES {
        let Some(b) = zeroed(rtype) else { continue };
        if b == other {
            continue;
        }
        let i = match blobs.iter().position(|x| *x == b) {
            Some(i) => i,
            None => {
                blobs.push(b);
                blobs.len() - 1
            }
        };
        types.push((u16::from(rtype), u8::try_from(i).ok()?));
    }
    blobs.push(other);
    Some(Owner {
        types: types.into_boxed_slice(),
        blobs: blobs.into_iter().map(Vec::into_boxed_slice).collect(),
    })
}

/// The response the hickory path gives to `rtype` at `name`; `None` where it is no answer of
/// this zone's (outside it).
fn encode(zone: &KeyZone, name: &LowerName, wire: &[u8], rtype: RecordType) -> Option<Vec<u8>> {
    let mut question = wire.to_vec();
    question.extend_from_slice(&u16::from(rtype).to_be_bytes());
    question.extend_from_slice(&[0, 1]);
    let queries = Queries::read(&mut BinDecoder::new(&question), 1).ok()?;
    let request = Metadata::new(0, MessageType::Query, OpCode::Query);
    let mut meta = Metadata::response_from_request(&request);
    let many;
    let mut answers: Vec<&Record> = Vec::new();
    let mut authorities: Vec<&Record> = Vec::new();
    if let Some(set) = zone.referral(name, rtype) {
        // The front handler's referral: AA clear, the child's records in AUTHORITY.
        authorities.extend(set.records_without_rrsigs());
    } else {
        // The Catalog's authoritative answer (build_authoritative_response in hickory-server).
        meta.authoritative = true;
        match zone.lookup(name, rtype) {
            Answer::Records(set) => {
                answers.extend(set.records_without_rrsigs());
                // An SOA answer carries the apex NS in AUTHORITY.
                if rtype == RecordType::SOA
                    && let Answer::Records(ns) = zone.lookup(zone.origin(), RecordType::NS)
                {
                    authorities.extend(ns.records_without_rrsigs());
                }
            }
            Answer::Many(sets) => {
                many = sets;
                answers.extend(many.iter().flat_map(|s| s.records_without_rrsigs()));
            }
            Answer::NoData => authorities.extend(zone.negative_soa().records_without_rrsigs()),
            Answer::NxDomain => {
                meta.response_code = ResponseCode::NXDomain;
                authorities.extend(zone.negative_soa().records_without_rrsigs());
            }
            Answer::Referral(_) | Answer::NotAuth => return None,
        }
    }
    let response = MessageResponseBuilder::new(&queries, None).build(
        meta,
        answers,
        authorities,
        std::iter::empty(),
        std::iter::empty(),
    );
    let mut buf = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut buf);
    response.destructive_emit(&mut encoder).ok()?;
    Some(buf)
}
