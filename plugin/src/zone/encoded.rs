//! The encode stage of a key zone: the response to every plain query about a name of the
//! zone, encoded once when the zone is built, byte for byte as the hickory path encodes it
//! (the server's front handler for referrals, the `Catalog` over `KeyZoneHandler` for the
//! rest), for a question in lower case with ID 0, RD and CD clear and no EDNS. The UDP fast
//! path copies one and patches ID, flags, case, QTYPE and OPT (`crate::wire::write_answer`).
//! Built with the zone and swapped with it, so an answer is always of the zone being served.
//!
//! Negative answers come from one template of the zone: hickory never compresses a name
//! against the question (it keeps the question's name, type and class together as one
//! compression candidate, which no name equals), so its NODATA and NXDOMAIN are the query's
//! question and the same SOA record bytes, whose compression pointers all point into the
//! record itself and move with the question's length; the two differ in the RCODE only. So a
//! member stores its TPKEY answer alone, and a name with no answer of its own gets NXDOMAIN —
//! in zones that delegate nothing (below a delegation the answer is a referral, which the
//! hickory path gives).

use hickory_proto::op::{MessageType, Metadata, OpCode, ResponseCode};
use std::hash::BuildHasher as _;
use std::sync::Arc;

use hickory_proto::rr::{LowerName, Name, Record, RecordSet, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

use super::{Answer, KeyZone, TPKEY_TYPE};
use crate::wire::{self, Question};

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

/// The encoded answers of one zone, by lower-cased wire name: one allocation a name (its
/// [`Owner`] bytes), found by a table of those allocations hashed by the name they begin with.
#[derive(Default)]
pub struct Encoded {
    names: hashbrown::HashTable<Box<[u8]>>,
    hasher: std::hash::RandomState,
    negative: Option<Negative>,
    // Every existing name has its answers and nothing is delegated: a name not in `names`
    // is NXDOMAIN.
    nxdomain: bool,
}

/// The NXDOMAIN response of the zone for a reference name, QTYPE zeroed, and where the
/// compression pointers of its record section are.
struct Negative {
    wire: Box<[u8]>,
    qname_len: usize,
    pointers: Box<[usize]>,
}

/// One name's answers, in one allocation:
/// `[n] other_nodata [k] (qtype:u16 index:u8)×k [b] (len:u16 response)×b`, then the name
/// (`n` bytes) only when there is no response to read it from (each response's question is
/// the name at offset 12).
/// `types`: QTYPEs with answers of their own and the index of theirs among the responses
/// (each distinct, QTYPE zeroed); unless `other_nodata`, the last response answers every
/// QTYPE not in `types`; with it, those get NODATA from the zone's negative template.
struct Owner<'a>(&'a [u8]);

impl<'a> Owner<'a> {
    fn pack(
        name: &[u8],
        other_nodata: bool,
        types: &[(u16, u8)],
        blobs: &[Vec<u8>],
    ) -> Option<Box<[u8]>> {
        let size = 3 + 3 * types.len() + 1 + blobs.iter().map(|b| 2 + b.len()).sum::<usize>();
        let mut out = Vec::with_capacity(size + name.len());
        out.push(u8::try_from(name.len()).ok()?);
        out.push(u8::from(other_nodata));
        out.push(u8::try_from(types.len()).ok()?);
        for &(t, i) in types {
            out.extend_from_slice(&t.to_be_bytes());
            out.push(i);
        }
        out.push(u8::try_from(blobs.len()).ok()?);
        for b in blobs {
            if b.get(12..12 + name.len()) != Some(name) {
                return None;
            }
            out.extend_from_slice(&u16::try_from(b.len()).ok()?.to_be_bytes());
            out.extend_from_slice(b);
        }
        if blobs.is_empty() {
            out.extend_from_slice(name);
        }
        Some(out.into_boxed_slice())
    }

    /// Where the responses start, and how many there are.
    fn responses(&self) -> Option<(usize, usize)> {
        let k = usize::from(*self.0.get(2)?);
        let at = 3 + 3 * k;
        Some((at + 1, usize::from(*self.0.get(at)?)))
    }

    fn name(&self) -> &'a [u8] {
        let b = self.0;
        let n = b.first().map_or(0, |&n| usize::from(n));
        let found = match self.responses() {
            Some((at, 0)) => b.get(at..at + n),
            Some((at, _)) => b.get(at + 2 + 12..at + 2 + 12 + n),
            None => None,
        };
        found.unwrap_or(&[])
    }

    /// The encoded answer to `qtype`; `None`: NODATA from the template.
    fn blob(&self, qtype: u16) -> Option<&'a [u8]> {
        let b = self.0;
        let other_nodata = *b.get(1)? != 0;
        let k = usize::from(*b.get(2)?);
        let types = b.get(3..3 + 3 * k)?;
        let (mut pos, count) = self.responses()?;
        let i = match types
            .chunks_exact(3)
            .find(|t| u16::from_be_bytes([t[0], t[1]]) == qtype)
        {
            Some(t) => usize::from(t[2]),
            None if other_nodata => return None,
            None => count.checked_sub(1)?,
        };
        for _ in 0..i {
            pos += 2 + usize::from(u16::from_be_bytes([*b.get(pos)?, *b.get(pos + 1)?]));
        }
        let len = usize::from(u16::from_be_bytes([*b.get(pos)?, *b.get(pos + 1)?]));
        b.get(pos + 2..pos + 2 + len)
    }
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
        let negative = Negative::build(zone);
        let hasher = std::hash::RandomState::new();
        // Every name that exists must have its answers, or NXDOMAIN would be wrong for it.
        let mut complete = true;
        // Each name's answers alone, over the cores (a name both an owner and a delegation
        // is encoded twice, the same). Owners are named by their members' text.
        let all: Vec<Named<'_>> = zone
            .names
            .iter()
            .map(Named::Name)
            .chain(zone.owners().map(Named::Owner))
            .collect();
        let encoded = super::par_map(&all, |named| {
            let lower = match named {
                Named::Name(l) => (*l).clone(),
                Named::Owner(o) => LowerName::new(&Name::from_ascii(o).ok()?),
            };
            let wire = Name::from(lower.clone()).to_bytes().ok()?;
            encode_owner(zone, &lower, &wire, negative.is_some())
        });
        drop(all);
        let mut names: hashbrown::HashTable<Box<[u8]>> =
            hashbrown::HashTable::with_capacity(encoded.len());
        for e in encoded {
            let Some(owner) = e else {
                complete = false;
                continue;
            };
            let name = Owner(&owner).name();
            let hash = hasher.hash_one(name);
            if let hashbrown::hash_table::Entry::Vacant(v) = names.entry(
                hash,
                |b| Owner(b).name() == name,
                |b| hasher.hash_one(Owner(b).name()),
            ) {
                v.insert(owner);
            }
        }
        Self {
            names,
            hasher,
            nxdomain: complete && zone.delegations.is_empty() && negative.is_some(),
            negative,
        }
    }

    /// Answer `q`, whose lower-cased wire name `name` lies in this zone, into `out`: from the
    /// name's encoded answers, or NXDOMAIN when the name has none and the zone delegates
    /// nothing. `None`: the hickory path answers.
    pub fn answer(&self, name: &[u8], q: &Question<'_>, out: &mut [u8]) -> Option<usize> {
        if !answerable(q.qtype) {
            return None;
        }
        let hash = self.hasher.hash_one(name);
        match self.names.find(hash, |b| Owner(b).name() == name) {
            Some(owner) => match Owner(owner).blob(q.qtype) {
                Some(template) => wire::write_answer(template, q, out),
                None => self.negative.as_ref()?.write(q, false, out),
            },
            None if self.nxdomain => self.negative.as_ref()?.write(q, true, out),
            None => None,
        }
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

impl Negative {
    fn build(zone: &KeyZone) -> Option<Self> {
        // A name of the zone that does not exist.
        let (lower, wire) = (0..64).find_map(|i| {
            let label = Name::from_ascii(format!("nxdomain{i}")).ok()?;
            let name = label.append_domain(zone.origin_name()).ok()?;
            let lower = LowerName::new(&name);
            (!zone.exists(&lower)).then(|| Some((lower, name.to_bytes().ok()?)))?
        })?;
        let mut b = encode(zone, &lower, &wire, OTHER, &parts(zone, &lower, OTHER))?;
        let qname_len = wire.len();
        let section = 12 + qname_len + 4;
        b.get_mut(qname_len + 12..qname_len + 14)?
            .copy_from_slice(&[0, 0]);
        // NXDOMAIN, AA; one question, one SOA in AUTHORITY, nothing else.
        if b.get(2..12)? != [0x84, 0x03, 0, 1, 0, 0, 0, 1, 0, 0].as_slice() {
            return None;
        }
        let mut pointers = Vec::new();
        let mut names_at = |b: &[u8], mut pos: usize| -> Option<usize> {
            loop {
                match *b.get(pos)? {
                    0 => return Some(pos + 1),
                    l if l & 0xc0 == 0xc0 => {
                        let to = usize::from(u16::from_be_bytes([l, *b.get(pos + 1)?]) & 0x3fff);
                        // Only pointers into the record section can be moved.
                        if to < section {
                            return None;
                        }
                        pointers.push(pos);
                        return Some(pos + 2);
                    }
                    l if l <= 63 => pos += 1 + usize::from(l),
                    _ => return None,
                }
            }
        };
        let owner_end = names_at(&b, section)?;
        let rtype = u16::from_be_bytes([*b.get(owner_end)?, *b.get(owner_end + 1)?]);
        let rdata = owner_end + 10;
        let mname_end = names_at(&b, rdata)?;
        let rname_end = names_at(&b, mname_end)?;
        if rtype != u16::from(RecordType::SOA) || rname_end + 20 != b.len() {
            return None;
        }
        Some(Self {
            wire: b.into_boxed_slice(),
            qname_len,
            pointers: pointers.into_boxed_slice(),
        })
    }

    /// NXDOMAIN (or NODATA) for `q`: the header, the query's question, the SOA moved behind.
    fn write(&self, q: &Question<'_>, nxdomain: bool, out: &mut [u8]) -> Option<usize> {
        let from = 12 + self.qname_len + 4;
        let to = 12 + q.qname.len() + 4;
        let n = to + self.wire.len().checked_sub(from)?;
        let dst = out.get_mut(..n)?;
        dst[..12].copy_from_slice(self.wire.get(..12)?);
        if !nxdomain {
            dst[3] &= 0xf0;
        }
        dst[to - 2..to].copy_from_slice(&[0, 1]);
        dst[to..].copy_from_slice(self.wire.get(from..)?);
        for &p in self.pointers.iter() {
            let at = p - from + to;
            let was = usize::from(u16::from_be_bytes([dst[at], dst[at + 1]]) & 0x3fff);
            let now = u16::try_from(was - from + to)
                .ok()
                .filter(|v| *v < 0x4000)?;
            dst[at..at + 2].copy_from_slice(&(0xc000 | now).to_be_bytes());
        }
        wire::finish_answer(out, n, q)
    }
}

impl KeyZone {
    /// The glue of the apex NS names — their A and AAAA rrsets, in the NS records' order —
    /// which an NS answer at the apex carries in ADDITIONAL, as NSD's does. (Here, beside the
    /// encoder, which must give what the handler gives.)
    pub fn ns_glue(&self) -> Vec<Arc<RecordSet>> {
        let mut glue: Vec<Arc<RecordSet>> = Vec::new();
        for r in self.ns.iter().flat_map(|s| s.records_without_rrsigs()) {
            let hickory_proto::rr::RData::NS(target) = &r.data else {
                continue;
            };
            let target = LowerName::new(&target.0);
            for t in [RecordType::A, RecordType::AAAA] {
                if let Some(set) = self.glue.get(&(target.clone(), t))
                    && !glue.iter().any(|g| Arc::ptr_eq(g, set))
                {
                    glue.push(set.clone());
                }
            }
        }
        glue
    }
}

/// A name to encode: one that exists without members, or an owner.
enum Named<'a> {
    Name(&'a LowerName),
    Owner(&'a str),
}

fn encode_owner(
    zone: &KeyZone,
    name: &LowerName,
    wire: &[u8],
    template: bool,
) -> Option<Box<[u8]>> {
    let zeroed = |rtype: RecordType, parts: &Parts| {
        let mut b = encode(zone, name, wire, rtype, parts)?;
        let at = qtype_at(wire.len());
        b.get_mut(at..at + 2)?.copy_from_slice(&[0, 0]);
        Some(b)
    };
    // Types whose answers are made of the same parts give the same bytes but for the QTYPE:
    // each shape is encoded once (a member's SOA, NS, A, AAAA and other types are one NODATA;
    // its ANY is its TPKEY answer).
    let other_parts = parts(zone, name, OTHER);
    let other_shape = shape(&other_parts, OTHER);
    let other_nodata = template && other_shape == Shape::NoData;
    let other = if other_nodata {
        None
    } else {
        Some(zeroed(OTHER, &other_parts)?)
    };
    let mut shapes: Vec<Shape> = Vec::new();
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut types = Vec::new();
    for rtype in TYPES {
        let p = parts(zone, name, rtype);
        let sh = shape(&p, rtype);
        if sh == other_shape {
            continue;
        }
        let i = match shapes.iter().position(|x| *x == sh) {
            Some(i) => i,
            None => {
                let Some(b) = zeroed(rtype, &p) else { continue };
                shapes.push(sh);
                blobs.push(b);
                blobs.len() - 1
            }
        };
        types.push((u16::from(rtype), u8::try_from(i).ok()?));
    }
    blobs.extend(other);
    Owner::pack(wire, other_nodata, &types, &blobs)
}

/// What an answer is made of, as [`encode`] puts it together: equal shapes, equal bytes. An
/// rrset is named by its owner and type (key sets are made anew by each lookup).
#[derive(PartialEq, Eq)]
enum Shape {
    Referral(SetId),
    /// The rrsets in ANSWER (AA set); the QTYPE when it adds records: SOA (the apex NS in
    /// AUTHORITY), NS at the apex (the glue in ADDITIONAL).
    Answer(Vec<SetId>, u16),
    NoData,
    NxDomain,
    None,
}

type SetId = (Name, RecordType);

fn set_id(set: &RecordSet) -> SetId {
    (set.name().clone(), set.record_type())
}

/// What the zone gives for `rtype` at a name, looked up once for both [`shape`] and
/// [`encode`] (a key set is made by each lookup).
struct Parts {
    referral: Option<Arc<RecordSet>>,
    found: Answer,
}

fn parts(zone: &KeyZone, name: &LowerName, rtype: RecordType) -> Parts {
    let referral = zone.referral(name, rtype);
    let found = if referral.is_some() {
        Answer::NotAuth
    } else {
        zone.lookup(name, rtype)
    };
    Parts { referral, found }
}

fn shape(parts: &Parts, rtype: RecordType) -> Shape {
    if let Some(set) = &parts.referral {
        return Shape::Referral(set_id(set));
    }
    match &parts.found {
        Answer::Records(set) => {
            let adds = matches!(rtype, RecordType::SOA | RecordType::NS);
            Shape::Answer(vec![set_id(set)], if adds { rtype.into() } else { 0 })
        }
        Answer::Many(sets) => Shape::Answer(sets.iter().map(|s| set_id(s)).collect(), 0),
        Answer::NoData => Shape::NoData,
        Answer::NxDomain => Shape::NxDomain,
        Answer::Referral(_) | Answer::NotAuth => Shape::None,
    }
}

/// The response the hickory path gives to `rtype` at `name`; `None` where it is no answer of
/// this zone's (outside it).
fn encode(
    zone: &KeyZone,
    name: &LowerName,
    wire: &[u8],
    rtype: RecordType,
    parts: &Parts,
) -> Option<Vec<u8>> {
    let mut question = wire.to_vec();
    question.extend_from_slice(&u16::from(rtype).to_be_bytes());
    question.extend_from_slice(&[0, 1]);
    let queries = Queries::read(&mut BinDecoder::new(&question), 1).ok()?;
    let request = Metadata::new(0, MessageType::Query, OpCode::Query);
    let mut meta = Metadata::response_from_request(&request);
    // The rrsets the sections borrow from.
    let Parts { referral, found } = parts;
    let apex_ns = match (found, rtype) {
        (Answer::Records(_), RecordType::SOA) => match zone.lookup(zone.origin(), RecordType::NS) {
            Answer::Records(ns) => Some(ns),
            _ => None,
        },
        _ => None,
    };
    let glue = if rtype == RecordType::NS && name == zone.origin() {
        zone.ns_glue()
    } else {
        Vec::new()
    };
    let mut answers: Vec<&Record> = Vec::new();
    let mut authorities: Vec<&Record> = Vec::new();
    let mut additionals: Vec<&Record> = Vec::new();
    if let Some(set) = referral {
        // The front handler's referral: AA clear, the child's records in AUTHORITY.
        authorities.extend(set.records_without_rrsigs());
    } else {
        // The Catalog's authoritative answer (build_authoritative_response in hickory-server).
        meta.authoritative = true;
        match found {
            Answer::Records(set) => {
                answers.extend(set.records_without_rrsigs());
                // An SOA answer carries the apex NS in AUTHORITY.
                if let Some(ns) = &apex_ns {
                    authorities.extend(ns.records_without_rrsigs());
                }
                // The apex NS answer carries its glue (the handler's additionals).
                additionals.extend(glue.iter().flat_map(|s| s.records_without_rrsigs()));
            }
            Answer::Many(sets) => {
                answers.extend(sets.iter().flat_map(|s| s.records_without_rrsigs()));
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
        additionals,
    );
    let mut buf = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut buf);
    response.destructive_emit(&mut encoder).ok()?;
    Some(buf)
}
