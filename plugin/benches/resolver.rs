//! The key resolver (twinpeaks::resolver::Resolver) against an in-process three-level key
//! hierarchy ". → com. → example.com.", with a baseline measured in the same run: a bare
//! `DashMap<String, Arc<..>>` get of the same name (what the cheapest cache lookup costs).
//!
//! Everything runs in this process: three key servers (`hickory_server::Server` with
//! `twinpeaks::server::KeyServerHandler`, UDP and TCP on 127.0.0.241–243, ephemeral ports) and
//! a plain DNS server for example.com. (hickory's `InMemoryZoneHandler`, 127.0.0.244) on a
//! tokio runtime. The keys are made fresh each run (KGC setup, issuance, zone build as tpkd
//! does it: zone files in a tempdir, `zonefile::read`, `KeyZone::build` with a `ZoneSigner`).
//!
//! Measured:
//! - `keys("www.example.com.")` warm (a cache hit), polled once without a runtime, and through
//!   `Runtime::block_on` as a synchronous caller would;
//! - `resolve("www.example.com.")` warm (keys + DNS address, from the cache);
//! - cold `keys()` walking all three levels: the name and its two key-server links are
//!   invalidated each iteration (3 queries: root, com., example.com.), and a fresh
//!   `Resolver` per iteration; the queries and bytes of one cold resolution are printed.
//!
//! Run: `cargo bench -p twinpeaks --bench resolver` (add `-- --warm-up-time 1
//! --measurement-time 3` for a short run).

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use dashmap::DashMap;
use futures_util::FutureExt;
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use rand_core::OsRng;
use tokio::net::{TcpListener, UdpSocket};
use twinpeaks::clpkc::{EntityKey, Identity, KeyRequest, Kgc, SecretValue};
use twinpeaks::issue::{self, IssueOptions};
use twinpeaks::record::{KeyRecord, KeyServerInfo, TPKEY_MNEMONIC};
use twinpeaks::resolver::{Resolver, ResolverConfig, anchors};
use twinpeaks::server::{KeyServerHandler, TransferAcl};
use twinpeaks::zone::{KeyZone, ZoneSigner};
use twinpeaks::zonefile;

const NAME: &str = "www.example.com.";
const WWW_IP: &str = "127.0.0.10";
/// Key servers ., com., example.com., then the DNS server.
const IPS: [&str; 4] = ["127.0.0.241", "127.0.0.242", "127.0.0.243", "127.0.0.244"];

/// UDP and TCP bound on the same ephemeral port of `ip`.
async fn bind(ip: &str) -> (UdpSocket, TcpListener, SocketAddr) {
    for _ in 0..50 {
        let udp = UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap_or_else(|e| panic!("bind {ip}/udp: {e}"));
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp, addr);
        }
    }
    panic!("no port free on {ip} for both UDP and TCP");
}

fn serve<H: hickory_server::server::RequestHandler>(
    handler: H,
    udp: UdpSocket,
    tcp: TcpListener,
) -> Server<H> {
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(10), 64);
    server
}

/// A key server's KGC and own key, and where it listens.
struct Level {
    name: &'static str,
    kgc: Kgc,
    /// Its own key: self-issued (root) or issued by its parent.
    own: Option<EntityKey>,
    udp: UdpSocket,
    tcp: TcpListener,
    addr: SocketAddr,
    /// Members of its zone: (owner, TTL, signed record).
    members: Vec<(String, u32, KeyRecord)>,
}

fn validity() -> (u32, u32) {
    let now = twinpeaks::time::now() as u32;
    (now - 60, now + 30 * 86_400)
}

/// Issue `name` at `ip` under `parent` (a key server when `ks` is given): the request, the
/// extraction and the record (issue::issue), then the requester's combine.
fn issue_child(
    parent: &mut Level,
    name: &str,
    ip: IpAddr,
    ks: Option<(u16, &Kgc)>,
    ttl: u32,
) -> EntityKey {
    let id = Identity::new(name, ip, parent.kgc.params()).unwrap();
    let x = SecretValue::generate(&mut OsRng);
    let req = KeyRequest::new(id.clone(), &x);
    let (not_before, not_after) = validity();
    let opts = IssueOptions {
        not_before,
        not_after,
        key_server: ks.map(|(port, kgc)| (port, kgc.params().clone())),
    };
    let (rec, partial) = issue::issue(
        &parent.kgc,
        parent.own.as_ref().unwrap(),
        &req,
        &opts,
        &mut OsRng,
    )
    .unwrap();
    parent.members.push((name.to_string(), ttl, rec));
    EntityKey::combine(&id, &x, &partial, parent.kgc.params()).unwrap()
}

fn zone_text(origin: &str, ip: IpAddr) -> String {
    let ns = if origin == "." {
        "ks.root-servers.test.".to_string()
    } else {
        format!("ks.{origin}")
    };
    format!(
        "$ORIGIN {origin}\n$TTL 3600\n@ IN SOA {ns} hostmaster.{} 1 7200 3600 1209600 300\n@ IN NS {ns}\n{ns} IN A {ip}\n",
        if origin == "." { "test." } else { origin }
    )
}

struct Hierarchy {
    _servers: Vec<Box<dyn std::any::Any>>,
    anchors: Vec<anchors::Anchor>,
    dns: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn hierarchy() -> Hierarchy {
    let dir = tempfile::tempdir().unwrap();
    let mut levels = Vec::new();
    for (name, ip) in [(".", IPS[0]), ("com.", IPS[1]), ("example.com.", IPS[2])] {
        let (udp, tcp, addr) = bind(ip).await;
        let kgc = Kgc::setup(name, &mut OsRng).unwrap();
        levels.push(Level {
            name,
            kgc,
            own: None,
            udp,
            tcp,
            addr,
            members: Vec::new(),
        });
    }
    // The root's self-issued key-server record: the trust anchor and its zone's apex record.
    let (not_before, not_after) = validity();
    let root = &mut levels[0];
    let own = root.kgc.self_issue(root.addr.ip(), &mut OsRng).unwrap();
    let mut apex = KeyRecord {
        ip: root.addr.ip(),
        w: own.w().into(),
        issuer: root.kgc.params().digest(),
        not_before,
        not_after,
        key_server: Some(Box::new(KeyServerInfo {
            port: root.addr.port(),
            p_pub: root.kgc.params().p_pub,
        })),
        signature: None,
    };
    apex.sign(".", &own).unwrap();
    root.own = Some(own);
    let anchor_file = dir.path().join("anchor");
    std::fs::write(
        &anchor_file,
        format!(". 86400 IN {TPKEY_MNEMONIC} {apex}\n"),
    )
    .unwrap();
    root.members.push((".".into(), 86_400, apex));
    // Parents issue their children's key-server records; each child combines its own key.
    for i in 1..levels.len() {
        let (upper, lower) = levels.split_at_mut(i);
        let (parent, child) = (&mut upper[i - 1], &mut lower[0]);
        child.own = Some(issue_child(
            parent,
            child.name,
            child.addr.ip(),
            Some((child.addr.port(), &child.kgc)),
            86_400,
        ));
    }
    issue_child(&mut levels[2], NAME, WWW_IP.parse().unwrap(), None, 3600);

    let mut servers: Vec<Box<dyn std::any::Any>> = Vec::new();
    for l in levels {
        let file = dir
            .path()
            .join(format!("{}keys", l.name.trim_start_matches('.')));
        std::fs::write(&file, zone_text(l.name, l.addr.ip())).unwrap();
        let parsed = zonefile::read(&file, &Name::from_ascii(l.name).unwrap()).unwrap();
        let signer = ZoneSigner {
            params: l.kgc.params(),
            key: l.own.as_ref().unwrap(),
            verified: None,
            fresh: &[],
        };
        let zone = KeyZone::build(parsed, l.members, 0, &signer, twinpeaks::time::now())
            .unwrap_or_else(|e| panic!("zone {}: {e}", l.name));
        let cell = Arc::new(arc_swap::ArcSwap::from_pointee(zone));
        let handler = KeyServerHandler::new(vec![cell], TransferAcl::default());
        servers.push(Box::new(serve(handler, l.udp, l.tcp)));
    }

    // Plain DNS for the address: example.com. with www's A record.
    let (udp, tcp, dns) = bind(IPS[3]).await;
    let origin = Name::from_ascii("example.com.").unwrap();
    let mut zone = InMemoryZoneHandler::<hickory_net::runtime::TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
        None,
    );
    let soa = hickory_proto::rr::rdata::SOA::new(
        Name::from_ascii("ns.dns.test.").unwrap(),
        Name::from_ascii("hostmaster.example.com.").unwrap(),
        1,
        7200,
        3600,
        1_209_600,
        300,
    );
    assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 3600, RData::SOA(soa)), 1));
    let ip: std::net::Ipv4Addr = WWW_IP.parse().unwrap();
    assert!(zone.upsert_mut(
        Record::from_rdata(Name::from_ascii(NAME).unwrap(), 3600, RData::A(ip.into())),
        1
    ));
    let mut catalog = Catalog::new();
    let handler: Arc<dyn ZoneHandler> = Arc::new(zone);
    catalog.upsert(LowerName::new(&origin), vec![handler]);
    servers.push(Box::new(serve(catalog, udp, tcp)));

    let anchors = anchors::read(&anchor_file, twinpeaks::time::now()).unwrap();
    Hierarchy {
        _servers: servers,
        anchors,
        dns,
        _dir: dir,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let h = rt.block_on(hierarchy());
    let keys_only = || {
        let _g = rt.enter();
        Resolver::new(ResolverConfig::new(h.anchors.clone(), vec![])).unwrap()
    };
    let r = keys_only();
    let with_dns = {
        let _g = rt.enter();
        Resolver::new(ResolverConfig::new(h.anchors.clone(), vec![h.dns])).unwrap()
    };

    // One cold resolution, for its cost in packets and bytes.
    let (set, cold) = rt.block_on(r.keys(NAME));
    let set = set.unwrap_or_else(|e| panic!("cold keys({NAME}): {e}"));
    assert_eq!(set.chain.len(), 3, "the walk should pass three key servers");
    let (warm_set, warm) = rt.block_on(r.keys(NAME));
    let warm_set = warm_set.unwrap();
    let (res, cold_dns) = rt.block_on(with_dns.resolve(NAME));
    let res = res.unwrap_or_else(|e| panic!("resolve({NAME}): {e}"));
    assert_eq!(res.pairs.len(), 1);
    println!(
        "cold keys({NAME}): {:?}, {} queries, {} bytes out, {} bytes in, {:.3} ms (chain {})",
        cold.cache,
        cold.queries,
        cold.bytes_out,
        cold.bytes_in,
        cold.elapsed.as_secs_f64() * 1e3,
        set.chain
            .iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>()
            .join(" -> ")
    );
    println!(
        "warm keys({NAME}): {:?}, {} queries, {:.3} µs (one call, Report.elapsed)",
        warm.cache,
        warm.queries,
        warm.elapsed.as_secs_f64() * 1e6
    );
    println!(
        "cold resolve({NAME}) with DNS: {:?}, {} key queries, {} bytes out, {} bytes in, {:.3} ms",
        cold_dns.cache,
        cold_dns.queries,
        cold_dns.bytes_out,
        cold_dns.bytes_in,
        cold_dns.elapsed.as_secs_f64() * 1e3
    );

    let mut g = c.benchmark_group("resolver warm");
    g.bench_function("keys() cache hit, polled once (no runtime)", |b| {
        b.iter(|| {
            let (res, rep) = r
                .keys(black_box(NAME))
                .now_or_never()
                .expect("a hit is ready");
            black_box((res.is_ok(), rep.queries))
        })
    });
    g.bench_function("keys() cache hit, Runtime::block_on", |b| {
        b.iter(|| {
            let (res, rep) = rt.block_on(r.keys(black_box(NAME)));
            black_box((res.is_ok(), rep.queries))
        })
    });
    g.bench_function("resolve() with DNS, cache hit, polled once", |b| {
        b.iter(|| {
            let (res, rep) = with_dns
                .resolve(black_box(NAME))
                .now_or_never()
                .expect("a hit is ready");
            black_box((res.is_ok(), rep.queries))
        })
    });
    // Baseline: the bare map get a cache needs at least (same key, same value type).
    // One entry, like the resolver's key-set cache here.
    let map: DashMap<String, Arc<twinpeaks::resolver::KeySet>> = DashMap::new();
    map.insert(NAME.to_string(), warm_set.clone());
    g.bench_function("baseline: DashMap<String, Arc<KeySet>> get", |b| {
        b.iter(|| map.get(black_box(NAME)).map(|e| e.value().clone()))
    });
    // What the two clock reads of a call's Report (start, elapsed) cost on this machine.
    g.bench_function("baseline: Instant::now() + elapsed()", |b| {
        b.iter(|| black_box(std::time::Instant::now()).elapsed())
    });
    g.finish();

    let mut g = c.benchmark_group("resolver cold");
    g.sample_size(20);
    g.bench_function("keys() three levels (invalidate name + 2 links)", |b| {
        b.iter(|| {
            for n in [NAME, "example.com.", "com."] {
                r.invalidate(n);
            }
            let (res, rep) = rt.block_on(r.keys(black_box(NAME)));
            assert!(res.is_ok() && rep.queries == 3);
        })
    });
    g.bench_function("keys() three levels (fresh Resolver)", |b| {
        b.iter(|| {
            let fresh = keys_only();
            let (res, rep) = rt.block_on(fresh.keys(black_box(NAME)));
            assert!(res.is_ok() && rep.queries == 3);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
