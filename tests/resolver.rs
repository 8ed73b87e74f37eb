//! The key resolver and its key cache against the real key servers: what a warm resolution, a
//! sibling name, an invalidation and concurrent callers cost, counted by the servers
//! themselves (`tp ctl status`), and the tprd daemon asked by the real dig and kdig.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{KeyServer, Proc, bin, dig, free_port, ok, require_tool, run, tp, wait_dns};
use twinpeaks::resolver::blocking::BlockingResolver;
use twinpeaks::resolver::{CacheUse, ResolveError, ResolverConfig, anchors};
use twinpeaks::time;

/// Root, com. and example.com. key servers, www (one IP) and mail (two IPs), and a DNS server
/// with their addresses, all running.
struct Hierarchy {
    root: KeyServer,
    com: KeyServer,
    example: KeyServer,
    dns: String,
    _dns: Proc,
    dir: std::path::PathBuf,
}

impl Hierarchy {
    fn start(dir: &Path, base: u8) -> Hierarchy {
        let ip = |n: u8| format!("127.0.0.{}", base + n);
        let mut root = KeyServer::new(&dir.join("root"), ".", &ip(0), "", "");
        let mut com = KeyServer::child(&dir.join("com"), &root, "com.", &ip(1));
        let mut example = KeyServer::child(&dir.join("example"), &com, "example.com.", &ip(2));
        example.issue_to_file("www.example.com.", &ip(10));
        example.issue_to_file("mail.example.com.", &ip(11));
        example.issue_to_file("mail.example.com.", &ip(12));
        root.start();
        com.start();
        example.start();
        let zone = dir.join("example.com.zone");
        std::fs::write(
            &zone,
            format!(
                "$ORIGIN example.com.\n$TTL 3600\n@ IN SOA ns hostmaster 1 7200 3600 1209600 300\n@ IN NS ns\nns IN A {}\nwww IN A {}\nmail IN A {}\nmail IN A {}\n",
                ip(3),
                ip(10),
                ip(11),
                ip(12)
            ),
        )
        .unwrap();
        let port = free_port(&ip(3));
        let dns = format!("{}:{port}", ip(3));
        let mut p = Proc::spawn(
            "tp-dnsd",
            Command::new(bin("tp-dnsd"))
                .args(["--listen", &dns])
                .arg("--zone")
                .arg(format!("example.com.={}", zone.display())),
        );
        wait_dns(&ip(3), port, "example.com.", &mut p);
        Hierarchy {
            root,
            com,
            example,
            dns,
            _dns: p,
            dir: dir.to_path_buf(),
        }
    }

    fn anchor(&self) -> std::path::PathBuf {
        self.root.state.join("anchor")
    }

    fn counts(&self) -> [u64; 3] {
        [
            self.root.queries(),
            self.com.queries(),
            self.example.queries(),
        ]
    }

    fn resolver(&self) -> BlockingResolver {
        let a = anchors::read(&self.anchor(), time::now()).unwrap();
        BlockingResolver::new(ResolverConfig::new(a, vec![self.dns.parse().unwrap()])).unwrap()
    }
}

fn delta(before: [u64; 3], after: [u64; 3]) -> [u64; 3] {
    [
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
    ]
}

#[test]
fn warm_costs_no_packet_a_sibling_one_query_and_invalidate_one_walk() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hierarchy::start(dir.path(), 60);
    let r = h.resolver();

    let c0 = h.counts();
    let (res, report) = r.resolve("www.example.com.");
    let res = res.unwrap();
    assert_eq!(res.pairs.len(), 1);
    assert_eq!(res.pairs[0].0.to_string(), "127.0.0.70");
    assert_eq!(res.keys.chain.len(), 3);
    assert_eq!(report.cache, CacheUse::Miss);
    // Cold: one query to each key server, one label at a time.
    assert_eq!(delta(c0, h.counts()), [1, 1, 1]);
    assert_eq!(report.queries, 3);

    let c1 = h.counts();
    for _ in 0..10 {
        let (again, report) = r.resolve("www.example.com.");
        assert_eq!(report.cache, CacheUse::Hit);
        assert_eq!(report.queries, 0);
        assert!(Arc::ptr_eq(&again.unwrap(), &res));
    }
    assert_eq!(
        delta(c1, h.counts()),
        [0, 0, 0],
        "a warm resolution sent packets"
    );

    // A sibling under the cached example.com. link: one query, to example.com.'s server.
    let c2 = h.counts();
    let (mail, report) = r.resolve("mail.example.com.");
    let mail = mail.unwrap();
    let mut ips: Vec<String> = mail.pairs.iter().map(|(ip, _)| ip.to_string()).collect();
    ips.sort();
    assert_eq!(ips, ["127.0.0.71", "127.0.0.72"]);
    assert_eq!(report.queries, 1);
    assert_eq!(delta(c2, h.counts()), [0, 0, 1]);

    // invalidate: exactly one new walk, from the cached link down (one query).
    let c3 = h.counts();
    r.invalidate("www.example.com.");
    let (again, report) = r.resolve("www.example.com.");
    assert_eq!(again.unwrap().pairs, res.pairs);
    assert_eq!(report.cache, CacheUse::Miss);
    assert_eq!(delta(c3, h.counts()), [0, 0, 1]);
    let (_, report) = r.resolve("www.example.com.");
    assert_eq!(report.cache, CacheUse::Hit);

    // The key servers on the way are names too: their keys come from the cached links.
    let (ex, report) = r.keys("example.com.");
    let ex = ex.unwrap();
    assert!(ex.keys[0].record.key_server.is_some());
    assert_eq!(ex.chain.len(), 2);
    assert_eq!(report.queries, 0);
    let (com, report) = r.keys("com.");
    assert_eq!(com.unwrap().chain.len(), 1);
    assert_eq!(report.queries, 0);
    // A name below an entity: the walk asks for the entity, then the deeper name, and keeps
    // the entity's records on the way: the entity itself then costs nothing.
    r.invalidate("www.example.com.");
    let (below, report) = r.keys("x.www.example.com.");
    assert!(
        matches!(below, Err(ResolveError::NotFound { .. })),
        "{below:?}"
    );
    assert_eq!(report.queries, 2);
    let (w, report) = r.keys("www.example.com.");
    assert_eq!(w.unwrap().keys.len(), 1);
    assert_eq!(report.queries, 0);

    // Invalidating a key server's name drops its link: the next walk asks its parent again.
    let c4 = h.counts();
    r.invalidate("example.com.");
    r.invalidate("www.example.com.");
    let (_, report) = r.resolve("www.example.com.");
    assert_eq!(report.queries, 2);
    assert_eq!(delta(c4, h.counts()), [0, 1, 1]);
}

#[test]
fn negative_answers_are_cached_briefly_and_concurrent_callers_share_one_walk() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hierarchy::start(dir.path(), 80);
    let r = h.resolver();

    let c0 = h.counts();
    let (nx, _) = r.keys("nope.example.com.");
    assert!(
        matches!(
            nx,
            Err(ResolveError::NotFound {
                kind: "NXDOMAIN",
                ..
            })
        ),
        "{nx:?}"
    );
    let (nx2, report) = r.keys("nope.example.com.");
    assert!(matches!(nx2, Err(ResolveError::NotFound { .. })));
    assert_eq!(report.queries, 0, "the negative answer was not cached");
    // Below a name that does not exist: no query either (RFC 8020).
    let (below, report) = r.keys("deeper.nope.example.com.");
    assert!(
        matches!(below, Err(ResolveError::NotFound { .. })),
        "{below:?}"
    );
    assert_eq!(report.queries, 0);
    assert_eq!(delta(c0, h.counts()), [1, 1, 1]);

    // 32 callers at once on a cold name: one walk, one query per key server.
    let c1 = h.counts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let inner = r.inner().clone();
    inner.invalidate("www.example.com.");
    let walks_before = inner.stats.walks.load(std::sync::atomic::Ordering::Relaxed);
    let results = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let r = inner.clone();
            tasks.push(tokio::spawn(
                async move { r.keys("mail.example.com.").await.0 },
            ));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|s| s.keys.len() == 2))
    );
    let walks = inner.stats.walks.load(std::sync::atomic::Ordering::Relaxed) - walks_before;
    assert_eq!(
        walks, 1,
        "concurrent identical resolutions did not coalesce"
    );
    assert_eq!(delta(c1, h.counts())[2], 1);
}

#[test]
fn records_leave_the_cache_when_their_ttl_ends() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hierarchy::start(dir.path(), 200);
    // A member with a 2-second TTL, enrolled online.
    let prefix = h.dir.join("short");
    ok(tp()
        .args([
            "keygen",
            "--name",
            "short.example.com.",
            "--ip",
            "127.0.0.213",
        ])
        .arg("--issuer-params")
        .arg(h.example.params())
        .arg("--out")
        .arg(&prefix));
    let zone = std::fs::read_to_string(&h.example.zone_file).unwrap();
    let resp = h.dir.join("short.resp");
    ok(tp()
        .arg("issue")
        .arg("--state")
        .arg(&h.example.state)
        .arg("--request")
        .arg(format!("{}.req", prefix.display()))
        .arg("--zone-file")
        .arg(&h.example.zone_file)
        .arg("--response")
        .arg(&resp)
        .args(["--ttl", "2"]));
    assert_ne!(zone, std::fs::read_to_string(&h.example.zone_file).unwrap());
    ok(tp()
        .arg("ctl")
        .arg("--config")
        .arg(&h.example.config)
        .arg("reload"));
    let r = h.resolver();
    let (k, _) = r.keys("short.example.com.");
    assert_eq!(k.unwrap().keys[0].ttl, 2);
    let (_, report) = r.keys("short.example.com.");
    assert_eq!(report.cache, CacheUse::Hit);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let c = h.counts();
    let (_, report) = r.keys("short.example.com.");
    assert_eq!(report.cache, CacheUse::Miss);
    assert_eq!(delta(c, h.counts()), [0, 0, 1]);
}

fn start_tprd(dir: &Path, h: &Hierarchy, ip: &str) -> (Proc, u16) {
    let port = free_port(ip);
    let cfg = dir.join("tprd.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = [\"{ip}:{port}\"]\nanchors = [\"{}\"]\ndns = [\"{}\"]\n",
            h.anchor().display(),
            h.dns
        ),
    )
    .unwrap();
    let mut p = Proc::spawn("tprd", Command::new(bin("tprd")).arg("--config").arg(&cfg));
    // The daemon answers A from DNS once it is up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = run(Command::new(require_tool("dig"))
            .args(["+time=1", "+tries=1", "-p", &port.to_string()])
            .arg(format!("@{ip}"))
            .args(["www.example.com", "A"]));
        if String::from_utf8_lossy(&out.stdout).contains("status: NOERROR") {
            break;
        }
        if let Ok(Some(s)) = p.child.try_wait() {
            panic!("tprd exited: {s}");
        }
        assert!(std::time::Instant::now() < deadline, "tprd did not come up");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (p, port)
}

#[test]
fn the_daemon_answers_dig_and_kdig_with_verified_records_and_ad() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hierarchy::start(dir.path(), 220);
    let ip = "127.0.0.225";
    let (mut daemon, port) = start_tprd(dir.path(), &h, ip);
    let p = port.to_string();
    let at = format!("@{ip}");

    for args in [
        vec!["-p", &p, &at, "www.example.com", "TYPE65300"],
        vec!["+tcp", "-p", &p, &at, "www.example.com", "TYPE65300"],
    ] {
        let out = dig(&args);
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(
            out.lines()
                .any(|l| l.contains("flags:") && l.contains(" ad")),
            "no AD bit:\n{out}"
        );
        assert!(out.contains("TYPE65300 \\# 144"), "{out}");
    }
    // The UDP fast path (cache hits) answers exactly as the slow path did: same flags and
    // records, any case, with and without EDNS.
    let shape = |out: &str| -> (String, Vec<(String, String)>) {
        let flags = out
            .lines()
            .find(|l| l.contains("flags:"))
            .unwrap_or("")
            .split(';')
            .nth(2)
            .unwrap_or("")
            .to_string();
        (flags, common::rdata_hex(out))
    };
    for name in ["www.example.com", "mail.example.com"] {
        let first = dig(&["-p", &p, &at, name, "TYPE65300"]);
        let hit = dig(&["-p", &p, &at, name, "TYPE65300"]);
        assert_eq!(shape(&first), shape(&hit), "{first}\n{hit}");
    }
    let mixed = dig(&["-p", &p, &at, "WwW.ExAmple.COM", "TYPE65300"]);
    assert!(
        mixed.contains("WwW.ExAmple.COM."),
        "question case not echoed:\n{mixed}"
    );
    assert_eq!(shape(&mixed).1.len(), 1, "{mixed}");
    let noedns = dig(&["+noedns", "-p", &p, &at, "www.example.com", "TYPE65300"]);
    assert!(!noedns.contains("OPT PSEUDOSECTION"), "{noedns}");
    let rdata = |out: &str| -> Vec<String> { shape(out).1.into_iter().map(|(_, r)| r).collect() };
    assert_eq!(rdata(&noedns), rdata(&mixed));
    let mail = dig(&["-p", &p, &at, "mail.example.com", "TYPE65300"]);
    assert!(mail.contains("ANSWER: 2"), "{mail}");
    // The record the daemon hands out is the key server's own, byte for byte.
    let direct = dig(&[
        "-p",
        &h.example.p(),
        &h.example.at(),
        "www.example.com",
        "TYPE65300",
    ]);
    let via = dig(&["-p", &p, &at, "www.example.com", "TYPE65300"]);
    assert_eq!(common::rdata_hex(&direct), common::rdata_hex(&via));

    let a = dig(&["+short", "-p", &p, &at, "mail.example.com", "A"]);
    let mut ips: Vec<&str> = a.lines().collect();
    ips.sort();
    assert_eq!(ips, ["127.0.0.231", "127.0.0.232"]);
    let nx = dig(&["-p", &p, &at, "nope.example.com", "TYPE65300"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    let other = dig(&["-p", &p, &at, "www.example.com", "MX"]);
    assert!(other.contains("status: REFUSED"), "{other}");

    let kdig = ok(Command::new(require_tool("kdig")).args([
        "+time=2",
        "+retry=1",
        "-p",
        &p,
        &at,
        "www.example.com",
        "TYPE65300",
    ]));
    assert!(kdig.contains("NOERROR"), "{kdig}");
    assert!(
        kdig.lines()
            .any(|l| l.contains("Flags:") && l.contains(" ad")),
        "kdig saw no AD bit:\n{kdig}"
    );
    assert!(daemon.child.try_wait().unwrap().is_none());
    // SIGHUP re-reads the anchors and keeps serving.
    daemon.signal("HUP");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let again = dig(&["-p", &p, &at, "www.example.com", "TYPE65300"]);
    assert!(again.contains("status: NOERROR"), "{again}");
    assert!(
        daemon.stop().success(),
        "tprd did not stop cleanly on SIGTERM"
    );
}

#[test]
fn tp_resolve_prints_pairs_chain_cache_use_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hierarchy::start(dir.path(), 240);
    let out = ok(tp()
        .args(["resolve", "--repeat", "2", "--dns", &h.dns])
        .arg("--anchors")
        .arg(h.anchor())
        .arg("mail.example.com"));
    assert!(out.contains("key server com."), "{out}");
    assert!(
        out.contains("127.0.0.251") && out.contains("127.0.0.252"),
        "{out}"
    );
    assert!(
        out.contains("run 1: cache miss: 3 queries") && out.contains("run 2: cache hit: 0 queries"),
        "{out}"
    );
    let json = ok(tp()
        .args(["resolve", "--json", "--dns", &h.dns])
        .arg("--anchors")
        .arg(h.anchor())
        .arg("www.example.com"));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["pairs"][0]["ip"], "127.0.0.250");
    assert_eq!(v["chain"].as_array().unwrap().len(), 3);
    assert_eq!(v["runs"][0]["cache"], "miss");
    let bad = run(tp()
        .args(["resolve", "--dns", &h.dns])
        .arg("--anchors")
        .arg(h.anchor())
        .arg("exa mple.com"));
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("labels may hold only"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
