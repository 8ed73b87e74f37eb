//! A link emulator for the test suite and the benchmarks: a UDP or TCP forwarder on loopback
//! that adds a fixed one-way delay, drops chosen datagrams and counts what crosses it.
//!
//! It stands in for the device's radio link or a WAN path (a network namespace with netem
//! would need privileges the tests should not need). A crate of its own, beside `d2tls`:
//! test and benchmark tooling, not part of the agent or the device.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(20);

/// Direction through the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// Counters of a link.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Bytes client → server.
    pub up_bytes: AtomicU64,
    /// Bytes server → client.
    pub down_bytes: AtomicU64,
    /// Datagrams (or reads) client → server.
    pub up_packets: AtomicU64,
    /// Datagrams (or reads) server → client.
    pub down_packets: AtomicU64,
    /// Datagrams dropped on purpose.
    pub dropped: AtomicU64,
}

impl LinkStats {
    fn count(&self, dir: Dir, n: usize) {
        let (b, p) = match dir {
            Dir::Up => (&self.up_bytes, &self.up_packets),
            Dir::Down => (&self.down_bytes, &self.down_packets),
        };
        b.fetch_add(n as u64, Ordering::Relaxed);
        p.fetch_add(1, Ordering::Relaxed);
    }

    /// (bytes up, bytes down, packets up, packets down).
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.up_bytes.load(Ordering::Relaxed),
            self.down_bytes.load(Ordering::Relaxed),
            self.up_packets.load(Ordering::Relaxed),
            self.down_packets.load(Ordering::Relaxed),
        )
    }
}

/// Decides whether a datagram is lost, given its direction, its number (0-based, per client
/// and direction) and its bytes.
pub type DropRule = dyn Fn(Dir, u64, &[u8]) -> bool + Send + Sync;

/// A running link; stops when dropped.
pub struct Link {
    /// Address clients connect to.
    pub addr: SocketAddr,
    /// Counters.
    pub stats: Arc<LinkStats>,
    stop: Arc<AtomicBool>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Sends each queued item once its time has come (constant delay keeps FIFO = time order).
fn delayed<T: Send + 'static>(
    delay: Duration,
    stop: Arc<AtomicBool>,
    mut deliver: impl FnMut(T) -> io::Result<()> + Send + 'static,
) -> mpsc::Sender<(Instant, T)> {
    let (tx, rx) = mpsc::channel::<(Instant, T)>();
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let (at, item) = match rx.recv_timeout(TICK) {
                Ok(x) => x,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let when = at + delay;
            let now = Instant::now();
            if when > now {
                thread::sleep(when - now);
            }
            if deliver(item).is_err() {
                break;
            }
        }
    });
    tx
}

/// Starts a UDP link on `listen` forwarding to `target`.
pub fn udp(
    listen: SocketAddr,
    target: SocketAddr,
    one_way_delay: Duration,
    drop_rule: Option<Arc<DropRule>>,
) -> io::Result<Link> {
    let front = Arc::new(UdpSocket::bind(listen)?);
    front.set_read_timeout(Some(TICK))?;
    let addr = front.local_addr()?;
    let stats = Arc::new(LinkStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let lost = move |dir: Dir, i: u64, d: &[u8]| drop_rule.as_ref().is_some_and(|r| r(dir, i, d));
    let lost = Arc::new(lost);
    let (st, sp, fr) = (stats.clone(), stop.clone(), front.clone());
    thread::spawn(move || {
        type Up = (mpsc::Sender<(Instant, Vec<u8>)>, u64);
        let mut clients: HashMap<SocketAddr, Up> = HashMap::new();
        let mut buf = vec![0u8; 65536];
        while !sp.load(Ordering::Relaxed) {
            let Ok((n, from)) = fr.recv_from(&mut buf) else {
                continue;
            };
            st.count(Dir::Up, n);
            if let std::collections::hash_map::Entry::Vacant(slot) = clients.entry(from) {
                let Ok(up) = UdpSocket::bind((target.ip(), 0)).and_then(|s| {
                    s.connect(target)?;
                    s.set_read_timeout(Some(TICK))?;
                    Ok(Arc::new(s))
                }) else {
                    continue;
                };
                let up_w = up.clone();
                let to_server = delayed(one_way_delay, sp.clone(), move |d: Vec<u8>| {
                    up_w.send(&d).map(|_| ())
                });
                let fr2 = fr.clone();
                let to_client = delayed(one_way_delay, sp.clone(), move |d: Vec<u8>| {
                    fr2.send_to(&d, from).map(|_| ())
                });
                let (st2, sp2, lost2) = (st.clone(), sp.clone(), lost.clone());
                thread::spawn(move || {
                    let mut b = vec![0u8; 65536];
                    let mut i = 0;
                    while !sp2.load(Ordering::Relaxed) {
                        let Ok(n) = up.recv(&mut b) else { continue };
                        st2.count(Dir::Down, n);
                        i += 1;
                        if lost2(Dir::Down, i - 1, &b[..n]) {
                            st2.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        if to_client.send((Instant::now(), b[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                });
                slot.insert((to_server, 0));
            }
            if let Some((tx, i)) = clients.get_mut(&from) {
                *i += 1;
                if lost(Dir::Up, *i - 1, &buf[..n]) {
                    st.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let _ = tx.send((Instant::now(), buf[..n].to_vec()));
            }
        }
    });
    Ok(Link { addr, stats, stop })
}

/// Starts a TCP link on `listen` forwarding to `target`. A client's connect completes at once
/// (the emulator accepts it on loopback); the link's delay applies to the bytes only.
pub fn tcp(listen: SocketAddr, target: SocketAddr, one_way_delay: Duration) -> io::Result<Link> {
    tcp_with(listen, target, one_way_delay, false)
}

/// [`tcp`]; with `connect_rtt`, a connection's bytes also wait for TCP's handshake: nothing
/// the client sends arrives before 3 one-way delays after its connect (SYN, SYN-ACK, then the
/// data), as over a real path, so that a client that connects early gains that round trip.
pub fn tcp_with(
    listen: SocketAddr,
    target: SocketAddr,
    one_way_delay: Duration,
    connect_rtt: bool,
) -> io::Result<Link> {
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(LinkStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (st, sp) = (stats.clone(), stop.clone());
    thread::spawn(move || {
        while !sp.load(Ordering::Relaxed) {
            let client = match listener.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(2));
                    continue;
                }
                Err(_) => break,
            };
            let Ok(server) = TcpStream::connect(target) else {
                continue;
            };
            // When the client's SYN-ACK would have come back: its bytes are sent from then on.
            let open = Instant::now()
                + if connect_rtt {
                    2 * one_way_delay
                } else {
                    Duration::ZERO
                };
            for (from, to, dir) in [
                (client.try_clone(), server.try_clone(), Dir::Up),
                (server.try_clone(), client.try_clone(), Dir::Down),
            ] {
                let (Ok(mut from), Ok(to)) = (from, to) else {
                    continue;
                };
                let _ = from.set_nonblocking(false);
                let _ = from.set_read_timeout(Some(TICK));
                let _ = to.set_nodelay(true);
                let to = Arc::new(Mutex::new(to));
                let to_w = to.clone();
                let tx = delayed(one_way_delay, sp.clone(), move |d: Option<Vec<u8>>| {
                    let mut s = to_w.lock().map_err(|_| io::Error::other("poisoned"))?;
                    match d {
                        Some(d) => s.write_all(&d),
                        None => s.shutdown(Shutdown::Write),
                    }
                });
                let (st2, sp2) = (st.clone(), sp.clone());
                thread::spawn(move || {
                    let mut b = vec![0u8; 65536];
                    while !sp2.load(Ordering::Relaxed) {
                        match from.read(&mut b) {
                            Ok(0) => {
                                let _ = tx.send((Instant::now(), None));
                                break;
                            }
                            Ok(n) => {
                                st2.count(dir, n);
                                let sent = Instant::now().max(open);
                                if tx.send((sent, Some(b[..n].to_vec()))).is_err() {
                                    break;
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => {
                                let _ = tx.send((Instant::now(), None));
                                break;
                            }
                        }
                    }
                });
            }
        }
    });
    Ok(Link { addr, stats, stop })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_link_forwards_both_ways_and_drops_as_told() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let rule: Arc<DropRule> = Arc::new(|dir, i, _| dir == Dir::Up && i == 0);
        let link = udp(
            "127.0.0.1:0".parse().unwrap(),
            server.local_addr().unwrap(),
            Duration::from_millis(1),
            Some(rule),
        )
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(b"lost", link.addr).unwrap();
        client.send_to(b"kept", link.addr).unwrap();
        let mut b = [0u8; 16];
        let (n, from) = server.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"kept");
        server.send_to(b"back", from).unwrap();
        let n = client.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"back");
        assert_eq!(link.stats.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn tcp_link_forwards_and_counts() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let link = tcp(
            "127.0.0.1:0".parse().unwrap(),
            server.local_addr().unwrap(),
            Duration::from_millis(1),
        )
        .unwrap();
        let mut c = TcpStream::connect(link.addr).unwrap();
        c.write_all(b"ping").unwrap();
        let (mut s, _) = server.accept().unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"pong").unwrap();
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"pong");
        let (up, down, _, _) = link.stats.snapshot();
        assert_eq!((up, down), (4, 4));
    }
}
