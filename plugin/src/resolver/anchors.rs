//! Trust anchors: self-issued key-server records of the key servers a resolver starts from
//! (roots, and islands: any key server trusted as the local root of its subtree).

use std::net::SocketAddr;
use std::path::Path;

use hickory_proto::rr::Name;

use crate::clpkc::{KgcParams, PublicKey};
use crate::record::KeyRecord;
use crate::zonefile::{self, Entry};

/// A verified key server: who it is (name, identity address, params, signing keys) and where
/// its queries may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyServer {
    /// Its name (the apex of its key zone), canonical.
    pub name: String,
    /// Its identity addresses (one per KS record the parent vouched for), and its own key `Q`
    /// for each: answers must be signed under one of them.
    pub identities: Vec<(SocketAddr, PublicKey)>,
    /// Its KGC params (the issuer of its children).
    pub params: KgcParams,
    /// Addresses to send queries to: the identity addresses first, then secondaries.
    pub servers: Vec<SocketAddr>,
}

impl KeyServer {
    /// The first identity address (the one printed in chains).
    pub fn addr(&self) -> SocketAddr {
        self.identities[0].0
    }

    /// `name@addr`, how errors and logs name the server.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.addr())
    }
}

/// A trust anchor: a key server taken on trust, with the record it was read from.
#[derive(Clone, Debug)]
pub struct Anchor {
    /// The key server.
    pub server: KeyServer,
    /// Its self-issued record (roots); none for an island given by its identity alone.
    pub record: Option<KeyRecord>,
    /// TTL given in the anchor file.
    pub ttl: u32,
    /// Where it was read (`file:line`), to name it in errors.
    pub source: String,
}

/// Why anchors could not be read.
#[derive(Debug, thiserror::Error)]
#[error("trust anchors: {0}")]
pub struct AnchorError(pub String);

/// Read a trust-anchor file: self-issued key-server TPKEY records in key-zone syntax. Each is
/// checked: a KS record, issued under its own params (name + its own P_pub), self-signed under
/// the key derived from them, inside its validity window at `now`.
pub fn read(path: &Path, now: u64) -> Result<Vec<Anchor>, AnchorError> {
    let parsed = zonefile::read(path, &Name::root())
        .and_then(zonefile::ParsedZone::strict)
        .map_err(|e| AnchorError(e.to_string()))?;
    let mut out = Vec::new();
    for line in parsed.lines {
        let Entry::Key(rec) = line.entry else {
            continue;
        };
        let owner = line.owner.to_ascii().to_ascii_lowercase();
        let source = format!("{}:{}", path.display(), line.line);
        let bad = |r: String| AnchorError(format!("{source}: {r}"));
        let params = rec
            .key_server_params(&owner)
            .ok_or_else(|| bad("not a key-server (KS) record".into()))?;
        let q = rec
            .public_key(&owner, &params)
            .map_err(|e| bad(e.to_string()))?;
        rec.verify(&owner, &params, &q, now)
            .map_err(|e| bad(e.to_string()))?;
        let port = rec.key_server.as_ref().map(|k| k.port).unwrap_or(53);
        let addr = SocketAddr::new(rec.ip, port);
        out.push(Anchor {
            server: KeyServer {
                name: owner,
                identities: vec![(addr, q)],
                params,
                servers: vec![addr],
            },
            record: Some(rec),
            ttl: line.ttl,
            source,
        });
    }
    if out.is_empty() {
        return Err(AnchorError(format!(
            "{}: no key-server records",
            path.display()
        )));
    }
    Ok(out)
}

/// Read several anchor files into one list.
pub fn read_all(paths: &[impl AsRef<Path>], now: u64) -> Result<Vec<Anchor>, AnchorError> {
    let mut all = Vec::new();
    for p in paths {
        all.extend(read(p.as_ref(), now)?);
    }
    if all.is_empty() {
        return Err(AnchorError("no anchor file given".into()));
    }
    Ok(all)
}

/// An island: a key server trusted as the local root of its subtree, given by its identity
/// (name, address, params, own public key) as `tp island` prints it.
pub fn island(
    name: &str,
    address: SocketAddr,
    params_hex: &str,
    key_hex: &str,
    source: String,
) -> Result<Anchor, AnchorError> {
    let bad = |r: String| AnchorError(format!("{source}: {r}"));
    let name = crate::clpkc::canonical_name(name).map_err(|e| bad(e.to_string()))?;
    let params = hex::decode(params_hex.trim())
        .map_err(|_| bad("params is not hexadecimal".into()))
        .and_then(|b| KgcParams::decode(&b).map_err(|e| bad(format!("params: {e}"))))?;
    if params.name != name {
        return Err(bad(format!(
            "params are those of {}, not of {name}",
            params.name
        )));
    }
    let q = hex::decode(key_hex.trim())
        .map_err(|_| bad("key is not hexadecimal".into()))
        .and_then(|b| {
            crate::clpkc::point_from_bytes(&b)
                .map_err(|_| bad("key is not a compressed P-256 point".into()))
        })?;
    Ok(Anchor {
        server: KeyServer {
            name,
            identities: vec![(address, q)],
            params,
            servers: vec![address],
        },
        record: None,
        ttl: 0,
        source,
    })
}
