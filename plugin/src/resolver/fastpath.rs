//! The daemon's UDP fast path for cache hits: a plain query (QUERY, one question of class IN,
//! at most an OPT of version 0, nothing else) is parsed in place, looked up by its lower-cased
//! name and type, and answered by copying the response encoded when the answer was first
//! resolved, patched for the ID, RD, the question's case (0x20), the TTLs left and the EDNS
//! payload. No allocation and no message decode on a hit; anything else takes the slow path,
//! which answers and fills this cache with the bytes it sent.

use std::sync::Arc;
use std::time::Instant;

use super::cache::ExpiringCache;
use crate::wire::{self, Question};

/// Longest key: a 255-byte name, the type, the EDNS flag.
pub const KEY_MAX: usize = wire::NAME_MAX + 3;

/// Parse a plain query and write its cache key (lower-cased QNAME ‖ QTYPE ‖ EDNS flag) into
/// `key`; the key's length is returned beside the question. `None`: not a plain query.
pub fn parse<'a>(pkt: &'a [u8], key: &mut [u8; KEY_MAX]) -> Option<(Question<'a>, usize)> {
    let (q, k) = wire::parse(pkt, key)?;
    key[k..k + 2].copy_from_slice(&q.qtype.to_be_bytes());
    key[k + 2] = u8::from(q.edns.is_some());
    Some((q, k + 3))
}

/// A response ready to be sent again.
#[derive(Debug)]
pub struct WireAnswer {
    wire: Vec<u8>,
    ttl_at: Vec<usize>,
    payload_at: Option<usize>,
    qname_len: usize,
    expires: Instant,
}

impl WireAnswer {
    /// Index a response this daemon encoded: where its TTLs and its OPT payload are.
    pub fn new(wire: Vec<u8>, expires: Instant) -> Option<Self> {
        let h = wire.get(..12)?;
        let count = |i: usize| usize::from(u16::from_be_bytes([h[i], h[i + 1]]));
        if count(4) != 1 {
            return None;
        }
        let (an, ns, ar) = (count(6), count(8), count(10));
        let qend = wire::skip_name(&wire, 12)?;
        let qname_len = qend - 12;
        let mut pos = qend + 4;
        let mut ttl_at = Vec::new();
        let mut payload_at = None;
        for _ in 0..an + ns + ar {
            let name_end = wire::skip_name(&wire, pos)?;
            let fixed = wire.get(name_end..name_end + 10)?;
            let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
            if rtype == 41 {
                payload_at = Some(name_end + 2);
            } else {
                ttl_at.push(name_end + 4);
            }
            let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
            pos = name_end + 10 + rdlen;
        }
        if pos != wire.len() {
            return None;
        }
        Some(Self {
            wire,
            ttl_at,
            payload_at,
            qname_len,
            expires,
        })
    }

    /// Write the answer to `q` into `out`; `None` when it has expired or does not fit the
    /// client's UDP size (the slow path then answers, with TC if need be).
    pub fn write(&self, q: &Question<'_>, now: Instant, out: &mut [u8]) -> Option<usize> {
        let left = self.expires.checked_duration_since(now)?.as_secs();
        if left == 0 || q.qname.len() != self.qname_len {
            return None;
        }
        let n = self.wire.len();
        if n > q.udp_limit() || n > out.len() {
            return None;
        }
        let out = &mut out[..n];
        out.copy_from_slice(&self.wire);
        wire::patch_from_query(out, q)?;
        let ttl = u32::try_from(left).unwrap_or(u32::MAX).to_be_bytes();
        for &at in &self.ttl_at {
            // Never more than the TTL first given.
            let was = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
            if u32::from_be_bytes(ttl) < was {
                out[at..at + 4].copy_from_slice(&ttl);
            }
        }
        if let (Some(at), Some(e)) = (self.payload_at, q.edns) {
            out[at..at + 2].copy_from_slice(&e.payload.max(wire::UDP_MIN as u16).to_be_bytes());
        }
        Some(n)
    }
}

/// Responses by key, bounded like the resolver's caches.
pub type WireCache = ExpiringCache<Box<[u8]>, Arc<WireAnswer>>;

/// Answer `pkt` from `cache` into `out`, if it is a plain query with a live entry.
pub fn answer(cache: &WireCache, pkt: &[u8], now: Instant, out: &mut [u8]) -> Option<usize> {
    let mut key = [0u8; KEY_MAX];
    let (q, klen) = parse(pkt, &mut key)?;
    let entry = cache.get(&key[..klen], now)?;
    entry.write(&q, now, out)
}

/// The cache key of a plain query (for the slow path to store under).
pub fn key_of(pkt: &[u8]) -> Option<Box<[u8]>> {
    let mut key = [0u8; KEY_MAX];
    let (_, klen) = parse(pkt, &mut key)?;
    Some(key[..klen].into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode};
    use hickory_proto::rr::{RData, Record, RecordType};
    use std::time::Duration;

    use crate::wire::test_query as query;

    fn response(q: &[u8], ttl: u32) -> Vec<u8> {
        let req = Message::from_vec(q).unwrap();
        let mut m = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_available = true;
        m.queries = req.queries.clone();
        let name = req.queries[0].name().clone();
        m.answers.push(Record::from_rdata(
            name,
            ttl,
            RData::A("192.0.2.1".parse().unwrap()),
        ));
        m.edns = req.edns.clone();
        m.to_vec().unwrap()
    }

    #[test]
    fn the_key_is_the_lower_cased_name_the_type_and_the_edns_flag() {
        let mut key = [0u8; KEY_MAX];
        let q = query("WwW.Example.COM.", RecordType::A, Some(1232));
        let (parsed, k) = parse(&q, &mut key).unwrap();
        assert_eq!(parsed.edns.map(|e| e.payload), Some(1232));
        assert_eq!(&key[..k], b"\x03www\x07example\x03com\x00\x00\x01\x01");
        let plain = query("www.example.com.", RecordType::A, None);
        assert_eq!(key_of(&plain).unwrap().last(), Some(&0));
    }

    #[test]
    fn a_hit_echoes_id_case_rd_and_counts_the_ttl_down() {
        let cache = WireCache::new(16);
        let stored = query("www.example.com.", RecordType::A, Some(1232));
        let now = Instant::now();
        let entry =
            WireAnswer::new(response(&stored, 300), now + Duration::from_secs(100)).unwrap();
        cache.insert(
            key_of(&stored).unwrap(),
            Arc::new(entry),
            now + Duration::from_secs(100),
        );
        let mut q = query("WWW.example.com.", RecordType::A, Some(4096));
        q[0] = 0xab;
        q[2] &= !1;
        let mut out = [0u8; 1500];
        let n = answer(&cache, &q, now, &mut out).unwrap();
        let m = Message::from_vec(&out[..n]).unwrap();
        assert_eq!(m.metadata.id, 0xab34);
        assert!(!m.metadata.recursion_desired);
        assert_eq!(m.queries[0].name().to_ascii(), "WWW.example.com.");
        assert!(m.answers[0].ttl <= 100 && m.answers[0].ttl >= 99);
        assert_eq!(m.edns.as_ref().unwrap().max_payload(), 4096);
        // Without EDNS it is another key; expired entries are not served.
        let plain = query("www.example.com.", RecordType::A, None);
        assert!(answer(&cache, &plain, now, &mut out).is_none());
        assert!(answer(&cache, &q, now + Duration::from_secs(101), &mut out).is_none());
    }
}
