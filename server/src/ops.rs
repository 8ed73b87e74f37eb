//! The operator operations behind `tp`: KGC setup, key requests, offline issuance,
//! finalization, zone checks, island anchors, the control-socket client and benchmark zones.
//! Each returns what it made (keys, records, paths) or an [`OpsError`] that names the file,
//! the line and the reason; printing is the binary's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use rand_core::OsRng;
use twinpeaks::clpkc::{
    self, CryptoError, EntityKey, Identity, KeyRequest, Kgc, KgcParams, PartialKey, PublicKey,
    SecretValue,
};
use twinpeaks::issue::{self, IssueError, IssueOptions};
use twinpeaks::keyfile::{self, KeyFileError};
use twinpeaks::record::{self, KeyRecord, KeyServerInfo, RecordError, TPKEY_MNEMONIC};
use twinpeaks::store::{Store, StoreError};
use twinpeaks::time;
use twinpeaks::zone::ZoneSigner;
use twinpeaks::zonefile::{self, ZoneErrors};

use crate::config::Config;
use crate::control::{self, SealError};
use crate::keyserver::{self, KEY_FILE, KGC_FILE, PARAMS_FILE};

/// Why an operation failed. Each variant's message is the one `tp` prints.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A key file is missing, unreadable or wrong (the file and the reason).
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// A key server's config cannot be used (it names the file).
    #[error(transparent)]
    Config(crate::config::ConfigError),
    /// A key server's own keys are missing or are for another name than its config's.
    #[error(transparent)]
    Keys(keyserver::KeyServerError),
    /// A CL-PKC step failed: a bad name, identity, request or encoding.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A record could not be made.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The issuing key server refused the request.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// The store of enrolled members failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The partial key could not be sealed to the requester.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A key server's name is not a DNS name.
    #[error(transparent)]
    DnsName(#[from] hickory_proto::ProtoError),
    /// I/O that names no file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The key server is running; this operation needs it stopped.
    #[error("tpkd is running (its control socket {} answers): stop it first", .0.display())]
    Running(PathBuf),
    /// I/O on this file or directory.
    #[error("{}", path.display())]
    Path {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// This file cannot be read.
    #[error("{}: cannot read", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// This key zone file cannot be appended to.
    #[error("{}: cannot append", path.display())]
    Append {
        /// The zone file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A KGC cannot be made for this name.
    #[error("name {name}: {reason}")]
    KgcName {
        /// The key server's name as given.
        name: String,
        /// Why.
        reason: CryptoError,
    },
    /// An identity cannot be made for this name and IP.
    #[error("{name} {ip}: {reason}")]
    Identity {
        /// The entity's name as given.
        name: String,
        /// Its IP.
        ip: IpAddr,
        /// Why.
        reason: CryptoError,
    },
    /// The key zone file does not parse: every problem, one a line, with its file and line.
    #[error("{0}")]
    ZoneFile(ZoneErrors),
    /// The key zone file already holds a key for this name and IP.
    #[error("{}:{line}: already holds a key for {name} {ip}; remove that line to re-issue", file.display())]
    AlreadyIssued {
        /// The zone file.
        file: PathBuf,
        /// The line of the existing key.
        line: usize,
        /// The member's name.
        name: String,
        /// Its IP.
        ip: IpAddr,
    },
    /// The store cannot be opened for an offline issue (tpkd holds it while it runs).
    #[error("{}: cannot open store (is tpkd running? use `tp ctl enroll`)", path.display())]
    StoreInUse {
        /// The store.
        path: PathBuf,
        /// The cause.
        source: StoreError,
    },
    /// The store cannot be opened for a zone check.
    #[error("{}: {reason} (is tpkd running? check the file alone with --no-store)", path.display())]
    StoreUnavailable {
        /// The store.
        path: PathBuf,
        /// Why.
        reason: StoreError,
    },
    /// The response's partial key was not sealed to this secret value.
    #[error(
        "{}: the partial key cannot be opened with this secret value (a response to another request?)",
        response.display()
    )]
    NotForThisSecret {
        /// The response file.
        response: PathBuf,
    },
    /// The response's partial key does not complete this secret value and identity.
    #[error(
        "{}: the partial key does not match this secret value and identity: {reason}",
        response.display()
    )]
    PartialKeyMismatch {
        /// The response file.
        response: PathBuf,
        /// Why.
        reason: CryptoError,
    },
    /// The key server listens on no address of its own key's IP.
    #[error(
        "{}: no listen address on {ip}, the address of the key server's own key",
        config.display()
    )]
    NoListenAddress {
        /// The config file.
        config: PathBuf,
        /// The IP of the key server's own key.
        ip: IpAddr,
    },
    /// The key zone file cannot be read as tpkd would read it (every problem, one a line).
    #[error(transparent)]
    ZoneLoad(keyserver::KeyServerError),
    /// The zone would not load: tpkd would refuse it.
    #[error("zone {zone} refused:\n{errors}")]
    ZoneRefused {
        /// The zone.
        zone: String,
        /// Every problem, one a line, each with its file and line.
        errors: keyserver::KeyServerError,
    },
    /// tpkd's control socket does not answer.
    #[error("{}: is tpkd running?", socket.display())]
    Connect {
        /// The control socket.
        socket: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// tpkd refused the request; its reason.
    #[error("{0}")]
    Daemon(String),
    /// tpkd answered something that is not a reply.
    #[error("unexpected reply from tpkd: {0}")]
    UnexpectedReply(String),
    /// An enrollment over UPDATE could not be sent or its answer not verified.
    #[error("{0}")]
    Enroll(String),
    /// The key server refused an enrollment over UPDATE (its log says why).
    #[error("{server}: enrollment refused: {} (the key server's log says why)", twinpeaks::enroll::rcode_mnemonic(*rcode))]
    EnrollRefused {
        /// The key server.
        server: SocketAddr,
        /// Its RCODE.
        rcode: hickory_proto::op::ResponseCode,
    },
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Start of a validity window: now.
/// A window of `days` from now, backdated as tpkd's default `inception_backdate_secs`.
fn window_days(days: u32) -> (u32, u32) {
    time::window(
        time::now(),
        u64::from(days) * 86_400,
        time::DEFAULT_BACKDATE_SECS,
    )
}

/// Create the KGC of a key server: `state` (created), its master secret (0600) and params.
pub fn kgc_setup(state: &Path, name: &str) -> Result<Kgc, OpsError> {
    std::fs::create_dir_all(state).map_err(|source| OpsError::Path {
        path: state.to_path_buf(),
        source,
    })?;
    let kgc = Kgc::setup(name, &mut OsRng).map_err(|reason| OpsError::KgcName {
        name: name.to_string(),
        reason,
    })?;
    keyfile::write_kgc(&state.join(KGC_FILE), &kgc)?;
    keyfile::write_public(
        &state.join(PARAMS_FILE),
        &keyfile::params_to_text(kgc.params()),
    )?;
    Ok(kgc)
}

/// A root key server's self-issued key, as [`self_issue_root`] wrote it.
#[derive(Debug)]
pub struct RootKey {
    /// The apex record, signed with the root's own key.
    pub record: KeyRecord,
    /// The trust-anchor file written in the state directory.
    pub anchor_file: PathBuf,
    /// The anchor's record line (newline-terminated), for a resolver's anchor file.
    pub line: String,
}

/// Self-issue a root key server's key: writes `server.key` and the `anchor` file in `state`,
/// and puts the apex record in `store` (the root's `<state>/store`).
pub fn self_issue_root(
    state: &Path,
    store: &Store,
    kgc: &Kgc,
    ip: IpAddr,
    port: u16,
    validity_days: u32,
) -> Result<RootKey, OpsError> {
    let name = kgc.params().name.clone();
    let id = Identity::new(&name, ip, kgc.params())?;
    let x = SecretValue::generate(&mut OsRng);
    let req = KeyRequest::new(id.clone(), &x);
    let partial = kgc.extract(&req, &mut OsRng)?;
    let own = EntityKey::combine(&id, &x, &partial, kgc.params())?;
    keyfile::write_entity(&state.join(KEY_FILE), &own, kgc.params())?;
    let rec = root_record(kgc, &own, ip, port, validity_days)?;
    store.put(&name, &name, ROOT_TTL, &rec)?;
    write_anchor(state, &name, rec)
}

/// A root's self-issued apex record, signed with its own key `own`.
fn root_record(
    kgc: &Kgc,
    own: &EntityKey,
    ip: IpAddr,
    port: u16,
    validity_days: u32,
) -> Result<KeyRecord, OpsError> {
    let (not_before, not_after) = window_days(validity_days);
    let mut rec = KeyRecord {
        ip,
        w: own.w().into(),
        issuer: kgc.params().digest(),
        not_before,
        not_after,
        key_server: Some(Box::new(KeyServerInfo {
            port,
            p_pub: kgc.params().p_pub,
        })),
        signature: None,
    };
    rec.sign(&kgc.params().name, own)?;
    Ok(rec)
}

/// TTL of a root's own apex record.
const ROOT_TTL: u32 = 86_400;

/// The `anchor` file of a root in `state`, from its self-issued apex record.
fn write_anchor(state: &Path, name: &str, rec: KeyRecord) -> Result<RootKey, OpsError> {
    let line = format!("{name} {ROOT_TTL} IN {TPKEY_MNEMONIC} {rec}\n");
    let anchor = format!("; trust anchor: the self-issued key-server record of {name}\n{line}");
    let anchor_file = state.join("anchor");
    keyfile::write_public(&anchor_file, &anchor)?;
    Ok(RootKey {
        record: rec,
        anchor_file,
        line,
    })
}

/// What [`keygen`] made.
pub struct Keygen {
    /// The secret value `x`, also in `secret_file`.
    pub secret: SecretValue,
    /// The key request, also in `request_file`.
    pub request: KeyRequest,
    /// `PREFIX.secret` (0600).
    pub secret_file: PathBuf,
    /// `PREFIX.req` (public, like a CSR).
    pub request_file: PathBuf,
}

/// Make an entity's secret value and key request for `issuer`; writes `PREFIX.secret` and
/// `PREFIX.req`.
pub fn keygen(name: &str, ip: IpAddr, issuer: &KgcParams, out: &Path) -> Result<Keygen, OpsError> {
    let id = Identity::new(name, ip, issuer).map_err(|reason| OpsError::Identity {
        name: name.to_string(),
        ip,
        reason,
    })?;
    let secret = SecretValue::generate(&mut OsRng);
    let request = KeyRequest::new(id.clone(), &secret);
    let (secret_file, request_file) = (with_ext(out, "secret"), with_ext(out, "req"));
    keyfile::write_secret_value(&secret_file, &id, &secret)?;
    keyfile::write_public(&request_file, &keyfile::request_to_text(&request))?;
    Ok(Keygen {
        secret,
        request,
        secret_file,
        request_file,
    })
}

/// Where an issued record goes.
pub enum Target {
    /// Appended to a key zone file.
    File(PathBuf),
    /// Put in a store.
    Store(PathBuf),
}

/// Issue offline from the key server in `state`: the record goes to `target`, the response
/// (the partial key sealed to the requester's X) to `response`. `child`: the member is a key
/// server on this port with these params.
pub fn issue_to(
    state: &Path,
    req: &KeyRequest,
    child: Option<(u16, KgcParams)>,
    validity_days: u32,
    ttl: u32,
    target: &Target,
    response: &Path,
) -> Result<KeyRecord, OpsError> {
    let kgc = keyfile::read_kgc(&state.join(KGC_FILE))?;
    let (own, _) = keyfile::read_entity(&state.join(KEY_FILE))?;
    let (not_before, not_after) = window_days(validity_days);
    let opts = IssueOptions {
        not_before,
        not_after,
        key_server: child,
    };
    let name = &req.identity.name;
    if let Target::File(f) = target {
        // A second line for the same (name, IP) would make the zone refuse to load.
        let origin = hickory_proto::rr::Name::from_ascii(&kgc.params().name)?;
        let parsed = zonefile::read(f, &origin).map_err(OpsError::ZoneFile)?;
        let same = |l: &zonefile::Line| {
            matches!(&l.entry, zonefile::Entry::Key(k) if k.ip == req.identity.ip)
                && l.owner.to_ascii().eq_ignore_ascii_case(name)
        };
        if let Some(l) = parsed.lines.iter().find(|l| same(l)) {
            return Err(OpsError::AlreadyIssued {
                file: f.clone(),
                line: l.line,
                name: name.clone(),
                ip: req.identity.ip,
            });
        }
    }
    let (record, partial) = issue::issue(&kgc, &own, req, &opts, &mut OsRng)?;
    // The response first: if recording the member then fails, nothing is half-applied.
    let text = control::response_text(req, kgc.params(), &partial, &record)?;
    keyfile::write_public(response, &text)?;
    match target {
        Target::File(f) => {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(f)
                .map_err(|source| OpsError::Append {
                    path: f.clone(),
                    source,
                })?;
            writeln!(file, "{name} {ttl} IN {TPKEY_MNEMONIC} {record}").map_err(|source| {
                OpsError::Path {
                    path: f.clone(),
                    source,
                }
            })?;
        }
        Target::Store(s) => {
            let store = Store::open(s).map_err(|source| OpsError::StoreInUse {
                path: s.clone(),
                source,
            })?;
            store.put(&kgc.params().name, name, ttl, &record)?;
        }
    }
    Ok(record)
}

/// Combine the secret value in `secret` with the issuer's response in `response`; writes the
/// private key to `out` (0600).
pub fn finalize(secret: &Path, response: &Path, out: &Path) -> Result<EntityKey, OpsError> {
    let x = keyfile::read_secret_value(secret)?;
    let text = std::fs::read_to_string(response).map_err(|source| OpsError::Read {
        path: response.to_path_buf(),
        source,
    })?;
    let r = keyfile::parse_response(response, &text)?;
    let issuer = KgcParams::decode(&r.issuer_params)?;
    let id = Identity::new(&r.name, r.ip, &issuer)?;
    let partial_bytes =
        zeroize::Zeroizing::new(x.open(&id, &r.sealed_partial_key).map_err(|_| {
            OpsError::NotForThisSecret {
                response: response.to_path_buf(),
            }
        })?);
    let partial = PartialKey::decode(&partial_bytes)?;
    let key = EntityKey::combine(&id, &x, &partial, &issuer).map_err(|reason| {
        OpsError::PartialKeyMismatch {
            response: response.to_path_buf(),
            reason,
        }
    })?;
    keyfile::write_entity(out, &key, &issuer)?;
    Ok(key)
}

/// A key server's identity as an island anchor (`[[islands]]` in a resolver's settings).
pub struct Island {
    /// The key server's name.
    pub name: String,
    /// Its listen address on the IP of its own key.
    pub address: SocketAddr,
    /// Its public params.
    pub params: KgcParams,
    /// Its own public key.
    pub key: PublicKey,
}

/// The island anchor of the key server configured in `config`.
pub fn island(config: &Path) -> Result<Island, OpsError> {
    let cfg = Config::load(config).map_err(OpsError::Config)?;
    let params = keyfile::read_params(&cfg.state_dir.join(PARAMS_FILE))?;
    let (own, _) = keyfile::read_entity(&cfg.state_dir.join(KEY_FILE))?;
    let ip = own.identity().ip;
    let address =
        *cfg.listen
            .iter()
            .find(|a| a.ip() == ip)
            .ok_or_else(|| OpsError::NoListenAddress {
                config: config.to_path_buf(),
                ip,
            })?;
    Ok(Island {
        name: cfg.name,
        address,
        params,
        key: *own.public(),
    })
}

/// A zone that loads, as [`zone_check`] found it.
pub struct ZoneCheck {
    /// The key zone file.
    pub zone_file: PathBuf,
    /// The zone's name.
    pub name: String,
    /// The serial it would be served with.
    pub serial: u32,
    /// Its key records.
    pub members: usize,
}

/// Check the zone of the key server configured in `config` exactly as tpkd would load it;
/// `no_store`: the zone file alone, without the store of enrolled members.
pub fn zone_check(config: &Path, no_store: bool) -> Result<ZoneCheck, OpsError> {
    let cfg = Config::load(config).map_err(OpsError::Config)?;
    let (kgc, own) = keyserver::read_keys(&cfg).map_err(OpsError::Keys)?;
    let stored = if no_store {
        twinpeaks::store::View::empty(&cfg.name)
    } else {
        let unavailable = |reason| OpsError::StoreUnavailable {
            path: cfg.store_path().to_path_buf(),
            reason,
        };
        Store::open(cfg.store_path())
            .and_then(|s| s.view(&cfg.name))
            .map_err(unavailable)?
    };
    let signer = ZoneSigner {
        params: kgc.params(),
        key: &own,
        verified: None,
        fresh: &[],
    };
    let parsed = keyserver::read_zone_file(&cfg).map_err(OpsError::ZoneLoad)?;
    let zone = keyserver::build_zone(&cfg, parsed, &signer, &stored).map_err(|errors| {
        OpsError::ZoneRefused {
            zone: cfg.name.clone(),
            errors,
        }
    })?;
    Ok(ZoneCheck {
        zone_file: cfg.zone_file.clone(),
        name: cfg.name.clone(),
        serial: zone.serial(),
        members: zone.members().len(),
    })
}

/// Send one request line to the running tpkd of `cfg` over its control socket; the reply.
pub fn ctl_request(cfg: &Config, line: &str) -> Result<String, OpsError> {
    use std::io::{Read, Write};
    let path = cfg.control_path();
    let mut s =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| OpsError::Connect {
            socket: path.to_path_buf(),
            source,
        })?;
    // tpkd answers after its write lock (a reload, a re-signing pass): long, but not forever.
    s.set_read_timeout(Some(std::time::Duration::from_secs(300)))?;
    s.set_write_timeout(Some(std::time::Duration::from_secs(30)))?;
    s.write_all(line.as_bytes())?;
    s.write_all(b"\n")?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    match out.split_once('\n') {
        Some(("ok", rest)) => Ok(rest.to_string()),
        Some(("error", rest)) => Err(OpsError::Daemon(rest.trim_end().to_string())),
        _ => Err(OpsError::UnexpectedReply(out)),
    }
}

/// Enroll a member online through the running tpkd of `cfg` (`child`: the member is a key
/// server on this port with these params); writes tpkd's response to `response`.
pub fn ctl_enroll(
    cfg: &Config,
    req: &KeyRequest,
    child: Option<(u16, KgcParams)>,
    response: &Path,
) -> Result<(), OpsError> {
    let mut line = format!("enroll {}", hex::encode(req.encode()));
    if let Some((port, params)) = child {
        line.push_str(&format!(" ks={port}:{}", hex::encode(params.encode())));
    }
    let text = ctl_request(cfg, &line)?;
    keyfile::write_public(response, &text)?;
    Ok(())
}

/// Move a member to a new IP through the running tpkd of `cfg`: enroll `req` (for the new IP)
/// and remove the enrolled record at `old_ip` in one step; writes the response to `response`.
pub fn ctl_change_ip(
    cfg: &Config,
    req: &KeyRequest,
    old_ip: IpAddr,
    child: Option<(u16, KgcParams)>,
    response: &Path,
) -> Result<(), OpsError> {
    let mut line = format!("change-ip {} {old_ip}", hex::encode(req.encode()));
    if let Some((port, params)) = child {
        line.push_str(&format!(" ks={port}:{}", hex::encode(params.encode())));
    }
    let text = ctl_request(cfg, &line)?;
    keyfile::write_public(response, &text)?;
    Ok(())
}

/// Make a throwaway key server and a zone of `count` members under `origin` in `out`
/// (benchmarks): its state, the zone in our syntax and in RFC 3597 form, the queries and a
/// tpkd.toml. Returns the origin, canonical.
pub fn gen_zone(count: usize, out: &Path, origin: &str) -> Result<String, OpsError> {
    let origin = clpkc::canonical_name(origin)?;
    std::fs::create_dir_all(out)?;
    let state = out.join("state");
    let kgc = kgc_setup(&state, &origin)?;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    self_issue_root(
        &state,
        &Store::open(&state.join("store"))?,
        &kgc,
        ip,
        5300,
        3650,
    )?;
    let (own, _) = keyfile::read_entity(&state.join(KEY_FILE))?;
    let (not_before, not_after) = window_days(365);
    let soa = format!(
        "$ORIGIN {origin}\n$TTL 3600\n@ IN SOA ns.{origin} hostmaster.{origin} 1 7200 3600 1209600 300\n@ IN NS ns.{origin}\nns IN A 127.0.0.1\n"
    );
    // One issuance a member (the cost): spread over the cores, lines kept in member order.
    // (our line, the RFC 3597 line, the query line) of member i.
    type Lines = (String, String, String);
    let one = |i: usize| -> Result<Lines, OpsError> {
        let name = format!("www{i}.{origin}");
        let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let id = Identity::new(&name, ip, kgc.params())?;
        let x = SecretValue::generate(&mut OsRng);
        let opts = IssueOptions {
            not_before,
            not_after,
            key_server: None,
        };
        let (rec, _) = issue::issue(&kgc, &own, &KeyRequest::new(id, &x), &opts, &mut OsRng)?;
        Ok((
            format!("{name} 3600 IN {TPKEY_MNEMONIC} {rec}\n"),
            format!(
                "{name} 3600 IN TYPE{} {}\n",
                record::TPKEY,
                record::generic_rdata(&rec.to_wire()?)
            ),
            format!("{name} TYPE{}\n", record::TPKEY),
        ))
    };
    let indices: Vec<usize> = (0..count).collect();
    let lines = keyserver::par_map(&indices, |&i| one(i))?;
    let mut ours = soa.clone();
    let mut generic = soa;
    let mut queries = String::new();
    for (a, b, c) in lines {
        ours.push_str(&a);
        generic.push_str(&b);
        queries.push_str(&c);
    }
    std::fs::write(out.join("bench.keys"), ours)?;
    std::fs::write(out.join("bench.rfc3597.zone"), generic)?;
    std::fs::write(out.join("queries.txt"), queries)?;
    std::fs::write(
        out.join("tpkd.toml"),
        format!(
            "name = \"{origin}\"\nlisten = [\"127.0.0.1:5300\"]\nstate_dir = \"state\"\nzone_file = \"bench.keys\"\naxfr_allow = [\"127.0.0.0/8\"]\nlog = \"warn\"\n"
        ),
    )?;
    Ok(origin)
}

/// An enrollment sent over the network as a TSIG-signed DNS UPDATE ([`net_enroll`]).
pub struct NetEnroll<'a> {
    /// The parent key server's DNS address.
    pub server: SocketAddr,
    /// Its key zone (the UPDATE's zone).
    pub zone: &'a str,
    /// The TSIG key's name.
    pub key_name: &'a str,
    /// The file holding the TSIG secret, base64 (0600).
    pub secret_file: &'a Path,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: &'a str,
    /// How long to wait for the answer.
    pub timeout: std::time::Duration,
}

impl NetEnroll<'_> {
    /// The TSIG signer from the secret file.
    fn signer(&self) -> Result<hickory_proto::rr::TSigner, OpsError> {
        let bad = |e: String| OpsError::Enroll(e);
        let text = keyfile::read_secret(self.secret_file)?;
        let secret = twinpeaks::enroll::decode_tsig_secret(&text)
            .map_err(|e| bad(format!("{}: {e}", self.secret_file.display())))?;
        let alg = twinpeaks::enroll::tsig_algorithm(self.algorithm).map_err(bad)?;
        let key = hickory_proto::rr::Name::from_ascii(self.key_name)?;
        hickory_proto::rr::TSigner::new(secret.to_vec(), alg, key, 300)
            .map_err(|e| bad(format!("TSIG key {}: {e}", self.key_name)))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, OpsError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Enroll `req` with the key server at `net.server` over DNS UPDATE signed with TSIG
/// (docs/enrollment.md); writes its response to `response`, as `tp ctl enroll` does.
pub fn net_enroll(
    net: &NetEnroll<'_>,
    req: &KeyRequest,
    child: Option<(u16, KgcParams)>,
    response: &Path,
) -> Result<(), OpsError> {
    let signer = net.signer()?;
    runtime()?.block_on(enroll_one(net, signer, req, child, response))
}

/// What [`net_enroll_dir`] did.
#[derive(Debug)]
pub struct BulkEnroll {
    /// Requests enrolled (their responses written).
    pub enrolled: usize,
    /// Requests that failed: (request file, why).
    pub failed: Vec<(PathBuf, OpsError)>,
    /// Wall time of the whole run.
    pub elapsed: std::time::Duration,
}

/// Enroll every `*.req` file of `dir` (made by `tp keygen`) over UPDATE, `parallel` at a time,
/// writing each response beside its request as `*.resp`: a fleet provisioned in one run.
pub fn net_enroll_dir(
    net: &NetEnroll<'_>,
    dir: &Path,
    parallel: usize,
) -> Result<BulkEnroll, OpsError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "req") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(OpsError::Enroll(format!(
            "{}: no request files (*.req, from tp keygen)",
            dir.display()
        )));
    }
    let mut requests = Vec::with_capacity(files.len());
    let mut failed = Vec::new();
    for f in files {
        match keyfile::read_request(&f) {
            Ok(r) => requests.push((f, r)),
            Err(e) => failed.push((f, e.into())),
        }
    }
    let signer = net.signer()?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let t0 = std::time::Instant::now();
    let results = runtime()?.block_on(async {
        let mut tasks = Vec::with_capacity(requests.len());
        for (file, req) in &requests {
            let slots = slots.clone();
            let signer = signer.clone();
            tasks.push(async move {
                // The semaphore is never closed.
                let _slot = slots.acquire().await;
                let response = file.with_extension("resp");
                (file, enroll_one(net, signer, req, None, &response).await)
            });
        }
        futures_util::future::join_all(tasks).await
    });
    let elapsed = t0.elapsed();
    let mut enrolled = 0;
    for (file, r) in results {
        match r {
            Ok(()) => enrolled += 1,
            Err(e) => failed.push((file.clone(), e)),
        }
    }
    Ok(BulkEnroll {
        enrolled,
        failed,
        elapsed,
    })
}

/// One enrollment over UPDATE; the response is written only once its TSIG and its identity
/// check out.
async fn enroll_one(
    net: &NetEnroll<'_>,
    signer: hickory_proto::rr::TSigner,
    req: &KeyRequest,
    child: Option<(u16, KgcParams)>,
    response: &Path,
) -> Result<(), OpsError> {
    use twinpeaks::enroll::{self, EnrollRequest, Submitted};
    let bad = |e: String| OpsError::Enroll(e);
    let mut zone = hickory_proto::rr::Name::from_ascii(net.zone)?;
    zone.set_fqdn(true);
    let owner = hickory_proto::rr::Name::from_ascii(&req.identity.name)?;
    let ereq = EnrollRequest {
        request: req.clone(),
        key_server: child,
    };
    let answer = enroll::submit(net.server, &zone, &owner, &ereq, signer, net.timeout)
        .await
        .map_err(bad)?;
    let text = match answer {
        Submitted::Enrolled(text) => text,
        Submitted::Refused(rcode) => {
            return Err(OpsError::EnrollRefused {
                server: net.server,
                rcode,
            });
        }
    };
    let r = keyfile::parse_response(response, &text)?;
    if r.ip != req.identity.ip
        || clpkc::canonical_name(&r.name).ok().as_deref() != Some(req.identity.name.as_str())
    {
        return Err(bad(format!(
            "{}: the answer is for {} {}, not for the request's {} {}",
            net.server, r.name, r.ip, req.identity.name, req.identity.ip
        )));
    }
    keyfile::write_public(response, &text)?;
    Ok(())
}

/// A member issued under the retired KGC params.
#[derive(Debug)]
pub struct Retired {
    /// Its name.
    pub name: String,
    /// Its IP.
    pub ip: IpAddr,
    /// A child key server (its port), whose own KGC and members are not affected.
    pub key_server: Option<u16>,
    /// Where it was: the zone file and line, or `None` for a member enrolled online.
    pub line: Option<(PathBuf, usize)>,
}

/// What [`kgc_rotate`] did.
#[derive(Debug)]
pub struct Rotation {
    /// The new params file (public).
    pub params_file: PathBuf,
    /// Digest of the new params.
    pub digest: [u8; 32],
    /// Enrolled members withdrawn from the store (the apex record of a root excepted).
    pub withdrawn: Vec<Retired>,
    /// Zone-file members: tpkd refuses the zone until each line is re-issued or deleted.
    pub file_members: Vec<Retired>,
    /// A root: its key self-issued again, and the new trust anchor.
    pub root: Option<RootKey>,
    /// Not a root: this key server's own name, IP and port, whose record at the parent
    /// carries the retired P_pub.
    pub own: (String, IpAddr, u16),
    /// This run finished a rotation a crash had interrupted (its withdrawals may have been
    /// made, and listed, by that run).
    pub resumed: bool,
}

/// KGC compromise: a new master secret and params for the key server of `config` (tpkd
/// stopped). Every member enrolled online is withdrawn in one store transaction (its record
/// was issued under the retired params) and listed, as are the zone file's members; a root
/// self-issues its own key again and writes a new trust anchor. The retired master secret is
/// deleted.
///
/// Crash-safe by rolling forward: the new files are made in `state/rotating/`, which is marked
/// complete (fsynced) before anything else changes; a run that finds a complete staging
/// directory finishes that rotation (store, then renames) instead of starting another, and one
/// that finds an incomplete one starts over.
pub fn kgc_rotate(config: &Path, validity_days: u32) -> Result<Rotation, OpsError> {
    let cfg = Config::load(config).map_err(OpsError::Config)?;
    let sock = cfg.control_path().to_path_buf();
    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        return Err(OpsError::Running(sock));
    }
    let path_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OpsError::Path { path, source }
    };
    let state = &cfg.state_dir;
    let name = cfg.name.clone();
    let staging = state.join("rotating");
    let complete = staging.join("COMPLETE");
    // A root's own key is self-issued: its issuer is itself (this holds for the old key and
    // the new one, so a re-run after a crash decides the same).
    let (own, own_issuer) = keyfile::read_entity(&state.join(KEY_FILE))?;
    let is_root = own_issuer.name == name;
    let ip = own.identity().ip;
    let store = Store::open(cfg.store_path()).map_err(|reason| OpsError::StoreUnavailable {
        path: cfg.store_path().to_path_buf(),
        reason,
    })?;
    let view = store.view(&name)?;
    let port = view
        .get(&name, ip)
        .and_then(|(_, r)| r.key_server.as_ref().map(|k| k.port))
        .or_else(|| cfg.listen.first().map(|a| a.port()))
        .unwrap_or(53);
    let resumed = complete.exists();
    if !resumed {
        // Nothing has changed yet: (re)make the staging directory from scratch, once the old
        // keys are known to be this server's.
        keyserver::read_keys(&cfg).map_err(OpsError::Keys)?;
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(path_err(&staging))?;
        }
        let new = kgc_setup(&staging, &name)?;
        if is_root {
            let id = Identity::new(&name, ip, new.params())?;
            let x = SecretValue::generate(&mut OsRng);
            let req = KeyRequest::new(id.clone(), &x);
            let partial = new.extract(&req, &mut OsRng)?;
            let key = EntityKey::combine(&id, &x, &partial, new.params())?;
            keyfile::write_entity(&staging.join(KEY_FILE), &key, new.params())?;
            let rec = root_record(&new, &key, ip, port, validity_days)?;
            keyfile::write_public(&staging.join(APEX_FILE), &hex::encode(rec.to_wire()?))?;
            write_anchor(&staging, &name, rec)?;
        }
        keyfile::write_secret(&complete, "complete\n")?;
        sync_dir(&staging)?;
    }
    // From here on every step can be done again. The new files: in staging, or already
    // renamed into the state directory by an interrupted run.
    let staged = |f: &str| {
        let p = staging.join(f);
        if p.exists() { p } else { state.join(f) }
    };
    let new = keyfile::read_kgc(&staged(KGC_FILE))?;
    let digest = new.params().digest();
    let apex = if is_root {
        let text =
            std::fs::read_to_string(staged(APEX_FILE)).map_err(path_err(&staged(APEX_FILE)))?;
        let wire = hex::decode(text.trim())
            .map_err(|_| OpsError::Enroll(format!("{}: not hex", staged(APEX_FILE).display())))?;
        Some(KeyRecord::from_wire(&wire)?)
    } else {
        None
    };
    // One transaction: every member and copy issued under other params out, a root's new
    // apex record in.
    let mut changes = twinpeaks::store::Changes::default();
    let mut withdrawn = Vec::new();
    for (owner, _, rec) in view.members() {
        if rec.issuer == digest {
            continue;
        }
        changes.removed.push((owner.clone(), rec.ip));
        if !(is_root && owner == &name) {
            withdrawn.push(Retired {
                name: owner.clone(),
                ip: rec.ip,
                key_server: rec.key_server.as_ref().map(|k| k.port),
                line: None,
            });
        }
    }
    for c in view.resigned() {
        if c.record.issuer != digest {
            changes.dropped_copies.push((c.owner.clone(), c.record.ip));
        }
    }
    if let Some(rec) = &apex
        && view.get(&name, rec.ip).is_none_or(|(_, r)| r != rec)
    {
        changes.members.push((name.clone(), ROOT_TTL, rec.clone()));
    }
    store.apply(&name, &changes)?;
    drop(store);
    let mut files = vec![KGC_FILE, PARAMS_FILE];
    if is_root {
        files.extend([KEY_FILE, "anchor"]);
    }
    for f in files {
        let (from, to) = (staging.join(f), state.join(f));
        if from.exists() {
            std::fs::rename(&from, &to).map_err(path_err(&to))?;
        }
    }
    sync_dir(state)?;
    std::fs::remove_dir_all(&staging).map_err(path_err(&staging))?;
    let parsed = keyserver::read_zone_file(&cfg).map_err(OpsError::ZoneLoad)?;
    let file_members = parsed
        .lines
        .iter()
        .filter_map(|l| match &l.entry {
            zonefile::Entry::Key(rec) if rec.issuer != digest => Some(Retired {
                name: l.owner.to_ascii().to_ascii_lowercase(),
                ip: rec.ip,
                key_server: rec.key_server.as_ref().map(|k| k.port),
                line: Some((parsed.file.clone(), l.line)),
            }),
            _ => None,
        })
        .collect();
    let root = apex.map(|rec| RootKey {
        anchor_file: state.join("anchor"),
        line: format!("{name} {ROOT_TTL} IN {TPKEY_MNEMONIC} {rec}\n"),
        record: rec,
    });
    Ok(Rotation {
        params_file: state.join(PARAMS_FILE),
        digest,
        withdrawn,
        file_members,
        root,
        own: (name, ip, port),
        resumed,
    })
}

/// A root's new apex record while a rotation is staged (hex RDATA).
const APEX_FILE: &str = "apex";

/// fsync a directory, so the renames and files in it survive a crash.
fn sync_dir(dir: &Path) -> Result<(), OpsError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| OpsError::Path {
            path: dir.to_path_buf(),
            source,
        })
}
