//! `linkemu`, the link emulator of the benchmarks:
//! `linkemu udp|tcp LISTEN TARGET ONE_WAY_DELAY_MS [--connect-rtt]`.
//! Runs until killed; prints its address, then its counters every second. `--connect-rtt`
//! (tcp): a connection's bytes also wait for the round trip of TCP's handshake.
#![forbid(unsafe_code)]

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: linkemu udp|tcp LISTEN TARGET ONE_WAY_DELAY_MS [--connect-rtt]";
    let connect_rtt = match args.get(5).map(String::as_str) {
        None => false,
        Some("--connect-rtt") if args[1] == "tcp" => true,
        Some(other) => {
            eprintln!("linkemu: `{other}` is not --connect-rtt (tcp only); {usage}");
            std::process::exit(2)
        }
    };
    if !(5..=6).contains(&args.len()) {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let parse = |s: &str, what: &str| -> std::net::SocketAddr {
        s.parse().unwrap_or_else(|_| {
            eprintln!("linkemu: {what} `{s}` is not IP:port; {usage}");
            std::process::exit(2)
        })
    };
    let (listen, target) = (parse(&args[2], "LISTEN"), parse(&args[3], "TARGET"));
    let delay: f64 = args[4].parse().unwrap_or_else(|_| {
        eprintln!("linkemu: ONE_WAY_DELAY_MS `{}` is not a number", args[4]);
        std::process::exit(2)
    });
    let delay = Duration::from_secs_f64(delay / 1000.0);
    let link = match args[1].as_str() {
        "udp" => d2tls_linkemu::udp(listen, target, delay, None),
        "tcp" => d2tls_linkemu::tcp_with(listen, target, delay, connect_rtt),
        other => {
            eprintln!("linkemu: `{other}` is not udp or tcp; {usage}");
            std::process::exit(2)
        }
    };
    let link = link.unwrap_or_else(|e| {
        eprintln!("linkemu: {e}");
        std::process::exit(1)
    });
    println!("linkemu listening on {}", link.addr);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let (up, down, pu, pd) = link.stats.snapshot();
        eprintln!("up_bytes={up} down_bytes={down} up_packets={pu} down_packets={pd}");
    }
}
