//! The control socket: a Unix socket (mode 0600) on which `tp ctl` asks a running tpkd to
//! reload, report status, or enroll a member. One request line, one response, then close.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};
use twinpeaks::clpkc::{KeyRequest, KgcParams};

use crate::keyserver::KeyServer;

/// Longest request line accepted.
const MAX_LINE: u64 = 64 * 1024;

/// The response text of an enrollment: what the requester needs to finalize its key.
/// It holds the partial private key `d`: keep it 0600 and send it confidentially.
pub fn response_text(
    name: &str,
    ip: std::net::IpAddr,
    issuer: &KgcParams,
    partial_hex: &str,
    record: &str,
) -> String {
    format!(
        "# TwinPeaks partial key for {name} at {ip}: confidential until finalized\nname = \"{name}\"\nip = \"{ip}\"\nissuer_params = \"{}\"\npartial_key = \"{partial_hex}\"\nrecord = \"{record}\"\n",
        hex::encode(issuer.encode())
    )
}

/// Serve the control socket until the task is dropped.
pub async fn serve(path: &Path, ks: Arc<KeyServer>) -> Result<()> {
    if path.exists() {
        // A socket left by a previous run; refuse if another tpkd still answers on it.
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
        let (stream, _) = listener.accept().await?;
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
    BufReader::new(r.take(MAX_LINE))
        .read_line(&mut line)
        .await?;
    let reply = match answer(line.trim(), &ks).await {
        Ok(text) => format!("ok\n{text}"),
        Err(e) => format!("error\n{e:#}\n"),
    };
    w.write_all(reply.as_bytes()).await?;
    w.shutdown().await?;
    Ok(())
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
                    warn!(errors = %e.replace('\n', "; "), "reload refused, old zone keeps serving");
                    Err(anyhow!("reload refused, the old zone keeps serving:\n{e}"))
                }
            }
        }
        Some("status") => {
            let (serial, members) = ks.status();
            Ok(format!(
                "name = \"{}\"\nserial = {serial}\nmembers = {members}\n",
                ks.cfg.name
            ))
        }
        Some("enroll") => {
            let req_hex = words
                .next()
                .ok_or_else(|| anyhow!("enroll: missing request"))?;
            let req = KeyRequest::decode(
                &hex::decode(req_hex).map_err(|_| anyhow!("enroll: request is not hex"))?,
            )
            .map_err(|e| anyhow!("enroll: request: {e}"))?;
            let key_server = match words.next() {
                None => None,
                Some(ks_arg) => {
                    let (port, params) = ks_arg
                        .strip_prefix("ks=")
                        .and_then(|s| s.split_once(':'))
                        .ok_or_else(|| anyhow!("enroll: expected ks=<port>:<params-hex>"))?;
                    let port: u16 = port.parse().map_err(|_| anyhow!("enroll: bad port"))?;
                    let params = KgcParams::decode(
                        &hex::decode(params).map_err(|_| anyhow!("enroll: params not hex"))?,
                    )
                    .map_err(|e| anyhow!("enroll: params: {e}"))?;
                    Some((port, params))
                }
            };
            let ks2 = ks.clone();
            let name = req.identity.name.clone();
            let (record, partial) =
                tokio::task::spawn_blocking(move || ks2.enroll(&req, key_server)).await??;
            info!(zone = %ks.cfg.name, member = %name, ip = %record.ip, "member enrolled");
            let partial_hex = zeroize::Zeroizing::new(hex::encode(partial.encode().as_slice()));
            Ok(response_text(
                &name,
                record.ip,
                ks.params(),
                &partial_hex,
                &record.to_string(),
            ))
        }
        Some(other) => Err(anyhow!(
            "unknown command `{other}` (reload, status, enroll)"
        )),
        None => Err(anyhow!("empty request")),
    }
}
