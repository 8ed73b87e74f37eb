//! TPKEY record codec and the serving path's lookup, next to baselines measured in the same
//! run: hickory's own decoding of the same bytes as an opaque record, and a plain HashMap
//! probe. Run: `cargo bench -p twinpeaks --bench records`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use rand_core::OsRng;
use twinpeaks::clpkc::{EntityKey, Identity, KeyRequest, Kgc, SecretValue};
use twinpeaks::record::{KeyRecord, TPKEY};
use twinpeaks::zone::{KeyZone, ZoneSigner};
use twinpeaks::zonefile;

fn issuer() -> (Kgc, EntityKey) {
    let kgc = Kgc::setup("bench.example.", &mut OsRng).unwrap();
    let own = kgc
        .self_issue("127.0.0.1".parse().unwrap(), &mut OsRng)
        .unwrap();
    (kgc, own)
}

fn record(kgc: &Kgc, own: &EntityKey, i: u32) -> (String, KeyRecord) {
    let name = format!("www{i}.bench.example.");
    let id = Identity::new(&name, [10, 0, (i >> 8) as u8, i as u8].into(), kgc.params()).unwrap();
    let x = SecretValue::generate(&mut OsRng);
    let pk = kgc.extract(&KeyRequest::new(id, &x), &mut OsRng).unwrap();
    let mut rec = KeyRecord {
        ip: [10, 0, (i >> 8) as u8, i as u8].into(),
        w: pk.w.into(),
        issuer: kgc.params().digest(),
        not_before: 1_700_000_000,
        not_after: 2_000_000_000,
        key_server: None,
        signature: None,
    };
    rec.sign(&name, own).unwrap();
    (name, rec)
}

fn bench(c: &mut Criterion) {
    let (kgc, own) = issuer();
    let (name, rec) = record(&kgc, &own, 1);
    let wire = rec.to_wire().unwrap();
    let text = rec.to_string();

    let mut g = c.benchmark_group("record");
    g.bench_function("encode (to_wire)", |b| b.iter(|| black_box(&rec).to_wire()));
    g.bench_function("decode (from_wire, with point checks)", |b| {
        b.iter(|| KeyRecord::from_wire(black_box(&wire)))
    });
    let rr = Record::from_rdata(
        Name::from_ascii(&name).unwrap(),
        3600,
        RData::Unknown {
            code: RecordType::Unknown(TPKEY),
            rdata: NULL::with(wire.clone()),
        },
    );
    let rr_bytes = rr.to_bytes().unwrap();
    g.bench_function(
        "baseline: hickory decode of the same RR as opaque data",
        |b| b.iter(|| Record::from_bytes(black_box(&rr_bytes))),
    );
    g.bench_function("presentation parse", |b| {
        b.iter(|| {
            let fields: Vec<&str> = black_box(&text).split_whitespace().collect();
            KeyRecord::from_presentation(&fields)
        })
    });
    g.bench_function("presentation format", |b| {
        b.iter(|| black_box(&rec).to_string())
    });
    g.bench_function("verify (signature + derived key), as a client", |b| {
        b.iter(|| black_box(&rec).verify(&name, kgc.params(), own.public(), 1_800_000_000))
    });
    g.finish();

    // The serving path: one lookup in a 1,000-member zone (what a query costs us beyond
    // hickory's own message handling).
    let mut text = String::from(
        "$ORIGIN bench.example.\n@ 3600 IN SOA ns hostmaster 1 7200 3600 1209600 300\n@ 3600 IN NS ns\n",
    );
    let mut names = Vec::new();
    for i in 0..1000 {
        let (n, r) = record(&kgc, &own, i);
        text.push_str(&format!("{n} 3600 IN TPKEY {r}\n"));
        names.push(LowerName::new(&Name::from_ascii(&n).unwrap()));
    }
    let parsed = zonefile::parse(
        Path::new("bench.keys"),
        &text,
        &Name::from_ascii("bench.example.").unwrap(),
    )
    .unwrap();
    let signer = ZoneSigner {
        params: kgc.params(),
        key: &own,
        verified: None,
        fresh: &[],
    };
    let mut g = c.benchmark_group("zone");
    g.sample_size(10);
    g.bench_function("load 1,000 signed members (parse + verify all)", |b| {
        b.iter(|| KeyZone::build(parsed.clone(), Vec::new(), 0, &signer, 1_800_000_000).is_ok())
    });
    let zone = KeyZone::build(parsed.clone(), Vec::new(), 0, &signer, 1_800_000_000).unwrap();
    // What an enrollment or a reload costs when no member changed: no crypto, the index and
    // the encoded answers of the fast path built again.
    let known = ZoneSigner {
        verified: Some(&zone),
        ..signer
    };
    g.bench_function("rebuild 1,000 verified members (index + encode)", |b| {
        b.iter(|| KeyZone::build(parsed.clone(), Vec::new(), 0, &known, 1_800_000_000).is_ok())
    });
    g.finish();
    let map: std::collections::HashMap<LowerName, u32> = names.iter().cloned().zip(0..).collect();
    let t = RecordType::Unknown(TPKEY);
    let mut g = c.benchmark_group("lookup");
    let mut i = 0usize;
    g.bench_function("KeyZone::lookup (hit)", |b| {
        b.iter(|| {
            i = (i + 1) % names.len();
            matches!(
                zone.lookup(black_box(&names[i]), t),
                twinpeaks::zone::Answer::Records(_)
            )
        })
    });
    g.bench_function("baseline: HashMap<LowerName> probe", |b| {
        b.iter(|| {
            i = (i + 1) % names.len();
            map.get(black_box(&names[i])).copied()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
