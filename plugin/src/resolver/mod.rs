//! The key resolver and its key-cache stage.
//!
//! Given a name, it returns the verified public keys bound to that name, and with DNS the
//! (IP, key) pairs for the addresses DNS gives. The walk starts at the deepest trust anchor
//! covering the name and goes down one label at a time, asking each key server for the next
//! child's own TPKEY record, so plain secondaries serve it as tpkd does. Every link is checked
//! (scope, issuer params, signature, validity). Verified key servers, records and negative
//! answers are cached; a warm resolution sends no packet. See `docs/resolver.md`.

pub mod anchors;
pub mod blocking;
pub mod cache;
pub mod fastpath;
pub mod serve;
pub mod settings;
pub mod transport;
pub mod walk;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_proto::rr::{Name, RData};
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig as DnsConfig, ResolverOpts,
};
use tokio::sync::OnceCell;

use crate::clpkc::{self, PublicKey};
use crate::record::KeyRecord;
use crate::zone::TPKEY_TYPE;

pub use anchors::{Anchor, KeyServer};
use cache::ExpiringCache;
use transport::{Transport, TransportStats};
use walk::Step;

/// Which check a record or reply failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// RDATA did not decode.
    Decode,
    /// The record is not issued under the answering server's params.
    Issuer,
    /// The signature does not verify under the answering server's key.
    Signature,
    /// Outside its validity window (beyond the clock-skew allowance).
    Validity,
    /// The server answered for, or referred to, a name outside its zone or not on the way.
    Scope,
    /// The reply is not shaped like an answer or a referral.
    Shape,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Check::Decode => "decode",
            Check::Issuer => "issuer",
            Check::Signature => "signature",
            Check::Validity => "validity",
            Check::Scope => "scope",
            Check::Shape => "shape",
        })
    }
}

/// Why a resolution failed. Each names the server, the owner and the check where one applies.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name is not a usable DNS name.
    #[error("{name}: {reason}")]
    BadName {
        /// As given.
        name: String,
        /// Why.
        reason: String,
    },
    /// No trust anchor covers the name.
    #[error("{name}: no trust anchor covers this name")]
    NoAnchor {
        /// The name.
        name: String,
    },
    /// A record or reply failed a check.
    #[error("{owner} from {server}: {check} check failed: {detail}")]
    Verify {
        /// `name@addr (answering addr)` of the key server.
        server: String,
        /// Owner of the record.
        owner: String,
        /// The check.
        check: Check,
        /// What exactly.
        detail: String,
    },
    /// No address of a key server answered.
    #[error("key server {server} did not answer for {name}: {detail}")]
    Unreachable {
        /// The key server.
        server: String,
        /// The name asked.
        name: String,
        /// Each address tried and what happened.
        detail: String,
    },
    /// A key server answered with an error code.
    #[error("key server {server} answered {rcode} for {name}")]
    Rcode {
        /// The key server.
        server: String,
        /// The name asked.
        name: String,
        /// The RCODE.
        rcode: String,
    },
    /// The name has no key: NXDOMAIN or NODATA from its key server.
    #[error("{name}: no key ({kind} from key server {server})")]
    NotFound {
        /// The name.
        name: String,
        /// "NXDOMAIN" or "NODATA".
        kind: &'static str,
        /// The key server that said so.
        server: String,
    },
    /// An address without a verified key: from DNS, a poisoned or stale DNS answer.
    #[error(
        "{name}: {} {ip}, which has no verified key (keys are published for {published})",
        if *from_dns { "DNS gives" } else { "asked for" }
    )]
    NoKeyForIp {
        /// The name.
        name: String,
        /// The address.
        ip: IpAddr,
        /// Addresses that have keys.
        published: String,
        /// Whether the address came from DNS (else the caller asked for it).
        from_dns: bool,
    },
    /// DNS has no address for the name.
    #[error("{name}: DNS has no address ({})", if *nxdomain { "NXDOMAIN" } else { "no A or AAAA records" })]
    NoAddress {
        /// The name.
        name: String,
        /// NXDOMAIN (else NODATA).
        nxdomain: bool,
    },
    /// The DNS lookup failed.
    #[error("{name}: DNS lookup failed: {reason}")]
    Dns {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Roots covering the name disagree, beyond what the policy allows.
    #[error("{name}: trust anchors disagree: {detail}")]
    Disagree {
        /// The name.
        name: String,
        /// What each root said.
        detail: String,
    },
    /// The resolution took longer than its bound.
    #[error("{name}: resolution took longer than {ms} ms")]
    Timeout {
        /// The name.
        name: String,
        /// The bound.
        ms: u128,
    },
}

impl ResolveError {
    /// Whether this is a verification failure (as opposed to absence or unreachability).
    pub fn is_bogus(&self) -> bool {
        matches!(
            self,
            ResolveError::Verify { .. } | ResolveError::Disagree { .. }
        )
    }
}

/// One verified key of a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedKey {
    /// Owner name, canonical.
    pub name: String,
    /// TTL the server gave.
    pub ttl: u32,
    /// The record.
    pub record: KeyRecord,
    /// The entity's public key `Q`.
    pub q: PublicKey,
}

/// Cross-verification policy when several trust anchors cover a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Every anchor must answer, and all the same.
    All,
    /// At least this many anchors must give the same answer.
    Quorum(usize),
}

/// Everything a resolver needs.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// Trust anchors (roots and islands).
    pub anchors: Vec<Anchor>,
    /// Cross-verification policy.
    pub policy: Policy,
    /// DNS servers for A/AAAA lookups.
    pub dns: Vec<SocketAddr>,
    /// Extra addresses (secondaries) per key zone, queried after the key server's own.
    pub secondaries: HashMap<String, Vec<SocketAddr>>,
    /// Time for one query to one address (UDP retransmissions included).
    pub query_timeout: Duration,
    /// UDP sends per query and address.
    pub attempts: u8,
    /// Time for a whole resolution.
    pub resolution_timeout: Duration,
    /// Allowance for clock skew on validity windows, seconds.
    pub clock_skew: u64,
    /// Entries per cache (names, links, resolutions).
    pub cache_size: usize,
    /// Longest a positive entry is kept, seconds.
    pub max_ttl: u32,
    /// Longest a negative answer is kept, seconds (RFC 2308 TTLs are capped here).
    pub negative_ttl: u32,
}

impl ResolverConfig {
    /// A config with these anchors and DNS servers and the documented defaults.
    pub fn new(anchors: Vec<Anchor>, dns: Vec<SocketAddr>) -> Self {
        Self {
            anchors,
            policy: Policy::All,
            dns,
            secondaries: HashMap::new(),
            query_timeout: Duration::from_millis(1500),
            attempts: 2,
            resolution_timeout: Duration::from_secs(5),
            clock_skew: 300,
            cache_size: 100_000,
            max_ttl: 86_400,
            negative_ttl: 60,
        }
    }
}

/// The verified keys of a name, with the chain that vouched for them.
#[derive(Debug)]
pub struct KeySet {
    /// The name, canonical.
    pub name: String,
    /// Its keys, one per IP.
    pub keys: Vec<VerifiedKey>,
    /// Key servers from the anchor down to the name's own (of the first agreeing anchor).
    pub chain: Vec<Arc<KeyServer>>,
    /// Anchors (`file:line`) whose walks gave this answer.
    pub anchors: Vec<String>,
    expires: Instant,
}

/// A name's (IP, key) pairs: the addresses DNS gave, each with its verified key.
#[derive(Debug)]
pub struct Resolved {
    /// The keys and chain.
    pub keys: Arc<KeySet>,
    /// One pair per address DNS gave.
    pub pairs: Vec<(IpAddr, VerifiedKey)>,
    expires: Instant,
}

/// How a resolution used the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// Answered from the cache: no packet.
    Hit,
    /// Walked (links may have come from the cache).
    Miss,
}

/// What one call cost.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    /// Cache hit or miss.
    pub cache: CacheUse,
    /// Queries to key servers sent by this call.
    pub queries: u64,
    /// Bytes sent to key servers.
    pub bytes_out: u64,
    /// Bytes received from key servers.
    pub bytes_in: u64,
    /// Wall time of the call.
    pub elapsed: Duration,
}

/// Resolver-wide counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Calls answered from the cache.
    pub hits: AtomicU64,
    /// Calls that walked.
    pub misses: AtomicU64,
    /// Walks started (after coalescing).
    pub walks: AtomicU64,
}

#[derive(Clone)]
enum Link {
    // A zone cut: the child key server and the verified KS records that vouched for it.
    Server(Arc<KeyServer>, Arc<[VerifiedKey]>),
    // Not a zone cut: the name's own records (none: NODATA), the same server goes on.
    NotCut(Arc<[VerifiedKey]>),
    NxDomain(Arc<str>),
}

type KeysResult = Result<Arc<KeySet>, ResolveError>;
type ResolvedResult = Result<Arc<Resolved>, ResolveError>;

enum Found {
    Keys {
        keys: Vec<VerifiedKey>,
        chain: Vec<Arc<KeyServer>>,
    },
    Absent {
        kind: &'static str,
        server: String,
        neg_ttl: Option<u32>,
    },
}

struct State {
    anchors: Vec<Anchor>,
    // Bumped with every new set of anchors: links cached under older anchors never match.
    generation: u32,
}

/// The key resolver. Cheap to share (`Arc`); all methods take `&self`.
pub struct Resolver {
    cfg: ResolverConfig,
    state: ArcSwap<State>,
    transport: Transport,
    dns: Option<hickory_resolver::TokioResolver>,
    links: ExpiringCache<(u32, String), Link>,
    keysets: ExpiringCache<String, KeysResult>,
    resolved: ExpiringCache<String, ResolvedResult>,
    inflight_keys: DashMap<String, Arc<OnceCell<KeysResult>>>,
    inflight_resolved: DashMap<String, Arc<OnceCell<ResolvedResult>>>,
    /// Counters.
    pub stats: Stats,
}

/// A name in canonical form, borrowed when it already is.
fn canonical(name: &str) -> Result<std::borrow::Cow<'_, str>, ResolveError> {
    if clpkc::is_canonical(name) {
        return Ok(std::borrow::Cow::Borrowed(name));
    }
    clpkc::canonical_name(name)
        .map(std::borrow::Cow::Owned)
        .map_err(|e| ResolveError::BadName {
            name: name.to_string(),
            reason: e.to_string(),
        })
}

/// The names from just below `zone` down to `name`, one label at a time.
fn steps(name: &str, zone: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut n = name;
    while n != zone && n != "." {
        out.push(n.to_string());
        n = match n.find('.') {
            Some(i) if i + 1 < n.len() => &n[i + 1..],
            _ => ".",
        };
    }
    out.reverse();
    out
}

/// When verified records stop being usable: the first of their TTLs (capped at `cap`) and
/// the ends of their validity windows.
fn expires_of(now: Instant, unix_now: u64, records: &[VerifiedKey], cap: u32) -> Instant {
    let secs = records
        .iter()
        .map(|k| {
            u64::from(k.ttl.min(cap)).min(u64::from(k.record.not_after).saturating_sub(unix_now))
        })
        .min()
        .unwrap_or(u64::from(cap));
    now + Duration::from_secs(secs)
}

impl Resolver {
    /// A resolver for `cfg`. Needs a tokio runtime (the DNS client is spawned on it).
    pub fn new(cfg: ResolverConfig) -> Result<Self, ResolveError> {
        let dns = if cfg.dns.is_empty() {
            None
        } else {
            let servers = cfg
                .dns
                .iter()
                .map(|a| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = a.port();
                    let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                    ns.connections = vec![udp, tcp];
                    ns
                })
                .collect();
            let mut opts = ResolverOpts::default();
            opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            opts.timeout = cfg.query_timeout;
            opts.attempts = usize::from(cfg.attempts);
            opts.cache_size = cfg.cache_size as u64;
            opts.positive_max_ttl = Some(Duration::from_secs(u64::from(cfg.max_ttl)));
            opts.negative_max_ttl = Some(Duration::from_secs(u64::from(cfg.negative_ttl)));
            opts.ndots = 0;
            opts.recursion_desired = true;
            let r = hickory_resolver::Resolver::builder_with_config(
                DnsConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
            .with_options(opts)
            .build()
            .map_err(|e| ResolveError::Dns {
                name: "-".into(),
                reason: e.to_string(),
            })?;
            Some(r)
        };
        let n = cfg.cache_size;
        Ok(Self {
            state: ArcSwap::from_pointee(State {
                anchors: cfg.anchors.clone(),
                generation: 0,
            }),
            transport: Transport::new(cfg.query_timeout, cfg.attempts),
            dns,
            links: ExpiringCache::new(n),
            keysets: ExpiringCache::new(n),
            resolved: ExpiringCache::new(n),
            inflight_keys: DashMap::new(),
            inflight_resolved: DashMap::new(),
            stats: Stats::default(),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ResolverConfig {
        &self.cfg
    }

    /// The anchors in use.
    pub fn anchors(&self) -> Vec<Anchor> {
        self.state.load().anchors.clone()
    }

    /// Replace the trust anchors (SIGHUP); everything cached under the old ones is dropped.
    pub fn set_anchors(&self, anchors: Vec<Anchor>) {
        let generation = self.state.load().generation.wrapping_add(1);
        self.state.store(Arc::new(State {
            anchors,
            generation,
        }));
        self.links.clear();
        self.keysets.clear();
        self.resolved.clear();
    }

    /// What the transport sent and received over the resolver's life.
    pub fn transport_stats(&self) -> &TransportStats {
        &self.transport.stats
    }

    /// Entries in the caches (links, key sets, resolutions).
    pub fn cache_len(&self) -> (usize, usize, usize) {
        (self.links.len(), self.keysets.len(), self.resolved.len())
    }

    /// Forget what is cached for `name` (its keys, its DNS pairs, and the key-server link of
    /// that name): the next resolution walks again from the closest cached key server. For a
    /// key that a server no longer holds: invalidate, resolve once more, then fail loudly.
    pub fn invalidate(&self, name: &str) {
        let Ok(name) = canonical(name) else { return };
        self.keysets.remove(name.as_ref());
        self.resolved.remove(name.as_ref());
        let n = name.to_string();
        self.links.remove_if(|(_, z)| *z == n);
    }

    /// The verified keys of `name` (every IP), without DNS.
    pub async fn keys(&self, name: &str) -> (KeysResult, Report) {
        let start = Instant::now();
        let tally = TransportStats::default();
        let r = match canonical(name) {
            Err(e) => Err(e),
            Ok(n) => self.keys_canonical(&n, &tally).await,
        };
        (r, self.report(start, &tally))
    }

    /// The (IP, key) pairs of `name`: the DNS lookup and the key walk run in parallel, and
    /// every address DNS gives must have a verified key.
    pub async fn resolve(&self, name: &str) -> (Result<Arc<Resolved>, ResolveError>, Report) {
        let start = Instant::now();
        let tally = TransportStats::default();
        let r = match canonical(name) {
            Err(e) => Err(e),
            Ok(n) => self.resolve_canonical(&n, &tally).await,
        };
        (r, self.report(start, &tally))
    }

    /// The verified key of `name` at `ip` (the application already has the address).
    pub async fn key_for(&self, name: &str, ip: IpAddr) -> Result<VerifiedKey, ResolveError> {
        let set = self.keys(name).await.0?;
        set.keys
            .iter()
            .find(|k| k.record.ip == ip)
            .cloned()
            .ok_or_else(|| ResolveError::NoKeyForIp {
                name: set.name.clone(),
                ip,
                published: published(&set.keys),
                from_dns: false,
            })
    }

    /// Addresses of `name` from the configured DNS servers (cached by the DNS client).
    pub async fn addresses(&self, name: &str) -> Result<(Vec<IpAddr>, Instant), ResolveError> {
        let n = canonical(name)?;
        self.dns_lookup(&n).await
    }

    fn report(&self, start: Instant, tally: &TransportStats) -> Report {
        let queries = tally.queries.load(Ordering::Relaxed);
        let cache = if queries == 0 {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            CacheUse::Hit
        } else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            CacheUse::Miss
        };
        Report {
            cache,
            queries,
            bytes_out: tally.bytes_out.load(Ordering::Relaxed),
            bytes_in: tally.bytes_in.load(Ordering::Relaxed),
            elapsed: start.elapsed(),
        }
    }

    async fn dns_lookup(&self, name: &str) -> Result<(Vec<IpAddr>, Instant), ResolveError> {
        let dns = self.dns.as_ref().ok_or_else(|| ResolveError::Dns {
            name: name.to_string(),
            reason: "no DNS server configured".into(),
        })?;
        let lookup = dns.lookup_ip(name).await.map_err(|e| {
            if e.is_no_records_found() {
                ResolveError::NoAddress {
                    name: name.to_string(),
                    nxdomain: e.is_nx_domain(),
                }
            } else {
                ResolveError::Dns {
                    name: name.to_string(),
                    reason: e.to_string(),
                }
            }
        })?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(ResolveError::NoAddress {
                name: name.to_string(),
                nxdomain: false,
            });
        }
        Ok((ips, lookup.valid_until()))
    }

    async fn resolve_canonical(
        &self,
        name: &str,
        tally: &TransportStats,
    ) -> Result<Arc<Resolved>, ResolveError> {
        let now = Instant::now();
        if let Some(hit) = self.resolved.get(name, now) {
            return hit;
        }
        let cell = self
            .inflight_resolved
            .entry(name.to_string())
            .or_default()
            .clone();
        let r = cell
            .get_or_init(|| async {
                // Another call may have finished while this one waited for the cell.
                if let Some(hit) = self.resolved.get(name, Instant::now()) {
                    return hit;
                }
                let r = self.resolve_walk(name, tally).await;
                let expires = match &r {
                    Ok(res) => res.expires,
                    Err(_) => Instant::now(),
                };
                if expires > Instant::now() {
                    self.resolved.insert(name.to_string(), r.clone(), expires);
                }
                r
            })
            .await
            .clone();
        self.inflight_resolved
            .remove_if(name, |_, c| Arc::ptr_eq(c, &cell));
        r
    }

    async fn resolve_walk(
        &self,
        name: &str,
        tally: &TransportStats,
    ) -> Result<Arc<Resolved>, ResolveError> {
        // DNS and the key walk at once (dissertation §2.7).
        let (ips, keys) = tokio::join!(self.dns_lookup(name), self.keys_canonical(name, tally));
        let keys = keys?;
        let (ips, dns_until) = ips?;
        let mut pairs = Vec::with_capacity(ips.len());
        for ip in ips {
            let k = keys
                .keys
                .iter()
                .find(|k| k.record.ip == ip)
                .ok_or_else(|| ResolveError::NoKeyForIp {
                    name: name.to_string(),
                    ip,
                    published: published(&keys.keys),
                    from_dns: true,
                })?;
            pairs.push((ip, k.clone()));
        }
        let expires = keys.expires.min(dns_until);
        Ok(Arc::new(Resolved {
            keys,
            pairs,
            expires,
        }))
    }

    async fn keys_canonical(&self, name: &str, tally: &TransportStats) -> KeysResult {
        let now = Instant::now();
        if let Some(hit) = self.keysets.get(name, now) {
            return hit;
        }
        let cell = self
            .inflight_keys
            .entry(name.to_string())
            .or_default()
            .clone();
        let r = cell
            .get_or_init(|| async {
                if let Some(hit) = self.keysets.get(name, Instant::now()) {
                    return hit;
                }
                self.stats.walks.fetch_add(1, Ordering::Relaxed);
                let bound = self.cfg.resolution_timeout;
                match tokio::time::timeout(bound, self.cross_verified(name, tally)).await {
                    Ok(r) => r,
                    Err(_) => Err(ResolveError::Timeout {
                        name: name.to_string(),
                        ms: bound.as_millis(),
                    }),
                }
            })
            .await
            .clone();
        self.inflight_keys
            .remove_if(name, |_, c| Arc::ptr_eq(c, &cell));
        r
    }

    // Walk from every anchor of the deepest anchored zone covering the name; apply the policy.
    async fn cross_verified(&self, name: &str, tally: &TransportStats) -> KeysResult {
        let state = self.state.load_full();
        let deepest = state
            .anchors
            .iter()
            .filter(|a| clpkc::is_within(name, &a.server.name))
            .map(|a| a.server.name.len())
            .max()
            .ok_or_else(|| ResolveError::NoAnchor {
                name: name.to_string(),
            })?;
        let roots: Vec<(u32, &Anchor)> = state
            .anchors
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                a.server.name.len() == deepest && clpkc::is_within(name, &a.server.name)
            })
            .map(|(i, a)| ((state.generation << 16) | (i as u32 & 0xffff), a))
            .collect();
        let walks = futures_util::future::join_all(
            roots.iter().map(|(i, a)| self.walk(*i, a, name, tally)),
        )
        .await;
        let unix_now = crate::time::now();
        let now = Instant::now();
        // Group identical outcomes: keys by (IP, Q); absence by its kind.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, w) in walks.iter().enumerate() {
            let sig = match w {
                Ok(Found::Keys { keys, .. }) => {
                    let mut v: Vec<String> = keys
                        .iter()
                        .map(|k| {
                            format!(
                                "{} {}",
                                k.record.ip,
                                hex::encode(clpkc::point_to_bytes(&k.q))
                            )
                        })
                        .collect();
                    v.sort();
                    v.join(", ")
                }
                Ok(Found::Absent { kind, .. }) => kind.to_string(),
                Err(_) => continue,
            };
            match groups.iter_mut().find(|(s, _)| *s == sig) {
                Some((_, g)) => g.push(i),
                None => groups.push((sig, vec![i])),
            }
        }
        groups.sort_by_key(|(_, g)| std::cmp::Reverse(g.len()));
        // One anchor is one walk; across several, the policy decides. An answer is taken only
        // if it alone meets the quorum (two answers that both do are a disagreement).
        let needed = match self.cfg.policy {
            _ if roots.len() == 1 => 1,
            Policy::All => roots.len(),
            Policy::Quorum(n) => n.max(1),
        };
        let meeting = groups.iter().filter(|(_, g)| g.len() >= needed).count();
        let agreed = groups.first().filter(|_| meeting == 1);
        let Some((_, members)) = agreed else {
            if roots.len() == 1
                && let Some(Err(e)) = walks.first()
            {
                return Err(e.clone());
            }
            let detail = roots
                .iter()
                .zip(&walks)
                .map(|((_, a), w)| {
                    let said = match w {
                        Ok(Found::Keys { keys, .. }) => keys
                            .iter()
                            .map(|k| {
                                format!(
                                    "{} Q={}",
                                    k.record.ip,
                                    &hex::encode(clpkc::point_to_bytes(&k.q))[..16]
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" "),
                        Ok(Found::Absent { kind, .. }) => kind.to_string(),
                        Err(e) => format!("error: {e}"),
                    };
                    format!("{} ({}) says {said}", a.server.label(), a.source)
                })
                .collect::<Vec<_>>()
                .join("; ");
            let policy = match self.cfg.policy {
                Policy::All => "all".to_string(),
                Policy::Quorum(n) => format!("quorum {n}"),
            };
            return Err(ResolveError::Disagree {
                name: name.to_string(),
                detail: format!("{detail} (policy {policy} of {})", roots.len()),
            });
        };
        let agreeing: Vec<String> = members.iter().map(|&i| roots[i].1.source.clone()).collect();
        let first = members[0];
        let result = match walks.into_iter().nth(first) {
            Some(Ok(Found::Keys { keys, chain })) => {
                let expires = expires_of(now, unix_now, &keys, self.cfg.max_ttl);
                Ok(Arc::new(KeySet {
                    name: name.to_string(),
                    keys,
                    chain,
                    anchors: agreeing,
                    expires,
                }))
            }
            Some(Ok(Found::Absent {
                kind,
                server,
                neg_ttl,
            })) => {
                let err = ResolveError::NotFound {
                    name: name.to_string(),
                    kind,
                    server,
                };
                // RFC 2308 §5: a negative answer without an SOA is not cached.
                let ttl = neg_ttl.unwrap_or(0).min(self.cfg.negative_ttl);
                if ttl > 0 {
                    self.keysets.insert(
                        name.to_string(),
                        Err(err.clone()),
                        now + Duration::from_secs(u64::from(ttl)),
                    );
                }
                return Err(err);
            }
            Some(Err(e)) => Err(e),
            None => Err(ResolveError::NoAnchor {
                name: name.to_string(),
            }),
        };
        if let Ok(set) = &result {
            self.keysets
                .insert(name.to_string(), result.clone(), set.expires);
        }
        result
    }

    fn secondaries(&self, zone: &str) -> &[SocketAddr] {
        self.cfg
            .secondaries
            .get(zone)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    // One walk from one anchor down to `name`.
    async fn walk(
        &self,
        anchor_id: u32,
        anchor: &Anchor,
        name: &str,
        tally: &TransportStats,
    ) -> Result<Found, ResolveError> {
        let mut top = anchor.server.clone();
        for a in self.secondaries(&top.name) {
            if !top.servers.contains(a) {
                top.servers.push(*a);
            }
        }
        let mut cur = Arc::new(top);
        let mut chain = vec![cur.clone()];
        // An anchor is trusted only inside its own validity window.
        if let Some(rec) = &anchor.record {
            walk::check_validity(rec, crate::time::now(), self.cfg.clock_skew).map_err(|e| {
                ResolveError::Verify {
                    server: format!("{} (trust anchor {})", cur.label(), anchor.source),
                    owner: anchor.server.name.clone(),
                    check: Check::Validity,
                    detail: e.to_string(),
                }
            })?;
        }
        if name == anchor.server.name {
            // A root's own key is its self-issued record; an island's is published by its
            // parent, outside the island.
            let Some(record) = anchor.record.clone() else {
                return Err(ResolveError::NotFound {
                    name: name.to_string(),
                    kind: "NODATA",
                    server: format!(
                        "{} (island anchor: its own record lives in its parent)",
                        cur.label()
                    ),
                });
            };
            return Ok(Found::Keys {
                keys: vec![VerifiedKey {
                    name: name.to_string(),
                    ttl: anchor.ttl,
                    record,
                    q: anchor.server.identities[0].1,
                }],
                chain,
            });
        }
        let skew = self.cfg.clock_skew;
        for next in steps(name, &anchor.server.name) {
            let now = Instant::now();
            let key = (anchor_id, next.clone());
            let is_last = next == name;
            match self.links.get(&key, now) {
                Some(Link::Server(_, records)) if is_last => {
                    return Ok(Found::Keys {
                        keys: records.to_vec(),
                        chain,
                    });
                }
                Some(Link::Server(ks, _)) => {
                    cur = ks.clone();
                    chain.push(ks);
                    continue;
                }
                Some(Link::NotCut(records)) if is_last => {
                    return Ok(if records.is_empty() {
                        Found::Absent {
                            kind: "NODATA",
                            server: cur.label(),
                            neg_ttl: Some(0),
                        }
                    } else {
                        Found::Keys {
                            keys: records.to_vec(),
                            chain,
                        }
                    });
                }
                Some(Link::NotCut(_)) => continue,
                Some(Link::NxDomain(server)) => {
                    return Ok(Found::Absent {
                        kind: "NXDOMAIN",
                        server: server.to_string(),
                        neg_ttl: Some(0),
                    });
                }
                None => {}
            }
            let qname = Name::from_ascii(&next).map_err(|e| ResolveError::BadName {
                name: next.clone(),
                reason: e.to_string(),
            })?;
            let reply = self
                .transport
                .query(&cur.servers, &qname, TPKEY_TYPE, tally)
                .await
                .map_err(|detail| ResolveError::Unreachable {
                    server: cur.label(),
                    name: next.clone(),
                    detail,
                })?;
            let unix_now = crate::time::now();
            let step = walk::check_reply(&cur, reply.from, &next, &reply.message, unix_now, skew)?;
            let records = match step {
                Step::Answer(records) | Step::Referral(records)
                    if is_last && records.first().is_some_and(|k| k.name == name) =>
                {
                    return Ok(Found::Keys {
                        keys: records,
                        chain,
                    });
                }
                Step::Answer(records) | Step::Referral(records) => records,
                Step::NoData { neg_ttl } => {
                    if is_last {
                        return Ok(Found::Absent {
                            kind: "NODATA",
                            server: cur.label(),
                            neg_ttl,
                        });
                    }
                    let ttl = neg_ttl.unwrap_or(0).min(self.cfg.negative_ttl);
                    self.links.insert(
                        key,
                        Link::NotCut(Arc::from(Vec::new())),
                        now + Duration::from_secs(u64::from(ttl)),
                    );
                    continue;
                }
                Step::NxDomain { neg_ttl } => {
                    let ttl = neg_ttl.unwrap_or(0).min(self.cfg.negative_ttl);
                    if ttl > 0 {
                        self.links.insert(
                            key,
                            Link::NxDomain(cur.label().into()),
                            now + Duration::from_secs(u64::from(ttl)),
                        );
                    }
                    return Ok(Found::Absent {
                        kind: "NXDOMAIN",
                        server: cur.label(),
                        neg_ttl,
                    });
                }
            };
            if records.first().is_some_and(|k| k.name != next) {
                // A referral past the name asked would skip a link the walk checks itself.
                return Err(ResolveError::Verify {
                    server: cur.label(),
                    owner: records[0].name.clone(),
                    check: Check::Scope,
                    detail: format!("referral to {} when {next} was asked", records[0].name),
                });
            }
            let expires = expires_of(now, unix_now, &records, self.cfg.max_ttl);
            match walk::child_server(&cur, &records, self.secondaries(&next))? {
                Some(child) => {
                    let child = Arc::new(child);
                    self.links.insert(
                        key,
                        Link::Server(child.clone(), Arc::from(records)),
                        expires,
                    );
                    cur = child.clone();
                    chain.push(child);
                }
                None => {
                    // An entity at an inner name: not a zone cut, the same server goes on.
                    self.links
                        .insert(key, Link::NotCut(Arc::from(records)), expires);
                }
            }
        }
        // steps() always ends at `name`, which returns above.
        Err(ResolveError::NotFound {
            name: name.to_string(),
            kind: "NXDOMAIN",
            server: cur.label(),
        })
    }
}

fn published(keys: &[VerifiedKey]) -> String {
    let v: Vec<String> = keys.iter().map(|k| k.record.ip.to_string()).collect();
    if v.is_empty() {
        "no address".into()
    } else {
        v.join(", ")
    }
}

/// TPKEY RDATA of a verified key, for answering (the record as its key server signed it).
pub fn rdata(key: &VerifiedKey) -> Option<RData> {
    let wire = key.record.to_wire().ok()?;
    Some(RData::Unknown {
        code: TPKEY_TYPE,
        rdata: hickory_proto::rr::rdata::NULL::with(wire),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_go_one_label_at_a_time() {
        assert_eq!(
            steps("www.example.com.", "."),
            ["com.", "example.com.", "www.example.com."]
        );
        assert_eq!(
            steps("www.example.com.", "example.com."),
            ["www.example.com."]
        );
        assert!(steps("example.com.", "example.com.").is_empty());
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical("www.example.com.").unwrap(), "www.example.com.");
        assert_eq!(canonical("WWW.Example.com").unwrap(), "www.example.com.");
        assert!(canonical("a..b.").is_err());
        assert!(canonical("-a.b.").is_err());
        assert!(canonical(&format!("{}.", "a".repeat(64))).is_err());
    }
}
