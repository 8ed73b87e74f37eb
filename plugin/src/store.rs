//! The sled store of members enrolled online. They survive restarts and are merged with the
//! zone files at every load; each write bumps the zone's generation, which is added to the
//! SOA serial so secondaries see the change.

use std::path::Path;

use sled::Transactional;

use crate::record::KeyRecord;

/// A store problem.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("store: {0}")]
    Sled(sled::Error),
    /// A stored value does not decode.
    #[error("store: member {key} is corrupt: {reason}")]
    Corrupt {
        /// The member's key.
        key: String,
        /// Why.
        reason: String,
    },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e)
    }
}

/// One write to a zone's members: added or replaced, re-signed copies of zone-file members,
/// and removed (with their copies). [`Store::apply`] makes it one transaction.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Members added or replaced: (owner, ttl, record).
    pub members: Vec<(String, u32, KeyRecord)>,
    /// Re-signed copies of zone-file members.
    pub resigned: Vec<ResignedCopy>,
    /// Members removed: (owner, IP).
    pub removed: Vec<(String, std::net::IpAddr)>,
    /// Re-signed copies dropped (their zone-file line is gone or changed): (owner, IP).
    pub dropped_copies: Vec<(String, std::net::IpAddr)>,
}

impl Changes {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
            && self.resigned.is_empty()
            && self.removed.is_empty()
            && self.dropped_copies.is_empty()
    }
}

/// A stored member: (owner, ttl, record).
type Stored = (String, u32, KeyRecord);
type Resigned = ResignedCopy;

/// A zone-file member re-signed by the server: its record with a fresh window, served in place
/// of the line while the line is as it was when the copy was made.
#[derive(Clone, Debug, PartialEq)]
pub struct ResignedCopy {
    /// The member's name.
    pub owner: String,
    /// The re-signed record.
    pub record: KeyRecord,
    /// The validity window (not-before, not-after) of the zone-file line it was made from;
    /// `None` for a copy stored before this was kept. A line whose window differs is a new
    /// line: the copy no longer applies.
    pub from: Option<(u32, u32)>,
}

/// Stored form of a copy: 0x00, the line's not-before and not-after, then the record's RDATA
/// (whose first byte, its version, is never 0). A value without the 0x00 is RDATA alone.
const COPY_FROM: u8 = 0;

/// What [`View::apply`] replaced, for [`View::undo`]: each key with its value before.
#[must_use]
pub struct Undo {
    generation: u32,
    members: Vec<(Vec<u8>, Option<Stored>)>,
    resigned: Vec<(Vec<u8>, Option<Resigned>)>,
}

/// A zone's stored state, in store order: what [`Store::view`] reads.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    zone: String,
    members: std::collections::BTreeMap<Vec<u8>, Stored>,
    resigned: std::collections::BTreeMap<Vec<u8>, Resigned>,
    /// The generation (added to the SOA serial).
    pub generation: u32,
}

impl View {
    /// An empty zone (no store).
    pub fn empty(zone: &str) -> Self {
        Self {
            zone: zone.to_string(),
            members: Default::default(),
            resigned: Default::default(),
            generation: 0,
        }
    }

    /// Move to the state [`Store::apply`] of `changes` writes, in place; the returned
    /// [`Undo`] puts it back (a write whose zone will not load, or whose store write fails).
    pub fn apply(&mut self, changes: &Changes) -> Undo {
        let mut undo = Undo {
            generation: self.generation,
            members: Vec::new(),
            resigned: Vec::new(),
        };
        if changes.is_empty() {
            return undo;
        }
        let zone = self.zone.clone();
        let key = |owner: &str, ip| member_key(&zone, owner, ip);
        let mut member = |v: &mut Self, k: Vec<u8>, new: Option<Stored>| {
            let old = match new {
                Some(m) => v.members.insert(k.clone(), m),
                None => v.members.remove(&k),
            };
            undo.members.push((k, old));
        };
        for (owner, ip) in &changes.removed {
            member(self, key(owner, *ip), None);
        }
        for m in &changes.members {
            member(self, key(&m.0, m.2.ip), Some(m.clone()));
        }
        let mut copy = |v: &mut Self, k: Vec<u8>, new: Option<Resigned>| {
            let old = match new {
                Some(c) => v.resigned.insert(k.clone(), c),
                None => v.resigned.remove(&k),
            };
            undo.resigned.push((k, old));
        };
        for (owner, ip) in changes.removed.iter().chain(&changes.dropped_copies) {
            copy(self, key(owner, *ip), None);
        }
        for c in &changes.resigned {
            copy(self, key(&c.owner, c.record.ip), Some(c.clone()));
        }
        self.generation = self.generation.wrapping_add(1);
        undo
    }

    /// Put back what [`View::apply`] changed.
    pub fn undo(&mut self, undo: Undo) {
        // Newest first, so a key touched twice ends as it began.
        for (k, old) in undo.members.into_iter().rev() {
            match old {
                Some(m) => self.members.insert(k, m),
                None => self.members.remove(&k),
            };
        }
        for (k, old) in undo.resigned.into_iter().rev() {
            match old {
                Some(c) => self.resigned.insert(k, c),
                None => self.resigned.remove(&k),
            };
        }
        self.generation = undo.generation;
    }

    /// Members: (owner, ttl, record).
    pub fn members(&self) -> impl Iterator<Item = &(String, u32, KeyRecord)> {
        self.members.values()
    }

    /// Re-signed copies of zone-file members.
    pub fn resigned(&self) -> impl Iterator<Item = &ResignedCopy> {
        self.resigned.values()
    }

    /// The stored member for `owner` at `ip`: (ttl, record).
    pub fn get(&self, owner: &str, ip: std::net::IpAddr) -> Option<(u32, &KeyRecord)> {
        self.members
            .get(&member_key(&self.zone, owner, ip))
            .map(|(_, ttl, r)| (*ttl, r))
    }
}

/// Enrolled members, per zone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    members: sled::Tree,
    // Zone-file members re-signed by the server, same keys as `members`.
    resigned: sled::Tree,
    meta: sled::Tree,
}

fn member_key(zone: &str, owner: &str, ip: std::net::IpAddr) -> Vec<u8> {
    format!("{zone}\0{owner}\0{ip}").into_bytes()
}

impl Store {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Every write is flushed by `apply` itself; no periodic flusher thread.
        let db = sled::Config::new().path(path).flush_every_ms(None).open()?;
        let members = db.open_tree("members")?;
        let resigned = db.open_tree("resigned")?;
        let meta = db.open_tree("meta")?;
        Ok(Self {
            db,
            members,
            resigned,
            meta,
        })
    }

    /// Add or replace a member of `zone`; durable when this returns. The member and the
    /// zone's generation are written in one transaction.
    pub fn put(
        &self,
        zone: &str,
        owner: &str,
        ttl: u32,
        record: &KeyRecord,
    ) -> Result<(), StoreError> {
        let changes = Changes {
            members: vec![(owner.to_string(), ttl, record.clone())],
            ..Changes::default()
        };
        self.apply(zone, &changes)
    }

    /// Apply `changes` to `zone` with one generation step, in one transaction; durable when
    /// this returns. Removals come first, so a change may remove and add the same key.
    pub fn apply(&self, zone: &str, changes: &Changes) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let encode = |owner: &str, record: &KeyRecord| {
            record.to_wire().map_err(|e| StoreError::Corrupt {
                key: format!("{owner} {}", record.ip),
                reason: e.to_string(),
            })
        };
        let mut rows = Vec::with_capacity(changes.members.len());
        for (owner, ttl, record) in &changes.members {
            let mut value = ttl.to_be_bytes().to_vec();
            value.extend_from_slice(&encode(owner, record)?);
            rows.push((member_key(zone, owner, record.ip), value));
        }
        let mut overlay = Vec::with_capacity(changes.resigned.len());
        for c in &changes.resigned {
            let mut value = Vec::new();
            if let Some((nb, na)) = c.from {
                value.push(COPY_FROM);
                value.extend_from_slice(&nb.to_be_bytes());
                value.extend_from_slice(&na.to_be_bytes());
            }
            value.extend_from_slice(&encode(&c.owner, &c.record)?);
            overlay.push((member_key(zone, &c.owner, c.record.ip), value));
        }
        let gone: Vec<Vec<u8>> = changes
            .removed
            .iter()
            .map(|(owner, ip)| member_key(zone, owner, *ip))
            .collect();
        let dropped: Vec<Vec<u8>> = changes
            .dropped_copies
            .iter()
            .map(|(owner, ip)| member_key(zone, owner, *ip))
            .collect();
        (&self.members, &self.resigned, &self.meta)
            .transaction(|(m, r, meta)| {
                for k in &gone {
                    m.remove(k.as_slice())?;
                    r.remove(k.as_slice())?;
                }
                for k in &dropped {
                    r.remove(k.as_slice())?;
                }
                for (k, v) in &rows {
                    m.insert(k.as_slice(), v.as_slice())?;
                }
                for (k, v) in &overlay {
                    r.insert(k.as_slice(), v.as_slice())?;
                }
                bump_in(meta, zone)?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.db.flush()?;
        Ok(())
    }

    /// What `zone` holds now; the key server keeps it in memory and moves it along with
    /// every write ([`View::apply`]), so a write does not read the store back.
    pub fn view(&self, zone: &str) -> Result<View, StoreError> {
        let mut v = View {
            zone: zone.to_string(),
            members: Default::default(),
            resigned: Default::default(),
            generation: self.generation(zone)?,
        };
        for m in self.members(zone)? {
            v.members.insert(member_key(zone, &m.0, m.2.ip), m);
        }
        for c in self.resigned(zone)? {
            v.resigned
                .insert(member_key(zone, &c.owner, c.record.ip), c);
        }
        Ok(v)
    }

    /// One member of `zone`: (ttl, record).
    pub fn get(
        &self,
        zone: &str,
        owner: &str,
        ip: std::net::IpAddr,
    ) -> Result<Option<(u32, KeyRecord)>, StoreError> {
        let Some(v) = self.members.get(member_key(zone, owner, ip))? else {
            return Ok(None);
        };
        decode_value(&v)
            .map(Some)
            .map_err(|reason| StoreError::Corrupt {
                key: format!("{zone} {owner} {ip}"),
                reason,
            })
    }

    /// Re-signed copies of zone-file members of `zone`. The server takes one in place of the
    /// file's line while the line is as it was when the copy was made.
    pub fn resigned(&self, zone: &str) -> Result<Vec<ResignedCopy>, StoreError> {
        let prefix = format!("{zone}\0").into_bytes();
        let mut out = Vec::new();
        for item in self.resigned.scan_prefix(&prefix) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).replace('\0', " ");
            let owner = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|s| s.split('\0').next())
                .ok_or_else(|| StoreError::Corrupt {
                    key: key.clone(),
                    reason: "bad key".into(),
                })?
                .to_string();
            let (from, wire) = match v.split_first() {
                Some((&COPY_FROM, rest)) if rest.len() >= 8 => {
                    let nb = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                    let na = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
                    (Some((nb, na)), &rest[8..])
                }
                _ => (None, &v[..]),
            };
            let record = KeyRecord::from_wire(wire).map_err(|e| StoreError::Corrupt {
                key,
                reason: e.to_string(),
            })?;
            out.push(ResignedCopy {
                owner,
                record,
                from,
            });
        }
        Ok(out)
    }

    /// How many times `zone`'s members changed (added to its SOA serial).
    pub fn generation(&self, zone: &str) -> Result<u32, StoreError> {
        Ok(self
            .meta
            .get(format!("gen\0{zone}"))?
            .and_then(|b| <[u8; 4]>::try_from(b.as_ref()).ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0))
    }

    /// Every member of `zone`: (owner, ttl, record).
    pub fn members(&self, zone: &str) -> Result<Vec<(String, u32, KeyRecord)>, StoreError> {
        let prefix = format!("{zone}\0").into_bytes();
        let mut out = Vec::new();
        for item in self.members.scan_prefix(&prefix) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).replace('\0', " ");
            let corrupt = |reason: String| StoreError::Corrupt {
                key: key.clone(),
                reason,
            };
            let owner = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|s| s.split('\0').next())
                .ok_or_else(|| corrupt("bad key".into()))?
                .to_string();
            let (ttl, record) = decode_value(&v).map_err(corrupt)?;
            out.push((owner, ttl, record));
        }
        Ok(out)
    }
}

fn bump_in(
    meta: &sled::transaction::TransactionalTree,
    zone: &str,
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    let key = format!("gen\0{zone}");
    let n = meta
        .get(key.as_bytes())?
        .and_then(|b| <[u8; 4]>::try_from(b.as_ref()).ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0);
    meta.insert(key.as_bytes(), n.wrapping_add(1).to_be_bytes().to_vec())?;
    Ok(())
}

fn tx_error(e: sled::transaction::TransactionError) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(e)
        | sled::transaction::TransactionError::Abort(e) => StoreError::Sled(e),
    }
}

/// A stored value: TTL (u32) then the record's RDATA.
fn decode_value(v: &[u8]) -> Result<(u32, KeyRecord), String> {
    let (ttl, wire) = v
        .split_first_chunk::<4>()
        .ok_or_else(|| "value too short".to_string())?;
    let record = KeyRecord::from_wire(wire).map_err(|e| e.to_string())?;
    Ok((u32::from_be_bytes(*ttl), record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clpkc::{KeyRequest, Kgc, SecretValue};
    use rand_core::OsRng;

    fn record(kgc: &Kgc, name: &str, ip: &str, not_after: u32) -> KeyRecord {
        let id = crate::clpkc::Identity::new(name, ip.parse().unwrap(), kgc.params()).unwrap();
        let x = SecretValue::generate(&mut OsRng);
        let pk = kgc.extract(&KeyRequest::new(id, &x), &mut OsRng).unwrap();
        let own = kgc
            .self_issue("192.0.2.53".parse().unwrap(), &mut OsRng)
            .unwrap();
        let mut rec = KeyRecord {
            ip: ip.parse().unwrap(),
            w: pk.w.into(),
            issuer: kgc.params().digest(),
            not_before: 1_700_000_000,
            not_after,
            key_server: None,
            signature: None,
        };
        rec.sign(name, &own).unwrap();
        rec
    }

    #[test]
    fn a_view_moves_with_the_store_and_undoes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kgc = Kgc::setup("example.", &mut OsRng).unwrap();
        let zone = "example.";
        let a = record(&kgc, "a.example.", "192.0.2.1", 1_800_000_000);
        let b = record(&kgc, "b.example.", "192.0.2.2", 1_800_000_000);
        let a2 = record(&kgc, "a.example.", "192.0.2.1", 1_900_000_000);
        let first = Changes {
            members: vec![("a.example.".into(), 60, a), ("b.example.".into(), 60, b)],
            resigned: vec![ResignedCopy {
                owner: "f.example.".into(),
                record: record(&kgc, "f.example.", "192.0.2.9", 1),
                from: Some((10, 20)),
            }],
            ..Changes::default()
        };
        let second = Changes {
            members: vec![("a.example.".into(), 90, a2)],
            removed: vec![("b.example.".into(), "192.0.2.2".parse().unwrap())],
            dropped_copies: vec![("f.example.".into(), "192.0.2.9".parse().unwrap())],
            ..Changes::default()
        };
        let mut view = store.view(zone).unwrap();
        let _ = view.apply(&first);
        store.apply(zone, &first).unwrap();
        assert_eq!(view, store.view(zone).unwrap(), "after the first write");
        let before = view.clone();
        let undo = view.apply(&second);
        assert_eq!(view.members().count(), 1);
        assert_eq!(
            view.get("a.example.", "192.0.2.1".parse().unwrap())
                .unwrap()
                .0,
            90
        );
        assert_eq!(view.resigned().count(), 0);
        view.undo(undo);
        assert_eq!(view, before, "undone");
        let _ = view.apply(&second);
        store.apply(zone, &second).unwrap();
        assert_eq!(view, store.view(zone).unwrap(), "after the second write");
        assert_eq!(view.generation, 2);
    }
}
