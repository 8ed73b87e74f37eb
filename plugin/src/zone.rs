//! A loaded key zone: every record checked, signed, indexed for lookups that do no crypto and
//! no allocation beyond hickory's own response building, and every plain answer encoded for
//! the UDP fast path ([`encoded`]).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher as _;
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
    /// Its zone-file line's record, when a re-signed copy is served in its place.
    pub written: Option<Box<KeyRecord>>,
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

/// Owner names to their members (indices into [`KeyZone::members`]), hashed by the labels of
/// the owner text the members hold: 4 bytes a slot, no name stored again. A slot is a member's
/// index, or `MANY | k` for the owners with several keys (`many[k]`). Owners whose text is not
/// plain lower-case labels (escapes, upper case) are in `odd`, by name.
#[derive(Default)]
struct Owners {
    table: hashbrown::HashTable<u32>,
    many: Vec<Vec<u32>>,
    odd: HashMap<LowerName, Vec<u32>>,
    hasher: std::hash::RandomState,
}

const MANY: u32 = 1 << 31;

impl Owners {
    fn with_capacity(n: usize) -> Self {
        Self {
            table: hashbrown::HashTable::with_capacity(n),
            ..Self::default()
        }
    }

    fn indices<'a>(many: &'a [Vec<u32>], slot: &'a u32) -> &'a [u32] {
        match slot {
            s if s & MANY != 0 => many.get((s & !MANY) as usize).map_or(&[], |v| &v[..]),
            s => std::slice::from_ref(s),
        }
    }

    /// The owner string of a slot's members.
    fn owner<'m>(members: &'m [Member], many: &[Vec<u32>], slot: &u32) -> &'m str {
        Self::indices(many, slot)
            .first()
            .and_then(|&i| members.get(i as usize))
            .map_or("", |m| m.owner.as_str())
    }

    /// Member `i` (`i < MANY`), whose owner is `name`, added to the members of its owner.
    fn insert(&mut self, members: &[Member], i: u32, name: &LowerName) {
        let Some(m) = members.get(i as usize) else {
            return;
        };
        let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b);
        if !m.owner.bytes().all(plain) {
            self.odd.entry(name.clone()).or_default().push(i);
            return;
        }
        let Self {
            table,
            many,
            hasher,
            ..
        } = self;
        let hash = hash_labels(hasher, text_labels(&m.owner));
        let entry = table.entry(
            hash,
            |s| Self::owner(members, many, s) == m.owner,
            |s| hash_labels(hasher, text_labels(Self::owner(members, many, s))),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut e) => {
                let s = *e.get();
                if s & MANY != 0 {
                    if let Some(v) = many.get_mut((s & !MANY) as usize) {
                        v.push(i);
                    }
                } else if let Ok(k) = u32::try_from(many.len()) {
                    many.push(vec![s, i]);
                    *e.get_mut() = MANY | k;
                }
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(i);
            }
        }
    }

    /// The members of `name`: found by its labels, no allocation (but for the odd owners).
    fn get<'a>(&'a self, members: &[Member], name: &LowerName) -> Option<&'a [u32]> {
        let hash = hash_labels(&self.hasher, name.iter());
        let found = self
            .table
            .find(hash, |s| {
                text_labels(Self::owner(members, &self.many, s)).eq(name.iter())
            })
            .map(|s| Self::indices(&self.many, s));
        match found {
            None if !self.odd.is_empty() => self.odd.get(name).map(|v| &v[..]),
            found => found,
        }
    }

    /// Every owner's members.
    fn iter(&self) -> impl Iterator<Item = &[u32]> + '_ {
        let plain = self.table.iter().map(|s| Self::indices(&self.many, s));
        plain.chain(self.odd.values().map(|v| &v[..]))
    }
}

/// The labels of an owner text with no escapes (what the table holds): a name's labels, as
/// [`Name::iter`] gives them.
fn text_labels(owner: &str) -> impl Iterator<Item = &[u8]> {
    owner
        .strip_suffix('.')
        .unwrap_or(owner)
        .split('.')
        .filter(|l| !l.is_empty())
        .map(str::as_bytes)
}

/// A name's hash by its labels.
fn hash_labels<'a>(hasher: &std::hash::RandomState, labels: impl Iterator<Item = &'a [u8]>) -> u64 {
    use std::hash::Hasher as _;
    let mut h = hasher.build_hasher();
    for l in labels {
        h.write_usize(l.len());
        h.write(l);
    }
    h.finish()
}

/// Problems found while building, each with its line.
struct Errors {
    file: std::path::PathBuf,
    list: Vec<ZoneError>,
}

impl Errors {
    fn at(&mut self, line: usize, reason: String) {
        self.list.push(ZoneError {
            file: self.file.clone(),
            line,
            reason,
        });
    }
}

/// The records of a zone by kind (the sort stage's result).
struct Sorted {
    file: std::path::PathBuf,
    // The file's lines other than keys (SOA, NS, glue), as parsed.
    others: Vec<crate::zonefile::Line>,
    origin_name: Name,
    origin: LowerName,
    soa: SOA,
    soa_ttl: u32,
    ns: Vec<Record>,
    glue: HashMap<(LowerName, RecordType), RecordSet>,
    members: Vec<Member>,
}

/// What the check stage found, by member index.
#[derive(Default)]
struct Found {
    /// Each member's owner name, parsed (`None`: refused).
    owners: Vec<Option<Name>>,
    /// Members past their window: withdrawn.
    expired: HashSet<usize>,
    /// Members the sign stage signs.
    unsigned: Vec<usize>,
    /// Digests of the signature checks made or taken as made.
    digests: Vec<Digest>,
    /// Owners of KS records below the apex.
    delegations: HashSet<LowerName>,
}

impl Member {
    /// The member's zone-file line (0: enrolled).
    fn line(&self) -> usize {
        match &self.source {
            Source::File(_, l) => *l,
            Source::Store => 0,
        }
    }

    /// The validity window its zone-file line writes (`None`: enrolled).
    pub fn line_window(&self) -> Option<(u32, u32)> {
        let Source::File(..) = self.source else {
            return None;
        };
        let r = self.written.as_deref().unwrap_or(&self.record);
        Some((r.not_before, r.not_after))
    }

    /// Where a member at `line` is, for a message (made only for an error).
    fn whence(&self, line: usize) -> String {
        match line {
            0 => format!("enrolled member {} {}", self.owner, self.record.ip),
            l => format!("line {l}"),
        }
    }

    /// The start of a message about this member: enrolled members are named, lines carry
    /// their number already.
    fn prefix(&self) -> String {
        match self.line() {
            0 => format!("{}: ", self.whence(0)),
            _ => String::new(),
        }
    }
}

/// A checked, signed, indexed key zone.
pub struct KeyZone {
    // The zone file it was built from, and that file's lines other than keys: with the
    // members' sources, the file as loaded ([`KeyZone::written`]).
    file: std::path::PathBuf,
    others: Vec<crate::zonefile::Line>,
    origin: LowerName,
    origin_name: Name,
    soa: Arc<RecordSet>,
    // The SOA as negative answers carry it: TTL = min(SOA TTL, MINIMUM) (RFC 2308 §3).
    negative_soa: Arc<RecordSet>,
    ns: Option<Arc<RecordSet>>,
    // Owner → its members. Their hickory records are made when the hickory path asks (the
    // fast path serves the encoded bytes): no `Record` a member is kept.
    keys: Owners,
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
    ///
    /// The stages, each a function of its own: `sort` (records by kind, glue, placement in the
    /// zone), `check` (issuer, window, signature, duplicates, delegations), `sign` (unsigned
    /// members, over the cores), `index` (the lookup structures); then [`KeyZone::encode`].
    pub fn build_checked(
        parsed: ParsedZone,
        stored: Vec<(String, u32, KeyRecord)>,
        serial_offset: u32,
        signer: &ZoneSigner<'_>,
        now: u64,
        checked: Option<&HashSet<Digest>>,
    ) -> Result<(Self, Vec<Digest>), ZoneErrors> {
        let mut errors = Errors {
            file: parsed.file.clone(),
            list: parsed.errors.clone(),
        };
        let t = std::time::Instant::now();
        let Some(mut sorted) = Self::sort(parsed, stored, signer, &mut errors) else {
            return Err(ZoneErrors(errors.list));
        };
        let sort = t.elapsed();
        let mut found = Self::check(&mut sorted, signer, now, checked, &mut errors);
        let check = t.elapsed() - sort;
        Self::sign(&mut sorted.members, &found.unsigned, signer, &mut errors);
        let sign = t.elapsed() - sort - check;
        if !errors.list.is_empty() {
            errors.list.sort_by_key(|e| e.line);
            return Err(ZoneErrors(errors.list));
        }
        let digests = std::mem::take(&mut found.digests);
        let (verified, signed) = (digests.len(), found.unsigned.len());
        let zone = Self::index(sorted, found, serial_offset);
        let index = t.elapsed() - sort - check - sign;
        tracing::debug!(
            zone = %zone.origin,
            members = zone.members.len(),
            verified,
            signed,
            sort_us = sort.as_micros() as u64,
            check_us = check.as_micros() as u64,
            sign_us = sign.as_micros() as u64,
            index_us = index.as_micros() as u64,
            "zone built"
        );
        Ok((zone, digests))
    }

    /// Stage 1: the file's and the store's records by kind (SOA, NS, glue, members), each
    /// inside the zone and in its place. `None` when there is no SOA (nothing else can go on).
    fn sort(
        parsed: ParsedZone,
        stored: Vec<(String, u32, KeyRecord)>,
        signer: &ZoneSigner<'_>,
        errors: &mut Errors,
    ) -> Option<Sorted> {
        let shared_file: Arc<std::path::Path> = parsed.file.as_path().into();
        let origin_name = parsed.origin.clone();
        let origin = LowerName::new(&origin_name);
        let origin_str = origin_name.to_ascii().to_ascii_lowercase();
        if origin_str != signer.params.name {
            errors.at(
                0,
                format!(
                    "zone {origin_str} is served by a key server whose params name {}",
                    signer.params.name
                ),
            );
        }
        let mut soa: Option<(usize, SOA, u32)> = None;
        let mut ns = Vec::new();
        let mut glue_lines = Vec::new();
        let mut members = Vec::with_capacity(parsed.lines.len() + stored.len());
        let mut others = Vec::new();
        let mut lines = parsed.lines;
        // Each line's placement, and the lines other than keys (few), in file order.
        let mut inside = Vec::with_capacity(lines.len());
        for line in &lines {
            let owner_l = LowerName::new(&line.owner);
            let here = origin.zone_of(&owner_l);
            inside.push(here);
            if !here {
                errors.at(
                    line.line,
                    format!("{} is outside the zone {origin_str}", line.owner),
                );
                continue;
            }
            if !matches!(line.entry, Entry::Key(_)) {
                others.push(line.clone());
            }
            match &line.entry {
                Entry::Soa(s) => {
                    if owner_l != origin {
                        errors.at(line.line, "SOA must be at the zone apex".into());
                    } else if let Some((first, ..)) = soa {
                        errors.at(
                            line.line,
                            format!("second SOA (the first is on line {first})"),
                        );
                    } else {
                        soa = Some((line.line, s.clone(), line.ttl));
                    }
                }
                Entry::Ns(target) => {
                    if owner_l != origin {
                        errors.at(
                            line.line,
                            "NS records belong at the apex only; delegate with a TPKEY KS record"
                                .into(),
                        );
                    } else {
                        ns.push(Record::from_rdata(
                            line.owner.clone(),
                            line.ttl,
                            RData::NS(hickory_proto::rr::rdata::NS(target.clone())),
                        ));
                    }
                }
                Entry::Glue(ip) => {
                    glue_lines.push((line.line, line.owner.clone(), line.ttl, *ip));
                }
                Entry::Key(_) => {}
            }
        }
        // The key lines moved into members from the back, the lines' memory given back as
        // they go: the file's lines and the zone's members are not both whole in memory.
        const GIVE_BACK: usize = 1 << 16;
        while let Some(line) = lines.pop() {
            if lines.len().is_multiple_of(GIVE_BACK) {
                lines.shrink_to_fit();
            }
            if !inside.get(lines.len()).copied().unwrap_or(false) {
                continue;
            }
            if let Entry::Key(rec) = line.entry {
                members.push(Member {
                    owner: line.owner.to_ascii().to_ascii_lowercase(),
                    ttl: line.ttl,
                    record: rec,
                    source: Source::File(shared_file.clone(), line.line),
                    written: line.written,
                });
            }
        }
        members.reverse();
        // A/AAAA only as glue of the zone's own name servers (secondaries such as Knot warn
        // about in-zone NS names without it).
        let ns_targets: HashSet<LowerName> = ns
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(n) => Some(LowerName::new(&n.0)),
                _ => None,
            })
            .collect();
        let mut glue: HashMap<(LowerName, RecordType), RecordSet> = HashMap::new();
        for (line, owner, ttl, ip) in glue_lines {
            let l = LowerName::new(&owner);
            if !ns_targets.contains(&l) {
                errors.at(
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
            glue.entry((l, rtype))
                .or_insert_with(|| RecordSet::new(owner.clone(), rtype, 0))
                .insert(Record::from_rdata(owner.clone(), ttl, rdata), 0);
        }
        for (owner, ttl, record) in stored {
            members.push(Member {
                owner,
                ttl,
                record,
                source: Source::Store,
                written: None,
            });
        }
        let Some((_, soa, soa_ttl)) = soa else {
            errors.at(0, "the zone has no SOA record".into());
            return None;
        };
        Some(Sorted {
            file: parsed.file,
            others,
            origin_name,
            origin,
            soa,
            soa_ttl,
            ns,
            glue,
            members,
        })
    }

    /// Stage 2: every member's issuer, window, signature (verified over the cores, unless
    /// unchanged since the served zone or found in `checked`), duplicates and placement below
    /// delegations. Members past their window are marked for withdrawal (no crypto spent on
    /// them); unsigned ones are left to `sign`.
    fn check(
        sorted: &mut Sorted,
        signer: &ZoneSigner<'_>,
        now: u64,
        checked: Option<&HashSet<Digest>>,
        errors: &mut Errors,
    ) -> Found {
        let digest = signer.params.digest();
        let origin = &sorted.origin;
        let members = &mut sorted.members;
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
        // (Whether it verified, its digest): a failure's reason is found again below (failures
        // are few, members many).
        type Check = Option<(bool, Option<Digest>)>;
        let verified: Vec<Check> = par_map(members, |m| {
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
            let ok = known || r.verify_signature(&m.owner, issuer_q).is_ok();
            Some((ok, d))
        });
        let mut verified = verified.into_iter();
        let mut found = Found::default();

        // (owner, IP) → the line of its first key (0: enrolled).
        // Members that pass the checks below, for the duplicate check after them.
        let mut passed = vec![false; members.len()];
        // Owner names parsed once; a bad one is reported below and refuses the zone.
        found.owners = par_map(members, |m| Name::from_ascii(&m.owner).ok());
        for (i, (m, owner_name)) in members.iter_mut().zip(&found.owners).enumerate() {
            let check = verified.next().flatten();
            let line = m.line();
            let Some(owner_name) = owner_name else {
                errors.at(line, format!("{}bad owner name {}", m.prefix(), m.owner));
                continue;
            };
            let owner_l = LowerName::new(owner_name);
            if !origin.zone_of(&owner_l) {
                errors.at(
                    line,
                    format!("{}{} is outside the zone", m.prefix(), m.owner),
                );
                continue;
            }
            if m.record.issuer != digest {
                errors.at(
                    line,
                    format!(
                        "{}issued under params {} but this key server's params are {}",
                        m.prefix(),
                        hex::encode(m.record.issuer),
                        hex::encode(digest)
                    ),
                );
                continue;
            }
            if m.record.not_before >= m.record.not_after {
                errors.at(line, format!("{}validity window is empty", m.prefix()));
                continue;
            }
            // Withdrawn before any crypto: an expired member costs no signature.
            if now > u64::from(m.record.not_after) {
                found.expired.insert(i);
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
                None => found.unsigned.push(i),
                Some(_) => {
                    let (ok, d) = check.unwrap_or((false, None));
                    let result = if ok {
                        Ok(())
                    } else {
                        m.record.verify_signature(&m.owner, issuer_q)
                    };
                    if let Err(e) = result {
                        let why = if matches!(e, RecordError::Point(_)) {
                            ""
                        } else {
                            " (forged, or signed by another key server)"
                        };
                        errors.at(line, format!("{}{e}{why}", m.prefix()));
                        continue;
                    }
                    found.digests.extend(d);
                }
            }
            passed[i] = true;
        }
        // (owner, IP) once: the first one (file lines, then the store) stands. The table holds
        // member indices hashed by (owner, IP).
        let hasher = std::hash::RandomState::new();
        let key_of = |m: &Member| hasher.hash_one((m.owner.as_str(), m.record.ip));
        let mut seen: hashbrown::HashTable<u32> =
            hashbrown::HashTable::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            let (true, Ok(index)) = (passed[i], u32::try_from(i)) else {
                continue;
            };
            let same = |j: &u32| {
                let o = &members[*j as usize];
                o.owner == m.owner && o.record.ip == m.record.ip
            };
            match seen.entry(key_of(m), same, |j| key_of(&members[*j as usize])) {
                hashbrown::hash_table::Entry::Occupied(e) => {
                    let first = members[*e.get() as usize].line();
                    errors.at(
                        m.line(),
                        format!(
                            "{}duplicate key for {} {} (first at {})",
                            m.prefix(),
                            m.owner,
                            m.record.ip,
                            m.whence(first)
                        ),
                    );
                    continue;
                }
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(index);
                }
            }
            if let (Some(_), Some(owner)) = (&m.record.key_server, &found.owners[i]) {
                let owner_l = LowerName::new(owner);
                if owner_l != *origin {
                    found.delegations.insert(owner_l);
                }
            }
        }
        // Entities may not sit below a delegation: the child key server owns them.
        if !found.delegations.is_empty() {
            for (i, (m, owner)) in members.iter().zip(&found.owners).enumerate() {
                let Some(owner) = owner else { continue };
                if found.expired.contains(&i) {
                    continue;
                }
                let mut n = LowerName::new(owner).base_name();
                while n.num_labels() > origin.num_labels() {
                    if found.delegations.contains(&n) {
                        errors.at(
                            m.line(),
                            format!("{} lies below the delegation to key server {n}", m.owner),
                        );
                        break;
                    }
                    n = n.base_name();
                }
            }
        }
        found
    }

    /// Stage 3: the unsigned members (`unsigned`: their indices) signed with the key server's
    /// key, over the cores.
    fn sign(
        members: &mut [Member],
        unsigned: &[usize],
        signer: &ZoneSigner<'_>,
        errors: &mut Errors,
    ) {
        let signed = par_map(unsigned, |&i| {
            let m = &members[i];
            let mut r = m.record.clone();
            r.sign(&m.owner, signer.key).map(|()| r.signature)
        });
        for (&i, result) in unsigned.iter().zip(signed) {
            let m = &mut members[i];
            match result {
                Ok(signature) => m.record.signature = signature,
                Err(e) => errors.at(m.line(), format!("{}cannot sign: {e}", m.prefix())),
            }
        }
    }

    /// Stage 4: the zone's lookup structures — SOA (its serial moved by `serial_offset`) and
    /// its negative-caching copy, NS, glue, owners to members, every name that exists —
    /// with the expired members set aside as withdrawn.
    fn index(sorted: Sorted, found: Found, serial_offset: u32) -> Self {
        let Sorted {
            file,
            others,
            origin_name,
            origin,
            soa: mut soa_rdata,
            soa_ttl,
            ns,
            glue,
            mut members,
        } = sorted;
        let Found {
            mut owners,
            delegations,
            expired,
            ..
        } = found;
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
        let mut keys = Owners::with_capacity(members.len());
        let mut names = HashSet::new();
        names.insert(origin.clone());
        for (i, owner) in owners.iter().enumerate() {
            let (Some(owner), Ok(i)) = (owner, u32::try_from(i)) else {
                continue;
            };
            let l = LowerName::new(owner);
            // Owners are in `keys`; `names` holds the rest of what exists (empty non-terminals).
            add_with_ancestors(&mut names, l.base_name(), &origin);
            keys.insert(&members, i, &l);
        }
        for (l, _) in glue.keys() {
            add_with_ancestors(&mut names, l.clone(), &origin);
        }
        let glue = glue.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        Self {
            file,
            others,
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
        }
    }

    /// Encode every plain answer of the zone (the encode stage), once.
    pub fn encode(&self) {
        self.encoded.get_or_init(|| {
            let t = std::time::Instant::now();
            let e = Encoded::build(self);
            tracing::debug!(zone = %self.origin, names = e.len(), encode_us = t.elapsed().as_micros() as u64, "zone encoded");
            e
        });
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

    /// The zone file as it was loaded, made again from the zone: its records in file order,
    /// each key line as the file writes it (a line an unsigned key was on comes back with
    /// the signature this zone serves: the same key server signs it the same). What a
    /// rebuild starts from without reading the file again.
    pub fn written(&self) -> ParsedZone {
        let mut lines: Vec<crate::zonefile::Line> = self
            .members
            .iter()
            .chain(&self.withdrawn)
            .filter_map(|m| {
                let Source::File(_, line) = m.source else {
                    return None;
                };
                Some(crate::zonefile::Line {
                    line,
                    owner: Name::from_ascii(&m.owner).ok()?,
                    ttl: m.ttl,
                    entry: Entry::Key(m.written.as_deref().unwrap_or(&m.record).clone()),
                    written: None,
                })
            })
            .chain(self.others.iter().cloned())
            .collect();
        lines.sort_by_key(|l| l.line);
        ParsedZone {
            file: self.file.clone(),
            origin: self.origin_name.clone(),
            lines,
            errors: Vec::new(),
        }
    }

    /// Each owner's name, as its members spell it.
    fn owners(&self) -> impl Iterator<Item = &str> + '_ {
        self.keys
            .iter()
            .filter_map(|v| Some(self.members.get(*v.first()? as usize)?.owner.as_str()))
    }

    /// Every member record, decoded.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Every record of the zone in transfer order, SOA first (the caller repeats it last),
    /// made as they are taken: a transfer holds one message's records at a time.
    pub fn transfer_records(&self) -> impl Iterator<Item = Record> + Send + '_ {
        let soa = self.soa.records_without_rrsigs();
        let ns = self.ns.iter().flat_map(|s| s.records_without_rrsigs());
        let glue = self.glue.values().flat_map(|s| s.records_without_rrsigs());
        let keys = self.keys.iter().flat_map(move |indices| {
            let owner = indices
                .first()
                .and_then(|&i| self.members.get(i as usize))
                .and_then(|m| Name::from_ascii(&m.owner).ok());
            indices
                .iter()
                .filter_map(move |&i| self.key_record(owner.as_ref()?, i))
        });
        soa.chain(ns).chain(glue).cloned().chain(keys)
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
        let keys = self.keys.get(&self.members, name)?;
        let owner = Name::from(name.clone());
        let mut records = keys.iter().filter_map(|&i| self.key_record(&owner, i));
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

    /// Whether `name` exists in the zone: an owner, an empty non-terminal, the apex or glue.
    pub(crate) fn exists(&self, name: &LowerName) -> bool {
        self.names.contains(name) || self.keys.get(&self.members, name).is_some()
    }

    fn absent(&self, name: &LowerName) -> Answer {
        if self.exists(name) {
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

    /// The key server's signer, with nothing verified before.
    fn signer<'a>(kgc: &'a Kgc, own: &'a EntityKey) -> ZoneSigner<'a> {
        ZoneSigner {
            params: kgc.params(),
            key: own,
            verified: None,
            fresh: &[],
        }
    }

    /// a (signed), b (unsigned) and c (expired) of example.com.
    fn three_members(kgc: &Kgc, own: &EntityKey) -> [KeyRecord; 3] {
        let signed = member(kgc, own, "a.example.com.", "10.0.0.1");
        let unsigned = KeyRecord {
            signature: None,
            ..member(kgc, own, "b.example.com.", "10.0.0.2")
        };
        let expired = KeyRecord {
            not_after: (NOW - 1) as u32,
            ..member(kgc, own, "c.example.com.", "10.0.0.3")
        };
        [signed, unsigned, expired]
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

    /// Each stage alone, on one zone: a signed member, an unsigned one, an expired one and a
    /// record outside the zone.
    #[test]
    fn the_build_stages_each_do_their_part() {
        let (kgc, own) = key_server();
        let signer = signer(&kgc, &own);
        let [signed, unsigned, expired] = three_members(&kgc, &own);
        let mut parsed = zone_text(&[("a", &signed), ("b.x", &unsigned), ("c", &expired)]);
        let outside = parsed.lines[1].clone();
        parsed.lines.push(crate::zonefile::Line {
            line: 99,
            owner: Name::from_ascii("www.example.org.").unwrap(),
            ..outside
        });
        let mut errors = Errors {
            file: "z.keys".into(),
            list: vec![],
        };

        // Sort: by kind, the outside record refused with its line.
        let mut sorted = KeyZone::sort(parsed, vec![], &signer, &mut errors).unwrap();
        assert_eq!(sorted.members.len(), 3);
        assert_eq!(sorted.soa.serial, 1);
        assert_eq!(errors.list.len(), 1);
        assert_eq!(errors.list[0].line, 99);
        errors.list.clear();

        // Check: the signed one verified (one digest), the unsigned one left to sign, the
        // expired one marked; nothing signed yet.
        let found = KeyZone::check(&mut sorted, &signer, NOW, None, &mut errors);
        assert!(errors.list.is_empty(), "{:?}", errors.list);
        assert_eq!(found.digests.len(), 1);
        assert_eq!(found.unsigned, vec![1]);
        assert_eq!(found.expired, HashSet::from([2]));
        assert!(sorted.members[1].record.signature.is_none());

        // Sign: the unsigned member now verifies under the key server's key.
        KeyZone::sign(&mut sorted.members, &found.unsigned, &signer, &mut errors);
        assert!(errors.list.is_empty());
        let b = &sorted.members[1];
        b.record.verify_signature(&b.owner, own.public()).unwrap();

        // Index: the expired member withdrawn, the others served, the serial moved.
        let zone = KeyZone::index(sorted, found, 5);
        assert_eq!(zone.serial(), 6);
        assert_eq!(zone.members().len(), 2);
        assert_eq!(zone.withdrawn().len(), 1);
        let b_name = LowerName::new(&Name::from_ascii("b.x.example.com.").unwrap());
        assert!(
            matches!(zone.lookup(&b_name, TPKEY_TYPE), Answer::Records(s) if s.records_without_rrsigs().count() == 1)
        );
        // The empty non-terminal exists; the withdrawn name does not.
        let x = LowerName::new(&Name::from_ascii("x.example.com.").unwrap());
        assert!(matches!(zone.lookup(&x, TPKEY_TYPE), Answer::NoData));
        let c = LowerName::new(&Name::from_ascii("c.example.com.").unwrap());
        assert!(matches!(zone.lookup(&c, TPKEY_TYPE), Answer::NxDomain));
    }

    /// The same (owner, IP) twice refuses the zone naming both lines; a second key of the
    /// owner at another IP is a member of its own; a duplicate from the store names the line.
    #[test]
    fn a_duplicate_key_names_the_line_of_the_first() {
        let (kgc, own) = key_server();
        let signer = signer(&kgc, &own);
        let a = member(&kgc, &own, "a.example.com.", "10.0.0.1");
        let a2 = member(&kgc, &own, "a.example.com.", "10.0.0.9");
        let b = member(&kgc, &own, "b.example.com.", "10.0.0.2");
        let twice = zone_text(&[("a", &a), ("b", &b), ("a", &a)]);
        let e = KeyZone::build(twice, vec![], 0, &signer, NOW)
            .err()
            .unwrap()
            .0;
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, 5);
        assert!(
            e[0].reason
                .contains("duplicate key for a.example.com. 10.0.0.1 (first at line 3)"),
            "{e:?}"
        );
        let zone =
            KeyZone::build(zone_text(&[("a", &a), ("a", &a2)]), vec![], 0, &signer, NOW).unwrap();
        let owner = LowerName::new(&Name::from_ascii("a.example.com.").unwrap());
        match zone.lookup(&owner, TPKEY_TYPE) {
            Answer::Records(set) => assert_eq!(set.records_without_rrsigs().count(), 2),
            _ => panic!("a has two keys"),
        }
        let stored = vec![("b.example.com.".to_string(), 3600, b.clone())];
        let e = KeyZone::build(zone_text(&[("b", &b)]), stored, 0, &signer, NOW)
            .err()
            .unwrap()
            .0;
        assert!(e[0].reason.contains("enrolled member b.example.com. 10.0.0.2: duplicate key for b.example.com. 10.0.0.2 (first at line 3)"), "{e:?}");
    }

    /// What a rebuild starts from: the file as loaded, made again from the zone — every line
    /// in order (expired and glue ones too), a line a copy replaced as the file writes it.
    #[test]
    fn the_zone_gives_back_the_file_it_was_loaded_from() {
        let (kgc, own) = key_server();
        let signer = signer(&kgc, &own);
        let [signed, unsigned, expired] = three_members(&kgc, &own);
        let mut parsed = zone_text(&[("a", &signed), ("b", &unsigned), ("c", &expired)]);
        let extra = crate::zonefile::parse(
            std::path::Path::new("z.keys"),
            "$ORIGIN example.com.\n@ 3600 IN NS ns\nns 3600 IN A 192.0.2.1\n",
            &Name::from_ascii("example.com.").unwrap(),
        )
        .unwrap();
        for (n, mut l) in extra.lines.into_iter().enumerate() {
            l.line = 10 + n;
            parsed.lines.push(l);
        }
        // A re-signed copy served in place of line 3 (the loader's doing).
        let copy = member(&kgc, &own, "a.example.com.", "10.0.0.1");
        let Entry::Key(rec) = &mut parsed.lines[1].entry else {
            panic!("line 3 is a key");
        };
        let as_written = std::mem::replace(rec, copy.clone());
        parsed.lines[1].written = Some(Box::new(as_written));
        let before: Vec<(usize, String)> = parsed
            .lines
            .iter()
            .map(|l| (l.line, l.owner.to_ascii()))
            .collect();
        let zone = KeyZone::build(parsed, vec![], 0, &signer, NOW).unwrap();
        let again = zone.written();
        let after: Vec<(usize, String)> = again
            .lines
            .iter()
            .map(|l| (l.line, l.owner.to_ascii()))
            .collect();
        assert_eq!(after, before);
        let key = |line: usize| match &again.lines.iter().find(|l| l.line == line).unwrap().entry {
            Entry::Key(r) => r.clone(),
            other => panic!("line {line}: {other:?}"),
        };
        assert_eq!(key(3), signed, "the line as written, not the copy served");
        assert_eq!(zone.members()[0].record, copy);
        assert_eq!(
            zone.members()[0].line_window(),
            Some((signed.not_before, signed.not_after))
        );
        // The unsigned line comes back with the signature the zone serves.
        assert_eq!(key(4), zone.members()[1].record);
        assert_eq!(key(5), expired);
        assert!(again.errors.is_empty());
        // Rebuilt from it (as a write does), the zone is the same.
        let rebuilt = KeyZone::build(again, vec![], 0, &signer, NOW).unwrap();
        assert_eq!(rebuilt.members().len(), 2);
        assert_eq!(rebuilt.withdrawn().len(), 1);
        assert_eq!(rebuilt.members()[1].record, zone.members()[1].record);
    }

    #[test]
    fn checked_records_skip_their_check_and_changed_ones_are_checked_again() {
        let (kgc, own) = key_server();
        let a = member(&kgc, &own, "a.example.com.", "10.0.0.1");
        let b = member(&kgc, &own, "b.example.com.", "10.0.0.2");
        let signer = signer(&kgc, &own);
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
