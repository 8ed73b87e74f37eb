//! tp: the TwinPeaks operator and client tool — KGC setup, key requests, issuance,
//! finalization, zone checks, control of a running tpkd, a dig-like verified view, and the
//! demo hierarchy.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use hickory_proto::rr::Name;
use rand_core::OsRng;
use twinpeaks::clpkc::{
    self, EntityKey, Identity, KeyRequest, Kgc, KgcParams, PartialKey, SecretValue,
};
use twinpeaks::issue::{self, IssueOptions};
use twinpeaks::keyfile;
use twinpeaks::record::{self, KeyRecord, KeyServerInfo, TPKEY_MNEMONIC};
use twinpeaks::resolver::{blocking, walk};
use twinpeaks::store::Store;
use twinpeaks::time;
use twinpeaks_server::config::Config;
use twinpeaks_server::control::response_text;
use twinpeaks_server::keyserver::{self, KEY_FILE, KGC_FILE, PARAMS_FILE};

/// Print to stdout; a closed pipe (`tp dig … | head`) ends the program quietly, as for any
/// Unix filter, instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

macro_rules! sayln {
    () => { say!("\n") };
    ($($arg:tt)*) => { say!("{}\n", format_args!($($arg)*)) };
}

#[path = "tp/demo.rs"]
mod demo;
#[path = "tp/resolve.rs"]
mod resolve;
#[path = "tp/tls.rs"]
mod tls;

#[derive(Parser)]
#[command(version, about = "TwinPeaks operator and client tool")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a key server's KGC (master secret and params) in a state directory.
    KgcSetup {
        /// State directory of the key server (created; secrets are written 0600).
        #[arg(long)]
        state: PathBuf,
        /// The key server's name (the apex of its key zone).
        #[arg(long)]
        name: String,
        /// Make it a root: self-issue its own key for this IP and write its trust anchor.
        #[arg(long, requires = "port")]
        root_ip: Option<IpAddr>,
        /// DNS port of the root key server (with --root-ip).
        #[arg(long)]
        port: Option<u16>,
        /// Validity of the self-issued root record, days.
        #[arg(long, default_value_t = 3650)]
        validity_days: u32,
    },
    /// Make an entity's secret value and its key request (public, like a CSR).
    Keygen {
        /// The entity's name.
        #[arg(long)]
        name: String,
        /// The entity's IP (part of its identity).
        #[arg(long)]
        ip: IpAddr,
        /// Params file of the issuing key server.
        #[arg(long)]
        issuer_params: PathBuf,
        /// Output prefix: writes PREFIX.secret (0600) and PREFIX.req.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a partial key for a request and add the member's record to a zone file or store.
    Issue {
        /// State directory of the issuing key server.
        #[arg(long)]
        state: PathBuf,
        /// The request file.
        #[arg(long)]
        request: PathBuf,
        /// Append the record to this key zone file…
        #[arg(long, conflicts_with = "store")]
        zone_file: Option<PathBuf>,
        /// …or put it in this store (tpkd must not be running; use `tp ctl enroll` then).
        #[arg(long)]
        store: Option<PathBuf>,
        /// Where to write the response (the partial key in it is sealed to the requester).
        #[arg(long)]
        response: PathBuf,
        /// The member is a key server listening on this port…
        #[arg(long, requires = "child_params")]
        key_server_port: Option<u16>,
        /// …with these params.
        #[arg(long)]
        child_params: Option<PathBuf>,
        /// Validity, days from now.
        #[arg(long, default_value_t = 365)]
        validity_days: u32,
        /// TTL of the record.
        #[arg(long, default_value_t = 3600)]
        ttl: u32,
    },
    /// Finalize an entity's private key from its secret value and the issuer's response.
    Finalize {
        /// The secret value file from `tp keygen`.
        #[arg(long)]
        secret: PathBuf,
        /// The response from `tp issue` or `tp ctl enroll`.
        #[arg(long)]
        response: PathBuf,
        /// Where to write the private key (0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a key server's public params file.
    Params {
        /// State directory of the key server.
        #[arg(long)]
        state: PathBuf,
    },
    /// Print a key server's identity as an island anchor for a resolver's settings
    /// (`[[islands]]` in tprd.toml): its name, address, params and public key.
    Island {
        /// The key server's config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a key server's zone exactly as tpkd would load it.
    ZoneCheck {
        /// The key server's config.
        #[arg(long)]
        config: PathBuf,
        /// Check the zone file alone, without the store of enrolled members.
        #[arg(long)]
        no_store: bool,
    },
    /// Talk to a running tpkd over its control socket.
    Ctl {
        /// The key server's config (gives the socket path).
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        op: CtlOp,
    },
    /// Query a key server and show each TPKEY record decoded; with --anchors, resolve from
    /// the trust anchors down and verify every link.
    Dig {
        /// The name to look up.
        name: String,
        /// Server to ask (ADDR or ADDR:PORT); not needed with --anchors.
        #[arg(long)]
        server: Option<String>,
        /// Port, when --server has none.
        #[arg(short, long, default_value_t = 53)]
        port: u16,
        /// Use TCP.
        #[arg(long)]
        tcp: bool,
        /// Trust-anchor file: resolve and verify the whole chain (the key resolver's walk).
        #[arg(long)]
        anchors: Option<PathBuf>,
        /// Keep only the key for this IP.
        #[arg(long)]
        ip: Option<IpAddr>,
    },
    /// Resolve a name: its IP(s) from DNS and the verified key for each, walked from the trust
    /// anchors (every link checked), with the chain, cache use and timings.
    Resolve {
        /// The name.
        name: String,
        /// Resolver settings (the daemon's tprd.toml); or give --anchors and --dns.
        #[arg(long, conflicts_with = "anchors")]
        config: Option<PathBuf>,
        /// Trust-anchor file (repeatable).
        #[arg(long)]
        anchors: Vec<PathBuf>,
        /// DNS server for A/AAAA (ADDR:PORT, repeatable); without one, keys only.
        #[arg(long)]
        dns: Vec<SocketAddr>,
        /// Keys only: every verified key of the name, no DNS lookup.
        #[arg(long)]
        keys_only: bool,
        /// Cross-verification when several anchors cover the name: at least N must agree.
        #[arg(long)]
        quorum: Option<usize>,
        /// Resolve this many times in one process (the later ones come from the cache).
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Connect to NAME[:PORT] over TLS 1.3 with no certificate: the server must present the
    /// raw public key the key hierarchy publishes for NAME at the IP DNS gives.
    Connect {
        /// NAME or NAME:PORT (default port 4433).
        target: String,
        /// Resolver settings (tprd.toml); or give --anchors and --dns.
        #[arg(long, conflicts_with = "anchors")]
        config: Option<PathBuf>,
        /// Trust-anchor file (repeatable).
        #[arg(long)]
        anchors: Vec<PathBuf>,
        /// DNS server for the address (ADDR:PORT, repeatable).
        #[arg(long)]
        dns: Vec<SocketAddr>,
        /// Present this entity key (mutual authentication).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Line to send; the echo is printed.
        #[arg(long, default_value = "hello over TwinPeaks TLS")]
        message: String,
    },
    /// Serve an echo service over TLS 1.3 with an entity's key as a raw public key.
    Serve {
        /// The entity's key file (from tp finalize).
        #[arg(long)]
        key: PathBuf,
        /// Address to listen on (the key's own IP).
        #[arg(long)]
        listen: SocketAddr,
        /// Require a client key: one of these names, at the client's own IP (repeatable).
        #[arg(long)]
        client: Vec<String>,
        /// Resolver settings for client keys; or give --anchors and --dns.
        #[arg(long, conflicts_with = "anchors")]
        config: Option<PathBuf>,
        /// Trust-anchor file (repeatable).
        #[arg(long)]
        anchors: Vec<PathBuf>,
        /// DNS server (ADDR:PORT, repeatable).
        #[arg(long)]
        dns: Vec<SocketAddr>,
    },
    /// Encrypt to an entity's verified key (ECIES bound to its name and IP).
    Seal {
        /// The entity's name.
        #[arg(long)]
        to: String,
        /// Its IP, when it has several keys.
        #[arg(long)]
        ip: Option<IpAddr>,
        /// Resolver settings; or give --anchors.
        #[arg(long, conflicts_with = "anchors")]
        config: Option<PathBuf>,
        /// Trust-anchor file (repeatable).
        #[arg(long)]
        anchors: Vec<PathBuf>,
        /// Input (default stdin).
        #[arg(long = "in")]
        input: Option<PathBuf>,
        /// Output (default stdout).
        #[arg(long = "out")]
        output: Option<PathBuf>,
    },
    /// Decrypt what tp seal made for this entity.
    Open {
        /// The entity's key file.
        #[arg(long)]
        key: PathBuf,
        /// Input (default stdin).
        #[arg(long = "in")]
        input: Option<PathBuf>,
        /// Output (default stdout).
        #[arg(long = "out")]
        output: Option<PathBuf>,
    },
    /// Write an entity key as PKCS#8 PEM (0600) and its public key as SPKI PEM, for stock TLS
    /// stacks with raw public keys (gnutls-serv --rawpkkeyfile/--rawpkfile).
    ExportKey {
        /// The entity's key file.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the private key (PKCS#8 PEM, created 0600).
        #[arg(long)]
        pkcs8: PathBuf,
        /// Where to write the public key (SPKI PEM).
        #[arg(long)]
        spki: Option<PathBuf>,
    },
    /// Make a throwaway key server and a zone of COUNT members (benchmarks).
    GenZone {
        /// Number of members.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
        /// Origin of the zone.
        #[arg(long, default_value = "bench.example.")]
        origin: String,
    },
    /// Bring up the demo hierarchy on loopback (see README) and run until Ctrl-C.
    Demo {
        /// Directory of the demo's zones.
        #[arg(long, default_value = "zones")]
        zones: PathBuf,
        /// State directory (keys are made here on first run).
        #[arg(long, default_value = "state")]
        state: PathBuf,
        /// Set up and check, then stop instead of waiting for Ctrl-C.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand)]
enum CtlOp {
    /// Reload the zone file and store; a bad zone is refused and the old one keeps serving.
    Reload,
    /// Serial and member count.
    Status,
    /// Enroll a member online: issue its partial key and serve its record at once.
    Enroll {
        /// The request file.
        #[arg(long)]
        request: PathBuf,
        /// Where to write the response (the partial key in it is sealed to the requester).
        #[arg(long)]
        response: PathBuf,
        /// The member is a key server on this port…
        #[arg(long, requires = "child_params")]
        key_server_port: Option<u16>,
        /// …with these params.
        #[arg(long)]
        child_params: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tp: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::KgcSetup {
            state,
            name,
            root_ip,
            port,
            validity_days,
        } => {
            let kgc = kgc_setup(&state, &name)?;
            sayln!(
                "KGC of {} created in {}",
                kgc.params().name,
                state.display()
            );
            if let (Some(ip), Some(port)) = (root_ip, port) {
                let line = self_issue_root(&state, &kgc, ip, port, validity_days)?;
                sayln!(
                    "root key written; trust anchor in {}:",
                    state.join("anchor").display()
                );
                sayln!("{line}");
            }
            Ok(())
        }
        Cmd::Keygen {
            name,
            ip,
            issuer_params,
            out,
        } => {
            let params = keyfile::read_params(&issuer_params)?;
            let (_, req) = keygen(&name, ip, &params, &out)?;
            sayln!(
                "request for {} at {} written to {}",
                req.identity.name,
                req.identity.ip,
                with_ext(&out, "req").display()
            );
            Ok(())
        }
        Cmd::Issue {
            state,
            request,
            zone_file,
            store,
            response,
            key_server_port,
            child_params,
            validity_days,
            ttl,
        } => {
            let req = keyfile::read_request(&request)?;
            let child = match (key_server_port, child_params) {
                (Some(p), Some(f)) => Some((p, keyfile::read_params(&f)?)),
                _ => None,
            };
            let target = match (zone_file, store) {
                (Some(f), None) => Target::File(f),
                (None, Some(s)) => Target::Store(s),
                _ => bail!("give --zone-file or --store"),
            };
            let record = issue_to(&state, &req, child, validity_days, ttl, &target, &response)?;
            sayln!("{} {ttl} IN {TPKEY_MNEMONIC} {record}", req.identity.name);
            Ok(())
        }
        Cmd::Finalize {
            secret,
            response,
            out,
        } => {
            let key = finalize(&secret, &response, &out)?;
            sayln!(
                "private key of {} at {} written to {}\npublic key Q = {}",
                key.identity().name,
                key.identity().ip,
                out.display(),
                hex::encode(clpkc::point_to_bytes(key.public()))
            );
            Ok(())
        }
        Cmd::Params { state } => {
            let p = keyfile::read_params(&state.join(PARAMS_FILE))?;
            say!("{}", keyfile::params_to_text(&p));
            Ok(())
        }
        Cmd::Island { config } => island(&config),
        Cmd::ZoneCheck { config, no_store } => zone_check(&config, no_store),
        Cmd::Ctl { config, op } => ctl(&config, op),
        Cmd::Dig {
            name,
            server,
            port,
            tcp,
            anchors,
            ip,
        } => dig(&name, server.as_deref(), port, tcp, anchors.as_deref(), ip),
        Cmd::Resolve {
            name,
            config,
            anchors,
            dns,
            keys_only,
            quorum,
            repeat,
            json,
        } => resolve::resolve(
            &resolve::Source {
                config,
                anchors,
                dns,
                quorum,
            },
            &name,
            keys_only,
            repeat,
            json,
        ),
        Cmd::Connect {
            target,
            config,
            anchors,
            dns,
            key,
            message,
        } => tls::connect(
            &resolve::Source {
                config,
                anchors,
                dns,
                quorum: None,
            },
            &target,
            key.as_deref(),
            &message,
        ),
        Cmd::Serve {
            key,
            listen,
            client,
            config,
            anchors,
            dns,
        } => {
            let cfg = if config.is_some() || !anchors.is_empty() {
                Some(resolve::config(&resolve::Source {
                    config,
                    anchors,
                    dns,
                    quorum: None,
                })?)
            } else {
                None
            };
            tls::serve(&key, listen, &client, cfg)
        }
        Cmd::Seal {
            to,
            ip,
            config,
            anchors,
            input,
            output,
        } => tls::seal(
            &resolve::Source {
                config,
                anchors,
                dns: Vec::new(),
                quorum: None,
            },
            &to,
            ip,
            input.as_deref(),
            output.as_deref(),
        ),
        Cmd::Open { key, input, output } => tls::open(&key, input.as_deref(), output.as_deref()),
        Cmd::ExportKey { key, pkcs8, spki } => tls::export_key(&key, &pkcs8, spki.as_ref()),
        Cmd::GenZone { count, out, origin } => gen_zone(count, &out, &origin),
        Cmd::Demo {
            zones,
            state,
            check,
        } => demo::run(&zones, &state, check),
    }
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Create the KGC of a key server.
pub fn kgc_setup(state: &Path, name: &str) -> Result<Kgc> {
    std::fs::create_dir_all(state).with_context(|| format!("{}", state.display()))?;
    let kgc = Kgc::setup(name, &mut OsRng).map_err(|e| anyhow!("name {name}: {e}"))?;
    keyfile::write_kgc(&state.join(KGC_FILE), &kgc)?;
    keyfile::write_public(
        &state.join(PARAMS_FILE),
        &keyfile::params_to_text(kgc.params()),
    )?;
    Ok(kgc)
}

/// Self-issue a root key server's key; writes server.key, the anchor file, and puts the
/// apex record in the root's store. Returns the anchor line.
pub fn self_issue_root(
    state: &Path,
    kgc: &Kgc,
    ip: IpAddr,
    port: u16,
    validity_days: u32,
) -> Result<String> {
    let name = kgc.params().name.clone();
    let id = Identity::new(&name, ip, kgc.params())?;
    let x = SecretValue::generate(&mut OsRng);
    let req = KeyRequest::new(id.clone(), &x);
    let partial = kgc.extract(&req, &mut OsRng)?;
    let own = EntityKey::combine(&id, &x, &partial, kgc.params())?;
    keyfile::write_entity(&state.join(KEY_FILE), &own, kgc.params())?;
    let nb = u32::try_from(time::now()).unwrap_or(u32::MAX);
    let mut rec = KeyRecord {
        ip,
        w: *own.w(),
        issuer: kgc.params().digest(),
        not_before: nb,
        not_after: nb.saturating_add(validity_days.saturating_mul(86_400)),
        key_server: Some(KeyServerInfo {
            port,
            p_pub: kgc.params().p_pub,
        }),
        signature: None,
    };
    rec.sign(&name, &own)?;
    let store = Store::open(&state.join("store"))?;
    store.put(&name, &name, 86_400, &rec)?;
    let line = format!("{name} 86400 IN {TPKEY_MNEMONIC} {rec}\n");
    let anchor = format!("; trust anchor: the self-issued key-server record of {name}\n{line}");
    keyfile::write_public(&state.join("anchor"), &anchor)?;
    Ok(line)
}

/// Make a secret value and a request; writes PREFIX.secret and PREFIX.req.
pub fn keygen(
    name: &str,
    ip: IpAddr,
    issuer: &KgcParams,
    out: &Path,
) -> Result<(SecretValue, KeyRequest)> {
    let id = Identity::new(name, ip, issuer).map_err(|e| anyhow!("{name} {ip}: {e}"))?;
    let x = SecretValue::generate(&mut OsRng);
    let req = KeyRequest::new(id.clone(), &x);
    keyfile::write_secret_value(&with_ext(out, "secret"), &id, &x)?;
    keyfile::write_public(&with_ext(out, "req"), &keyfile::request_to_text(&req))?;
    Ok((x, req))
}

/// Where an issued record goes.
pub enum Target {
    /// Appended to a key zone file.
    File(PathBuf),
    /// Put in a store.
    Store(PathBuf),
}

/// Issue offline: record to the target, response (partial key sealed to X) to `response`.
pub fn issue_to(
    state: &Path,
    req: &KeyRequest,
    child: Option<(u16, KgcParams)>,
    validity_days: u32,
    ttl: u32,
    target: &Target,
    response: &Path,
) -> Result<KeyRecord> {
    let kgc = keyfile::read_kgc(&state.join(KGC_FILE))?;
    let (own, _) = keyfile::read_entity(&state.join(KEY_FILE))?;
    let nb = u32::try_from(time::now()).unwrap_or(u32::MAX);
    let opts = IssueOptions {
        not_before: nb,
        not_after: nb.saturating_add(validity_days.saturating_mul(86_400)),
        key_server: child,
    };
    let name = &req.identity.name;
    if let Target::File(f) = target {
        // A second line for the same (name, IP) would make the zone refuse to load.
        let origin = hickory_proto::rr::Name::from_ascii(&kgc.params().name)?;
        let parsed = twinpeaks::zonefile::read(f, &origin).map_err(|e| anyhow!("{e}"))?;
        let same = |l: &twinpeaks::zonefile::Line| {
            matches!(&l.entry, twinpeaks::zonefile::Entry::Key(k) if k.ip == req.identity.ip)
                && l.owner.to_ascii().eq_ignore_ascii_case(name)
        };
        if let Some(l) = parsed.lines.iter().find(|l| same(l)) {
            bail!(
                "{}:{}: already holds a key for {name} {}; remove that line to re-issue",
                f.display(),
                l.line,
                req.identity.ip
            );
        }
    }
    let (record, partial) = issue::issue(&kgc, &own, req, &opts, &mut OsRng)?;
    // The response first: if recording the member then fails, nothing is half-applied.
    let text = response_text(req, kgc.params(), &partial, &record)?;
    keyfile::write_public(response, &text)?;
    match target {
        Target::File(f) => {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(f)
                .with_context(|| format!("{}: cannot append", f.display()))?;
            writeln!(file, "{name} {ttl} IN {TPKEY_MNEMONIC} {record}")
                .with_context(|| format!("{}", f.display()))?;
        }
        Target::Store(s) => {
            let store = Store::open(s).with_context(|| {
                format!(
                    "{}: cannot open store (is tpkd running? use `tp ctl enroll`)",
                    s.display()
                )
            })?;
            store.put(&kgc.params().name, name, ttl, &record)?;
        }
    }
    Ok(record)
}

#[derive(serde::Deserialize)]
struct ResponseFile {
    name: String,
    ip: IpAddr,
    issuer_params: String,
    sealed_partial_key: String,
}

/// Combine the secret value with the issuer's response; writes the private key (0600).
pub fn finalize(secret: &Path, response: &Path, out: &Path) -> Result<EntityKey> {
    let x = keyfile::read_secret_value(secret)?;
    let text = std::fs::read_to_string(response)
        .with_context(|| format!("{}: cannot read", response.display()))?;
    let r: ResponseFile =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", response.display()))?;
    let issuer = KgcParams::decode(
        &hex::decode(&r.issuer_params)
            .map_err(|_| anyhow!("{}: issuer_params", response.display()))?,
    )?;
    let id = Identity::new(&r.name, r.ip, &issuer)?;
    let sealed = hex::decode(&r.sealed_partial_key)
        .map_err(|_| anyhow!("{}: sealed_partial_key is not hex", response.display()))?;
    let partial_bytes = zeroize::Zeroizing::new(x.open(&id, &sealed).map_err(|_| {
        anyhow!(
            "{}: the partial key cannot be opened with this secret value (a response to another request?)",
            response.display()
        )
    })?);
    let partial = PartialKey::decode(&partial_bytes)?;
    let key = EntityKey::combine(&id, &x, &partial, &issuer).map_err(|e| {
        anyhow!(
            "{}: the partial key does not match this secret value and identity: {e}",
            response.display()
        )
    })?;
    keyfile::write_entity(out, &key, &issuer)?;
    Ok(key)
}

fn island(config: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    let params = keyfile::read_params(&cfg.state_dir.join(PARAMS_FILE))?;
    let (own, _) = keyfile::read_entity(&cfg.state_dir.join(KEY_FILE))?;
    let ip = own.identity().ip;
    let addr = cfg.listen.iter().find(|a| a.ip() == ip).ok_or_else(|| {
        anyhow!(
            "{}: no listen address on {ip}, the address of the key server's own key",
            config.display()
        )
    })?;
    sayln!("# island anchor of {} (tp island)", cfg.name);
    sayln!("[[islands]]");
    sayln!("name = \"{}\"", cfg.name);
    sayln!("address = \"{addr}\"");
    sayln!("params = \"{}\"", hex::encode(params.encode()));
    sayln!(
        "key = \"{}\"",
        hex::encode(clpkc::point_to_bytes(own.public()))
    );
    Ok(())
}

fn zone_check(config: &Path, no_store: bool) -> Result<()> {
    let cfg = Config::load(config)?;
    let (kgc, own) = keyserver::read_keys(&cfg)?;
    let store = if no_store {
        None
    } else {
        match Store::open(cfg.store_path()) {
            Ok(s) => Some(s),
            Err(e) => bail!(
                "{}: {e} (is tpkd running? check the file alone with --no-store)",
                cfg.store_path().display()
            ),
        }
    };
    let signer = twinpeaks::zone::ZoneSigner {
        params: kgc.params(),
        key: &own,
        verified: None,
    };
    let parsed = keyserver::read_zone_file(&cfg).map_err(|e| anyhow!("{e}"))?;
    match keyserver::build_zone(&cfg, parsed, &signer, store.as_ref()) {
        Ok(zone) => {
            sayln!(
                "{}: zone {} OK, serial {}, {} key records",
                cfg.zone_file.display(),
                cfg.name,
                zone.serial(),
                zone.members().len()
            );
            Ok(())
        }
        Err(e) => bail!("zone {} refused:\n{e}", cfg.name),
    }
}

fn ctl_request(cfg: &Config, line: &str) -> Result<String> {
    use std::io::{Read, Write};
    let path = cfg.control_path();
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("{}: is tpkd running?", path.display()))?;
    s.write_all(line.as_bytes())?;
    s.write_all(b"\n")?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    match out.split_once('\n') {
        Some(("ok", rest)) => Ok(rest.to_string()),
        Some(("error", rest)) => bail!("{}", rest.trim_end()),
        _ => bail!("unexpected reply from tpkd: {out}"),
    }
}

fn ctl(config: &Path, op: CtlOp) -> Result<()> {
    let cfg = Config::load(config)?;
    match op {
        CtlOp::Reload => say!("{}", ctl_request(&cfg, "reload")?),
        CtlOp::Status => say!("{}", ctl_request(&cfg, "status")?),
        CtlOp::Enroll {
            request,
            response,
            key_server_port,
            child_params,
        } => {
            let req = keyfile::read_request(&request)?;
            let mut line = format!("enroll {}", hex::encode(req.encode()));
            if let (Some(port), Some(p)) = (key_server_port, child_params) {
                let params = keyfile::read_params(&p)?;
                line.push_str(&format!(" ks={port}:{}", hex::encode(params.encode())));
            }
            let text = ctl_request(&cfg, &line)?;
            keyfile::write_public(&response, &text)?;
            sayln!(
                "{} at {} enrolled; response in {}",
                req.identity.name,
                req.identity.ip,
                response.display()
            );
        }
    }
    Ok(())
}

fn parse_server(s: &str, port: u16) -> Result<SocketAddr> {
    let s = s.trim_start_matches('@');
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: IpAddr = s
        .parse()
        .map_err(|_| anyhow!("--server `{s}` is not an address (ADDR or ADDR:PORT)"))?;
    Ok(SocketAddr::new(ip, port))
}

fn dig(
    name: &str,
    server: Option<&str>,
    port: u16,
    tcp: bool,
    anchors: Option<&Path>,
    ip: Option<IpAddr>,
) -> Result<()> {
    let timeout = Duration::from_secs(3);
    if let Some(anchors) = anchors {
        return resolve::dig_anchors(anchors, name, ip);
    }
    let server = parse_server(
        server.ok_or_else(|| anyhow!("give --server (or --anchors to resolve)"))?,
        port,
    )?;
    let qname = Name::from_ascii(name).map_err(|e| anyhow!("`{name}`: {e}"))?;
    let reply = blocking::query(server, &qname, twinpeaks::zone::TPKEY_TYPE, tcp, timeout)
        .map_err(|e| anyhow!(e))?;
    sayln!(
        ";; {} from {server}: {} answer, {} authority",
        reply.metadata.response_code,
        reply.answers.len(),
        reply.authorities.len()
    );
    for (section, records) in [
        ("ANSWER", &reply.answers),
        ("AUTHORITY (referral)", &reply.authorities),
    ] {
        let keys = walk::key_records(records);
        if keys.is_empty() {
            continue;
        }
        sayln!(";; {section}");
        for (owner, ttl, rec) in keys {
            match rec {
                Ok(rec) => {
                    print_record(&owner, ttl, &rec);
                    sayln!(";;   signature: not checked (give --anchors to verify the chain)");
                }
                Err(e) => sayln!(";; {owner}: undecodable TPKEY: {e}"),
            }
        }
    }
    Ok(())
}

pub(crate) fn print_record(owner: &str, ttl: u32, rec: &KeyRecord) {
    sayln!("{owner} {ttl} IN {TPKEY_MNEMONIC} {rec}");
    sayln!(
        ";;   kind {}  ip {}  valid {} .. {}",
        if rec.key_server.is_some() {
            "key server"
        } else {
            "entity"
        },
        rec.ip,
        time::format(rec.not_before),
        time::format(rec.not_after)
    );
    sayln!(";;   W {}", hex::encode(clpkc::point_to_bytes(&rec.w)));
    sayln!(";;   issuer params digest {}", hex::encode(rec.issuer));
    if let Some(ks) = &rec.key_server {
        sayln!(
            ";;   key server port {}  P_pub {}",
            ks.port,
            hex::encode(clpkc::point_to_bytes(&ks.p_pub))
        );
    }
    if let Ok(w) = rec.to_wire() {
        sayln!(";;   RFC 3597: {}", record::generic_rdata(&w));
    }
}

fn gen_zone(count: usize, out: &Path, origin: &str) -> Result<()> {
    let origin = clpkc::canonical_name(origin)?;
    std::fs::create_dir_all(out)?;
    let state = out.join("state");
    let kgc = kgc_setup(&state, &origin)?;
    let ip: IpAddr = "127.0.0.1".parse()?;
    self_issue_root(&state, &kgc, ip, 5300, 3650)?;
    let (own, _) = keyfile::read_entity(&state.join(KEY_FILE))?;
    let nb = u32::try_from(time::now()).unwrap_or(u32::MAX);
    let soa = format!(
        "$ORIGIN {origin}\n$TTL 3600\n@ IN SOA ns.{origin} hostmaster.{origin} 1 7200 3600 1209600 300\n@ IN NS ns.{origin}\nns IN A 127.0.0.1\n"
    );
    let mut ours = soa.clone();
    let mut generic = soa;
    let mut queries = String::new();
    for i in 0..count {
        let name = format!("www{i}.{origin}");
        let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let id = Identity::new(&name, ip, kgc.params())?;
        let x = SecretValue::generate(&mut OsRng);
        let opts = IssueOptions {
            not_before: nb,
            not_after: nb.saturating_add(365 * 86_400),
            key_server: None,
        };
        let (rec, _) = issue::issue(&kgc, &own, &KeyRequest::new(id, &x), &opts, &mut OsRng)?;
        ours.push_str(&format!("{name} 3600 IN {TPKEY_MNEMONIC} {rec}\n"));
        generic.push_str(&format!(
            "{name} 3600 IN TYPE{} {}\n",
            record::TPKEY,
            record::generic_rdata(&rec.to_wire()?)
        ));
        queries.push_str(&format!("{name} TYPE{}\n", record::TPKEY));
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
    sayln!("{count} members of {origin} written to {}", out.display());
    Ok(())
}
