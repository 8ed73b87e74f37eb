//! A loaded key zone: every record checked, signed, indexed for lookups that do no crypto and
//! no allocation beyond hickory's own response building, and every plain answer encoded for
//! the UDP fast path ([`encoded`]).

use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hickory_proto::rr::rdata::{NULL, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType};

use crate::clpkc::PublicKey;
use crate::clpkc::{EntityKey, KgcParams};
use crate::record::{KeyRecord, RecordError, TPKEY};
use crate::zonefile::{Entry, ParsedZone, ZoneError, ZoneErrors};

pub mod encoded;
pub use encoded::Encoded;

/// Record type of TPKEY as hickory knows it.
pub const TPKEY_TYPE: RecordType = RecordType::Unknown(TPKEY);

/// Where a member record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A zone file line.
    File(std::sync::Arc<std::path::Path>, usize),
    /// Enrolled online, kept in the store.
    Store,
}

/// One TPKEY record of the zone, decoded.
#[derive(Debug, Clone)]
pub struct Member {
    /// Owner name (canonical, lower case, trailing dot).
    pub owner: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// The record, signed.
    pub record: KeyRecord,
    /// Where it came from.
    pub source: Source,
}

/// The key server's signing material as the zone loader needs it.
pub struct ZoneSigner<'a> {
    /// Params of this key server's KGC: every member must be issued under them.
    pub params: &'a KgcParams,
    /// This key server's own key: signs unsigned members, verifies signed ones.
    pub key: &'a EntityKey,
    /// A zone built earlier with the same key (the one being served): its members were
    /// signed or verified then, so identical ones are taken as they are, without crypto.
    pub verified: Option<&'a KeyZone>,
    /// Records this key server has just signed itself (an enrollment, a renewal), taken
    /// without verifying when a member is identical to one: (owner, record).
    pub fresh: &'a [(&'a str, &'a KeyRecord)],
}

/// What a lookup found.
pub enum Answer {
    /// Records of the queried name and type.
    Records(Arc<RecordSet>),
    /// Several rrsets (type ANY).
    Many(Vec<Arc<RecordSet>>),
    /// The name lies under a delegation: the child key server's records.
    Referral(Arc<RecordSet>),
    /// The name exists but has no records of that type.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// The name is not in this zone.
    NotAuth,
}

/// The members (indices into [`KeyZone::members`]) of one owner name.
enum Keys {
    One(u32),
    Many(Box<[u32]>),
}

impl Keys {
    fn indices(&self) -> &[u32] {
        match self {
            Keys::One(i) => std::slice::from_ref(i),
            Keys::Many(v) => v,
        }
    }
}

/// A checked, signed, indexed key zone.
pub struct KeyZone {
    origin: LowerName,
    origin_name: Name,
    soa: Arc<RecordSet>,
    // The SOA as negative answers carry it: TTL = min(SOA TTL, MINIMUM) (RFC 2308 §3).
    negative_soa: Arc<RecordSet>,
    ns: Option<Arc<RecordSet>>,
    // Owner → its members. Their hickory records are made when the hickory path asks (the
    // fast path serves the encoded bytes): no `Record` a member is kept.
    keys: HashMap<LowerName, Keys>,
    glue: HashMap<(LowerName, RecordType), Arc<RecordSet>>,
    names: HashSet<LowerName>,
    delegations: HashSet<LowerName>,
    members: Vec<Member>,
    withdrawn: Vec<Member>,
    // Filled by `encode`, at once by `build` or later by whoever built it unencoded.
    encoded: std::sync::OnceLock<Encoded>,
}

impl KeyZone {
    /// Check a parsed file plus the store's members and build the zone. Unsigned members
    /// are signed with `signer`; signed ones must verify under it. Any problem refuses the
    /// whole zone, with every problem listed.
    pub fn build(
        parsed: ParsedZone,
        stored: Vec<(String, u32, KeyRecord)>,
        serial_offset: u32,
        signer: &ZoneSigner<'_>,
        now: u64,
    ) -> Result<Self, ZoneErrors> {
        let zone = Self::build_unencoded(parsed, stored, serial_offset, signer, now)?;
        zone.encode();
        Ok(zone)
    }

    /// [`KeyZone::build`] without its last stage: the fast path answers nothing from this
    /// zone until [`KeyZone::encode`] has run (the hickory path answers everything). For a
    /// writer that swaps zones faster than they encode (a burst of enrollments).
    pub fn build_unencoded(
        parsed: ParsedZone,
        stored: Vec<(String, u32, KeyRecord)>,
        serial_offset: u32,
        signer: &ZoneSigner<'_>,
        now: u64,
    ) -> Result<Self, ZoneErrors> {
        Self::build_checked(parsed, stored, serial_offset, signer, now, None).map(|(z, _)| z)
    }

    /// [`KeyZone::build_unencoded`] with the digests of records whose signatures were checked
    /// in an earlier load ([`checked_digest`]): a member whose digest is in `checked` is taken
    /// without its ECDSA check. Also returns the digests of every member whose signature was
    /// checked here or found in `checked`, for the next load to skip.
    pub fn build_checked(
        parsed: ParsedZone,
        stored: Vec<(String, u32, KeyRecord)>,
        serial_offset: u32,
        signer: &ZoneSigner<'_>,
        now: u64,
        checked: Option<&HashSet<Digest>>,
    ) -> Result<(Self, Vec<Digest>), ZoneErrors> {
        let file = parsed.file.clone();
        let shared_file: std::sync::Arc<std::path::Path> = file.as_path().into();
        let mut errors = parsed.errors.clone();
        let mut err = |line: usize, reason: String| {
            errors.push(ZoneError {
                file: file.clone(),
                line,
                reason,
            })
        };
        let origin_name = parsed.origin.clone();
        let origin = LowerName::new(&origin_name);
        let origin_str = origin_name.to_ascii().to_ascii_lowercase();
        if origin_str != signer.params.name {
            err(
                0,
                format!(
                    "zone {origin_str} is served by a key server whose params name {}",
                    signer.params.name
                ),
            );
        }
        let digest = signer.params.digest();

        let mut soa: Option<(usize, SOA, u32)> = None;
        let mut ns = Vec::new();
        let mut glue_lines = Vec::new();
        let mut members = Vec::with_capacity(parsed.lines.len() + stored.len());
        for line in parsed.lines {
            let owner_l = LowerName::new(&line.owner);
            if !origin.zone_of(&owner_l) {
                err(
                    line.line,
                    format!("{} is outside the zone {origin_str}", line.owner),
                );
                continue;
            }
            match line.entry {
                Entry::Soa(s) => {
                    if owner_l != origin {
                        err(line.line, "SOA must be at the zone apex".into());
                    } else if let Some((first, ..)) = soa {
                        err(
                            line.line,
                            format!("second SOA (the first is on line {first})"),
                        );
                    } else {
                        soa = Some((line.line, s, line.ttl));
                    }
                }
                Entry::Ns(target) => {
                    if owner_l != origin {
                        err(
                            line.line,
                            "NS records belong at the apex only; delegate with a TPKEY KS record"
                                .into(),
                        );
                    } else {
                        ns.push(Record::from_rdata(
                            line.owner.clone(),
                            line.ttl,
                            RData::NS(hickory_proto::rr::rdata::NS(target)),
                        ));
                    }
                }
                Entry::Glue(ip) => glue_lines.push((line.line, line.owner, line.ttl, ip)),
                Entry::Key(rec) => members.push(Member {
                    owner: line.owner.to_ascii().to_ascii_lowercase(),
                    ttl: line.ttl,
                    record: rec,
                    source: Source::File(shared_file.clone(), line.line),
                }),
            }
        }
        // A/AAAA only as glue of the zone's own name servers (secondaries such as Knot warn
        // about in-zone NS names without it).
        let ns_targets: HashSet<LowerName> = ns
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(n) => Some(LowerName::new(&n.0)),
                _ => None,
            })
            .collect();
        let mut glue_sets: HashMap<(LowerName, RecordType), RecordSet> = HashMap::new();
        for (line, owner, ttl, ip) in glue_lines {
            let l = LowerName::new(&owner);
            if !ns_targets.contains(&l) {
                err(
                    line,
                    format!(
                        "{owner}: A/AAAA records in a key zone are only glue for the zone's own NS names"
                    ),
                );
                continue;
            }
            let (rtype, rdata) = match ip {
                std::net::IpAddr::V4(a) => (RecordType::A, RData::A(a.into())),
                std::net::IpAddr::V6(a) => (RecordType::AAAA, RData::AAAA(a.into())),
            };
            glue_sets
                .entry((l, rtype))
                .or_insert_with(|| RecordSet::new(owner.clone(), rtype, 0))
                .insert(Record::from_rdata(owner.clone(), ttl, rdata), 0);
        }
        for (owner, ttl, record) in stored {
            members.push(Member {
                owner,
                ttl,
                record,
                source: Source::Store,
            });
        }
        let Some((_, soa_rdata, soa_ttl)) = soa else {
            err(0, "the zone has no SOA record".into());
            return Err(ZoneErrors(errors));
        };

        let known: HashMap<(&str, std::net::IpAddr), &KeyRecord> = signer
            .verified
            .into_iter()
            .flat_map(|z| z.members.iter().map(|m| (m.owner.as_str(), &m.record)))
            .chain(signer.fresh.iter().copied())
            .map(|(owner, record)| ((owner, record.ip), record))
            .collect();
        // Unchanged since the served zone was built (same fields, and the same signature or
        // none): the signed record to take as it is, without crypto.
        let unchanged = |m: &Member| {
            known
                .get(&(m.owner.as_str(), m.record.ip))
                .filter(|prior| {
                    m.record
                        .signature
                        .is_none_or(|s| Some(s) == prior.signature)
                        && KeyRecord {
                            signature: prior.signature,
                            ..m.record.clone()
                        } == ***prior
                })
                .map(|prior| prior.signature)
        };
        // The signature checks (the load's cost), spread over the cores: for each member that
        // the checks below would verify, its result and its digest.
        let issuer_q = signer.key.public();
        type Check = Option<(Result<(), RecordError>, Option<Digest>)>;
        let verified: Vec<Check> = par_map(&members, |m| {
            let r = &m.record;
            if r.signature.is_none()
                || r.issuer != digest
                || r.not_before >= r.not_after
                || now > u64::from(r.not_after)
                || unchanged(m).is_some()
            {
                return None;
            }
            let d = checked_digest(issuer_q, &m.owner, r);
            let known = checked.is_some_and(|c| d.is_some_and(|d| c.contains(&d)));
            let result = if known {
                Ok(())
            } else {
                r.verify_signature(&m.owner, issuer_q)
            };
            Some((result, d))
        });
        let mut verified = verified.into_iter();
        let mut digests = Vec::new();

        // Members: issuer, signature, validity, duplicates, placement.
        // (owner, IP) → the line of its first key (0: enrolled).
        let mut seen: HashMap<(String, std::net::IpAddr), usize> =
            HashMap::with_capacity(members.len());
        let mut delegations = HashSet::new();
        // Owner names parsed once; a bad one is reported below and refuses the zone.
        let mut owners: Vec<Option<Name>> = par_map(&members, |m| Name::from_ascii(&m.owner).ok());
        // Members past their window: withdrawn (not served, the zone still loads).
        let mut expired = HashSet::new();
        for (i, (m, owner_name)) in members.iter_mut().zip(&owners).enumerate() {
            let check = verified.next().flatten();
            let line = match &m.source {
                Source::File(_, l) => *l,
                Source::Store => 0,
            };
            // Made only for an error: most builds have none, and members are many.
            let whence = |line: usize, m: &Member| match line {
                0 => format!("enrolled member {} {}", m.owner, m.record.ip),
                l => format!("line {l}"),
            };
            let prefix = |m: &Member| match line {
                0 => format!("{}: ", whence(0, m)),
                _ => String::new(),
            };
            let Some(owner_name) = owner_name else {
                err(line, format!("{}bad owner name {}", prefix(m), m.owner));
                continue;
            };
            let owner_l = LowerName::new(owner_name);
            if !origin.zone_of(&owner_l) {
                err(
                    line,
                    format!("{}{} is outside the zone", prefix(m), m.owner),
                );
                continue;
            }
            if m.record.issuer != digest {
                err(
                    line,
                    format!(
                        "{}issued under params {} but this key server's params are {}",
                        prefix(m),
                        hex::encode(m.record.issuer),
                        hex::encode(digest)
                    ),
                );
                continue;
            }
            if m.record.not_before >= m.record.not_after {
                err(line, format!("{}validity window is empty", prefix(m)));
                continue;
            }
            // Withdrawn before any crypto: an expired member costs no signature.
            if now > u64::from(m.record.not_after) {
                expired.insert(i);
                continue;
            }
            let already = match unchanged(m) {
                Some(signature) => {
                    m.record.signature = signature;
                    true
                }
                None => false,
            };
            match m.record.signature {
                _ if already => {}
                None => {
                    if let Err(e) = m.record.sign(&m.owner, signer.key) {
                        err(line, format!("{}cannot sign: {e}", prefix(m)));
                        continue;
                    }
                }
                Some(_) => {
                    let (result, d) = check
                        .unwrap_or_else(|| (m.record.verify_signature(&m.owner, issuer_q), None));
                    if let Err(e) = result {
                        let why = if matches!(e, RecordError::Point(_)) {
                            ""
                        } else {
                            " (forged, or signed by another key server)"
                        };
                        err(line, format!("{}{e}{why}", prefix(m)));
                        continue;
                    }
                    digests.extend(d);
                }
            }
            if let Some(first) = seen.insert((m.owner.clone(), m.record.ip), line) {
                err(
                    line,
                    format!(
                        "{}duplicate key for {} {} (first at {})",
                        prefix(m),
                        m.owner,
                        m.record.ip,
                        whence(first, m)
                    ),
                );
                continue;
            }
            if m.record.key_server.is_some() && owner_l != origin {
                delegations.insert(owner_l);
            }
        }
        let mut withdrawn = Vec::new();
        if !expired.is_empty() {
            let mut i = 0;
            let mut keep_owner = owners.into_iter();
            let mut kept_owners = Vec::new();
            members.retain(|m| {
                let o = keep_owner.next().flatten();
                let gone = expired.contains(&i);
                i += 1;
                if gone {
                    withdrawn.push(m.clone());
                } else {
                    kept_owners.push(o);
                }
                !gone
            });
            owners = kept_owners;
        }
        // Entities may not sit below a delegation: the child key server owns them.
        if !delegations.is_empty() {
            for (m, owner) in members.iter().zip(&owners) {
                let Some(owner) = owner else { continue };
                let mut n = LowerName::new(owner).base_name();
                while n.num_labels() > origin.num_labels() {
                    if delegations.contains(&n) {
                        let line = match &m.source {
                            Source::File(_, l) => *l,
                            Source::Store => 0,
                        };
                        err(
                            line,
                            format!("{} lies below the delegation to key server {n}", m.owner),
                        );
                        break;
                    }
                    n = n.base_name();
                }
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            return Err(ZoneErrors(errors));
        }

        let mut soa_rdata = soa_rdata;
        soa_rdata.serial = soa_rdata.serial.wrapping_add(serial_offset);
        let serial = soa_rdata.serial;
        let negative_ttl = soa_ttl.min(soa_rdata.minimum);
        let negative_soa = single_set(Record::from_rdata(
            origin_name.clone(),
            negative_ttl,
            RData::SOA(soa_rdata.clone()),
        ));
        let soa_set = single_set(Record::from_rdata(
            origin_name.clone(),
            soa_ttl,
            RData::SOA(soa_rdata),
        ));
        let ns_set = (!ns.is_empty()).then(|| {
            let mut set = RecordSet::new(origin_name.clone(), RecordType::NS, serial);
            for r in ns {
                set.insert(r, serial);
            }
            Arc::new(set)
        });

        members.shrink_to_fit();
        let mut keys: HashMap<LowerName, Keys> = HashMap::with_capacity(members.len());
        let mut names = HashSet::with_capacity(members.len() + 1);
        names.insert(origin.clone());
        for (i, owner) in owners.iter().enumerate() {
            let (Some(owner), Ok(i)) = (owner, u32::try_from(i)) else {
                continue;
            };
            let l = LowerName::new(owner);
            match keys.entry(l.clone()) {
                Slot::Occupied(mut e) => {
                    let more: Vec<u32> = e.get().indices().iter().copied().chain([i]).collect();
                    e.insert(Keys::Many(more.into_boxed_slice()));
                }
                Slot::Vacant(e) => {
                    e.insert(Keys::One(i));
                }
            }
            add_with_ancestors(&mut names, l, &origin);
        }
        for (l, _) in glue_sets.keys() {
            add_with_ancestors(&mut names, l.clone(), &origin);
        }
        let glue = glue_sets
            .into_iter()
            .map(|(k, v)| (k, Arc::new(v)))
            .collect();
        let zone = Self {
            glue,
            origin,
            origin_name,
            soa: soa_set,
            negative_soa,
            ns: ns_set,
            keys,
            names,
            delegations,
            members,
            withdrawn,
            encoded: std::sync::OnceLock::new(),
        };
        Ok((zone, digests))
    }

    /// Encode every plain answer of the zone (the encode stage), once.
    pub fn encode(&self) {
        self.encoded.get_or_init(|| Encoded::build(self));
    }

    /// Every plain answer of the zone, encoded (the UDP fast path's); `None` until
    /// [`KeyZone::encode`] has run.
    pub fn encoded(&self) -> Option<&Encoded> {
        self.encoded.get()
    }

    /// Members left out because their validity window has ended (see `tp ctl renew`).
    pub fn withdrawn(&self) -> &[Member] {
        &self.withdrawn
    }

    /// The zone's apex.
    pub fn origin(&self) -> &LowerName {
        &self.origin
    }

    /// The zone's apex as a name.
    pub fn origin_name(&self) -> &Name {
        &self.origin_name
    }

    /// The SOA rrset.
    pub fn soa(&self) -> &Arc<RecordSet> {
        &self.soa
    }

    /// The SOA for the authority section of NXDOMAIN/NODATA answers (RFC 2308 TTL).
    pub fn negative_soa(&self) -> &Arc<RecordSet> {
        &self.negative_soa
    }

    /// Current serial.
    pub fn serial(&self) -> u32 {
        match self.soa.records_without_rrsigs().next().map(|r| &r.data) {
            Some(RData::SOA(s)) => s.serial,
            _ => 0,
        }
    }

    /// Every member record, decoded.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Every record of the zone in transfer order, SOA first (the caller repeats it last).
    pub fn transfer_records(&self) -> Vec<Record> {
        let soa = self.soa.records_without_rrsigs();
        let ns = self.ns.iter().flat_map(|s| s.records_without_rrsigs());
        let glue = self.glue.values().flat_map(|s| s.records_without_rrsigs());
        let mut all: Vec<Record> = soa.chain(ns).chain(glue).cloned().collect();
        all.reserve(self.members.len());
        for (owner, keys) in &self.keys {
            let owner = Name::from(owner.clone());
            all.extend(
                keys.indices()
                    .iter()
                    .filter_map(|&i| self.key_record(&owner, i)),
            );
        }
        all
    }

    /// Member `i` as a hickory record of `owner`.
    fn key_record(&self, owner: &Name, i: u32) -> Option<Record> {
        let m = self.members.get(usize::try_from(i).ok()?)?;
        let wire = m.record.to_wire().ok()?;
        Some(Record::from_rdata(
            owner.clone(),
            m.ttl,
            RData::Unknown {
                code: TPKEY_TYPE,
                rdata: NULL::with(wire),
            },
        ))
    }

    /// The TPKEY rrset of `name`, made from its members.
    fn key_set(&self, name: &LowerName) -> Option<Arc<RecordSet>> {
        let keys = self.keys.get(name)?;
        let owner = Name::from(name.clone());
        let mut records = keys
            .indices()
            .iter()
            .filter_map(|&i| self.key_record(&owner, i));
        let mut set = RecordSet::from(records.next()?);
        for r in records {
            set.insert(r, 0);
        }
        Some(Arc::new(set))
    }

    /// The delegation covering `name`, if `name` is strictly below one.
    fn delegation_above(&self, name: &LowerName) -> Option<&LowerName> {
        if self.delegations.is_empty() {
            return None;
        }
        if self.delegations.len() <= 8 {
            return self
                .delegations
                .iter()
                .find(|d| *d != name && d.zone_of(name));
        }
        let mut n = name.base_name();
        while n.num_labels() > self.origin.num_labels() {
            if let Some(d) = self.delegations.get(&n) {
                return Some(d);
            }
            n = n.base_name();
        }
        None
    }

    /// The one referral decision: the child key server's records when `name`/`rtype` must be
    /// answered by a referral — any name below a delegation, and any type but TPKEY (the
    /// child's own record, which this zone serves) and ANY at the delegation itself. The
    /// server's front handler (AUTHORITY, AA clear) and the encoded answers take theirs from
    /// here. Cheap when the zone delegates nothing (the common leaf zone).
    pub fn referral(&self, name: &LowerName, rtype: RecordType) -> Option<Arc<RecordSet>> {
        if self.delegations.is_empty() {
            return None;
        }
        if let Some(d) = self.delegation_above(name) {
            return self.key_set(d);
        }
        if rtype != TPKEY_TYPE && rtype != RecordType::ANY && self.delegations.contains(name) {
            return self.key_set(name);
        }
        None
    }

    /// Look up `name`/`rtype`: answers, referrals, NODATA, NXDOMAIN.
    pub fn lookup(&self, name: &LowerName, rtype: RecordType) -> Answer {
        if !self.origin.zone_of(name) {
            return Answer::NotAuth;
        }
        if let Some(set) = self.referral(name, rtype) {
            return Answer::Referral(set);
        }
        let at_apex = *name == self.origin;
        match rtype {
            RecordType::SOA if at_apex => Answer::Records(self.soa.clone()),
            RecordType::NS if at_apex => match &self.ns {
                Some(ns) => Answer::Records(ns.clone()),
                None => Answer::NoData,
            },
            RecordType::ANY => {
                let mut sets = Vec::new();
                if at_apex {
                    sets.push(self.soa.clone());
                    sets.extend(self.ns.clone());
                }
                sets.extend(self.key_set(name));
                for t in [RecordType::A, RecordType::AAAA] {
                    sets.extend(self.glue.get(&(name.clone(), t)).cloned());
                }
                if sets.is_empty() {
                    self.absent(name)
                } else {
                    Answer::Many(sets)
                }
            }
            t if t == TPKEY_TYPE => match self.key_set(name) {
                Some(set) => Answer::Records(set),
                None => self.absent(name),
            },
            RecordType::A | RecordType::AAAA if !self.glue.is_empty() => {
                match self.glue.get(&(name.clone(), rtype)) {
                    Some(set) => Answer::Records(set.clone()),
                    None => self.absent(name),
                }
            }
            _ => self.absent(name),
        }
    }

    fn absent(&self, name: &LowerName) -> Answer {
        if self.names.contains(name) {
            Answer::NoData
        } else {
            Answer::NxDomain
        }
    }
}

/// A name and its empty non-terminals up to the apex exist (NODATA, not NXDOMAIN).
/// SHA-256 of a record checked under a key server's key.
pub type Digest = [u8; 32];

/// The digest naming one successful signature check: SHA-256 over a tag, the verifying key
/// (SEC1 compressed), everything the signature covers (type, owner, RDATA without the
/// signature: [`KeyRecord::signed_message`]) and the signature. Any change to the record, its
/// owner, its signature or the key gives another digest. `None` when the record is unsigned
/// or its owner is not a name (its check fails anyway).
pub fn checked_digest(key: &PublicKey, owner: &str, record: &KeyRecord) -> Option<Digest> {
    use sha2::Digest as _;
    let sig = record.signature.as_ref()?;
    let msg = record.signed_message(owner).ok()?;
    let mut h = sha2::Sha256::new();
    h.update(b"TP-CHECKED-v1");
    h.update(crate::clpkc::point_to_bytes(key));
    h.update((msg.len() as u32).to_be_bytes());
    h.update(&msg);
    h.update(sig);
    Some(h.finalize().into())
}

/// `f` over `items`, results in order, spread over the cores.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || items.len() < 64 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn add_with_ancestors(names: &mut HashSet<LowerName>, name: LowerName, origin: &LowerName) {
    let mut n = name;
    while n.num_labels() > origin.num_labels() {
        let up = n.base_name();
        if !names.insert(n) {
            // Its ancestors are in already.
            break;
        }
        n = up;
    }
}

fn single_set(record: Record) -> Arc<RecordSet> {
    let mut set = RecordSet::new(record.name.clone(), record.record_type(), 0);
    set.insert(record, 0);
    Arc::new(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clpkc::{Identity, KeyRequest, Kgc, SecretValue};
    use rand_core::OsRng;

    const NOW: u64 = 1_800_000_000;

    /// A KGC for example.com. and its key server's own key.
    fn key_server() -> (Kgc, EntityKey) {
        let kgc = Kgc::setup("example.com.", &mut OsRng).unwrap();
        let id = Identity::new("example.com.", "127.0.0.3".parse().unwrap(), kgc.params()).unwrap();
        let x = SecretValue::generate(&mut OsRng);
        let pk = kgc
            .extract(&KeyRequest::new(id.clone(), &x), &mut OsRng)
            .unwrap();
        let own = EntityKey::combine(&id, &x, &pk, kgc.params()).unwrap();
        (kgc, own)
    }

    fn member(kgc: &Kgc, own: &EntityKey, name: &str, ip: &str) -> KeyRecord {
        let id = Identity::new(name, ip.parse().unwrap(), kgc.params()).unwrap();
        let x = SecretValue::generate(&mut OsRng);
        let pk = kgc.extract(&KeyRequest::new(id, &x), &mut OsRng).unwrap();
        let mut rec = KeyRecord {
            ip: ip.parse().unwrap(),
            w: pk.w.into(),
            issuer: kgc.params().digest(),
            not_before: 1_700_000_000,
            not_after: 1_900_000_000,
            key_server: None,
            signature: None,
        };
        rec.sign(name, own).unwrap();
        rec
    }

    fn zone_text(members: &[(&str, &KeyRecord)]) -> ParsedZone {
        let mut text = String::from(
            "$ORIGIN example.com.\n@ 3600 IN SOA ns hostmaster 1 7200 3600 1209600 300\n",
        );
        for (name, rec) in members {
            text.push_str(&format!("{name} 3600 IN TPKEY {rec}\n"));
        }
        let origin = Name::from_ascii("example.com.").unwrap();
        crate::zonefile::parse(std::path::Path::new("z.keys"), &text, &origin)
            .unwrap()
            .strict()
            .unwrap()
    }

    #[test]
    fn checked_records_skip_their_check_and_changed_ones_are_checked_again() {
        let (kgc, own) = key_server();
        let a = member(&kgc, &own, "a.example.com.", "10.0.0.1");
        let b = member(&kgc, &own, "b.example.com.", "10.0.0.2");
        let signer = ZoneSigner {
            params: kgc.params(),
            key: &own,
            verified: None,
            fresh: &[],
        };
        let build = |members: &[(&str, &KeyRecord)], checked: Option<&HashSet<Digest>>| {
            KeyZone::build_checked(zone_text(members), vec![], 0, &signer, NOW, checked)
        };
        let (_, digests) = build(&[("a", &a), ("b", &b)], None).unwrap();
        assert_eq!(digests.len(), 2);
        let checked: HashSet<Digest> = digests.iter().copied().collect();
        let (zone, again) = build(&[("a", &a), ("b", &b)], Some(&checked)).unwrap();
        assert_eq!(again, digests);
        assert_eq!(zone.members().len(), 2);

        // A changed field under the old signature: its digest is new, so it is checked, and
        // refused with its line, though the old form's digest is in the set.
        let mut moved = b.clone();
        moved.not_after -= 1;
        let refused = build(&[("a", &a), ("b", &moved)], Some(&checked))
            .err()
            .unwrap()
            .0;
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].line, 4);
        assert!(refused[0].reason.contains("does not verify"), "{refused:?}");
        // The same signature at another owner.
        let refused = build(&[("a", &a), ("c", &b)], Some(&checked))
            .err()
            .unwrap()
            .0;
        assert_eq!(refused.len(), 1, "{refused:?}");

        // The digest binds the key, the owner, every field and the signature.
        let (_, other) = key_server();
        let d = |key: &PublicKey, owner: &str, r: &KeyRecord| checked_digest(key, owner, r);
        let base = d(own.public(), "b.example.com.", &b);
        assert!(base.is_some());
        assert_ne!(d(other.public(), "b.example.com.", &b), base);
        assert_ne!(d(own.public(), "c.example.com.", &b), base);
        assert_ne!(d(own.public(), "b.example.com.", &moved), base);
        let mut resigned = b.clone();
        resigned.signature = a.signature;
        assert_ne!(d(own.public(), "b.example.com.", &resigned), base);
        resigned.signature = None;
        assert_eq!(d(own.public(), "b.example.com.", &resigned), None);
    }
}
