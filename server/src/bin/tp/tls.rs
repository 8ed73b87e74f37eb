//! `tp serve`, `tp connect`, `tp seal`, `tp open`, `tp export-key`: the TwinPeaks key in use.
//! TLS 1.3 with raw public keys (no certificate), and ECIES to an entity.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use twinpeaks::clpkc::{self, EntityKey, Identity};
use twinpeaks::keyfile;
use twinpeaks::resolver::{Resolver, ResolverConfig};
use twinpeaks::tls;

use super::resolve::{Source, config};

/// Default port of the demo's TLS service.
pub const DEFAULT_PORT: u16 = 4433;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn split_port(target: &str) -> Result<(String, u16)> {
    match target.rsplit_once(':') {
        Some((n, p)) => Ok((
            n.to_string(),
            p.parse()
                .map_err(|_| anyhow!("`{target}`: `{p}` is not a port (NAME[:PORT])"))?,
        )),
        None => Ok((target.to_string(), DEFAULT_PORT)),
    }
}

/// `tp connect NAME[:PORT]`.
pub fn connect(src: &Source, target: &str, key: Option<&Path>, message: &str) -> Result<()> {
    let (name, port) = split_port(target)?;
    let cfg = config(src)?;
    if cfg.dns.is_empty() {
        bail!("tp connect needs a DNS server for the address (--dns ADDR:PORT or dns in --config)");
    }
    let own = key.map(keyfile::read_entity).transpose()?.map(|(k, _)| k);
    runtime()?.block_on(async {
        let resolver = Resolver::new(cfg)?;
        let t0 = std::time::Instant::now();
        let mut c = tls::connect(&resolver, &name, port, own.as_ref()).await?;
        let setup = t0.elapsed();
        let (_, conn) = c.stream.get_ref();
        sayln!(
            ";; connected to {} ({}) with {}, {} in {:.2} ms",
            c.key.name,
            c.addr,
            conn.protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|| "?".into()),
            conn.negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_else(|| "?".into()),
            setup.as_secs_f64() * 1000.0
        );
        sayln!(
            ";; server key (RFC 7250 raw public key) = the key published for {} at {}: {}",
            c.key.name,
            c.addr.ip(),
            hex::encode(clpkc::point_to_bytes(&c.key.q))
        );
        if c.refreshed {
            sayln!(";; the cached key was outdated: it was invalidated and resolved again");
        }
        if let Some(k) = &own {
            sayln!(
                ";; client key presented: {} at {}",
                k.identity().name,
                k.identity().ip
            );
        }
        c.stream.write_all(message.as_bytes()).await?;
        c.stream.write_all(b"\n").await?;
        c.stream.flush().await?;
        let mut reader = BufReader::new(&mut c.stream);
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        sayln!("{}", line.trim_end());
        let _ = c.stream.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })
}

/// `tp serve`: an echo service over TLS 1.3 with the entity's key as a raw public key. With
/// allowed clients, a client must present the key published for one of them at its own IP.
pub fn serve(
    key: &Path,
    listen: SocketAddr,
    clients: &[String],
    resolver_cfg: Option<ResolverConfig>,
) -> Result<()> {
    let (own, _) = keyfile::read_entity(key)?;
    if own.identity().ip != listen.ip() && !listen.ip().is_unspecified() {
        eprintln!(
            "tp serve: warning: the key is bound to {}, the service listens on {}: clients will refuse it",
            own.identity().ip,
            listen.ip()
        );
    }
    runtime()?.block_on(async move {
        // Client keys are asked for only when clients are named.
        let resolver = match (clients.is_empty(), resolver_cfg) {
            (true, _) => None,
            (false, Some(cfg)) => Some(Arc::new(Resolver::new(cfg)?)),
            (false, None) => {
                bail!("--client needs trust anchors to resolve client keys (--config or --anchors)")
            }
        };
        let plain = Arc::new(tls::server_config(&own, None)?);
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("listen {listen}"))?;
        eprintln!(
            "tp serve: {} at {listen}, TLS 1.3 with a raw public key{}",
            own.identity().name,
            if clients.is_empty() {
                String::new()
            } else {
                format!(", clients: {}", clients.join(" "))
            }
        );
        let own = Arc::new(own);
        let clients = Arc::new(clients.to_vec());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => { eprintln!("tp serve: accept: {e}"); continue; }
                },
                _ = term.recv() => return Ok(()),
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            let (plain, own, clients, resolver) = (
                plain.clone(),
                own.clone(),
                clients.clone(),
                resolver.clone(),
            );
            tokio::spawn(async move {
                let cfg = match &resolver {
                    None => plain,
                    Some(r) => match client_keys(r, &clients, peer.ip()).await {
                        Ok(keys) => match tls::server_config(&own, Some(&keys)) {
                            Ok(c) => Arc::new(c),
                            Err(e) => {
                                eprintln!("tp serve: {peer}: {e}");
                                return;
                            }
                        },
                        Err(e) => {
                            eprintln!("tp serve: {peer}: refused: {e}");
                            return;
                        }
                    },
                };
                match TlsAcceptor::from(cfg).accept(tcp).await {
                    Ok(mut s) => {
                        eprintln!("tp serve: {peer}: TLS 1.3 session");
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if s.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    // A port probe that sends nothing is not worth a line.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                    Err(e) => eprintln!("tp serve: {peer}: handshake refused: {e}"),
                }
            });
        }
    })
}

/// The keys the allowed client names have at `ip` (a client's key is bound to its address).
async fn client_keys(r: &Resolver, names: &[String], ip: IpAddr) -> Result<Vec<clpkc::PublicKey>> {
    let mut keys = Vec::new();
    let mut why = Vec::new();
    for n in names {
        match r.key_for(n, ip).await {
            Ok(k) => keys.push(k.q),
            Err(e) => why.push(e.to_string()),
        }
    }
    if keys.is_empty() {
        bail!(
            "no allowed client has a verified key at {ip}: {}",
            why.join("; ")
        );
    }
    Ok(keys)
}

fn read_input(path: Option<&Path>) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    match path {
        Some(p) => {
            v = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
        }
        None => {
            std::io::stdin().read_to_end(&mut v)?;
        }
    }
    Ok(v)
}

fn write_output(path: Option<&Path>, data: &[u8]) -> Result<()> {
    match path {
        Some(p) => {
            std::fs::write(p, data).with_context(|| format!("{}: cannot write", p.display()))
        }
        None => {
            std::io::stdout().write_all(data)?;
            Ok(())
        }
    }
}

/// `tp seal`: encrypt to NAME's verified key (ECIES bound to its identity).
pub fn seal(
    src: &Source,
    to: &str,
    ip: Option<IpAddr>,
    input: Option<&Path>,
    output: Option<&Path>,
) -> Result<()> {
    let cfg = config(src)?;
    let plaintext = read_input(input)?;
    let key = runtime()?.block_on(async {
        let r = Resolver::new(cfg)?;
        let k = match ip {
            Some(ip) => r.key_for(to, ip).await?,
            None => {
                let set = r.keys(to).await.0?;
                match set.keys.as_slice() {
                    [k] => k.clone(),
                    ks => bail!(
                        "{to} has {} keys (one per IP: {}); choose one with --ip",
                        ks.len(),
                        ks.iter()
                            .map(|k| k.record.ip.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
        };
        Ok::<_, anyhow::Error>(k)
    })?;
    let id = Identity::with_issuer_digest(&key.name, key.record.ip, key.record.issuer)?;
    let sealed = clpkc::seal(&key.q, &id, &plaintext)?;
    write_output(output, &sealed)?;
    eprintln!(
        "sealed {} bytes to {} at {} (key {})",
        plaintext.len(),
        key.name,
        key.record.ip,
        &hex::encode(clpkc::point_to_bytes(&key.q))[..16]
    );
    Ok(())
}

/// `tp open`: decrypt with the entity's own key.
pub fn open(key: &Path, input: Option<&Path>, output: Option<&Path>) -> Result<()> {
    let (k, _): (EntityKey, _) = keyfile::read_entity(key)?;
    let sealed = read_input(input)?;
    let plain = k.open(&sealed).map_err(|e| {
        anyhow!(
            "cannot open: {e} (not sealed to {} at {}, or altered)",
            k.identity().name,
            k.identity().ip
        )
    })?;
    write_output(output, &plain)
}

/// `tp export-key`: the entity key as PKCS#8 PEM (0600) and its public key as SPKI PEM, for a
/// stock TLS stack (gnutls-serv --rawpkkeyfile / --rawpkfile).
pub fn export_key(key: &Path, pkcs8: &Path, spki: Option<&PathBuf>) -> Result<()> {
    let (k, _) = keyfile::read_entity(key)?;
    let sk = p256::SecretKey::from_slice(&k.secret_bytes()[..])
        .map_err(|_| anyhow!("{}: not a P-256 key", key.display()))?;
    let pem = sk
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| anyhow!("PKCS#8: {e}"))?;
    keyfile::write_secret(pkcs8, &pem)?;
    if let Some(p) = spki {
        let pub_pem = k
            .public()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow!("SPKI: {e}"))?;
        keyfile::write_public(p, &pub_pem)?;
    }
    eprintln!(
        "{} at {}: private key (PKCS#8, 0600) in {}{}",
        k.identity().name,
        k.identity().ip,
        pkcs8.display(),
        spki.map(|p| format!(", public key (SPKI) in {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}
