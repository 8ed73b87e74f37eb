//! Online bootstrap of the three-level demo hierarchy from nothing (docs/enrollment.md,
//! docs/operator.md "Joining a hierarchy"): a self-issued root, then `com.`, `example.com.`,
//! `www.example.com.` and `mail.example.com.`, each enrolled with its parent over DNS UPDATE +
//! TSIG by `tp enroll` (no `tp issue`, no zone file edited after start), and every name then
//! resolves and verifies from the root's anchor.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{KeyServer, Proc, bin, free_port, ok, tp, wait_dns};

/// The `[[tsig]]` table of a key server's config: key `key` in `file`, allowed `allow`.
fn tsig_cfg(key: &str, file: &str, allow: &[&str]) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[tsig]]\nname = \"{key}\"\nalgorithm = \"hmac-sha256\"\nsecret_file = \"{file}\"\nallow = [{}]\n",
        allow.join(", ")
    )
}

/// Wait until `ks`'s log holds a line with every one of `needles` (tracing writes
/// asynchronously to the file).
fn wait_log_line(ks: &KeyServer, needles: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let l = std::fs::read_to_string(ks.dir.join("tpkd.log")).unwrap();
        if l.lines()
            .any(|line| needles.iter().all(|n| line.contains(n)))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: no log line with {needles:?}:\n{l}",
            ks.name
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    PathBuf::from(format!("{}.{ext}", prefix.display()))
}

/// `tp enroll` of `prefix.req` with the running `parent`, signed with TSIG key `key` whose
/// secret is `parent.dir/secret_file`; `extra` for a child key server's part.
fn enroll(parent: &KeyServer, key: &str, secret_file: &str, prefix: &Path, extra: &[&str]) {
    ok(tp()
        .arg("enroll")
        .args(["--server", &format!("{}:{}", parent.ip, parent.port)])
        .args(["--zone", &parent.name, "--tsig-key", key])
        .arg("--tsig-secret-file")
        .arg(parent.dir.join(secret_file))
        .arg("--request")
        .arg(with_ext(prefix, "req"))
        .arg("--response")
        .arg(with_ext(prefix, "resp"))
        .args(extra));
}

/// `tp finalize` of `prefix` to `out`: the public key Q it prints, checked against the file.
fn finalize(prefix: &Path, out: &Path) -> String {
    let text = ok(tp()
        .arg("finalize")
        .arg("--secret")
        .arg(with_ext(prefix, "secret"))
        .arg("--response")
        .arg(with_ext(prefix, "resp"))
        .arg("--out")
        .arg(out));
    let q = text
        .lines()
        .find_map(|l| l.strip_prefix("public key Q = "))
        .unwrap_or_else(|| panic!("no public key in:\n{text}"))
        .trim()
        .to_string();
    let (key, _) = twinpeaks::keyfile::read_entity(out).unwrap();
    assert_eq!(
        hex::encode(twinpeaks::clpkc::point_to_bytes(key.public())),
        q
    );
    q
}

/// A child key server for `name` at `ip`, enrolled online with the running `parent` (TSIG key
/// `key` in `parent.dir/secret_file`), its own key finalized, its zone file and config written
/// (with `cfg_extra`). Not started. Returns it and its public key Q.
fn join(
    dir: &Path,
    parent: &KeyServer,
    key: &str,
    secret_file: &str,
    name: &str,
    ip: &str,
    cfg_extra: &str,
) -> (KeyServer, String) {
    std::fs::create_dir_all(dir).unwrap();
    let port = free_port(ip);
    let state = dir.join("state");
    ok(tp()
        .args(["kgc-setup", "--name", name])
        .arg("--state")
        .arg(&state));
    let prefix = state.join("server");
    parent.keygen_to(name, ip, &prefix);
    let params = state.join("params");
    enroll(
        parent,
        key,
        secret_file,
        &prefix,
        &[
            "--key-server-port",
            &port.to_string(),
            "--child-params",
            params.to_str().unwrap(),
        ],
    );
    let q = finalize(&prefix, &state.join("server.key"));
    let ks = KeyServer::with_files(dir, name, ip, port, cfg_extra);
    (ks, q)
}

/// An entity `name` at `ip`, enrolled online with `parent` and finalized: its public key Q.
fn entity(
    dir: &Path,
    parent: &KeyServer,
    key: &str,
    secret_file: &str,
    name: &str,
    ip: &str,
) -> String {
    let prefix = dir.join(format!("{name}{ip}"));
    parent.keygen_to(name, ip, &prefix);
    enroll(parent, key, secret_file, &prefix, &[]);
    finalize(&prefix, &dir.join(format!("{name}{ip}.key")))
}

/// `tp resolve --json ARGS`: (chain names with addresses, sorted (ip, key, kind) pairs).
type Resolved = (Vec<(String, String)>, Vec<(String, String, String)>);

fn resolve(args: &[&str]) -> Resolved {
    let out = ok(tp().args(["resolve", "--json"]).args(args));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let chain = v["chain"]
        .as_array()
        .unwrap_or_else(|| panic!("no chain in {out}"))
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_string(),
                k["address"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut pairs: Vec<(String, String, String)> = v["pairs"]
        .as_array()
        .unwrap_or_else(|| panic!("no pairs in {out}"))
        .iter()
        .map(|p| {
            (
                p["ip"].as_str().unwrap().to_string(),
                p["key"].as_str().unwrap().to_string(),
                p["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    pairs.sort();
    (chain, pairs)
}

fn addr(ks: &KeyServer) -> String {
    format!("{}:{}", ks.ip, ks.port)
}

#[test]
fn the_demo_hierarchy_bootstraps_online_and_every_name_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ip = |n: u8| format!("127.0.6.{n}");

    // The root: self-issued, one TSIG key for com.
    let rdir = d.join("root");
    std::fs::create_dir_all(&rdir).unwrap();
    common::tsig_secret(&rdir, "com.tsig", 11);
    let mut root = KeyServer::new(
        &rdir,
        ".",
        &ip(1),
        "",
        &tsig_cfg("com-key.", "com.tsig", &["com."]),
    );
    let root_zone = std::fs::read_to_string(&root.zone_file).unwrap();
    root.start_logged();

    // com.: enrolls online with the root, then serves with its own key for example.com.
    let cdir = d.join("com");
    std::fs::create_dir_all(&cdir).unwrap();
    common::tsig_secret(&cdir, "example.tsig", 22);
    let (mut com, com_q) = join(
        &cdir,
        &root,
        "com-key.",
        "com.tsig",
        "com.",
        &ip(2),
        &tsig_cfg("example-key.", "example.tsig", &["example.com."]),
    );
    let com_zone = std::fs::read_to_string(&com.zone_file).unwrap();
    com.start_logged();

    // example.com.: the same with com., then serves with a key for its two hosts.
    let edir = d.join("example");
    std::fs::create_dir_all(&edir).unwrap();
    common::tsig_secret(&edir, "hosts.tsig", 33);
    let (mut example, example_q) = join(
        &edir,
        &com,
        "example-key.",
        "example.tsig",
        "example.com.",
        &ip(3),
        &tsig_cfg(
            "hosts-key.",
            "hosts.tsig",
            &["www.example.com.", "mail.example.com."],
        ),
    );
    let example_zone = std::fs::read_to_string(&example.zone_file).unwrap();
    example.start_logged();

    // The entities: www (one IP) and mail (two IPs).
    let hdir = d.join("hosts");
    std::fs::create_dir_all(&hdir).unwrap();
    let www_q = entity(
        &hdir,
        &example,
        "hosts-key.",
        "hosts.tsig",
        "www.example.com.",
        &ip(10),
    );
    let mail_q1 = entity(
        &hdir,
        &example,
        "hosts-key.",
        "hosts.tsig",
        "mail.example.com.",
        &ip(11),
    );
    let mail_q2 = entity(
        &hdir,
        &example,
        "hosts-key.",
        "hosts.tsig",
        "mail.example.com.",
        &ip(12),
    );
    assert_ne!(mail_q1, mail_q2, "two IPs, two keys");

    // A plain DNS server with the hosts' addresses.
    let zone = d.join("example.com.zone");
    std::fs::write(
        &zone,
        format!(
            "$ORIGIN example.com.\n$TTL 3600\n@ IN SOA ns hostmaster 1 7200 3600 1209600 300\n@ IN NS ns\nns IN A {}\nwww IN A {}\nmail IN A {}\nmail IN A {}\n",
            ip(4),
            ip(10),
            ip(11),
            ip(12)
        ),
    )
    .unwrap();
    let port = free_port(&ip(4));
    let dns = format!("{}:{port}", ip(4));
    let mut p = Proc::spawn(
        "tp-dnsd",
        Command::new(bin("tp-dnsd"))
            .args(["--listen", &dns])
            .arg("--zone")
            .arg(format!("example.com.={}", zone.display())),
    );
    wait_dns(&ip(4), port, "example.com.", &mut p);
    let _dns = p;

    let anchor = root.state.join("anchor");
    let anchor = anchor.to_str().unwrap();
    let full_chain = vec![
        (".".to_string(), addr(&root)),
        ("com.".to_string(), addr(&com)),
        ("example.com.".to_string(), addr(&example)),
    ];
    let entity_ = |ip: String, q: &str| (ip, q.to_string(), "entity".to_string());

    let (chain, pairs) = resolve(&["--anchors", anchor, "--dns", &dns, "www.example.com."]);
    assert_eq!(chain, full_chain);
    assert_eq!(pairs, vec![entity_(ip(10), &www_q)]);

    let (chain, pairs) = resolve(&["--anchors", anchor, "--dns", &dns, "mail.example.com."]);
    assert_eq!(chain, full_chain);
    assert_eq!(
        pairs,
        vec![entity_(ip(11), &mail_q1), entity_(ip(12), &mail_q2)]
    );

    // The key servers resolve too (keys only): their KS records, with their own chains.
    let (chain, pairs) = resolve(&["--anchors", anchor, "example.com."]);
    assert_eq!(chain, full_chain[..2]);
    assert_eq!(
        pairs,
        vec![(ip(3), example_q.clone(), "key server".to_string())]
    );
    let (chain, pairs) = resolve(&["--anchors", anchor, "com."]);
    assert_eq!(chain, full_chain[..1]);
    assert_eq!(
        pairs,
        vec![(ip(2), com_q.clone(), "key server".to_string())]
    );

    // Each parent logged the enrollments it took over UPDATE, with the TSIG key used.
    for (ks, member, key, ks_flag) in [
        (&root, "member=com.", "key=com-key.", "key_server=true"),
        (
            &com,
            "member=example.com.",
            "key=example-key.",
            "key_server=true",
        ),
        (
            &example,
            "member=www.example.com.",
            "key=hosts-key.",
            "key_server=false",
        ),
        (
            &example,
            "member=mail.example.com.",
            "key=hosts-key.",
            "key_server=false",
        ),
    ] {
        wait_log_line(ks, &["member enrolled (UPDATE)", member, key, ks_flag]);
    }

    // No zone file changed after start: every record came by UPDATE.
    for (ks, before) in [
        (&root, root_zone),
        (&com, com_zone),
        (&example, example_zone),
    ] {
        let after = std::fs::read_to_string(&ks.zone_file).unwrap();
        assert_eq!(after, before, "{}: the zone file changed", ks.name);
    }
    for ks in [&mut root, &mut com, &mut example] {
        assert!(ks.stop().is_some_and(|s| s.success()), "{}", ks.name);
    }
}
