//! The control socket: a Unix socket (mode 0600) on which `tp ctl` asks a running tpkd to
//! reload, report status, list, enroll, move (change-ip), renew or remove members. One request line, one response, then close.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};
use twinpeaks::clpkc::{self, KeyRequest, KgcParams, PartialKey};
use twinpeaks::keyfile;
use twinpeaks::record::KeyRecord;

use crate::keyserver::KeyServer;

/// Longest request line accepted.
const MAX_LINE: u64 = 64 * 1024;
/// Time a client has to send its request line.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The partial key could not be sealed to the requester.
#[derive(Debug, thiserror::Error)]
#[error("sealing the partial key: {0}")]
pub struct SealError(pub clpkc::CryptoError);

/// The response to a key request ([`keyfile::response_to_text`]): the record as issued and
/// the partial key `(W, d)` sealed to the requester's `X`, so only the holder of `x` can
/// open it.
pub fn response_text(
    req: &KeyRequest,
    issuer: &KgcParams,
    partial: &PartialKey,
    record: &KeyRecord,
) -> Result<String, SealError> {
    let sealed = clpkc::seal(&req.x, &req.identity, &partial.encode()).map_err(SealError)?;
    Ok(keyfile::response_to_text(req, issuer, &sealed, record))
}

/// Serve the control socket until the task is dropped.
pub async fn serve(path: &Path, ks: Arc<KeyServer>) -> Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        // Only a socket left by a previous run is replaced, never another file.
        if !meta.file_type().is_socket() {
            bail!(
                "{}: exists and is not a socket; refusing to replace it (check control_socket)",
                path.display()
            );
        }
        if UnixStream::connect(path).await.is_ok() {
            bail!(
                "{}: another tpkd is running on this control socket",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("{}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("{}: cannot bind", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like pass; the daemon keeps serving DNS.
                warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let ks = ks.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, ks).await {
                warn!(error = %e, "control request failed");
            }
        });
    }
}

async fn handle(stream: UnixStream, ks: Arc<KeyServer>) -> Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    // A client that never finishes its line must not hold a task forever.
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        BufReader::new(r.take(MAX_LINE)).read_line(&mut line),
    )
    .await
    .map_err(|_| anyhow!("no complete request within {REQUEST_TIMEOUT:?}"))??;
    let reply = match answer(line.trim(), &ks).await {
        Ok(text) => format!("ok\n{text}"),
        Err(e) => format!("error\n{e:#}\n"),
    };
    w.write_all(reply.as_bytes()).await?;
    w.shutdown().await?;
    Ok(())
}

/// A key request in hex, the first argument of `op`.
fn parse_request(op: &str, arg: Option<&str>) -> Result<KeyRequest> {
    let req_hex = arg.ok_or_else(|| anyhow!("{op}: missing request"))?;
    KeyRequest::decode(&hex::decode(req_hex).map_err(|_| anyhow!("{op}: request is not hex"))?)
        .map_err(|e| anyhow!("{op}: request: {e}"))
}

/// The optional `ks=<port>:<params-hex>` argument: the member is a key server.
fn parse_ks(op: &str, arg: Option<&str>) -> Result<Option<(u16, KgcParams)>> {
    let Some(ks_arg) = arg else {
        return Ok(None);
    };
    let (port, params) = ks_arg
        .strip_prefix("ks=")
        .and_then(|s| s.split_once(':'))
        .ok_or_else(|| anyhow!("{op}: expected ks=<port>:<params-hex>"))?;
    let port: u16 = port.parse().map_err(|_| anyhow!("{op}: bad port"))?;
    let params =
        KgcParams::decode(&hex::decode(params).map_err(|_| anyhow!("{op}: params not hex"))?)
            .map_err(|e| anyhow!("{op}: params: {e}"))?;
    Ok(Some((port, params)))
}

async fn answer(line: &str, ks: &Arc<KeyServer>) -> Result<String> {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("reload") => {
            let ks2 = ks.clone();
            match tokio::task::spawn_blocking(move || ks2.reload()).await? {
                Ok((serial, members)) => {
                    info!(zone = %ks.cfg.name, serial, members, "zone reloaded (control)");
                    Ok(format!("serial = {serial}\nmembers = {members}\n"))
                }
                Err(e) => {
                    warn!(errors = %e.to_string().replace('\n', "; "), "reload refused, old zone keeps serving");
                    Err(anyhow!("reload refused, the old zone keeps serving:\n{e}"))
                }
            }
        }
        Some("status") => {
            let (serial, members) = ks.status();
            let c = &ks.counters;
            Ok(format!(
                "name = \"{}\"\nserial = {serial}\nmembers = {members}\nqueries_udp = {}\nqueries_tcp = {}\n",
                ks.cfg.name,
                c.udp.load(std::sync::atomic::Ordering::Relaxed),
                c.tcp.load(std::sync::atomic::Ordering::Relaxed)
            ))
        }
        Some("enroll") => {
            let req = parse_request("enroll", words.next())?;
            let key_server = parse_ks("enroll", words.next())?;
            let ks2 = ks.clone();
            let (req, record, partial) = tokio::task::spawn_blocking(move || {
                ks2.enroll(&req, key_server).map(|(r, p)| (req, r, p))
            })
            .await??;
            info!(zone = %ks.cfg.name, member = %req.identity.name, ip = %record.ip, "member enrolled");
            Ok(response_text(&req, ks.params(), &partial, &record)?)
        }
        Some("change-ip") => {
            let req = parse_request("change-ip", words.next())?;
            let old_ip: std::net::IpAddr = words
                .next()
                .ok_or_else(|| anyhow!("change-ip: expected `change-ip REQUEST-HEX OLD-IP`"))?
                .parse()
                .map_err(|_| anyhow!("change-ip: the old IP is not an IP address"))?;
            let key_server = parse_ks("change-ip", words.next())?;
            let ks2 = ks.clone();
            let (req, record, partial) = tokio::task::spawn_blocking(move || {
                ks2.change_ip(&req, old_ip, key_server)
                    .map(|(r, p)| (req, r, p))
            })
            .await??;
            info!(zone = %ks.cfg.name, member = %req.identity.name, ip = %record.ip, %old_ip, "member moved to a new IP");
            Ok(response_text(&req, ks.params(), &partial, &record)?)
        }
        Some("members") => {
            let mut out = String::new();
            for (m, withdrawn) in ks.members() {
                let kind = if m.record.key_server.is_some() {
                    "key-server"
                } else {
                    "entity"
                };
                let source = match &m.source {
                    twinpeaks::zone::Source::Store => "enrolled".to_string(),
                    twinpeaks::zone::Source::File(p, l) => format!("{}:{l}", p.display()),
                };
                let state = if withdrawn { " withdrawn" } else { "" };
                out.push_str(&format!(
                    "{} {} {kind} {} {source}{state}\n",
                    m.owner,
                    m.record.ip,
                    twinpeaks::time::format(m.record.not_after)
                ));
            }
            Ok(out)
        }
        Some(op @ ("renew" | "remove")) => {
            let (Some(name), Some(ip)) = (words.next(), words.next()) else {
                return Err(anyhow!("{op}: expected `{op} NAME IP`"));
            };
            let ip: std::net::IpAddr = ip
                .parse()
                .map_err(|_| anyhow!("{op}: `{ip}` is not an IP address"))?;
            let (ks2, name2) = (ks.clone(), name.to_string());
            if op == "renew" {
                let rec = tokio::task::spawn_blocking(move || ks2.renew(&name2, ip))
                    .await?
                    .map_err(|e| anyhow!("renew: {e}"))?;
                info!(zone = %ks.cfg.name, member = %name, %ip, not_after = %twinpeaks::time::format(rec.not_after), "member renewed");
                Ok(format!(
                    "renewed = \"{name} {ip}\"\nnot_before = \"{}\"\nnot_after = \"{}\"\nserial = {}\n",
                    twinpeaks::time::format(rec.not_before),
                    twinpeaks::time::format(rec.not_after),
                    ks.status().0
                ))
            } else {
                tokio::task::spawn_blocking(move || ks2.remove(&name2, ip))
                    .await?
                    .map_err(|e| anyhow!("remove: {e}"))?;
                info!(zone = %ks.cfg.name, member = %name, %ip, "member removed");
                Ok(format!(
                    "removed = \"{name} {ip}\"\nserial = {}\n",
                    ks.status().0
                ))
            }
        }
        Some(other) => Err(anyhow!(
            "unknown command `{other}` (reload, status, members, enroll, change-ip, renew, remove)"
        )),
        None => Err(anyhow!("empty request")),
    }
}
