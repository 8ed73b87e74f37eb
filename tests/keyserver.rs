//! The key server end to end: the real tpkd process, queried by the real dig and kdig.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::{KeyServer, bin, dig, ok, rdata_hex, require_tool, run, tp};
use twinpeaks::record::KeyRecord;
use twinpeaks::resolver::anchors;
use twinpeaks::time;

/// A key server's anchor: its params and its own key.
struct KeyServerRef {
    params: twinpeaks::clpkc::KgcParams,
    q: twinpeaks::clpkc::PublicKey,
}

fn anchor(ks: &KeyServer) -> KeyServerRef {
    let a = anchors::read(&ks.state.join("anchor"), time::now())
        .expect("anchor")
        .remove(0);
    KeyServerRef {
        params: a.server.params,
        q: a.server.identities[0].1,
    }
}

/// Decode and verify every TPKEY record of a dig answer against the key server.
fn verify_all(out: &str, ks: &KeyServerRef) -> Vec<KeyRecord> {
    let recs = rdata_hex(out);
    assert!(!recs.is_empty(), "no TYPE65300 in:\n{out}");
    recs.into_iter()
        .map(|(owner, hex_)| {
            let rec = KeyRecord::from_wire(&hex::decode(hex_).unwrap()).expect("decodes");
            rec.verify(&owner, &ks.params, &ks.q, time::now())
                .unwrap_or_else(|e| panic!("{owner}: {e}"));
            rec
        })
        .collect()
}

#[test]
fn dig_and_kdig_get_verifiable_rfc3597_records_over_udp_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = KeyServer::new(dir.path(), "example.test.", "127.0.0.21", "", "");
    let www = ks.issue_to_file("www.example.test.", "192.0.2.10");
    ks.issue_to_file("mail.example.test.", "192.0.2.11");
    ks.issue_to_file("mail.example.test.", "2001:db8::11");
    ks.start();
    let a = anchor(&ks);

    let udp = dig(&["-p", &ks.p(), &ks.at(), "www.example.test", "TYPE65300"]);
    assert!(
        udp.contains("status: NOERROR") && udp.contains("flags: qr aa"),
        "{udp}"
    );
    assert!(
        udp.contains("TYPE65300 \\# 144 "),
        "RFC 3597 form expected:\n{udp}"
    );
    let recs = verify_all(&udp, &a);
    // The served W derives the same Q as the private key finalized from the response.
    let (key, _) = twinpeaks::keyfile::read_entity(&www).unwrap();
    let q = recs[0].public_key("www.example.test.", &a.params).unwrap();
    assert_eq!(&q, key.public());

    let tcp = dig(&[
        "+tcp",
        "-p",
        &ks.p(),
        &ks.at(),
        "mail.example.test",
        "TYPE65300",
    ]);
    assert!(tcp.contains("(TCP)"), "{tcp}");
    let ips: Vec<String> = verify_all(&tcp, &a)
        .iter()
        .map(|r| r.ip.to_string())
        .collect();
    assert_eq!(ips.len(), 2, "one record per IP: {ips:?}");
    assert!(ips.contains(&"192.0.2.11".into()) && ips.contains(&"2001:db8::11".into()));

    for proto in ["+notcp", "+tcp"] {
        let k = ok(Command::new(require_tool("kdig")).args([
            proto,
            "-p",
            &ks.p(),
            &ks.at(),
            "www.example.test",
            "TYPE65300",
        ]));
        assert!(k.contains("NOERROR"), "{k}");
        let line = k
            .lines()
            .find(|l| !l.starts_with(';') && l.contains("TYPE65300"))
            .unwrap_or_else(|| panic!("{k}"));
        let hex_: String = line
            .split("\\#")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .skip(1)
            .collect();
        assert_eq!(
            KeyRecord::from_wire(&hex::decode(hex_).unwrap()).unwrap(),
            recs[0]
        );
    }

    // The decoded, verified view of our own tool.
    let view = ok(tp().args([
        "dig",
        "www.example.test",
        "--server",
        &format!("{}:{}", ks.ip, ks.port),
    ]));
    assert!(
        view.contains("ip 192.0.2.10") && view.contains("RFC 3597: \\# 144"),
        "{view}"
    );
    let anchors = ks.state.join("anchor");
    let verified = ok(tp()
        .args(["dig", "mail.example.test", "--ip", "2001:db8::11"])
        .arg("--anchors")
        .arg(&anchors));
    assert!(
        verified.contains("signature: valid") && verified.contains("2001:db8::11"),
        "{verified}"
    );
}

#[test]
fn nxdomain_and_nodata_carry_the_soa() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = KeyServer::new(dir.path(), "example.test.", "127.0.0.22", "", "");
    ks.issue_to_file("a.b.example.test.", "192.0.2.1");
    ks.start();
    let nx = dig(&["-p", &ks.p(), &ks.at(), "nope.example.test", "TYPE65300"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("IN\tSOA"),
        "{nx}"
    );
    // RFC 2308: the SOA of a negative answer carries min(TTL, MINIMUM) = 300; asked for
    // directly, its own TTL.
    assert!(nx.contains("example.test.\t\t300\tIN\tSOA"), "{nx}");
    let soa = dig(&["-p", &ks.p(), &ks.at(), "example.test", "SOA"]);
    assert!(soa.contains("example.test.\t\t3600\tIN\tSOA"), "{soa}");
    let nodata = dig(&["-p", &ks.p(), &ks.at(), "a.b.example.test", "A"]);
    assert!(
        nodata.contains("status: NOERROR")
            && nodata.contains("ANSWER: 0")
            && nodata.contains("IN\tSOA"),
        "{nodata}"
    );
    // b.example.test exists as an empty non-terminal: NODATA, not NXDOMAIN.
    let ent = dig(&["-p", &ks.p(), &ks.at(), "b.example.test", "TYPE65300"]);
    assert!(
        ent.contains("status: NOERROR") && ent.contains("ANSWER: 0"),
        "{ent}"
    );
    // The NS name's glue is served (secondaries want it); no other address records exist.
    let glue = dig(&["+short", "-p", &ks.p(), &ks.at(), "ks.example.test", "A"]);
    assert_eq!(glue.trim(), "127.0.0.22");
    let outside = dig(&["-p", &ks.p(), &ks.at(), "www.example.org", "TYPE65300"]);
    assert!(outside.contains("status: REFUSED"), "{outside}");
    let chaos = dig(&[
        "-p",
        &ks.p(),
        &ks.at(),
        "-c",
        "CH",
        "a.b.example.test",
        "TYPE65300",
    ]);
    assert!(chaos.contains("status: REFUSED"), "{chaos}");
}

#[test]
fn parent_refers_to_child_key_server_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("parent");
    let cdir = dir.path().join("child");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::create_dir_all(&cdir).unwrap();
    let mut parent = KeyServer::new(&pdir, "test.", "127.0.0.23", "", "");
    // The child: its own KGC, its key issued by the parent as a key-server record.
    let child_port = common::free_port("127.0.0.24");
    let cstate = cdir.join("state");
    ok(tp()
        .args(["kgc-setup", "--name", "example.test."])
        .arg("--state")
        .arg(&cstate));
    ok(tp()
        .args(["keygen", "--name", "example.test.", "--ip", "127.0.0.24"])
        .arg("--issuer-params")
        .arg(parent.params())
        .arg("--out")
        .arg(cstate.join("server")));
    ok(tp()
        .arg("issue")
        .arg("--state")
        .arg(&parent.state)
        .arg("--request")
        .arg(cstate.join("server.req"))
        .arg("--zone-file")
        .arg(&parent.zone_file)
        .arg("--response")
        .arg(cstate.join("server.resp"))
        .args(["--key-server-port", &child_port.to_string()])
        .arg("--child-params")
        .arg(cstate.join("params")));
    ok(tp()
        .arg("finalize")
        .arg("--secret")
        .arg(cstate.join("server.secret"))
        .arg("--response")
        .arg(cstate.join("server.resp"))
        .arg("--out")
        .arg(cstate.join("server.key")));
    std::fs::write(cdir.join("zone.keys"), "$ORIGIN example.test.\n@ 3600 IN SOA ks hostmaster 1 7200 3600 1209600 300\n@ 3600 IN NS ks\n").unwrap();
    std::fs::write(cdir.join("tpkd.toml"), format!("name = \"example.test.\"\nlisten = [\"127.0.0.24:{child_port}\"]\nstate_dir = \"state\"\nzone_file = \"zone.keys\"\n")).unwrap();
    let mut child = KeyServer {
        dir: cdir.clone(),
        name: "example.test.".into(),
        ip: "127.0.0.24".into(),
        port: child_port,
        config: cdir.join("tpkd.toml"),
        zone_file: cdir.join("zone.keys"),
        state: cstate.clone(),
        proc_: None,
    };
    child.issue_to_file("www.example.test.", "192.0.2.80");
    parent.start();
    child.start();

    let referral = dig(&[
        "+norec",
        "-p",
        &parent.p(),
        &parent.at(),
        "www.example.test",
        "TYPE65300",
    ]);
    assert!(
        referral.contains("ANSWER: 0") && referral.contains("AUTHORITY: 1"),
        "{referral}"
    );
    assert!(
        !referral.contains("flags: qr aa"),
        "a referral is not authoritative:\n{referral}"
    );
    let auth: Vec<&str> = referral
        .lines()
        .skip_while(|l| !l.contains("AUTHORITY SECTION"))
        .collect();
    assert!(
        auth.iter()
            .any(|l| l.starts_with("example.test.") && l.contains("TYPE65300 \\# 179")),
        "{referral}"
    );
    // The child's record verifies under the parent and names the child's address and port.
    let a = anchor(&parent);
    let rec = verify_all(&auth.join("\n"), &a).remove(0);
    assert_eq!(rec.ip.to_string(), "127.0.0.24");
    assert_eq!(rec.key_server.as_ref().unwrap().port, child_port);

    let chain = ok(tp()
        .args(["dig", "www.example.test"])
        .arg("--anchors")
        .arg(parent.state.join("anchor")));
    assert!(
        chain.contains("key server test.") && chain.contains("key server example.test."),
        "{chain}"
    );
    assert!(
        chain.contains("signature: valid") && chain.contains("ip 192.0.2.80"),
        "{chain}"
    );
}

#[test]
fn axfr_streams_a_large_zone_in_several_messages_and_obeys_the_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("gen");
    ok(tp()
        .args(["gen-zone", "--count", "1000", "--origin", "bench.test."])
        .arg("--out")
        .arg(&g));
    let port = common::free_port("127.0.0.25");
    let cfg = std::fs::read_to_string(g.join("tpkd.toml"))
        .unwrap()
        .replace("127.0.0.1:5300", &format!("127.0.0.25:{port}"))
        .replace("[\"127.0.0.0/8\"]", "[\"127.0.0.1/32\"]");
    std::fs::write(g.join("tpkd.toml"), cfg).unwrap();
    let mut p = common::Proc::spawn(
        "tpkd",
        Command::new(bin("tpkd"))
            .arg("--config")
            .arg(g.join("tpkd.toml")),
    );
    common::wait_dns("127.0.0.25", port, "bench.test.", &mut p);

    let xfr = dig(&[
        "-b",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "@127.0.0.25",
        "bench.test",
        "AXFR",
    ]);
    let keys = xfr
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("TYPE65300"))
        .count();
    assert_eq!(
        keys,
        1001,
        "1000 members and the apex record:\n{}",
        &xfr[xfr.len().saturating_sub(400)..]
    );
    let size = xfr
        .lines()
        .find(|l| l.contains("XFR size"))
        .expect("XFR size line");
    let messages: usize = size
        .split("messages ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(messages > 4, "several messages expected: {size}");
    assert_eq!(
        xfr.lines().filter(|l| l.contains("\tSOA\t")).count(),
        2,
        "SOA first and last"
    );

    let refused = run(Command::new(require_tool("dig")).args([
        "+time=2",
        "+tries=1",
        "-b",
        "127.0.0.2",
        "-p",
        &port.to_string(),
        "@127.0.0.25",
        "bench.test",
        "AXFR",
    ]));
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(
        text.contains("Transfer failed") && !text.contains("TYPE65300"),
        "{text}"
    );
}

fn reload(ks: &KeyServer) -> std::process::Output {
    run(tp()
        .arg("ctl")
        .arg("--config")
        .arg(&ks.config)
        .arg("reload"))
}

#[test]
fn a_bad_zone_is_refused_whole_and_the_old_zone_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = KeyServer::new(dir.path(), "example.test.", "127.0.0.26", "", "");
    ks.issue_to_file("www.example.test.", "192.0.2.10");
    ks.start();
    let before = dig(&[
        "+short",
        "-p",
        &ks.p(),
        &ks.at(),
        "www.example.test",
        "TYPE65300",
    ]);
    assert!(before.contains("\\# 144"), "{before}");
    let good = std::fs::read_to_string(&ks.zone_file).unwrap();

    // A forged signature: one hex digit of the last field changed.
    let line = good
        .lines()
        .find(|l| l.starts_with("www."))
        .unwrap()
        .to_string();
    let lineno = good.lines().position(|l| l == line).unwrap() + 1;
    let mut forged = line.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let extra = "new.example.test. 3600 IN TPKEY 1 ENTITY 192.0.2.99 20200101000000 20300101000000 00 00 -\n";
    // W with a good prefix but no point on the curve, under a copied signature.
    let off_curve = (1u8..)
        .map(|x| format!("02{}{x:02x}", "00".repeat(31)))
        .find(|h| twinpeaks::clpkc::point_from_bytes(&hex::decode(h).unwrap()).is_err())
        .unwrap();
    let mut fields: Vec<&str> = line.split_whitespace().collect();
    fields[0] = "off.example.test.";
    fields[10] = &off_curve;
    let off_line = fields.join(" ") + "\n";
    std::fs::write(
        &ks.zone_file,
        good.replace(&line, &forged) + extra + &off_line,
    )
    .unwrap();
    let out = reload(&ks);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("zone.keys:{lineno}: signature does not verify")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "zone.keys:{}: TPKEY: issuer digest must be 32 bytes",
            lineno + 1
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "zone.keys:{}: W is not a valid compressed P-256 point",
            lineno + 2
        )),
        "{err}"
    );
    assert!(err.contains("old zone keeps serving"), "{err}");
    let check = run(tp()
        .arg("zone-check")
        .arg("--no-store")
        .arg("--config")
        .arg(&ks.config));
    assert!(
        !check.status.success()
            && String::from_utf8_lossy(&check.stderr).contains("signature does not verify")
    );

    // Truncated RDATA in RFC 3597 form, then SIGHUP: refused the same way.
    std::fs::write(
        &ks.zone_file,
        good.clone() + "cut.example.test. 3600 IN TYPE65300 \\# 4 01000400\n",
    )
    .unwrap();
    ks.proc_.as_ref().unwrap().signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    let after = dig(&[
        "+short",
        "-p",
        &ks.p(),
        &ks.at(),
        "www.example.test",
        "TYPE65300",
    ]);
    assert_eq!(after, before, "the old zone keeps serving");
    let cut = dig(&["-p", &ks.p(), &ks.at(), "cut.example.test", "TYPE65300"]);
    assert!(cut.contains("NXDOMAIN"), "{cut}");

    // Fixed: the reload goes through and the new member is served.
    std::fs::write(&ks.zone_file, good).unwrap();
    ks.issue_to_file("new.example.test.", "192.0.2.99");
    let out = reload(&ks);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = dig(&[
        "+short",
        "-p",
        &ks.p(),
        &ks.at(),
        "new.example.test",
        "TYPE65300",
    ]);
    assert!(new.contains("\\# 144"), "{new}");
}

#[test]
fn a_config_typo_is_named_and_tpkd_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeyServer::new(
        dir.path(),
        "example.test.",
        "127.0.0.27",
        "",
        "listn = [\"127.0.0.27:53\"]\n",
    );
    let out = run(Command::new(bin("tpkd")).arg("--config").arg(&ks.config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tpkd.toml")
            && err.contains("unknown field `listn`")
            && err.contains("line 6"),
        "{err}"
    );
    let bad_zone = KeyServer::new(
        &dir.path().join("z"),
        "example.test.",
        "127.0.0.27",
        "www IN TPKEY 1 ENTITY 300.1.1.1\n",
        "",
    );
    let _ = std::fs::create_dir_all(&bad_zone.dir);
    let out = run(Command::new(bin("tpkd"))
        .arg("--config")
        .arg(&bad_zone.config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("zone.keys:6: TPKEY: `300.1.1.1` is not an IPv4 or IPv6 address"),
        "{err}"
    );
    let stray = KeyServer::new(
        &dir.path().join("g"),
        "example.test.",
        "127.0.0.27",
        "www IN A 192.0.2.1\n",
        "",
    );
    let out = run(Command::new(bin("tpkd")).arg("--config").arg(&stray.config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("zone.keys:6: www.example.test.: A/AAAA records in a key zone are only glue"),
        "{err}"
    );
}

#[test]
fn malformed_and_oversize_packets_get_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = KeyServer::new(dir.path(), "example.test.", "127.0.0.28", "", "");
    ks.issue_to_file("www.example.test.", "192.0.2.10");
    ks.start();
    let addr = format!("{}:{}", ks.ip, ks.port);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // A valid header claiming one question, then garbage: FORMERR.
    let mut garbage = vec![0x12, 0x34, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0xff; 40]);
    sock.send_to(&garbage, &addr).unwrap();
    let mut buf = [0u8; 512];
    if let Ok((n, _)) = sock.recv_from(&mut buf) {
        assert!(
            n >= 12 && buf[3] & 0x0f == 1,
            "FORMERR expected, got rcode {}",
            buf[3] & 0x0f
        );
    }
    for junk in [
        &b""[..],
        &[0u8; 3][..],
        &[0xffu8; 11][..],
        &vec![0x41u8; 4000][..],
    ] {
        sock.send_to(junk, &addr).unwrap();
    }
    // Over TCP: a length prefix larger than what follows, then close.
    let mut t = TcpStream::connect(&addr).unwrap();
    t.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
    drop(t);
    let mut t = TcpStream::connect(&addr).unwrap();
    t.write_all(&[0x00, 0x20]).unwrap();
    t.write_all(&[0xee; 32]).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut resp = Vec::new();
    let _ = t.read_to_end(&mut resp);
    // Still serving, and the record is intact.
    let out = dig(&["-p", &ks.p(), &ks.at(), "www.example.test", "TYPE65300"]);
    verify_all(&out, &anchor(&ks));
    assert!(
        ks.proc_
            .as_mut()
            .unwrap()
            .child
            .try_wait()
            .unwrap()
            .is_none(),
        "tpkd died"
    );
}

/// CPU seconds (user + system) tpkd has used so far, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A query for `name` TYPE65300 with `id`, framed for TCP.
fn framed_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = vec![(id >> 8) as u8, id as u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0xff, 0x14, 0, 1]);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    framed
}

/// A TCP query for `name` TYPE65300 on `t`; the answer's RCODE and ANCOUNT.
fn tcp_query(t: &mut TcpStream, id: u16, name: &str) -> (u8, u16) {
    t.write_all(&framed_query(id, name)).unwrap();
    read_answer(t, id)
}

/// The next answer on `t`, which must be to `id`: its RCODE and ANCOUNT.
fn read_answer(t: &mut TcpStream, id: u16) -> (u8, u16) {
    let mut len = [0u8; 2];
    t.read_exact(&mut len).unwrap();
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    t.read_exact(&mut msg).unwrap();
    assert_eq!(&msg[..2], &id.to_be_bytes(), "answer to another query");
    (msg[3] & 0x0f, u16::from_be_bytes([msg[6], msg[7]]))
}

/// True when the server closed `t` (EOF within `wait`).
fn closed_by_server(mut t: &TcpStream, wait: Duration) -> bool {
    t.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 1];
    matches!(t.read(&mut b), Ok(0))
        || matches!(t.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

#[test]
fn tcp_connections_are_capped_and_idle_ones_make_room() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = KeyServer::new(
        dir.path(),
        "example.test.",
        "127.0.12.1",
        "",
        "tcp_max_clients = 4\ntcp_timeout_secs = 2\n",
    );
    ks.issue_to_file("www.example.test.", "192.0.2.10");
    ks.start();
    let addr = format!("{}:{}", ks.ip, ks.port);
    // A burst of pipelined queries in one write: every one answered, in order.
    let mut t = TcpStream::connect(&addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let burst: Vec<u8> = (0..50u16)
        .flat_map(|id| {
            framed_query(
                id,
                if id % 2 == 0 {
                    "www.example.test."
                } else {
                    "nx.example.test."
                },
            )
        })
        .collect();
    t.write_all(&burst).unwrap();
    for id in 0..50u16 {
        let (rcode, answers) = read_answer(&mut t, id);
        assert_eq!((rcode, answers), if id % 2 == 0 { (0, 1) } else { (3, 0) });
    }
    // Idle past tcp_timeout_secs: closed by the server.
    assert!(
        closed_by_server(&t, Duration::from_secs(6)),
        "idle connection kept open"
    );
    // Every slot taken and nobody waiting: the connections stay open.
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        idle.iter()
            .all(|t| !closed_by_server(t, Duration::from_millis(100))),
        "connections closed with nobody waiting"
    );
    // A fifth client gets its answer: the idle ones are closed to make room.
    let mut fifth = TcpStream::connect(&addr).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(tcp_query(&mut fifth, 3, "www.example.test."), (0, 1));
    let closed = idle
        .iter()
        .filter(|t| closed_by_server(t, Duration::from_millis(500)))
        .count();
    assert!(closed >= 1, "no idle connection was closed to make room");
    // A response (QR set) is not answered: the connection is closed.
    let mut t = TcpStream::connect(&addr).unwrap();
    let mut resp = vec![0x00, 0x0c, 0x12, 0x34, 0x84, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    t.write_all(&resp).unwrap();
    assert!(
        closed_by_server(&t, Duration::from_secs(1)),
        "a response was answered"
    );
    resp.clear();
    let out = dig(&[
        "-p",
        &ks.p(),
        &ks.at(),
        "+tcp",
        "www.example.test",
        "TYPE65300",
    ]);
    verify_all(&out, &anchor(&ks));
}

#[test]
fn a_single_tcp_slot_serves_one_client_after_another() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = KeyServer::new(
        dir.path(),
        "example.test.",
        "127.0.12.3",
        "",
        "tcp_max_clients = 1\ntcp_timeout_secs = 5\n",
    );
    ks.issue_to_file("www.example.test.", "192.0.2.10");
    ks.start();
    let addr = format!("{}:{}", ks.ip, ks.port);
    // One client at a time, each closing after its answer.
    for id in 0..5 {
        let mut t = TcpStream::connect(&addr).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(tcp_query(&mut t, id, "www.example.test."), (0, 1));
    }
    // A client that keeps its connection idle gives way to the next one.
    let mut first = TcpStream::connect(&addr).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(tcp_query(&mut first, 10, "www.example.test."), (0, 1));
    let mut second = TcpStream::connect(&addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(tcp_query(&mut second, 11, "www.example.test."), (0, 1));
    assert!(
        closed_by_server(&first, Duration::from_secs(1)),
        "the idle client kept the slot"
    );
}

/// A client that connects and sends its query a moment later is not closed to make room for
/// one already waiting (bulk enrollment opens a connection a request, many at once); once it
/// has its answer it is idle and gives way.
#[test]
fn a_new_connection_keeps_its_slot_for_its_first_query() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = KeyServer::new(
        dir.path(),
        "example.test.",
        "127.0.12.10",
        "",
        "tcp_max_clients = 1\ntcp_timeout_secs = 5\n",
    );
    ks.issue_to_file("www.example.test.", "192.0.2.10");
    ks.start();
    let addr = format!("{}:{}", ks.ip, ks.port);
    let mut first = TcpStream::connect(&addr).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let waiting = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut t = TcpStream::connect(&addr).unwrap();
            t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            tcp_query(&mut t, 2, "www.example.test.")
        })
    };
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(tcp_query(&mut first, 1, "www.example.test."), (0, 1));
    assert_eq!(waiting.join().unwrap(), (0, 1));
    assert!(
        closed_by_server(&first, Duration::from_secs(1)),
        "the answered client kept the slot"
    );
}

#[test]
fn running_out_of_descriptors_does_not_spin_and_tcp_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = KeyServer::new(
        dir.path(),
        "example.test.",
        "127.0.12.2",
        "",
        "tcp_max_clients = 1000\ntcp_timeout_secs = 60\nudp_workers = 1\n",
    );
    ks.issue_to_file("www.example.test.", "192.0.2.10");
    ks.start_logged_under(&["prlimit", "--nofile=64:64", "--"]);
    let addr = format!("{}:{}", ks.ip, ks.port);
    // More connections than tpkd has descriptors left: the rest wait in the listen backlog.
    let held: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_secs(ks.pid());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_secs(ks.pid()) - before;
    // A retry loop on EMFILE burns the whole 3 s; backing off costs next to nothing.
    assert!(
        used < 0.5,
        "tpkd used {used:.2} s of CPU in 3 s while out of descriptors"
    );
    let log = ks.log();
    let lines = log
        .matches("TCP accept failed for want of resources")
        .count();
    assert!(lines >= 1, "descriptors never ran out:\n{log}");
    assert!(lines <= 10, "the accept failure is logged without limit");
    // UDP still answers; once the connections go, TCP serves again.
    let out = dig(&["-p", &ks.p(), &ks.at(), "www.example.test", "TYPE65300"]);
    verify_all(&out, &anchor(&ks));
    drop(held);
    let out = dig(&[
        "-p",
        &ks.p(),
        &ks.at(),
        "+tcp",
        "+tries=3",
        "+timeout=2",
        "www.example.test",
        "TYPE65300",
    ]);
    verify_all(&out, &anchor(&ks));
}

#[test]
fn members_enrolled_online_survive_a_restart_and_bump_the_serial() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = KeyServer::new(dir.path(), "example.test.", "127.0.0.29", "", "");
    ks.start();
    // A file edit not yet reloaded stays unpublished through enrollments.
    ks.issue_to_file("pending.example.test.", "192.0.2.60");
    let again = run(tp()
        .arg("issue")
        .arg("--state")
        .arg(&ks.state)
        .arg("--request")
        .arg(dir.path().join("pending.example.test.192.0.2.60.req"))
        .arg("--zone-file")
        .arg(&ks.zone_file)
        .arg("--response")
        .arg(dir.path().join("again.resp")));
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr)
            .contains("already holds a key for pending.example.test. 192.0.2.60"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let serial = |ks: &KeyServer| -> u32 {
        dig(&["+short", "-p", &ks.p(), &ks.at(), "example.test", "SOA"])
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap()
    };
    let s0 = serial(&ks);
    let prefix = dir.path().join("dev");
    ok(tp()
        .args([
            "keygen",
            "--name",
            "dev.example.test.",
            "--ip",
            "192.0.2.50",
        ])
        .arg("--issuer-params")
        .arg(ks.params())
        .arg("--out")
        .arg(&prefix));
    let resp = dir.path().join("dev.resp");
    ok(tp()
        .arg("ctl")
        .arg("--config")
        .arg(&ks.config)
        .arg("enroll")
        .arg("--request")
        .arg(dir.path().join("dev.req"))
        .arg("--response")
        .arg(&resp));
    let key = dir.path().join("dev.key");
    ok(tp()
        .arg("finalize")
        .arg("--secret")
        .arg(dir.path().join("dev.secret"))
        .arg("--response")
        .arg(&resp)
        .arg("--out")
        .arg(&key));
    let first = dig(&[
        "+short",
        "-p",
        &ks.p(),
        &ks.at(),
        "dev.example.test",
        "TYPE65300",
    ]);
    assert!(first.contains("\\# 144"), "served at once: {first}");
    let pending = dig(&["-p", &ks.p(), &ks.at(), "pending.example.test", "TYPE65300"]);
    assert!(
        pending.contains("NXDOMAIN"),
        "unreloaded edit published: {pending}"
    );
    assert!(serial(&ks) > s0);

    // A second enrollment of the same name in another zone is refused, nothing changes.
    ok(tp()
        .args(["keygen", "--name", "dev.example.org.", "--ip", "192.0.2.51"])
        .arg("--issuer-params")
        .arg(ks.params())
        .arg("--out")
        .arg(dir.path().join("x")));
    let refused = run(tp()
        .arg("ctl")
        .arg("--config")
        .arg(&ks.config)
        .arg("enroll")
        .arg("--request")
        .arg(dir.path().join("x.req"))
        .arg("--response")
        .arg(dir.path().join("x.resp")));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not in this key server's zone"));

    let status = ks.stop().unwrap();
    assert!(status.success(), "clean shutdown on SIGTERM: {status}");
    ks.start();
    let again = dig(&[
        "+short",
        "-p",
        &ks.p(),
        &ks.at(),
        "dev.example.test",
        "TYPE65300",
    ]);
    assert_eq!(again, first, "the enrolled member survives the restart");
    // The finalized key matches what is served.
    let (k, _) = twinpeaks::keyfile::read_entity(&key).unwrap();
    let a = anchor(&ks);
    let rec = verify_all(
        &dig(&["-p", &ks.p(), &ks.at(), "dev.example.test", "TYPE65300"]),
        &a,
    )
    .remove(0);
    assert_eq!(
        &rec.public_key("dev.example.test.", &a.params).unwrap(),
        k.public()
    );

    // An enrollment is durable when `tp ctl enroll` returns: it survives a crash (SIGKILL).
    ok(tp()
        .args([
            "keygen",
            "--name",
            "crash.example.test.",
            "--ip",
            "192.0.2.52",
        ])
        .arg("--issuer-params")
        .arg(ks.params())
        .arg("--out")
        .arg(dir.path().join("crash")));
    ok(tp()
        .arg("ctl")
        .arg("--config")
        .arg(&ks.config)
        .arg("enroll")
        .arg("--request")
        .arg(dir.path().join("crash.req"))
        .arg("--response")
        .arg(dir.path().join("crash.resp")));
    let mut p = ks.proc_.take().unwrap();
    p.signal("KILL");
    let _ = p.child.wait();
    ks.start();
    let crash = dig(&[
        "+short",
        "-p",
        &ks.p(),
        &ks.at(),
        "crash.example.test",
        "TYPE65300",
    ]);
    assert!(crash.contains("\\# 144"), "lost in the crash: {crash}");
}

#[test]
fn secrets_are_private_files_and_never_served() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut ks = KeyServer::new(dir.path(), "example.test.", "127.0.0.30", "", "");
    let key = ks.issue_to_file("www.example.test.", "192.0.2.10");
    for f in [
        ks.state.join("kgc.secret"),
        ks.state.join("server.key"),
        key.clone(),
        dir.path().join("www.example.test.192.0.2.10.secret"),
    ] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    // The response travels in the open: its partial key is sealed to the requester, so another
    // entity's secret value cannot open it.
    ks.issue_to_file("mail.example.test.", "192.0.2.11");
    let stolen = run(tp()
        .arg("finalize")
        .arg("--secret")
        .arg(dir.path().join("mail.example.test.192.0.2.11.secret"))
        .arg("--response")
        .arg(dir.path().join("www.example.test.192.0.2.10.resp"))
        .arg("--out")
        .arg(dir.path().join("stolen.key")));
    assert!(!stolen.status.success());
    assert!(
        String::from_utf8_lossy(&stolen.stderr).contains("cannot be opened with this secret value"),
        "{}",
        String::from_utf8_lossy(&stolen.stderr)
    );
    assert!(!dir.path().join("stolen.key").exists());
    // A secret others can read is refused, naming the file and the fix.
    let kgc = ks.state.join("kgc.secret");
    std::fs::set_permissions(&kgc, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(Command::new(bin("tpkd")).arg("--config").arg(&ks.config));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    std::fs::set_permissions(&kgc, std::fs::Permissions::from_mode(0o600)).unwrap();

    ks.start();
    let ms = std::fs::read_to_string(&kgc).unwrap();
    let ms_hex = ms.split('"').nth(3).unwrap().to_uppercase();
    let sk = std::fs::read_to_string(ks.state.join("server.key")).unwrap();
    let sk_hex = sk
        .split("private_key = \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_uppercase();
    let xfr = dig(&["-p", &ks.p(), &ks.at(), "example.test", "AXFR"])
        .replace(' ', "")
        .to_uppercase();
    assert!(!xfr.contains(&ms_hex) && !xfr.contains(&sk_hex));
}
