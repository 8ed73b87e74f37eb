//! tpkd's UDP fast path against its hickory path, on real processes: each zone is served by
//! two tpkd, one with the fast path (the default) and one with `fast_path = false`; every name
//! of the zone, every query type and shape (with and without EDNS, DO, a cookie, mixed case,
//! RD/CD, EDNS sizes that force TC) and odd packets get the same bytes from both. Zones: a
//! three-level hierarchy like the demo's (root → com. → example.com., with referrals, glue,
//! a name with three keys, an empty non-terminal) and a generated one (`tp gen-zone`).
//! Also: responses (QR=1) are not answered, TC answers are well formed on both paths, BADVERS
//! on every path, and a reloaded zone is served by the fast path at once.
//!
//! Addresses: 127.0.8.0/24 only (other test files use other ranges).

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{KeyServer, Proc, bin, dig, free_port, ok, tp, wait_dns};

const TPKEY: u16 = 65300;

/// Start a key server, then its hickory-path twin: the same state and zone, a copy of its
/// store (made while it is stopped: tpkd enrolls its own record there on its first start),
/// its own control socket and address, `fast_path = false`.
fn twin(ks: &mut KeyServer, ip: &str) -> (Proc, String) {
    ks.start();
    ks.stop();
    let twin = twin_of(&ks.config, &ks.name, ip);
    ks.start();
    twin
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// The twin of the stopped key server of `config` (whose store is `<state>/store`).
fn twin_of(config: &Path, zone: &str, ip: &str) -> (Proc, String) {
    let dir = config.parent().unwrap();
    copy_dir(&dir.join("state/store"), &dir.join("store-hickory"));
    let port = free_port(ip);
    let text = std::fs::read_to_string(config).unwrap();
    let mut out: String = text
        .lines()
        .filter(|l| !l.starts_with("listen"))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!(
        "listen = [\"{ip}:{port}\"]\nstore = \"store-hickory\"\ncontrol_socket = \"hickory.sock\"\nfast_path = false\nudp_workers = 1\n"
    ));
    let path = config.with_file_name("tpkd-hickory.toml");
    std::fs::write(&path, out).unwrap();
    let mut p = Proc::spawn(
        &format!("tpkd (hickory path) {zone}"),
        Command::new(bin("tpkd")).arg("--config").arg(&path),
    );
    wait_dns(ip, port, zone, &mut p);
    (p, format!("{ip}:{port}"))
}

/// A query shape.
#[derive(Clone, Copy, Debug)]
struct Shape {
    rd: bool,
    cd: bool,
    /// EDNS: payload, DO, with a cookie option.
    edns: Option<(u16, bool, bool)>,
    mixed_case: bool,
}

const fn shape(rd: bool, cd: bool, edns: Option<(u16, bool, bool)>, mixed_case: bool) -> Shape {
    Shape {
        rd,
        cd,
        edns,
        mixed_case,
    }
}

const SHAPES: [Shape; 9] = [
    shape(false, false, None, false),
    shape(true, false, None, true),
    shape(false, false, Some((1232, false, false)), false),
    shape(true, true, Some((4096, true, true)), true),
    shape(false, false, Some((0, false, false)), false),
    shape(false, false, Some((512, false, true)), true),
    shape(true, false, Some((600, true, false)), false),
    shape(false, false, Some((700, false, false)), true),
    shape(false, false, Some((65535, false, false)), false),
];

const TYPES: [u16; 14] = [TPKEY, 6, 2, 1, 28, 255, 16, 15, 0, 41, 251, 252, 254, 65305];

fn wire_name(name: &str, mixed: bool) -> Vec<u8> {
    let mut w = Vec::new();
    let mut i = 0;
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        w.push(label.len() as u8);
        for b in label.bytes() {
            i += 1;
            w.push(if mixed && i % 2 == 1 {
                b.to_ascii_uppercase()
            } else {
                b
            });
        }
    }
    w.push(0);
    w
}

fn query(id: u16, name: &str, qtype: u16, s: Shape) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.push(u8::from(s.rd));
    q.push(u8::from(s.cd) << 4);
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(s.edns.is_some())]);
    q.extend(wire_name(name, s.mixed_case));
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if let Some((payload, dnssec_ok, cookie)) = s.edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&payload.to_be_bytes());
        q.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
        if cookie {
            q.extend_from_slice(&[0, 12, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        } else {
            q.extend_from_slice(&[0, 0]);
        }
    }
    q
}

struct Client {
    sock: UdpSocket,
    buf: Vec<u8>,
}

impl Client {
    fn new() -> Self {
        let sock = UdpSocket::bind("127.0.8.200:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        Client {
            sock,
            buf: vec![0; 65535],
        }
    }

    /// The answer of `to` to `pkt`, `None` if none comes.
    fn ask(&mut self, to: &str, pkt: &[u8]) -> Option<Vec<u8>> {
        self.sock.send_to(pkt, to).unwrap();
        loop {
            match self.sock.recv_from(&mut self.buf) {
                // A late answer to an earlier query is skipped by its ID.
                Ok((n, _)) if n >= 2 && pkt.len() >= 2 && self.buf[..2] != pkt[..2] => continue,
                Ok((n, _)) => return Some(self.buf[..n].to_vec()),
                Err(_) => return None,
            }
        }
    }

    /// The same answer from both, or a panic naming the query.
    fn same(&mut self, fast: &str, slow: &str, pkt: &[u8], what: &str) -> Option<Vec<u8>> {
        let a = self.ask(fast, pkt);
        let b = self.ask(slow, pkt);
        assert_eq!(
            a.as_deref().map(hex::encode),
            b.as_deref().map(hex::encode),
            "fast path (left) and hickory path (right) differ for {what}"
        );
        a
    }
}

fn skip_name(m: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let l = *m.get(pos)?;
        match l {
            0 => return Some(pos + 1),
            l if l & 0xc0 == 0xc0 => return Some(pos + 2),
            l if l <= 63 => pos += 1 + usize::from(l),
            _ => return None,
        }
    }
}

/// A message's sections walk exactly to its end: (answers, OPT present, TC).
fn well_formed(m: &[u8]) -> (usize, bool, bool) {
    let c = |i: usize| usize::from(u16::from_be_bytes([m[i], m[i + 1]]));
    let (qd, an, ns, ar) = (c(4), c(6), c(8), c(10));
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(m, pos).expect("question name") + 4;
    }
    let mut opt = false;
    for i in 0..an + ns + ar {
        let e = skip_name(m, pos).expect("record name");
        let t = u16::from_be_bytes([m[e], m[e + 1]]);
        opt |= i >= an + ns && t == 41;
        pos = e + 10 + usize::from(u16::from_be_bytes([m[e + 8], m[e + 9]]));
    }
    assert_eq!(
        pos,
        m.len(),
        "sections end before or after the message: {}",
        hex::encode(m)
    );
    (an, opt, m[2] & 0x02 != 0)
}

/// Owner names of a zone, by AXFR from its server.
fn names_of(ks_ip: &str, port: u16, zone: &str) -> Vec<String> {
    let out = dig(&[
        "+tcp",
        "-p",
        &port.to_string(),
        &format!("@{ks_ip}"),
        zone,
        "AXFR",
    ]);
    let mut names: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() > 1, "no AXFR of {zone}: {out}");
    names
}

fn under(zone: &str, label: &str) -> String {
    if zone == "." {
        format!("{label}.")
    } else {
        format!("{label}.{zone}")
    }
}

/// Every name of the zone and a few that are not in it, × every type × every shape.
fn compare_zone(c: &mut Client, fast: &str, slow: &str, zone: &str, names: &[String]) -> usize {
    let mut names = names.to_vec();
    let long = "l".repeat(63);
    for extra in ["nope", "deep.nope", "x-y_z", "a.b.c.d.e.f", long.as_str()] {
        names.push(under(zone, extra));
    }
    let mut n = 0;
    for name in &names {
        for qtype in TYPES {
            for (i, s) in SHAPES.iter().enumerate() {
                let id = (n as u16).wrapping_mul(7).wrapping_add(i as u16);
                let pkt = query(id, name, qtype, *s);
                let what = format!("{name} type {qtype} {s:?}");
                if let Some(r) = c.same(fast, slow, &pkt, &what) {
                    let (_, opt, _) = well_formed(&r);
                    assert_eq!(opt, s.edns.is_some(), "OPT echoed for {what}");
                }
                n += 1;
            }
        }
    }
    n
}

/// Packets that are not plain queries: the same answer (or none) from both, and no crash.
fn compare_odd(c: &mut Client, fast: &str, slow: &str, name: &str) {
    let plain = query(
        0x0101,
        name,
        TPKEY,
        shape(false, false, Some((1232, false, false)), false),
    );
    let q = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = plain.clone();
        f(&mut p);
        p
    };
    let opt_at = plain.len() - 11;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("header only", plain[..12].to_vec()),
        ("QDCOUNT 2", q(&|p| p[5] = 2)),
        ("QDCOUNT 0", q(&|p| p[5] = 0)),
        ("ANCOUNT 1", q(&|p| p[7] = 1)),
        (
            "OPT in the answer section",
            q(&|p| {
                p[7] = 1;
                p[11] = 0;
            }),
        ),
        (
            "two OPTs",
            q(&|p| {
                p[11] = 2;
                let opt = p[opt_at..].to_vec();
                p.extend(opt);
            }),
        ),
        ("EDNS version 1", q(&|p| p[opt_at + 6] = 1)),
        ("class CH", q(&|p| p[opt_at - 1] = 3)),
        ("opcode NOTIFY", q(&|p| p[2] = 4 << 3)),
        ("opcode STATUS", q(&|p| p[2] = 2 << 3)),
        ("trailing byte", q(&|p| p.push(0))),
        ("OPT owner not root", q(&|p| p[opt_at] = 1)),
        (
            "ECS option",
            q(&|p| {
                let n = p.len();
                p[n - 1] = 8;
                p.extend_from_slice(&[0, 8, 0, 4, 0, 1, 0, 0]);
            }),
        ),
        (
            "option overrunning the OPT",
            q(&|p| {
                let n = p.len();
                p[n - 1] = 4;
                p.extend_from_slice(&[0, 10, 0, 9]);
            }),
        ),
        ("compression pointer in the question", {
            let mut p = plain[..12].to_vec();
            p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            p
        }),
        ("label of 64", {
            let mut p = plain[..12].to_vec();
            p.push(64);
            p.extend(std::iter::repeat_n(b'a', 64));
            p.extend_from_slice(&[0, 0, 1, 0, 1]);
            p[11] = 0;
            p
        }),
    ];
    for total in [255usize, 256] {
        // A name of `total` bytes in wire form: labels of 63, then what is left.
        let mut w = Vec::new();
        let mut left = total - 1;
        while left > 0 {
            let l = left.min(64) - 1;
            w.push(l as u8);
            w.extend(std::iter::repeat_n(b'b', l));
            left -= l + 1;
        }
        w.push(0);
        let mut p = plain[..12].to_vec();
        p[11] = 0;
        p.extend(w);
        p.extend_from_slice(&[0, 1, 0, 1]);
        cases.push((
            if total == 255 {
                "name of 255"
            } else {
                "name of 256"
            },
            p,
        ));
    }
    let n = plain.len();
    for cut in [0, 11, 12, 13, 20, n - 12, n - 11, n - 1] {
        cases.push(("a cut query", plain[..cut].to_vec()));
    }
    for (what, pkt) in &cases {
        c.same(fast, slow, pkt, what);
    }
    // BADVERS: extended RCODE 1 in the OPT, on the fast server too.
    let r = c
        .ask(fast, &cases[6].1)
        .expect("an answer to EDNS version 1");
    let (_, opt, _) = well_formed(&r);
    assert!(
        opt && r[3] & 0x0f == 0 && r[r.len() - 6] == 1,
        "BADVERS: {}",
        hex::encode(&r)
    );
    // Responses are never answered, well formed or not.
    let mut resp = plain.clone();
    resp[2] |= 0x80;
    assert_eq!(c.ask(fast, &resp), None);
    assert_eq!(c.ask(slow, &resp), None);
    let mut garbage = vec![0x12, 0x34, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0xff; 40]);
    assert_eq!(c.ask(fast, &garbage), None, "FORMERR sent to a response");
    assert_eq!(c.ask(slow, &garbage), None, "FORMERR sent to a response");
}

/// A name with three keys: whole records or none, with TC, on both paths.
fn truncation(c: &mut Client, fast: &str, slow: &str, name: &str) {
    for (s, fits) in [
        (shape(false, false, None, true), false),
        (shape(false, false, Some((512, false, false)), false), false),
        (shape(false, false, Some((600, true, true)), true), true),
        (shape(false, false, Some((832, false, false)), false), true),
        (shape(false, false, Some((1232, false, false)), false), true),
    ] {
        for to in [fast, slow] {
            let r = c.ask(to, &query(77, name, TPKEY, s)).expect("an answer");
            let (an, opt, tc) = well_formed(&r);
            assert_eq!(opt, s.edns.is_some(), "OPT kept in {s:?}");
            if fits {
                assert!(!tc && an == 3, "{s:?}: {an} answers, TC {tc}");
            } else {
                assert!(tc && an == 0, "{s:?}: {an} answers, TC {tc}");
                assert!(r.len() <= 512);
            }
        }
    }
}

#[test]
fn fast_and_hickory_paths_give_the_same_bytes_on_a_demo_like_hierarchy() {
    let dir = tempfile::tempdir().unwrap();
    let mut root = KeyServer::new(&dir.path().join("root"), ".", "127.0.8.1", "", "");
    let mut com = KeyServer::child(&dir.path().join("com"), &root, "com.", "127.0.8.3");
    let mut ex = KeyServer::child(&dir.path().join("ex"), &com, "example.com.", "127.0.8.5");
    ex.issue_to_file("www.example.com.", "127.0.0.10");
    for ip in ["127.0.0.11", "127.0.0.12", "127.0.0.13"] {
        ex.issue_to_file("mail.example.com.", ip);
    }
    ex.issue_to_file("a.b.example.com.", "127.0.0.14");
    let mut c = Client::new();
    let mut queries = 0;
    for (ks, twin_ip) in [
        (&mut root, "127.0.8.2"),
        (&mut com, "127.0.8.4"),
        (&mut ex, "127.0.8.6"),
    ] {
        let (_twin, slow) = twin(ks, twin_ip);
        let fast = format!("{}:{}", ks.ip, ks.port);
        let mut names = names_of(&ks.ip, ks.port, &ks.name);
        // Below the delegations: referrals.
        names.push("x.example.com.".into());
        names.push("deep.x.com.".into());
        queries += compare_zone(&mut c, &fast, &slow, &ks.name, &names);
        compare_odd(&mut c, &fast, &slow, &names[0]);
        // The apex NS answer carries the glue of its name server, as NSD's does.
        let ns = c.ask(&fast, &query(3, &ks.name, 2, SHAPES[0])).unwrap();
        assert_eq!(
            u16::from_be_bytes([ns[10], ns[11]]),
            1,
            "glue: {}",
            hex::encode(&ns)
        );
        if ks.name != "example.com." {
            // BADVERS on the referral path and the transfer path too (RFC 6891 §6.1.3).
            for (name, qtype) in [("deep.x.com.", TPKEY), (ks.name.as_str(), 252)] {
                let mut v1 = query(5, name, qtype, SHAPES[2]);
                let at = v1.len() - 5;
                v1[at] = 1;
                let r = c.same(&fast, &slow, &v1, "EDNS version 1").unwrap();
                assert_eq!(r[r.len() - 6], 1, "BADVERS for {name}: {}", hex::encode(&r));
            }
        }
        if ks.name == "example.com." {
            truncation(&mut c, &fast, &slow, "mail.example.com.");
        }
    }
    assert!(queries > 3000, "{queries}");
}

#[test]
fn fast_and_hickory_paths_give_the_same_bytes_on_a_generated_zone_and_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let z = dir.path().join("gen");
    ok(tp().args(["gen-zone", "--count", "12", "--out"]).arg(&z));
    // An SOA naming hosts outside the zone: its RDATA's names point at each other and at the
    // owner, all of which the negative answers' template moves with the question's length.
    let keys = z.join("bench.keys");
    let file = std::fs::read_to_string(&keys).unwrap();
    let soa = file
        .lines()
        .find(|l| l.contains(" SOA "))
        .unwrap()
        .to_string();
    std::fs::write(
        &keys,
        file.replace(
            &soa,
            "@ IN SOA ns1.other.example. hostmaster.other.example. 7 7200 3600 1209600 300",
        ),
    )
    .unwrap();
    let config = z.join("tpkd.toml");
    let port = free_port("127.0.8.7");
    let text = std::fs::read_to_string(&config).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("listen") {
                format!("listen = [\"127.0.8.7:{port}\"]\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&config, text).unwrap();
    let zone = "bench.example.";
    let start = || {
        let mut p = Proc::spawn(
            "tpkd (fast path) bench.example.",
            Command::new(bin("tpkd")).arg("--config").arg(&config),
        );
        wait_dns("127.0.8.7", port, zone, &mut p);
        p
    };
    start().stop();
    let (twin, slow) = twin_of(&config, zone, "127.0.8.8");
    let mut p = start();
    let fast = format!("127.0.8.7:{port}");
    let mut c = Client::new();
    let names = names_of("127.0.8.7", port, zone);
    compare_zone(&mut c, &fast, &slow, zone, &names);
    compare_odd(&mut c, &fast, &slow, "www3.bench.example.");

    // A member removed from the file and reloaded: gone from the fast path at once.
    let file = std::fs::read_to_string(&keys).unwrap();
    let kept: String = file
        .lines()
        .filter(|l| !l.starts_with("www3."))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(kept.len(), file.len(), "www3 is in the generated zone");
    std::fs::write(&keys, kept).unwrap();
    let before = c
        .ask(&fast, &query(9, "www3.bench.example.", TPKEY, SHAPES[0]))
        .unwrap();
    assert_eq!(before[3] & 0x0f, 0);
    p.signal("HUP");
    twin.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .ask(&fast, &query(9, "www3.bench.example.", TPKEY, SHAPES[0]))
            .unwrap();
        if r[3] & 0x0f == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "www3 still served after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while c
        .ask(&slow, &query(9, "www3.bench.example.", TPKEY, SHAPES[0]))
        .unwrap()[3]
        & 0x0f
        != 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the twin did not reload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    compare_zone(&mut c, &fast, &slow, zone, &names);
    assert!(p.child.try_wait().unwrap().is_none(), "tpkd died");
}

#[test]
fn refusals_a_peer_can_cause_at_will_are_logged_at_most_ten_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeyServer::new(dir.path(), "quiet.test.", "127.0.8.9", "", "");
    let log = dir.path().join("tpkd.log");
    let mut p = Proc::spawn(
        "tpkd quiet.test.",
        Command::new(bin("tpkd"))
            .arg("--config")
            .arg(&ks.config)
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    wait_dns(&ks.ip, ks.port, &ks.name, &mut p);
    let to = format!("{}:{}", ks.ip, ks.port);
    let mut c = Client::new();
    for i in 0..40u16 {
        let axfr = query(i, "quiet.test.", 252, SHAPES[0]);
        assert!(
            c.ask(&to, &axfr).is_some_and(|r| r[3] & 0x0f == 5),
            "REFUSED"
        );
        let mut notify = query(i, "quiet.test.", 6, SHAPES[0]);
        notify[2] = 4 << 3;
        assert!(
            c.ask(&to, &notify).is_some_and(|r| r[3] & 0x0f == 4),
            "NOTIMP"
        );
    }
    p.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    for what in [
        "AXFR over UDP refused",
        "unsupported opcode refused (NOTIMP)",
    ] {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(what)).collect();
        // Ten a minute (twenty if the minute turned during the test), the tenth saying so.
        assert!(
            (10..=20).contains(&lines.len()),
            "{what}: {} lines\n{text}",
            lines.len()
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("no more such lines this minute")),
            "{text}"
        );
    }
}
