//! Deterministic CL-PKC test vectors (published in `docs/crypto.md`).
//!
//! Every secret is fixed (`SHA-256` of a label), `r` and the ECIES ephemeral are given through
//! the doc-hidden `Kgc::extract_with_r` / `seal_with_ephemeral`, and ECDSA nonces are RFC 6979,
//! so every value below is reproducible by any implementation of DESIGN §3.
//!
//! `TP_PRINT_VECTORS=1 cargo test -p twinpeaks --test clpkc_vectors -- --nocapture` prints the
//! values in the form used by the docs.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use twinpeaks::clpkc::{
    self, EntityKey, Identity, KeyRequest, Kgc, PartialKey, SecretValue, derive_public_key,
};

struct Inputs {
    title: &'static str,
    kgc_name: &'static str,
    entity_name: &'static str,
    ip: &'static str,
    label: &'static str,
}

fn seed(label: &str, what: &str) -> [u8; 32] {
    Sha256::digest(format!("TwinPeaks test vector {label} {what}")).into()
}

const MSG: &[u8] = b"TwinPeaks test message";
const PLAINTEXT: &[u8] = b"TwinPeaks test plaintext";

fn h(b: impl AsRef<[u8]>) -> String {
    hex::encode(b)
}

fn compute(v: &Inputs) -> Vec<(&'static str, String)> {
    let ms = seed(v.label, "ms");
    let x = seed(v.label, "x");
    let r = seed(v.label, "r");
    let e = seed(v.label, "e");
    let kgc = Kgc::from_secret_bytes(v.kgc_name, &ms).unwrap();
    let params = kgc.params().clone();
    let ip: IpAddr = v.ip.parse().unwrap();
    let id = Identity::new(v.entity_name, ip, &params).unwrap();
    let sv = SecretValue::from_bytes(&x).unwrap();
    let req = KeyRequest::new(id.clone(), &sv);
    req.verify_pop().unwrap();
    let pk = kgc.extract_with_r(&req, &r).unwrap();
    let pk_bytes = pk.encode();
    let lambda_in = clpkc::lambda_input(&id, &pk.w, &params.p_pub);
    let lambda = clpkc::lambda(&id, &pk.w, &params.p_pub);
    let ek = EntityKey::combine(&id, &sv, &pk, &params).unwrap();
    let q = derive_public_key(&id, &pk.w, &params.p_pub);
    assert_eq!(q, *ek.public());
    let sig = ek.sign(MSG);
    clpkc::verify(&q, MSG, &sig).unwrap();
    let ct = clpkc::seal_with_ephemeral(&q, &id, PLAINTEXT, &e).unwrap();
    assert_eq!(ek.open(&ct).unwrap(), PLAINTEXT);
    // Round trips of every encoding.
    assert_eq!(KeyRequest::decode(&req.encode()).unwrap(), req);
    assert_eq!(PartialKey::decode(&pk_bytes).unwrap().encode(), pk_bytes);

    vec![
        ("ms", h(ms)),
        ("x", h(x)),
        ("r", h(r)),
        ("e (ECIES ephemeral)", h(e)),
        ("P_pub = ms·G", h(clpkc::point_to_bytes(&params.p_pub))),
        ("params", h(params.encode())),
        ("SHA-256(params)", h(params.digest())),
        ("ID", h(id.encode())),
        ("X = x·G", h(clpkc::point_to_bytes(&sv.public()))),
        ("PoP message", h(clpkc::pop_message(&id, &sv.public()))),
        ("PoP", h(req.pop)),
        ("request", h(req.encode())),
        ("W = X + r·G", h(clpkc::point_to_bytes(&pk.w))),
        ("λ input", h(&lambda_in)),
        ("λ", h(lambda.to_bytes())),
        ("d = r + λ·ms", h(&pk_bytes[34..])),
        ("partial key", h(&pk_bytes[..])),
        ("sk = x + d", h(*ek.secret_bytes())),
        ("Q = W + λ·P_pub", h(clpkc::point_to_bytes(&q))),
        ("message", h(MSG)),
        ("signed bytes", h(clpkc::signed_message(MSG))),
        ("signature", h(sig)),
        ("plaintext", h(PLAINTEXT)),
        ("ciphertext", h(&ct)),
    ]
}

fn check(v: &Inputs, expected: &[(&str, &str)]) {
    let got = compute(v);
    if std::env::var_os("TP_PRINT_VECTORS").is_some() {
        println!("### {}\n", v.title);
        println!(
            "KGC `{}`, entity `{}` at `{}`; secrets are SHA-256(\"TwinPeaks test vector {} <name>\") \
             for <name> = ms, x, r, e.\n",
            v.kgc_name, v.entity_name, v.ip, v.label
        );
        println!("```");
        for (k, val) in &got {
            println!("{k:<22}{val}");
        }
        println!("```\n");
    }
    assert_eq!(got.len(), expected.len());
    for ((k, val), (ek, ev)) in got.iter().zip(expected) {
        assert_eq!(k, ek);
        assert_eq!(val, ev, "{}: {k}", v.title);
    }
}

#[test]
fn vector_1_ipv4_child() {
    check(
        &Inputs {
            title: "Vector 1: www.example.com. at 192.0.2.10, issued by example.com.",
            kgc_name: "example.com.",
            entity_name: "www.example.com.",
            ip: "192.0.2.10",
            label: "1",
        },
        &[
            (
                "ms",
                "98779ade9b75de319d98df1e43d1477b314e6503a2f07b12954663d34692e9ea",
            ),
            (
                "x",
                "0143aded53a8d2fac8a1f83dc768c82d4d7811b1b4dfd656385e1a36343dac19",
            ),
            (
                "r",
                "9fe1de7c3413ca5b9e8f256ee685b7f1bb4d21bcf141e829cc0aefb609df0f35",
            ),
            (
                "e (ECIES ephemeral)",
                "72dc853ae2ccdbe41df49e847b667c95c22ec1c331c41f9fcf0d87f4556e97a3",
            ),
            (
                "P_pub = ms·G",
                "02e94b4df2d880e58da1956cbe35de2591a09b319bd904d4fadf968a014fb1430c",
            ),
            (
                "params",
                "0101000c6578616d706c652e636f6d2e02e94b4df2d880e58da1956cbe35de2591a09b319bd904d4fadf968a014fb1430c",
            ),
            (
                "SHA-256(params)",
                "c3b5e5a2aa19bfc4d5e897ea7851809d05e42b11d4474c4f76f431c4405cd578",
            ),
            (
                "ID",
                "00107777772e6578616d706c652e636f6d2e0004c000020ac3b5e5a2aa19bfc4d5e897ea7851809d05e42b11d4474c4f76f431c4405cd578",
            ),
            (
                "X = x·G",
                "02386735359c66d2339192d51a19fc4761791dbe875c7707d7e344779ab1c2c9b5",
            ),
            (
                "PoP message",
                "000954502d504f502d7631003800107777772e6578616d706c652e636f6d2e0004c000020ac3b5e5a2aa19bfc4d5e897ea7851809d05e42b11d4474c4f76f431c4405cd578002102386735359c66d2339192d51a19fc4761791dbe875c7707d7e344779ab1c2c9b5",
            ),
            (
                "PoP",
                "c8001bcc4a74ac288c6b4d0583f76e841583add48c9ad85ef43bf7f61acd896b0b02533c8529cee9b902c68f4678cf8744c771dbb38b6d479d741e645c417e7e",
            ),
            (
                "request",
                "01003800107777772e6578616d706c652e636f6d2e0004c000020ac3b5e5a2aa19bfc4d5e897ea7851809d05e42b11d4474c4f76f431c4405cd57802386735359c66d2339192d51a19fc4761791dbe875c7707d7e344779ab1c2c9b5c8001bcc4a74ac288c6b4d0583f76e841583add48c9ad85ef43bf7f61acd896b0b02533c8529cee9b902c68f4678cf8744c771dbb38b6d479d741e645c417e7e",
            ),
            (
                "W = X + r·G",
                "02ec6e4384a854af6ef01324549449a92a765ee66e82e02af0521b92c494a01871",
            ),
            (
                "λ input",
                "003800107777772e6578616d706c652e636f6d2e0004c000020ac3b5e5a2aa19bfc4d5e897ea7851809d05e42b11d4474c4f76f431c4405cd578002102ec6e4384a854af6ef01324549449a92a765ee66e82e02af0521b92c494a01871002102e94b4df2d880e58da1956cbe35de2591a09b319bd904d4fadf968a014fb1430c",
            ),
            (
                "λ",
                "f95fa1f8c667fa36e646ac8f60b96c9bc41290fc4bfac80e09e8dcc1fbf72b18",
            ),
            (
                "d = r + λ·ms",
                "5f561cb6fd008f409be5c4b6e8ddccded4a0b18da867612c968e65129b63537e",
            ),
            (
                "partial key",
                "0102ec6e4384a854af6ef01324549449a92a765ee66e82e02af0521b92c494a018715f561cb6fd008f409be5c4b6e8ddccded4a0b18da867612c968e65129b63537e",
            ),
            (
                "sk = x + d",
                "6099caa450a9623b6487bcf4b046950c2218c33f5d473782ceec7f48cfa0ff97",
            ),
            (
                "Q = W + λ·P_pub",
                "0341b3211b987029068c4949f7cb45689d8cc0624193cadb4f1651665dbba9236c",
            ),
            ("message", "5477696e5065616b732074657374206d657373616765"),
            (
                "signed bytes",
                "000954502d5349472d76315477696e5065616b732074657374206d657373616765",
            ),
            (
                "signature",
                "354f61ba30b493f09c6d5db0dacc6cdcf36e0774b8f01b7eaefabb70779aa9a96cf57fe3880e1a58d93045acfc91675b2f5f441cc15b27cddac42765354082b1",
            ),
            (
                "plaintext",
                "5477696e5065616b73207465737420706c61696e74657874",
            ),
            (
                "ciphertext",
                "02c4e25606fadd5cadb44187158eda648189c193dc978e4aac14f3a9cae190d7b55ff0b0a48442db48e973f5599c8f56146ee829751dd89a698d1338717bb1adcd9f6e04718b79014c",
            ),
        ],
    );
}

#[test]
fn vector_2_ipv6_root_self_issued() {
    check(
        &Inputs {
            title: "Vector 2: the root key server . at 2001:db8::53, self-issued",
            kgc_name: ".",
            entity_name: ".",
            ip: "2001:db8::53",
            label: "2",
        },
        &[
            (
                "ms",
                "3c43d51b043b145521d227824599f246f5ec5a7e64530f2042a1179f50384dc1",
            ),
            (
                "x",
                "f81542ad36c58cce88fb263849ad7b24ec469f025e467228c070d4027a38f799",
            ),
            (
                "r",
                "66ea525df804bdd8efb97f9d3bdfa25e688779ba1bd7403a3c3283cf23a4b992",
            ),
            (
                "e (ECIES ephemeral)",
                "8fab2c6681645918c06cd81ef1f3c88b0336411d81eda6b89238f4ef026514c0",
            ),
            (
                "P_pub = ms·G",
                "02b1982094bc0b882d0d6d473a2921ec902e62c5f6a4fe72b59cb092798e71a3ff",
            ),
            (
                "params",
                "010100012e02b1982094bc0b882d0d6d473a2921ec902e62c5f6a4fe72b59cb092798e71a3ff",
            ),
            (
                "SHA-256(params)",
                "76ca16eba1cbad046f25307e3dc969c90ef318b751502ce370e5f6d3c660a085",
            ),
            (
                "ID",
                "00012e001020010db800000000000000000000005376ca16eba1cbad046f25307e3dc969c90ef318b751502ce370e5f6d3c660a085",
            ),
            (
                "X = x·G",
                "0223df15b6a0b580f270a05e7f378e20c9e9616b49d07b6c0c0db2028f87ecca2d",
            ),
            (
                "PoP message",
                "000954502d504f502d7631003500012e001020010db800000000000000000000005376ca16eba1cbad046f25307e3dc969c90ef318b751502ce370e5f6d3c660a08500210223df15b6a0b580f270a05e7f378e20c9e9616b49d07b6c0c0db2028f87ecca2d",
            ),
            (
                "PoP",
                "1c55db61b765c84bbecdbb890255f9a512c7a6ea9d79cd0ad4ab64751739351b10d1625fd373fdd28c6d1c844c5312e2618c8c497bbf0dd0b345e297b5beaf4f",
            ),
            (
                "request",
                "01003500012e001020010db800000000000000000000005376ca16eba1cbad046f25307e3dc969c90ef318b751502ce370e5f6d3c660a0850223df15b6a0b580f270a05e7f378e20c9e9616b49d07b6c0c0db2028f87ecca2d1c55db61b765c84bbecdbb890255f9a512c7a6ea9d79cd0ad4ab64751739351b10d1625fd373fdd28c6d1c844c5312e2618c8c497bbf0dd0b345e297b5beaf4f",
            ),
            (
                "W = X + r·G",
                "03ad87f1b0291e52b6053156b7d4a9c69d6c1519bfcb03bd9b866dfc10fc791fdf",
            ),
            (
                "λ input",
                "003500012e001020010db800000000000000000000005376ca16eba1cbad046f25307e3dc969c90ef318b751502ce370e5f6d3c660a085002103ad87f1b0291e52b6053156b7d4a9c69d6c1519bfcb03bd9b866dfc10fc791fdf002102b1982094bc0b882d0d6d473a2921ec902e62c5f6a4fe72b59cb092798e71a3ff",
            ),
            (
                "λ",
                "8eeb510b9baa0834772cbe3c0be702320fcd0d1e705945ea29d9ee7cd49ce6c5",
            ),
            (
                "d = r + λ·ms",
                "be8efa53d06f8b235194153f600582392993def13337e7df4b6410b097bfb1ab",
            ),
            (
                "partial key",
                "0103ad87f1b0291e52b6053156b7d4a9c69d6c1519bfcb03bd9b866dfc10fc791fdfbe8efa53d06f8b235194153f600582392993def13337e7df4b6410b097bfb1ab",
            ),
            (
                "sk = x + d",
                "b6a43d02073517f0da8f3b77a9b2fd5e58f38345ea66bb83181b19f0159583f3",
            ),
            (
                "Q = W + λ·P_pub",
                "02cf23b669abe058fe75a3cd05700cc7bebc8ded125b770af10942ac7d57abc56b",
            ),
            ("message", "5477696e5065616b732074657374206d657373616765"),
            (
                "signed bytes",
                "000954502d5349472d76315477696e5065616b732074657374206d657373616765",
            ),
            (
                "signature",
                "189a6b2ad31b1c3bc95a875513c9d5800564786fa0e39ebfd71a45d66722249719d5ae4f1678f814ae835dbbb40fa86ce402314a40e47520326983cf904a0358",
            ),
            (
                "plaintext",
                "5477696e5065616b73207465737420706c61696e74657874",
            ),
            (
                "ciphertext",
                "03221ec731337734e7e1ea8344a72a0346763a16010d91cddc15dc386471182635d373a2052c0be434f9d660b470ea50d32330f9134764deb7912a86f62494b9b69c132b39597e33ba",
            ),
        ],
    );
}
