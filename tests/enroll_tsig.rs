//! Online enrollment over DNS UPDATE signed with TSIG (docs/enrollment.md): real tpkd
//! processes, enrolled by `tp enroll`, by BIND's `nsupdate` and by Knot's `knsupdate`; every
//! bad UPDATE refused with its RCODE / TSIG error and a log line, and nothing stored changed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{KeyServer, bin, dig, ok, require_tool, run, tp, with_ext};

/// A key server at `ip` for `example.com.` with one TSIG key `child-key.` allowed `allow`,
/// started with its log in `<dir>/tpkd.log`. Returns the server and the secret text.
fn server(dir: &Path, ip: &str, allow: &str) -> (KeyServer, String) {
    std::fs::create_dir_all(dir).unwrap();
    let (_, secret) = common::tsig_secret(dir, "child-key.tsig", 7);
    let cfg = format!(
        "[[tsig]]\nname = \"child-key.\"\nalgorithm = \"hmac-sha256\"\nsecret_file = \"child-key.tsig\"\nallow = {allow}\n"
    );
    let mut ks = KeyServer::new(dir, "example.com.", ip, "", &cfg);
    ks.start_logged();
    (ks, secret)
}

/// Wait until the log holds `needle` (tracing writes asynchronously to the file).
fn wait_log(ks: &KeyServer, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let l = ks.log();
        if l.contains(needle) {
            return l;
        }
        assert!(Instant::now() < deadline, "log lacks `{needle}`:\n{l}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn keygen(ks: &KeyServer, name: &str, ip: &str) -> PathBuf {
    let prefix = ks.dir.join(format!("{name}{ip}"));
    ks.keygen_to(name, ip, &prefix);
    prefix
}

/// `tp enroll` with `ks`, signed with its TSIG key `child-key.`.
fn enroll_cmd(ks: &KeyServer) -> Command {
    let mut cmd = tp();
    cmd.arg("enroll")
        .args(["--server", &format!("{}:{}", ks.ip, ks.port)])
        .args(["--zone", "example.com.", "--tsig-key", "child-key."])
        .arg("--tsig-secret-file")
        .arg(ks.dir.join("child-key.tsig"));
    cmd
}

/// `tp enroll --requests dir` with `ks`, `parallel` in flight.
fn enroll_dir(ks: &KeyServer, dir: &Path, parallel: usize) -> std::process::Output {
    run(enroll_cmd(ks)
        .arg("--requests")
        .arg(dir)
        .args(["--parallel", &parallel.to_string()]))
}

fn tp_enroll(ks: &KeyServer, prefix: &Path, extra: &[&str]) -> std::process::Output {
    run(enroll_cmd(ks)
        .arg("--request")
        .arg(with_ext(prefix, "req"))
        .arg("--response")
        .arg(with_ext(prefix, "resp"))
        .args(extra))
}

fn finalize(prefix: &Path, out: &Path) -> String {
    ok(tp()
        .arg("finalize")
        .arg("--secret")
        .arg(with_ext(prefix, "secret"))
        .arg("--response")
        .arg(with_ext(prefix, "resp"))
        .arg("--out")
        .arg(out))
}

/// The hex of the request in a `.req` file.
fn request_hex(prefix: &Path) -> String {
    let text = std::fs::read_to_string(with_ext(prefix, "req")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("request = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string()
}

/// TPREQ RDATA (version 1, u16 length, request) as hex.
fn tpreq_hex(req_hex: &str) -> String {
    format!("01{:04x}{req_hex}", req_hex.len() / 2)
}

/// An nsupdate/knsupdate script adding `owner 0 TYPE65301 \# LEN HEX` (RFC 3597 form).
fn script(ks: &KeyServer, zone: &str, lines: &[String]) -> String {
    let mut s = format!("server {} {}\nzone {zone}\n", ks.ip, ks.port);
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str("send\nanswer\n");
    s
}

fn add_line(owner: &str, rdata_hex: &str) -> String {
    format!(
        "update add {owner} 0 TYPE65301 \\# {} {rdata_hex}",
        rdata_hex.len() / 2
    )
}

/// Run nsupdate over TCP with `key` (`hmac-sha256:NAME:SECRET`, or none): (status ok, stdout+stderr).
fn nsupdate(dir: &Path, key: Option<&str>, script: &str) -> (bool, String) {
    let f = dir.join("nsupdate.txt");
    std::fs::write(&f, script).unwrap();
    let mut cmd = Command::new(require_tool("nsupdate"));
    cmd.arg("-v");
    if let Some(k) = key {
        cmd.args(["-y", k]);
    }
    let out = run(cmd.arg(&f));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The response file's text from the TYPE65302 record an (k)nsupdate `answer` printed.
fn tpresp_text(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.contains("TYPE65302"))
        .unwrap_or_else(|| panic!("no TYPE65302 in:\n{out}"));
    let (_, rest) = line.split_once("\\#").unwrap();
    let mut words = rest.split_whitespace();
    let len: usize = words.next().unwrap().parse().unwrap();
    let hex_: String = words.collect();
    let bytes = hex::decode(hex_).unwrap();
    assert_eq!(bytes.len(), len);
    assert_eq!(bytes[0], 1, "TPRESP version");
    String::from_utf8(bytes[1..].to_vec()).unwrap()
}

fn served(ks: &KeyServer, name: &str) -> String {
    dig(&["+short", "-p", &ks.p(), &ks.at(), name, "TYPE65300"])
}

fn axfr(ks: &KeyServer) -> String {
    dig(&["+tcp", "-p", &ks.p(), &ks.at(), "example.com.", "AXFR"])
        .lines()
        .filter(|l| !l.starts_with(';'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn resolve_keys_only(ks: &KeyServer, name: &str) -> String {
    ok(tp()
        .args(["resolve", name, "--keys-only"])
        .arg("--anchors")
        .arg(ks.state.join("anchor")))
}

#[test]
fn a_member_enrolled_with_tp_enroll_is_served_at_once_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (ks, _) = server(dir.path(), "127.0.3.1", "[\"*.example.com.\"]");
    let prefix = keygen(&ks, "www.example.com.", "192.0.2.10");
    let out = tp_enroll(&ks, &prefix, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Served at once, without a reload.
    assert!(served(&ks, "www.example.com.").contains("\\# 144"));
    let key = dir.path().join("www.key");
    let fin = finalize(&prefix, &key);
    let (entity, _) = twinpeaks::keyfile::read_entity(&key).unwrap();
    let q = hex::encode(twinpeaks::clpkc::point_to_bytes(entity.public()));
    assert!(fin.contains(&q), "{fin}");
    let res = resolve_keys_only(&ks, "www.example.com.");
    assert!(res.contains("192.0.2.10") && res.contains(&q), "{res}");
    let l = wait_log(&ks, "member enrolled (UPDATE)");
    assert!(
        l.contains("member=www.example.com.") && l.contains("key=child-key."),
        "{l}"
    );
    // The secret is nowhere in the log.
    let secret = std::fs::read_to_string(ks.dir.join("child-key.tsig")).unwrap();
    assert!(!l.contains(secret.trim()));

    // The response file is the one `tp ctl enroll` writes: same fields, same form.
    let ctl_prefix = keygen(&ks, "ctl.example.com.", "192.0.2.11");
    ok(tp()
        .arg("ctl")
        .arg("--config")
        .arg(&ks.config)
        .arg("enroll")
        .arg("--request")
        .arg(with_ext(&ctl_prefix, "req"))
        .arg("--response")
        .arg(with_ext(&ctl_prefix, "resp")));
    let fields = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" = ").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        fields(&with_ext(&prefix, "resp")),
        fields(&with_ext(&ctl_prefix, "resp"))
    );
    finalize(&ctl_prefix, &dir.path().join("ctl.key"));

    // The same name and IP again: YXRRSET, nothing changes.
    let before = axfr(&ks);
    let again = tp_enroll(&ks, &prefix, &[]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("enrollment refused: YXRRSET"), "{err}");
    wait_log(
        &ks,
        "enrollment refused (YXRRSET): www.example.com. already has a key for 192.0.2.10",
    );
    assert_eq!(axfr(&ks), before);

    // A wrong secret: the answer is not signed with our key, and tp says so.
    let (wrong, _) = common::tsig_secret(dir.path(), "wrong.tsig", 99);
    let p2 = keygen(&ks, "w2.example.com.", "192.0.2.12");
    let bad = run(tp()
        .arg("enroll")
        .args(["--server", &format!("{}:{}", ks.ip, ks.port)])
        .args(["--zone", "example.com.", "--tsig-key", "child-key."])
        .arg("--tsig-secret-file")
        .arg(&wrong)
        .arg("--request")
        .arg(with_ext(&p2, "req"))
        .arg("--response")
        .arg(with_ext(&p2, "resp")));
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("the answer is not signed with key child-key."),
        "{err}"
    );
    assert!(!with_ext(&p2, "resp").exists());
    wait_log(&ks, "enrollment refused (NOTAUTH/BADSIG)");
    assert_eq!(axfr(&ks), before);
}

#[test]
fn a_child_key_server_enrolled_over_update_serves_a_verifiable_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (parent, _) = server(
        &dir.path().join("parent"),
        "127.0.3.2",
        "[\"*.example.com.\"]",
    );
    let cdir = dir.path().join("child");
    std::fs::create_dir_all(&cdir).unwrap();
    let name = "sub.example.com.";
    let cip = "127.0.3.3";
    let port = common::free_port(cip);
    let state = cdir.join("state");
    ok(tp()
        .args(["kgc-setup", "--name", name])
        .arg("--state")
        .arg(&state));
    let prefix = state.join("server");
    parent.keygen_to(name, cip, &prefix);
    let params = state.join("params");
    let out = tp_enroll(
        &parent,
        &prefix,
        &[
            "--key-server-port",
            &port.to_string(),
            "--child-params",
            params.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    finalize(&prefix, &state.join("server.key"));
    wait_log(&parent, "key_server=true");
    std::fs::write(
        cdir.join("zone.keys"),
        format!("$ORIGIN {name}\n$TTL 3600\n@ IN SOA ks.{name} hostmaster.{name} 1 7200 3600 1209600 300\n@ IN NS ks.{name}\nks IN A {cip}\n"),
    )
    .unwrap();
    std::fs::write(
        cdir.join("tpkd.toml"),
        format!("name = \"{name}\"\nlisten = [\"{cip}:{port}\"]\nstate_dir = \"state\"\nzone_file = \"zone.keys\"\n"),
    )
    .unwrap();
    let mut child = KeyServer {
        dir: cdir.clone(),
        name: name.into(),
        ip: cip.into(),
        port,
        config: cdir.join("tpkd.toml"),
        zone_file: cdir.join("zone.keys"),
        state: state.clone(),
        proc_: None,
    };
    child.issue_to_file("host.sub.example.com.", "192.0.2.20");
    child.start();
    // The parent refers to the child; the chain from the parent's anchor verifies.
    let res = resolve_keys_only(&parent, "host.sub.example.com.");
    assert!(res.contains("192.0.2.20"), "{res}");
    assert!(res.contains("sub.example.com."), "{res}");
}

#[test]
fn nsupdate_and_knsupdate_enroll_with_the_record_in_rfc3597_form() {
    let dir = tempfile::tempdir().unwrap();
    let (ks, secret) = server(dir.path(), "127.0.3.4", "[\"*.example.com.\"]");
    let key = format!("hmac-sha256:child-key.:{secret}");
    for (tool, name, ip) in [
        ("nsupdate", "ns.example.com.", "192.0.2.30"),
        ("knsupdate", "knot.example.com.", "192.0.2.31"),
    ] {
        let prefix = keygen(&ks, name, ip);
        let s = script(
            &ks,
            "example.com.",
            &[add_line(name, &tpreq_hex(&request_hex(&prefix)))],
        );
        let out = if tool == "nsupdate" {
            let (ok_, out) = nsupdate(dir.path(), Some(&key), &s);
            assert!(ok_, "{out}");
            out
        } else {
            let f = dir.path().join("knsupdate.txt");
            std::fs::write(&f, &s).unwrap();
            let out = run(Command::new(require_tool("knsupdate"))
                .args(["-v", "-y", &key])
                .arg(&f));
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{text}");
            text
        };
        assert!(out.contains("NOERROR"), "{tool}:\n{out}");
        std::fs::write(with_ext(&prefix, "resp"), tpresp_text(&out)).unwrap();
        let keyfile = dir.path().join(format!("{name}key"));
        finalize(&prefix, &keyfile);
        let res = resolve_keys_only(&ks, name);
        assert!(res.contains(ip), "{tool}: {res}");
    }
}

#[test]
fn bad_updates_are_refused_with_their_rcodes_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (ks, secret) = server(
        dir.path(),
        "127.0.3.5",
        "[\"*.hosts.example.com.\", \"www.example.com.\"]",
    );
    let key = format!("hmac-sha256:child-key.:{secret}");
    let www = keygen(&ks, "www.example.com.", "192.0.2.40");
    let good = tpreq_hex(&request_hex(&www));
    let before = axfr(&ks);
    let d = dir.path();

    let expect = |what: &str,
                  key: Option<&str>,
                  lines: &[String],
                  zone: &str,
                  out_has: &str,
                  log_has: &str| {
        let (ok_, out) = nsupdate(d, key, &script(&ks, zone, lines));
        assert!(!ok_, "{what}: accepted:\n{out}");
        assert!(
            out.contains(out_has),
            "{what}: expected `{out_has}`:\n{out}"
        );
        wait_log(&ks, log_has);
        assert_eq!(axfr(&ks), before, "{what}: the zone changed");
    };
    let add_www = || vec![add_line("www.example.com.", &good)];

    expect(
        "unsigned",
        None,
        &add_www(),
        "example.com.",
        "update failed: REFUSED",
        "enrollment refused (REFUSED): UPDATE is not TSIG-signed",
    );
    let (_, wrong) = common::tsig_secret(d, "wrong.tsig", 200);
    expect(
        "wrong MAC",
        Some(&format!("hmac-sha256:child-key.:{wrong}")),
        &add_www(),
        "example.com.",
        "NOTAUTH(BADSIG)",
        "enrollment refused (NOTAUTH/BADSIG)",
    );
    expect(
        "unknown key",
        Some(&format!("hmac-sha256:other-key.:{secret}")),
        &add_www(),
        "example.com.",
        "NOTAUTH(BADKEY)",
        "enrollment refused (NOTAUTH/BADKEY): unknown TSIG key or algorithm peer=127.0.0.1",
    );
    expect(
        "wrong algorithm",
        Some(&format!("hmac-sha512:child-key.:{secret}")),
        &add_www(),
        "example.com.",
        "NOTAUTH(BADKEY)",
        "algorithm=hmac-sha512",
    );
    expect(
        "zone not served",
        Some(&key),
        &[add_line("www.example.org.", &good)],
        "example.org.",
        "NOTAUTH",
        "enrollment refused (NOTAUTH): zone example.org. IN is not served here",
    );
    expect(
        "name outside the zone",
        Some(&key),
        &[add_line("www.example.org.", &good)],
        "example.com.",
        "NOTZONE",
        "enrollment refused (NOTZONE): www.example.org. is not in zone example.com.",
    );
    let mail = keygen(&ks, "mail.example.com.", "192.0.2.41");
    expect(
        "name not allowed for the key",
        Some(&key),
        &[add_line(
            "mail.example.com.",
            &tpreq_hex(&request_hex(&mail)),
        )],
        "example.com.",
        "update failed: REFUSED",
        "enrollment refused (REFUSED): key child-key. may not enroll mail.example.com.",
    );
    expect(
        "owner is not the request's name",
        Some(&key),
        &[add_line("a.hosts.example.com.", &good)],
        "example.com.",
        "update failed: REFUSED",
        "the request is for www.example.com., the record's owner is a.hosts.example.com.",
    );
    expect(
        "malformed TPREQ",
        Some(&key),
        &[add_line("www.example.com.", "010003aabbcc")],
        "example.com.",
        "update failed: FORMERR",
        "enrollment refused (FORMERR): malformed TPREQ",
    );
    expect(
        "unknown TPREQ version",
        Some(&key),
        &[add_line("www.example.com.", &format!("02{}", &good[2..]))],
        "example.com.",
        "update failed: FORMERR",
        "TPREQ version 2 is not supported",
    );
    // One bit of the proof of possession (the request's last 64 bytes) flipped.
    let mut pop = hex::decode(&good).unwrap();
    let at = pop.len() - 40;
    pop[at] ^= 0x01;
    expect(
        "invalid proof of possession",
        Some(&key),
        &[add_line("www.example.com.", &hex::encode(pop))],
        "example.com.",
        "update failed: REFUSED",
        "proof of possession of the secret value does not verify",
    );
    // A key-server part whose params are another key server's.
    let other = d.join("other");
    ok(tp()
        .args(["kgc-setup", "--name", "other.hosts.example.com."])
        .arg("--state")
        .arg(&other));
    let params_hex = std::fs::read_to_string(other.join("params"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("params = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let with_ks = format!("{good}1f90{:04x}{params_hex}", params_hex.len() / 2);
    expect(
        "child params for another name",
        Some(&key),
        &[add_line("www.example.com.", &with_ks)],
        "example.com.",
        "update failed: REFUSED",
        "child key server params are for other.hosts.example.com., the request for www.example.com.",
    );
    expect(
        "key-server part cut short",
        Some(&key),
        &[add_line("www.example.com.", &format!("{good}1f90"))],
        "example.com.",
        "update failed: FORMERR",
        "TPREQ is truncated: params length",
    );
    expect(
        "not an enrollment (an A record)",
        Some(&key),
        &["update add www.example.com. 300 A 192.0.2.1".to_string()],
        "example.com.",
        "update failed: REFUSED",
        "not an enrollment: update record www.example.com. IN A",
    );
    expect(
        "not an enrollment (a delete)",
        Some(&key),
        &["update delete www.example.com. TYPE65300".to_string()],
        "example.com.",
        "update failed: REFUSED",
        "not an enrollment: update record www.example.com. ANY TYPE65300",
    );
    expect(
        "two records",
        Some(&key),
        &[
            add_www(),
            vec!["update add www.example.com. 300 A 192.0.2.1".to_string()],
        ]
        .concat(),
        "example.com.",
        "update failed: REFUSED",
        "not an enrollment: 2 update records",
    );
    expect(
        "oversize",
        Some(&key),
        &[add_line("www.example.com.", &"00".repeat(5000))],
        "example.com.",
        "update failed: REFUSED",
        "enrollment refused (REFUSED): UPDATE too large",
    );

    // Over UDP without EDNS the answer cannot fit: REFUSED with TC, before anything is done.
    {
        let f = d.join("udp.txt");
        std::fs::write(&f, script(&ks, "example.com.", &add_www())).unwrap();
        let out = run(Command::new(require_tool("nsupdate"))
            .args(["-y", &key])
            .arg(&f));
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains("status: REFUSED") && text.contains("flags: qr tc"),
            "{text}"
        );
        wait_log(
            &ks,
            "enrollment refused (REFUSED, TC): the answer does not fit this UDP message",
        );
        assert_eq!(axfr(&ks), before, "UDP: the zone changed");
    }

    // Signed an hour ago: BADTIME, answered signed with the same key.
    {
        use hickory_proto::op::{Message, OpCode, Query, ResponseCode, UpdateMessage};
        use hickory_proto::rr::rdata::NULL;
        use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
        use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
        use hickory_proto::serialize::binary::BinEncodable;
        let secret_bytes: Vec<u8> = (0..32u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(7))
            .collect();
        let signer = TSigner::new(
            secret_bytes,
            TsigAlgorithm::HmacSha256,
            Name::from_ascii("child-key.").unwrap(),
            300,
        )
        .unwrap();
        let mut zone = Query::new();
        zone.set_name(Name::from_ascii("example.com.").unwrap())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        let mut msg = Message::query();
        msg.metadata.op_code = OpCode::Update;
        msg.add_zone(zone);
        msg.add_update(Record::from_rdata(
            Name::from_ascii("www.example.com.").unwrap(),
            0,
            RData::Unknown {
                code: RecordType::Unknown(65301),
                rdata: NULL::with(hex::decode(&good).unwrap()),
            },
        ));
        let now = twinpeaks::time::now();
        msg.finalize(&signer, now - 3600).unwrap();
        let bytes = msg.to_bytes().unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        sock.send_to(&bytes, (ks.ip.as_str(), ks.port)).unwrap();
        let mut buf = [0u8; 4096];
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        let resp = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(resp.metadata.response_code, ResponseCode::NotAuth);
        let tsig = resp.signature().expect("BADTIME answers are signed");
        assert_eq!(tsig.data.error, Some(TsigError::BadTime));
        assert!(!tsig.data.mac.is_empty(), "signed with the request's key");
        wait_log(&ks, "enrollment refused (NOTAUTH/BADTIME)");
        assert_eq!(axfr(&ks), before, "BADTIME: the zone changed");
    }

    // And the good one goes through, once.
    let (ok_, out) = nsupdate(d, Some(&key), &script(&ks, "example.com.", &add_www()));
    assert!(ok_, "{out}");
    assert_ne!(axfr(&ks), before);
    let after = axfr(&ks);
    expect_dup(&ks, d, &key, &add_www(), &after);
    // What is stored is what was served: the same records and serial after a restart (in
    // the store's order).
    let mut ks = ks;
    ks.stop();
    ks.start_logged();
    let sorted = |z: &str| {
        let mut v: Vec<String> = z.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&axfr(&ks)), sorted(&after));
}

fn expect_dup(ks: &KeyServer, d: &Path, key: &str, lines: &[String], after: &str) {
    let (ok_, out) = nsupdate(d, Some(key), &script(ks, "example.com.", lines));
    assert!(!ok_ && out.contains("update failed: YXRRSET"), "{out}");
    wait_log(ks, "enrollment refused (YXRRSET)");
    assert_eq!(axfr(ks), after);
}

#[test]
fn tsig_keys_are_checked_at_start_and_a_readable_secret_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d).unwrap();
    let (secret_file, _) = common::tsig_secret(d, "k.tsig", 3);
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ks = KeyServer::new(
        d,
        "example.com.",
        "127.0.3.6",
        "",
        "[[tsig]]\nname = \"k.\"\nsecret_file = \"k.tsig\"\nallow = [\"*.example.com.\"]\n",
    );
    let out = run(Command::new(bin("tpkd")).arg("--config").arg(&ks.config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("k.tsig") && err.contains("chmod 600"), "{err}");
    // 16 zero bytes: long enough; "AAAA" must never appear in an error.
    let key = |body: &str| format!("[[tsig]]\nname = \"k.\"\n{body}\n");
    let good = "secret = \"AAAAAAAAAAAAAAAAAAAAAA==\"";
    let allow = "allow = [\"*.example.com.\"]";
    let cases: Vec<(String, &str)> = vec![
        (
            key(&format!("{good}\nsecret_file = \"k.tsig\"\n{allow}")),
            "give exactly one of secret_file and secret",
        ),
        (
            key(&format!("algorithm = \"hmac-md5\"\n{good}\n{allow}")),
            "TSIG algorithm `hmac-md5` is not supported",
        ),
        (
            key(&format!("{good}\nallow = []")),
            "allow: give at least one name pattern",
        ),
        (
            format!(
                "{}{}",
                key(&format!("{good}\n{allow}")),
                key(&format!("{good}\n{allow}")).replace("\"k.\"", "\"K\"")
            ),
            "a key of this name is already configured",
        ),
        (
            key(&format!("secret = \"not base64!\"\n{allow}")),
            "the TSIG secret is not base64",
        ),
        (
            key(&format!("secret = \"AAAA\"\n{allow}")),
            "the TSIG secret is 3 bytes; give at least 16",
        ),
        (
            key(&format!("{good}\nallow = [\"*.example.org.\"]")),
            "is outside the zone example.com.",
        ),
        (
            key(&format!("{good}\nallow = [\"www.*.example.com.\"]")),
            "`*.` may only start a pattern",
        ),
        (key(&format!("{good}\n{allow}\nfudge = 0")), "fudge: 0 s"),
    ];
    for (i, (extra, says)) in cases.into_iter().enumerate() {
        let sub = d.join(format!("c{i}"));
        let ks = KeyServer::new(&sub, "example.com.", "127.0.3.6", "", &extra);
        let out = run(Command::new(bin("tpkd")).arg("--config").arg(&ks.config));
        assert!(!out.status.success(), "{extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{extra}: {err}");
        assert!(!err.contains("AAAA"), "a secret in an error: {err}");
    }
}

/// `tp enroll --requests DIR`: a fleet enrolled in one run, many enrollments in flight, so the
/// key server commits them in groups. Two requests for the same name and IP in the same burst:
/// exactly one is enrolled, the other refused with YXRRSET, and nothing is served twice.
#[test]
fn a_directory_of_requests_is_enrolled_in_one_run_and_a_duplicate_in_the_burst_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut ks, _) = server(&d.join("ks"), "127.0.3.20", "[\"*.example.com.\"]");
    let fleet = d.join("fleet");
    std::fs::create_dir_all(&fleet).unwrap();
    let n = 40;
    for i in 0..n {
        ks.keygen_to(
            &format!("dev{i}.example.com."),
            &format!("10.9.0.{i}"),
            &fleet.join(format!("dev{i}")),
        );
    }
    // A second key for dev7 at the same IP, another secret value.
    ks.keygen_to("dev7.example.com.", "10.9.0.7", &fleet.join("dev7-again"));
    let serial = |ks: &KeyServer| -> u32 {
        let out = dig(&["-p", &ks.p(), &ks.at(), "example.com.", "SOA", "+short"]);
        out.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    let s0 = serial(&ks);
    let out = enroll_dir(&ks, &fleet, 16);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "one request must fail: {stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!("{n} enrolled by")) && stdout.contains("1 failed"),
        "{stdout}"
    );
    assert!(
        stderr.contains("dev7") && stderr.contains("YXRRSET"),
        "the duplicate is named with its RCODE: {stderr}"
    );
    assert!(stderr.contains("1 of the requests failed"), "{stderr}");
    // Which of the two dev7 requests won is up to the burst; the winner's response
    // finalizes to the served key, the loser has no response file.
    let winners: Vec<&str> = ["dev7", "dev7-again"]
        .into_iter()
        .filter(|p| fleet.join(format!("{p}.resp")).exists())
        .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    let params = twinpeaks::keyfile::read_params(&ks.params()).unwrap();
    for i in 0..n {
        let name = format!("dev{i}.example.com.");
        let prefix = fleet.join(if i == 7 {
            winners[0].to_string()
        } else {
            format!("dev{i}")
        });
        let key = with_ext(&prefix, "key");
        finalize(&prefix, &key);
        let (k, _) = twinpeaks::keyfile::read_entity(&key).unwrap();
        let out = dig(&["-p", &ks.p(), &ks.at(), &name, "TYPE65300"]);
        let recs = common::rdata_hex(&out);
        assert_eq!(recs.len(), 1, "{name} served once:\n{out}");
        let rdata = hex::decode(&recs[0].1).unwrap();
        let rec = twinpeaks::record::KeyRecord::from_wire(&rdata).unwrap();
        assert_eq!(
            &rec.public_key(&name, &params).unwrap(),
            k.public(),
            "{name}"
        );
    }
    let s1 = serial(&ks);
    assert!(s1 > s0, "serial {s1} did not move past {s0}");
    // Group commits: fewer generation steps than enrollments is the point, never more.
    assert!(s1 - s0 <= n, "{} steps for {n} enrollments", s1 - s0);
    let l = wait_log(&ks, "already has a key for 10.9.0.7");
    assert!(l.contains("YXRRSET"), "{l}");
    ks.stop();
}

/// Unauthenticated refusals cost a peer one datagram each: tpkd answers every one (REFUSED)
/// but logs at most ten a minute of each kind, and says when it stops.
#[test]
fn unsigned_update_floods_are_answered_but_not_logged_line_for_line() {
    use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};
    use hickory_proto::serialize::binary::BinDecodable;
    let dir = tempfile::tempdir().unwrap();
    let (ks, _) = server(dir.path(), "127.0.3.21", "[\"*.example.com.\"]");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for id in 0..25u16 {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.op_code = OpCode::Update;
        m.add_query(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::SOA,
        ));
        sock.send_to(&m.to_vec().unwrap(), (ks.ip.as_str(), ks.port))
            .unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        let answer = Message::from_bytes(&buf[..n]).unwrap();
        assert_eq!(answer.metadata.id, id);
        assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
    }
    let l = wait_log(&ks, "(no more such lines this minute)");
    // Ten a minute: 10, or up to 20 if the minute turned during the burst.
    let lines = l.matches("UPDATE is not TSIG-signed").count();
    assert!(
        (10..=20).contains(&lines),
        "{lines} lines for 25 datagrams:\n{l}"
    );
}

/// In one burst, a request the zone cannot take (a name below a delegation: only the zone
/// build finds it) refuses only itself: a group commit it lands in is retried one enrollment
/// at a time, so every other member of the burst is enrolled.
#[test]
fn a_bad_request_in_a_burst_refuses_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ks, _) = server(&d.join("ks"), "127.0.3.22", "[\"*.example.com.\"]");
    // A delegation to sub.example.com.
    let child = d.join("child");
    ok(tp()
        .args(["kgc-setup", "--name", "sub.example.com."])
        .arg("--state")
        .arg(&child));
    let prefix = ks.keygen("sub.example.com.", "127.0.3.23", "sub");
    let out = tp_enroll(
        &ks,
        &prefix,
        &[
            "--key-server-port",
            "5300",
            "--child-params",
            child.join("params").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let fleet = d.join("fleet");
    std::fs::create_dir_all(&fleet).unwrap();
    let n = 24;
    for i in 0..n {
        ks.keygen_to(
            &format!("dev{i}.example.com."),
            &format!("10.9.1.{i}"),
            &fleet.join(format!("dev{i}")),
        );
    }
    ks.keygen_to("www.sub.example.com.", "10.9.1.200", &fleet.join("below"));
    let out = enroll_dir(&ks, &fleet, 25);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!("{n} enrolled by")) && stdout.contains("1 failed"),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.contains("below.req") && stderr.contains("REFUSED"),
        "{stderr}"
    );
    let l = wait_log(
        &ks,
        "lies below the delegation to key server sub.example.com.",
    );
    assert!(l.contains("www.sub.example.com."), "{l}");
    for i in 0..n {
        let out = dig(&[
            "-p",
            &ks.p(),
            &ks.at(),
            &format!("dev{i}.example.com."),
            "TYPE65300",
        ]);
        assert_eq!(common::rdata_hex(&out).len(), 1, "dev{i}:\n{out}");
    }
}

/// RFC 6891 §6.1.3 on the UPDATE path too: an UPDATE with EDNS version 1 gets BADVERS, and
/// nothing is enrolled.
#[test]
fn an_update_with_an_unknown_edns_version_gets_badvers() {
    use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};
    use hickory_proto::serialize::binary::BinDecodable;
    let dir = tempfile::tempdir().unwrap();
    let (ks, _) = server(dir.path(), "127.0.3.24", "[\"*.example.com.\"]");
    let before = axfr(&ks);
    let mut m = Message::query();
    m.metadata.id = 7;
    m.metadata.op_code = OpCode::Update;
    m.add_query(Query::query(
        Name::from_ascii("example.com.").unwrap(),
        RecordType::SOA,
    ));
    let mut edns = Edns::new();
    edns.set_version(1);
    m.edns = Some(edns);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(&m.to_vec().unwrap(), (ks.ip.as_str(), ks.port))
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    let answer = Message::from_bytes(&buf[..n]).unwrap();
    // 16 is BADVERS in an answer's header and OPT (hickory names the code BADSIG, its TSIG
    // meaning).
    assert_eq!(
        u16::from(answer.metadata.response_code),
        u16::from(ResponseCode::BADVERS)
    );
    assert!(answer.edns.is_some(), "BADVERS comes in an OPT");
    assert_eq!(axfr(&ks), before);
}
