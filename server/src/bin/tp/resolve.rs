//! `tp resolve` and `tp dig --anchors`: the key resolver's walk, printed.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use serde_json::json;
use twinpeaks::clpkc;
use twinpeaks::resolver::blocking::BlockingResolver;
use twinpeaks::resolver::settings::Settings;
use twinpeaks::resolver::{
    CacheUse, KeyServer, KeySet, Policy, Report, ResolverConfig, VerifiedKey, anchors,
};
use twinpeaks::time;

/// Where the resolver's settings come from.
pub struct Source {
    pub config: Option<PathBuf>,
    pub anchors: Vec<PathBuf>,
    pub dns: Vec<SocketAddr>,
    pub quorum: Option<usize>,
}

pub fn config(src: &Source) -> Result<ResolverConfig> {
    let now = time::now();
    let mut cfg = match &src.config {
        Some(path) => Settings::load(path)?
            .resolver_config(now)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?,
        None => {
            if src.anchors.is_empty() {
                bail!("give --config FILE, or --anchors FILE (and --dns ADDR:PORT for addresses)");
            }
            ResolverConfig::new(anchors::read_all(&src.anchors, now)?, Vec::new())
        }
    };
    if !src.dns.is_empty() {
        cfg.dns = src.dns.clone();
    }
    if let Some(n) = src.quorum {
        if n == 0 {
            bail!("--quorum must be at least 1");
        }
        cfg.policy = Policy::Quorum(n);
    }
    Ok(cfg)
}

fn short(b: &[u8]) -> String {
    hex::encode(b)[..16].to_string()
}

fn q_hex(k: &VerifiedKey) -> String {
    hex::encode(clpkc::point_to_bytes(&k.q))
}

fn chain_json(chain: &[Arc<KeyServer>]) -> serde_json::Value {
    chain
        .iter()
        .map(|ks| {
            json!({
                "name": ks.name,
                "address": ks.addr().to_string(),
                "servers": ks.servers.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "params_digest": hex::encode(ks.params.digest()),
                "key": hex::encode(clpkc::point_to_bytes(&ks.identities[0].1)),
            })
        })
        .collect()
}

fn key_json(ip: IpAddr, k: &VerifiedKey) -> serde_json::Value {
    json!({
        "ip": ip.to_string(),
        "key": q_hex(k),
        "kind": if k.record.key_server.is_some() { "key server" } else { "entity" },
        "ttl": k.ttl,
        "not_before": time::format(k.record.not_before),
        "not_after": time::format(k.record.not_after),
    })
}

fn report_json(r: &Report) -> serde_json::Value {
    json!({
        "cache": if r.cache == CacheUse::Hit { "hit" } else { "miss" },
        "queries": r.queries,
        "bytes_out": r.bytes_out,
        "bytes_in": r.bytes_in,
        "elapsed_us": r.elapsed.as_micros() as u64,
        "elapsed_ns": r.elapsed.as_nanos() as u64,
    })
}

fn print_chain(chain: &[Arc<KeyServer>]) {
    sayln!(";; chain of trust (each link verified):");
    for ks in chain {
        sayln!(
            ";;   key server {:<20} at {:<22} params {}  Q {}",
            ks.name,
            ks.addr().to_string(),
            short(&ks.params.digest()),
            short(&clpkc::point_to_bytes(&ks.identities[0].1))
        );
    }
}

fn print_report(run: &str, r: &Report) {
    let cache = match r.cache {
        CacheUse::Hit => "cache hit",
        CacheUse::Miss => "cache miss",
    };
    sayln!(
        ";; {run}{cache}: {} queries, {} bytes out, {} bytes in, {:.3} ms",
        r.queries,
        r.bytes_out,
        r.bytes_in,
        r.elapsed.as_secs_f64() * 1000.0
    );
}

/// `tp resolve`.
pub fn resolve(
    src: &Source,
    name: &str,
    keys_only: bool,
    repeat: u32,
    json_out: bool,
) -> Result<()> {
    let cfg = config(src)?;
    let keys_only = keys_only || cfg.dns.is_empty();
    let r = BlockingResolver::new(cfg)?;
    let mut runs = Vec::new();
    for _ in 0..repeat.max(1) {
        if keys_only {
            let (res, report) = r.keys(name);
            let set = res?;
            let pairs: Vec<(IpAddr, VerifiedKey)> =
                set.keys.iter().map(|k| (k.record.ip, k.clone())).collect();
            runs.push((set, pairs, report));
        } else {
            let (res, report) = r.resolve(name);
            let res = res?;
            runs.push((res.keys.clone(), res.pairs.clone(), report));
        }
    }
    let Some((set, pairs, _)) = runs.first() else {
        bail!("nothing resolved");
    };
    if json_out {
        let v = json!({
            "name": set.name,
            "pairs": pairs.iter().map(|(ip, k)| key_json(*ip, k)).collect::<Vec<_>>(),
            "chain": chain_json(&set.chain),
            "anchors": set.anchors,
            "dns": !keys_only,
            "runs": runs.iter().map(|(_, _, r)| report_json(r)).collect::<Vec<_>>(),
        });
        sayln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print_set(set);
    sayln!(
        ";; {} {}",
        set.name,
        if keys_only {
            "keys (no DNS lookup):"
        } else {
            "(IP, key) pairs, IPs from DNS:"
        }
    );
    for (ip, k) in pairs {
        sayln!(
            "{}\t{ip}\t{}\t({}, TTL {}, valid until {})",
            set.name,
            q_hex(k),
            if k.record.key_server.is_some() {
                "key server"
            } else {
                "entity"
            },
            k.ttl,
            time::format(k.record.not_after)
        );
    }
    for (i, (_, _, report)) in runs.iter().enumerate() {
        let run = if runs.len() > 1 {
            format!("run {}: ", i + 1)
        } else {
            String::new()
        };
        print_report(&run, report);
    }
    Ok(())
}

fn print_set(set: &KeySet) {
    print_chain(&set.chain);
    sayln!(";; trust anchors agreeing: {}", set.anchors.join(", "));
}

/// `tp dig --anchors`: the name's verified keys, decoded.
pub fn dig_anchors(anchors: &std::path::Path, name: &str, ip: Option<IpAddr>) -> Result<()> {
    let cfg = config(&Source {
        config: None,
        anchors: vec![anchors.to_path_buf()],
        dns: Vec::new(),
        quorum: None,
    })?;
    let r = BlockingResolver::new(cfg)?;
    let (set, _) = r.keys(name);
    let set = set?;
    print_chain(&set.chain);
    let keys: Vec<_> = set
        .keys
        .iter()
        .filter(|k| ip.is_none_or(|ip| k.record.ip == ip))
        .collect();
    if keys.is_empty() {
        bail!(
            "{name}: no verified key{}",
            ip.map(|i| format!(" for {i}")).unwrap_or_default()
        );
    }
    for k in keys {
        super::print_record(&k.name, k.ttl, &k.record);
        sayln!(
            ";;   signature: valid (key server {})\n;;   public key Q: {}",
            set.chain.last().map(|k| k.name.as_str()).unwrap_or("?"),
            q_hex(k)
        );
    }
    Ok(())
}
