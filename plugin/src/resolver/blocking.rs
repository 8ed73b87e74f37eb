//! A blocking face of the resolver for tools: it owns a small tokio runtime.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};

use super::transport::{Transport, TransportStats};
use super::{KeySet, Report, ResolveError, Resolved, Resolver, ResolverConfig};

/// A resolver and the runtime that drives it.
pub struct BlockingResolver {
    rt: tokio::runtime::Runtime,
    inner: Arc<Resolver>,
}

impl BlockingResolver {
    /// Start a runtime and a resolver on it.
    pub fn new(cfg: ResolverConfig) -> Result<Self, ResolveError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ResolveError::Dns {
                name: "-".into(),
                reason: format!("cannot start a runtime: {e}"),
            })?;
        let inner = rt.block_on(async { Resolver::new(cfg) })?;
        Ok(Self {
            rt,
            inner: Arc::new(inner),
        })
    }

    /// The async resolver inside.
    pub fn inner(&self) -> &Arc<Resolver> {
        &self.inner
    }

    /// See [`Resolver::keys`].
    pub fn keys(&self, name: &str) -> (Result<Arc<KeySet>, ResolveError>, Report) {
        self.rt.block_on(self.inner.keys(name))
    }

    /// See [`Resolver::resolve`].
    pub fn resolve(&self, name: &str) -> (Result<Arc<Resolved>, ResolveError>, Report) {
        self.rt.block_on(self.inner.resolve(name))
    }

    /// See [`Resolver::invalidate`].
    pub fn invalidate(&self, name: &str) {
        self.inner.invalidate(name)
    }
}

/// One query to one server, as `tp dig` sends it (UDP, TCP on truncation or when asked).
pub fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    tcp: bool,
    timeout: std::time::Duration,
) -> Result<Message, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let t = Transport::new(timeout, 2);
        t.query_one(server, name, rtype, tcp, &TransportStats::default())
            .await
            .map_err(|e| format!("{server}: {e}"))
    })
}
