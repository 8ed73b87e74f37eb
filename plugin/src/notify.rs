//! NOTIFY (RFC 1996): tell secondaries a key zone changed, so they transfer it now rather
//! than at their next refresh.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use tokio::net::UdpSocket;
use tracing::{info, warn};

/// Send NOTIFY for `zone` to `target` from `source` (the key server's own listen address: a
/// secondary's allow-notify matches the source), retrying a few times; returns whether it was
/// acknowledged.
pub async fn notify(zone: Name, serial: u32, target: SocketAddr, source: Option<IpAddr>) -> bool {
    let mut msg = Message::query();
    msg.metadata.id = rand_core::RngCore::next_u32(&mut rand_core::OsRng) as u16;
    msg.metadata.op_code = OpCode::Notify;
    msg.metadata.authoritative = true;
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(zone.clone(), RecordType::SOA));
    let Ok(bytes) = msg.to_bytes() else {
        return false;
    };
    let bind: SocketAddr = match source {
        Some(ip) if ip.is_ipv4() == target.is_ipv4() => SocketAddr::new(ip, 0),
        _ if target.is_ipv4() => SocketAddr::from(([0, 0, 0, 0], 0)),
        _ => SocketAddr::from(([0u16; 8], 0)),
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            warn!(zone = %zone, serial, peer = %target, source = %bind, error = %e, "NOTIFY not sent: cannot bind its source");
            return false;
        }
    };
    let mut buf = [0u8; 512];
    for attempt in 0..3u32 {
        if sock.send_to(&bytes, target).await.is_err() {
            break;
        }
        let wait = Duration::from_millis(500 << attempt);
        if let Ok(Ok((n, from))) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await
            && from == target
            && let Ok(reply) = Message::from_bytes(&buf[..n])
            && reply.metadata.id == msg.metadata.id
            && reply.metadata.message_type == MessageType::Response
        {
            info!(zone = %zone, serial, peer = %target, rcode = %reply.metadata.response_code, "NOTIFY acknowledged");
            return true;
        }
    }
    warn!(zone = %zone, serial, peer = %target, "NOTIFY not acknowledged");
    false
}
