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
    /// Re-signed copies of zone-file members: (owner, record).
    pub resigned: Vec<(String, KeyRecord)>,
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

/// A zone's stored state, in store order: what [`Store::view`] reads.
#[derive(Clone, Debug)]
pub struct View {
    zone: String,
    members: std::collections::BTreeMap<Vec<u8>, (String, u32, KeyRecord)>,
    resigned: std::collections::BTreeMap<Vec<u8>, (String, KeyRecord)>,
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

    /// The state once [`Store::apply`] has written `changes`.
    pub fn after(&self, changes: &Changes) -> Self {
        if changes.is_empty() {
            return self.clone();
        }
        let mut v = self.clone();
        let key = |owner: &str, ip| member_key(&self.zone, owner, ip);
        for (owner, ip) in &changes.removed {
            v.members.remove(&key(owner, *ip));
            v.resigned.remove(&key(owner, *ip));
        }
        for (owner, ip) in &changes.dropped_copies {
            v.resigned.remove(&key(owner, *ip));
        }
        for m in &changes.members {
            v.members.insert(key(&m.0, m.2.ip), m.clone());
        }
        for c in &changes.resigned {
            v.resigned.insert(key(&c.0, c.1.ip), c.clone());
        }
        v.generation = v.generation.wrapping_add(1);
        v
    }

    /// Members: (owner, ttl, record).
    pub fn members(&self) -> impl Iterator<Item = &(String, u32, KeyRecord)> {
        self.members.values()
    }

    /// Re-signed copies of zone-file members: (owner, record).
    pub fn resigned(&self) -> impl Iterator<Item = &(String, KeyRecord)> {
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
        for (owner, record) in &changes.resigned {
            overlay.push((member_key(zone, owner, record.ip), encode(owner, record)?));
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
    /// every write ([`View::after`]), so a write does not read the store back.
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
            v.resigned.insert(member_key(zone, &c.0, c.1.ip), c);
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

    /// Re-signed copies of zone-file members of `zone`: (owner, record). The server takes one
    /// in place of the file's line while the line is otherwise unchanged.
    pub fn resigned(&self, zone: &str) -> Result<Vec<(String, KeyRecord)>, StoreError> {
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
            let record = KeyRecord::from_wire(&v).map_err(|e| StoreError::Corrupt {
                key,
                reason: e.to_string(),
            })?;
            out.push((owner, record));
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
