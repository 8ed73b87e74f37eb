//! `tp-dnsd` as a user meets it: the real binary on loopback, queried with the real `dig`.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tp-dnsd");
const START_TIMEOUT: Duration = Duration::from_secs(20);

const EXAMPLE_ZONE: &str = "\
$ORIGIN example.com.
$TTL 3600
@     IN SOA ns1.example.com. hostmaster.example.com. ( 2026112501 7200 3600 1209600 300 )
      IN NS   ns1.example.com.
ns1   IN A    127.0.0.1
www   IN A    192.0.2.10
www   IN AAAA 2001:db8::10
mail  IN A    192.0.2.25
";

/// A 179-byte TPKEY RDATA (key-server record) whose points are the P-256 generator: enough for
/// the opaque path, which parses but does not verify.
const TPKEY_HEX: &str = concat!(
    "0101",                                                               // version, flags
    "047f000001",                                                         // IPv4 127.0.0.1
    "036b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296", // W
    "0000000000000000000000000000000000000000000000000000000000000000",   // issuer
    "6a0000007fffffff",                                                   // validity
    "14b4",                                                               // port 5300
    "036b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296", // P_pub
    "1111111111111111111111111111111111111111111111111111111111111111",   // signature
    "2222222222222222222222222222222222222222222222222222222222222222",
);

/// Kills the server if a test fails before stopping it.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 at the time of the call.
fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write zone file");
    path
}

/// Starts tp-dnsd with `zone_args` and waits for its "listening" log line.
fn start(zone_args: &[String]) -> Server {
    let port = free_port();
    let mut child = Command::new(BIN)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(zone_args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tp-dnsd");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let mut log = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let ready = line.contains("listening on UDP and TCP");
                log.push(line);
                if ready {
                    return Server { child, port };
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tp-dnsd did not come up; its log:\n{}", log.join("\n"));
            }
        }
    }
}

fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["-p", &port.to_string(), "@127.0.0.1", "+time=2", "+tries=2"])
        .args(args)
        .output()
        .expect("`dig` must be installed (Debian package bind9-dnsutils)");
    assert!(out.status.success(), "dig {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs tp-dnsd expecting it to exit by itself (a startup error), within a deadline.
fn run_to_exit(args: &[String]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tp-dnsd");
    let status = wait_with_deadline(&mut child, START_TIMEOUT)
        .unwrap_or_else(|| panic!("tp-dnsd {args:?} kept running instead of failing"));
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child.stdout.take().map(|mut s| s.read_to_end(&mut stdout));
    child.stderr.take().map(|mut s| s.read_to_end(&mut stderr));
    Output {
        status,
        stdout,
        stderr,
    }
}

fn wait_with_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn serves_a_zone_file_over_udp_and_tcp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let zone = write(dir.path(), "example.com.zone", EXAMPLE_ZONE);
    let server = start(&["--zone".into(), format!("example.com.={}", zone.display())]);

    assert_eq!(
        dig(server.port, &["+short", "www.example.com", "A"]).trim(),
        "192.0.2.10"
    );
    assert_eq!(
        dig(server.port, &["+short", "+tcp", "www.example.com", "AAAA"]).trim(),
        "2001:db8::10"
    );
    let nx = dig(server.port, &["nope.example.com", "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(
        nx.contains("flags: qr aa"),
        "answer must be authoritative: {nx}"
    );
    assert!(
        nx.contains("SOA\tns1.example.com."),
        "NXDOMAIN must carry the SOA: {nx}"
    );
    let refused = dig(server.port, &["www.example.org", "A"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");
}

#[test]
fn serves_a_key_zone_as_opaque_rfc3597_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = write(
        dir.path(),
        "bench.keys",
        &format!(
            "$ORIGIN bench.example.\n$TTL 3600\n\
             @ IN SOA ns1.bench.example. hostmaster.bench.example. 1 7200 3600 1209600 300\n\
             @ IN NS ns1.bench.example.\n\
             www1 IN TYPE65300 \\# 179 {TPKEY_HEX}\n"
        ),
    );
    let server = start(&[
        "--opaque-keyzone".into(),
        format!("bench.example.={}", keys.display()),
    ]);

    for transport in ["+notcp", "+tcp"] {
        let answer = dig(
            server.port,
            &["+short", transport, "www1.bench.example", "TYPE65300"],
        );
        let expected = format!("\\# 179 {}", TPKEY_HEX.to_uppercase());
        // dig splits long hex into 56-character words.
        assert_eq!(
            answer.trim().replace(' ', ""),
            expected.replace(' ', ""),
            "{transport}"
        );
    }
}

#[test]
fn stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let zone = write(dir.path(), "example.com.zone", EXAMPLE_ZONE);
    let mut server = start(&["--zone".into(), format!("example.com.={}", zone.display())]);
    let kill = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = wait_with_deadline(&mut server.child, Duration::from_secs(10))
        .expect("tp-dnsd did not stop within 10 s of SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn a_bad_zone_file_is_refused_naming_the_file_and_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let zone = write(
        dir.path(),
        "broken.zone",
        "$TTL 60\n@ IN SOA ns1 hostmaster 1 2 3 4 5\nwww IN A 192.0.2.300\n",
    );
    let out = run_to_exit(&[
        "--listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--zone".into(),
        format!("example.com.={}", zone.display()),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad zone must fail: {stderr}");
    assert!(
        stderr.contains(&zone.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains("invalid IPv4 address"),
        "gives the reason: {stderr}"
    );

    let missing = dir.path().join("missing.zone");
    let out = run_to_exit(&[
        "--listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--zone".into(),
        format!("example.com.={}", missing.display()),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing zone must fail: {stderr}");
    assert!(
        stderr.contains(&missing.display().to_string()),
        "names the file: {stderr}"
    );
}

#[test]
fn a_truncated_key_record_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = write(
        dir.path(),
        "bad.keys",
        "$TTL 60\n@ IN SOA ns1 hostmaster 1 2 3 4 5\nwww IN TYPE65300 \\# 3 010100\n",
    );
    let out = run_to_exit(&[
        "--listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--opaque-keyzone".into(),
        format!("bench.example.={}", keys.display()),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3:", keys.display())),
        "file:line: {stderr}"
    );
}

#[test]
fn bad_command_lines_are_refused() {
    let no_equals = run_to_exit(&[
        "--listen".into(),
        "127.0.0.1:53".into(),
        "--zone".into(),
        "example.com".into(),
    ]);
    let stderr = String::from_utf8_lossy(&no_equals.stderr);
    assert_eq!(no_equals.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ORIGIN=PATH"), "{stderr}");

    let nothing = run_to_exit(&["--listen".into(), "127.0.0.1:53".into()]);
    let stderr = String::from_utf8_lossy(&nothing.stderr);
    assert!(!nothing.status.success(), "{stderr}");
    assert!(stderr.contains("nothing to serve"), "{stderr}");
}
