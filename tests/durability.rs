//! Durability of online enrollment: tpkd killed with SIGKILL in the middle of a burst of
//! concurrent `tp enroll`s. After a restart every enrollment the server acknowledged is
//! served exactly once and verifies, nothing is half-written, and the SOA serial covers them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{KeyServer, dig, ok, rdata_hex, run, tp};
use twinpeaks::record::KeyRecord;
use twinpeaks::resolver::anchors;
use twinpeaks::time;

const ZONE: &str = "example.test.";
const REQUESTS: usize = 40;
const THREADS: usize = 8;
/// SIGKILL once 8 + (0..9) enrollments have been acknowledged (varies from run to run).
fn kill_after() -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    8 + (nanos as usize / 1000) % 9
}

fn name(i: usize) -> String {
    format!("n{i}.{ZONE}")
}

fn ip(i: usize) -> String {
    format!("192.0.2.{}", i + 10)
}

fn prefix(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("n{i}"))
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    PathBuf::from(format!("{}.{ext}", prefix.display()))
}

fn serial(ks: &KeyServer) -> u32 {
    dig(&["+short", "-p", &ks.p(), &ks.at(), ZONE, "SOA"])
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

/// Every TPKEY record of the zone (AXFR), by owner.
fn served(ks: &KeyServer) -> BTreeMap<String, Vec<String>> {
    let out = dig(&["-p", &ks.p(), &ks.at(), ZONE, "AXFR"]);
    assert!(!out.contains("Transfer failed"), "{out}");
    let mut by_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (owner, hex_) in rdata_hex(&out) {
        by_owner.entry(owner.to_lowercase()).or_default().push(hex_);
    }
    by_owner
}

#[test]
fn acknowledged_enrollments_survive_sigkill_in_a_concurrent_burst() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (secret_file, _) = common::tsig_secret(d, "burst-key.tsig", 1);
    let cfg = format!(
        "[[tsig]]\nname = \"burst-key.\"\nalgorithm = \"hmac-sha256\"\nsecret_file = \"{}\"\nallow = [\"*.{ZONE}\"]\n",
        secret_file.file_name().unwrap().to_str().unwrap()
    );
    // KeyServer::new takes its port from common::free_port.
    let mut ks = KeyServer::new(d, ZONE, "127.0.5.1", "", &cfg);
    let file_serial = 1u32;
    ks.start();
    // The served serial before the burst: the file's, plus whatever generation steps tpkd
    // made on its own at start.
    let s0 = serial(&ks);
    assert!(
        s0 >= file_serial,
        "serial {s0} below the file's {file_serial}"
    );

    for i in 0..REQUESTS {
        ks.keygen_to(&name(i), &ip(i), &prefix(d, i));
    }

    let kill_after = kill_after();
    let server = format!("{}:{}", ks.ip, ks.port);
    let acks = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let acked: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());
    // The highest serial seen served just after an acknowledgement: the zone is swapped in
    // before the answer is sent, so it covers that member.
    let seen = std::sync::atomic::AtomicU32::new(0);
    let (ks_ip, ks_port) = (ks.at(), ks.p());
    let mut proc_ = ks.proc_.take().unwrap();
    let killed_at = std::thread::scope(|s| {
        for t in 0..THREADS {
            let (server, secret_file, acks, done, acked, seen) =
                (&server, &secret_file, &acks, &done, &acked, &seen);
            let (ks_ip, ks_port) = (&ks_ip, &ks_port);
            s.spawn(move || {
                for i in (t..REQUESTS).step_by(THREADS) {
                    let p = prefix(d, i);
                    let out = run(tp()
                        .arg("enroll")
                        .args(["--server", server, "--zone", ZONE])
                        .args(["--tsig-key", "burst-key.", "--timeout", "3"])
                        .arg("--tsig-secret-file")
                        .arg(secret_file)
                        .arg("--request")
                        .arg(with_ext(&p, "req"))
                        .arg("--response")
                        .arg(with_ext(&p, "resp")));
                    let written = std::fs::metadata(with_ext(&p, "resp"))
                        .map(|m| m.len() > 0)
                        .unwrap_or(false);
                    if out.status.success() && written {
                        acked.lock().unwrap().insert(i);
                        acks.fetch_add(1, Ordering::SeqCst);
                        // The server may be killed by now: then there is no serial to read.
                        let soa = run(std::process::Command::new("dig").args([
                            "+short", "+tries=1", "+time=1", "-p", ks_port, ks_ip, ZONE, "SOA",
                        ]));
                        let soa = String::from_utf8_lossy(&soa.stdout);
                        if let Some(n) = soa.split_whitespace().nth(2).and_then(|n| n.parse().ok())
                        {
                            seen.fetch_max(n, Ordering::SeqCst);
                        }
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        // SIGKILL in the middle of the burst, as soon as enough have been acknowledged.
        let deadline = Instant::now() + Duration::from_secs(120);
        while acks.load(Ordering::SeqCst) < kill_after && done.load(Ordering::SeqCst) < THREADS {
            assert!(Instant::now() < deadline, "the burst did not progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        let at = acks.load(Ordering::SeqCst);
        proc_.child.kill().expect("SIGKILL tpkd");
        let _ = proc_.child.wait();
        at
    });
    drop(proc_);
    let acked = acked.into_inner().unwrap();
    assert!(
        killed_at >= kill_after,
        "tpkd was killed after only {killed_at} acknowledgements"
    );
    assert!(
        acked.len() < REQUESTS,
        "every enrollment finished before the kill: the crash hit nothing"
    );
    eprintln!(
        "killed after {killed_at} acknowledgements; {} acknowledged in all",
        acked.len()
    );

    // The store is not corrupt: tpkd starts on the same config.
    ks.start();
    let a = anchors::read(&ks.state.join("anchor"), time::now())
        .expect("anchor")
        .remove(0);
    let (params, q) = (a.server.params, a.server.identities[0].1);
    let verify = |owner: &str, hex_: &str| -> KeyRecord {
        let rec = KeyRecord::from_wire(&hex::decode(hex_).unwrap())
            .unwrap_or_else(|e| panic!("{owner}: half-written record: {e:?}"));
        rec.verify(owner, &params, &q, time::now())
            .unwrap_or_else(|e| panic!("{owner}: {e}"));
        rec
    };

    // Members that were not acknowledged (killed between commit and answer, or never
    // reached the store) may or may not be present; any that is must verify and be served
    // once. Nothing outside the burst (and the key server's own record at the apex) is
    // served.
    let mut zone = served(&ks);
    let apex = zone
        .remove(ZONE)
        .expect("the key server's own record at the apex");
    assert_eq!(apex.len(), 1, "apex: {apex:?}");
    for (owner, recs) in &zone {
        let i = (0..REQUESTS)
            .find(|&i| &name(i) == owner)
            .unwrap_or_else(|| panic!("unexpected member {owner}"));
        assert_eq!(recs.len(), 1, "{owner} served {} times", recs.len());
        assert_eq!(verify(owner, &recs[0]).ip.to_string(), ip(i), "{owner}");
    }

    for &i in &acked {
        let n = name(i);
        let out = dig(&["-p", &ks.p(), &ks.at(), &n, "TYPE65300"]);
        let recs = rdata_hex(&out);
        assert_eq!(
            recs.len(),
            1,
            "acknowledged {n} is not served exactly once after the crash:\n{out}"
        );
        let rec = verify(&n, &recs[0].1);
        assert_eq!(rec.ip.to_string(), ip(i), "{n}");
        // The acknowledged response finalizes to the key that is served.
        let p = prefix(d, i);
        let key = with_ext(&p, "key");
        ok(tp()
            .arg("finalize")
            .arg("--secret")
            .arg(with_ext(&p, "secret"))
            .arg("--response")
            .arg(with_ext(&p, "resp"))
            .arg("--out")
            .arg(&key));
        let (k, _) = twinpeaks::keyfile::read_entity(&key).unwrap();
        assert_eq!(&rec.public_key(&n, &params).unwrap(), k.public(), "{n}");
    }

    // Each stored member was written in the same transaction as a generation step (one step
    // per group commit, which may hold several members): the serial moved past the burst's
    // start, and a secondary asking for it gets every acknowledged member.
    let s = serial(&ks);
    assert!(
        acked.is_empty() || s > s0,
        "serial {s} did not move past {s0} for {} acknowledged",
        acked.len()
    );
    // No serial a secondary could have seen is lost: it would otherwise never ask again.
    let seen = seen.into_inner();
    assert!(
        s >= seen,
        "serial {s} after the restart, {seen} served before the crash"
    );
    let present = zone.len();
    eprintln!(
        "after restart: serial {s}, {present} members served ({} acknowledged)",
        acked.len()
    );
    let status = ks.stop().unwrap();
    assert!(status.success(), "clean shutdown: {status}");
}
