//! TLS 1.3 connection set-up with a TwinPeaks key (RFC 7250 raw public key) against the
//! certificate baseline, in one run, rustls 0.23 + ring on both ends, loopback TCP.
//!
//! - **A, TwinPeaks**: the client resolves `www.example.com.` (keys and address, as
//!   `twinpeaks::tls::connect` does) through a three-level key-server hierarchy served in this
//!   process (root, `com.`, `example.com.` key servers and a DNS server, as in
//!   `benches/resolver.rs`), then runs a TLS 1.3 handshake in which the server presents its
//!   entity key as a raw public key (`tls::server_config`) and the client accepts exactly the
//!   resolved key (`tls::client_config`). Cold: a fresh `Resolver` (empty cache: three key
//!   queries, the A/AAAA lookup in parallel); warm: from the cache (no packet).
//! - **B, certificates**: a TLS 1.3 handshake with a two-certificate chain (leaf for
//!   `www.example.com` + intermediate, P-256 ECDSA, WebPKI-style names and extensions, made by
//!   rcgen under a generated root) and a stapled OCSP response (a real DER `OCSPResponse`
//!   signed by the intermediate, made by `x509-ocsp`), the client verifying through rustls'
//!   `WebPkiServerVerifier` with a `RootCertStore` holding the root; rustls clients always
//!   request OCSP (`status_request`). B' (bytes only): the same with two embedded SCTs in the
//!   leaf, as publicly trusted certificates carry (synthetic: random log IDs, real ECDSA
//!   signatures over random bytes; rustls does not check them).
//!
//! Both servers send no session tickets (`send_tls13_tickets = 0`) and both clients have
//! resumption off, so every connection is a full handshake and the bytes counted up to the
//! first application data are exactly the handshake's. Bytes are the TLS bytes carried by TCP
//! (no TCP/IP headers), counted by a wrapper around the client's `TcpStream` and checked
//! against the same count on the server's side. rustls is built without certificate
//! compression (RFC 8879).
//!
//! Runs:
//! - `cargo bench -p twinpeaks --bench tls` — the table: bytes of each kind, and set-up
//!   latency (median of `TLS_BENCH_N` = 200 interleaved rounds).
//! - `cargo bench -p twinpeaks --bench tls -- icount KIND K` — K connections of one kind in
//!   `icount_client_loop` (for `valgrind --tool=callgrind --toggle-collect=...`; see
//!   `server/bench/tls.sh`), after one connection of that kind outside it. KIND: `rpk`
//!   (as `tls::connect`: resolve from the warm cache, `tls::client_config` for the resolved
//!   key, TCP connect, handshake), `rpk-cold` (the same with a fresh resolver per connection,
//!   the resolvers built before the loop), `rpk-hs` (the RPK handshake alone: config built
//!   once, no resolution), `cert` (chain + OCSP handshake, the client config built once, as
//!   a client loads its root store once). Each connection is dropped after its handshake.
//!   The client runs on the main thread (a current-thread tokio runtime); every server runs on
//!   another runtime's threads, so a count of the main thread inside the loop is the client's.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use rand_core::{OsRng, RngCore};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Runtime;
use tokio_rustls::{TlsAcceptor, TlsConnector, client::TlsStream};
use twinpeaks::clpkc::{EntityKey, Identity, KeyRequest, Kgc, SecretValue};
use twinpeaks::issue::{self, IssueOptions};
use twinpeaks::record::{KeyRecord, KeyServerInfo, TPKEY_MNEMONIC};
use twinpeaks::resolver::{Report, Resolver, ResolverConfig, anchors};
use twinpeaks::server::{KeyServerHandler, TransferAcl};
use twinpeaks::tls;
use twinpeaks::zone::{KeyZone, ZoneSigner};
use twinpeaks::zonefile;

const NAME: &str = "www.example.com.";
const SNI: &str = "www.example.com";
const WWW_IP: &str = "127.0.0.10";
/// Key servers ., com., example.com., then the DNS server.
const IPS: [&str; 4] = ["127.0.0.241", "127.0.0.242", "127.0.0.243", "127.0.0.244"];

// --- the key-server hierarchy (from benches/resolver.rs) ---------------------------------------

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
    /// The entity key of www.example.com. at WWW_IP (what its TLS server presents).
    www: EntityKey,
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
    let www = issue_child(&mut levels[2], NAME, WWW_IP.parse().unwrap(), None, 3600);

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
        www,
        _dir: dir,
    }
}

// --- the certificate baseline -----------------------------------------------------------------

/// DER: one TLV with a definite length.
fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = body.len();
    if n < 0x80 {
        v.push(n as u8);
    } else if n < 0x100 {
        v.extend([0x81, n as u8]);
    } else {
        v.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    v.extend_from_slice(body);
    v
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

const OID_OCSP: &[u8] = &[0x2b, 6, 1, 5, 5, 7, 48, 1];
const OID_CA_ISSUERS: &[u8] = &[0x2b, 6, 1, 5, 5, 7, 48, 2];
/// CA/Browser Forum domain-validated and organization-validated policies.
const OID_DV: &[u8] = &[0x67, 0x81, 0x0c, 1, 2, 1];
const OID_OV: &[u8] = &[0x67, 0x81, 0x0c, 1, 2, 2];

/// Authority Information Access: OCSP responder and CA issuers URIs.
fn aia(ocsp: &str, ca_issuers: &str) -> rcgen::CustomExtension {
    let ad = |oid: &[u8], uri: &str| seq(&[tlv(0x06, oid), tlv(0x86, uri.as_bytes())]);
    rcgen::CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
        seq(&[ad(OID_OCSP, ocsp), ad(OID_CA_ISSUERS, ca_issuers)]),
    )
}

fn policies(oids: &[&[u8]]) -> rcgen::CustomExtension {
    let infos: Vec<Vec<u8>> = oids.iter().map(|o| seq(&[tlv(0x06, o)])).collect();
    rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 32], seq(&infos))
}

/// A signed certificate timestamp list of `n` SCTs (RFC 6962 §3.3), as a CA embeds it.
fn sct_list(n: usize) -> rcgen::CustomExtension {
    use p256::ecdsa::signature::Signer;
    let log = p256::ecdsa::SigningKey::random(&mut OsRng);
    let mut list = Vec::new();
    for _ in 0..n {
        let mut sct = vec![0u8]; // v1
        let mut log_id = [0u8; 32];
        OsRng.fill_bytes(&mut log_id);
        sct.extend(log_id);
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        sct.extend(ms.to_be_bytes());
        sct.extend([0, 0]); // no extensions
        sct.extend([4, 3]); // sha256, ecdsa
        let sig: p256::ecdsa::DerSignature = log.sign(&log_id);
        sct.extend((sig.as_bytes().len() as u16).to_be_bytes());
        sct.extend(sig.as_bytes());
        list.extend((sct.len() as u16).to_be_bytes());
        list.extend(sct);
    }
    let mut tls_list = (list.len() as u16).to_be_bytes().to_vec();
    tls_list.extend(list);
    rcgen::CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2],
        tlv(0x04, &tls_list),
    )
}

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn dn(parts: &[(rcgen::DnType, &str)]) -> rcgen::DistinguishedName {
    let mut d = rcgen::DistinguishedName::new();
    for (t, v) in parts {
        d.push(t.clone(), *v);
    }
    d
}

/// A real DER OCSPResponse for `leaf`: successful, one SingleResponse (SHA-1 CertID, good,
/// thisUpdate an hour ago, nextUpdate in 7 days), responder by key hash, signed with ECDSA
/// P-256 by the issuing intermediate itself (no responder certificate included).
fn ocsp_response(issuer_der: &[u8], issuer_pkcs8: &[u8], leaf_der: &[u8]) -> Vec<u8> {
    use p256::pkcs8::DecodePrivateKey;
    use sha1::Digest;
    use x509_cert::der::{Decode, Encode, asn1::OctetString};
    use x509_ocsp::builder::OcspResponseBuilder;
    use x509_ocsp::{CertId, CertStatus, OcspGeneralizedTime, ResponderId, SingleResponse};

    let issuer = x509_cert::Certificate::from_der(issuer_der).unwrap();
    let leaf = x509_cert::Certificate::from_der(leaf_der).unwrap();
    let id = CertId::from_cert::<sha1::Sha1>(&issuer, &leaf).unwrap();
    let t = |unix: i64| {
        OcspGeneralizedTime::try_from(UNIX_EPOCH + Duration::from_secs(unix as u64)).unwrap()
    };
    let now = unix_now();
    let key_hash = sha1::Sha1::digest(
        issuer
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    );
    let responder = ResponderId::ByKey(OctetString::new(key_hash.to_vec()).unwrap());
    let mut signer = p256::ecdsa::SigningKey::from_pkcs8_der(issuer_pkcs8).unwrap();
    OcspResponseBuilder::new(responder)
        .with_single_response(
            SingleResponse::new(id, CertStatus::good(), t(now - 3600))
                .with_next_update(t(now + 7 * 86_400)),
        )
        .sign::<_, p256::ecdsa::DerSignature>(&mut signer, None, t(now))
        .unwrap()
        .to_der()
        .unwrap()
}

/// Root, intermediate and leaf (plain, and with two SCTs), and the leaf's OCSP responses.
struct Pki {
    root: CertificateDer<'static>,
    inter: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    leaf_sct: CertificateDer<'static>,
    leaf_key: Vec<u8>,
    ocsp: Vec<u8>,
    ocsp_sct: Vec<u8>,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CrlDistributionPoint, DnType,
        ExtendedKeyUsagePurpose as Eku, IsCa, Issuer, KeyPair, KeyUsagePurpose as Ku,
        PKCS_ECDSA_P256_SHA256,
    };
    let now = unix_now();
    let org = "Example Trust Services LLC";

    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name = dn(&[
        (DnType::CountryName, "US"),
        (DnType::OrganizationName, org),
        (DnType::CommonName, "Example Trust Root ECC CA"),
    ]);
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![Ku::DigitalSignature, Ku::KeyCertSign, Ku::CrlSign];
    root.not_before = at(now - 400 * 86_400);
    root.not_after = at(now + 20 * 365 * 86_400);
    let root_cert = root.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root, root_key);

    let inter_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut inter = CertificateParams::default();
    inter.distinguished_name = dn(&[
        (DnType::CountryName, "US"),
        (DnType::OrganizationName, org),
        (DnType::CommonName, "Example Trust ECC DV TLS CA 2026"),
    ]);
    inter.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    inter.key_usages = vec![Ku::DigitalSignature, Ku::KeyCertSign, Ku::CrlSign];
    inter.extended_key_usages = vec![Eku::ServerAuth, Eku::ClientAuth];
    inter.use_authority_key_identifier_extension = true;
    inter.crl_distribution_points = vec![CrlDistributionPoint {
        uris: vec!["http://crl.example-trust.com/ExampleTrustRootECCCA.crl".into()],
    }];
    inter.custom_extensions = vec![
        aia(
            "http://ocsp.example-trust.com",
            "http://cacerts.example-trust.com/ExampleTrustRootECCCA.crt",
        ),
        policies(&[OID_DV, OID_OV]),
    ];
    inter.not_before = at(now - 300 * 86_400);
    inter.not_after = at(now + 5 * 365 * 86_400);
    let inter_cert = inter.signed_by(&inter_key, &root_issuer).unwrap();
    let inter_pkcs8 = inter_key.serialize_der();
    let inter_issuer = Issuer::new(inter, inter_key);

    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf =
        CertificateParams::new(vec![SNI.to_string(), "example.com".to_string()]).unwrap();
    leaf.distinguished_name = dn(&[(DnType::CommonName, SNI)]);
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![Ku::DigitalSignature];
    leaf.extended_key_usages = vec![Eku::ServerAuth, Eku::ClientAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.crl_distribution_points = vec![CrlDistributionPoint {
        uris: vec!["http://crl.example-trust.com/ExampleTrustECCDVTLSCA2026.crl".into()],
    }];
    leaf.not_before = at(now - 86_400);
    leaf.not_after = at(now + 89 * 86_400);
    leaf.custom_extensions = vec![
        aia(
            "http://ocsp.example-trust.com",
            "http://cacerts.example-trust.com/ExampleTrustECCDVTLSCA2026.crt",
        ),
        policies(&[OID_DV]),
    ];
    let leaf_cert = leaf.signed_by(&leaf_key, &inter_issuer).unwrap();
    leaf.custom_extensions.push(sct_list(2));
    let leaf_sct = leaf.signed_by(&leaf_key, &inter_issuer).unwrap();

    let ocsp = ocsp_response(inter_cert.der(), &inter_pkcs8, leaf_cert.der());
    let ocsp_sct = ocsp_response(inter_cert.der(), &inter_pkcs8, leaf_sct.der());
    Pki {
        root: root_cert.der().clone(),
        inter: inter_cert.der().clone(),
        leaf: leaf_cert.der().clone(),
        leaf_sct: leaf_sct.der().clone(),
        leaf_key: leaf_key.serialize_der(),
        ocsp,
        ocsp_sct,
    }
}

fn cert_server_config(leaf: &CertificateDer<'static>, pki: &Pki, ocsp: &[u8]) -> ServerConfig {
    let mut cfg = ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert_with_ocsp(
            vec![leaf.clone(), pki.inter.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.leaf_key.clone())),
            ocsp.to_vec(),
        )
        .unwrap();
    cfg.send_tls13_tickets = 0;
    cfg
}

fn cert_client_config(verifier: Arc<dyn ServerCertVerifier>) -> ClientConfig {
    let mut cfg = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.resumption = Resumption::disabled();
    cfg
}

/// The WebPKI verifier, recording the stapled OCSP response it is handed (for the one
/// connection that checks the staple arrived; the measured clients use the verifier alone).
#[derive(Debug)]
struct SeesOcsp {
    inner: Arc<WebPkiServerVerifier>,
    ocsp: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for SeesOcsp {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.ocsp.lock().unwrap() = Some(ocsp.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

// --- counting what crosses the socket -----------------------------------------------------------

#[derive(Default, Debug)]
struct Counter {
    read: AtomicU64,
    written: AtomicU64,
}

impl Counter {
    fn get(&self) -> (u64, u64) {
        (
            self.written.load(Ordering::Relaxed),
            self.read.load(Ordering::Relaxed),
        )
    }
}

/// A stream that counts the bytes read from and written to it.
struct Counted<S> {
    inner: S,
    c: Arc<Counter>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            self.c.read.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.c.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.c.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// (written, read) by a server at the end of its last handshake.
type Last = Arc<Mutex<(u64, u64)>>;

/// Accept TLS connections: handshake (counted), then answer one 4-byte request with "pong".
async fn tls_server(listener: TcpListener, acceptor: TlsAcceptor, last: Last) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, last) = (acceptor.clone(), last.clone());
        tokio::spawn(async move {
            let c = Arc::new(Counter::default());
            let inner = Counted {
                inner: tcp,
                c: c.clone(),
            };
            let Ok(mut s) = acceptor.accept(inner).await else {
                return;
            };
            *last.lock().unwrap() = c.get();
            let mut req = [0u8; 4];
            if s.read_exact(&mut req).await.is_ok() {
                let _ = s.write_all(b"pong").await;
                let _ = s.flush().await;
            }
        });
    }
}

// --- the client -------------------------------------------------------------------------------

type Conn = TlsStream<Counted<TcpStream>>;

/// TCP connect and a TLS handshake; the stream counts the bytes from the first one.
async fn handshake(addr: SocketAddr, cfg: Arc<ClientConfig>) -> (Conn, Arc<Counter>) {
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    tcp.set_nodelay(true).unwrap();
    let c = Arc::new(Counter::default());
    let inner = Counted {
        inner: tcp,
        c: c.clone(),
    };
    let sni = ServerName::try_from(SNI).unwrap();
    let s = TlsConnector::from(cfg)
        .connect(sni, inner)
        .await
        .unwrap_or_else(|e| panic!("handshake with {addr}: {e}"));
    (s, c)
}

/// A: resolve (keys + address), accept only the resolved key, connect, handshake.
async fn rpk_connect(r: &Resolver, port: u16) -> (Conn, Arc<Counter>, Report) {
    let (res, rep) = r.resolve(NAME).await;
    let res = res.unwrap_or_else(|e| panic!("resolve {NAME}: {e}"));
    let (ip, key) = &res.pairs[0];
    let (mut cfg, _) = tls::client_config(&key.q, None).unwrap();
    cfg.resumption = Resumption::disabled();
    let (s, c) = handshake(SocketAddr::new(*ip, port), Arc::new(cfg)).await;
    (s, c, rep)
}

/// One request and its answer: the first application data of each side.
async fn ping<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    s.write_all(b"ping").await.unwrap();
    s.flush().await.unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"pong");
}

struct World {
    h: Hierarchy,
    warm: Resolver,
    rpk_port: u16,
    rpk_last: Last,
    cert: SocketAddr,
    cert_last: Last,
    cert_sct: SocketAddr,
    cert_sct_last: Last,
    cert_cfg: Arc<ClientConfig>,
    /// An RPK client config for the key the hierarchy publishes, built once (handshake alone).
    rpk_cfg: Arc<ClientConfig>,
    pki: Pki,
    /// Client: the main thread.
    cli: Runtime,
    /// Servers: the key servers, DNS and both TLS servers, on their own threads.
    _srv: Runtime,
}

impl World {
    fn new() -> World {
        let srv = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("servers")
            .enable_all()
            .build()
            .unwrap();
        let cli = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let h = srv.block_on(hierarchy());
        let pki = pki();

        let mut rpk_cfg = tls::server_config(&h.www, None).unwrap();
        rpk_cfg.send_tls13_tickets = 0;
        let rpk_last = Last::default();
        let cert_last = Last::default();
        let cert_sct_last = Last::default();
        let (rpk_port, cert, cert_sct) = srv.block_on(async {
            let start = |cfg: ServerConfig, last: Last| async move {
                let l = TcpListener::bind((WWW_IP.parse::<IpAddr>().unwrap(), 0))
                    .await
                    .unwrap();
                let addr = l.local_addr().unwrap();
                tokio::spawn(tls_server(l, TlsAcceptor::from(Arc::new(cfg)), last));
                addr
            };
            let a = start(rpk_cfg, rpk_last.clone()).await;
            let b = start(
                cert_server_config(&pki.leaf, &pki, &pki.ocsp),
                cert_last.clone(),
            )
            .await;
            let c = start(
                cert_server_config(&pki.leaf_sct, &pki, &pki.ocsp_sct),
                cert_sct_last.clone(),
            )
            .await;
            (a.port(), b, c)
        });

        let mut roots = RootCertStore::empty();
        roots.add(pki.root.clone()).unwrap();
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), tls::provider())
            .build()
            .unwrap();
        let cert_cfg = Arc::new(cert_client_config(webpki));
        let (mut rpk_client, _) = tls::client_config(h.www.public(), None).unwrap();
        rpk_client.resumption = Resumption::disabled();
        let rpk_cfg = Arc::new(rpk_client);
        let warm = {
            let _g = cli.enter();
            Resolver::new(ResolverConfig::new(h.anchors.clone(), vec![h.dns])).unwrap()
        };
        World {
            h,
            warm,
            rpk_port,
            rpk_last,
            cert,
            cert_last,
            cert_sct,
            cert_sct_last,
            cert_cfg,
            rpk_cfg,
            pki,
            cli,
            _srv: srv,
        }
    }

    fn rpk_addr(&self) -> SocketAddr {
        SocketAddr::new(WWW_IP.parse().unwrap(), self.rpk_port)
    }

    /// A resolver with an empty cache (call inside the client runtime).
    fn fresh(&self) -> Resolver {
        Resolver::new(ResolverConfig::new(
            self.h.anchors.clone(),
            vec![self.h.dns],
        ))
        .unwrap()
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.pki.root.clone()).unwrap();
        Arc::new(roots)
    }
}

// --- the table ----------------------------------------------------------------------------------

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn pct(a: u64, b: u64) -> String {
    format!("{:.1} %", 100.0 * a as f64 / b as f64)
}

/// (median, p10, p90) in µs.
fn stats(v: &mut [Duration]) -> (f64, f64, f64) {
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    (q(0.5), q(0.1), q(0.9))
}

/// Bytes of each kind over `BYTES_RUNS` connections, each checked against the server's own
/// count. The server's flight varies by a byte or two from one connection to the next (a DER
/// ECDSA signature in CertificateVerify is 70-72 bytes), hence medians and ranges.
struct Bytes {
    rpk: Sizes,
    rpk_warm: Sizes,
    cold: Report,
    cold_varies: bool,
    cert: Sizes,
    cert_sct: Sizes,
}

const BYTES_RUNS: usize = 21;

/// (client -> server, server -> client) of each connection.
#[derive(Default)]
struct Sizes(Vec<(u64, u64)>);

impl Sizes {
    fn median(&self) -> (u64, u64) {
        let mut o: Vec<u64> = self.0.iter().map(|c| c.0).collect();
        let mut i: Vec<u64> = self.0.iter().map(|c| c.1).collect();
        o.sort();
        i.sort();
        (o[o.len() / 2], i[i.len() / 2])
    }

    fn range(&self) -> (u64, u64) {
        let t = self.0.iter().map(|c| c.0 + c.1);
        (t.clone().min().unwrap(), t.max().unwrap())
    }
}

/// The server wrote what the client read; it read what the client wrote, and possibly the
/// client's first application data record (26 bytes for the 4-byte request: 5 header + 4 +
/// 1 content type + 16 tag) when that arrived with the client's Finished.
fn same_count(server: (u64, u64), client: (u64, u64), what: &str) {
    let ((sw, sr), (cw, cr)) = (server, client);
    assert_eq!(
        sw, cr,
        "{what}: server wrote what the client read in the handshake"
    );
    assert!(
        sr == cw || sr == cw + 26,
        "{what}: server read {sr} in its handshake, the client wrote {cw}"
    );
}

fn bytes(w: &World) -> Bytes {
    w.cli.block_on(async {
        let mut b = Bytes {
            rpk: Sizes::default(),
            rpk_warm: Sizes::default(),
            cold: w.warm.resolve(NAME).await.1,
            cold_varies: false,
            cert: Sizes::default(),
            cert_sct: Sizes::default(),
        };
        // B, with a verifier that shows the staple arrived.
        let sees = Arc::new(SeesOcsp {
            inner: WebPkiServerVerifier::builder_with_provider(w.roots(), tls::provider())
                .build()
                .unwrap(),
            ocsp: Mutex::new(None),
        });
        let cfg = Arc::new(cert_client_config(sees.clone()));
        for run in 0..BYTES_RUNS {
            // A, cold: a fresh resolver; the key resolution's packets come from its Report.
            let r = w.fresh();
            let (mut s, c, cold) = rpk_connect(&r, w.rpk_port).await;
            let hs = c.get();
            ping(&mut s).await;
            assert_eq!(cold.queries, 3, "a cold walk asks the three key servers");
            same_count(*w.rpk_last.lock().unwrap(), hs, "RPK");
            b.rpk.0.push(hs);
            if run == 0 {
                b.cold = cold;
            } else if (cold.bytes_out, cold.bytes_in) != (b.cold.bytes_out, b.cold.bytes_in) {
                b.cold_varies = true;
            }
            // The same from the warm cache: no packet for the resolution.
            let (mut s, c, warm) = rpk_connect(&r, w.rpk_port).await;
            let hs = c.get();
            ping(&mut s).await;
            assert_eq!((warm.queries, warm.bytes_out + warm.bytes_in), (0, 0));
            same_count(*w.rpk_last.lock().unwrap(), hs, "RPK warm");
            b.rpk_warm.0.push(hs);

            *sees.ocsp.lock().unwrap() = None;
            let (mut s, c) = handshake(w.cert, cfg.clone()).await;
            let hs = c.get();
            ping(&mut s).await;
            assert_eq!(
                sees.ocsp.lock().unwrap().as_deref(),
                Some(&w.pki.ocsp[..]),
                "the client received the stapled OCSP response"
            );
            same_count(*w.cert_last.lock().unwrap(), hs, "certificate");
            b.cert.0.push(hs);

            let (mut s, c) = handshake(w.cert_sct, cfg.clone()).await;
            let hs = c.get();
            ping(&mut s).await;
            same_count(*w.cert_sct_last.lock().unwrap(), hs, "certificate + SCT");
            b.cert_sct.0.push(hs);
        }
        b
    })
}

#[derive(Default)]
struct Times {
    rpk_hs: Vec<Duration>,
    rpk_warm: Vec<Duration>,
    rpk_cold: Vec<Duration>,
    cold_resolution: Vec<Duration>,
    connect_warm: Vec<Duration>,
    cert: Vec<Duration>,
}

/// N rounds; each round times every kind once, in an order that rotates with the round.
fn latency(w: &World, n: usize) -> Times {
    let mut t = Times::default();
    let expected = w.cli.block_on(w.warm.resolve(NAME)).0.unwrap().pairs[0].1.q;
    assert_eq!(
        &expected,
        w.h.www.public(),
        "the resolver gives www's own key"
    );
    w.cli.block_on(async {
        for round in 0..n + 10 {
            let keep = round >= 10; // 10 rounds of warm-up
            for k in 0..5 {
                match (round + k) % 5 {
                    0 => {
                        let start = Instant::now();
                        let (mut s, _) = handshake(w.rpk_addr(), w.rpk_cfg.clone()).await;
                        let d = start.elapsed();
                        ping(&mut s).await;
                        if keep {
                            t.rpk_hs.push(d);
                        }
                    }
                    1 => {
                        let start = Instant::now();
                        let (mut s, _, rep) = rpk_connect(&w.warm, w.rpk_port).await;
                        let d = start.elapsed();
                        assert_eq!(rep.queries, 0);
                        ping(&mut s).await;
                        if keep {
                            t.rpk_warm.push(d);
                        }
                    }
                    2 => {
                        let r = w.fresh();
                        let start = Instant::now();
                        let (mut s, _, rep) = rpk_connect(&r, w.rpk_port).await;
                        let d = start.elapsed();
                        assert_eq!(rep.queries, 3);
                        ping(&mut s).await;
                        if keep {
                            t.rpk_cold.push(d);
                            t.cold_resolution.push(rep.elapsed);
                        }
                    }
                    3 => {
                        let start = Instant::now();
                        let mut c = tls::connect(&w.warm, NAME, w.rpk_port, None)
                            .await
                            .unwrap_or_else(|e| panic!("tls::connect: {e}"));
                        let d = start.elapsed();
                        ping(&mut c.stream).await;
                        if keep {
                            t.connect_warm.push(d);
                        }
                    }
                    _ => {
                        let start = Instant::now();
                        let (mut s, _) = handshake(w.cert, w.cert_cfg.clone()).await;
                        let d = start.elapsed();
                        ping(&mut s).await;
                        if keep {
                            t.cert.push(d);
                        }
                    }
                }
            }
        }
    });
    t
}

fn table() {
    let n: usize = std::env::var("TLS_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let load_start = loadavg();
    let date = sh("date -u '+%Y-%m-%d %H:%M:%S UTC'");
    let w = World::new();
    let b = bytes(&w);
    let mut t = latency(&w, n);
    let load_end = loadavg();

    let cpu = sh("lscpu | sed -n 's/^Model name: *//p' | head -1");
    let cpus = sh("nproc");
    println!("# TLS 1.3 set-up: TwinPeaks raw public key (A) vs certificate chain + OCSP (B)");
    println!();
    println!(
        "machine: {cpu}, {cpus} CPUs; {}; rustls 0.23 + ring on both ends, loopback TCP",
        sh("uname -sr")
    );
    println!("date: {date}; load average (1/5/15 min) at start {load_start}, at end {load_end}");
    println!("command: cargo bench -p twinpeaks --bench tls   (TLS_BENCH_N={n})");
    println!();
    println!(
        "B's chain: leaf {} bytes (with 2 SCTs: {}), intermediate {} bytes, stapled OCSP \
         response {} bytes (DER, one SingleResponse, signed by the intermediate, ECDSA P-256); \
         A's raw key: SPKI {} bytes",
        w.pki.leaf.len(),
        w.pki.leaf_sct.len(),
        w.pki.inter.len(),
        w.pki.ocsp.len(),
        tls::spki(w.h.www.public()).len()
    );
    println!();
    println!("## Bytes on the wire (TLS bytes in TCP, up to the first application data)");
    println!();
    println!("| connection | client -> server | server -> client | total |");
    println!("|---|---:|---:|---:|");
    let row = |what: &str, (o, i): (u64, u64)| {
        println!("| {what} | {o} | {i} | {} |", o + i);
    };
    let cold = (b.cold.bytes_out, b.cold.bytes_in);
    let a_warm = b.rpk_warm.median();
    let a_hs = b.rpk.median();
    let a_cold = (a_hs.0 + cold.0, a_hs.1 + cold.1);
    let (bm, bsm) = (b.cert.median(), b.cert_sct.median());
    let range = |s: &Sizes| {
        let (lo, hi) = s.range();
        format!("{lo}-{hi}")
    };
    row(
        &format!("A: RPK handshake (range of totals {})", range(&b.rpk)),
        a_hs,
    );
    row(
        &format!(
            "A: cold key resolution ({} UDP queries to key servers, Report{})",
            b.cold.queries,
            if b.cold_varies {
                "; VARIED between runs"
            } else {
                "; same every run"
            }
        ),
        cold,
    );
    row(
        &format!(
            "**A warm**: resolution from the cache (0 bytes) + handshake (range {})",
            range(&b.rpk_warm)
        ),
        a_warm,
    );
    row("**A cold**: key resolution + handshake", a_cold);
    row(
        &format!(
            "**B**: chain (leaf + intermediate) + stapled OCSP (range {})",
            range(&b.cert)
        ),
        bm,
    );
    row(
        &format!(
            "B': B with 2 embedded SCTs in the leaf (range {})",
            range(&b.cert_sct)
        ),
        bsm,
    );
    let (aw, ac, bb, bs) = (
        a_warm.0 + a_warm.1,
        a_cold.0 + a_cold.1,
        bm.0 + bm.1,
        bsm.0 + bsm.1,
    );
    println!();
    println!(
        "medians of {BYTES_RUNS} connections each, every one checked against the server's own count"
    );
    println!();
    println!(
        "A warm / B = {} (goal <= 40 %); A cold / B = {}; A warm / B' = {}; A cold / B' = {}",
        pct(aw, bb),
        pct(ac, bb),
        pct(aw, bs),
        pct(ac, bs)
    );
    println!(
        "(the A/AAAA lookup of a cold A runs in parallel and is not in Report; B needs the same \
         lookup, not counted either)"
    );
    println!();
    println!(
        "## Set-up latency (µs; {n} rounds, each kind once per round, order rotating, 10 warm-up rounds)"
    );
    println!();
    println!("| set-up | median | p10 | p90 |");
    println!("|---|---:|---:|---:|");
    let line = |what: &str, v: &mut Vec<Duration>| {
        let (m, lo, hi) = stats(v);
        println!("| {what} | {m:.0} | {lo:.0} | {hi:.0} |");
        m
    };
    let hs = line("A: TCP connect + RPK handshake (key known)", &mut t.rpk_hs);
    let warm = line(
        "**A warm**: resolve (cache hit) + TCP connect + handshake",
        &mut t.rpk_warm,
    );
    let cold = line(
        "**A cold**: resolve (fresh resolver: 3 key queries, A/AAAA in parallel) + TCP connect + handshake",
        &mut t.rpk_cold,
    );
    line(
        "  of which the cold resolution (Report.elapsed)",
        &mut t.cold_resolution,
    );
    line(
        "A warm through `twinpeaks::tls::connect` (cross-check)",
        &mut t.connect_warm,
    );
    let cert = line(
        "**B**: TCP connect + handshake (chain + OCSP, WebPkiServerVerifier)",
        &mut t.cert,
    );
    println!();
    println!(
        "A handshake / B = {:.2}; A warm / B = {:.2}; A cold / B = {:.2}",
        hs / cert,
        warm / cert,
        cold / cert
    );
    println!();
    println!("Instructions per connection: server/bench/tls.sh (callgrind).");
}

// --- instruction counts -------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Rpk,
    RpkCold,
    RpkHandshake,
    Cert,
}

/// `k` connections of one kind (TCP connect + handshake), each dropped after its handshake.
async fn run_connections(w: &World, kind: Kind, k: usize, cold: &mut Vec<Resolver>) -> u64 {
    let mut bytes = 0;
    for _ in 0..k {
        let c = match kind {
            Kind::Rpk => rpk_connect(&w.warm, w.rpk_port).await.1,
            Kind::RpkCold => {
                let r = cold.pop().expect("one fresh resolver per connection");
                let (s, c, rep) = rpk_connect(&r, w.rpk_port).await;
                assert_eq!(rep.queries, 3);
                drop(s);
                drop(r);
                c
            }
            Kind::RpkHandshake => handshake(w.rpk_addr(), w.rpk_cfg.clone()).await.1,
            Kind::Cert => handshake(w.cert, w.cert_cfg.clone()).await.1,
        };
        let (o, i) = c.get();
        bytes += o + i;
    }
    bytes
}

/// What callgrind counts (`--toggle-collect=tls::icount_client_loop`): the client's work for
/// `k` connections, on this thread.
#[inline(never)]
fn icount_client_loop(w: &World, kind: Kind, k: usize, cold: &mut Vec<Resolver>) -> u64 {
    w.cli.block_on(run_connections(w, kind, k, cold))
}

fn icount(kind: &str, k: usize) {
    let kind = match kind {
        "rpk" => Kind::Rpk,
        "rpk-cold" => Kind::RpkCold,
        "rpk-hs" => Kind::RpkHandshake,
        "cert" => Kind::Cert,
        other => panic!("icount: unknown kind {other:?} (rpk, rpk-cold, rpk-hs, cert)"),
    };
    let w = World::new();
    let mut cold: Vec<Resolver> = {
        let _g = w.cli.enter();
        (0..=k).map(|_| w.fresh()).collect()
    };
    // One connection of this kind outside the counted loop: one-time initialisation (lazy
    // statics, the warm cache, the first DNS socket of nothing shared) is not counted.
    let mut first = vec![cold.pop().unwrap()];
    let _ = w
        .cli
        .block_on(run_connections(&w, Kind::Rpk, 1, &mut first));
    let first_bytes = w.cli.block_on(run_connections(&w, kind, 1, &mut first));
    let start = Instant::now();
    let bytes = icount_client_loop(&w, kind, k, &mut cold);
    println!(
        "icount {kind:?}: {k} connections in icount_client_loop, {bytes} handshake bytes \
         ({} per connection; warm-up connection {first_bytes}), {:.1} ms",
        bytes.checked_div(k as u64).unwrap_or(0),
        start.elapsed().as_secs_f64() * 1e3
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.first().map(String::as_str) {
        Some("icount") => {
            let kind = args.get(1).map(String::as_str).unwrap_or("rpk");
            let k = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
            icount(kind, k);
        }
        None | Some("table") => table(),
        Some(other) => {
            eprintln!("usage: tls [table] | icount rpk|rpk-cold|rpk-hs|cert K   (got {other:?})");
            std::process::exit(2);
        }
    }
}
