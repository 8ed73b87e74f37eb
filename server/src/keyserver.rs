//! A key server's state: its keys, its store and its served zone, with the reload and
//! enrollment operations that keep the old zone serving when anything goes wrong.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use arc_swap::ArcSwap;
use rand_core::OsRng;
use twinpeaks::clpkc::{EntityKey, KeyRequest, Kgc, KgcParams, PartialKey};
use twinpeaks::handler::ZoneCell;
use twinpeaks::issue::{self, IssueOptions};
use twinpeaks::keyfile;
use twinpeaks::record::KeyRecord;
use twinpeaks::store::Store;
use twinpeaks::zone::{KeyZone, ZoneSigner};
use twinpeaks::zonefile::ParsedZone;
use twinpeaks::{time, zonefile};

use crate::config::Config;

/// File names inside a key server's state directory.
pub const KGC_FILE: &str = "kgc.secret";
/// The key server's own private key.
pub const KEY_FILE: &str = "server.key";
/// The public params.
pub const PARAMS_FILE: &str = "params";

/// A running key server's state.
pub struct KeyServer {
    /// Its configuration.
    pub cfg: Config,
    kgc: Kgc,
    own: EntityKey,
    store: Store,
    zone: ZoneCell,
    // Reloads and enrollments run one at a time; the guarded value is the zone file as last
    // loaded, which an enrollment rebuilds from (it does not re-read the file).
    write: Mutex<ParsedZone>,
    /// Requests received, shown by `tp ctl status`.
    pub counters: Arc<twinpeaks::server::QueryCounters>,
    // The served serial, for whoever sends NOTIFY.
    serial: tokio::sync::watch::Sender<u32>,
}

/// Read a key server's KGC and own key from its state directory.
pub fn read_keys(cfg: &Config) -> Result<(Kgc, EntityKey)> {
    let kgc = keyfile::read_kgc(&cfg.state_dir.join(KGC_FILE))?;
    let (own, _issuer) = keyfile::read_entity(&cfg.state_dir.join(KEY_FILE))?;
    if kgc.params().name != cfg.name {
        return Err(anyhow!(
            "{}: KGC is for {}, the config names {}",
            cfg.state_dir.join(KGC_FILE).display(),
            kgc.params().name,
            cfg.name
        ));
    }
    if own.identity().name != cfg.name {
        return Err(anyhow!(
            "{}: key is for {}, the config names {}",
            cfg.state_dir.join(KEY_FILE).display(),
            own.identity().name,
            cfg.name
        ));
    }
    Ok((kgc, own))
}

/// Read the key zone file.
pub fn read_zone_file(cfg: &Config) -> Result<ParsedZone, String> {
    let origin = hickory_proto::rr::Name::from_ascii(&cfg.name).map_err(|e| e.to_string())?;
    zonefile::read(&cfg.zone_file, &origin).map_err(|e| e.to_string())
}

/// Build the zone from a parsed file and the stored members (`signer.verified`: the zone being
/// served, whose unchanged members are taken without signing or verifying again).
pub fn build_zone(
    cfg: &Config,
    parsed: ParsedZone,
    signer: &ZoneSigner<'_>,
    store: Option<&Store>,
) -> Result<KeyZone, String> {
    let (stored, generation) = match store {
        Some(s) => (
            s.members(&cfg.name).map_err(|e| e.to_string())?,
            s.generation(&cfg.name).map_err(|e| e.to_string())?,
        ),
        None => (Vec::new(), 0),
    };
    KeyZone::build(parsed, stored, generation, signer, time::now()).map_err(|e| e.to_string())
}

impl KeyServer {
    /// Load keys, open the store and load the zone; any failure is fatal at startup.
    pub fn open(cfg: Config) -> Result<Self> {
        let (kgc, own) = read_keys(&cfg)?;
        let store = Store::open(cfg.store_path())
            .with_context(|| format!("{}: cannot open store", cfg.store_path().display()))?;
        let parsed = read_zone_file(&cfg).map_err(|e| anyhow!(e))?;
        let signer = ZoneSigner {
            params: kgc.params(),
            key: &own,
            verified: None,
        };
        let zone =
            build_zone(&cfg, parsed.clone(), &signer, Some(&store)).map_err(|e| anyhow!(e))?;
        let (serial, _) = tokio::sync::watch::channel(zone.serial());
        Ok(Self {
            serial,
            cfg,
            kgc,
            own,
            store,
            zone: Arc::new(ArcSwap::from_pointee(zone)),
            write: Mutex::new(parsed),
            counters: Arc::default(),
        })
    }

    /// The served zone.
    pub fn zone(&self) -> ZoneCell {
        self.zone.clone()
    }

    /// Reload the zone file and the store. On error the old zone keeps serving.
    pub fn reload(&self) -> Result<(u32, usize), String> {
        let mut file = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let parsed = read_zone_file(&self.cfg)?;
        let stats = self.rebuild(parsed.clone())?;
        *file = parsed;
        Ok(stats)
    }

    /// Build from `parsed` and the store, reusing what the served zone verified, and serve it.
    fn rebuild(&self, parsed: ParsedZone) -> Result<(u32, usize), String> {
        let served = self.zone.load_full();
        let signer = ZoneSigner {
            params: self.kgc.params(),
            key: &self.own,
            verified: Some(&served),
        };
        let zone = build_zone(&self.cfg, parsed, &signer, Some(&self.store))?;
        let stats = (zone.serial(), zone.members().len());
        self.zone.store(Arc::new(zone));
        self.serial
            .send_if_modified(|s| std::mem::replace(s, stats.0) != stats.0);
        Ok(stats)
    }

    /// Changes of the served serial.
    pub fn serial_changes(&self) -> tokio::sync::watch::Receiver<u32> {
        self.serial.subscribe()
    }

    /// Enroll a member online: issue, store, serve. If the new zone would not load, the
    /// member is taken out again and nothing changes.
    pub fn enroll(
        &self,
        req: &KeyRequest,
        key_server: Option<(u16, KgcParams)>,
    ) -> Result<(KeyRecord, PartialKey)> {
        let now = time::now();
        let not_before = u32::try_from(now).unwrap_or(u32::MAX);
        let opts = IssueOptions {
            not_before,
            not_after: not_before
                .saturating_add(self.cfg.enroll_validity_days.saturating_mul(86_400)),
            key_server,
        };
        // The proof of possession is checked by the extraction inside `issue`.
        let file = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let (record, partial) = issue::issue(&self.kgc, &self.own, req, &opts, &mut OsRng)?;
        let name = &req.identity.name;
        let replaced = self.store.get(&self.cfg.name, name, record.ip)?;
        self.store
            .put(&self.cfg.name, name, self.cfg.enroll_ttl, &record)?;
        // Rebuilt from the file as last loaded: an enrollment never publishes file edits
        // that were not reloaded.
        if let Err(e) = self.rebuild(file.clone()) {
            // Roll back to exactly what was stored before.
            match replaced {
                Some((ttl, old)) => self.store.put(&self.cfg.name, name, ttl, &old)?,
                None => {
                    self.store.remove(&self.cfg.name, name, record.ip)?;
                }
            }
            return Err(anyhow!("enrollment refused, zone unchanged: {e}"));
        }
        Ok((record, partial))
    }

    /// Serial and member count of the served zone.
    pub fn status(&self) -> (u32, usize) {
        let z = self.zone.load();
        (z.serial(), z.members().len())
    }

    /// Public params of this key server.
    pub fn params(&self) -> &KgcParams {
        self.kgc.params()
    }
}
