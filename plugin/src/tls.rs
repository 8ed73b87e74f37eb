//! TLS 1.3 with TwinPeaks keys as RFC 7250 raw public keys (rustls, ring): no certificate, no
//! chain, no OCSP. A server presents its entity key `Q` (signing with `sk`); a client accepts
//! the server only if the raw key it presents is the key the resolver verified for that name
//! *and that IP*, and, for mutual authentication, a server accepts a client only if its key is
//! the one published for an allowed name at the client's own address.
//!
//! [`connect`] is the client's whole procedure: resolve (IP, key), connect, and on a key
//! mismatch invalidate the cached key, re-resolve once and retry; a key that still differs from
//! the one the hierarchy publishes is "possible spoofing". See docs/tls.md.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use p256::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{AlwaysResolvesClientRawPublicKeys, ClientConfig};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature_with_raw_key,
};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{AlwaysResolvesServerRawPublicKeys, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError,
    PeerIncompatible, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use zeroize::Zeroizing;

use crate::clpkc::{self, EntityKey, PublicKey};
use crate::resolver::{ResolveError, Resolver, VerifiedKey};

/// The crypto provider for every config here: ring, TLS 1.3 only.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The DER SubjectPublicKeyInfo of a P-256 key: what a raw-public-key peer presents.
pub fn spki(q: &PublicKey) -> Vec<u8> {
    q.to_public_key_der()
        .map(|d| d.into_vec())
        .unwrap_or_default()
}

/// PKCS#8 DER of an entity's private key, for a TLS stack (kept zeroized here).
pub fn pkcs8(key: &EntityKey) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    let sk = p256::SecretKey::from_slice(&key.secret_bytes()[..])
        .map_err(|_| TlsError::General("entity key is not a P-256 scalar".into()))?;
    let der = sk
        .to_pkcs8_der()
        .map_err(|e| TlsError::General(format!("PKCS#8 encoding: {e}")))?;
    Ok(Zeroizing::new(der.as_bytes().to_vec()))
}

/// The entity's key as rustls presents it: the raw key (SPKI) and an ECDSA-P256 signer.
pub fn certified_key(key: &EntityKey) -> Result<Arc<CertifiedKey>, TlsError> {
    let der = pkcs8(key)?;
    let signer = rustls::crypto::ring::sign::any_ecdsa_type(&PrivateKeyDer::Pkcs8(
        PrivatePkcs8KeyDer::from(&der[..]),
    ))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(spki(key.public()))],
        signer,
    )))
}

fn algs() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

fn verify13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, TlsError> {
    verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(cert.as_ref()),
        dss,
        algs,
    )
}

/// A verifier of raw public keys: accepts a peer presenting one of a set of keys (a server:
/// the one key resolved for its name and IP; clients: the keys of the allowed names at the
/// client's address), and remembers what the peer showed.
#[derive(Debug)]
pub struct RawKeyVerifier {
    accepted: Vec<Vec<u8>>,
    presented: Mutex<Option<Vec<u8>>>,
    algs: WebPkiSupportedAlgorithms,
}

impl RawKeyVerifier {
    /// Accept a peer presenting one of `keys`.
    pub fn new(keys: &[PublicKey]) -> Self {
        Self {
            accepted: keys.iter().map(spki).collect(),
            presented: Mutex::new(None),
            algs: algs(),
        }
    }

    /// The raw key (SPKI DER) the peer presented, once the handshake got that far.
    pub fn presented(&self) -> Option<Vec<u8>> {
        self.presented.lock().ok().and_then(|p| p.clone())
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), TlsError> {
        if let Ok(mut p) = self.presented.lock() {
            *p = Some(end_entity.as_ref().to_vec());
        }
        if intermediates.is_empty() && self.accepted.iter().any(|k| k == end_entity.as_ref()) {
            Ok(())
        } else {
            Err(TlsError::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

fn no_tls12() -> Result<HandshakeSignatureValid, TlsError> {
    Err(TlsError::PeerIncompatible(
        PeerIncompatible::Tls12NotOffered,
    ))
}

impl ServerCertVerifier for RawKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.check(end_entity, intermediates)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify13(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ECDSA_NISTP256_SHA256]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for RawKeyVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        self.check(end_entity, intermediates)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify13(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ECDSA_NISTP256_SHA256]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// A server config presenting `key`; with `clients`, a client must present one of them.
pub fn server_config(
    key: &EntityKey,
    clients: Option<&[PublicKey]>,
) -> Result<ServerConfig, TlsError> {
    let b = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let b = match clients {
        None => b.with_no_client_auth(),
        Some(keys) => b.with_client_cert_verifier(Arc::new(RawKeyVerifier::new(keys))),
    };
    Ok(
        b.with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(
            certified_key(key)?,
        ))),
    )
}

/// A client config accepting only a server presenting `expected`; with `own`, the client
/// presents its own key.
pub fn client_config(
    expected: &PublicKey,
    own: Option<&EntityKey>,
) -> Result<(ClientConfig, Arc<RawKeyVerifier>), TlsError> {
    let verifier = Arc::new(RawKeyVerifier::new(std::slice::from_ref(expected)));
    let b = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    let cfg = match own {
        None => b.with_no_client_auth(),
        Some(k) => b.with_client_cert_resolver(Arc::new(AlwaysResolvesClientRawPublicKeys::new(
            certified_key(k)?,
        ))),
    };
    Ok((cfg, verifier))
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The name's (IP, key) pairs could not be resolved.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// No TCP connection.
    #[error("{addr}: {reason}")]
    Io {
        /// Where.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The handshake failed for another reason than the server's key.
    #[error("{addr}: TLS handshake failed: {reason}")]
    Handshake {
        /// Where.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The server's key is not the one the key hierarchy publishes for this name and IP, even
    /// after a fresh resolution.
    #[error(
        "possible spoofing: {addr} presents key {presented}, but the key hierarchy publishes {published} for {name} at {ip}"
    )]
    PossibleSpoofing {
        /// The name.
        name: String,
        /// The address.
        ip: IpAddr,
        /// Where.
        addr: SocketAddr,
        /// The key the server showed (compressed point hex, or the SPKI hex if not P-256).
        presented: String,
        /// The key resolved afresh.
        published: String,
    },
    /// The cached key was refused by the server and the hierarchy publishes no key for this
    /// name and IP any more.
    #[error(
        "outdated key: {addr} does not present the cached key {cached} of {name} at {ip}, and a fresh resolution gives none: {reason}"
    )]
    OutdatedKey {
        /// The name.
        name: String,
        /// The address.
        ip: IpAddr,
        /// Where.
        addr: SocketAddr,
        /// The cached key.
        cached: String,
        /// Why the fresh resolution gave no key.
        reason: String,
    },
}

/// A connection to a server whose key checked out.
pub struct Connected {
    /// The TLS stream.
    pub stream: TlsStream<TcpStream>,
    /// The address connected to.
    pub addr: SocketAddr,
    /// The key it presented (the one resolved for that name and IP).
    pub key: VerifiedKey,
    /// The cached key was outdated: it was invalidated and resolved again before this worked.
    pub refreshed: bool,
}

fn key_hex(k: &PublicKey) -> String {
    hex::encode(clpkc::point_to_bytes(k))
}

fn presented_hex(spki_der: &[u8]) -> String {
    p256::PublicKey::from_public_key_der(spki_der)
        .map(|k| key_hex(&k))
        .unwrap_or_else(|_| format!("(not P-256) {}", hex::encode(spki_der)))
}

// A client presenting its own key connects from the address that key is bound to: the server
// looks the key up for the connection's source address.
async fn tcp_connect(addr: SocketAddr, from: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = from else {
        return TcpStream::connect(addr).await;
    };
    let socket = if ip.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0)).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot send from {ip}, the address of the client's key: {e}"),
        )
    })?;
    socket.connect(addr).await
}

enum Attempt {
    Ok(Box<TlsStream<TcpStream>>),
    Mismatch(Vec<u8>),
    Failed(ConnectError),
}

async fn attempt(
    addr: SocketAddr,
    name: &str,
    key: &PublicKey,
    own: Option<&EntityKey>,
) -> Attempt {
    let (cfg, verifier) = match client_config(key, own) {
        Ok(c) => c,
        Err(e) => {
            return Attempt::Failed(ConnectError::Handshake {
                addr,
                reason: e.to_string(),
            });
        }
    };
    let tcp = match tcp_connect(addr, own.map(|k| k.identity().ip)).await {
        Ok(t) => t,
        Err(e) => {
            return Attempt::Failed(ConnectError::Io {
                addr,
                reason: e.to_string(),
            });
        }
    };
    // The raw key is what is checked; the name only travels as SNI.
    let sni = ServerName::try_from(name.trim_end_matches('.').to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
    match TlsConnector::from(Arc::new(cfg)).connect(sni, tcp).await {
        Ok(s) => Attempt::Ok(Box::new(s)),
        Err(e) => match verifier.presented() {
            Some(p) if p != spki(key) => Attempt::Mismatch(p),
            _ => Attempt::Failed(ConnectError::Handshake {
                addr,
                reason: e.to_string(),
            }),
        },
    }
}

/// Resolve `name` and connect to `port` at one of its addresses, accepting the server only if
/// it presents the key published for that name and address. On a mismatch the cached key is
/// invalidated and the name resolved once more: the fresh key is tried; if the server still
/// presents another key, the result is [`ConnectError::PossibleSpoofing`].
pub async fn connect(
    resolver: &Resolver,
    name: &str,
    port: u16,
    own: Option<&EntityKey>,
) -> Result<Connected, ConnectError> {
    let res = resolver.resolve(name).await.0?;
    let canonical = res.keys.name.clone();
    let mut last = None;
    for (ip, key) in &res.pairs {
        let addr = SocketAddr::new(*ip, port);
        let presented = match attempt(addr, &canonical, &key.q, own).await {
            Attempt::Ok(stream) => {
                return Ok(Connected {
                    stream: *stream,
                    addr,
                    key: key.clone(),
                    refreshed: false,
                });
            }
            Attempt::Failed(e) => {
                last = Some(e);
                continue;
            }
            Attempt::Mismatch(p) => p,
        };
        // The dissertation's "outdated public key" signal: drop the cached key, ask again.
        resolver.invalidate(&canonical);
        let fresh = match resolver.key_for(&canonical, *ip).await {
            Ok(k) => k,
            Err(e) => {
                return Err(ConnectError::OutdatedKey {
                    name: canonical,
                    ip: *ip,
                    addr,
                    cached: key_hex(&key.q),
                    reason: e.to_string(),
                });
            }
        };
        if fresh.q != key.q {
            match attempt(addr, &canonical, &fresh.q, own).await {
                Attempt::Ok(stream) => {
                    return Ok(Connected {
                        stream: *stream,
                        addr,
                        key: fresh,
                        refreshed: true,
                    });
                }
                Attempt::Failed(e) => return Err(e),
                Attempt::Mismatch(p) => {
                    return Err(ConnectError::PossibleSpoofing {
                        name: canonical,
                        ip: *ip,
                        addr,
                        presented: presented_hex(&p),
                        published: key_hex(&fresh.q),
                    });
                }
            }
        }
        return Err(ConnectError::PossibleSpoofing {
            name: canonical,
            ip: *ip,
            addr,
            presented: presented_hex(&presented),
            published: key_hex(&fresh.q),
        });
    }
    Err(
        last.unwrap_or(ConnectError::Resolve(ResolveError::NotFound {
            name: canonical,
            kind: "NODATA",
            server: "-".into(),
        })),
    )
}
