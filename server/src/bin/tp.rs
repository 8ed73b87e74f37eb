//! tp: the TwinPeaks operator and client tool — KGC setup, key requests, issuance,
//! finalization, zone checks, control of a running tpkd, a dig-like verified view, and the
//! demo hierarchy. Arguments and printing; the operations are `twinpeaks_server::ops`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use clap::{Parser, Subcommand};
use hickory_proto::rr::Name;
use twinpeaks::clpkc;
use twinpeaks::keyfile;
use twinpeaks::record::{self, KeyRecord, TPKEY_MNEMONIC};
use twinpeaks::resolver::{blocking, walk};
use twinpeaks::time;
use twinpeaks_server::config::Config;
use twinpeaks_server::keyserver::PARAMS_FILE;
use twinpeaks_server::ops::{self, Target};

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
    /// KGC compromise: a new master secret and params for a stopped key server; every member
    /// issued under the old params is withdrawn and listed (each must re-enroll); a root
    /// self-issues its key again and writes a new trust anchor. See docs/operator.md.
    KgcRotate {
        /// The key server's tpkd.toml.
        #[arg(long)]
        config: PathBuf,
        /// Validity of a root's new self-issued record, days.
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
    /// Enroll over the network: send the request to the parent key server as a DNS UPDATE
    /// signed with TSIG and write its response (then `tp finalize`). See docs/enrollment.md.
    Enroll {
        /// The parent key server's DNS address, ADDR:PORT.
        #[arg(long)]
        server: SocketAddr,
        /// Its key zone.
        #[arg(long)]
        zone: String,
        /// Name of the TSIG key the parent gave you.
        #[arg(long)]
        tsig_key: String,
        /// File holding the TSIG secret, base64 (mode 0600).
        #[arg(long)]
        tsig_secret_file: PathBuf,
        /// TSIG algorithm.
        #[arg(long, default_value = "hmac-sha256")]
        tsig_algorithm: String,
        /// The request file (from tp keygen).
        #[arg(long, required_unless_present = "requests", requires = "response")]
        request: Option<PathBuf>,
        /// Where to write the response (the partial key in it is sealed to the requester).
        #[arg(long, requires = "request")]
        response: Option<PathBuf>,
        /// Enroll every *.req file of this directory instead (entities, not key servers),
        /// writing each response beside it as *.resp.
        #[arg(long, conflicts_with_all = ["request", "key_server_port"])]
        requests: Option<PathBuf>,
        /// With --requests: how many enrollments are in flight at once.
        #[arg(long, default_value_t = 32, requires = "requests")]
        parallel: usize,
        /// The member is a key server on this port…
        #[arg(long, requires = "child_params")]
        key_server_port: Option<u16>,
        /// …with these params.
        #[arg(long, requires = "key_server_port")]
        child_params: Option<PathBuf>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
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
    /// One line per member (served or withdrawn): name, IP, kind (entity or key-server),
    /// not_after, source (`enrolled` or FILE:LINE), and `withdrawn` for one whose window ended.
    Members,
    /// An IP change: enroll the member's new request (its new IP) and remove its enrolled
    /// record at the old IP in one step; if the enrollment fails nothing changes.
    ChangeIp {
        /// The new request (`tp keygen` for the name and the new IP).
        #[arg(long)]
        request: PathBuf,
        /// Where to write the response (then `tp finalize`).
        #[arg(long)]
        response: PathBuf,
        /// The IP the member leaves; its record must be an enrolled one.
        #[arg(long)]
        old_ip: IpAddr,
        /// The member is a key server on this port…
        #[arg(long, requires = "child_params")]
        key_server_port: Option<u16>,
        /// …with these params.
        #[arg(long)]
        child_params: Option<PathBuf>,
    },
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
    /// Renew a member: the same key with a fresh validity window, served at once (also brings
    /// back a member withdrawn because its window had ended).
    Renew {
        /// The member's name.
        name: String,
        /// The member's IP (a name has one record per IP).
        ip: IpAddr,
    },
    /// Remove a member enrolled online (a zone-file member: delete its line and reload).
    Remove {
        /// The member's name.
        name: String,
        /// The member's IP.
        ip: IpAddr,
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
            let kgc = ops::kgc_setup(&state, &name)?;
            sayln!(
                "KGC of {} created in {}",
                kgc.params().name,
                state.display()
            );
            if let (Some(ip), Some(port)) = (root_ip, port) {
                let root = ops::self_issue_root(
                    &state,
                    &twinpeaks::store::Store::open(&state.join("store"))?,
                    &kgc,
                    ip,
                    port,
                    validity_days,
                )?;
                sayln!(
                    "root key written; trust anchor in {}:",
                    root.anchor_file.display()
                );
                sayln!("{}", root.line);
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
            let made = ops::keygen(&name, ip, &params, &out)?;
            sayln!(
                "request for {} at {} written to {}",
                made.request.identity.name,
                made.request.identity.ip,
                made.request_file.display()
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
            let record =
                ops::issue_to(&state, &req, child, validity_days, ttl, &target, &response)?;
            sayln!("{} {ttl} IN {TPKEY_MNEMONIC} {record}", req.identity.name);
            Ok(())
        }
        Cmd::Finalize {
            secret,
            response,
            out,
        } => {
            let key = ops::finalize(&secret, &response, &out)?;
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
        Cmd::Island { config } => {
            let island = ops::island(&config)?;
            sayln!("# island anchor of {} (tp island)", island.name);
            sayln!("[[islands]]");
            sayln!("name = \"{}\"", island.name);
            sayln!("address = \"{}\"", island.address);
            sayln!("params = \"{}\"", hex::encode(island.params.encode()));
            sayln!(
                "key = \"{}\"",
                hex::encode(clpkc::point_to_bytes(&island.key))
            );
            Ok(())
        }
        Cmd::ZoneCheck { config, no_store } => {
            let zone = ops::zone_check(&config, no_store)?;
            sayln!(
                "{}: zone {} OK, serial {}, {} key records",
                zone.zone_file.display(),
                zone.name,
                zone.serial,
                zone.members
            );
            Ok(())
        }
        Cmd::Ctl { config, op } => ctl(&config, op),
        Cmd::Enroll {
            server,
            zone,
            tsig_key,
            tsig_secret_file,
            tsig_algorithm,
            request,
            response,
            requests,
            parallel,
            key_server_port,
            child_params,
            timeout,
        } => {
            let net = ops::NetEnroll {
                server,
                zone: &zone,
                key_name: &tsig_key,
                secret_file: &tsig_secret_file,
                algorithm: &tsig_algorithm,
                timeout: Duration::from_secs(timeout),
            };
            if let Some(dir) = requests {
                let r = ops::net_enroll_dir(&net, &dir, parallel)?;
                for (file, e) in &r.failed {
                    eprintln!("tp: {}: {e}", file.display());
                }
                let secs = r.elapsed.as_secs_f64();
                sayln!(
                    "{} enrolled by {server} in {secs:.2} s ({:.0}/s, {parallel} in flight); {} failed; responses beside the requests (*.resp)",
                    r.enrolled,
                    r.enrolled as f64 / secs.max(1e-9),
                    r.failed.len()
                );
                if !r.failed.is_empty() {
                    return Err(anyhow!("{} of the requests failed", r.failed.len()));
                }
                return Ok(());
            }
            // clap makes --request and --response required without --requests.
            let (Some(request), Some(response)) = (request, response) else {
                return Err(anyhow!("give --request and --response, or --requests DIR"));
            };
            let req = keyfile::read_request(&request)?;
            let child = match (key_server_port, child_params) {
                (Some(port), Some(p)) => Some((port, keyfile::read_params(&p)?)),
                _ => None,
            };
            ops::net_enroll(&net, &req, child, &response)?;
            sayln!(
                "{} at {} enrolled by {server}; response in {}",
                req.identity.name,
                req.identity.ip,
                response.display()
            );
            Ok(())
        }
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
        Cmd::KgcRotate {
            config,
            validity_days,
        } => {
            let r = ops::kgc_rotate(&config, validity_days)?;
            let (name, ip, port) = &r.own;
            if r.resumed {
                sayln!(
                    "an interrupted rotation was found and finished (members it withdrew before the interruption were listed by that run)"
                );
            }
            sayln!(
                "KGC of {name} rotated: new params in {} (digest {}); the old master secret is deleted",
                r.params_file.display(),
                hex::encode(r.digest)
            );
            let kind = |m: &ops::Retired| match m.key_server {
                Some(p) => format!(
                    "child key server, port {p}: it enrolls again with --key-server-port {p} --child-params <its params>; its own members are not affected"
                ),
                None => "entity".to_string(),
            };
            sayln!(
                "{} enrolled member(s) withdrawn; each makes a new request from the new params (tp keygen --issuer-params {}) and enrolls again:",
                r.withdrawn.len(),
                r.params_file.display()
            );
            for m in &r.withdrawn {
                sayln!("  {} {} ({})", m.name, m.ip, kind(m));
            }
            if !r.file_members.is_empty() {
                sayln!(
                    "{} zone-file member(s) were issued under the old params; tpkd refuses the zone until each line is re-issued (tp issue) or deleted:",
                    r.file_members.len()
                );
                for m in &r.file_members {
                    let (file, line) = m.line.clone().unwrap_or_default();
                    sayln!(
                        "  {}:{line}: {} {} ({})",
                        file.display(),
                        m.name,
                        m.ip,
                        kind(m)
                    );
                }
            }
            match &r.root {
                Some(root) => {
                    sayln!(
                        "this key server is a root: its key is self-issued again; every resolver replaces its trust anchor with {}:",
                        root.anchor_file.display()
                    );
                    say!("{}", root.line);
                }
                None => sayln!(
                    "this key server's own record at its parent carries the old P_pub: the parent's operator removes it (tp ctl remove {name} {ip}), then this server enrolls again as a key server (tp keygen --name {name} --ip {ip} --issuer-params <the parent's params>; tp enroll ... --key-server-port {port} --child-params {}; tp finalize --out state/server.key.new, then mv it over state/server.key and restart tpkd)",
                    r.params_file.display()
                ),
            }
            Ok(())
        }
        Cmd::GenZone { count, out, origin } => {
            let origin = ops::gen_zone(count, &out, &origin)?;
            sayln!("{count} members of {origin} written to {}", out.display());
            Ok(())
        }
        Cmd::Demo {
            zones,
            state,
            check,
        } => demo::run(&zones, &state, check),
    }
}

fn ctl(config: &Path, op: CtlOp) -> Result<()> {
    let cfg = Config::load(config)?;
    match op {
        CtlOp::Reload => say!("{}", ops::ctl_request(&cfg, "reload")?),
        CtlOp::Status => say!("{}", ops::ctl_request(&cfg, "status")?),
        CtlOp::Enroll {
            request,
            response,
            key_server_port,
            child_params,
        } => {
            let req = keyfile::read_request(&request)?;
            let child = match (key_server_port, child_params) {
                (Some(port), Some(p)) => Some((port, keyfile::read_params(&p)?)),
                _ => None,
            };
            ops::ctl_enroll(&cfg, &req, child, &response)?;
            sayln!(
                "{} at {} enrolled; response in {}",
                req.identity.name,
                req.identity.ip,
                response.display()
            );
        }
        CtlOp::Members => say!("{}", ops::ctl_request(&cfg, "members")?),
        CtlOp::ChangeIp {
            request,
            response,
            old_ip,
            key_server_port,
            child_params,
        } => {
            let req = keyfile::read_request(&request)?;
            let child = match (key_server_port, child_params) {
                (Some(port), Some(p)) => Some((port, keyfile::read_params(&p)?)),
                _ => None,
            };
            ops::ctl_change_ip(&cfg, &req, old_ip, child, &response)?;
            sayln!(
                "{} moved from {old_ip} to {}; response in {}",
                req.identity.name,
                req.identity.ip,
                response.display()
            );
        }
        CtlOp::Renew { name, ip } => {
            say!("{}", ops::ctl_request(&cfg, &format!("renew {name} {ip}"))?)
        }
        CtlOp::Remove { name, ip } => {
            say!(
                "{}",
                ops::ctl_request(&cfg, &format!("remove {name} {ip}"))?
            )
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
            // W off the curve: as undecodable as a cut record.
            match rec.and_then(|r| r.w_point().map(|_| r)) {
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
    sayln!(";;   W {}", hex::encode(rec.w.as_bytes()));
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
