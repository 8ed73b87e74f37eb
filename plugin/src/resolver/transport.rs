//! Queries to key servers on hickory-net's client exchanges: UDP (a fresh random source port
//! per query, retransmitted within the query's time), TCP when the answer comes back
//! truncated, and the next address of the server when one fails. No cache: the key cache sits
//! above this.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use futures_util::StreamExt;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::{DnsExchange, DnsHandle};
use hickory_proto::op::{DnsRequest, DnsRequestOptions, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

/// EDNS payload size asked for (the DNS Flag Day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Counters of what was sent and received (the transport's own, and per resolution).
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Queries sent (one per question asked of one address over UDP, and per TCP retry).
    pub queries: AtomicU64,
    /// Bytes of DNS messages sent.
    pub bytes_out: AtomicU64,
    /// Bytes of DNS messages received.
    pub bytes_in: AtomicU64,
}

/// One answer and who gave it.
pub struct Reply {
    /// The decoded message.
    pub message: Message,
    /// The address that answered.
    pub from: SocketAddr,
}

/// How long an address that did not answer is tried after the others.
const DOWN_FOR: Duration = Duration::from_secs(30);

/// Sends queries to key servers.
pub struct Transport {
    provider: TokioRuntimeProvider,
    down: DashMap<SocketAddr, Instant>,
    timeout: Duration,
    attempts: u8,
    /// What was sent and received.
    pub stats: Arc<TransportStats>,
}

impl Transport {
    /// A transport whose queries each get `timeout` per address and `attempts` UDP sends.
    pub fn new(timeout: Duration, attempts: u8) -> Self {
        Self {
            provider: TokioRuntimeProvider::new(),
            down: DashMap::new(),
            timeout,
            attempts: attempts.max(1),
            stats: Arc::default(),
        }
    }

    fn options() -> DnsRequestOptions {
        let mut o = DnsRequestOptions::default();
        o.use_edns = true;
        o.edns_payload_len = EDNS_PAYLOAD;
        o.recursion_desired = false;
        o
    }

    // A fresh exchange per query: its background task lives on the runtime of the caller, so
    // a resolver can be used from any runtime (each UDP query takes a new random port anyway).
    fn udp_exchange(&self, addr: SocketAddr) -> DnsExchange<TokioRuntimeProvider> {
        let per_try = self.timeout / u32::from(self.attempts);
        UdpClientStream::builder(addr, self.provider.clone())
            .with_timeout(Some(self.timeout))
            // hickory counts every send here, the first included.
            .with_max_retries(self.attempts)
            .with_retry_interval_floor(per_try.as_millis().max(50) as u64)
            .exchange()
    }

    async fn send(
        &self,
        exchange: &DnsExchange<TokioRuntimeProvider>,
        name: &Name,
        rtype: RecordType,
        tally: &TransportStats,
    ) -> Result<Message, String> {
        let request = DnsRequest::from_query(Query::query(name.clone(), rtype), Self::options());
        let size = request.to_vec().map(|b| b.len() as u64).unwrap_or(0);
        for t in [&*self.stats, tally] {
            t.queries.fetch_add(1, Ordering::Relaxed);
            t.bytes_out.fetch_add(size, Ordering::Relaxed);
        }
        let mut stream = exchange.send(request);
        let fut = async {
            match stream.next().await {
                Some(Ok(resp)) => {
                    let n = resp.as_buffer().len() as u64;
                    for t in [&*self.stats, tally] {
                        t.bytes_in.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(resp.into_message())
                }
                Some(Err(e)) => Err(e.to_string()),
                None => Err("connection closed without an answer".to_string()),
            }
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// Ask one address: UDP, then TCP if the answer is truncated.
    pub async fn query_one(
        &self,
        addr: SocketAddr,
        name: &Name,
        rtype: RecordType,
        tcp: bool,
        tally: &TransportStats,
    ) -> Result<Message, String> {
        if !tcp {
            let msg = self
                .send(&self.udp_exchange(addr), name, rtype, tally)
                .await?;
            if !msg.metadata.truncation {
                return Ok(msg);
            }
        }
        let exchange =
            TcpClientStream::exchange(addr, None, self.timeout, Some(1), self.provider.clone())
                .await
                .map_err(|e| format!("TCP: {e}"))?;
        self.send(&exchange, name, rtype, tally).await
    }

    /// Ask each address in turn until one answers; the errors of all, if none does.
    pub async fn query(
        &self,
        addrs: &[SocketAddr],
        name: &Name,
        rtype: RecordType,
        tally: &TransportStats,
    ) -> Result<Reply, String> {
        let mut errors = Vec::new();
        // Addresses that failed lately go last, so a dead primary does not cost every walk a
        // timeout while its secondaries answer.
        let now = Instant::now();
        let mut order: Vec<SocketAddr> = addrs.to_vec();
        order.sort_by_key(|a| self.down.get(a).is_some_and(|until| *until > now));
        let mut last_rcode = None;
        for addr in order {
            match self.query_one(addr, name, rtype, false, tally).await {
                // A server that cannot or will not answer: its secondaries may.
                Ok(message)
                    if matches!(
                        message.metadata.response_code,
                        ResponseCode::ServFail | ResponseCode::Refused | ResponseCode::NotImp
                    ) =>
                {
                    errors.push(format!(
                        "{addr}: answered {}",
                        message.metadata.response_code
                    ));
                    last_rcode = Some(Reply {
                        message,
                        from: addr,
                    });
                }
                Ok(message) => {
                    self.down.remove(&addr);
                    return Ok(Reply {
                        message,
                        from: addr,
                    });
                }
                Err(e) => {
                    self.down.insert(addr, Instant::now() + DOWN_FOR);
                    errors.push(format!("{addr}: {e}"));
                }
            }
        }
        // Every address refused or failed: the last refusal speaks (its RCODE is reported).
        last_rcode.ok_or_else(|| errors.join("; "))
    }
}
