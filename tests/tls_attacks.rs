//! The dissertation's attacks on certificateless keys (§2.5), end to end against TLS 1.3 with
//! raw public keys: real key servers (`tpkd`), a real DNS server (`tp-dnsd`), real services
//! (`tp serve`) and clients (`tp connect`; the library's `tls::connect` where the resolver's
//! cache has to live across the steps of an attack). Hostile key servers are scripted UDP
//! servers in this process (hickory's `Message` codec, no hand-made DNS) answering with records
//! built by the twinpeaks library, as in tests/resolver_reject.rs.
//!
//! | attack | expected |
//! |---|---|
//! | 1. key server compromised (forged key), DNS intact | refused by the resolver (issuer or signature check); nothing reaches TLS |
//! | 1. the key server publishes a key the real server does not hold | "possible spoofing" |
//! | 2. DNS poisoned (attacker host, even with another name's valid key) | "no verified key" for that IP; nothing reaches TLS |
//! | 3. the key server's signing key AND DNS compromised | succeeds: the threat model's boundary |
//! | 4. forged referral towards the resolver | signature check; the cache is not poisoned |
//! | 5. one of three roots compromised | policy all: "trust anchors disagree" naming it; quorum 2 connects |
//! | 6. replay: expired record | validity check |
//! | 6. replay: superseded record | cached old key: invalidate, resolve again, `refreshed`; replayed while still valid: accepted by the resolver, then "possible spoofing" at the real server |
//! | 6. the key withdrawn, its address reused | `OutdatedKey` (a fresh resolution gives no key for that IP) |
//! | 7. stolen entity key at another IP | "no verified key"; mutual auth: refused from an address the key is not bound to |
//! | ECIES (`tp seal` / `tp open`) | round-trips; another entity's key and tampering fail |
//!
//! Addresses: 127.0.1.1–127.0.1.250, one block of 20 per test (layout below); 127.0.0.1 only
//! as the source of unbound loopback connections and as the address of one client key (7).

mod common;

use std::collections::HashMap;
use std::fmt::Debug;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    KeyServer, Proc, bin, dig, free_port, ok, rdata_hex, require_tool, run, tp, wait_dns,
};
use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use twinpeaks::clpkc::{self, EntityKey, Identity, KeyRequest, Kgc, PublicKey, SecretValue};
use twinpeaks::keyfile;
use twinpeaks::record::{KeyRecord, KeyServerInfo};
use twinpeaks::resolver::{CacheUse, Check, ResolveError, Resolver, ResolverConfig, anchors};
use twinpeaks::time;
use twinpeaks::tls::{self, ConnectError};

const WWW: &str = "www.example.com.";
const MAIL: &str = "mail.example.com.";

// The layout of a test's block of addresses, as offsets from its base.
const ROOT: u8 = 0;
const COM: u8 = 1;
const EXAMPLE: u8 = 2;
const DNS: u8 = 3;
const EVIL_DNS: u8 = 4;
const ATTACKER: u8 = 5;
const HOSTILE: u8 = 6;
/// 7, 8, 9: spare (more hostile servers, a second root).
const SPARE: u8 = 7;
const WWW_AT: u8 = 10;
const MAIL_AT: u8 = 11;

fn at(base: u8, n: u8) -> String {
    format!("127.0.1.{}", base + n)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn q_hex(q: &PublicKey) -> String {
    hex::encode(clpkc::point_to_bytes(q))
}

/// The entity key in a key file.
fn entity(key_file: &Path) -> EntityKey {
    keyfile::read_entity(key_file).unwrap().0
}

// ---------------------------------------------------------------------------------------------
// The real hierarchy: root, com., example.com. (tpkd), www and mail, DNS (tp-dnsd)
// ---------------------------------------------------------------------------------------------

/// `tp keygen` + `tp issue` into `ks`'s zone file + `tp finalize` (the offline flow), the files
/// named by `tag` so that a re-issued key does not overwrite the old one. Returns the key file.
fn issue(ks: &KeyServer, name: &str, ip: &str, tag: &str, extra: &[&str]) -> PathBuf {
    let prefix = ks.dir.join(tag);
    ok(tp()
        .args(["keygen", "--name", name, "--ip", ip])
        .arg("--issuer-params")
        .arg(ks.params())
        .arg("--out")
        .arg(&prefix));
    let resp = ks.dir.join(format!("{tag}.resp"));
    ok(tp()
        .arg("issue")
        .arg("--state")
        .arg(&ks.state)
        .arg("--request")
        .arg(format!("{}.req", prefix.display()))
        .arg("--zone-file")
        .arg(&ks.zone_file)
        .arg("--response")
        .arg(&resp)
        .args(extra));
    let key = ks.dir.join(format!("{tag}.key"));
    ok(tp()
        .arg("finalize")
        .arg("--secret")
        .arg(format!("{}.secret", prefix.display()))
        .arg("--response")
        .arg(&resp)
        .arg("--out")
        .arg(&key));
    key
}

/// Drop the zone-file line of `owner`'s key for `ip` (`tp issue` refuses a second one).
fn remove_key(ks: &KeyServer, owner: &str, ip: &str) {
    let zone = std::fs::read_to_string(&ks.zone_file).unwrap();
    let is_it = |l: &str| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 6 && f[0] == owner && f[3] == "TPKEY" && f[6] == ip
    };
    assert_eq!(zone.lines().filter(|l| is_it(l)).count(), 1, "{zone}");
    let kept: String = zone
        .lines()
        .filter(|l| !is_it(l))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&ks.zone_file, kept).unwrap();
}

/// `tp ctl --config … reload`.
fn reload(ks: &KeyServer) {
    ok(tp()
        .arg("ctl")
        .arg("--config")
        .arg(&ks.config)
        .arg("reload"));
}

fn ks_addr(ks: &KeyServer) -> SocketAddr {
    SocketAddr::new(ks.ip.parse().unwrap(), ks.port)
}

/// A plain DNS server (tp-dnsd) for example.com. at `ip` with these A records.
fn dns_server(dir: &Path, tag: &str, ip: &str, a: &[(&str, String)]) -> (Proc, String) {
    let port = free_port(ip);
    let mut zone = format!(
        "$ORIGIN example.com.\n$TTL 3600\n@ IN SOA ns hostmaster 1 7200 3600 1209600 300\n@ IN NS ns\nns IN A {ip}\n"
    );
    for (name, addr) in a {
        zone.push_str(&format!("{name} IN A {addr}\n"));
    }
    let file = dir.join(format!("{tag}.example.com.zone"));
    std::fs::write(&file, zone).unwrap();
    let dns = format!("{ip}:{port}");
    let mut p = Proc::spawn(
        &format!("tp-dnsd ({tag})"),
        Command::new(bin("tp-dnsd"))
            .args(["--listen", &dns])
            .arg("--zone")
            .arg(format!("example.com.={}", file.display())),
    );
    wait_dns(ip, port, "example.com.", &mut p);
    (p, dns)
}

/// Root, com. and example.com. key servers, www and mail (one IP each) and an honest DNS
/// server giving their addresses, all running. Layout: see the constants above.
struct Hierarchy {
    root: KeyServer,
    com: KeyServer,
    example: KeyServer,
    base: u8,
    www_key: PathBuf,
    mail_key: PathBuf,
    dns: String,
    _dns: Proc,
}

impl Hierarchy {
    /// `www_args`: extra `tp issue` arguments for www's key.
    fn start(dir: &Path, base: u8, www_args: &[&str]) -> Hierarchy {
        assert!(
            (1..=221).contains(&base),
            "this file's addresses are 127.0.1.1–127.0.1.250"
        );
        let ip = |n: u8| at(base, n);
        let mut root = KeyServer::new(&dir.join("root"), ".", &ip(ROOT), "", "");
        let mut com = KeyServer::child(&dir.join("com"), &root, "com.", &ip(COM));
        let mut example =
            KeyServer::child(&dir.join("example"), &com, "example.com.", &ip(EXAMPLE));
        let www_key = issue(&example, WWW, &ip(WWW_AT), "www", www_args);
        let mail_key = issue(&example, MAIL, &ip(MAIL_AT), "mail", &[]);
        if !www_args.is_empty() {
            // tpkd re-signs members whose window ends within its margin (30 days by default):
            // a short-lived www would get a fresh window at once. Narrow the margin so that a
            // record is left to expire, as on a key server that is not running.
            let mut cfg = std::fs::read_to_string(&example.config).unwrap();
            cfg.push_str("resign_margin_secs = 60\nresign_validity_secs = 3600\n");
            std::fs::write(&example.config, cfg).unwrap();
        }
        root.start();
        com.start();
        example.start();
        let (p, dns) = dns_server(
            dir,
            "honest",
            &ip(DNS),
            &[("www", ip(WWW_AT)), ("mail", ip(MAIL_AT))],
        );
        Hierarchy {
            root,
            com,
            example,
            base,
            www_key,
            mail_key,
            dns,
            _dns: p,
        }
    }

    fn ip(&self, n: u8) -> String {
        at(self.base, n)
    }

    fn anchor(&self) -> PathBuf {
        self.root.state.join("anchor")
    }

    /// `--anchors ROOT_ANCHOR --dns DNS`.
    fn via(&self, dns: &str) -> Vec<String> {
        vec![
            "--anchors".into(),
            self.anchor().display().to_string(),
            "--dns".into(),
            dns.to_string(),
        ]
    }

    /// The library resolver's config: the root anchor and the honest DNS.
    fn config(&self) -> ResolverConfig {
        let a = anchors::read(&self.anchor(), time::now()).unwrap();
        ResolverConfig::new(a, vec![self.dns.parse().unwrap()])
    }

    /// `example.com.@ADDR`, how the resolver names example.com.'s key server.
    fn example_label(&self) -> String {
        format!("example.com.@{}", ks_addr(&self.example))
    }
}

// ---------------------------------------------------------------------------------------------
// Services (`tp serve`) and clients (`tp connect`)
// ---------------------------------------------------------------------------------------------

/// A running `tp serve` (an echo service), its stderr in a file.
struct Service {
    _proc: Proc,
    log: PathBuf,
    port: u16,
}

impl Service {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Connections that reached it: `tp serve` logs one line per peer that sent anything (a
    /// session, or a refusal); a bare port probe is not logged.
    fn peers(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(": TLS 1.3 session") || l.contains("refused"))
            .count()
    }

    fn sessions(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(": TLS 1.3 session"))
            .count()
    }
}

/// `tp serve --key KEY --listen IP:<free port> EXTRA…`, up.
fn serve(dir: &Path, tag: &str, key: &Path, ip: &str, extra: &[String]) -> Service {
    serve_at(dir, tag, key, &format!("{ip}:{}", free_port(ip)), extra)
}

fn serve_at(dir: &Path, tag: &str, key: &Path, listen: &str, extra: &[String]) -> Service {
    let log = dir.join(format!("{tag}.serve.log"));
    let err = std::fs::File::create(&log).unwrap();
    let mut p = Proc::spawn(
        &format!("tp serve ({tag})"),
        tp().arg("serve")
            .arg("--key")
            .arg(key)
            .args(["--listen", listen])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(err),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        if t.contains("TLS 1.3 with a raw public key") {
            break;
        }
        if let Ok(Some(s)) = p.child.try_wait() {
            panic!("tp serve ({tag}) exited ({s}):\n{t}");
        }
        assert!(
            Instant::now() < deadline,
            "tp serve ({tag}) did not come up:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    Service {
        _proc: p,
        log,
        port,
    }
}

/// `tp connect ARGS --message MESSAGE TARGET`.
fn tp_connect(args: &[String], target: &str, message: &str) -> Output {
    run(tp()
        .arg("connect")
        .args(args)
        .args(["--message", message])
        .arg(target))
}

/// The connection worked and `message` came back; stdout.
#[track_caller]
fn connected(out: &Output, message: &str) -> String {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == message),
        "tp connect should have connected:\nstdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    stdout
}

/// The connection was refused; stderr.
#[track_caller]
fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "tp connect should have been refused:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

#[track_caller]
fn assert_names(stderr: &str, parts: &[&str]) {
    for p in parts {
        assert!(stderr.contains(p), "stderr lacks {p:?}:\n{stderr}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A library resolver (its own caches), made inside the runtime its DNS client runs on.
fn resolver(rt: &tokio::runtime::Runtime, cfg: ResolverConfig) -> Resolver {
    rt.block_on(async { Resolver::new(cfg) }).unwrap()
}

/// Send a line over a library connection and read the echo.
async fn echo(c: &mut tls::Connected, line: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    c.stream
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    c.stream.flush().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"\n") {
        let n = c.stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap().trim_end().to_string()
}

/// `tls::connect`, which must succeed.
fn lib_connect(rt: &tokio::runtime::Runtime, r: &Resolver, port: u16) -> tls::Connected {
    match rt.block_on(tls::connect(r, WWW, port, None)) {
        Ok(c) => c,
        Err(e) => panic!("tls::connect to {WWW}:{port} failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Key material made in-process, and a hostile key server (as in tests/resolver_reject.rs)
// ---------------------------------------------------------------------------------------------

/// Randomness for keys: the suite has no `rand_core` of its own, so the library's
/// `from_bytes` / `extract_with_r` entry points are fed from the kernel.
fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b
}

/// `f` with fresh random bytes until they make a valid scalar (all but ~2^-32 of draws do).
fn with_random<T, E: Debug>(f: impl Fn(&[u8; 32]) -> Result<T, E>) -> T {
    let mut last = None;
    for _ in 0..8 {
        match f(&random32()) {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
    }
    panic!("no usable random scalar: {last:?}")
}

fn now() -> u32 {
    u32::try_from(time::now()).unwrap()
}

/// The usual window: began a day ago, ends in thirty days.
fn window() -> (u32, u32) {
    (now() - 86_400, now() + 30 * 86_400)
}

/// A record for (owner, ip) issued under `issuer`'s params, not yet signed, and the owner's
/// key that goes with it.
fn issue_unsigned(
    issuer: &Kgc,
    owner: &str,
    ip: IpAddr,
    key_server: Option<KeyServerInfo>,
    (not_before, not_after): (u32, u32),
) -> (KeyRecord, EntityKey) {
    let id = Identity::new(owner, ip, issuer.params()).unwrap();
    let x = with_random(|b| SecretValue::from_bytes(b));
    let req = KeyRequest::new(id.clone(), &x);
    let partial = with_random(|b| issuer.extract_with_r(&req, b));
    let key = EntityKey::combine(&id, &x, &partial, issuer.params()).unwrap();
    let rec = KeyRecord {
        ip,
        w: partial.w.into(),
        issuer: issuer.params().digest(),
        not_before,
        not_after,
        key_server: key_server.map(Box::new),
        signature: None,
    };
    (rec, key)
}

fn signed(mut rec: KeyRecord, owner: &str, signer: &EntityKey) -> KeyRecord {
    rec.sign(owner, signer).unwrap();
    rec
}

/// A key server's secrets and the KS record that vouches for it (self-issued for a root).
struct Zone {
    addr: SocketAddr,
    kgc: Kgc,
    own: EntityKey,
    record: KeyRecord,
}

fn new_kgc(name: &str) -> Kgc {
    with_random(|b| Kgc::from_secret_bytes(name, b))
}

impl Zone {
    /// A root (or an impostor of any name): its own key issued by its own KGC, self-signed.
    fn root(name: &str, ip: &str) -> Zone {
        let kgc = new_kgc(name);
        let addr = SocketAddr::new(ip.parse().unwrap(), free_port(ip));
        let info = KeyServerInfo {
            port: addr.port(),
            p_pub: kgc.params().p_pub,
        };
        let (rec, own) = issue_unsigned(&kgc, name, addr.ip(), Some(info), window());
        let record = signed(rec, name, &own);
        Zone {
            addr,
            kgc,
            own,
            record,
        }
    }

    /// A child key server at `ip` (a fresh port), its KS record issued and signed by `self`.
    fn child(&self, name: &str, ip: &str) -> Zone {
        let addr = SocketAddr::new(ip.parse().unwrap(), free_port(ip));
        let kgc = new_kgc(name);
        let info = KeyServerInfo {
            port: addr.port(),
            p_pub: kgc.params().p_pub,
        };
        let (rec, own) = issue_unsigned(&self.kgc, name, addr.ip(), Some(info), window());
        Zone {
            addr,
            kgc,
            own,
            record: signed(rec, name, &self.own),
        }
    }

    /// An entity record issued and signed by this key server, with the entity's key.
    fn entity(&self, owner: &str, ip: &str) -> (KeyRecord, EntityKey) {
        let (rec, key) = issue_unsigned(&self.kgc, owner, ip.parse().unwrap(), None, window());
        (signed(rec, owner, &self.own), key)
    }
}

/// `rec` as a TYPE65300 record owned by `owner`.
fn rr(owner: &str, rec: &KeyRecord) -> Record {
    rr_wire(owner, rec.to_wire().unwrap())
}

fn rr_wire(owner: &str, wire: Vec<u8>) -> Record {
    Record::from_rdata(
        Name::from_ascii(owner).unwrap(),
        3600,
        RData::Unknown {
            code: RecordType::Unknown(65300),
            rdata: NULL::with(wire),
        },
    )
}

#[derive(Clone)]
enum Reply {
    /// Authoritative answer with these records.
    Answer(Vec<Record>),
    /// Referral: these records in AUTHORITY, AA clear.
    Referral(Vec<Record>),
}

/// A hostile key server: answers each name as scripted (UDP).
struct Hostile {
    script: Arc<Mutex<HashMap<String, Reply>>>,
    queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn respond(req: &Message, reply: &Reply) -> Message {
    let mut m = Message::response(req.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.add_queries(req.queries.clone());
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    match reply {
        Reply::Answer(recs) => {
            m.metadata.authoritative = true;
            m.add_answers(recs.clone());
        }
        Reply::Referral(recs) => {
            m.add_authorities(recs.clone());
        }
    }
    m
}

impl Hostile {
    /// Serve UDP at `addr`; unscripted names get an authoritative NXDOMAIN.
    fn start(addr: SocketAddr) -> Hostile {
        let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let script: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let queries = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, q, st) = (script.clone(), queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(qname) = req
                    .queries
                    .first()
                    .map(|q| q.name().to_ascii().to_ascii_lowercase())
                else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                let reply = s.lock().unwrap().get(&qname).cloned();
                let msg = match reply {
                    Some(r) => respond(&req, &r),
                    None => {
                        let mut m = respond(&req, &Reply::Answer(Vec::new()));
                        m.metadata.response_code = ResponseCode::NXDomain;
                        m
                    }
                };
                let _ = sock.send_to(&msg.to_vec().unwrap(), peer);
            }
        });
        Hostile {
            script,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, qname: &str, reply: Reply) {
        self.script.lock().unwrap().insert(qname.to_string(), reply);
    }

    fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The key server compromised, DNS intact
// ---------------------------------------------------------------------------------------------

/// Attack 1 (§2.5), forged key: the host of example.com.'s key server is compromised — a
/// hostile server answers in its place with a forged key for www — while DNS is intact. The
/// forger does not hold example.com.'s signing key: its record is issued by another KGC that
/// also calls itself example.com., or claims example.com.'s params but carries another key's
/// signature.
/// Expected: `tp connect` is refused by the resolver, the error naming the server, the owner
/// and the failed check (issuer, then signature); the forged key never reaches TLS: the real
/// www service sees no connection.
#[test]
fn compromised_key_server_forged_key_is_refused_by_the_issuer_or_signature_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut h = Hierarchy::start(d, 1, &[]);
    let www = serve(d, "www", &h.www_key, &h.ip(WWW_AT), &[]);
    let target = format!("{WWW}:{}", www.port);
    // The control: the honest hierarchy connects.
    connected(&tp_connect(&h.via(&h.dns), &target, "honest"), "honest");
    assert_eq!(www.sessions(), 1, "{}", www.log());

    let label = h.example_label();
    let ks = ks_addr(&h.example);
    h.example.stop();
    let hostile = Hostile::start(ks);
    let impostor = Zone::root("example.com.", &h.ip(HOSTILE));

    // Issued by the impostor KGC: the issuer check refuses it.
    let (forged, _) = impostor.entity(WWW, &h.ip(WWW_AT));
    hostile.set(WWW, Reply::Answer(vec![rr(WWW, &forged)]));
    let e = refused(&tp_connect(&h.via(&h.dns), &target, "forged"));
    assert_names(&e, &[WWW, &label, "issuer check failed"]);

    // Claiming example.com.'s real params (so the issuer check passes), signed by the
    // forger's key: the signature check refuses it.
    let params = keyfile::read_params(&h.example.params()).unwrap();
    let (mut forged, _) = impostor.entity(WWW, &h.ip(WWW_AT));
    forged.issuer = params.digest();
    let forged = signed(forged, WWW, &impostor.own);
    hostile.set(WWW, Reply::Answer(vec![rr(WWW, &forged)]));
    let e = refused(&tp_connect(&h.via(&h.dns), &target, "forged"));
    assert_names(
        &e,
        &[
            WWW,
            &label,
            "signature check failed",
            "does not verify under the key of",
        ],
    );
    assert!(hostile.queries() >= 2, "the hostile server was not asked");
    // Refused at resolution: no TCP connection, no handshake with the forged key.
    assert_eq!(www.peers(), 1, "the forged key reached TLS:\n{}", www.log());
}

/// Attack 1 (§2.5: "a wrong key → the real server cannot complete the handshake"):
/// example.com.'s own key server publishes, validly signed, a key for www at www's IP that
/// www's real service does not hold (www re-issued at the same IP with a new secret value into
/// the zone, the zone reloaded with `tp ctl reload`; the running service keeps the old key).
/// Expected: the resolver accepts the published key, the real server presents another; the
/// client invalidates, resolves once more, gets the same published key and stops: "possible
/// spoofing", naming the key presented and the key published.
#[test]
fn a_published_key_the_real_server_does_not_hold_is_possible_spoofing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h = Hierarchy::start(d, 21, &[]);
    let ip = h.ip(WWW_AT);
    let www = serve(d, "www", &h.www_key, &ip, &[]);
    let target = format!("{WWW}:{}", www.port);
    connected(&tp_connect(&h.via(&h.dns), &target, "before"), "before");

    let old = q_hex(entity(&h.www_key).public());
    remove_key(&h.example, WWW, &ip);
    let rekeyed = issue(&h.example, WWW, &ip, "www-rekeyed", &[]);
    let new = q_hex(entity(&rekeyed).public());
    assert_ne!(old, new);
    reload(&h.example);

    let e = refused(&tp_connect(&h.via(&h.dns), &target, "after"));
    assert_names(
        &e,
        &[
            "possible spoofing",
            &format!("{ip}:{} presents key {old}", www.port),
            &format!("the key hierarchy publishes {new} for {WWW} at {ip}"),
        ],
    );
    // The client aborted both handshakes (the key first resolved, then the fresh one): no
    // session.
    assert_eq!(www.sessions(), 1, "{}", www.log());
}

// ---------------------------------------------------------------------------------------------
// 2. DNS poisoned, key servers intact
// ---------------------------------------------------------------------------------------------

/// Attack 2 (§2.5: "a wrong IP → the spoofing host has no private key"): DNS is poisoned and
/// points www at an attacker's host, where `tp serve` runs with a key pair the attacker holds —
/// even one validly issued, for ANOTHER name: mail.example.com.'s key, at mail's IP, which the
/// poisoned DNS gives for www. The key servers are intact.
/// Expected: refused before any TLS: the hierarchy publishes no key of www for that IP ("no
/// verified key", naming the IP DNS gave and the one www's key is published for); the
/// attacker's service sees no connection. A poisoned answer that adds the attacker's address
/// to the real one is refused whole. With honest DNS the real www is reached.
#[test]
fn poisoned_dns_pointing_at_another_names_key_is_refused_no_verified_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h = Hierarchy::start(d, 41, &[]);
    let (www_ip, mail_ip) = (h.ip(WWW_AT), h.ip(MAIL_AT));
    let port = free_port(&www_ip);
    let www = serve_at(d, "www", &h.www_key, &format!("{www_ip}:{port}"), &[]);
    // The attacker: mail's own key, served at mail's IP, on www's port.
    let attacker = serve_at(
        d,
        "attacker",
        &h.mail_key,
        &format!("{mail_ip}:{port}"),
        &[],
    );
    let target = format!("{WWW}:{port}");

    let (_evil, evil_dns) = dns_server(
        d,
        "poisoned",
        &h.ip(EVIL_DNS),
        &[("www", mail_ip.clone()), ("mail", mail_ip.clone())],
    );
    let e = refused(&tp_connect(&h.via(&evil_dns), &target, "poisoned"));
    assert_names(
        &e,
        &[
            WWW,
            &format!("DNS gives {mail_ip}, which has no verified key"),
            &format!("keys are published for {www_ip}"),
        ],
    );
    assert_eq!(attacker.peers(), 0, "{}", attacker.log());

    // Poisoned with the attacker's address beside the real one: refused whole.
    let (_both, both_dns) = dns_server(
        d,
        "poisoned-both",
        &h.ip(EVIL_DNS),
        &[("www", www_ip.clone()), ("www", h.ip(ATTACKER))],
    );
    let e = refused(&tp_connect(&h.via(&both_dns), &target, "half"));
    assert_names(
        &e,
        &[&format!(
            "DNS gives {}, which has no verified key",
            h.ip(ATTACKER)
        )],
    );

    // Honest DNS: the real www, and only it, was ever reached.
    connected(&tp_connect(&h.via(&h.dns), &target, "honest"), "honest");
    assert_eq!(attacker.peers(), 0, "{}", attacker.log());
    assert_eq!(www.sessions(), 1, "{}", www.log());
    // mail's service (the attacker's key is a real key) works for mail itself.
    connected(
        &tp_connect(&h.via(&h.dns), &format!("{MAIL}:{port}"), "mail"),
        "mail",
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Both compromised
// ---------------------------------------------------------------------------------------------

/// Attack 3 (§2.5): both compromised. The attacker holds the example.com. key server's signing
/// material (its state: KGC master secret and signing key) AND controls the DNS answer: it
/// issues, with example.com.'s own KGC, a key for www at the attacker's address into the zone
/// and has the server reload; DNS points www at that address, where `tp serve` runs with the
/// key the attacker made.
/// Expected: `tp connect` SUCCEEDS — it talks to the attacker. This is the documented boundary
/// of the threat model (DESIGN §1: "a forged key is useless unless the DNS server *and* the
/// key server of the name are both compromised"): nothing in the protocol tells this attacker
/// from the owner of the name. With honest DNS the extra key alone is harmless: the client
/// reaches the real www.
#[test]
fn key_server_and_dns_both_compromised_succeeds_the_threat_models_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h = Hierarchy::start(d, 61, &[]);
    let (www_ip, evil_ip) = (h.ip(WWW_AT), h.ip(ATTACKER));
    let port = free_port(&www_ip);
    let www = serve_at(d, "www", &h.www_key, &format!("{www_ip}:{port}"), &[]);
    let target = format!("{WWW}:{port}");

    // With example.com.'s own state: a www key for the attacker's address, published.
    let evil_key = issue(&h.example, WWW, &evil_ip, "www-attacker", &[]);
    reload(&h.example);
    let attacker = serve_at(d, "attacker", &evil_key, &format!("{evil_ip}:{port}"), &[]);
    let evil_q = q_hex(entity(&evil_key).public());

    // The key server alone compromised: DNS still gives www's real address.
    let out = connected(
        &tp_connect(&h.via(&h.dns), &target, "honest dns"),
        "honest dns",
    );
    assert!(out.contains(&format!("({www_ip}:{port})")), "{out}");
    assert_eq!(attacker.peers(), 0, "{}", attacker.log());

    // And the DNS: the client connects to the attacker, with the key the hierarchy publishes.
    let (_evil, evil_dns) = dns_server(d, "poisoned", &h.ip(EVIL_DNS), &[("www", evil_ip.clone())]);
    let out = connected(
        &tp_connect(&h.via(&evil_dns), &target, "to the attacker"),
        "to the attacker",
    );
    assert!(
        out.contains(&format!(";; connected to {WWW} ({evil_ip}:{port})")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "the key published for {WWW} at {evil_ip}: {evil_q}"
        )),
        "{out}"
    );
    assert_eq!(attacker.sessions(), 1, "{}", attacker.log());
    assert_eq!(www.sessions(), 1, "{}", www.log());
}

// ---------------------------------------------------------------------------------------------
// 4. A forged referral towards the resolver
// ---------------------------------------------------------------------------------------------

/// Attack 4: a forged referral injected towards the resolver. A hostile server answers in
/// com.'s place; asked for example.com., it refers to an attacker's example.com. key server
/// with a KS record that claims com.'s params but is not signed by com.
/// Expected (library, one process, so the cache is the same across the steps): `tls::connect`
/// fails with the signature check of example.com. from com.; the failure is not cached (com. is
/// asked again) and the forged link is never followed (the attacker's key server gets no
/// query); once com. is honest again, the same resolver connects to the real www with the real
/// chain: the cache was not poisoned.
#[test]
fn a_forged_referral_fails_the_signature_check_and_does_not_poison_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut h = Hierarchy::start(d, 81, &[]);
    let www = serve(d, "www", &h.www_key, &h.ip(WWW_AT), &[]);
    let rt = runtime();
    let r = resolver(&rt, h.config());

    let com = ks_addr(&h.com);
    h.com.stop();
    let hostile = Hostile::start(com);
    // The attacker's example.com. key server, which would give www a key of its making.
    let forger = Zone::root("com.", &h.ip(HOSTILE));
    let evil_ex = forger.child("example.com.", &h.ip(ATTACKER));
    let evil_ks = Hostile::start(evil_ex.addr);
    let (evil_www, _) = evil_ex.entity(WWW, &h.ip(WWW_AT));
    evil_ks.set(WWW, Reply::Answer(vec![rr(WWW, &evil_www)]));
    let mut referral = evil_ex.record.clone();
    referral.issuer = keyfile::read_params(&h.com.params()).unwrap().digest();
    let referral = signed(referral, "example.com.", &forger.own);
    hostile.set(
        "example.com.",
        Reply::Referral(vec![rr("example.com.", &referral)]),
    );

    for _ in 0..2 {
        let before = hostile.queries();
        match rt.block_on(tls::connect(&r, WWW, www.port, None)) {
            Err(ConnectError::Resolve(ResolveError::Verify {
                server,
                owner,
                check,
                detail,
            })) => {
                assert_eq!(check, Check::Signature, "{detail}");
                assert_eq!(owner, "example.com.");
                assert!(server.starts_with(&format!("com.@{com}")), "{server}");
            }
            Err(e) => panic!("expected the signature check to fail, got {e}"),
            Ok(c) => panic!("connected to {} through a forged referral", c.addr),
        }
        assert!(
            hostile.queries() > before,
            "the refusal was cached: com. was not asked again"
        );
    }
    assert_eq!(evil_ks.queries(), 0, "the forged referral was followed");
    assert_eq!(www.peers(), 0, "{}", www.log());

    // com. honest again: the same resolver, the real key and chain.
    drop(hostile);
    h.com.start();
    let mut c = lib_connect(&rt, &r, www.port);
    assert!(!c.refreshed);
    assert_eq!(c.key.q, *entity(&h.www_key).public());
    assert_eq!(
        rt.block_on(echo(&mut c, "after the forgery")),
        "after the forgery"
    );
    let set = rt.block_on(r.keys(WWW)).0.unwrap();
    let chain: Vec<(&str, SocketAddr)> = set
        .chain
        .iter()
        .map(|k| (k.name.as_str(), k.addr()))
        .collect();
    assert_eq!(
        chain,
        [
            (".", ks_addr(&h.root)),
            ("com.", com),
            ("example.com.", ks_addr(&h.example))
        ]
    );
    let ex_key = entity(&h.example.state.join("server.key"));
    assert_eq!(set.chain[2].identities[0].1, *ex_key.public());
    assert_eq!(evil_ks.queries(), 0);
}

// ---------------------------------------------------------------------------------------------
// 5. One of three roots compromised
// ---------------------------------------------------------------------------------------------

/// The TPKEY lines of a key zone file for `owner`.
fn key_lines(zone_file: &Path, owner: &str) -> Vec<String> {
    std::fs::read_to_string(zone_file)
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(owner) && l.contains(" TPKEY "))
        .map(str::to_string)
        .collect()
}

/// The same record with its signature (the last field) replaced by `-`: tpkd signs it with its
/// own key when it loads the zone.
fn unsigned(line: &str) -> String {
    let (rest, sig) = line.trim_end().rsplit_once(' ').unwrap();
    assert!(sig.len() > 64, "not a signed record line: {line}");
    format!("{rest} -")
}

/// A second instance of `root`'s KGC at `ip` (as the DNS root's servers share one key): its own
/// key for (".", ip), issued by the shared KGC and self-signed; a zone holding `root`'s com.
/// record, which this instance signs with its own key on load (so both roots vouch for the
/// one com. key server); its trust anchor in state/anchor. Not started.
fn root_instance(dir: &Path, root: &KeyServer, ip: &str) -> KeyServer {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    for f in ["kgc.secret", "params"] {
        // std::fs::copy keeps the 0600 mode of the secret.
        std::fs::copy(root.state.join(f), state.join(f)).unwrap();
    }
    let port = free_port(ip);
    let zone_file = dir.join("zone.keys");
    std::fs::write(
        &zone_file,
        format!("$ORIGIN .\n$TTL 3600\n@ IN SOA ks. hostmaster.ks. 1 7200 3600 1209600 300\n@ IN NS ks.\nks IN A {ip}\n"),
    )
    .unwrap();
    // `tp issue` issues no apex record (a root's own is self-issued, by `tp kgc-setup
    // --root-ip` for a new KGC): this instance's key and record are made with the library,
    // from the shared KGC.
    let kgc = keyfile::read_kgc(&state.join("kgc.secret")).unwrap();
    let info = KeyServerInfo {
        port,
        p_pub: kgc.params().p_pub,
    };
    let (rec, own) = issue_unsigned(&kgc, ".", ip.parse().unwrap(), Some(info), window());
    keyfile::write_entity(&state.join("server.key"), &own, kgc.params()).unwrap();
    let rec = signed(rec, ".", &own);
    let apex = format!(". 86400 IN TPKEY {rec}");
    let mut zone = std::fs::read_to_string(&zone_file).unwrap();
    zone.push_str(&apex);
    zone.push('\n');
    for l in key_lines(&root.zone_file, "com.") {
        zone.push_str(&unsigned(&l));
        zone.push('\n');
    }
    std::fs::write(&zone_file, zone).unwrap();
    std::fs::write(
        state.join("anchor"),
        format!("; trust anchor: a second instance of the root\n{apex}\n"),
    )
    .unwrap();
    let config = dir.join("tpkd.toml");
    std::fs::write(
        &config,
        format!("name = \".\"\nlisten = [\"{ip}:{port}\"]\nstate_dir = \"state\"\nzone_file = \"zone.keys\"\naxfr_allow = [\"127.0.0.0/8\"]\n"),
    )
    .unwrap();
    KeyServer {
        dir: dir.to_path_buf(),
        name: ".".into(),
        ip: ip.to_string(),
        port,
        config,
        zone_file,
        state,
        proc_: None,
    }
}

/// Attack 5: a compromised root, with three roots configured. R1 and R2 are honest (two
/// instances of one root KGC, vouching for the one real com.); R3 is the attacker's, with its
/// own com. and example.com. (hostile servers) giving www another key at www's IP.
/// Expected: cross-verification catches it — `tp connect` with policy "all" is refused,
/// "trust anchors disagree", naming R3 and what it said; with quorum 2 the two honest roots
/// outvote it and the client connects to the real server. (R3 alone, with DNS intact: the real
/// server does not hold R3's key, "possible spoofing".)
#[test]
fn a_compromised_root_of_three_is_caught_by_cross_verification() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h = Hierarchy::start(d, 101, &[]);
    let www_ip = h.ip(WWW_AT);
    let www = serve(d, "www", &h.www_key, &www_ip, &[]);
    let target = format!("{WWW}:{}", www.port);
    let mut r2 = root_instance(&d.join("r2"), &h.root, &h.ip(SPARE));
    r2.start();
    let (a1, a2) = (h.anchor(), r2.state.join("anchor"));

    let r3 = Zone::root(".", &h.ip(HOSTILE));
    let c3 = r3.child("com.", &h.ip(SPARE + 1));
    let ex3 = c3.child("example.com.", &h.ip(SPARE + 2));
    let (www3, www3_key) = ex3.entity(WWW, &www_ip);
    let s_r3 = Hostile::start(r3.addr);
    let s_c3 = Hostile::start(c3.addr);
    let s_ex3 = Hostile::start(ex3.addr);
    s_r3.set("com.", Reply::Referral(vec![rr("com.", &c3.record)]));
    s_c3.set(
        "example.com.",
        Reply::Referral(vec![rr("example.com.", &ex3.record)]),
    );
    s_ex3.set(WWW, Reply::Answer(vec![rr(WWW, &www3)]));
    let a3 = d.join("r3.anchor");
    std::fs::write(
        &a3,
        format!(
            "; trust anchor of the compromised root\n. 86400 IN TPKEY {}\n",
            r3.record
        ),
    )
    .unwrap();
    let evil = q_hex(www3_key.public());
    let honest = q_hex(entity(&h.www_key).public());

    // Each alone: R2 is as honest as R1; R3 publishes a key the real server does not hold.
    let with = |a: &Path| -> Vec<String> {
        vec![
            "--anchors".into(),
            a.display().to_string(),
            "--dns".into(),
            h.dns.clone(),
        ]
    };
    connected(&tp_connect(&with(&a2), &target, "via R2"), "via R2");
    let e = refused(&tp_connect(&with(&a3), &target, "via R3"));
    assert_names(&e, &["possible spoofing", &format!("publishes {evil}")]);

    let settings = |file: &str, extra: &str| -> String {
        let p = d.join(file);
        std::fs::write(
            &p,
            format!(
                "anchors = [\"{}\", \"{}\", \"{}\"]\ndns = [\"{}\"]\n{extra}",
                a1.display(),
                a2.display(),
                a3.display(),
                h.dns
            ),
        )
        .unwrap();
        p.display().to_string()
    };
    // Policy "all": refused, R3 named with what it said.
    let all = settings("all.toml", "");
    let e = refused(&tp_connect(&["--config".into(), all], &target, "all"));
    assert_names(
        &e,
        &[
            "trust anchors disagree",
            &format!(
                ".@{} ({}:2) says {www_ip} Q={}",
                r3.addr,
                a3.display(),
                &evil[..16]
            ),
            &format!("({}:2) says {www_ip} Q={}", a2.display(), &honest[..16]),
            "policy all of 3",
        ],
    );
    // Quorum 2: the honest two outvote R3; the real server, its key.
    let quorum = settings("quorum.toml", "policy = \"quorum\"\nquorum = 2\n");
    let out = connected(
        &tp_connect(&["--config".into(), quorum], &target, "quorum"),
        "quorum",
    );
    assert!(out.contains(&honest), "{out}");
    assert!(s_ex3.queries() >= 1, "R3's tree was not walked");
}

// ---------------------------------------------------------------------------------------------
// 6. Replay of an old record
// ---------------------------------------------------------------------------------------------

/// Attack 6a: replay of a record whose validity window has ended. (1) www's record, issued for
/// one day (`tp issue --validity-days 1`), seen by a client two days ahead (`faketime`): the key
/// server serves it, its window has ended. (2) An attacker in the key server's place replays a
/// record genuinely issued and signed by example.com. (its state) whose window ended an hour
/// ago.
/// Expected: both refused by the validity check, naming the owner and the key server; nothing
/// reaches TLS.
#[test]
fn a_replayed_expired_record_fails_the_validity_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut h = Hierarchy::start(d, 121, &["--validity-days", "1"]);
    let www_ip = h.ip(WWW_AT);
    let www = serve(d, "www", &h.www_key, &www_ip, &[]);
    let target = format!("{WWW}:{}", www.port);
    connected(&tp_connect(&h.via(&h.dns), &target, "today"), "today");
    let label = h.example_label();

    let out = run(Command::new(require_tool("faketime"))
        .args(["-f", "+2d"])
        .arg(bin("tp"))
        .arg("connect")
        .args(h.via(&h.dns))
        .args(["--message", "in two days"])
        .arg(&target));
    let e = refused(&out);
    assert_names(&e, &[WWW, &label, "validity check failed"]);

    let kgc = keyfile::read_kgc(&h.example.state.join("kgc.secret")).unwrap();
    let own = entity(&h.example.state.join("server.key"));
    let t = now();
    let (old, _) = issue_unsigned(
        &kgc,
        WWW,
        www_ip.parse().unwrap(),
        None,
        (t - 30 * 86_400, t - 3600),
    );
    let old = signed(old, WWW, &own);
    let ks = ks_addr(&h.example);
    h.example.stop();
    let hostile = Hostile::start(ks);
    hostile.set(WWW, Reply::Answer(vec![rr(WWW, &old)]));
    let e = refused(&tp_connect(&h.via(&h.dns), &target, "replayed"));
    assert_names(
        &e,
        &[WWW, &label, "validity check failed", "validity window"],
    );
    assert!(hostile.queries() >= 1);
    assert_eq!(www.peers(), 1, "{}", www.log());
}

/// Attack 6b: a superseded record. www is re-keyed: a new key issued into the zone at the same
/// IP, the zone reloaded, www's service restarted with the new key.
/// Expected: (1) a client whose cache still holds the old key (library, one process) connects:
/// the server's key differs, the client invalidates, resolves again and succeeds with the new
/// key, `refreshed == true` — the dissertation's "outdated key" signal. (2) An attacker in the
/// key server's place replays the OLD record, still inside its validity window and genuinely
/// signed by example.com.: the resolver ACCEPTS it — replay protection is the validity window
/// alone, and this is the design's boundary — but the real server no longer holds that key, so
/// the client, after its one re-resolution, reports "possible spoofing": the replay denies
/// service, it does not let anyone in (an attacker who also held the old private key and www's
/// address would be attack 3).
#[test]
fn a_superseded_key_is_refreshed_and_a_replayed_old_record_is_possible_spoofing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut h = Hierarchy::start(d, 141, &[]);
    let ip = h.ip(WWW_AT);
    let listen = format!("{ip}:{}", free_port(&ip));
    let old_svc = serve_at(d, "www-old", &h.www_key, &listen, &[]);
    let port = old_svc.port;
    let old_q = *entity(&h.www_key).public();
    // The old record as the key server serves it, for the replay.
    let served = rdata_hex(&dig(&[
        "-p",
        &h.example.p(),
        &h.example.at(),
        WWW,
        "TYPE65300",
    ]));
    assert_eq!(served.len(), 1, "{served:?}");
    let old_wire = hex::decode(&served[0].1).unwrap();

    let rt = runtime();
    let r = resolver(&rt, h.config());
    let mut c = lib_connect(&rt, &r, port);
    assert!(!c.refreshed);
    assert_eq!(c.key.q, old_q);
    assert_eq!(rt.block_on(echo(&mut c, "old key")), "old key");
    drop(c);

    // Re-key www; its service restarts with the new key.
    remove_key(&h.example, WWW, &ip);
    let new_key = issue(&h.example, WWW, &ip, "www-rekeyed", &[]);
    let new_q = *entity(&new_key).public();
    reload(&h.example);
    drop(old_svc);
    let new_svc = serve_at(d, "www-new", &new_key, &listen, &[]);

    // The cache still holds the old key…
    let (res, report) = rt.block_on(r.resolve(WWW));
    assert_eq!(report.cache, CacheUse::Hit);
    assert_eq!(res.unwrap().pairs[0].1.q, old_q);
    // …the server refuses it: invalidated, resolved again, connected with the new key.
    let mut c = lib_connect(&rt, &r, port);
    assert!(c.refreshed, "the outdated key was not signalled");
    assert_eq!(c.key.q, new_q);
    assert_eq!(rt.block_on(echo(&mut c, "new key")), "new key");
    drop(c);
    let (res, report) = rt.block_on(r.resolve(WWW));
    assert_eq!(report.cache, CacheUse::Hit);
    assert_eq!(res.unwrap().pairs[0].1.q, new_q);
    // `tp connect` (a fresh cache) gets the new key directly.
    connected(
        &tp_connect(&h.via(&h.dns), &format!("{WWW}:{port}"), "fresh"),
        "fresh",
    );

    // The replay: the old record, as example.com. signed it, from a hostile server in its place.
    let ks = ks_addr(&h.example);
    h.example.stop();
    let hostile = Hostile::start(ks);
    hostile.set(WWW, Reply::Answer(vec![rr_wire(WWW, old_wire)]));
    // The resolver accepts it: it is genuine and inside its window.
    let fresh = resolver(&rt, h.config());
    let k = rt
        .block_on(fresh.key_for(WWW, ip.parse().unwrap()))
        .expect("a replayed record inside its window is accepted");
    assert_eq!(k.q, old_q);
    // The real server does not hold it: possible spoofing.
    let e = refused(&tp_connect(
        &h.via(&h.dns),
        &format!("{WWW}:{port}"),
        "replayed",
    ));
    assert_names(
        &e,
        &[
            "possible spoofing",
            &format!("presents key {}", q_hex(&new_q)),
            &format!("publishes {} for {WWW} at {ip}", q_hex(&old_q)),
        ],
    );
    assert_eq!(new_svc.sessions(), 2, "{}", new_svc.log());
}

/// Attack 6b, the other outcome of the "outdated key" signal: www's key is withdrawn (its
/// line removed from the zone, the zone reloaded) and its address reused by another service
/// (shop.example.com., with a key of its own for that address).
/// Expected: a client whose cache still holds www's key connects to the address, is shown
/// shop's key, invalidates, resolves again and finds no key for www there any more:
/// `ConnectError::OutdatedKey`, naming the cached key and why the fresh resolution gave none.
#[test]
fn a_withdrawn_key_whose_address_is_reused_is_an_outdated_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h = Hierarchy::start(d, 221, &[]);
    let ip = h.ip(WWW_AT);
    let listen = format!("{ip}:{}", free_port(&ip));
    let www = serve_at(d, "www", &h.www_key, &listen, &[]);
    let rt = runtime();
    let r = resolver(&rt, h.config());
    let c = lib_connect(&rt, &r, www.port);
    assert!(!c.refreshed);
    drop(c);

    remove_key(&h.example, WWW, &ip);
    let shop_key = issue(&h.example, "shop.example.com.", &ip, "shop", &[]);
    reload(&h.example);
    let port = www.port;
    drop(www);
    let shop = serve_at(d, "shop", &shop_key, &listen, &[]);

    let www_q = q_hex(entity(&h.www_key).public());
    match rt.block_on(tls::connect(&r, WWW, port, None)) {
        Err(e @ ConnectError::OutdatedKey { .. }) => {
            let msg = e.to_string();
            let ConnectError::OutdatedKey {
                name,
                ip: at_ip,
                cached,
                reason,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(name, WWW);
            assert_eq!(at_ip.to_string(), ip);
            assert_eq!(cached, www_q);
            assert!(reason.contains("no key"), "{reason}");
            assert!(msg.starts_with("outdated key: "), "{msg}");
        }
        Err(e) => panic!("expected an outdated key, got {e}"),
        Ok(c) => panic!("connected to {} with {WWW}'s withdrawn key", c.addr),
    }
    assert_eq!(shop.sessions(), 0, "{}", shop.log());
}

// ---------------------------------------------------------------------------------------------
// 7. A stolen entity key used from another address
// ---------------------------------------------------------------------------------------------

/// Attack 7: a stolen entity private key used from another address. The thief runs `tp serve`
/// with www's own key file on its host (another loopback address) and poisons DNS to point www
/// there.
/// Expected: refused before TLS — the key is bound to www's IP (the IP is part of the identity
/// the key derives from), so the hierarchy publishes no key of www for the thief's address ("no
/// verified key"); the thief's service sees no connection (and warns that clients will refuse
/// it).
#[test]
fn a_stolen_key_served_from_another_ip_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h = Hierarchy::start(d, 161, &[]);
    let (www_ip, thief_ip) = (h.ip(WWW_AT), h.ip(ATTACKER));
    let port = free_port(&www_ip);
    let www = serve_at(d, "www", &h.www_key, &format!("{www_ip}:{port}"), &[]);
    let thief = serve_at(d, "thief", &h.www_key, &format!("{thief_ip}:{port}"), &[]);
    assert!(
        thief.log().contains(&format!(
            "the key is bound to {www_ip}, the service listens on {thief_ip}"
        )),
        "{}",
        thief.log()
    );
    let target = format!("{WWW}:{port}");
    let (_evil, evil_dns) =
        dns_server(d, "poisoned", &h.ip(EVIL_DNS), &[("www", thief_ip.clone())]);
    let e = refused(&tp_connect(&h.via(&evil_dns), &target, "stolen"));
    assert_names(
        &e,
        &[
            WWW,
            &format!("DNS gives {thief_ip}, which has no verified key"),
            &format!("keys are published for {www_ip}"),
        ],
    );
    assert_eq!(thief.peers(), 0, "{}", thief.log());
    connected(&tp_connect(&h.via(&h.dns), &target, "honest"), "honest");
    assert_eq!(www.sessions(), 1, "{}", www.log());
}

/// What a gnutls-cli run gave.
struct CliRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// `line` came back as a line of its own.
    echoed: bool,
}

/// GnuTLS priority: TLS 1.3, raw public keys on both sides (no X.509 at all).
const BOTH_RAWPK: &str = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+CTYPE-SRV-RAWPK:-CTYPE-SRV-X509:+CTYPE-CLI-RAWPK:-CTYPE-CLI-X509";

/// `gnutls-cli` presenting the raw key (PKCS#8, SPKI) to IP:PORT, sending `line`. It does not
/// check the server's key (it cannot against the hierarchy): here it is the thief's client.
/// stdin stays open until the echo is back (gnutls-cli stops reading at stdin EOF), or until it
/// exits.
fn gnutls_cli(pkcs8: &Path, spki: &Path, ip: &str, port: u16, line: &str) -> CliRun {
    let mut child = Command::new(require_tool("gnutls-cli"))
        .args(["--priority", BOTH_RAWPK, "--no-ca-verification"])
        .arg("--rawpkkeyfile")
        .arg(pkcs8)
        .arg("--rawpkfile")
        .arg(spki)
        .args(["-p", &port.to_string(), ip])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gnutls-cli");
    let mut stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            let _ = tx.send(l.clone());
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let _ = writeln!(stdin, "{line}");
    let _ = stdin.flush();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut echoed = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l == line => {
                echoed = true;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    CliRun {
        status,
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        echoed,
    }
}

/// `tp export-key`: (PKCS#8 PEM, SPKI PEM) of an entity key, for GnuTLS.
fn export(dir: &Path, key: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let pkcs8 = dir.join(format!("{tag}.pem"));
    let spki = dir.join(format!("{tag}.pub.pem"));
    ok(tp()
        .arg("export-key")
        .arg("--key")
        .arg(key)
        .arg("--pkcs8")
        .arg(&pkcs8)
        .arg("--spki")
        .arg(&spki));
    (pkcs8, spki)
}

/// Attack 7, mutual authentication: mail's service admits the clients www.example.com. and
/// laptop.example.com. (`tp serve --client …`), each with the key published for it at the
/// connection's source address. A thief holding www's private key connects from an address
/// www's key is not bound to: GnuTLS's gnutls-cli does not bind its socket, and on loopback the
/// kernel gives such a connection the source 127.0.0.1 (route `local 127.0.0.0/8 src
/// 127.0.0.1`), not www's 127.0.1.x; it presents www's key (exported by `tp export-key`).
/// Expected: refused — the only client key published for 127.0.0.1 is laptop's, so the
/// handshake fails. Controls: laptop's key, issued FOR 127.0.0.1, is admitted from there
/// (gnutls-cli, and `tp connect --key`), and www is admitted from its own address (`tp connect
/// --key` binds the address the key is bound to). On loopback a thief could bind www's address
/// too; on a network it cannot complete a TCP handshake from an address not routed to it, and
/// that is what the binding rests on.
#[test]
fn mutual_auth_refuses_a_stolen_client_key_from_an_address_it_is_not_bound_to() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h = Hierarchy::start(d, 181, &[]);
    let laptop = "laptop.example.com.";
    let laptop_key = issue(&h.example, laptop, "127.0.0.1", "laptop", &[]);
    reload(&h.example);
    let mail_ip = h.ip(MAIL_AT);
    let mut extra = vec![
        "--client".to_string(),
        WWW.to_string(),
        "--client".to_string(),
        laptop.to_string(),
    ];
    extra.extend(h.via(&h.dns));
    let svc = serve(d, "mail", &h.mail_key, &mail_ip, &extra);
    let target = format!("{MAIL}:{}", svc.port);

    // The thief: www's key, from 127.0.0.1.
    let (www_pem, www_pub) = export(d, &h.www_key, "www");
    let cli = gnutls_cli(&www_pem, &www_pub, &mail_ip, svc.port, "stolen");
    assert!(
        !cli.echoed && !cli.status.success(),
        "a stolen key was admitted from 127.0.0.1:\n{}\n{}\n{}",
        cli.stdout,
        cli.stderr,
        svc.log()
    );
    // The service says why (its log line may follow the client's exit by a moment).
    let refusal = |log: &str| {
        log.lines()
            .any(|l| l.contains("127.0.0.1:") && l.contains("handshake refused"))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !refusal(&svc.log()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refusal(&svc.log()), "{}", svc.log());
    assert_eq!(svc.sessions(), 0, "{}", svc.log());

    // laptop's own key from 127.0.0.1, the address it is issued for: admitted (GnuTLS and tp).
    let (lp_pem, lp_pub) = export(d, &laptop_key, "laptop");
    let cli = gnutls_cli(&lp_pem, &lp_pub, &mail_ip, svc.port, "laptop via gnutls");
    assert!(
        cli.echoed,
        "laptop was refused:\n{}\n{}\n{}",
        cli.stdout,
        cli.stderr,
        svc.log()
    );
    let mut args = h.via(&h.dns);
    args.extend(["--key".to_string(), laptop_key.display().to_string()]);
    let out = connected(
        &tp_connect(&args, &target, "laptop via tp"),
        "laptop via tp",
    );
    assert!(
        out.contains(&format!(";; client key presented: {laptop} at 127.0.0.1")),
        "{out}"
    );
    // www from its own address.
    let mut args = h.via(&h.dns);
    args.extend(["--key".to_string(), h.www_key.display().to_string()]);
    let out = connected(&tp_connect(&args, &target, "www"), "www");
    assert!(
        out.contains(&format!(
            ";; client key presented: {WWW} at {}",
            h.ip(WWW_AT)
        )),
        "{out}"
    );
    assert_eq!(svc.sessions(), 3, "{}", svc.log());
}

// ---------------------------------------------------------------------------------------------
// ECIES: tp seal / tp open
// ---------------------------------------------------------------------------------------------

/// `tp seal --to www.example.com.` (to www's verified key) piped into `tp open --key www.key`
/// round-trips; `tp open` with mail's key fails with an error naming the key's owner; a
/// tampered ciphertext fails to open.
#[test]
fn seal_opens_with_the_recipients_key_only_and_tampering_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h = Hierarchy::start(d, 201, &[]);
    let secret = "a secret for www.example.com. only\n";
    let plain = d.join("plain.txt");
    std::fs::write(&plain, secret).unwrap();

    // tp seal … | tp open …
    let mut seal = tp()
        .args(["seal", "--to", WWW])
        .arg("--anchors")
        .arg(h.anchor())
        .arg("--in")
        .arg(&plain)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let open = tp()
        .arg("open")
        .arg("--key")
        .arg(&h.www_key)
        .stdin(Stdio::from(seal.stdout.take().unwrap()))
        .output()
        .unwrap();
    let sealed_status = seal.wait().unwrap();
    assert!(sealed_status.success());
    assert!(
        open.status.success(),
        "tp open failed: {}",
        text(&open.stderr)
    );
    assert_eq!(text(&open.stdout), secret);

    let sealed = d.join("sealed.bin");
    ok(tp()
        .args(["seal", "--to", WWW])
        .arg("--anchors")
        .arg(h.anchor())
        .arg("--in")
        .arg(&plain)
        .arg("--out")
        .arg(&sealed));
    let open_with = |key: &Path, input: &Path| {
        run(tp()
            .arg("open")
            .arg("--key")
            .arg(key)
            .arg("--in")
            .arg(input))
    };
    let out = open_with(&h.www_key, &sealed);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), secret);

    // Another entity's key.
    let out = open_with(&h.mail_key, &sealed);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert_names(
        &text(&out.stderr),
        &[
            "cannot open",
            &format!("not sealed to {MAIL} at {}, or altered", h.ip(MAIL_AT)),
        ],
    );

    // Tampered: one bit flipped, at the start, in the middle and at the end.
    let bytes = std::fs::read(&sealed).unwrap();
    for at in [0, bytes.len() / 2, bytes.len() - 1] {
        let mut t = bytes.clone();
        t[at] ^= 0x01;
        let tampered = d.join(format!("tampered{at}.bin"));
        std::fs::write(&tampered, t).unwrap();
        let out = open_with(&h.www_key, &tampered);
        assert!(!out.status.success(), "byte {at} flipped, yet it opened");
        assert!(out.stdout.is_empty());
        assert_names(&text(&out.stderr), &["cannot open", WWW]);
    }
}

// ---------------------------------------------------------------------------------------------
// How a refusal is said
// ---------------------------------------------------------------------------------------------

/// `tp connect` names the reason for a refusal once. Here: a name no trust anchor covers (an
/// island anchor for example.com., asked for www.example.org.; a hostile server stands in for
/// DNS and says NXDOMAIN).
#[test]
fn a_refusal_names_its_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let island = Zone::root("example.com.", &at(241, 0));
    let anchor = dir.path().join("island.anchor");
    std::fs::write(
        &anchor,
        format!("example.com. 86400 IN TPKEY {}\n", island.record),
    )
    .unwrap();
    let dns_ip = at(241, 1);
    let dns = SocketAddr::new(dns_ip.parse().unwrap(), free_port(&dns_ip));
    let _dns = Hostile::start(dns);
    let args = vec![
        "--anchors".to_string(),
        anchor.display().to_string(),
        "--dns".to_string(),
        dns.to_string(),
    ];
    let e = refused(&tp_connect(&args, "www.example.org.:4433", "x"));
    let reason = "www.example.org.: no trust anchor covers this name";
    assert_eq!(e.matches(reason).count(), 1, "{e}");
}
