//! Records never age out of a running server (DESIGN §4): the real tpkd run a year ahead under
//! Debian's `faketime` withdraws members whose window has ended and keeps serving, re-signs
//! members inside the refresh margin (zone-file and enrolled ones, kept across a restart),
//! NOTIFYs an NSD secondary from its listen address so the secondary picks the new records
//! up, and leaves members that are not due alone.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use common::{
    KeyServer, Proc, bin, dig, free_port, ok, rdata_hex, require_tool, run, tp, wait_dns,
};
use twinpeaks::record::KeyRecord;
use twinpeaks::resolver::anchors;
use twinpeaks::time;

const ZONE: &str = "example.test.";
const WWW: &str = "www.example.test.";
const DEV: &str = "dev.example.test.";
const DAY: u64 = 86_400;
/// Config defaults of tpkd the test relies on.
const VALIDITY: u64 = 365 * DAY;
const BACKDATE: u64 = 3600;

/// tpkd as a child process, under `faketime -f OFFSET` or on the real clock, its stderr (the
/// log) in a file. `faketime` forks and waits for its child and does not forward signals, so
/// signals go to tpkd's own pid.
struct Tpkd {
    proc_: Proc,
    pid: u32,
    log: PathBuf,
}

impl Tpkd {
    fn start(ks: &KeyServer, fake: Option<&str>, log: &Path) -> Tpkd {
        let mut cmd = match fake {
            Some(offset) => {
                let mut c = Command::new(require_tool("faketime"));
                c.args(["-f", offset]).arg(bin("tpkd"));
                c
            }
            None => Command::new(bin("tpkd")),
        };
        cmd.arg("--config")
            .arg(&ks.config)
            .env_remove("RUST_LOG")
            .stderr(File::create(log).unwrap());
        let what = format!("tpkd {} ({})", ks.name, fake.unwrap_or("real clock"));
        let mut proc_ = Proc::spawn(&what, &mut cmd);
        let pid = if fake.is_some() {
            child_of(&mut proc_)
        } else {
            proc_.child.id()
        };
        wait_dns(&ks.ip, ks.port, &ks.name, &mut proc_);
        Tpkd {
            proc_,
            pid,
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status();
    }

    /// SIGTERM to tpkd (SIGKILL after 10 s); the exit status as faketime passes it on.
    fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(s)) = self.proc_.child.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                self.signal("KILL");
                return self.proc_.child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tpkd {
    fn drop(&mut self) {
        if let Ok(None) = self.proc_.child.try_wait() {
            self.stop();
        }
    }
}

/// The one child faketime started.
fn child_of(p: &mut Proc) -> u32 {
    let id = p.child.id();
    let path = format!("/proc/{id}/task/{id}/children");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kids = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(pid) = kids.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        if let Ok(Some(s)) = p.child.try_wait() {
            panic!("{} exited early: {s}", p.what);
        }
        assert!(Instant::now() < deadline, "{} started no child", p.what);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The dig answer for `name` TYPE65300 from ip:port.
fn ask(ip: &str, port: u16, name: &str) -> String {
    dig(&[
        "-p",
        &port.to_string(),
        &format!("@{ip}"),
        name,
        "TYPE65300",
    ])
}

/// The RDATA hex of `name`'s one TPKEY record at ip:port.
fn one_rdata(ip: &str, port: u16, name: &str) -> String {
    let out = ask(ip, port, name);
    let recs = rdata_hex(&out);
    assert_eq!(recs.len(), 1, "one record for {name} expected:\n{out}");
    assert_eq!(recs[0].0, name, "{out}");
    recs[0].1.clone()
}

fn decode(hex_: &str) -> KeyRecord {
    KeyRecord::from_wire(&hex::decode(hex_).unwrap()).expect("RDATA decodes")
}

/// The SOA serial at ip:port.
fn serial(ip: &str, port: u16) -> u32 {
    dig(&[
        "+short",
        "-p",
        &port.to_string(),
        &format!("@{ip}"),
        ZONE,
        "SOA",
    ])
    .split_whitespace()
    .nth(2)
    .expect("SOA answer")
    .parse()
    .unwrap()
}

/// The key server's own params and key, from its anchor file.
fn anchor(ks: &KeyServer) -> (twinpeaks::clpkc::KgcParams, twinpeaks::clpkc::PublicKey) {
    let a = anchors::read(&ks.state.join("anchor"), time::now())
        .expect("anchor")
        .remove(0)
        .server;
    (a.params, a.identities[0].1)
}

/// Poll until `cond` holds (up to `secs`), then return its value.
fn within<T>(secs: u64, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `www` issued into the zone file and `dev` enrolled online, both now with the default
/// one-year validity: tpkd on the real clock (started for the enrollment), the key files of
/// www and dev.
fn with_members(ks: &KeyServer, log: &Path) -> (Tpkd, PathBuf, PathBuf) {
    let www = ks.issue_to_file(WWW, "192.0.2.10");
    let t = Tpkd::start(ks, None, log);
    let dev = ks.ctl_enroll(DEV, "192.0.2.50", "enroll-dev");
    (t, www, dev)
}

fn reload(ks: &KeyServer, fake: &str) -> std::process::Output {
    run(Command::new(require_tool("faketime"))
        .args(["-f", fake])
        .arg(bin("tp"))
        .arg("ctl")
        .arg("--config")
        .arg(&ks.config)
        .arg("reload"))
}

/// Case 1: A year-old key server keeps serving: its expired members are withdrawn, named in the
/// log, and the zone (SOA) still loads, also on reload.
#[test]
fn a_year_old_key_server_withdraws_expired_members_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeyServer::new(dir.path(), ZONE, "127.0.2.11", "", "");
    let (real, ..) = with_members(&ks, &dir.path().join("tpkd-real.log"));
    drop(real);
    let mut t = Tpkd::start(&ks, Some("+400d"), &dir.path().join("tpkd.log"));
    let soa = dig(&["-p", &ks.p(), &ks.at(), ZONE, "SOA"]);
    assert!(
        soa.contains("status: NOERROR") && soa.contains("ANSWER: 1"),
        "{soa}"
    );
    for name in [WWW, DEV] {
        let out = ask(&ks.ip, ks.port, name);
        assert!(
            (out.contains("status: NXDOMAIN") || out.contains("status: NOERROR"))
                && out.contains("ANSWER: 0"),
            "an expired member is served:\n{out}"
        );
    }
    let withdrawn = |log: &str, name: &str| {
        log.lines()
            .filter(|l| l.contains("withdrawn") && l.contains(name))
            .count()
    };
    let log = t.log();
    for name in [WWW, DEV] {
        assert!(
            withdrawn(&log, name) >= 1,
            "no withdrawn line names {name}:\n{log}"
        );
    }
    assert!(
        !log.contains("re-signed"),
        "expired members re-signed:\n{log}"
    );

    let out = reload(&ks, "+400d");
    assert!(
        out.status.success(),
        "reload of a zone with expired members: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What is left is the key server's own apex record (self-issued for ten years).
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("members = 1"), "{text}");
    let apex = rdata_hex(&ask(&ks.ip, ks.port, ZONE));
    assert_eq!(apex.len(), 1, "the apex record is served");
    assert!(decode(&apex[0].1).key_server.is_some());
    let after = t.log();
    for name in [WWW, DEV] {
        // Said once, when first withdrawn at startup, not again at every rebuild.
        assert!(
            withdrawn(&log, name) >= 1 && withdrawn(&after, name) == withdrawn(&log, name),
            "one withdrawn line for {name}:\n{after}"
        );
        let out = ask(&ks.ip, ks.port, name);
        assert!(out.contains("ANSWER: 0"), "{out}");
    }
    assert!(
        dig(&["-p", &ks.p(), &ks.at(), ZONE, "SOA"]).contains("status: NOERROR"),
        "SOA after the reload"
    );
    assert!(t.stop().success(), "tpkd did not stop cleanly");
}

/// The fields a re-signed record keeps: everything but the window and the signature.
fn same_but_window(a: &KeyRecord, b: &KeyRecord) -> bool {
    KeyRecord {
        not_before: b.not_before,
        not_after: b.not_after,
        signature: b.signature,
        ..a.clone()
    } == *b
}

/// Check a re-signed record against the original: same key, a new window starting
/// `BACKDATE` before the faked now (somewhere in `[from, to]` real time + `ahead`), valid and
/// signed by the key server at the faked now.
fn check_resigned(
    ks: &KeyServer,
    name: &str,
    old: &KeyRecord,
    new: &KeyRecord,
    ahead: u64,
    (from, to): (u64, u64),
) {
    assert!(
        same_but_window(old, new),
        "{name}: more than the window changed:\n{old:?}\n{new:?}"
    );
    assert_eq!(old.w, new.w, "{name}: W changed");
    assert_ne!(old.signature, new.signature, "{name}: not signed again");
    assert!(
        new.not_after > old.not_after,
        "{name}: not_after {} is not later than {}",
        new.not_after,
        old.not_after
    );
    let (nb, na) = (u64::from(new.not_before), u64::from(new.not_after));
    let slack = 5;
    assert!(
        nb + slack >= from + ahead - BACKDATE && nb <= to + ahead - BACKDATE + slack,
        "{name}: not_before {} is not about {BACKDATE} s before the faked now {}",
        time::format(new.not_before),
        time::format(u32::try_from(from + ahead).unwrap())
    );
    assert!(
        na + slack >= from + ahead + VALIDITY && na <= to + ahead + VALIDITY + slack,
        "{name}: not_after {} is not a year after the faked now",
        time::format(new.not_after)
    );
    let (params, q) = anchor(ks);
    new.verify(name, &params, &q, from + ahead)
        .unwrap_or_else(|e| panic!("{name}: the re-signed record does not verify: {e}"));
}

/// `faketime -f OFFSET tp resolve --json --anchors ANCHOR NAME`: (not_after, Q hex) of the
/// name's one key.
fn resolve_at(ks: &KeyServer, offset: &str, name: &str) -> (String, String) {
    let out = ok(Command::new(require_tool("faketime"))
        .args(["-f", offset])
        .arg(bin("tp"))
        .args(["resolve", "--json"])
        .arg("--anchors")
        .arg(ks.state.join("anchor"))
        .arg(name));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pairs = v["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 1, "{out}");
    (
        pairs[0]["not_after"].as_str().unwrap().to_string(),
        pairs[0]["key"].as_str().unwrap().to_string(),
    )
}

fn q_hex(key_file: &Path) -> String {
    let (k, _) = twinpeaks::keyfile::read_entity(key_file).unwrap();
    hex::encode(twinpeaks::clpkc::point_to_bytes(k.public()))
}

/// Case 2: Members inside the refresh margin are re-signed: a new window, the same key, a higher
/// serial; the new records resolve, survive a reload and a restart (from the store), and the
/// zone still checks.
#[test]
fn members_due_are_re_signed_and_the_new_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeyServer::new(
        dir.path(),
        ZONE,
        "127.0.2.12",
        "",
        "resign_check_secs = 1\n",
    );
    let (real, www_key, dev_key) = with_members(&ks, &dir.path().join("tpkd-real.log"));
    let old_www = one_rdata(&ks.ip, ks.port, WWW);
    let old_dev = one_rdata(&ks.ip, ks.port, DEV);
    let s0 = serial(&ks.ip, ks.port);
    drop(real);

    let from = time::now();
    let mut t = Tpkd::start(&ks, Some("+340d"), &dir.path().join("tpkd-340d.log"));
    let (new_www, new_dev) = within(10, "re-signing at +340d", || {
        let (w, d) = (
            one_rdata(&ks.ip, ks.port, WWW),
            one_rdata(&ks.ip, ks.port, DEV),
        );
        (w != old_www && d != old_dev).then_some((w, d))
    });
    let to = time::now();
    let ahead = 340 * DAY;
    for (name, old, new) in [(WWW, &old_www, &new_www), (DEV, &old_dev, &new_dev)] {
        check_resigned(&ks, name, &decode(old), &decode(new), ahead, (from, to));
    }
    let s1 = serial(&ks.ip, ks.port);
    assert!(s1 > s0, "serial {s1} not above {s0}");
    let log = t.log();
    assert!(log.contains("re-signed"), "{log}");

    // A resolver at the faked now verifies the new records, and so does one after the old
    // windows have ended.
    for offset in ["+340d", "+380d"] {
        for (name, new, key) in [(WWW, &new_www, &www_key), (DEV, &new_dev, &dev_key)] {
            let (not_after, q) = resolve_at(&ks, offset, name);
            assert_eq!(not_after, time::format(decode(new).not_after), "{name}");
            assert_eq!(
                q,
                q_hex(key),
                "{name}: resolved key differs from its key file"
            );
        }
    }

    // Not due again: a few more checks change nothing.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(one_rdata(&ks.ip, ks.port, WWW), new_www);
    assert_eq!(serial(&ks.ip, ks.port), s1);

    // A reload keeps the re-signed copy of the zone-file member.
    let out = reload(&ks, "+340d");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(one_rdata(&ks.ip, ks.port, WWW), new_www, "after reload");
    assert_eq!(one_rdata(&ks.ip, ks.port, DEV), new_dev, "after reload");

    assert!(t.stop().success(), "tpkd did not stop cleanly");
    let mut t = Tpkd::start(&ks, Some("+340d"), &dir.path().join("tpkd-restart.log"));
    // Byte for byte: taken from the store, not signed once more.
    assert_eq!(
        one_rdata(&ks.ip, ks.port, WWW),
        new_www,
        "zone-file member after restart"
    );
    assert_eq!(
        one_rdata(&ks.ip, ks.port, DEV),
        new_dev,
        "enrolled member after restart"
    );
    let s2 = serial(&ks.ip, ks.port);
    assert!(s2 >= s1, "serial went back from {s1} to {s2} on restart");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!t.log().contains("re-signed"), "{}", t.log());
    assert!(t.stop().success());

    // The store is free again: the zone checks, with both members, at the faked now and after
    // the original windows have ended.
    for offset in ["+340d", "+380d"] {
        let out = ok(Command::new(require_tool("faketime"))
            .args(["-f", offset])
            .arg(bin("tp"))
            .arg("zone-check")
            .arg("--config")
            .arg(&ks.config));
        // www, dev and the key server's own apex record.
        assert!(
            out.contains("OK") && out.contains("3 key records"),
            "{offset}: {out}"
        );
    }
    let out = ok(tp().arg("zone-check").arg("--config").arg(&ks.config));
    assert!(out.contains("3 key records"), "real clock: {out}");

    // The operator deletes www's line and reloads: its re-signed copy is dropped with it, so
    // putting the original line back serves that line, not the old copy.
    let t = Tpkd::start(&ks, None, &dir.path().join("tpkd-edit.log"));
    assert_eq!(
        one_rdata(&ks.ip, ks.port, WWW),
        new_www,
        "the copy is served"
    );
    let zone = std::fs::read_to_string(&ks.zone_file).unwrap();
    // The operator shortens www's window (an unsigned line: tpkd signs it): the line as
    // written is served, not the copy made from the old line, although the copy ends later.
    let short = u32::try_from(time::now()).unwrap() + 200 * 86_400;
    let edited: String = zone
        .lines()
        .map(|l| {
            if !l.starts_with(WWW) {
                return format!("{l}\n");
            }
            let mut f: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            f[8] = time::format(short);
            *f.last_mut().unwrap() = "-".into();
            format!("{}\n", f.join(" "))
        })
        .collect();
    std::fs::write(&ks.zone_file, &edited).unwrap();
    assert!(reload(&ks, "+0d").status.success());
    let served = decode(&one_rdata(&ks.ip, ks.port, WWW));
    assert_eq!(served.not_after, short, "the shortened line is served");
    assert!(decode(&new_www).not_after > short);
    let without: String = zone
        .lines()
        .filter(|l| !l.starts_with(WWW))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&ks.zone_file, &without).unwrap();
    assert!(reload(&ks, "+0d").status.success());
    assert!(ask(&ks.ip, ks.port, WWW).contains("NXDOMAIN"));
    std::fs::write(&ks.zone_file, &zone).unwrap();
    assert!(reload(&ks, "+0d").status.success());
    assert_eq!(
        one_rdata(&ks.ip, ks.port, WWW),
        old_www,
        "the line as written, not the dropped copy"
    );
    drop(t);
}

/// Case 3: NOTIFY leaves from the listen address: an NSD secondary that allows NOTIFY from tpkd's
/// IP alone transfers the re-signed zone at once.
#[test]
fn nsd_secondary_gets_the_re_signed_records_by_notify_from_the_listen_address() {
    let nsd = require_tool("nsd");
    let dir = tempfile::tempdir().unwrap();
    let sip = "127.0.2.14";
    let sport = free_port(sip);
    let ks = KeyServer::new(
        dir.path(),
        ZONE,
        "127.0.2.13",
        "",
        &format!("resign_check_secs = 1\nnotify = [\"{sip}:{sport}\"]\n"),
    );
    let (real, ..) = with_members(&ks, &dir.path().join("tpkd-real.log"));

    let d = dir.path().join("nsd");
    std::fs::create_dir_all(&d).unwrap();
    let conf = d.join("nsd.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n  ip-address: {sip}\n  port: {sport}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  zonelistfile: \"{d}/zone.list\"\n  verbosity: 2\nremote-control:\n  control-enable: no\nzone:\n  name: {ZONE}\n  zonefile: \"{d}/example.zone\"\n  request-xfr: AXFR {}@{} NOKEY\n  allow-notify: {} NOKEY\n",
            ks.ip,
            ks.port,
            ks.ip,
            d = d.display()
        ),
    )
    .unwrap();
    let check = Command::new(require_tool("nsd-checkconf"))
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut s = Proc::spawn(
        "nsd",
        Command::new(nsd)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stderr(File::create(d.join("nsd.log")).unwrap()),
    );
    wait_dns(sip, sport, ZONE, &mut s);
    let old: Vec<String> = [WWW, DEV]
        .iter()
        .map(|n| {
            let p = one_rdata(&ks.ip, ks.port, n);
            assert_eq!(one_rdata(sip, sport, n), p, "{n}: the first transfer");
            p
        })
        .collect();
    let s0 = serial(sip, sport);
    drop(real);

    let mut t = Tpkd::start(&ks, Some("+340d"), &dir.path().join("tpkd-340d.log"));
    let new: Vec<String> = within(10, "re-signing at +340d", || {
        let now: Vec<String> = [WWW, DEV]
            .iter()
            .map(|n| one_rdata(&ks.ip, ks.port, n))
            .collect();
        (now[0] != old[0] && now[1] != old[1]).then_some(now)
    });
    let s1 = serial(&ks.ip, ks.port);
    assert!(s1 > s0);
    within(15, "NSD serving the re-signed records (NOTIFY)", || {
        let on_nsd: Vec<String> = [WWW, DEV]
            .iter()
            .map(|n| one_rdata(sip, sport, n))
            .collect();
        (on_nsd == new).then_some(())
    });
    assert_eq!(serial(sip, sport), s1, "NSD's serial");
    let nsd_log = std::fs::read_to_string(d.join("nsd.log")).unwrap_or_default();
    assert!(
        nsd_log.contains(&format!("notify for {ZONE} from {}", ks.ip)),
        "no NOTIFY from tpkd's listen address in NSD's log:\n{nsd_log}"
    );
    assert!(
        !nsd_log
            .lines()
            .any(|l| l.contains("notify") && l.contains("refused")),
        "NSD refused a NOTIFY:\n{nsd_log}"
    );
    assert!(t.stop().success());
}

/// Case 4: Members not due are left alone: on the real clock, checked every second, their
/// records and the serial do not change.
#[test]
fn members_not_due_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeyServer::new(
        dir.path(),
        ZONE,
        "127.0.2.15",
        "",
        "resign_check_secs = 1\n",
    );
    let (t, ..) = with_members(&ks, &dir.path().join("tpkd.log"));
    let before = (
        one_rdata(&ks.ip, ks.port, WWW),
        one_rdata(&ks.ip, ks.port, DEV),
        serial(&ks.ip, ks.port),
    );
    std::thread::sleep(Duration::from_secs(3));
    let after = (
        one_rdata(&ks.ip, ks.port, WWW),
        one_rdata(&ks.ip, ks.port, DEV),
        serial(&ks.ip, ks.port),
    );
    assert_eq!(after, before, "records or serial changed");
    let log = t.log();
    assert!(
        !log.contains("re-signed") && !log.contains("withdrawn"),
        "{log}"
    );
    // Answering queries, positive and negative, logs no warning (hickory's DNSSEC-enabled
    // catalog warns per query unless the zone names a denial proof kind).
    let _ = ask(&ks.ip, ks.port, "nobody.example.test.");
    let log = t.log();
    assert!(
        !log.contains("WARN"),
        "a warning while answering queries:\n{log}"
    );
}

fn ctl_at(ks: &KeyServer, fake: &str, args: &[&str]) -> std::process::Output {
    run(Command::new(require_tool("faketime"))
        .args(["-f", fake])
        .arg(bin("tp"))
        .arg("ctl")
        .arg("--config")
        .arg(&ks.config)
        .args(args))
}

/// Renew and remove: `tp ctl renew` brings a withdrawn member back with the same key and a
/// fresh window; `tp ctl remove` takes an enrolled member out; a zone-file member cannot be
/// removed over the control socket (its line is the operator's).
#[test]
fn renew_brings_a_withdrawn_member_back_and_remove_takes_an_enrolled_one_out() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeyServer::new(dir.path(), ZONE, "127.0.2.16", "", "");
    let (real, ..) = with_members(&ks, &dir.path().join("tpkd-real.log"));
    let before = decode(&one_rdata(&ks.ip, ks.port, WWW));
    drop(real);
    let mut t = Tpkd::start(&ks, Some("+400d"), &dir.path().join("tpkd.log"));
    assert!(ask(&ks.ip, ks.port, WWW).contains("ANSWER: 0"));

    let out = ctl_at(&ks, "+400d", &["renew", WWW, "192.0.2.10"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("renewed = ") && text.contains("not_after = "),
        "{text}"
    );
    let renewed = decode(&one_rdata(&ks.ip, ks.port, WWW));
    assert!(same_but_window(&before, &renewed), "renew changed the key");
    assert!(renewed.not_after > before.not_after + 300 * DAY as u32);
    let (params, q) = anchor(&ks);
    let now = u64::from(renewed.not_before) + BACKDATE;
    renewed
        .verify(WWW, &params, &q, now)
        .expect("the renewed record verifies at the faked time");

    // Remove: the enrolled member goes; the zone-file member is refused with its line.
    let out = ctl_at(&ks, "+400d", &["renew", DEV, "192.0.2.50"]);
    assert!(out.status.success());
    assert!(ask(&ks.ip, ks.port, DEV).contains("ANSWER: 1"));
    let out = ctl_at(&ks, "+400d", &["remove", DEV, "192.0.2.50"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ask(&ks.ip, ks.port, DEV).contains("ANSWER: 0"));
    let out = ctl_at(&ks, "+400d", &["remove", WWW, "192.0.2.10"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("zone-file member") && err.contains("zone.keys:"),
        "{err}"
    );
    let out = ctl_at(
        &ks,
        "+400d",
        &["remove", "nobody.example.test.", "192.0.2.99"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an enrolled member"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl_at(&ks, "+400d", &["renew", WWW, "not-an-ip"]);
    assert!(!out.status.success());
    // After a restart the renewed record is still the one served; the removed one stays out.
    assert!(t.stop().success());
    let t2 = Tpkd::start(&ks, Some("+400d"), &dir.path().join("tpkd2.log"));
    assert_eq!(decode(&one_rdata(&ks.ip, ks.port, WWW)), renewed);
    assert!(ask(&ks.ip, ks.port, DEV).contains("ANSWER: 0"));
    drop(t2);
}
