//! Key lifecycle operations other than re-signing (DESIGN §4, docs/operator.md "Key
//! lifecycle"): an IP change (`tp ctl change-ip`: the new record enrolled and the old one
//! withdrawn in one step) and a rotation without a change of ID (`tp ctl enroll` again for the
//! same name and IP replaces the key), on the real tpkd and `tp`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{KeyServer, dig, finalize, ok, rdata_hex, run, tp, with_ext};
use twinpeaks::clpkc::{self, Identity, KgcParams, PublicKey};
use twinpeaks::keyfile;
use twinpeaks::record::KeyRecord;
use twinpeaks::resolver::anchors;
use twinpeaks::time;

const ZONE: &str = "example.test.";
const WWW: &str = "www.example.test.";
const DEV: &str = "dev.example.test.";

fn ctl(ks: &KeyServer) -> Command {
    let mut c = tp();
    c.arg("ctl").arg("--config").arg(&ks.config);
    c
}

/// Every TPKEY record served for `name`, decoded.
fn served(ks: &KeyServer, name: &str) -> Vec<KeyRecord> {
    let out = dig(&["-p", &ks.p(), &ks.at(), name, "TYPE65300"]);
    rdata_hex(&out)
        .into_iter()
        .filter(|(owner, _)| owner == name)
        .map(|(_, h)| KeyRecord::from_wire(&hex::decode(h).unwrap()).expect("RDATA decodes"))
        .collect()
}

/// The key server's own params and key, from its anchor file.
fn anchor(ks: &KeyServer) -> (KgcParams, PublicKey) {
    let a = anchors::read(&ks.state.join("anchor"), time::now())
        .expect("anchor")
        .remove(0)
        .server;
    (a.params, a.identities[0].1)
}

fn key_q(key_file: &Path) -> PublicKey {
    *keyfile::read_entity(key_file).unwrap().0.public()
}

fn q_hex(q: &PublicKey) -> String {
    hex::encode(clpkc::point_to_bytes(q))
}

/// `tp resolve --json --anchors ANCHOR NAME`: the Q (hex) of each pair.
fn resolve(ks: &KeyServer, name: &str) -> Vec<(String, String)> {
    let out = ok(tp()
        .args(["resolve", "--json"])
        .arg("--anchors")
        .arg(ks.state.join("anchor"))
        .arg(name));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .map(|p| {
            (
                p["ip"].as_str().unwrap_or_default().to_string(),
                p["key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// IP change: `tp ctl change-ip` serves the new (name, new IP) record, which verifies, and the
/// old one is gone; the old record's W does not give the new key for the new IP, and the old key
/// file's identity is for the old IP. A zone-file member and a non-member are refused with
/// nothing changed.
#[test]
fn change_ip_enrolls_the_new_ip_and_withdraws_the_old_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = KeyServer::new(dir.path(), ZONE, "127.0.4.1", "", "");
    let www_key = ks.issue_to_file(WWW, "192.0.2.10");
    ks.start();
    let old_key = ks.ctl_enroll(DEV, "192.0.2.50", "dev-old");
    let old = served(&ks, DEV);
    assert_eq!(old.len(), 1, "{old:?}");
    let old = old[0].clone();
    assert_eq!(old.ip.to_string(), "192.0.2.50");

    let new_prefix = ks.keygen(DEV, "192.0.2.51", "dev-new");
    let out = ok(ctl(&ks)
        .arg("change-ip")
        .arg("--request")
        .arg(with_ext(&new_prefix, "req"))
        .arg("--response")
        .arg(with_ext(&new_prefix, "resp"))
        .args(["--old-ip", "192.0.2.50"]));
    assert!(out.contains("moved from 192.0.2.50 to 192.0.2.51"), "{out}");
    let new_key = finalize(&new_prefix);

    let now_served = served(&ks, DEV);
    assert_eq!(now_served.len(), 1, "only the new record: {now_served:?}");
    let new = &now_served[0];
    assert_eq!(new.ip.to_string(), "192.0.2.51");
    let (params, ks_q) = anchor(&ks);
    let q = new
        .verify(DEV, &params, &ks_q, time::now())
        .expect("the new record verifies");
    assert_eq!(
        q,
        key_q(&new_key),
        "served key differs from the new key file"
    );
    let resolved = resolve(&ks, DEV);
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0].1, q_hex(&q));

    // The old record's W with the new IP gives some other point, not the new key.
    let new_id = Identity::new(DEV, "192.0.2.51".parse().unwrap(), &params).unwrap();
    let forged = clpkc::derive_public_key(&new_id, &old.w_point().unwrap(), &params.p_pub);
    assert_ne!(forged, q, "the old W derives the new key for the new IP");
    assert_ne!(forged, key_q(&old_key));
    let (old_entity, _) = keyfile::read_entity(&old_key).unwrap();
    assert_eq!(old_entity.identity().ip.to_string(), "192.0.2.50");
    assert_ne!(key_q(&old_key), q);

    // `tp ctl members` lists the new IP, not the old one.
    let members = ok(ctl(&ks).arg("members"));
    assert!(
        members.lines().any(
            |l| l.starts_with(&format!("{DEV} 192.0.2.51 entity ")) && l.ends_with(" enrolled")
        ),
        "{members}"
    );
    assert!(!members.contains("192.0.2.50"), "{members}");
    assert!(
        members.lines().any(
            |l| l.starts_with(&format!("{WWW} 192.0.2.10 entity ")) && l.contains("zone.keys:")
        ),
        "{members}"
    );

    // A zone-file member is refused, naming its line; nothing changes.
    let www_prefix = ks.keygen(WWW, "192.0.2.11", "www-new");
    let out = run(ctl(&ks)
        .arg("change-ip")
        .arg("--request")
        .arg(with_ext(&www_prefix, "req"))
        .arg("--response")
        .arg(with_ext(&www_prefix, "resp"))
        .args(["--old-ip", "192.0.2.10"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("zone-file member") && err.contains("zone.keys:"),
        "{err}"
    );
    let www = served(&ks, WWW);
    assert_eq!(www.len(), 1);
    assert_eq!(www[0].ip.to_string(), "192.0.2.10");
    assert_eq!(www[0].public_key(WWW, &params).unwrap(), key_q(&www_key));

    // An old IP that is not a member: refused, the new IP is not served.
    let stray = ks.keygen(DEV, "192.0.2.52", "dev-stray");
    let out = run(ctl(&ks)
        .arg("change-ip")
        .arg("--request")
        .arg(with_ext(&stray, "req"))
        .arg("--response")
        .arg(with_ext(&stray, "resp"))
        .args(["--old-ip", "192.0.2.99"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an enrolled member"), "{err}");
    let now_served = served(&ks, DEV);
    assert_eq!(now_served.len(), 1, "{now_served:?}");
    assert_eq!(now_served[0], *new);

    // After a restart, still only the new record.
    ks.stop();
    ks.start();
    assert_eq!(served(&ks, DEV), vec![new.clone()]);
}

/// Rotation without a change of ID: a second `tp ctl enroll` for the same name and IP with a new
/// secret value replaces the key; the served key is the new one, not the old, and `tp resolve`
/// gives the new Q.
#[test]
fn enrolling_again_for_the_same_name_and_ip_rotates_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = KeyServer::new(dir.path(), ZONE, "127.0.4.2", "", "");
    ks.start();
    let (params, ks_q) = anchor(&ks);
    let old_key = ks.ctl_enroll(DEV, "192.0.2.60", "dev-1");
    let first = served(&ks, DEV);
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].verify(DEV, &params, &ks_q, time::now()).unwrap(),
        key_q(&old_key)
    );
    assert_eq!(resolve(&ks, DEV)[0].1, q_hex(&key_q(&old_key)));

    let new_key = ks.ctl_enroll(DEV, "192.0.2.60", "dev-2");
    let now_served = served(&ks, DEV);
    assert_eq!(
        now_served.len(),
        1,
        "the old record was replaced: {now_served:?}"
    );
    let rec = &now_served[0];
    assert_eq!(rec.ip.to_string(), "192.0.2.60");
    assert_ne!(rec.w, first[0].w, "W did not change");
    let q = rec
        .verify(DEV, &params, &ks_q, time::now())
        .expect("the new record verifies");
    assert_eq!(q, key_q(&new_key));
    assert_ne!(q, key_q(&old_key), "the old key is still the served one");
    // Same identity (name, IP, issuer), new key.
    let (a, _) = keyfile::read_entity(&old_key).unwrap();
    let (b, _) = keyfile::read_entity(&new_key).unwrap();
    assert_eq!(a.identity(), b.identity());
    let resolved = resolve(&ks, DEV);
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0].1, q_hex(&q), "tp resolve gives the old key");
    ks.stop();
}
