//! KGC compromise: `tp kgc-rotate` on a stopped root key server. Every member issued under the
//! retired params is withdrawn or named, the root's key and trust anchor are made again, the
//! old anchor no longer verifies anything, and a member that enrolls again resolves under the
//! new anchor with a new key.

mod common;

use std::path::Path;
use std::process::Command;

use common::{KeyServer, bin, dig, ok, run, tp};

fn resolve(anchor: &Path, name: &str) -> std::process::Output {
    run(tp()
        .arg("resolve")
        .arg("--anchors")
        .arg(anchor)
        .arg("--keys-only")
        .arg(name))
}

fn public_hex(key: &Path) -> String {
    let (k, _) = twinpeaks::keyfile::read_entity(key).unwrap();
    hex::encode(twinpeaks::clpkc::point_to_bytes(k.public()))
}

#[test]
fn a_compromised_kgc_is_rotated_and_every_member_enrolls_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ip = "127.0.11.1";
    let mut ks = KeyServer::new(&d.join("root"), "example.", ip, "", "");
    // A zone-file member (offline issuance) and one enrolled online.
    ks.issue_to_file("mail.example.", "10.11.0.2");
    ks.start();
    let www_old = ks.ctl_enroll("www.example.", "10.11.0.1", "www-old");
    let old_anchor = d.join("old-anchor");
    std::fs::copy(ks.state.join("anchor"), &old_anchor).unwrap();
    let out = resolve(&old_anchor, "www.example.");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&public_hex(&www_old)),
        "{out:?}"
    );

    // Not while tpkd runs.
    let out = run(tp().arg("kgc-rotate").arg("--config").arg(&ks.config));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tpkd is running"),
        "{out:?}"
    );

    ks.stop();
    let old_params = std::fs::read_to_string(ks.params()).unwrap();
    let said = ok(tp().arg("kgc-rotate").arg("--config").arg(&ks.config));
    assert_ne!(std::fs::read_to_string(ks.params()).unwrap(), old_params);
    assert!(said.contains("1 enrolled member(s) withdrawn"), "{said}");
    assert!(said.contains("www.example. 10.11.0.1 (entity)"), "{said}");
    assert!(
        said.contains("zone.keys:6: mail.example. 10.11.0.2 (entity)"),
        "{said}"
    );
    assert!(
        said.contains("every resolver replaces its trust anchor"),
        "{said}"
    );
    assert!(!ks.state.join("rotating").exists());
    // The master secret and the key stay private.
    for f in ["kgc.secret", "server.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ks.state.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f}: {mode:o}");
    }

    // The zone-file line issued under the retired params refuses the zone, naming it...
    let out = run(Command::new(bin("tpkd")).arg("--config").arg(&ks.config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("zone.keys:6:") && err.contains("issued under params"),
        "{err}"
    );
    // ...until the operator deletes it.
    let zone = std::fs::read_to_string(&ks.zone_file).unwrap();
    let kept: Vec<&str> = zone
        .lines()
        .filter(|l| !l.starts_with("mail.example."))
        .collect();
    std::fs::write(&ks.zone_file, kept.join("\n") + "\n").unwrap();
    ks.start();

    // The withdrawn member is gone.
    let out = dig(&["-p", &ks.p(), &ks.at(), "www.example.", "TYPE65300"]);
    assert!(out.contains("NXDOMAIN"), "{out}");

    // www enrolls again (a new request from the new params): it resolves under the new
    // anchor, with a new key.
    let www_new = ks.ctl_enroll("www.example.", "10.11.0.1", "www-new");
    let new_anchor = ks.state.join("anchor");
    let out = resolve(&new_anchor, "www.example.");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&public_hex(&www_new)), "{text}");
    assert!(!text.contains(&public_hex(&www_old)), "{text}");
    // A resolver still holding the old anchor verifies nothing the rotated root serves.
    let out = resolve(&old_anchor, "www.example.");
    assert!(!out.status.success(), "old anchor still accepted: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("www.example."), "{err}");
    ks.stop();
}

/// A rotation interrupted after its staging was complete (here: a rename fails half-way, as a
/// crash would stop it) is finished by the next run, not started over: the root keeps one key,
/// one apex record and the anchor that matches them.
#[test]
fn an_interrupted_rotation_is_finished_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut ks = KeyServer::new(&d.join("root"), "example.", "127.0.11.2", "", "");
    ks.start();
    let www = ks.ctl_enroll("www.example.", "10.11.0.3", "www-old");
    ks.stop();
    // `params` is a directory: the rename of the new params fails after the new kgc.secret is
    // in place and the store has been written.
    let params = ks.params();
    std::fs::remove_file(&params).unwrap();
    std::fs::create_dir_all(params.join("blocker")).unwrap();
    let out = run(tp().arg("kgc-rotate").arg("--config").arg(&ks.config));
    assert!(!out.status.success(), "{out:?}");
    assert!(ks.state.join("rotating/COMPLETE").exists());
    std::fs::remove_dir_all(&params).unwrap();

    let said = ok(tp().arg("kgc-rotate").arg("--config").arg(&ks.config));
    assert!(
        said.contains("an interrupted rotation was found and finished"),
        "{said}"
    );
    assert!(
        said.contains("every resolver replaces its trust anchor"),
        "{said}"
    );
    assert!(!ks.state.join("rotating").exists());
    ks.start();
    // One apex record, the anchor's; www withdrawn by the first run.
    let anchor = ks.state.join("anchor");
    let out = dig(&["-p", &ks.p(), &ks.at(), "example.", "TYPE65300"]);
    assert_eq!(common::rdata_hex(&out).len(), 1, "{out}");
    let out = dig(&["-p", &ks.p(), &ks.at(), "www.example.", "TYPE65300"]);
    assert!(out.contains("NXDOMAIN"), "{out}");
    // The rotated root verifies under its new anchor: a member enrolled now resolves.
    let www2 = ks.ctl_enroll("www.example.", "10.11.0.3", "www-new");
    let out = resolve(&anchor, "www.example.");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&public_hex(&www2)), "{text}");
    assert!(!text.contains(&public_hex(&www)), "{text}");
    ks.stop();
}
