//! A cache-free key client: one query to one key server (UDP, TCP on truncation), and the
//! verified walk from a trust anchor down the key-server chain to a name's records.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};

use crate::clpkc::{KgcParams, PublicKey};
use crate::record::KeyRecord;
use crate::zone::TPKEY_TYPE;
use crate::zonefile::{self, Entry};

/// A client-side failure, saying which server and what.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Network or protocol failure talking to a server.
    #[error("{server}: {reason}")]
    Net {
        /// The server.
        server: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// A record did not verify; the chain is broken here.
    #[error("{owner} from {server}: {reason}")]
    Verify {
        /// The server that sent it.
        server: SocketAddr,
        /// The record's owner.
        owner: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The name has no key.
    #[error("{name}: {reason}")]
    NotFound {
        /// The name.
        name: String,
        /// NXDOMAIN, NODATA, no record for the IP…
        reason: String,
    },
    /// Bad trust anchors.
    #[error("trust anchors: {0}")]
    Anchors(String),
}

/// Send one query and return the response (TCP when UDP comes back truncated).
pub fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    tcp: bool,
    timeout: Duration,
) -> Result<Message, ClientError> {
    let net = |reason: String| ClientError::Net { server, reason };
    let mut msg = Message::query();
    msg.metadata.id = rand_core::RngCore::next_u32(&mut rand_core::OsRng) as u16;
    msg.metadata.op_code = OpCode::Query;
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(name.clone(), rtype));
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(1232);
    msg.edns = Some(edns);
    let bytes = msg.to_bytes().map_err(|e| net(format!("encode: {e}")))?;
    let resp = if tcp {
        query_tcp(server, &bytes, timeout).map_err(net)?
    } else {
        let local: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().unwrap_or(server)
        } else {
            "[::]:0".parse().unwrap_or(server)
        };
        let sock = UdpSocket::bind(local).map_err(|e| net(e.to_string()))?;
        sock.set_read_timeout(Some(timeout))
            .map_err(|e| net(e.to_string()))?;
        sock.connect(server).map_err(|e| net(e.to_string()))?;
        sock.send(&bytes).map_err(|e| net(e.to_string()))?;
        let mut buf = vec![0u8; 65_535];
        let n = sock
            .recv(&mut buf)
            .map_err(|e| net(format!("no answer over UDP: {e}")))?;
        buf.truncate(n);
        buf
    };
    let reply = Message::from_bytes(&resp).map_err(|e| net(format!("bad response: {e}")))?;
    if reply.metadata.id != msg.metadata.id || reply.metadata.message_type != MessageType::Response
    {
        return Err(net("response does not match the query".into()));
    }
    if reply.metadata.truncation && !tcp {
        return query(server, name, rtype, true, timeout);
    }
    Ok(reply)
}

fn query_tcp(server: SocketAddr, bytes: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect_timeout(&server, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let len = u16::try_from(bytes.len()).map_err(|_| "query too long".to_string())?;
    s.write_all(&len.to_be_bytes()).map_err(|e| e.to_string())?;
    s.write_all(bytes).map_err(|e| e.to_string())?;
    let mut lb = [0u8; 2];
    s.read_exact(&mut lb).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(lb))];
    s.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

/// TPKEY records in a section, decoded: (owner, ttl, record or the decode error).
pub fn key_records(
    records: &[Record],
) -> Vec<(String, u32, Result<KeyRecord, crate::record::RecordError>)> {
    records
        .iter()
        .filter(|r| r.record_type() == TPKEY_TYPE)
        .filter_map(|r| match &r.data {
            RData::Unknown { rdata, .. } => Some((
                r.name.to_ascii().to_ascii_lowercase(),
                r.ttl,
                KeyRecord::from_wire(&rdata.anything),
            )),
            _ => None,
        })
        .collect()
}

/// A verified key server: where it is, its params and its own key.
#[derive(Clone, Debug)]
pub struct KeyServerRef {
    /// Its name (zone apex).
    pub name: String,
    /// Where it answers.
    pub addr: SocketAddr,
    /// Its KGC params.
    pub params: KgcParams,
    /// Its own public key (signs its answers).
    pub q: PublicKey,
}

/// One verified key of a name.
#[derive(Clone, Debug)]
pub struct VerifiedKey {
    /// Owner name.
    pub name: String,
    /// TTL the server gave.
    pub ttl: u32,
    /// The record.
    pub record: KeyRecord,
    /// The entity's public key `Q`.
    pub q: PublicKey,
}

/// The outcome of a walk: the chain of key servers followed and the name's keys.
#[derive(Clone, Debug)]
pub struct Resolution {
    /// Key servers from the anchor down to the name's own.
    pub chain: Vec<KeyServerRef>,
    /// Verified keys of the name (one per IP).
    pub keys: Vec<VerifiedKey>,
}

/// Read a trust-anchor file: self-issued key-server TPKEY records in key-zone syntax.
/// Each is checked (issued under its own params, self-signed, valid).
pub fn read_anchors(path: &Path, now: u64) -> Result<Vec<KeyServerRef>, ClientError> {
    let parsed = zonefile::read(path, &Name::root())
        .and_then(zonefile::ParsedZone::strict)
        .map_err(|e| ClientError::Anchors(e.to_string()))?;
    let mut out = Vec::new();
    for line in parsed.lines {
        let Entry::Key(rec) = line.entry else {
            continue;
        };
        let owner = line.owner.to_ascii().to_ascii_lowercase();
        let bad =
            |r: String| ClientError::Anchors(format!("{}:{}: {r}", path.display(), line.line));
        let params = rec
            .key_server_params(&owner)
            .ok_or_else(|| bad("not a key-server (KS) record".into()))?;
        let q = rec
            .public_key(&owner, &params)
            .map_err(|e| bad(e.to_string()))?;
        rec.verify(&owner, &params, &q, now)
            .map_err(|e| bad(e.to_string()))?;
        let port = rec.key_server.as_ref().map(|k| k.port).unwrap_or(53);
        out.push(KeyServerRef {
            name: owner,
            addr: SocketAddr::new(rec.ip, port),
            params,
            q,
        });
    }
    if out.is_empty() {
        return Err(ClientError::Anchors(format!(
            "{}: no key-server records",
            path.display()
        )));
    }
    Ok(out)
}

/// Walk from the closest anchor down to `name` and return its verified keys.
pub fn resolve(
    anchors: &[KeyServerRef],
    name: &str,
    timeout: Duration,
    now: u64,
) -> Result<Resolution, ClientError> {
    let name = crate::clpkc::canonical_name(name).map_err(|e| ClientError::NotFound {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    let qname = Name::from_ascii(&name).map_err(|e| ClientError::NotFound {
        name: name.clone(),
        reason: e.to_string(),
    })?;
    let start = anchors
        .iter()
        .filter(|a| crate::clpkc::is_within(&name, &a.name))
        .max_by_key(|a| a.name.len())
        .ok_or_else(|| ClientError::NotFound {
            name: name.clone(),
            reason: "no trust anchor covers this name".into(),
        })?;
    let mut chain = vec![start.clone()];
    for _ in 0..16 {
        let Some(cur) = chain.last().cloned() else {
            break;
        };
        let reply = query(cur.addr, &qname, TPKEY_TYPE, false, timeout)?;
        let verify = |owner: &str, rec: &KeyRecord| {
            rec.verify(owner, &cur.params, &cur.q, now)
                .map_err(|e| ClientError::Verify {
                    server: cur.addr,
                    owner: owner.to_string(),
                    reason: e.to_string(),
                })
        };
        match reply.metadata.response_code {
            ResponseCode::NoError => {}
            ResponseCode::NXDomain => {
                return Err(ClientError::NotFound {
                    name,
                    reason: format!("NXDOMAIN from key server {} ({})", cur.name, cur.addr),
                });
            }
            rc => {
                return Err(ClientError::Net {
                    server: cur.addr,
                    reason: format!("answered {rc}"),
                });
            }
        }
        let answers = key_records(&reply.answers);
        if !answers.is_empty() {
            let mut keys = Vec::new();
            for (owner, ttl, rec) in answers {
                let rec = rec.map_err(|e| ClientError::Verify {
                    server: cur.addr,
                    owner: owner.clone(),
                    reason: e.to_string(),
                })?;
                if owner != name {
                    continue;
                }
                let q = verify(&owner, &rec)?;
                keys.push(VerifiedKey {
                    name: owner,
                    ttl,
                    record: rec,
                    q,
                });
            }
            return Ok(Resolution { chain, keys });
        }
        let referral = key_records(&reply.authorities);
        let mut next = None;
        for (owner, _, rec) in referral {
            let rec = rec.map_err(|e| ClientError::Verify {
                server: cur.addr,
                owner: owner.clone(),
                reason: e.to_string(),
            })?;
            // A referral must lead strictly downwards, towards the name.
            if owner == cur.name
                || !crate::clpkc::is_within(&owner, &cur.name)
                || !crate::clpkc::is_within(&name, &owner)
            {
                return Err(ClientError::Verify {
                    server: cur.addr,
                    owner,
                    reason: "referral does not lead towards the name".into(),
                });
            }
            let q = verify(&owner, &rec)?;
            let (Some(params), Some(ks)) = (rec.key_server_params(&owner), rec.key_server.as_ref())
            else {
                continue;
            };
            next.get_or_insert(KeyServerRef {
                name: owner,
                addr: SocketAddr::new(rec.ip, ks.port),
                params,
                q,
            });
        }
        match next {
            Some(child) => chain.push(child),
            None => {
                return Err(ClientError::NotFound {
                    name,
                    reason: format!("no key (NODATA) at key server {} ({})", cur.name, cur.addr),
                });
            }
        }
    }
    Err(ClientError::NotFound {
        name,
        reason: "key-server chain longer than 16 links".into(),
    })
}

/// The key for a given IP among a resolution's keys.
pub fn key_for_ip(res: &Resolution, ip: IpAddr) -> Option<&VerifiedKey> {
    res.keys.iter().find(|k| k.record.ip == ip)
}
