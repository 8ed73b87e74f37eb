//! One deterministic full-record test vector (published in `docs/records.md`, "Test vector").
//!
//! The issuer is the KGC `example.com.` of vector 1 in `docs/crypto.md` (same `ms`, hence the
//! same params), acting as an island root: its own key is self-issued for
//! (`example.com.`, 192.0.2.53) and its self-issued KS record is the trust anchor. It issues
//! `www.example.com.` at 192.0.2.10 with vector 1's `x` and `r`, so `W`, `λ` and `Q` of the
//! entity record are vector 1's. Secrets are `SHA-256("TwinPeaks test vector 1 <what>")` as in
//! `plugin/tests/clpkc_vectors.rs`; ECDSA nonces are RFC 6979, so the signatures are fixed too.
//!
//! `TP_PRINT_VECTORS=1 cargo test -p twinpeaks --test record_vector -- --nocapture` prints the
//! values in the form used by the docs.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use twinpeaks::clpkc::{self, EntityKey, Identity, KeyRequest, Kgc, KgcParams, SecretValue};
use twinpeaks::record::{KeyRecord, KeyServerInfo};

/// 2026-01-01 00:00:00 UTC.
const NOT_BEFORE: u32 = 1_767_225_600;
/// 2027-01-01 00:00:00 UTC.
const NOT_AFTER: u32 = 1_798_761_600;
/// A time inside the window.
const NOW: u64 = 1_780_000_000;

const ISSUER: &str = "example.com.";
const ISSUER_IP: &str = "192.0.2.53";
const ISSUER_PORT: u16 = 53;
const OWNER: &str = "www.example.com.";
const OWNER_IP: &str = "192.0.2.10";

fn seed(what: &str) -> [u8; 32] {
    Sha256::digest(format!("TwinPeaks test vector 1 {what}")).into()
}

fn h(b: impl AsRef<[u8]>) -> String {
    hex::encode(b)
}

/// Issues a key for (`name`, `ip`) under `kgc` with fixed `x` and `r`.
fn fixed_key(kgc: &Kgc, name: &str, ip: &str, x: &str, r: &str) -> EntityKey {
    let id = Identity::new(name, ip.parse::<IpAddr>().unwrap(), kgc.params()).unwrap();
    let sv = SecretValue::from_bytes(&seed(x)).unwrap();
    let req = KeyRequest::new(id.clone(), &sv);
    let pk = kgc.extract_with_r(&req, &seed(r)).unwrap();
    EntityKey::combine(&id, &sv, &pk, kgc.params()).unwrap()
}

fn compute() -> Vec<(&'static str, String)> {
    let kgc = Kgc::from_secret_bytes(ISSUER, &seed("ms")).unwrap();
    let params = kgc.params().clone();

    // The issuer's own key and its self-issued KS record (the trust anchor).
    let own = fixed_key(&kgc, ISSUER, ISSUER_IP, "issuer x", "issuer r");
    let mut anchor = KeyRecord {
        ip: ISSUER_IP.parse().unwrap(),
        w: own.w().into(),
        issuer: params.digest(),
        not_before: NOT_BEFORE,
        not_after: NOT_AFTER,
        key_server: Some(Box::new(KeyServerInfo {
            port: ISSUER_PORT,
            p_pub: params.p_pub,
        })),
        signature: None,
    };
    anchor.sign(ISSUER, &own).unwrap();
    let anchor_rdata = anchor.to_wire().unwrap();

    // The entity record.
    let ent = fixed_key(&kgc, OWNER, OWNER_IP, "x", "r");
    let mut rec = KeyRecord {
        ip: OWNER_IP.parse().unwrap(),
        w: ent.w().into(),
        issuer: params.digest(),
        not_before: NOT_BEFORE,
        not_after: NOT_AFTER,
        key_server: None,
        signature: None,
    };
    rec.sign(OWNER, &own).unwrap();
    let rdata = rec.to_wire().unwrap();
    assert_eq!(rdata.len(), 144);
    assert_eq!(anchor_rdata.len(), 179);

    // What a client does with the anchor: params from the record itself (owner, P_pub),
    // Q_issuer = W + λ·P_pub under those params, self-signature verifies under Q_issuer.
    let a = KeyRecord::from_wire(&anchor_rdata).unwrap();
    let a_params: KgcParams = a.key_server_params(ISSUER).unwrap();
    assert_eq!(a_params, params);
    let q_issuer = a.public_key(ISSUER, &a_params).unwrap();
    assert_eq!(&q_issuer, own.public());
    assert_eq!(
        a.verify(ISSUER, &a_params, &q_issuer, NOW).unwrap(),
        q_issuer
    );

    // What a client does with the entity record.
    let r = KeyRecord::from_wire(&rdata).unwrap();
    assert_eq!(r, rec);
    let q = r.public_key(OWNER, &params).unwrap();
    assert_eq!(&q, ent.public());
    assert_eq!(r.verify(OWNER, &params, &q_issuer, NOW).unwrap(), q);
    // Under the entity's own key, another owner, or after the window: refused.
    assert!(r.verify(OWNER, &params, &q, NOW).is_err());
    assert!(r.verify_signature("mail.example.com.", &q_issuer).is_err());
    assert!(r.check_validity(u64::from(NOT_AFTER) + 1).is_err());

    let id = r.identity(OWNER).unwrap();
    let w = r.w_point().unwrap();
    let lambda = clpkc::lambda(&id, &w, &params.p_pub);
    let q_again = (w.to_projective() + params.p_pub.to_projective() * lambda).to_affine();
    assert_eq!(q_again, *q.as_affine());

    vec![
        ("issuer params", h(params.encode())),
        ("SHA-256(params)", h(params.digest())),
        ("anchor RDATA", h(&anchor_rdata)),
        ("Q_issuer", h(clpkc::point_to_bytes(&q_issuer))),
        ("signed message", h(r.signed_message(OWNER).unwrap())),
        ("RDATA", h(&rdata)),
        ("ID", h(id.encode())),
        ("λ", h(lambda.to_bytes())),
        ("Q = W + λ·P_pub", h(clpkc::point_to_bytes(&q))),
    ]
}

#[test]
fn full_record_vector() {
    let got = compute();
    if std::env::var_os("TP_PRINT_VECTORS").is_some() {
        println!("```");
        for (k, v) in &got {
            println!("{k:<18}{v}");
        }
        println!("```");
    }
    let expected: &[(&str, &str)] = &[
        (
            "issuer params",
            "0101000c6578616d706c652e636f6d2e02e94b4df2d880e58da1956cbe35de2591a09b319bd904d4fadf968a014fb1430c",
        ),
        (
            "SHA-256(params)",
            "c3b5e5a2aa19bfc4d5e897ea7851809d05e42b11d4474c4f76f431c4405cd578",
        ),
        (
            "anchor RDATA",
            "010104c0000235035021321aca435e3647e9880925bb154339629e8bb652f60b025af02f124cac8cc3b5e5a2aa19bfc4d5e897ea7851809d05e42b11d4474c4f76f431c4405cd5786955b9006b36ec80003502e94b4df2d880e58da1956cbe35de2591a09b319bd904d4fadf968a014fb1430c1f764a8db1ed5c4f7036075812133fb84ab66c60920d2c7b5de22c4c510439087401fc5d6e061d8cd04ba397a0e0be2c24d62c849e5843e49e29ceaedb3c34bc",
        ),
        (
            "Q_issuer",
            "0318af02702127fc8445db772eadb18db65d27fc85e4ef43c22cdd5869ef193dc5",
        ),
        (
            "signed message",
            "ff1400107777772e6578616d706c652e636f6d2e010004c000020a02ec6e4384a854af6ef01324549449a92a765ee66e82e02af0521b92c494a01871c3b5e5a2aa19bfc4d5e897ea7851809d05e42b11d4474c4f76f431c4405cd5786955b9006b36ec80",
        ),
        (
            "RDATA",
            "010004c000020a02ec6e4384a854af6ef01324549449a92a765ee66e82e02af0521b92c494a01871c3b5e5a2aa19bfc4d5e897ea7851809d05e42b11d4474c4f76f431c4405cd5786955b9006b36ec80238bf4367a4cd7ce2f4634998b469a3d2e488e0c769f2cc62d3d9af76a9357270e3842473a805f69b528b098cc6ad583c1517f923c819511c8d1ecd3ce81e97f",
        ),
        (
            "ID",
            "00107777772e6578616d706c652e636f6d2e0004c000020ac3b5e5a2aa19bfc4d5e897ea7851809d05e42b11d4474c4f76f431c4405cd578",
        ),
        (
            "λ",
            "f95fa1f8c667fa36e646ac8f60b96c9bc41290fc4bfac80e09e8dcc1fbf72b18",
        ),
        (
            "Q = W + λ·P_pub",
            "0341b3211b987029068c4949f7cb45689d8cc0624193cadb4f1651665dbba9236c",
        ),
    ];
    assert_eq!(got.len(), expected.len());
    for ((k, v), (ek, ev)) in got.iter().zip(expected) {
        assert_eq!(k, ek);
        assert_eq!(v, ev, "{k}");
    }
}
