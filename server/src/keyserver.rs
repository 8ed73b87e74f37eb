//! A key server's state: its keys, its store and its served zone, with the reload and
//! enrollment operations that keep the old zone serving when anything goes wrong.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rand_core::OsRng;
use twinpeaks::clpkc::CryptoError;
use twinpeaks::clpkc::{EntityKey, KeyRequest, Kgc, KgcParams, PartialKey};
use twinpeaks::handler::ZoneCell;
use twinpeaks::issue::{self, IssueOptions};
use twinpeaks::keyfile;
use twinpeaks::record::KeyRecord;
use twinpeaks::record::RecordError;
use twinpeaks::store::{Changes, ResignedCopy, Store, StoreError, View};
use twinpeaks::zone::{Digest, KeyZone, Source, ZoneSigner};
use twinpeaks::zonefile::{Entry, ParsedZone, ZoneErrors};
use twinpeaks::{time, zonefile};

use tracing::{debug, warn};

use crate::config::Config;

/// File names inside a key server's state directory.
pub const KGC_FILE: &str = "kgc.secret";
/// The key server's own private key.
pub const KEY_FILE: &str = "server.key";
/// The public params.
pub const PARAMS_FILE: &str = "params";

/// A second key for a name and IP that already have one (enrollment over the network).
#[derive(Debug, thiserror::Error)]
#[error(
    "{name} already has a key for {ip}; the operator renews or removes it (tp ctl renew/remove)"
)]
pub struct AlreadyEnrolled {
    /// The member's name.
    pub name: String,
    /// Its IP.
    pub ip: std::net::IpAddr,
}

/// Why a key server operation failed. Each variant's message is the one an operator sees.
#[derive(Debug, thiserror::Error)]
pub enum KeyServerError {
    /// The zone's name is not a DNS name.
    #[error("{0}")]
    Origin(hickory_proto::ProtoError),
    /// The zone file cannot be read or parsed (every problem, one a line).
    #[error(transparent)]
    ZoneFile(ZoneErrors),
    /// The zone would not load (every problem, one a line, each with its file and line).
    #[error(transparent)]
    ZoneRefused(ZoneErrors),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record could not be signed.
    #[error(transparent)]
    Sign(#[from] RecordError),
    /// A member's name is not a valid name.
    #[error(transparent)]
    Name(#[from] CryptoError),
    /// The key server refused to issue the request.
    #[error(transparent)]
    Issue(#[from] issue::IssueError),
    /// The name already has a key for this IP (enrollment over the network).
    #[error(transparent)]
    AlreadyEnrolled(#[from] AlreadyEnrolled),
    /// No member, served or withdrawn, has this name and IP.
    #[error("{owner} {ip} is not a member of {zone}")]
    NotMember {
        /// The member's name.
        owner: String,
        /// Its IP.
        ip: std::net::IpAddr,
        /// The zone.
        zone: String,
    },
    /// The member is in the zone file, which only the operator edits.
    #[error("{owner} {ip} is a zone-file member ({}:{line}): delete the line and reload", file.display())]
    ZoneFileMember {
        /// The member's name.
        owner: String,
        /// Its IP.
        ip: std::net::IpAddr,
        /// The zone file.
        file: std::path::PathBuf,
        /// The member's line.
        line: usize,
    },
    /// No enrolled member has this name and IP.
    #[error("{owner} {ip} is not an enrolled member of {zone}")]
    NotEnrolled {
        /// The member's name.
        owner: String,
        /// Its IP.
        ip: std::net::IpAddr,
        /// The zone.
        zone: String,
    },
    /// The enrolled member would not load; the store is put back and the zone is unchanged.
    #[error("enrollment refused, zone unchanged: {0}")]
    EnrollRefused(Box<KeyServerError>),
    /// A change of IP to the IP it already has.
    #[error(
        "change-ip: the request is for {0}, the old IP itself (a new key for the same name and IP \
         is `tp ctl enroll`)"
    )]
    ChangeIpSame(std::net::IpAddr),
    /// A change of IP of a zone-file member.
    #[error(
        "change-ip: {owner} {ip} is a zone-file member ({}:{line}): delete the line and reload, \
         and enroll the new IP with `tp ctl enroll`",
        file.display()
    )]
    ChangeIpZoneFileMember {
        /// The member's name.
        owner: String,
        /// Its old IP.
        ip: std::net::IpAddr,
        /// The zone file.
        file: std::path::PathBuf,
        /// The member's line.
        line: usize,
    },
    /// A change of IP of a name and IP that is not enrolled.
    #[error("change-ip: {owner} {ip} is not an enrolled member of {zone}")]
    ChangeIpNotEnrolled {
        /// The member's name.
        owner: String,
        /// Its old IP.
        ip: std::net::IpAddr,
        /// The zone.
        zone: String,
    },
    /// A key file cannot be read or is not a key of the right kind.
    #[error(transparent)]
    KeyFile(#[from] keyfile::KeyFileError),
    /// A key file holds the keys of another key server than the config names.
    #[error("{}: holds the keys of {holds}, the config names {config}", file.display())]
    WrongKeys {
        /// The key file.
        file: std::path::PathBuf,
        /// Whose keys it holds.
        holds: String,
        /// The config's name.
        config: String,
    },
    /// The store cannot be opened (another tpkd holds it, or the directory is unusable).
    #[error("{}: cannot open store: {source}", path.display())]
    StoreOpen {
        /// The store's directory.
        path: std::path::PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The enrollment's commit ended without an answer (a panic in another thread).
    #[error("enrollment lost: the commit that took it did not finish")]
    Lost,
    /// The moved member would not load; nothing is stored and the zone is unchanged.
    #[error("change-ip refused, zone unchanged: {0}")]
    ChangeIpRefused(Box<KeyServerError>),
}

/// What the write lock guards: the store's content, kept in memory beside the store so that a
/// write never reads the store back. (The zone file as last loaded is the served zone's
/// [`KeyZone::written`]: a write does not read the file again, nor keep a copy of it.)
struct Written {
    stored: View,
}

/// When a zone built by a write is encoded for the UDP fast path.
#[derive(Clone, Copy)]
enum Encode {
    /// Before it is served (reload).
    Now,
    /// By the encoder thread once writes pause (enrollments, renewals, re-signing): a burst
    /// of writes does not encode every intermediate zone; meanwhile the hickory path answers.
    Later,
}

/// Work for the encoder thread.
enum Job {
    /// Encode this zone (unless a newer one comes first).
    Encode(Arc<KeyZone>),
    /// Let go of a zone no longer served.
    Drop(Arc<KeyZone>),
}

/// The encoder thread: it encodes the latest zone it was sent once no newer one has come for
/// `QUIET`, or once the oldest waiting has waited `MAX_WAIT` (a steady stream of writes), and
/// frees the zones writes replaced.
fn spawn_encoder() -> Option<std::sync::mpsc::Sender<Job>> {
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::{Duration, Instant};
    const QUIET: Duration = Duration::from_millis(50);
    const MAX_WAIT: Duration = Duration::from_secs(1);
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("tpkd-encode".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                let mut zone = match job {
                    Job::Encode(zone) => zone,
                    Job::Drop(old) => {
                        drop(old);
                        continue;
                    }
                };
                let first = Instant::now();
                loop {
                    match rx.recv_timeout(QUIET) {
                        Ok(Job::Encode(newer)) => zone = newer,
                        Ok(Job::Drop(old)) => drop(old),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    if first.elapsed() >= MAX_WAIT {
                        break;
                    }
                }
                zone.encode();
            }
        })
        .ok()?;
    Some(tx)
}

/// `f` over `items` on every core, results in order; the first error wins.
pub fn par_map<T: Sync, R: Send, E: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = items.len().div_ceil(threads).max(1);
    let f = &f;
    let parts: Vec<Result<Vec<R>, E>> = std::thread::scope(|scope| {
        let tasks: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect()))
            .collect();
        tasks
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut out = Vec::with_capacity(items.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

/// A write whose zone would not load is the request's fault (REFUSED over UPDATE); a store
/// failure is the server's (SERVFAIL) and stays what it is.
fn refused(e: KeyServerError) -> KeyServerError {
    match e {
        KeyServerError::ZoneRefused(_) => KeyServerError::EnrollRefused(Box::new(e)),
        other => other,
    }
}

/// An enrollment issued and waiting for a group commit.
struct Waiting {
    owner: String,
    record: KeyRecord,
    // `tp ctl enroll` replaces a stored record of the same name and IP; UPDATE refuses it.
    replace: bool,
    done: std::sync::mpsc::SyncSender<Result<(), KeyServerError>>,
}

/// The key server as the enroller of the UPDATE path (twinpeaks::enroll::Enroller).
pub struct UpdateEnroller(pub Arc<KeyServer>);

impl twinpeaks::enroll::Enroller for UpdateEnroller {
    fn enroll_new(
        &self,
        req: &twinpeaks::enroll::EnrollRequest,
    ) -> Result<String, twinpeaks::enroll::EnrollError> {
        use twinpeaks::enroll::EnrollError;
        let ks = &self.0;
        let id = &req.request.identity;
        let (record, partial) = ks
            .enroll_new(&req.request, req.key_server.clone())
            .map_err(|e| match e {
                KeyServerError::AlreadyEnrolled(_) => EnrollError::Duplicate(e.to_string()),
                KeyServerError::Issue(_) | KeyServerError::EnrollRefused(_) => {
                    EnrollError::Refused(format!("{} {}: {e}", id.name, id.ip))
                }
                _ => EnrollError::Failed(e.to_string()),
            })?;
        crate::control::response_text(&req.request, ks.params(), &partial, &record)
            .map_err(|e| EnrollError::Failed(e.to_string()))
    }
}

/// A running key server's state.
pub struct KeyServer {
    /// Its configuration.
    pub cfg: Config,
    kgc: Kgc,
    own: EntityKey,
    store: Store,
    zone: ZoneCell,
    // Reloads and store writes run one at a time; the guarded value is the zone file as last
    // loaded, which an enrollment rebuilds from (it does not re-read the file).
    write: Mutex<Written>,
    // Enrollments issued and waiting for the next group commit.
    pending: Mutex<Vec<Waiting>>,
    // Encodes zones built by writes off the write path (`None`: no thread, encode inline).
    encoder: Option<std::sync::mpsc::Sender<Job>>,
    /// Requests received, shown by `tp ctl status`.
    pub counters: Arc<twinpeaks::server::QueryCounters>,
    // The served serial, for whoever sends NOTIFY.
    serial: tokio::sync::watch::Sender<u32>,
}

/// Read a key server's KGC and own key from its state directory.
pub fn read_keys(cfg: &Config) -> Result<(Kgc, EntityKey), KeyServerError> {
    let kgc = keyfile::read_kgc(&cfg.state_dir.join(KGC_FILE))?;
    let (own, _issuer) = keyfile::read_entity(&cfg.state_dir.join(KEY_FILE))?;
    for (file, holds) in [
        (KGC_FILE, &kgc.params().name),
        (KEY_FILE, &own.identity().name),
    ] {
        if *holds != cfg.name {
            return Err(KeyServerError::WrongKeys {
                file: cfg.state_dir.join(file),
                holds: holds.clone(),
                config: cfg.name.clone(),
            });
        }
    }
    Ok((kgc, own))
}

/// Digests of the records whose signatures this key server checked at its last start
/// ([`twinpeaks::zone::checked_digest`]), beside the store.
pub const CHECKED_FILE: &str = "checked";
const CHECKED_MAGIC: &[u8; 16] = b"TP-CHECKED-v1\n\0\0";

/// The digests of [`CHECKED_FILE`]; none when it is missing or not of this form (the records
/// are then checked again). Whoever can write the state directory holds the server's key in
/// it: the file trusts no one the key does not.
pub fn read_checked(path: &std::path::Path) -> HashSet<Digest> {
    let Ok(bytes) = std::fs::read(path) else {
        return HashSet::new();
    };
    match bytes.strip_prefix(CHECKED_MAGIC.as_slice()) {
        Some(body) if body.len() % 32 == 0 => body
            .chunks_exact(32)
            .filter_map(|c| Digest::try_from(c).ok())
            .collect(),
        _ => {
            warn!(file = %path.display(), "not a file of checked records: every signature is checked again");
            HashSet::new()
        }
    }
}

/// Replace [`CHECKED_FILE`] (a new file renamed over the old one, mode 0600).
pub fn write_checked(path: &std::path::Path, digests: &[Digest]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("new");
    let mut f = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?,
    );
    f.write_all(CHECKED_MAGIC)?;
    for d in digests {
        f.write_all(d)?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Read the key zone file.
pub fn read_zone_file(cfg: &Config) -> Result<ParsedZone, KeyServerError> {
    let origin = hickory_proto::rr::Name::from_ascii(&cfg.name).map_err(KeyServerError::Origin)?;
    zonefile::read(&cfg.zone_file, &origin).map_err(KeyServerError::ZoneFile)
}

/// Build the zone from a parsed file and the stored members (`signer.verified`: the zone being
/// served, whose unchanged members are taken without signing or verifying again). A zone-file
/// member that the server re-signed is taken in its re-signed form while its line is otherwise
/// unchanged and the copy's window ends later.
/// `stored` is the store's content for the zone (nothing is written here). The zone is not
/// encoded for the UDP fast path yet ([`KeyZone::encode`]).
pub fn build_zone(
    cfg: &Config,
    parsed: ParsedZone,
    signer: &ZoneSigner<'_>,
    stored: &View,
) -> Result<KeyZone, KeyServerError> {
    build_zone_checked(cfg, parsed, signer, stored, None).map(|(zone, _)| zone)
}

/// [`build_zone`] taking the records checked at an earlier load (`checked`, from
/// [`read_checked`]) without their signature checks, and returning the digests of the records
/// checked now ([`KeyZone::build_checked`]).
pub fn build_zone_checked(
    cfg: &Config,
    mut parsed: ParsedZone,
    signer: &ZoneSigner<'_>,
    stored: &View,
    checked: Option<&HashSet<Digest>>,
) -> Result<(KeyZone, Vec<Digest>), KeyServerError> {
    let generation = stored.generation;
    if stored.resigned().next().is_some() {
        let copies: std::collections::HashMap<(&str, std::net::IpAddr), &ResignedCopy> = stored
            .resigned()
            .map(|c| ((c.owner.as_str(), c.record.ip), c))
            .collect();
        for line in &mut parsed.lines {
            let Entry::Key(rec) = &mut line.entry else {
                continue;
            };
            let owner = line.owner.to_ascii().to_ascii_lowercase();
            if let Some(copy) = copies.get(&(owner.as_str(), rec.ip))
                && copy_applies(copy, rec)
            {
                let written = std::mem::replace(rec, copy.record.clone());
                line.written = Some(Box::new(written));
            }
        }
    }
    let members = stored.members().cloned().collect();
    let (zone, digests) =
        KeyZone::build_checked(parsed, members, generation, signer, time::now(), checked)
            .map_err(KeyServerError::ZoneRefused)?;
    // Said once, when a member is first withdrawn, not at every rebuild.
    let before: std::collections::HashSet<(&str, std::net::IpAddr)> = signer
        .verified
        .into_iter()
        .flat_map(|z| {
            z.withdrawn()
                .iter()
                .map(|m| (m.owner.as_str(), m.record.ip))
        })
        .collect();
    for m in zone.withdrawn() {
        if before.contains(&(m.owner.as_str(), m.record.ip)) {
            continue;
        }
        warn!(
            zone = %cfg.name,
            member = %m.owner,
            ip = %m.record.ip,
            expired = %time::format(m.record.not_after),
            "member withdrawn: its validity window has ended (tp ctl renew brings it back)"
        );
    }
    Ok((zone, digests))
}

/// Whether a re-signed copy stands for this zone-file line: the same key and fields, made from
/// this line's window (an operator who edits the window writes a new line).
fn copy_matches(copy: &ResignedCopy, line: &KeyRecord) -> bool {
    same_key(line, &copy.record)
        && copy
            .from
            .is_none_or(|w| w == (line.not_before, line.not_after))
}

/// A copy is served in place of its line while it matches the line and ends later.
fn copy_applies(copy: &ResignedCopy, line: &KeyRecord) -> bool {
    copy_matches(copy, line) && copy.record.not_after > line.not_after
}

/// The same key and fields, whatever the window and the signature.
fn same_key(a: &KeyRecord, b: &KeyRecord) -> bool {
    KeyRecord {
        not_before: b.not_before,
        not_after: b.not_after,
        signature: b.signature,
        ..a.clone()
    } == *b
}

impl KeyServer {
    /// Load keys, open the store and load the zone; any failure is fatal at startup.
    pub fn open(cfg: Config) -> Result<Self, KeyServerError> {
        let (kgc, own) = read_keys(&cfg)?;
        let store = Store::open(cfg.store_path()).map_err(|source| KeyServerError::StoreOpen {
            path: cfg.store_path().to_path_buf(),
            source,
        })?;
        let parsed = read_zone_file(&cfg)?;
        let signer = ZoneSigner {
            params: kgc.params(),
            key: &own,
            verified: None,
            fresh: &[],
        };
        let stored = store.view(&cfg.name)?;
        let checked_path = cfg.state_dir.join(CHECKED_FILE);
        let checked = read_checked(&checked_path);
        let (zone, digests) = build_zone_checked(&cfg, parsed, &signer, &stored, Some(&checked))?;
        // Written again only when it would change (a restart on an unchanged zone writes
        // nothing); a failure costs the next load its checks, nothing else.
        let changed =
            digests.len() != checked.len() || digests.iter().any(|d| !checked.contains(d));
        if changed && let Err(e) = write_checked(&checked_path, &digests) {
            warn!(file = %checked_path.display(), error = %e, "cannot keep the checked records for the next start");
        }
        drop((checked, digests));
        zone.encode();
        let (serial, _) = tokio::sync::watch::channel(zone.serial());
        Ok(Self {
            serial,
            cfg,
            kgc,
            own,
            store,
            zone: Arc::new(ArcSwap::from_pointee(zone)),
            write: Mutex::new(Written { stored }),
            pending: Mutex::default(),
            encoder: spawn_encoder(),
            counters: Arc::default(),
        })
    }

    /// The write lock. After a panic in another writer the in-memory view of the store may
    /// hold changes that were never stored: it is read again from the store.
    fn lock_write(&self) -> std::sync::MutexGuard<'_, Written> {
        match self.write.lock() {
            Ok(w) => w,
            Err(poisoned) => {
                let mut w = poisoned.into_inner();
                if let Ok(v) = self.store.view(&self.cfg.name) {
                    w.stored = v;
                }
                self.write.clear_poison();
                w
            }
        }
    }

    /// The served zone.
    pub fn zone(&self) -> ZoneCell {
        self.zone.clone()
    }

    /// Reload the zone file (the store's content is the in-memory view; copies of lines gone or
    /// edited are dropped). On error the old zone keeps serving.
    pub fn reload(&self) -> Result<(u32, usize), KeyServerError> {
        let mut w = self.lock_write();
        let parsed = read_zone_file(&self.cfg)?;
        // Re-signed copies of lines that are gone or changed (other key or fields) are
        // dropped: the file is what the operator means.
        let keyed: std::collections::HashMap<(String, std::net::IpAddr), &KeyRecord> = parsed
            .lines
            .iter()
            .filter_map(|l| match &l.entry {
                Entry::Key(rec) => Some(((l.owner.to_ascii().to_ascii_lowercase(), rec.ip), rec)),
                _ => None,
            })
            .collect();
        let stale: Vec<(String, std::net::IpAddr)> = w
            .stored
            .resigned()
            .filter(|c| {
                !keyed
                    .get(&(c.owner.clone(), c.record.ip))
                    .is_some_and(|line| copy_matches(c, line))
            })
            .map(|c| (c.owner.clone(), c.record.ip))
            .collect();
        let changes = Changes {
            dropped_copies: stale,
            ..Changes::default()
        };
        self.commit_file(&mut w, Some(parsed), &changes, Encode::Now)
    }

    /// Build the zone from the file as last loaded and the store with `changes`, reusing what
    /// the served zone verified; only if it loads, write `changes` (one transaction, durable)
    /// and serve it. On error nothing is stored and the old zone keeps serving.
    fn commit(
        &self,
        w: &mut Written,
        changes: &Changes,
        encode: Encode,
    ) -> Result<(u32, usize), KeyServerError> {
        self.commit_file(w, None, changes, encode)
    }

    /// [`KeyServer::commit`] from `file` (a reload) or, with `None`, from the file as the
    /// served zone was loaded from.
    fn commit_file(
        &self,
        w: &mut Written,
        file: Option<ParsedZone>,
        changes: &Changes,
        encode: Encode,
    ) -> Result<(u32, usize), KeyServerError> {
        let served = self.zone.load_full();
        let file = file.unwrap_or_else(|| served.written());
        let fresh: Vec<(&str, &KeyRecord)> = changes
            .members
            .iter()
            .map(|(o, _, r)| (o.as_str(), r))
            .chain(
                changes
                    .resigned
                    .iter()
                    .map(|c| (c.owner.as_str(), &c.record)),
            )
            .collect();
        let signer = ZoneSigner {
            params: self.kgc.params(),
            key: &self.own,
            verified: Some(&served),
            fresh: &fresh,
        };
        let t0 = std::time::Instant::now();
        let undo = w.stored.apply(changes);
        let zone = match build_zone(&self.cfg, file, &signer, &w.stored) {
            Ok(z) => z,
            Err(e) => {
                w.stored.undo(undo);
                return Err(e);
            }
        };
        let t1 = std::time::Instant::now();
        if let Err(e) = self.store.apply(&self.cfg.name, changes) {
            // The transaction may have been applied and only its flush have failed: what is
            // in sled is the truth, as a restart would read it.
            match self.store.view(&self.cfg.name) {
                Ok(v) => w.stored = v,
                Err(_) => w.stored.undo(undo),
            }
            return Err(e.into());
        }
        let stats = (zone.serial(), zone.members().len());
        let zone = Arc::new(zone);
        match (encode, &self.encoder) {
            (Encode::Later, Some(encoder)) if encoder.send(Job::Encode(zone.clone())).is_ok() => {}
            // Encoded before it is served: the fast path never pauses.
            _ => zone.encode(),
        }
        // Where a write's time goes (server/bench/enroll.sh reads these lines).
        debug!(
            zone = %self.cfg.name,
            written = changes.members.len() + changes.resigned.len() + changes.removed.len(),
            members = stats.1,
            build_us = (t1 - t0).as_micros(),
            store_us = t1.elapsed().as_micros(),
            "commit"
        );
        let old = self.zone.swap(zone);
        // Freeing a large zone takes a while: not on the write path.
        if let Some(encoder) = &self.encoder {
            let _ = encoder.send(Job::Drop(old));
        }
        self.serial
            .send_if_modified(|s| std::mem::replace(s, stats.0) != stats.0);
        Ok(stats)
    }

    /// Changes of the served serial.
    pub fn serial_changes(&self) -> tokio::sync::watch::Receiver<u32> {
        self.serial.subscribe()
    }

    /// Enroll a member online: issue, store, serve. If the new zone would not load, the
    /// member is taken out again and nothing changes. A member enrolled before for the same
    /// name and IP is replaced.
    pub fn enroll(
        &self,
        req: &KeyRequest,
        key_server: Option<(u16, KgcParams)>,
    ) -> Result<(KeyRecord, PartialKey), KeyServerError> {
        self.enroll_inner(req, key_server, true)
    }

    /// As [`KeyServer::enroll`], but a name that already has a key for this IP (enrolled or in
    /// the zone file) is refused with [`AlreadyEnrolled`]: enrollment over the network.
    pub fn enroll_new(
        &self,
        req: &KeyRequest,
        key_server: Option<(u16, KgcParams)>,
    ) -> Result<(KeyRecord, PartialKey), KeyServerError> {
        self.enroll_inner(req, key_server, false)
    }

    fn enroll_inner(
        &self,
        req: &KeyRequest,
        key_server: Option<(u16, KgcParams)>,
        replace: bool,
    ) -> Result<(KeyRecord, PartialKey), KeyServerError> {
        let (not_before, not_after) = self.window(
            time::now(),
            u64::from(self.cfg.enroll_validity_days) * 86_400,
        );
        let opts = IssueOptions {
            not_before,
            not_after,
            key_server,
        };
        let name = &req.identity.name;
        if !replace {
            // Refused early here without issuing; checked again at commit.
            self.check_new(name, req.identity.ip, None)?;
        }
        // Issued (proof of possession, extraction, signature) outside the lock, in parallel
        // with other enrollments; stored and served by a group commit.
        let (record, partial) = issue::issue(&self.kgc, &self.own, req, &opts, &mut OsRng)?;
        let (done, result) = std::sync::mpsc::sync_channel(1);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Waiting {
                owner: name.clone(),
                record: record.clone(),
                replace,
                done,
            });
        let mut w = self.lock_write();
        // A commit that ran while this one waited for the lock may have taken it.
        if let Ok(r) = result.try_recv() {
            return r.map(|()| (record, partial));
        }
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        self.commit_enrollments(&mut w, batch);
        drop(w);
        match result.recv() {
            Ok(r) => r.map(|()| (record, partial)),
            Err(_) => Err(KeyServerError::Lost),
        }
    }

    /// A name and IP that have a key already (served, withdrawn or stored) are refused;
    /// `stored` is the store's content when the caller holds `write`.
    fn check_new(
        &self,
        name: &str,
        ip: std::net::IpAddr,
        stored: Option<&View>,
    ) -> Result<(), KeyServerError> {
        let served = self.zone.load_full();
        let in_zone = served
            .members()
            .iter()
            .chain(served.withdrawn())
            .any(|m| m.owner == name && m.record.ip == ip);
        let in_store = match stored {
            Some(v) => v.get(name, ip).is_some(),
            None => self.store.get(&self.cfg.name, name, ip)?.is_some(),
        };
        if in_zone || in_store {
            return Err(AlreadyEnrolled {
                name: name.to_string(),
                ip,
            }
            .into());
        }
        Ok(())
    }

    /// Store and serve waiting enrollments with one transaction, one flush and one zone build
    /// per round; a round that will not load is retried one enrollment at a time, so one bad
    /// member refuses only itself. The caller holds `write`.
    fn commit_enrollments(&self, w: &mut Written, mut batch: Vec<Waiting>) {
        while !batch.is_empty() {
            // One enrollment per (name, IP) a round: a second one for the same key waits for
            // the next round, so it replaces (or meets) the first as if they came one by one.
            let mut seen = std::collections::HashSet::new();
            let (round, later): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|w| seen.insert((w.owner.clone(), w.record.ip)));
            batch = later;
            let mut ok = Vec::with_capacity(round.len());
            for one in round {
                match one.replace {
                    true => ok.push(one),
                    false => match self.check_new(&one.owner, one.record.ip, Some(&w.stored)) {
                        Ok(()) => ok.push(one),
                        Err(e) => {
                            let _ = one.done.send(Err(e));
                        }
                    },
                }
            }
            let changes = |ws: &[Waiting]| Changes {
                members: ws
                    .iter()
                    .map(|one| (one.owner.clone(), self.cfg.enroll_ttl, one.record.clone()))
                    .collect(),
                ..Changes::default()
            };
            if ok.is_empty() {
                continue;
            }
            match self.commit(w, &changes(&ok), Encode::Later) {
                Ok(_) => ok.into_iter().for_each(|one| {
                    let _ = one.done.send(Ok(()));
                }),
                Err(e) if ok.len() == 1 => {
                    let _ = ok[0].done.send(Err(refused(e)));
                }
                Err(_) => {
                    for one in ok {
                        let r = self
                            .commit(w, &changes(std::slice::from_ref(&one)), Encode::Later)
                            .map(|_| ())
                            .map_err(refused);
                        let _ = one.done.send(r);
                    }
                }
            }
        }
    }

    /// Re-sign every served member whose window ends within the refresh margin: a fresh
    /// window starting `inception_backdate_secs` ago, signed with this server's key, stored
    /// (with one generation step) and served. Members already expired stay withdrawn.
    /// Returns how many were re-signed.
    pub fn resign_due(&self) -> Result<usize, KeyServerError> {
        let mut w = self.lock_write();
        let now = time::now();
        let served = self.zone.load_full();
        let window = self.window(now, self.cfg.resign_validity_secs);
        let due: Vec<&twinpeaks::zone::Member> = served
            .members()
            .iter()
            .filter(|m| {
                let end = u64::from(m.record.not_after);
                end > now && end <= now.saturating_add(self.cfg.resign_margin_secs)
            })
            .collect();
        // Signing is the cost (one ECDSA signature a member): spread over the cores.
        let signed = par_map(&due, |m| {
            let mut rec = KeyRecord {
                not_before: window.0,
                not_after: window.1,
                signature: None,
                ..m.record.clone()
            };
            rec.sign(&m.owner, &self.own)?;
            Ok::<_, RecordError>(rec)
        })?;
        let mut members = Vec::new();
        let mut copies = Vec::new();
        for (m, rec) in due.iter().zip(signed) {
            match m.source {
                Source::Store => members.push((m.owner.clone(), m.ttl, rec)),
                Source::File(..) => copies.push(ResignedCopy {
                    owner: m.owner.clone(),
                    from: m.line_window(),
                    record: rec,
                }),
            }
        }
        let n = members.len() + copies.len();
        if n == 0 {
            return Ok(0);
        }
        let changes = Changes {
            members,
            resigned: copies,
            ..Changes::default()
        };
        self.commit(&mut w, &changes, Encode::Later)?;
        Ok(n)
    }

    /// Renew a member: the same key with a fresh window (resign_validity_secs), served at once;
    /// this also brings back a member withdrawn because its window had ended.
    pub fn renew(&self, owner: &str, ip: std::net::IpAddr) -> Result<KeyRecord, KeyServerError> {
        let owner = twinpeaks::clpkc::canonical_name(owner)?;
        let mut w = self.lock_write();
        let served = self.zone.load_full();
        let m = served
            .members()
            .iter()
            .chain(served.withdrawn())
            .find(|m| m.owner == owner && m.record.ip == ip)
            .ok_or_else(|| KeyServerError::NotMember {
                owner: owner.clone(),
                ip,
                zone: self.cfg.name.clone(),
            })?;
        // A withdrawn member was never checked (the build withdraws before any crypto): its
        // signature must be this server's before its fields are signed again.
        if m.record.signature.is_some() {
            m.record.verify_signature(&owner, self.own.public())?;
        }
        let window = self.window(time::now(), self.cfg.resign_validity_secs);
        let mut rec = KeyRecord {
            not_before: window.0,
            not_after: window.1,
            signature: None,
            ..m.record.clone()
        };
        rec.sign(&owner, &self.own)?;
        let changes = match m.source {
            Source::Store => Changes {
                members: vec![(owner.clone(), m.ttl, rec.clone())],
                ..Changes::default()
            },
            Source::File(..) => Changes {
                resigned: vec![ResignedCopy {
                    owner: owner.clone(),
                    record: rec.clone(),
                    from: m.line_window(),
                }],
                ..Changes::default()
            },
        };
        self.commit(&mut w, &changes, Encode::Later)?;
        Ok(rec)
    }

    /// Remove a member enrolled online (a zone-file member is removed by deleting its line and
    /// reloading). Its record is no longer served; secondaries follow by NOTIFY.
    pub fn remove(&self, owner: &str, ip: std::net::IpAddr) -> Result<(), KeyServerError> {
        let owner = twinpeaks::clpkc::canonical_name(owner)?;
        let mut w = self.lock_write();
        let served = self.zone.load_full();
        if let Some(m) = served
            .members()
            .iter()
            .chain(served.withdrawn())
            .find(|m| m.owner == owner && m.record.ip == ip)
            && let Source::File(path, line) = &m.source
        {
            return Err(KeyServerError::ZoneFileMember {
                owner,
                ip,
                file: path.to_path_buf(),
                line: *line,
            });
        }
        if w.stored.get(&owner, ip).is_none() {
            return Err(KeyServerError::NotEnrolled {
                owner,
                ip,
                zone: self.cfg.name.clone(),
            });
        }
        let changes = Changes {
            removed: vec![(owner, ip)],
            ..Changes::default()
        };
        self.commit(&mut w, &changes, Encode::Later)?;
        Ok(())
    }

    /// An IP change: enroll `req` (the member's new secret value and request for its new IP)
    /// and remove the enrolled record of the same name at `old_ip`, in one step. The old record
    /// must be an enrolled member (a zone-file member is refused naming its line, as
    /// [`KeyServer::remove`] does); if the new zone would not load, nothing is stored and
    /// nothing changes. A record already enrolled for the new IP is replaced, as by `enroll`.
    pub fn change_ip(
        &self,
        req: &KeyRequest,
        old_ip: std::net::IpAddr,
        key_server: Option<(u16, KgcParams)>,
    ) -> Result<(KeyRecord, PartialKey), KeyServerError> {
        let name = &req.identity.name;
        if req.identity.ip == old_ip {
            return Err(KeyServerError::ChangeIpSame(old_ip));
        }
        let (not_before, not_after) = self.window(
            time::now(),
            u64::from(self.cfg.enroll_validity_days) * 86_400,
        );
        let opts = IssueOptions {
            not_before,
            not_after,
            key_server,
        };
        let mut w = self.lock_write();
        let served = self.zone.load_full();
        if let Some(m) = served
            .members()
            .iter()
            .chain(served.withdrawn())
            .find(|m| &m.owner == name && m.record.ip == old_ip)
            && let Source::File(path, line) = &m.source
        {
            return Err(KeyServerError::ChangeIpZoneFileMember {
                owner: name.clone(),
                ip: old_ip,
                file: path.to_path_buf(),
                line: *line,
            });
        }
        if w.stored.get(name, old_ip).is_none() {
            return Err(KeyServerError::ChangeIpNotEnrolled {
                owner: name.clone(),
                ip: old_ip,
                zone: self.cfg.name.clone(),
            });
        }
        let (record, partial) = issue::issue(&self.kgc, &self.own, req, &opts, &mut OsRng)?;
        // The new record in and the old one out in one transaction.
        let changes = Changes {
            members: vec![(name.clone(), self.cfg.enroll_ttl, record.clone())],
            removed: vec![(name.clone(), old_ip)],
            ..Changes::default()
        };
        self.commit(&mut w, &changes, Encode::Later)
            .map_err(|e| match e {
                KeyServerError::ZoneRefused(_) => KeyServerError::ChangeIpRefused(Box::new(e)),
                other => other,
            })?;
        Ok((record, partial))
    }

    /// Every member, served or withdrawn, in zone order: (member, withdrawn).
    pub fn members(&self) -> Vec<(twinpeaks::zone::Member, bool)> {
        let z = self.zone.load_full();
        let mut v: Vec<_> = z.members().iter().map(|m| (m.clone(), false)).collect();
        v.extend(z.withdrawn().iter().map(|m| (m.clone(), true)));
        v
    }

    /// A validity window of `len` seconds from now, starting `inception_backdate_secs` ago.
    fn window(&self, now: u64, len: u64) -> (u32, u32) {
        time::window(now, len, self.cfg.inception_backdate_secs)
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
