//! Criterion benchmarks of the CL-PKC operations, with plain p256 ECDSA as the baseline.
//!
//! `cargo bench -p twinpeaks --bench clpkc -- --warm-up-time 1 --measurement-time 3`
//! Figures and the machine they came from: `docs/crypto.md`.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use rand_core::OsRng;
use twinpeaks::clpkc::{
    EntityKey, Identity, KeyRequest, Kgc, SecretValue, derive_public_key, seal, verify,
};

/// A key-record-sized message (the signed part of a record is about this long).
const MSG: &[u8] = &[0x5a; 160];
/// A partial key's size (what the KGC seals to an entity).
const PLAINTEXT: &[u8] = &[0xa5; 66];

fn bench(c: &mut Criterion) {
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

    let mut g = c.benchmark_group("clpkc");
    g.bench_function("setup", |b| {
        b.iter(|| Kgc::setup(black_box("example.com."), &mut OsRng).unwrap())
    });
    g.bench_function("request (secret value + PoP)", |b| {
        b.iter(|| {
            let sv = SecretValue::generate(&mut OsRng);
            KeyRequest::new(black_box(id.clone()), &sv)
        })
    });
    g.bench_function("verify_pop", |b| {
        b.iter(|| black_box(&req).verify_pop().unwrap())
    });
    g.bench_function("extract (incl. PoP check)", |b| {
        b.iter(|| kgc.extract(black_box(&req), &mut OsRng).unwrap())
    });
    g.bench_function("combine (incl. d·G check)", |b| {
        b.iter(|| EntityKey::combine(black_box(&id), &sv, &pk, kgc.params()).unwrap())
    });
    g.bench_function("derive_public_key", |b| {
        b.iter(|| derive_public_key(black_box(&id), black_box(&pk.w), &kgc.params().p_pub))
    });
    g.bench_function("sign", |b| b.iter(|| ek.sign(black_box(MSG))));
    g.bench_function("verify", |b| {
        b.iter(|| verify(&q, black_box(MSG), black_box(&sig)).unwrap())
    });
    g.bench_function("seal (66 B)", |b| {
        b.iter(|| seal(&q, &id, black_box(PLAINTEXT)).unwrap())
    });
    g.bench_function("open (66 B)", |b| {
        b.iter(|| ek.open(black_box(&ct)).unwrap())
    });
    g.finish();

    // Baseline, same run: plain p256 ECDSA-SHA256 with a random key, same message.
    let plain = SigningKey::random(&mut OsRng);
    let plain_vk = VerifyingKey::from(&plain);
    let plain_sig: Signature = plain.sign(MSG);
    let mut g = c.benchmark_group("baseline");
    g.bench_function("p256 keygen", |b| b.iter(|| SigningKey::random(&mut OsRng)));
    g.bench_function("p256 ecdsa sign", |b| {
        b.iter(|| -> Signature { plain.sign(black_box(MSG)) })
    });
    g.bench_function("p256 ecdsa verify", |b| {
        b.iter(|| {
            plain_vk
                .verify(black_box(MSG), black_box(&plain_sig))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
