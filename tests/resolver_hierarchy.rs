//! The key resolver end to end, on real processes (tpkd, tp-dnsd, NSD, Knot, `tp resolve`):
//! a three-level hierarchy walked from the root; an island anchor; the walk through plain NSD
//! and Knot secondaries of the root and com. key zones while their tpkd primaries are down;
//! cross-verification across three roots, one of them compromised (and, ignored until fixed,
//! a quorum that two different answers both meet).
//!
//! Addresses: 127.0.0.150–127.0.0.199 only (other test files use other ranges).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{
    KeyServer, Proc, bin, dig, free_port, ok, rdata_hex, require_tool, run, tp, wait_dns,
};
use twinpeaks::{clpkc, keyfile};

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

/// A root key server "." at `ip`.
fn root(dir: &Path, ip: &str) -> KeyServer {
    KeyServer::new(dir, ".", ip, "", "")
}

/// The trust-anchor file of a root.
fn anchor(ks: &KeyServer) -> PathBuf {
    ks.state.join("anchor")
}

/// Hex of the public key `Q` in a finalized key file.
fn q_of(key_file: &Path) -> String {
    let (key, _) = keyfile::read_entity(key_file).unwrap();
    hex::encode(clpkc::point_to_bytes(key.public()))
}

/// A plain DNS server (tp-dnsd) for example.com. with these A records.
fn dns_server(dir: &Path, ip: &str, a: &[(&str, &str)]) -> (Proc, String) {
    let port = free_port(ip);
    let mut zone = String::from(
        "$ORIGIN example.com.\n$TTL 3600\n@ IN SOA ns.dns.test. hostmaster.example.com. 1 7200 3600 1209600 300\n@ IN NS ns.dns.test.\n",
    );
    for (name, addr) in a {
        zone.push_str(&format!("{name} IN A {addr}\n"));
    }
    let file = dir.join("example.com.zone");
    std::fs::write(&file, zone).unwrap();
    let mut p = Proc::spawn(
        "tp-dnsd",
        Command::new(bin("tp-dnsd"))
            .arg("--listen")
            .arg(format!("{ip}:{port}"))
            .arg("--zone")
            .arg(format!("example.com.={}", file.display())),
    );
    wait_dns(ip, port, "example.com.", &mut p);
    (p, format!("{ip}:{port}"))
}

/// The demo's shape: ". → com. → example.com.", www (one IP) and mail (two IPs) issued into
/// example.com.'s zone file. Nothing started.
struct Hierarchy {
    root: KeyServer,
    com: KeyServer,
    example: KeyServer,
    www_ip: String,
    mail_ips: [String; 2],
    /// Q (hex) per (name, IP).
    keys: BTreeMap<(String, String), String>,
}

fn hierarchy(dir: &Path, ks_ips: [&str; 3], www_ip: &str, mail_ips: [&str; 2]) -> Hierarchy {
    let root = root(&dir.join("root"), ks_ips[0]);
    let com = KeyServer::child(&dir.join("com"), &root, "com.", ks_ips[1]);
    let example = KeyServer::child(&dir.join("example"), &com, "example.com.", ks_ips[2]);
    let mut keys = BTreeMap::new();
    for (name, ip) in [
        ("www.example.com.", www_ip),
        ("mail.example.com.", mail_ips[0]),
        ("mail.example.com.", mail_ips[1]),
    ] {
        let key = example.issue_to_file(name, ip);
        keys.insert((name.to_string(), ip.to_string()), q_of(&key));
    }
    Hierarchy {
        root,
        com,
        example,
        www_ip: www_ip.to_string(),
        mail_ips: mail_ips.map(str::to_string),
        keys,
    }
}

impl Hierarchy {
    fn start(&mut self) {
        self.root.start();
        self.com.start();
        self.example.start();
    }

    fn a_records(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("www", self.www_ip.as_str()),
            ("mail", self.mail_ips[0].as_str()),
            ("mail", self.mail_ips[1].as_str()),
        ]
    }

    fn q(&self, name: &str, ip: &str) -> &str {
        &self.keys[&(name.to_string(), ip.to_string())]
    }
}

/// A key server instance of an existing KGC (`kgc`: a `tp kgc-setup` state directory): its
/// state holds copies of the KGC's secret and params, and its own `server.key` for
/// (`name`, `ip`) issued by `parent` into the parent's zone file as a KS record (offline flow).
/// Several instances of one KGC share params but each signs with its own key. Not started.
fn instance(dir: &Path, parent: &KeyServer, name: &str, ip: &str, kgc: &Path) -> KeyServer {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    for f in ["kgc.secret", "params"] {
        // std::fs::copy keeps the 0600 mode of the secret.
        std::fs::copy(kgc.join(f), state.join(f)).unwrap();
    }
    let port = free_port(ip);
    ok(tp()
        .args(["keygen", "--name", name, "--ip", ip])
        .arg("--issuer-params")
        .arg(parent.params())
        .arg("--out")
        .arg(state.join("server")));
    ok(tp()
        .arg("issue")
        .arg("--state")
        .arg(&parent.state)
        .arg("--request")
        .arg(state.join("server.req"))
        .arg("--zone-file")
        .arg(&parent.zone_file)
        .arg("--response")
        .arg(state.join("server.resp"))
        .args(["--key-server-port", &port.to_string()])
        .arg("--child-params")
        .arg(kgc.join("params")));
    ok(tp()
        .arg("finalize")
        .arg("--secret")
        .arg(state.join("server.secret"))
        .arg("--response")
        .arg(state.join("server.resp"))
        .arg("--out")
        .arg(state.join("server.key")));
    let zone_file = dir.join("zone.keys");
    std::fs::write(
        &zone_file,
        format!("$ORIGIN {name}\n$TTL 3600\n@ IN SOA ks.{name} hostmaster.{name} 1 7200 3600 1209600 300\n@ IN NS ks.{name}\nks IN A {ip}\n"),
    )
    .unwrap();
    let config = dir.join("tpkd.toml");
    std::fs::write(
        &config,
        format!("name = \"{name}\"\nlisten = [\"{ip}:{port}\"]\nstate_dir = \"state\"\nzone_file = \"zone.keys\"\naxfr_allow = [\"127.0.0.0/8\"]\n"),
    )
    .unwrap();
    KeyServer {
        dir: dir.to_path_buf(),
        name: name.to_string(),
        ip: ip.to_string(),
        port,
        config,
        zone_file,
        state,
        proc_: None,
    }
}

/// The TPKEY lines of a key zone file for `owner`.
fn key_lines(zone_file: &Path, owner: &str) -> Vec<String> {
    std::fs::read_to_string(zone_file)
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(owner) && l.contains(" TPKEY "))
        .map(str::to_string)
        .collect()
}

/// The same record with its signature field (the last one) replaced by `-`: tpkd signs it
/// with its own key when it loads the zone.
fn unsigned(line: &str) -> String {
    let (rest, sig) = line.trim_end().rsplit_once(' ').unwrap();
    assert!(sig.len() > 64, "not a signed record line: {line}");
    format!("{rest} -")
}

// ---------------------------------------------------------------------------------------------
// `tp resolve` and what it prints
// ---------------------------------------------------------------------------------------------

/// One resolution as `tp resolve` prints it (text form).
#[derive(Debug)]
struct Resolution {
    /// (name, identity address) of each key server, from the anchor down.
    chain: Vec<(String, String)>,
    /// (IP, Q hex) pairs.
    pairs: Vec<(String, String)>,
    /// Anchors (`file:line`) that agreed.
    anchors: Vec<String>,
    stdout: String,
}

fn resolve_cmd(args: &[&str]) -> Command {
    let mut c = tp();
    c.arg("resolve").args(args);
    c
}

fn resolve_out(args: &[&str]) -> Output {
    run(&mut resolve_cmd(args))
}

/// `tp resolve ARGS`, which must succeed; its text output parsed.
fn resolve_ok(args: &[&str]) -> Resolution {
    let stdout = ok(&mut resolve_cmd(args));
    let mut chain = Vec::new();
    let mut pairs = Vec::new();
    let mut anchors = Vec::new();
    for l in stdout.lines() {
        if let Some(rest) = l.strip_prefix(";;   key server ") {
            let w: Vec<&str> = rest.split_whitespace().collect();
            assert_eq!(w[1], "at", "{l}");
            chain.push((w[0].to_string(), w[2].to_string()));
        } else if let Some(rest) = l.strip_prefix(";; trust anchors agreeing: ") {
            anchors = rest.split(", ").map(str::to_string).collect();
        } else if !l.starts_with(";;") && !l.is_empty() {
            let f: Vec<&str> = l.split('\t').collect();
            assert!(f.len() >= 4, "unexpected line {l:?} in\n{stdout}");
            pairs.push((f[1].to_string(), f[2].to_string()));
        }
    }
    pairs.sort();
    Resolution {
        chain,
        pairs,
        anchors,
        stdout,
    }
}

/// `tp resolve ARGS`, which must fail; its stderr.
fn resolve_err(args: &[&str]) -> String {
    let out = resolve_out(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "tp resolve {args:?} succeeded but should fail:\n{stdout}\n{stderr}"
    );
    stderr
}

fn chain_names(r: &Resolution) -> Vec<&str> {
    r.chain.iter().map(|(n, _)| n.as_str()).collect()
}

fn addr(ks: &KeyServer) -> String {
    format!("{}:{}", ks.ip, ks.port)
}

fn write_settings(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

/// A TOML array of quoted paths.
fn toml_paths(paths: &[&Path]) -> String {
    let v: Vec<String> = paths
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    format!("[{}]", v.join(", "))
}

#[test]
fn three_level_hierarchy_resolves_from_the_root() {
    require_tool("dig");
    let dir = tempfile::tempdir().unwrap();
    let mut h = hierarchy(
        dir.path(),
        ["127.0.0.150", "127.0.0.151", "127.0.0.152"],
        "127.0.0.154",
        ["127.0.0.155", "127.0.0.156"],
    );
    h.start();
    let (_dns, dns) = dns_server(dir.path(), "127.0.0.153", &h.a_records());
    let anchors = anchor(&h.root);
    let anchors = anchors.to_str().unwrap();

    // A plain DNS tool sees the referral chain in RFC 3597 form.
    let out = dig(&[
        "-p",
        &h.root.p(),
        &h.root.at(),
        "www.example.com.",
        "TYPE65300",
    ]);
    assert!(
        rdata_hex(&out).iter().any(|(owner, _)| owner == "com."),
        "{out}"
    );

    let want_chain = vec![
        (".".to_string(), addr(&h.root)),
        ("com.".to_string(), addr(&h.com)),
        ("example.com.".to_string(), addr(&h.example)),
    ];
    for (name, ips) in [
        ("www.example.com.", vec![h.www_ip.clone()]),
        ("mail.example.com.", h.mail_ips.to_vec()),
    ] {
        let r = resolve_ok(&["--anchors", anchors, "--dns", &dns, name]);
        assert_eq!(r.chain, want_chain, "{name}:\n{}", r.stdout);
        let want: Vec<(String, String)> = ips
            .iter()
            .map(|ip| (ip.clone(), h.q(name, ip).to_string()))
            .collect();
        assert_eq!(r.pairs, want, "{name}:\n{}", r.stdout);
        assert_eq!(r.anchors, [format!("{anchors}:2")], "{name}:\n{}", r.stdout);
        assert!(r.stdout.contains("IPs from DNS"), "{}", r.stdout);

        // The same in JSON.
        let out = ok(&mut resolve_cmd(&[
            "--anchors",
            anchors,
            "--dns",
            &dns,
            "--json",
            name,
        ]));
        let j = serde_json::from_str::<serde_json::Value>(&out).unwrap();
        assert_eq!(j["name"].as_str().unwrap(), name);
        assert_eq!(j["dns"], serde_json::Value::Bool(true));
        let chain: Vec<(String, String)> = j["chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["name"].as_str().unwrap().to_string(),
                    k["address"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(chain, want_chain, "{out}");
        let mut pairs: Vec<(String, String)> = j["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p["kind"].as_str().unwrap(), "entity", "{out}");
                (
                    p["ip"].as_str().unwrap().to_string(),
                    p["key"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        pairs.sort();
        assert_eq!(pairs, want, "{out}");
        let agreeing: Vec<&str> = j["anchors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(agreeing, [format!("{anchors}:2")], "{out}");
    }

    // One label at a time: three queries cold, none from the cache.
    let out = ok(&mut resolve_cmd(&[
        "--anchors",
        anchors,
        "--dns",
        &dns,
        "--repeat",
        "2",
        "www.example.com.",
    ]));
    let run = |n: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!(";; run {n}:")))
            .unwrap_or_else(|| panic!("no run {n} in\n{out}"))
    };
    assert!(run("1").contains("cache miss: 3 queries"), "{out}");
    assert!(run("2").contains("cache hit: 0 queries"), "{out}");

    // Keys only (no DNS): the key servers themselves resolve too, with their own chains.
    let r = resolve_ok(&["--anchors", anchors, "example.com."]);
    assert_eq!(chain_names(&r), [".", "com."], "{}", r.stdout);
    assert_eq!(
        r.pairs,
        [(
            h.example.ip.clone(),
            q_of(&h.example.state.join("server.key"))
        )],
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("(key server, "), "{}", r.stdout);

    // A name the key server does not know: NXDOMAIN from example.com.'s key server.
    let e = resolve_err(&["--anchors", anchors, "--dns", &dns, "nope.example.com."]);
    assert!(
        e.contains(&format!(
            "nope.example.com.: no key (NXDOMAIN from key server example.com.@{}",
            addr(&h.example)
        )),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. An island
// ---------------------------------------------------------------------------------------------

#[test]
fn island_anchor_resolves_its_subtree_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = hierarchy(
        dir.path(),
        ["127.0.0.180", "127.0.0.181", "127.0.0.182"],
        "127.0.0.184",
        ["127.0.0.185", "127.0.0.186"],
    );
    // Only the island's key server runs: its parents are not needed.
    h.example.start();
    let (_dns, dns) = dns_server(dir.path(), "127.0.0.183", &h.a_records());
    let island = ok(tp().arg("island").arg("--config").arg(&h.example.config));
    assert!(island.contains("[[islands]]"), "{island}");
    assert!(island.contains(&addr(&h.example)), "{island}");
    // Top-level keys before the [[islands]] table.
    let settings = write_settings(
        &dir.path().join("island.toml"),
        &format!("dns = [\"{dns}\"]\n\n{island}"),
    );

    for (name, ips) in [
        ("www.example.com.", vec![h.www_ip.clone()]),
        ("mail.example.com.", h.mail_ips.to_vec()),
    ] {
        let r = resolve_ok(&["--config", &settings, name]);
        assert_eq!(
            r.chain,
            [("example.com.".to_string(), addr(&h.example))],
            "{}",
            r.stdout
        );
        let want: Vec<(String, String)> = ips
            .iter()
            .map(|ip| (ip.clone(), h.q(name, ip).to_string()))
            .collect();
        assert_eq!(r.pairs, want, "{}", r.stdout);
        assert_eq!(r.anchors, ["islands[0] (example.com.)"], "{}", r.stdout);
    }

    for outside in ["example.org.", "com.", "www.example.net."] {
        let e = resolve_err(&["--config", &settings, "--keys-only", outside]);
        assert!(e.contains("no trust anchor covers"), "{outside}: {e}");
    }
    // The island's own name: its record lives in its parent, outside the island.
    let e = resolve_err(&["--config", &settings, "--keys-only", "example.com."]);
    assert!(e.contains("island anchor"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// 3. Scale-out: the walk through plain NSD and Knot secondaries, primaries down
// ---------------------------------------------------------------------------------------------

/// An NSD secondary of `zone`, transferred from `primary`.
fn nsd_secondary(dir: &Path, ip: &str, zone: &str, primary: &KeyServer) -> (Proc, String) {
    nsd_secondary_of(dir, ip, &[(zone, primary)])
}

/// An NSD secondary of each (zone, primary).
fn nsd_secondary_of(dir: &Path, ip: &str, zones: &[(&str, &KeyServer)]) -> (Proc, String) {
    let nsd = require_tool("nsd");
    let port = free_port(ip);
    std::fs::create_dir_all(dir).unwrap();
    let conf = dir.join("nsd.conf");
    let mut text = format!(
        "server:\n  ip-address: {ip}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  zonelistfile: \"{d}/zone.list\"\n  verbosity: 2\nremote-control:\n  control-enable: no\n",
        d = dir.display()
    );
    for (i, (zone, primary)) in zones.iter().enumerate() {
        text.push_str(&format!(
            "zone:\n  name: {zone}\n  zonefile: \"{d}/zone{i}.db\"\n  request-xfr: AXFR {}@{} NOKEY\n  allow-notify: 127.0.0.0/8 NOKEY\n",
            primary.ip,
            primary.port,
            d = dir.display()
        ));
    }
    std::fs::write(&conf, text).unwrap();
    let check = run(Command::new(require_tool("nsd-checkconf")).arg(&conf));
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let names: Vec<&str> = zones.iter().map(|(z, _)| *z).collect();
    let mut p = Proc::spawn(
        &format!("nsd ({})", names.join(" ")),
        Command::new(nsd).arg("-d").arg("-c").arg(&conf),
    );
    for (zone, primary) in zones {
        wait_transfer(ip, port, zone, primary, &mut p);
    }
    (p, format!("{ip}:{port}"))
}

/// A Knot secondary of `zone`, transferred from `primary`.
fn knot_secondary(dir: &Path, ip: &str, zone: &str, primary: &KeyServer) -> (Proc, String) {
    let knotd = require_tool("knotd");
    let port = free_port(ip);
    std::fs::create_dir_all(dir).unwrap();
    let conf = dir.join("knot.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n  listen: {ip}@{port}\n  rundir: \"{d}\"\nlog:\n  - target: stderr\n    any: info\ndatabase:\n  storage: \"{d}\"\nremote:\n  - id: primary\n    address: {}@{}\nacl:\n  - id: notify\n    address: 127.0.0.0/8\n    action: notify\ntemplate:\n  - id: default\n    storage: \"{d}\"\nzone:\n  - domain: {zone}\n    master: primary\n    acl: notify\n    file: \"{d}/zone.db\"\n",
            primary.ip,
            primary.port,
            d = dir.display()
        ),
    )
    .unwrap();
    let check = run(Command::new(require_tool("knotc"))
        .arg("-c")
        .arg(&conf)
        .arg("conf-check"));
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut p = Proc::spawn(
        &format!("knotd ({zone})"),
        Command::new(knotd).arg("-c").arg(&conf),
    );
    wait_transfer(ip, port, zone, primary, &mut p);
    (p, format!("{ip}:{port}"))
}

fn soa(ip: &str, port: u16, zone: &str) -> String {
    let out = run(Command::new(require_tool("dig"))
        .args(["+time=1", "+tries=1", "+short", "-p", &port.to_string()])
        .arg(format!("@{ip}"))
        .args([zone, "SOA"]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Wait until the secondary answers the SOA of `zone` with the primary's serial.
fn wait_transfer(ip: &str, port: u16, zone: &str, primary: &KeyServer, p: &mut Proc) {
    wait_dns(ip, port, zone, p);
    let want = soa(&primary.ip, primary.port, zone);
    assert!(!want.is_empty(), "the primary of {zone} gives no SOA");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = soa(ip, port, zone);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} serves SOA {got:?} for {zone}, the primary {want:?}",
            p.what
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn walk_goes_through_nsd_and_knot_secondaries_when_the_primaries_are_down() {
    require_tool("dig");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut h = hierarchy(
        d,
        ["127.0.0.160", "127.0.0.161", "127.0.0.162"],
        "127.0.0.170",
        ["127.0.0.171", "127.0.0.172"],
    );
    h.start();
    let (_dns, dns) = dns_server(d, "127.0.0.163", &h.a_records());
    // Two arrangements, each secondary holding one zone only (a server holding both the
    // parent's and the child's key zone answers the child's own name from the child's zone).
    let (_nsd_root, nsd_root) = nsd_secondary(&d.join("nsd-root"), "127.0.0.164", ".", &h.root);
    let (_knot_com, knot_com) = knot_secondary(&d.join("knot-com"), "127.0.0.165", "com.", &h.com);
    let (_knot_root, knot_root) = knot_secondary(&d.join("knot-root"), "127.0.0.166", ".", &h.root);
    let (_nsd_com, nsd_com) = nsd_secondary(&d.join("nsd-com"), "127.0.0.167", "com.", &h.com);
    // And one NSD holding both zones (a deployment mistake, see below).
    let (_nsd_both, nsd_both) = nsd_secondary_of(
        &d.join("nsd-both"),
        "127.0.0.157",
        &[(".", &h.root), ("com.", &h.com)],
    );

    let anchors = anchor(&h.root);
    let anchors = anchors.to_str().unwrap();
    // Up: resolves from the primaries.
    let r = resolve_ok(&["--anchors", anchors, "--dns", &dns, "www.example.com."]);
    assert_eq!(
        chain_names(&r),
        [".", "com.", "example.com."],
        "{}",
        r.stdout
    );

    // Primaries of . and com. down.
    let root_q = h.root.queries();
    let com_q = h.com.queries();
    assert!(root_q > 0 && com_q > 0, "{root_q} {com_q}");
    h.root.stop();
    h.com.stop();

    let want_chain = vec![
        (".".to_string(), addr(&h.root)),
        ("com.".to_string(), addr(&h.com)),
        ("example.com.".to_string(), addr(&h.example)),
    ];
    let want_pairs = vec![(
        h.www_ip.clone(),
        h.q("www.example.com.", &h.www_ip).to_string(),
    )];
    for (label, root_sec, com_sec) in [
        ("NSD for ., Knot for com.", &nsd_root, &knot_com),
        ("Knot for ., NSD for com.", &knot_root, &nsd_com),
    ] {
        let settings = write_settings(
            &d.join(format!("sec-{}.toml", root_sec.replace([':', '.'], "_"))),
            &format!(
                "anchors = {}\ndns = [\"{dns}\"]\n\n[secondaries]\n\".\" = [\"{root_sec}\"]\n\"com.\" = [\"{com_sec}\"]\n",
                toml_paths(&[Path::new(anchors)])
            ),
        );
        let started = Instant::now();
        let r = resolve_ok(&["--config", &settings, "www.example.com."]);
        let took = started.elapsed();
        // The chain shows the key servers' own identities, not the secondaries' addresses.
        assert_eq!(r.chain, want_chain, "{label}:\n{}", r.stdout);
        assert_eq!(r.pairs, want_pairs, "{label}:\n{}", r.stdout);
        eprintln!("{label}: resolved in {took:?} with both primaries down");

        // JSON: the secondaries appear among the servers queried for each key server.
        let out = ok(&mut resolve_cmd(&[
            "--config",
            &settings,
            "--json",
            "www.example.com.",
        ]));
        let j = serde_json::from_str::<serde_json::Value>(&out).unwrap();
        let chain = j["chain"].as_array().unwrap();
        let servers = |i: usize| -> Vec<String> {
            chain[i]["servers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(servers(0), [addr(&h.root), root_sec.clone()], "{out}");
        assert_eq!(servers(1), [addr(&h.com), com_sec.clone()], "{out}");
        assert_eq!(chain[1]["address"].as_str().unwrap(), addr(&h.com), "{out}");
    }

    // A secondary holding the child's zone too answers the child's own name from the child's
    // zone (NODATA at com.'s apex), and then com.'s records for names below: as the root's
    // secondary it cannot serve the walk. The resolver must refuse, never take a key from it.
    let settings = write_settings(
        &d.join("both.toml"),
        &format!(
            "anchors = {}\ndns = [\"{dns}\"]\n\n[secondaries]\n\".\" = [\"{nsd_both}\"]\n\"com.\" = [\"{knot_com}\"]\n",
            toml_paths(&[Path::new(anchors)])
        ),
    );
    let e = resolve_err(&["--config", &settings, "www.example.com."]);
    eprintln!("root's secondary also holding com.: {e}");
    assert!(e.contains("check failed"), "{e}");

    // Without the secondaries: the walk fails at the first key server that is down, and names
    // it.
    let e = resolve_err(&["--anchors", anchors, "--dns", &dns, "www.example.com."]);
    assert!(
        e.contains(&format!(
            "key server .@{} did not answer for com.",
            addr(&h.root)
        )),
        "{e}"
    );
    // With only the root's secondary, the walk gets past . and fails at com.
    let settings = write_settings(
        &d.join("root-only.toml"),
        &format!(
            "anchors = {}\ndns = [\"{dns}\"]\n\n[secondaries]\n\".\" = [\"{nsd_root}\"]\n",
            toml_paths(&[Path::new(anchors)])
        ),
    );
    let e = resolve_err(&["--config", &settings, "www.example.com."]);
    assert!(
        e.contains(&format!(
            "key server com.@{} did not answer for example.com.",
            addr(&h.com)
        )),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Cross-verification across three roots, one compromised
// ---------------------------------------------------------------------------------------------

/// Three roots; R1 and R2 honest, vouching for two instances (C1, C2) of ONE com. KGC, under
/// which one example.com. serves www; R3 compromised, vouching for an attacker's com. (C3) whose
/// example.com. (EX3) serves another key for www at the same IP. Everything started.
struct ThreeRoots {
    r1: KeyServer,
    r2: KeyServer,
    r3: KeyServer,
    c1: KeyServer,
    c2: KeyServer,
    ex: KeyServer,
    _c3: KeyServer,
    _ex3: KeyServer,
    www_ip: String,
    honest: String,
    evil: String,
}

/// `ips`: R1, R2, R3, C1, C2, EX, C3, EX3; `www_ip` is data only (never contacted).
fn three_roots(d: &Path, ips: [&str; 8], www_ip: &str) -> ThreeRoots {
    let r1 = root(&d.join("r1"), ips[0]);
    let r2 = root(&d.join("r2"), ips[1]);
    let r3 = root(&d.join("r3"), ips[2]);

    // Honest: ONE com. KGC, two instances, one vouched for by R1 and one by R2.
    let com_kgc = d.join("com-kgc");
    ok(tp()
        .args(["kgc-setup", "--name", "com."])
        .arg("--state")
        .arg(&com_kgc));
    let c1 = instance(&d.join("c1"), &r1, "com.", ips[3], &com_kgc);
    let c2 = instance(&d.join("c2"), &r2, "com.", ips[4], &com_kgc);
    // example.com.: its key issued once by the com. KGC (through c1, which holds it); the
    // record goes into both instances' zone files unsigned, each signs it with its own key.
    let ex = KeyServer::child(&d.join("example"), &c1, "example.com.", ips[5]);
    let lines = key_lines(&c1.zone_file, "example.com.");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let record = unsigned(&lines[0]);
    let c1_zone = std::fs::read_to_string(&c1.zone_file)
        .unwrap()
        .replace(&lines[0], &record);
    std::fs::write(&c1.zone_file, c1_zone).unwrap();
    let mut c2_zone = std::fs::read_to_string(&c2.zone_file).unwrap();
    c2_zone.push_str(&record);
    c2_zone.push('\n');
    std::fs::write(&c2.zone_file, c2_zone).unwrap();
    let honest = q_of(&ex.issue_to_file("www.example.com.", www_ip));

    // Compromised: R3 vouches for an attacker's com. whose example.com. has another www key.
    let c3 = KeyServer::child(&d.join("c3"), &r3, "com.", ips[6]);
    let ex3 = KeyServer::child(&d.join("example3"), &c3, "example.com.", ips[7]);
    let evil = q_of(&ex3.issue_to_file("www.example.com.", www_ip));
    assert_ne!(honest, evil);

    let mut t = ThreeRoots {
        r1,
        r2,
        r3,
        c1,
        c2,
        ex,
        _c3: c3,
        _ex3: ex3,
        www_ip: www_ip.to_string(),
        honest,
        evil,
    };
    for ks in [
        &mut t.r1,
        &mut t.r2,
        &mut t.r3,
        &mut t.c1,
        &mut t.c2,
        &mut t.ex,
        &mut t._c3,
        &mut t._ex3,
    ] {
        ks.start();
    }
    t
}

#[test]
fn cross_verification_across_three_roots_catches_the_compromised_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = three_roots(
        d,
        [
            "127.0.0.190",
            "127.0.0.191",
            "127.0.0.192",
            "127.0.0.193",
            "127.0.0.194",
            "127.0.0.195",
            "127.0.0.196",
            "127.0.0.197",
        ],
        "127.0.0.199",
    );
    let ThreeRoots {
        r1,
        r2,
        r3,
        c1,
        c2,
        ex,
        honest,
        evil,
        ..
    } = &t;
    let www_ip = t.www_ip.as_str();
    let (a1, a2, a3) = (anchor(r1), anchor(r2), anchor(r3));
    let src = |a: &Path| format!("{}:2", a.display());

    // Each root alone: the honest ones give the honest key, through their own com. instance.
    for (a, com) in [(&a1, c1), (&a2, c2)] {
        let r = resolve_ok(&["--anchors", a.to_str().unwrap(), "www.example.com."]);
        assert_eq!(
            r.pairs,
            [(www_ip.to_string(), honest.clone())],
            "{}",
            r.stdout
        );
        assert_eq!(
            r.chain,
            [
                (".".to_string(), addr(if com.ip == c1.ip { r1 } else { r2 })),
                ("com.".to_string(), addr(com)),
                ("example.com.".to_string(), addr(ex)),
            ],
            "{}",
            r.stdout
        );
    }
    let r = resolve_ok(&["--anchors", a3.to_str().unwrap(), "www.example.com."]);
    assert_eq!(
        r.pairs,
        [(www_ip.to_string(), evil.clone())],
        "{}",
        r.stdout
    );

    // policy "all" over the three: refused, and R3's anchor is named with what it said.
    let all3 = write_settings(
        &d.join("all3.toml"),
        &format!("anchors = {}\n", toml_paths(&[&a1, &a2, &a3])),
    );
    let e = resolve_err(&["--config", &all3, "www.example.com."]);
    assert!(e.contains("trust anchors disagree"), "{e}");
    let r3_said = format!(
        ".@{} ({}) says {www_ip} Q={}",
        addr(r3),
        src(&a3),
        &evil[..16]
    );
    assert!(e.contains(&r3_said), "{e}");
    assert!(e.contains(&src(&a1)) && e.contains(&honest[..16]), "{e}");
    assert!(e.contains("policy all of 3"), "{e}");

    // quorum 2 over the three: the honest key, the two agreeing anchors listed.
    let quorum = write_settings(
        &d.join("quorum.toml"),
        &format!(
            "anchors = {}\npolicy = \"quorum\"\nquorum = 2\n",
            toml_paths(&[&a1, &a2, &a3])
        ),
    );
    let r = resolve_ok(&["--config", &quorum, "www.example.com."]);
    assert_eq!(
        r.pairs,
        [(www_ip.to_string(), honest.clone())],
        "{}",
        r.stdout
    );
    assert_eq!(r.anchors, [src(&a1), src(&a2)], "{}", r.stdout);
    assert_eq!(r.chain[1], ("com.".to_string(), addr(c1)), "{}", r.stdout);
    // The same with `tp resolve --quorum 2` over the "all" settings.
    let r = resolve_ok(&["--config", &all3, "--quorum", "2", "www.example.com."]);
    assert_eq!(
        r.pairs,
        [(www_ip.to_string(), honest.clone())],
        "{}",
        r.stdout
    );
    assert_eq!(r.anchors, [src(&a1), src(&a2)], "{}", r.stdout);
    // The compromised anchor listed first does not win: the chain is an agreeing anchor's.
    let quorum_r3_first = write_settings(
        &d.join("quorum-r3-first.toml"),
        &format!(
            "anchors = {}\npolicy = \"quorum\"\nquorum = 2\n",
            toml_paths(&[&a3, &a1, &a2])
        ),
    );
    let r = resolve_ok(&["--config", &quorum_r3_first, "www.example.com."]);
    assert_eq!(
        r.pairs,
        [(www_ip.to_string(), honest.clone())],
        "{}",
        r.stdout
    );
    assert_eq!(r.anchors, [src(&a1), src(&a2)], "{}", r.stdout);
    assert_eq!(r.chain[0], (".".to_string(), addr(r1)), "{}", r.stdout);
    // quorum 3 cannot be met.
    let e = resolve_err(&["--config", &all3, "--quorum", "3", "www.example.com."]);
    assert!(e.contains("trust anchors disagree"), "{e}");

    // policy "all" over R1 and R2 only: they agree (two com. instances, one KGC).
    let all2 = write_settings(
        &d.join("all2.toml"),
        &format!("anchors = {}\n", toml_paths(&[&a1, &a2])),
    );
    let r = resolve_ok(&["--config", &all2, "www.example.com."]);
    assert_eq!(
        r.pairs,
        [(www_ip.to_string(), honest.clone())],
        "{}",
        r.stdout
    );
    assert_eq!(r.anchors, [src(&a1), src(&a2)], "{}", r.stdout);
    assert_eq!(
        chain_names(&r),
        [".", "com.", "example.com."],
        "{}",
        r.stdout
    );
}

#[test]
fn quorum_refuses_two_different_answers_that_both_meet_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = three_roots(
        d,
        [
            "127.0.0.173",
            "127.0.0.174",
            "127.0.0.175",
            "127.0.0.176",
            "127.0.0.177",
            "127.0.0.178",
            "127.0.0.179",
            "127.0.0.187",
        ],
        "127.0.0.189",
    );
    let (a1, a3) = (anchor(&t.r1), anchor(&t.r3));
    for order in [[&a3, &a1], [&a1, &a3]] {
        let settings = write_settings(
            &d.join("quorum1.toml"),
            &format!(
                "anchors = {}\npolicy = \"quorum\"\nquorum = 1\n",
                toml_paths(&[order[0], order[1]])
            ),
        );
        let out = resolve_out(&["--config", &settings, "www.example.com."]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("trust anchors disagree"),
            "anchors {order:?}: two roots give two different keys for www.example.com. \
             (honest {}, compromised {}), yet quorum 1 accepted one:\n{stdout}{stderr}",
            &t.honest[..16],
            &t.evil[..16]
        );
    }
}
