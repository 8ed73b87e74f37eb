//! Instruction-count driver for the CL-PKC operations (not a test of behaviour).
//!
//! Wall-clock figures on a shared two-core machine are noisy; instruction counts are not.
//! Run one operation `TP_ICOUNT_N` times under callgrind, once with N = 0 and once with N > 0;
//! the difference divided by N is the cost of one operation. `docs/crypto.md` has the loop that
//! does it for every operation and the figures.
//!
//! ```text
//! cargo test --release -p twinpeaks --test clpkc_icount --no-run
//! TP_ICOUNT_OP=sign TP_ICOUNT_N=50 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/deps/clpkc_icount-<hash> --ignored --exact icount
//! ```

use std::hint::black_box;
use std::net::IpAddr;

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use rand_core::OsRng;
use twinpeaks::clpkc::{
    EntityKey, Identity, KeyRequest, Kgc, SecretValue, derive_public_key, seal, verify,
};

const MSG: &[u8] = &[0x5a; 160];
const PLAINTEXT: &[u8] = &[0xa5; 66];

/// Operations measured, in the order of the docs table.
pub const OPS: &[&str] = &[
    "setup",
    "request",
    "verify_pop",
    "extract",
    "combine",
    "derive_public_key",
    "sign",
    "verify",
    "seal",
    "open",
    "p256_keygen",
    "p256_sign",
    "p256_verify",
];

#[test]
#[ignore = "driver for callgrind, see the file's doc comment"]
fn icount() {
    let op = std::env::var("TP_ICOUNT_OP").unwrap_or_default();
    let n: usize = std::env::var("TP_ICOUNT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        op.is_empty() || OPS.contains(&op.as_str()),
        "unknown op {op}"
    );

    let ip: IpAddr = "192.0.2.10".parse().unwrap();
    let kgc = Kgc::setup("example.com.", &mut OsRng).unwrap();
    let id = Identity::new("www.example.com.", ip, kgc.params()).unwrap();
    let sv = SecretValue::generate(&mut OsRng);
    let req = KeyRequest::new(id.clone(), &sv);
    let pk = kgc.extract(&req, &mut OsRng).unwrap();
    let ek = EntityKey::combine(&id, &sv, &pk, kgc.params()).unwrap();
    let q = *ek.public();
    let sig = ek.sign(MSG);
    let ct = seal(&q, &id, PLAINTEXT).unwrap();
    let plain = SigningKey::random(&mut OsRng);
    let plain_vk = VerifyingKey::from(&plain);
    let plain_sig: Signature = plain.sign(MSG);

    for _ in 0..n {
        match op.as_str() {
            "setup" => drop(black_box(Kgc::setup("example.com.", &mut OsRng).unwrap())),
            "request" => {
                let sv = SecretValue::generate(&mut OsRng);
                black_box(KeyRequest::new(black_box(id.clone()), &sv));
            }
            "verify_pop" => black_box(&req).verify_pop().unwrap(),
            "extract" => drop(black_box(kgc.extract(black_box(&req), &mut OsRng).unwrap())),
            "combine" => drop(black_box(
                EntityKey::combine(black_box(&id), &sv, &pk, kgc.params()).unwrap(),
            )),
            "derive_public_key" => {
                black_box(derive_public_key(
                    black_box(&id),
                    &pk.w,
                    &kgc.params().p_pub,
                ));
            }
            "sign" => {
                black_box(ek.sign(black_box(MSG)));
            }
            "verify" => verify(&q, black_box(MSG), black_box(&sig)).unwrap(),
            "seal" => {
                black_box(seal(&q, &id, black_box(PLAINTEXT)).unwrap());
            }
            "open" => {
                black_box(ek.open(black_box(&ct)).unwrap());
            }
            "p256_keygen" => drop(black_box(SigningKey::random(&mut OsRng))),
            "p256_sign" => {
                let s: Signature = plain.sign(black_box(MSG));
                black_box(s);
            }
            "p256_verify" => plain_vk
                .verify(black_box(MSG), black_box(&plain_sig))
                .unwrap(),
            _ => {}
        }
    }
}
