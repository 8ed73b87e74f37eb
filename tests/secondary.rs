//! Scale-out by the DNS itself: unmodified NSD and Knot secondaries transfer a key zone from
//! tpkd by AXFR and serve the pre-signed records, which verify exactly as from tpkd.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Proc, bin, dig, free_port, ok, rdata_hex, require_tool, tp, wait_dns};
use twinpeaks::record::KeyRecord;
use twinpeaks::resolver::anchors;
use twinpeaks::time;

const ORIGIN: &str = "bench.test.";
/// Enough members that the zone (about 75 KB) cannot travel in one DNS message.
const MEMBERS: usize = 400;

struct Primary {
    ip: &'static str,
    port: u16,
    _proc: Proc,
    anchor: anchors::KeyServer,
    dir: std::path::PathBuf,
}

fn primary(dir: &Path, ip: &'static str, notify: &str) -> Primary {
    let g = dir.join("primary");
    ok(tp()
        .args([
            "gen-zone",
            "--count",
            &MEMBERS.to_string(),
            "--origin",
            ORIGIN,
        ])
        .arg("--out")
        .arg(&g));
    let port = free_port(ip);
    let cfg = std::fs::read_to_string(g.join("tpkd.toml"))
        .unwrap()
        .replace("127.0.0.1:5300", &format!("{ip}:{port}"))
        + &format!("notify = [\"{notify}\"]\n");
    std::fs::write(g.join("tpkd.toml"), cfg).unwrap();
    let mut p = Proc::spawn(
        "tpkd",
        Command::new(bin("tpkd"))
            .arg("--config")
            .arg(g.join("tpkd.toml")),
    );
    wait_dns(ip, port, ORIGIN, &mut p);
    let anchor = anchors::read(&g.join("state/anchor"), time::now())
        .unwrap()
        .remove(0)
        .server;
    Primary {
        ip,
        port,
        _proc: p,
        anchor,
        dir: g,
    }
}

/// Same RDATA from both, and it decodes and verifies under the key server.
fn compare(primary: &Primary, ip: &str, port: u16) {
    for i in [0, 1, 199, MEMBERS - 1] {
        let name = format!("www{i}.{ORIGIN}");
        let from_secondary = dig(&[
            "-p",
            &port.to_string(),
            &format!("@{ip}"),
            &name,
            "TYPE65300",
        ]);
        let from_primary = dig(&[
            "-p",
            &primary.port.to_string(),
            &format!("@{}", primary.ip),
            &name,
            "TYPE65300",
        ]);
        let s = rdata_hex(&from_secondary);
        assert_eq!(s, rdata_hex(&from_primary), "{name}:\n{from_secondary}");
        assert_eq!(s.len(), 1, "{from_secondary}");
        let rec = KeyRecord::from_wire(&hex::decode(&s[0].1).unwrap()).unwrap();
        rec.verify(
            &name,
            &primary.anchor.params,
            &primary.anchor.identities[0].1,
            time::now(),
        )
        .unwrap_or_else(|e| panic!("{name} from the secondary: {e}"));
    }
    let soa_p = dig(&[
        "+short",
        "-p",
        &primary.port.to_string(),
        &format!("@{}", primary.ip),
        ORIGIN,
        "SOA",
    ]);
    let soa_s = dig(&[
        "+short",
        "-p",
        &port.to_string(),
        &format!("@{ip}"),
        ORIGIN,
        "SOA",
    ]);
    assert_eq!(soa_p, soa_s);
    let nx = dig(&[
        "-p",
        &port.to_string(),
        &format!("@{ip}"),
        &format!("nope.{ORIGIN}"),
        "TYPE65300",
    ]);
    assert!(nx.contains("NXDOMAIN"), "{nx}");
}

#[test]
fn nsd_secondary_serves_the_transferred_key_zone() {
    let nsd = require_tool("nsd");
    let dir = tempfile::tempdir().unwrap();
    let sip = "127.0.0.42";
    let sport = free_port(sip);
    let p = primary(dir.path(), "127.0.0.41", &format!("{sip}:{sport}"));
    let d = dir.path().join("nsd");
    std::fs::create_dir_all(&d).unwrap();
    let conf = d.join("nsd.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n  ip-address: {sip}\n  port: {sport}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  zonelistfile: \"{d}/zone.list\"\n  verbosity: 2\nremote-control:\n  control-enable: no\nzone:\n  name: {ORIGIN}\n  zonefile: \"{d}/bench.zone\"\n  request-xfr: AXFR {}@{} NOKEY\n  allow-notify: 127.0.0.0/8 NOKEY\n",
            p.ip,
            p.port,
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
    let mut s = Proc::spawn("nsd", Command::new(nsd).arg("-d").arg("-c").arg(&conf));
    wait_dns(sip, sport, ORIGIN, &mut s);
    compare(&p, sip, sport);
    enroll_and_see_it_on_the_secondary(&p, sip, sport);
}

/// An online enrollment moves the serial; tpkd's NOTIFY makes the secondary transfer at once.
fn enroll_and_see_it_on_the_secondary(p: &Primary, sip: &str, sport: u16) {
    let name = format!("late.{ORIGIN}");
    let prefix = p.dir.join("late");
    ok(tp()
        .args(["keygen", "--name", &name, "--ip", "192.0.2.77"])
        .arg("--issuer-params")
        .arg(p.dir.join("state/params"))
        .arg("--out")
        .arg(&prefix));
    ok(tp()
        .arg("ctl")
        .arg("--config")
        .arg(p.dir.join("tpkd.toml"))
        .arg("enroll")
        .arg("--request")
        .arg(p.dir.join("late.req"))
        .arg("--response")
        .arg(p.dir.join("late.resp")));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let out = dig(&[
            "-p",
            &sport.to_string(),
            &format!("@{sip}"),
            &name,
            "TYPE65300",
        ]);
        if out.contains("ANSWER: 1") {
            let s = rdata_hex(&out);
            let rec = KeyRecord::from_wire(&hex::decode(&s[0].1).unwrap()).unwrap();
            rec.verify(
                &name,
                &p.anchor.params,
                &p.anchor.identities[0].1,
                time::now(),
            )
            .unwrap();
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the secondary did not pick up the enrollment (NOTIFY):\n{out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn knot_secondary_serves_the_transferred_key_zone() {
    let knotd = require_tool("knotd");
    let dir = tempfile::tempdir().unwrap();
    let sip = "127.0.0.44";
    let sport = free_port(sip);
    let p = primary(dir.path(), "127.0.0.43", &format!("{sip}:{sport}"));
    let d = dir.path().join("knot");
    std::fs::create_dir_all(&d).unwrap();
    let conf = d.join("knot.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n  listen: {sip}@{sport}\n  rundir: \"{d}\"\nlog:\n  - target: stderr\n    any: info\ndatabase:\n  storage: \"{d}\"\nremote:\n  - id: primary\n    address: {}@{}\nacl:\n  - id: notify\n    address: 127.0.0.0/8\n    action: notify\ntemplate:\n  - id: default\n    storage: \"{d}\"\nzone:\n  - domain: {ORIGIN}\n    master: primary\n    acl: notify\n    file: \"{d}/bench.zone\"\n",
            p.ip,
            p.port,
            d = d.display()
        ),
    )
    .unwrap();
    let check = Command::new(require_tool("knotc"))
        .arg("-c")
        .arg(&conf)
        .arg("conf-check")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut s = Proc::spawn("knotd", Command::new(knotd).arg("-c").arg(&conf));
    wait_dns(sip, sport, ORIGIN, &mut s);
    compare(&p, sip, sport);
    enroll_and_see_it_on_the_secondary(&p, sip, sport);
}
