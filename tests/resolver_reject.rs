//! The key resolver rejects every bad link, each with its reason.
//!
//! The key servers here are hostile: scripted UDP servers in this process (hickory's `Message`
//! codec, no hand-made DNS) that answer each name with records built in-process by the
//! twinpeaks library, good or forged. The resolver runs through the library (to assert the
//! exact `ResolveError` and `Check`), through the real `tp resolve`, and as the real `tprd`
//! daemon queried by dig and kdig. The DNS tests add the real tp-dnsd, and one replaces the
//! hostile servers by a real tpkd hierarchy.
//!
//! Loopback addresses 127.0.0.100–127.0.0.140 are this file's; each test has its own.

mod common;

use std::collections::HashMap;
use std::fmt::Debug;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    KeyServer, Proc, bin, dig, free_port, ok, rdata_hex, require_tool, run, tp, wait_dns,
};
use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use twinpeaks::clpkc::{EntityKey, Identity, KeyRequest, Kgc, SecretValue};
use twinpeaks::record::{KeyRecord, KeyServerInfo};
use twinpeaks::resolver::blocking::BlockingResolver;
use twinpeaks::resolver::{Check, ResolveError, ResolverConfig, anchors};
use twinpeaks::time;

const WWW: &str = "www.example.com.";
const WWW_IP: &str = "192.0.2.10";

// ---------------------------------------------------------------------------------------------
// Key material, made in-process
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
    name: String,
    addr: SocketAddr,
    kgc: Kgc,
    own: EntityKey,
    record: KeyRecord,
}

fn new_kgc(name: &str) -> Kgc {
    with_random(|b| Kgc::from_secret_bytes(name, b))
}

impl Zone {
    /// A root: its own key issued by its own KGC, its record self-signed.
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
            name: name.into(),
            addr,
            kgc,
            own,
            record,
        }
    }

    /// A child key server at `ip` (a fresh port), its KS record issued and signed by `self`.
    fn child(&self, name: &str, ip: &str) -> Zone {
        let addr = SocketAddr::new(ip.parse().unwrap(), free_port(ip));
        self.child_at(name, addr, window())
    }

    fn child_at(&self, name: &str, addr: SocketAddr, window: (u32, u32)) -> Zone {
        let kgc = new_kgc(name);
        let info = KeyServerInfo {
            port: addr.port(),
            p_pub: kgc.params().p_pub,
        };
        let (rec, own) = issue_unsigned(&self.kgc, name, addr.ip(), Some(info), window);
        Zone {
            name: name.into(),
            addr,
            kgc,
            own,
            record: signed(rec, name, &self.own),
        }
    }

    /// An entity record issued and signed by this key server, with the entity's key.
    fn entity(&self, owner: &str, ip: &str, window: (u32, u32)) -> (KeyRecord, EntityKey) {
        let (rec, key) = issue_unsigned(&self.kgc, owner, ip.parse().unwrap(), None, window);
        (signed(rec, owner, &self.own), key)
    }

    /// `name@addr`, as the resolver names a key server.
    fn label(&self) -> String {
        format!("{}@{}", self.name, self.addr)
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

/// The record's wire form with one byte of its signature (the last 64 bytes) flipped.
fn flipped(rec: &KeyRecord, sig_byte: usize) -> Vec<u8> {
    let mut wire = rec.to_wire().unwrap();
    let at = wire.len() - 64 + sig_byte;
    wire[at] ^= 0x01;
    wire
}

// ---------------------------------------------------------------------------------------------
// A hostile key server: answers each name as scripted
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
enum Reply {
    /// Authoritative answer with these records.
    Answer(Vec<Record>),
    /// Referral: these records in AUTHORITY, AA clear.
    Referral(Vec<Record>),
    /// No answer at all.
    Silent,
}

struct Hostile {
    script: Arc<Mutex<HashMap<String, Reply>>>,
    queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn respond(req: &Message, reply: &Reply) -> Option<Message> {
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
        Reply::Silent => return None,
    }
    Some(m)
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
                    None => respond(&req, &Reply::Answer(Vec::new())).map(|mut m| {
                        m.metadata.response_code = ResponseCode::NXDomain;
                        m
                    }),
                };
                if let Some(m) = msg {
                    let _ = sock.send_to(&m.to_vec().unwrap(), peer);
                }
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

/// The hierarchy `.` → `com.` → `example.com.` → `www.example.com.` (at 192.0.2.10), each key
/// server a hostile one at 127.0.0.{first}, {first+1}, {first+2}; honest until told otherwise.
struct Net {
    dir: tempfile::TempDir,
    root: Zone,
    com: Zone,
    example: Zone,
    www: KeyRecord,
    www_key: EntityKey,
    root_srv: Hostile,
    com_srv: Hostile,
    ex_srv: Hostile,
    anchors: PathBuf,
}

impl Net {
    fn new(first: u8) -> Net {
        let ip = |i: u8| format!("127.0.0.{}", first + i);
        let root = Zone::root(".", &ip(0));
        let com = root.child("com.", &ip(1));
        let example = com.child("example.com.", &ip(2));
        let (www, www_key) = example.entity(WWW, WWW_IP, window());
        let dir = tempfile::tempdir().unwrap();
        let anchors = dir.path().join("root.anchor");
        std::fs::write(
            &anchors,
            format!(
                "; trust anchor of the hostile root\n. 86400 IN TPKEY {}\n",
                root.record
            ),
        )
        .unwrap();
        let net = Net {
            root_srv: Hostile::start(root.addr),
            com_srv: Hostile::start(com.addr),
            ex_srv: Hostile::start(example.addr),
            dir,
            root,
            com,
            example,
            www,
            www_key,
            anchors,
        };
        net.honest();
        net
    }

    /// Every server honest again.
    fn honest(&self) {
        self.root_srv
            .set("com.", Reply::Referral(vec![rr("com.", &self.com.record)]));
        self.com_srv.set(
            "example.com.",
            Reply::Referral(vec![rr("example.com.", &self.example.record)]),
        );
        self.ex_srv
            .set(WWW, Reply::Answer(vec![rr(WWW, &self.www)]));
    }

    fn config(&self) -> ResolverConfig {
        let a = anchors::read(&self.anchors, time::now()).expect("anchor file");
        let mut cfg = ResolverConfig::new(a, Vec::new());
        cfg.query_timeout = Duration::from_millis(1000);
        cfg.resolution_timeout = Duration::from_secs(3);
        cfg
    }

    /// A fresh resolver (empty caches) from the anchor file.
    fn resolver(&self) -> BlockingResolver {
        BlockingResolver::new(self.config()).unwrap()
    }
}

/// The error must be a `Verify` failure of `check`, from `server` (a `name@addr` label), for
/// `owner`, and its message must say all three. Returns the detail.
#[track_caller]
fn assert_rejected<T: Debug>(
    r: Result<T, ResolveError>,
    check: Check,
    server: &str,
    owner: &str,
) -> String {
    let e = match r {
        Err(e) => e,
        Ok(v) => panic!("expected a {check} failure of {owner} from {server}, got {v:?}"),
    };
    let text = e.to_string();
    match e {
        ResolveError::Verify {
            server: s,
            owner: o,
            check: c,
            detail,
        } => {
            assert_eq!(c, check, "{text}");
            assert!(
                s.starts_with(server),
                "server {s:?}, expected {server}: {text}"
            );
            assert_eq!(o, owner, "{text}");
            assert!(
                text.contains(server)
                    && text.contains(owner)
                    && text.contains(&format!("{check} check failed")),
                "the message must name the server, the owner and the check: {text}"
            );
            detail
        }
        other => panic!("expected a {check} failure of {owner} from {server}, got {other:?}"),
    }
}

/// `tp resolve --anchors FILE NAME ARGS…` must fail; returns its stderr.
fn tp_resolve_fails(anchors: &Path, name: &str, args: &[&str]) -> String {
    let out = run(tp()
        .arg("resolve")
        .arg("--anchors")
        .arg(anchors)
        .arg(name)
        .args(args));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "tp resolve {name} should have failed:\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[track_caller]
fn assert_names(stderr: &str, parts: &[&str]) {
    for p in parts {
        assert!(stderr.contains(p), "stderr lacks {p:?}:\n{stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// The control: with every server honest, the walk verifies and returns www's key.
fn assert_honest(net: &Net) {
    let (set, report) = net.resolver().keys(WWW);
    let set = set.expect("the honest hierarchy resolves");
    assert_eq!(set.keys.len(), 1);
    assert_eq!(set.keys[0].q, *net.www_key.public());
    assert_eq!(set.keys[0].record.ip.to_string(), WWW_IP);
    let chain: Vec<&str> = set.chain.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(chain, [".", "com.", "example.com."]);
    assert_eq!(report.queries, 3, "one query per label");
}

#[test]
fn a_flipped_signature_byte_fails_the_signature_check() {
    let net = Net::new(100);
    assert_honest(&net);
    // The real tp reads the same anchor file and walks the same servers.
    let out = ok(tp()
        .arg("resolve")
        .arg("--anchors")
        .arg(&net.anchors)
        .arg(WWW));
    assert!(
        out.contains(WWW_IP) && out.contains("key server example.com."),
        "{out}"
    );
    // An entity record, first and last byte of its signature.
    for byte in [0, 63] {
        net.ex_srv.set(
            WWW,
            Reply::Answer(vec![rr_wire(WWW, flipped(&net.www, byte))]),
        );
        let detail = assert_rejected(
            net.resolver().keys(WWW).0,
            Check::Signature,
            &net.example.label(),
            WWW,
        );
        assert!(detail.contains("does not verify"), "{detail}");
    }
    // The real tp says the same.
    let stderr = tp_resolve_fails(&net.anchors, WWW, &[]);
    assert_names(
        &stderr,
        &[&net.example.label(), WWW, "signature check failed"],
    );
    net.honest();
    // A key-server record in a referral (com. vouching for example.com.).
    net.com_srv.set(
        "example.com.",
        Reply::Referral(vec![rr_wire(
            "example.com.",
            flipped(&net.example.record, 10),
        )]),
    );
    assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Signature,
        &net.com.label(),
        "example.com.",
    );
    let stderr = tp_resolve_fails(&net.anchors, WWW, &[]);
    assert_names(
        &stderr,
        &[&net.com.label(), "example.com.", "signature check failed"],
    );
}

#[test]
fn a_record_signed_by_the_wrong_server_or_issued_under_other_params_is_refused() {
    let net = Net::new(103);
    let ip: IpAddr = WWW_IP.parse().unwrap();
    // Issued under example.com.'s params, but signed by the root's key, then by com.'s.
    for signer in [&net.root.own, &net.com.own] {
        let (rec, _) = issue_unsigned(&net.example.kgc, WWW, ip, None, window());
        let rec = signed(rec, WWW, signer);
        net.ex_srv.set(WWW, Reply::Answer(vec![rr(WWW, &rec)]));
        assert_rejected(
            net.resolver().keys(WWW).0,
            Check::Signature,
            &net.example.label(),
            WWW,
        );
    }
    // Issued by another KGC that also calls itself example.com., signed with example.com.'s
    // own key: the issuer check stops it (before the signature is even looked at).
    let impostor = new_kgc("example.com.");
    let (rec, _) = issue_unsigned(&impostor, WWW, ip, None, window());
    let rec = signed(rec, WWW, &net.example.own);
    net.ex_srv.set(WWW, Reply::Answer(vec![rr(WWW, &rec)]));
    let detail = assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Issuer,
        &net.example.label(),
        WWW,
    );
    assert!(detail.contains("issuer digest"), "{detail}");
    let stderr = tp_resolve_fails(&net.anchors, WWW, &[]);
    assert_names(&stderr, &[&net.example.label(), WWW, "issuer check failed"]);
    net.honest();

    // The same for a referral: example.com.'s KS record signed by the root instead of com.…
    let info = net.example.record.key_server.clone().map(|b| *b);
    let (rec, _) = issue_unsigned(
        &net.com.kgc,
        "example.com.",
        net.example.addr.ip(),
        info.clone(),
        window(),
    );
    let rec = signed(rec, "example.com.", &net.root.own);
    net.com_srv.set(
        "example.com.",
        Reply::Referral(vec![rr("example.com.", &rec)]),
    );
    assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Signature,
        &net.com.label(),
        "example.com.",
    );
    // …and issued under the root's params, signed by com.
    let (rec, _) = issue_unsigned(
        &net.root.kgc,
        "example.com.",
        net.example.addr.ip(),
        info,
        window(),
    );
    let rec = signed(rec, "example.com.", &net.com.own);
    net.com_srv.set(
        "example.com.",
        Reply::Referral(vec![rr("example.com.", &rec)]),
    );
    assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Issuer,
        &net.com.label(),
        "example.com.",
    );
}

#[test]
fn a_server_answering_or_referring_outside_its_zone_fails_the_scope_check() {
    let net = Net::new(106);
    let com_ip = net.com.addr.ip().to_string();
    // Every forged record is issued and signed by com. itself: only the scope is wrong.
    let outside = |owner: &str| rr(owner, &net.com.child(owner, &com_ip).record);

    // Asked for example.com., com. answers for example.org.
    net.com_srv
        .set("example.com.", Reply::Answer(vec![outside("example.org.")]));
    let detail = assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Scope,
        &net.com.label(),
        "example.org.",
    );
    assert!(detail.contains("example.com."), "{detail}");

    // Asked for example.com., com. refers to org. (outside its zone)…
    net.com_srv
        .set("example.com.", Reply::Referral(vec![outside("org.")]));
    assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Scope,
        &net.com.label(),
        "org.",
    );
    let stderr = tp_resolve_fails(&net.anchors, WWW, &[]);
    assert_names(&stderr, &[&net.com.label(), "org.", "scope check failed"]);

    // …or to a sibling (inside its zone, but not on the way to the name).
    net.com_srv
        .set("example.com.", Reply::Referral(vec![outside("other.com.")]));
    assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Scope,
        &net.com.label(),
        "other.com.",
    );

    // Asked for example.com., com. refers past it, to www.example.com.
    net.com_srv
        .set("example.com.", Reply::Referral(vec![outside(WWW)]));
    assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Scope,
        &net.com.label(),
        WWW,
    );
    net.honest();

    // The entity's own server answering for a name of another zone.
    let (rec, _) = net.example.entity("www.example.org.", WWW_IP, window());
    net.ex_srv
        .set(WWW, Reply::Answer(vec![rr("www.example.org.", &rec)]));
    assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Scope,
        &net.example.label(),
        "www.example.org.",
    );
}

#[test]
fn expired_records_fail_the_validity_check_and_the_skew_allowance_is_honoured() {
    let net = Net::new(109);
    let t = now();
    let serve_www = |window: (u32, u32)| {
        let (rec, key) = net.example.entity(WWW, WWW_IP, window);
        net.ex_srv.set(WWW, Reply::Answer(vec![rr(WWW, &rec)]));
        key
    };

    // Expired an hour ago: refused, naming the window.
    serve_www((t - 10 * 86_400, t - 3600));
    let detail = assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Validity,
        &net.example.label(),
        WWW,
    );
    assert!(detail.contains("validity window"), "{detail}");
    let stderr = tp_resolve_fails(&net.anchors, WWW, &[]);
    assert_names(
        &stderr,
        &[&net.example.label(), WWW, "validity check failed"],
    );

    // Not valid for another hour: refused.
    serve_www((t + 3600, t + 10 * 86_400));
    assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Validity,
        &net.example.label(),
        WWW,
    );

    // Expired a minute ago, within the default 300 s allowance: accepted…
    let cfg = net.config();
    assert_eq!(cfg.clock_skew, 300, "the documented default");
    let key = serve_www((t - 10 * 86_400, t - 60));
    let set = net
        .resolver()
        .keys(WWW)
        .0
        .expect("within the skew allowance");
    assert_eq!(set.keys[0].q, *key.public());
    // …and refused by a resolver that allows no skew.
    let mut strict = net.config();
    strict.clock_skew = 0;
    assert_rejected(
        BlockingResolver::new(strict).unwrap().keys(WWW).0,
        Check::Validity,
        &net.example.label(),
        WWW,
    );
    // Valid from a minute from now: accepted too.
    let key = serve_www((t + 60, t + 10 * 86_400));
    let set = net
        .resolver()
        .keys(WWW)
        .0
        .expect("within the skew allowance");
    assert_eq!(set.keys[0].q, *key.public());
    net.honest();

    // An expired link higher up: the root's record of com.
    let stale = net
        .root
        .child_at("com.", net.com.addr, (t - 10 * 86_400, t - 3600));
    net.root_srv
        .set("com.", Reply::Referral(vec![rr("com.", &stale.record)]));
    assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Validity,
        &net.root.label(),
        "com.",
    );
}

#[test]
fn a_dns_address_without_a_key_is_refused_while_keys_without_dns_still_resolve() {
    let net = Net::new(112);
    // mail has a key for the address DNS gives; www's key is for 192.0.2.10, DNS says .66.
    let (mail, mail_key) = net
        .example
        .entity("mail.example.com.", "192.0.2.11", window());
    net.ex_srv.set(
        "mail.example.com.",
        Reply::Answer(vec![rr("mail.example.com.", &mail)]),
    );
    let dns_ip = "127.0.0.115";
    let dns_port = free_port(dns_ip);
    let zone = net.dir.path().join("example.com.zone");
    std::fs::write(
        &zone,
        format!(
            "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1.example.com. hostmaster.example.com. ( 1 7200 3600 1209600 300 )\n  IN NS ns1.example.com.\nns1 IN A {dns_ip}\nwww IN A 192.0.2.66\nmail IN A 192.0.2.11\n"
        ),
    )
    .unwrap();
    let mut dnsd = Proc::spawn(
        "tp-dnsd",
        Command::new(bin("tp-dnsd"))
            .arg("--listen")
            .arg(format!("{dns_ip}:{dns_port}"))
            .arg(format!("--zone=example.com.={}", zone.display())),
    );
    wait_dns(dns_ip, dns_port, "example.com.", &mut dnsd);

    let mut cfg = net.config();
    cfg.dns = vec![SocketAddr::new(dns_ip.parse().unwrap(), dns_port)];
    let r = BlockingResolver::new(cfg).unwrap();
    match r.resolve(WWW).0 {
        Err(ResolveError::NoKeyForIp {
            name,
            ip,
            published,
            from_dns,
        }) => {
            assert!(from_dns);
            assert_eq!(name, WWW);
            assert_eq!(ip.to_string(), "192.0.2.66");
            assert_eq!(published, WWW_IP);
        }
        other => panic!("expected NoKeyForIp, got {other:?}"),
    }
    // Without DNS the key is there, verified.
    let set = r.keys(WWW).0.expect("keys without DNS");
    assert_eq!(set.keys.len(), 1);
    assert_eq!(set.keys[0].record.ip.to_string(), WWW_IP);
    assert_eq!(set.keys[0].q, *net.www_key.public());
    // And where DNS agrees with the key, the pair is given.
    let res = r.resolve("mail.example.com.").0.expect("mail resolves");
    assert_eq!(res.pairs.len(), 1);
    assert_eq!(res.pairs[0].0.to_string(), "192.0.2.11");
    assert_eq!(res.pairs[0].1.q, *mail_key.public());
}

#[test]
fn referral_loops_fail_the_scope_check_and_the_walk_ends() {
    let net = Net::new(116);
    let bound = Duration::from_secs(2);
    let check = |check: Check, server: &str, owner: &str| {
        let mut cfg = net.config();
        cfg.resolution_timeout = bound;
        let r = BlockingResolver::new(cfg).unwrap();
        let start = Instant::now();
        let (res, report) = r.keys(WWW);
        assert!(start.elapsed() < 3 * bound, "took {:?}", start.elapsed());
        assert!(report.queries <= 3, "{} queries", report.queries);
        assert_rejected(res, check, server, owner);
    };
    // com. refers the query for example.com. back to the root…
    net.com_srv.set(
        "example.com.",
        Reply::Referral(vec![rr(".", &net.root.record)]),
    );
    check(Check::Scope, &net.com.label(), ".");
    // …or to itself.
    net.com_srv.set(
        "example.com.",
        Reply::Referral(vec![rr("com.", &net.com.record)]),
    );
    check(Check::Scope, &net.com.label(), "com.");
    // The root refers the query for com. to itself.
    net.com_srv.set(
        "example.com.",
        Reply::Referral(vec![rr("example.com.", &net.example.record)]),
    );
    net.root_srv
        .set("com.", Reply::Referral(vec![rr(".", &net.root.record)]));
    check(Check::Scope, &net.root.label(), ".");
    net.honest();
    // A loop through addresses: com. vouches for example.com. at com.'s own address, and
    // answers the next question with the same referral again.
    let looped = net.com.child_at("example.com.", net.com.addr, window());
    let again = Reply::Referral(vec![rr("example.com.", &looped.record)]);
    net.com_srv.set("example.com.", again.clone());
    net.com_srv.set(WWW, again);
    check(Check::Scope, &looped.label(), "example.com.");
}

#[test]
fn a_server_that_never_answers_fails_within_the_bound() {
    let net = Net::new(119);
    let timeouts = |cfg: &mut ResolverConfig| {
        cfg.query_timeout = Duration::from_millis(300);
        cfg.attempts = 1;
        cfg.resolution_timeout = Duration::from_secs(1);
    };
    let resolve = |cfg: ResolverConfig| {
        let r = BlockingResolver::new(cfg).unwrap();
        let start = Instant::now();
        let res = r.keys(WWW).0;
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "took {took:?}");
        res
    };

    // The root is silent.
    net.root_srv.set("com.", Reply::Silent);
    let mut cfg = net.config();
    timeouts(&mut cfg);
    match resolve(cfg) {
        Err(ResolveError::Unreachable { server, name, .. }) => {
            assert_eq!(server, net.root.label());
            assert_eq!(name, "com.");
        }
        Err(ResolveError::Timeout { name, .. }) => assert_eq!(name, WWW),
        other => panic!("expected Unreachable or Timeout, got {other:?}"),
    }
    net.honest();

    // The last server is silent.
    net.ex_srv.set(WWW, Reply::Silent);
    let mut cfg = net.config();
    timeouts(&mut cfg);
    match resolve(cfg) {
        Err(ResolveError::Unreachable {
            server,
            name,
            detail,
        }) => {
            assert_eq!(server, net.example.label());
            assert_eq!(name, WWW);
            assert!(detail.contains(&net.example.addr.to_string()), "{detail}");
        }
        Err(ResolveError::Timeout { name, .. }) => assert_eq!(name, WWW),
        other => panic!("expected Unreachable or Timeout, got {other:?}"),
    }

    // It and two silent secondaries, each given longer than the whole resolution: the
    // resolution bound ends it.
    net.root_srv.set(WWW, Reply::Silent);
    net.com_srv.set(WWW, Reply::Silent);
    let mut cfg = net.config();
    timeouts(&mut cfg);
    cfg.query_timeout = Duration::from_millis(800);
    cfg.attempts = 2;
    cfg.secondaries
        .insert("example.com.".into(), vec![net.root.addr, net.com.addr]);
    match resolve(cfg) {
        Err(ResolveError::Timeout { name, ms }) => {
            assert_eq!(name, WWW);
            assert_eq!(ms, 1000);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[test]
fn a_forged_answer_is_not_cached_and_the_honest_one_follows() {
    let net = Net::new(122);
    let r = net.resolver();

    // A forged referral: refused, twice (the failure is not cached: com. is asked again).
    net.com_srv.set(
        "example.com.",
        Reply::Referral(vec![rr_wire(
            "example.com.",
            flipped(&net.example.record, 5),
        )]),
    );
    for _ in 0..2 {
        let before = net.com_srv.queries();
        assert_rejected(
            r.keys(WWW).0,
            Check::Signature,
            &net.com.label(),
            "example.com.",
        );
        assert!(net.com_srv.queries() > before, "com. was not asked again");
    }
    // com. turns honest: the same resolver now gets the honest key.
    net.honest();
    let (set, report) = r.keys(WWW);
    let set = set.expect("honest now");
    assert_eq!(set.keys[0].q, *net.www_key.public());
    assert!(report.queries >= 1, "{report:?}");

    // Forging again does not reach a cached answer…
    net.ex_srv
        .set(WWW, Reply::Answer(vec![rr_wire(WWW, flipped(&net.www, 7))]));
    let (set, report) = r.keys(WWW);
    assert_eq!(set.expect("cached").keys[0].q, *net.www_key.public());
    assert_eq!(report.queries, 0, "answered from the cache");
    // …and after invalidation the forgery is refused, not cached, and the honest key follows.
    r.invalidate(WWW);
    assert_rejected(r.keys(WWW).0, Check::Signature, &net.example.label(), WWW);
    net.honest();
    let set = r.keys(WWW).0.expect("honest again");
    assert_eq!(set.keys[0].q, *net.www_key.public());
}

#[test]
fn undecodable_or_misshapen_replies_fail_the_decode_or_shape_check() {
    let net = Net::new(135);
    assert_honest(&net);
    let com_ip = net.com.addr.ip().to_string();
    // RDATA that does not decode: truncated, and an unknown version.
    let mut v2 = net.www.to_wire().unwrap();
    v2[0] = 2;
    for wire in [net.www.to_wire().unwrap()[..40].to_vec(), v2] {
        net.ex_srv.set(WWW, Reply::Answer(vec![rr_wire(WWW, wire)]));
        assert_rejected(
            net.resolver().keys(WWW).0,
            Check::Decode,
            &net.example.label(),
            WWW,
        );
    }
    net.honest();
    // The same in a referral.
    let mut cut = net.example.record.to_wire().unwrap();
    cut.truncate(cut.len() - 1);
    net.com_srv.set(
        "example.com.",
        Reply::Referral(vec![rr_wire("example.com.", cut)]),
    );
    assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Decode,
        &net.com.label(),
        "example.com.",
    );
    // A referral carrying an entity record (signed by com., so only the shape is wrong).
    let (entity, _) = net.com.entity("example.com.", &com_ip, window());
    net.com_srv.set(
        "example.com.",
        Reply::Referral(vec![rr("example.com.", &entity)]),
    );
    assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Shape,
        &net.com.label(),
        "example.com.",
    );
    // Asked for example.com., com. answers for another name of its zone.
    let (deeper, _) = net.com.entity(WWW, WWW_IP, window());
    net.com_srv
        .set("example.com.", Reply::Answer(vec![rr(WWW, &deeper)]));
    assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Shape,
        &net.com.label(),
        WWW,
    );
    // Two KS records of example.com. that disagree on its params.
    let other = net.com.child("example.com.", &com_ip);
    net.com_srv.set(
        "example.com.",
        Reply::Referral(vec![
            rr("example.com.", &net.example.record),
            rr("example.com.", &other.record),
        ]),
    );
    let detail = assert_rejected(
        net.resolver().keys(WWW).0,
        Check::Shape,
        &net.com.label(),
        "example.com.",
    );
    assert!(detail.contains("params"), "{detail}");
}

#[test]
fn a_negative_answer_without_an_soa_is_not_cached() {
    // An island: example.com.'s key server is the anchor, alone.
    let island = Zone::root("example.com.", "127.0.0.138");
    let srv = Hostile::start(island.addr);
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("island.anchor");
    std::fs::write(
        &anchor,
        format!("example.com. 86400 IN TPKEY {}\n", island.record),
    )
    .unwrap();
    let cfg = ResolverConfig::new(anchors::read(&anchor, time::now()).unwrap(), Vec::new());
    let r = BlockingResolver::new(cfg).unwrap();
    // Unscripted: NXDOMAIN, no SOA (so, RFC 2308 section 5, not to be cached).
    match r.keys(WWW).0 {
        Err(ResolveError::NotFound { kind, server, .. }) => {
            assert_eq!(kind, "NXDOMAIN");
            assert_eq!(server, island.label());
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let (www, key) = island.entity(WWW, WWW_IP, window());
    srv.set(WWW, Reply::Answer(vec![rr(WWW, &www)]));
    let before = srv.queries();
    let (set, _) = r.keys(WWW);
    assert!(
        srv.queries() > before,
        "the key server was not asked again: the SOA-less NXDOMAIN was cached ({set:?})"
    );
    assert_eq!(
        set.expect("the key, now published").keys[0].q,
        *key.public()
    );
}

/// A root key server named `.` made with the real tp (KeyServer::new writes `ks.{name}`,
/// which is no name for the root, so its zone file is written again here).
fn real_root(dir: &Path, ip: &str) -> KeyServer {
    let ks = KeyServer::new(dir, ".", ip, "", "");
    std::fs::write(
        &ks.zone_file,
        format!("$ORIGIN .\n$TTL 3600\n@ IN SOA ks.root-servers.test. hostmaster.test. 1 7200 3600 1209600 300\n@ IN NS ks.root-servers.test.\nks.root-servers.test. IN A {ip}\n"),
    )
    .unwrap();
    ks
}

#[test]
fn dns_poisoning_is_caught_with_the_real_tpkd_hierarchy_and_tp_dnsd() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut root = real_root(&d.join("root"), "127.0.0.125");
    let mut com = KeyServer::child(&d.join("com"), &root, "com.", "127.0.0.126");
    let mut example = KeyServer::child(&d.join("example"), &com, "example.com.", "127.0.0.127");
    example.issue_to_file(WWW, "127.0.0.129");
    root.start();
    com.start();
    example.start();
    let anchor = root.state.join("anchor");

    // The chain is sound: keys only, the key of 127.0.0.129.
    let out = ok(tp()
        .arg("resolve")
        .arg("--anchors")
        .arg(&anchor)
        .args(["--keys-only", WWW]));
    assert!(out.contains("127.0.0.129"), "{out}");

    // A DNS that points www elsewhere.
    let dns_ip = "127.0.0.128";
    let dns_port = free_port(dns_ip);
    let zone = d.join("example.com.zone");
    std::fs::write(
        &zone,
        format!("$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster ( 1 7200 3600 1209600 300 )\n  IN NS ns1\nns1 IN A {dns_ip}\nwww IN A 127.0.0.130\n"),
    )
    .unwrap();
    let mut dnsd = Proc::spawn(
        "tp-dnsd",
        Command::new(bin("tp-dnsd"))
            .arg("--listen")
            .arg(format!("{dns_ip}:{dns_port}"))
            .arg(format!("--zone=example.com.={}", zone.display())),
    );
    wait_dns(dns_ip, dns_port, "example.com.", &mut dnsd);
    let dns = format!("{dns_ip}:{dns_port}");
    let stderr = tp_resolve_fails(&anchor, WWW, &["--dns", &dns]);
    assert_names(
        &stderr,
        &[WWW, "127.0.0.130", "no verified key", "127.0.0.129"],
    );
}

/// `dig` at the daemon, one try: stdout.
fn dig_once(ip: &str, port: u16, name: &str) -> String {
    String::from_utf8_lossy(
        &run(Command::new(require_tool("dig"))
            .args(["+time=1", "+tries=1", "-p", &port.to_string()])
            .arg(format!("@{ip}"))
            .args([name, "TYPE65300"]))
        .stdout,
    )
    .into_owned()
}

#[test]
fn the_daemon_answers_servfail_with_the_reason_and_survives_bad_packets() {
    let net = Net::new(131);
    const GOOD: &str = "good.example.com.";
    let (good, _) = net.example.entity(GOOD, "192.0.2.20", window());
    net.ex_srv.set(GOOD, Reply::Answer(vec![rr(GOOD, &good)]));
    net.ex_srv.set(
        WWW,
        Reply::Answer(vec![rr_wire(WWW, flipped(&net.www, 20))]),
    );

    let ip = "127.0.0.134";
    let port = free_port(ip);
    let config = net.dir.path().join("tprd.toml");
    std::fs::write(
        &config,
        format!(
            "listen = [\"{ip}:{port}\"]\nanchors = [\"root.anchor\"]\nquery_timeout_ms = 1000\nresolution_timeout_ms = 3000\n"
        ),
    )
    .unwrap();
    let mut tprd = Proc::spawn(
        "tprd",
        Command::new(bin("tprd")).arg("--config").arg(&config),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if dig_once(ip, port, GOOD).contains("status: NOERROR") {
            break;
        }
        if let Ok(Some(s)) = tprd.child.try_wait() {
            panic!("tprd exited early: {s}");
        }
        assert!(Instant::now() < deadline, "tprd did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = port.to_string();
    let at = format!("@{ip}");
    let label = net.example.label();

    // dig: SERVFAIL, and the EDE says what failed.
    let out = dig(&["-p", &p, &at, "www.example.com", "TYPE65300"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    let ede = out
        .lines()
        .find(|l| l.contains("EDE:"))
        .unwrap_or_else(|| panic!("no EDE in:\n{out}"));
    assert!(ede.contains("EDE: 6 (DNSSEC Bogus)"), "{ede}");
    for part in [WWW, label.as_str(), "signature check failed"] {
        assert!(ede.contains(part), "EDE lacks {part:?}: {ede}");
    }
    assert!(
        rdata_hex(&out).is_empty(),
        "no record with a SERVFAIL:\n{out}"
    );

    // kdig: the same.
    let out = ok(Command::new(require_tool("kdig"))
        .args(["+edns", "+time=2", "+retry=1", "-p", &p, &at])
        .args(["www.example.com", "TYPE65300"]));
    assert!(out.contains("SERVFAIL"), "{out}");
    let ede = out
        .lines()
        .find(|l| l.contains("EDE:"))
        .unwrap_or_else(|| panic!("no EDE in:\n{out}"));
    assert!(ede.contains("EDE: 6 (DNSSEC Bogus)"), "{ede}");
    for part in [WWW, label.as_str(), "signature"] {
        assert!(ede.contains(part), "EDE lacks {part:?}: {ede}");
    }

    // Bad packets.
    let addr = format!("{ip}:{port}");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut junk = random32().to_vec();
    junk.extend_from_slice(&random32());
    sock.send_to(&junk, &addr).unwrap();
    sock.send_to(&[0x12, 0x34, 0x01, 0x00, 0x00], &addr)
        .unwrap();
    sock.send_to(&[], &addr).unwrap();
    // A query with QDCOUNT=2: FORMERR if anything.
    let mut two = Message::query();
    two.metadata.id = 0x4242;
    two.add_query(Query::query(
        Name::from_ascii(WWW).unwrap(),
        RecordType::Unknown(65300),
    ));
    two.add_query(Query::query(
        Name::from_ascii(GOOD).unwrap(),
        RecordType::Unknown(65300),
    ));
    let bytes = two.to_vec().unwrap();
    assert_eq!(&bytes[4..6], &[0, 2], "QDCOUNT=2");
    sock.send_to(&bytes, &addr).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if n >= 12 && buf[..2] == [0x42, 0x42] {
            assert_eq!(buf[3] & 0x0f, 1, "FORMERR expected for QDCOUNT=2");
            assert_eq!(&buf[6..8], &[0, 0], "no answer for QDCOUNT=2");
            break;
        }
    }
    // Over TCP: garbage after a length prefix, and a prefix longer than what follows.
    let mut t = TcpStream::connect(&addr).unwrap();
    t.write_all(&[0x00, 0x20]).unwrap();
    t.write_all(&[0xee; 32]).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut resp = Vec::new();
    let _ = t.read_to_end(&mut resp);
    let mut t = TcpStream::connect(&addr).unwrap();
    t.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
    drop(t);

    // Still serving: the good name, verified (AD), the record as its server signed it.
    let out = dig(&["-p", &p, &at, "good.example.com", "TYPE65300"]);
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains(" ad"), "AD expected:\n{out}");
    let recs = rdata_hex(&out);
    assert_eq!(recs.len(), 1, "{out}");
    assert_eq!(
        recs[0].1.to_lowercase(),
        hex::encode(good.to_wire().unwrap())
    );
    let out = dig(&["+tcp", "-p", &p, &at, "www.example.com", "TYPE65300"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    assert!(tprd.child.try_wait().unwrap().is_none(), "tprd died");
}
