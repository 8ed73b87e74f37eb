//! Property tests of the CL-PKC construction (DESIGN §3).
//!
//! Secrets come from proptest-chosen 32-byte seeds (through the doc-hidden deterministic entry
//! points), so a failing case shrinks and replays exactly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use twinpeaks::clpkc::{
    self, CryptoError, EntityKey, Identity, KeyRequest, Kgc, KgcParams, PartialKey, PublicKey,
    SecretValue, derive_public_key, verify,
};

struct Enrolled {
    kgc: Kgc,
    id: Identity,
    sv: SecretValue,
    pk: PartialKey,
    ek: EntityKey,
}

fn enrol(
    kgc_name: &str,
    name: &str,
    ip: IpAddr,
    ms: [u8; 32],
    x: [u8; 32],
    r: [u8; 32],
) -> Enrolled {
    let kgc = Kgc::from_secret_bytes(kgc_name, &ms).expect("seed is a valid scalar");
    let id = Identity::new(name, ip, kgc.params()).expect("valid name");
    let sv = SecretValue::from_bytes(&x).expect("seed is a valid scalar");
    let req = KeyRequest::new(id.clone(), &sv);
    let pk = kgc.extract_with_r(&req, &r).expect("extract");
    let ek = EntityKey::combine(&id, &sv, &pk, kgc.params()).expect("combine");
    Enrolled {
        kgc,
        id,
        sv,
        pk,
        ek,
    }
}

/// A 32-byte seed that is a valid non-zero scalar (all but ~2^-32 of them are).
fn scalar_seed() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>().prop_filter("valid scalar", |b| SecretValue::from_bytes(b).is_ok())
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,8}[a-z0-9](\\.[a-z_][a-z0-9]{0,6}){0,3}\\.?"
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn point(seed: &[u8; 32]) -> PublicKey {
    SecretValue::from_bytes(seed)
        .expect("valid scalar")
        .public()
}

fn d_of(pk: &PartialKey) -> Vec<u8> {
    pk.encode()[1 + clpkc::POINT_LEN..].to_vec()
}

/// The key derived from `(id, w, p_pub)` is not `ek`'s: signatures by `ek` fail under it.
fn assert_key_differs(ek: &EntityKey, id: &Identity, w: &PublicKey, p_pub: &PublicKey) {
    let q = derive_public_key(id, w, p_pub);
    assert_ne!(q, *ek.public());
    let sig = ek.sign(b"probe");
    assert_eq!(verify(&q, b"probe", &sig), Err(CryptoError::BadSignature));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn honest_flow_round_trips(
        n in name(), addr in ip(), ms in scalar_seed(), x in scalar_seed(), r in scalar_seed(),
        msg in proptest::collection::vec(any::<u8>(), 0..200),
        pt in proptest::collection::vec(any::<u8>(), 0..200),
        e in scalar_seed(),
    ) {
        let en = enrol("example.com.", &n, addr, ms, x, r);
        let q = derive_public_key(&en.id, &en.pk.w, &en.kgc.params().p_pub);
        prop_assert_eq!(q, *en.ek.public());
        let sig = en.ek.sign(&msg);
        prop_assert!(verify(&q, &msg, &sig).is_ok());
        let mut other = msg.clone();
        other.push(0);
        prop_assert_eq!(verify(&q, &other, &sig), Err(CryptoError::BadSignature));
        let ct = clpkc::seal_with_ephemeral(&q, &en.id, &pt, &e).unwrap();
        prop_assert_eq!(ct.len(), pt.len() + clpkc::SEAL_OVERHEAD);
        prop_assert_eq!(en.ek.open(&ct).unwrap(), pt);
        // Every encoding round-trips.
        prop_assert_eq!(&Identity::decode(&en.id.encode()).unwrap(), &en.id);
        prop_assert_eq!(&KgcParams::decode(&en.kgc.params().encode()).unwrap(), en.kgc.params());
        let req = KeyRequest::new(en.id.clone(), &en.sv);
        prop_assert_eq!(&KeyRequest::decode(&req.encode()).unwrap(), &req);
        prop_assert_eq!(PartialKey::decode(&en.pk.encode()).unwrap().encode(), en.pk.encode());
    }

    #[test]
    fn changing_the_name_changes_the_key(
        n in name(), n2 in name(), addr in ip(),
        ms in scalar_seed(), x in scalar_seed(), r in scalar_seed(),
    ) {
        let en = enrol("example.com.", &n, addr, ms, x, r);
        let id2 = Identity::new(&n2, addr, en.kgc.params()).unwrap();
        prop_assume!(id2 != en.id);
        assert_key_differs(&en.ek, &id2, &en.pk.w, &en.kgc.params().p_pub);
        prop_assert_eq!(
            EntityKey::combine(&id2, &en.sv, &en.pk, en.kgc.params()).unwrap_err(),
            CryptoError::PartialKeyCheckFailed
        );
    }

    #[test]
    fn changing_the_ip_changes_the_key(
        n in name(), addr in ip(), addr2 in ip(),
        ms in scalar_seed(), x in scalar_seed(), r in scalar_seed(),
    ) {
        prop_assume!(addr != addr2);
        let en = enrol("example.com.", &n, addr, ms, x, r);
        let id2 = Identity::new(&n, addr2, en.kgc.params()).unwrap();
        assert_key_differs(&en.ek, &id2, &en.pk.w, &en.kgc.params().p_pub);
        prop_assert_eq!(
            EntityKey::combine(&id2, &en.sv, &en.pk, en.kgc.params()).unwrap_err(),
            CryptoError::PartialKeyCheckFailed
        );
    }

    #[test]
    fn changing_the_params_changes_the_key(
        n in name(), addr in ip(), ms in scalar_seed(), ms2 in scalar_seed(),
        x in scalar_seed(), r in scalar_seed(), other_name in name(),
    ) {
        let en = enrol("example.com.", &n, addr, ms, x, r);
        // Another P_pub, or the same P_pub under another key-server name: other params.
        let other_p_pub = Kgc::from_secret_bytes("example.com.", &ms2).unwrap().params().clone();
        let renamed = KgcParams::new(&other_name, en.kgc.params().p_pub).unwrap();
        for params in [other_p_pub, renamed] {
            if params == *en.kgc.params() {
                continue;
            }
            // The identity under the other issuer differs, and so does the key.
            let id2 = Identity::new(&n, addr, &params).unwrap();
            prop_assert_ne!(&id2, &en.id);
            assert_key_differs(&en.ek, &id2, &en.pk.w, &params.p_pub);
            // The entity's identity checked against the wrong params: refused.
            prop_assert_eq!(
                EntityKey::combine(&en.id, &en.sv, &en.pk, &params).unwrap_err(),
                CryptoError::WrongIssuer
            );
            prop_assert_eq!(
                EntityKey::combine(&id2, &en.sv, &en.pk, &params).unwrap_err(),
                CryptoError::PartialKeyCheckFailed
            );
            prop_assert_eq!(en.ek.check(&params), Err(CryptoError::WrongIssuer));
        }
        // Same identity bytes, another P_pub (a forged issuer digest): the derivation differs.
        let p2 = Kgc::from_secret_bytes("example.com.", &ms2).unwrap().params().p_pub;
        prop_assume!(p2 != en.kgc.params().p_pub);
        assert_key_differs(&en.ek, &en.id, &en.pk.w, &p2);
    }

    #[test]
    fn changing_w_changes_the_key(
        n in name(), addr in ip(), ms in scalar_seed(), x in scalar_seed(), r in scalar_seed(),
        w2 in scalar_seed(),
    ) {
        let en = enrol("example.com.", &n, addr, ms, x, r);
        let w2 = point(&w2);
        prop_assume!(w2 != en.pk.w);
        assert_key_differs(&en.ek, &en.id, &w2, &en.kgc.params().p_pub);
        let mut bytes = en.pk.encode().to_vec();
        bytes[1..1 + clpkc::POINT_LEN].copy_from_slice(&clpkc::point_to_bytes(&w2));
        let forged = PartialKey::decode(&bytes).unwrap();
        prop_assert_eq!(
            EntityKey::combine(&en.id, &en.sv, &forged, en.kgc.params()).unwrap_err(),
            CryptoError::PartialKeyCheckFailed
        );
        let sk = en.ek.secret_bytes();
        prop_assert_eq!(
            EntityKey::from_parts_checked(en.id.clone(), &sk[..], w2, en.kgc.params()).unwrap_err(),
            CryptoError::KeyMismatch
        );
    }

    #[test]
    fn changing_d_breaks_the_key(
        n in name(), addr in ip(), ms in scalar_seed(), x in scalar_seed(), r in scalar_seed(),
        d2 in scalar_seed(),
    ) {
        let en = enrol("example.com.", &n, addr, ms, x, r);
        prop_assume!(d2[..] != d_of(&en.pk)[..]);
        let mut bytes = en.pk.encode().to_vec();
        bytes[1 + clpkc::POINT_LEN..].copy_from_slice(&d2);
        let forged = PartialKey::decode(&bytes).unwrap();
        prop_assert_eq!(
            EntityKey::combine(&en.id, &en.sv, &forged, en.kgc.params()).unwrap_err(),
            CryptoError::PartialKeyCheckFailed
        );
        // A wrong secret value with the right partial key is refused too.
        let sv2 = SecretValue::from_bytes(&d2).unwrap();
        prop_assume!(sv2.public() != en.sv.public());
        prop_assert_eq!(
            EntityKey::combine(&en.id, &sv2, &en.pk, en.kgc.params()).unwrap_err(),
            CryptoError::PartialKeyCheckFailed
        );
    }

    /// What the KGC (or anyone who sees the partial key) knows, (W, d), is not the private key.
    #[test]
    fn partial_key_alone_never_yields_the_private_key(
        n in name(), addr in ip(), ms in scalar_seed(), x in scalar_seed(), r in scalar_seed(),
        msg in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let en = enrol("example.com.", &n, addr, ms, x, r);
        let q = *en.ek.public();
        let d = d_of(&en.pk);
        // d·G != Q
        let d_key = EntityKey::from_parts(en.id.clone(), &d, en.pk.w).unwrap();
        prop_assert_ne!(*d_key.public(), q);
        // A signature made with d does not verify under Q.
        prop_assert_eq!(verify(&q, &msg, &d_key.sign(&msg)), Err(CryptoError::BadSignature));
        // d as a stored private key fails the check against the issuer.
        prop_assert_eq!(
            EntityKey::from_parts_checked(en.id.clone(), &d, en.pk.w, en.kgc.params()).unwrap_err(),
            CryptoError::KeyMismatch
        );
        // Nor does d open what was sealed to the entity.
        let ct = clpkc::seal_with_ephemeral(&q, &en.id, b"secret", &r).unwrap();
        prop_assert_eq!(d_key.open(&ct), Err(CryptoError::Decrypt));
        prop_assert_eq!(en.ek.open(&ct).unwrap(), b"secret".to_vec());
    }

    #[test]
    fn sealed_to_one_identity_opens_for_no_other(
        n in name(), n2 in name(), addr in ip(), ms in scalar_seed(), x in scalar_seed(),
        r in scalar_seed(), e in scalar_seed(), pt in proptest::collection::vec(any::<u8>(), 0..100),
        flip in any::<prop::sample::Index>(),
    ) {
        let en = enrol("example.com.", &n, addr, ms, x, r);
        let q = *en.ek.public();
        let id2 = Identity::new(&n2, addr, en.kgc.params()).unwrap();
        prop_assume!(id2 != en.id);
        // Sealed to the right key but bound to another identity: refused.
        let ct = clpkc::seal_with_ephemeral(&q, &id2, &pt, &e).unwrap();
        prop_assert_eq!(en.ek.open(&ct), Err(CryptoError::Decrypt));
        // Sealed properly, then one bit flipped anywhere: refused.
        let mut ct = clpkc::seal_with_ephemeral(&q, &en.id, &pt, &e).unwrap();
        let i = flip.index(ct.len());
        ct[i] ^= 1;
        prop_assert!(en.ek.open(&ct).is_err());
        // Another entity (same name, other IP) cannot open it.
        let other_ip = match addr {
            IpAddr::V4(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let en2 = enrol("example.com.", &n, other_ip, ms, x, r);
        let ct = clpkc::seal_with_ephemeral(&q, &en.id, &pt, &e).unwrap();
        prop_assert_eq!(en2.ek.open(&ct), Err(CryptoError::Decrypt));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = KgcParams::decode(&b);
        let _ = Identity::decode(&b);
        let _ = KeyRequest::decode(&b);
        let _ = PartialKey::decode(&b);
        let _ = clpkc::point_from_bytes(&b);
        let _ = SecretValue::from_bytes(&b);
        let _ = Kgc::from_secret_bytes(".", &b);
        if let Ok(s) = std::str::from_utf8(&b) {
            let _ = clpkc::canonical_name(s);
        }
    }

    #[test]
    fn canonical_name_is_idempotent(s in "\\PC{0,80}") {
        if let Ok(c) = clpkc::canonical_name(&s) {
            prop_assert_eq!(clpkc::canonical_name(&c).unwrap(), c.clone());
            prop_assert!(c.ends_with('.'));
            prop_assert_eq!(c.to_ascii_lowercase(), c);
        }
    }
}

/// Mutations of valid encodings: each decodes to an error or to a value that re-encodes to
/// exactly the mutated bytes (every encoding is canonical).
mod mutations {
    use super::*;
    use std::sync::OnceLock;

    struct Valid {
        params: Vec<u8>,
        id: Vec<u8>,
        req: Vec<u8>,
        pk: Vec<u8>,
        ek: EntityKey,
        q: PublicKey,
        ct: Vec<u8>,
        sig: [u8; 64],
    }

    fn valid() -> &'static Valid {
        static V: OnceLock<Valid> = OnceLock::new();
        V.get_or_init(|| {
            let en = enrol(
                "example.com.",
                "www.example.com.",
                "192.0.2.1".parse().unwrap(),
                [7; 32],
                [8; 32],
                [9; 32],
            );
            let req = KeyRequest::new(en.id.clone(), &en.sv);
            let q = *en.ek.public();
            Valid {
                params: en.kgc.params().encode(),
                id: en.id.encode(),
                req: req.encode(),
                pk: en.pk.encode().to_vec(),
                ct: clpkc::seal_with_ephemeral(&q, &en.id, b"hello", &[3; 32]).unwrap(),
                sig: en.ek.sign(b"hello"),
                q,
                ek: en.ek,
            }
        })
    }

    fn mutate(b: &[u8], ops: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
        let mut v = b.to_vec();
        for (i, kind, byte) in ops {
            if v.is_empty() {
                v.push(*byte);
                continue;
            }
            let at = i.index(v.len());
            match kind % 4 {
                0 => v[at] ^= byte | 1,
                1 => v.truncate(at),
                2 => v.insert(at, *byte),
                _ => {
                    v.remove(at);
                }
            }
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn mutated_encodings_are_refused_or_canonical(
            ops in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 1..4),
        ) {
            let v = valid();
            let m = mutate(&v.params, &ops);
            if let Ok(p) = KgcParams::decode(&m) { prop_assert_eq!(p.encode(), m); }
            let m = mutate(&v.id, &ops);
            if let Ok(p) = Identity::decode(&m) { prop_assert_eq!(p.encode(), m); }
            let m = mutate(&v.req, &ops);
            if let Ok(p) = KeyRequest::decode(&m) {
                prop_assert_eq!(p.encode(), m.clone());
                // A mutated request that still decodes must not carry a valid proof.
                prop_assert!(m == v.req || p.verify_pop().is_err());
            }
            let m = mutate(&v.pk, &ops);
            if let Ok(p) = PartialKey::decode(&m) { prop_assert_eq!(p.encode().to_vec(), m); }
            let m = mutate(&v.ct, &ops);
            prop_assert!(m == v.ct || v.ek.open(&m).is_err());
            let m = mutate(&v.sig, &ops);
            if let Ok(sig) = <[u8; 64]>::try_from(&m[..]) {
                prop_assert!(sig == v.sig || verify(&v.q, b"hello", &sig).is_err());
            }
        }
    }
}
