//! TLS 1.3 with TwinPeaks keys as RFC 7250 raw public keys against a stock peer: GnuTLS 3.7
//! (`gnutls-serv`, `gnutls-cli` from Debian's gnutls-bin), both directions, real processes on
//! loopback.
//!
//! - our client (`tp connect`) accepts `gnutls-serv` only when it presents the key the
//!   hierarchy publishes for the name and IP (`tp export-key` hands that key to GnuTLS), and
//!   calls any other key "possible spoofing";
//! - `gnutls-cli` talks to our server (`tp serve`); it cannot check a key against the key
//!   hierarchy itself (with a raw key its CA verification always fails and its `--tofu` store
//!   is unusable, see below), so it runs with `--no-ca-verification --print-cert` and the test
//!   checks that the raw key it printed is the one `tp resolve` gives for www at its IP;
//! - mutual authentication both ways.
//!
//! Source addresses: a server checks a client key against the client's own address. `tp
//! connect --key` binds its socket to the address its key is bound to (so it connects from
//! mail's 127.0.0.x). `gnutls-cli` has no bind or source-address option, and on loopback the
//! kernel picks 127.0.0.1 as the source of a connection to any 127.0.0.x (the route `local
//! 127.0.0.0/8 dev lo src 127.0.0.1`; checked below), so the key gnutls-cli presents for
//! mutual authentication is one mail.example.com. holds for 127.0.0.1 (mail's key for its own
//! address is refused from there).
//!
//! GnuTLS limits seen here (GnuTLS 3.7.9, not ours): `gnutls-serv` has no listen-address
//! option (it listens on 0.0.0.0 and [::], so it is reachable at www's IP); with
//! `--verify-client-cert` it refuses every raw-key client, because
//! `gnutls_certificate_verify_peers` returns GNUTLS_E_INVALID_REQUEST for raw keys (GnuTLS's
//! own client is refused the same way); `gnutls-cli --tofu/--strict-tofu` checks a raw key as
//! if it were an X.509 certificate ("gnutls_verify_stored_pubkey: ASN1 parser: Error in TAG")
//! and refuses even a pinned key that matches.
//!
//! Addresses: 127.0.0.160–127.0.0.199 (and 127.0.0.1 as a client source only).

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{KeyServer, Proc, bin, free_port, ok, require_tool, run, tp, wait_dns};
use twinpeaks::{clpkc, tls};

/// GnuTLS priority: TLS 1.3, the server presents a raw public key (no X.509 at all).
const SRV_RAWPK: &str = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+CTYPE-SRV-RAWPK:-CTYPE-SRV-X509";
/// The same, and the client presents a raw public key too.
const BOTH_RAWPK: &str = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+CTYPE-SRV-RAWPK:-CTYPE-SRV-X509:+CTYPE-CLI-RAWPK:-CTYPE-CLI-X509";

/// Root, com. and example.com. key servers, www (one IP), mail (two IPs in DNS, and a third
/// key for 127.0.0.1, the source of loopback connections) and a DNS server, all running.
/// Layout from `base`: root +0, com. +1, example.com. +2, DNS +3, www +4, mail +5 and +6.
struct Hierarchy {
    _root: KeyServer,
    _com: KeyServer,
    _example: KeyServer,
    dns: String,
    _dns: Proc,
    dir: PathBuf,
    www_ip: String,
    mail_ip: String,
    www_key: PathBuf,
    mail_key: PathBuf,
    /// mail.example.com.'s key for 127.0.0.1.
    mail_lo_key: PathBuf,
}

impl Hierarchy {
    fn start(dir: &Path, base: u8) -> Hierarchy {
        assert!(
            (160..=192).contains(&base),
            "this file's addresses are 160–199"
        );
        let ip = |n: u8| format!("127.0.0.{}", base + n);
        let mut root = KeyServer::new(&dir.join("root"), ".", &ip(0), "", "");
        let mut com = KeyServer::child(&dir.join("com"), &root, "com.", &ip(1));
        let mut example = KeyServer::child(&dir.join("example"), &com, "example.com.", &ip(2));
        let www_key = example.issue_to_file("www.example.com.", &ip(4));
        let mail_key = example.issue_to_file("mail.example.com.", &ip(5));
        example.issue_to_file("mail.example.com.", &ip(6));
        let mail_lo_key = example.issue_to_file("mail.example.com.", "127.0.0.1");
        root.start();
        com.start();
        example.start();
        let zone = dir.join("example.com.zone");
        std::fs::write(
            &zone,
            format!(
                "$ORIGIN example.com.\n$TTL 3600\n@ IN SOA ns hostmaster 1 7200 3600 1209600 300\n@ IN NS ns\nns IN A {}\nwww IN A {}\nmail IN A {}\nmail IN A {}\n",
                ip(3),
                ip(4),
                ip(5),
                ip(6)
            ),
        )
        .unwrap();
        let port = free_port(&ip(3));
        let dns = format!("{}:{port}", ip(3));
        let mut p = Proc::spawn(
            "tp-dnsd",
            Command::new(bin("tp-dnsd"))
                .args(["--listen", &dns])
                .arg("--zone")
                .arg(format!("example.com.={}", zone.display())),
        );
        wait_dns(&ip(3), port, "example.com.", &mut p);
        Hierarchy {
            _root: root,
            _com: com,
            _example: example,
            dns,
            _dns: p,
            dir: dir.to_path_buf(),
            www_ip: ip(4),
            mail_ip: ip(5),
            www_key,
            mail_key,
            mail_lo_key,
        }
    }

    fn anchor(&self) -> PathBuf {
        self._root.state.join("anchor")
    }

    /// `--anchors ROOT_ANCHOR --dns DNS`.
    fn resolver_args(&self) -> Vec<String> {
        vec![
            "--anchors".into(),
            self.anchor().display().to_string(),
            "--dns".into(),
            self.dns.clone(),
        ]
    }

    /// `tp export-key`: (PKCS#8 PEM, SPKI PEM) of an entity key, for GnuTLS.
    fn export(&self, key: &Path, tag: &str) -> (PathBuf, PathBuf) {
        let pkcs8 = self.dir.join(format!("{tag}.pem"));
        let spki = self.dir.join(format!("{tag}.pub.pem"));
        ok(tp()
            .arg("export-key")
            .arg("--key")
            .arg(key)
            .arg("--pkcs8")
            .arg(&pkcs8)
            .arg("--spki")
            .arg(&spki));
        (pkcs8, spki)
    }

    /// The key `tp resolve` verified for `name` at `ip` (compressed point, hex).
    fn resolved_key(&self, name: &str, ip: &str) -> String {
        let json = ok(tp()
            .args(["resolve", "--json"])
            .args(self.resolver_args())
            .arg(name));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["ip"] == ip)
            .unwrap_or_else(|| panic!("{name} has no key at {ip}:\n{json}"))["key"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `tp connect NAME:PORT --message MESSAGE [--key KEY]`.
    fn connect(&self, port: u16, key: Option<&Path>, message: &str) -> std::process::Output {
        let mut c = tp();
        c.arg("connect")
            .args(self.resolver_args())
            .arg(format!("www.example.com:{port}"))
            .args(["--message", message]);
        if let Some(k) = key {
            c.arg("--key").arg(k);
        }
        run(&mut c)
    }
}

/// Wait until something accepts TCP connections at ip:port.
fn wait_tcp(ip: &str, port: u16, p: &mut Proc, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = format!("{ip}:{port}").parse().unwrap();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
        if let Ok(Some(s)) = p.child.try_wait() {
            panic!(
                "{} exited: {s}\n{}",
                p.what,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{} did not listen", p.what);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process whose stdout and stderr go to `log`.
fn spawn_logged(what: &str, cmd: &mut Command, log: &Path) -> Proc {
    let f = File::create(log).unwrap();
    Proc::spawn(what, cmd.stdout(f.try_clone().unwrap()).stderr(f))
}

/// `gnutls-serv --echo` on `port` (all addresses: it has no listen-address option) with a raw
/// key; waits until www's IP answers. Returns the process and its log.
fn gnutls_serv(
    h: &Hierarchy,
    tag: &str,
    port: u16,
    (pkcs8, spki): (&Path, &Path),
    extra: &[&str],
) -> (Proc, PathBuf) {
    let log = h.dir.join(format!("gnutls-serv-{tag}.log"));
    let mut p = spawn_logged(
        &format!("gnutls-serv ({tag})"),
        Command::new(require_tool("gnutls-serv"))
            .args(["--echo", "-p", &port.to_string()])
            .arg("--rawpkkeyfile")
            .arg(pkcs8)
            .arg("--rawpkfile")
            .arg(spki)
            .args(extra),
        &log,
    );
    wait_tcp(&h.www_ip, port, &mut p, &log);
    (p, log)
}

/// `tp serve --key KEY --listen WWW_IP:PORT [EXTRA…]`; returns the process, port and log.
fn tp_serve(h: &Hierarchy, key: &Path, extra: &[String]) -> (Proc, u16, PathBuf) {
    let port = free_port(&h.www_ip);
    let log = h.dir.join(format!("tp-serve-{port}.log"));
    let mut p = spawn_logged(
        "tp serve",
        tp().arg("serve")
            .arg("--key")
            .arg(key)
            .args(["--listen", &format!("{}:{port}", h.www_ip)])
            .args(extra),
        &log,
    );
    wait_tcp(&h.www_ip, port, &mut p, &log);
    (p, port, log)
}

/// What a gnutls-cli run gave.
struct CliRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// `line` came back as a line of its own.
    echoed: bool,
}

/// `gnutls-cli ARGS -p PORT IP`, sending `line` on stdin. stdin stays open until the echo is
/// back (gnutls-cli stops reading the socket at stdin EOF), or until gnutls-cli exits.
fn gnutls_cli(args: &[&str], ip: &str, port: u16, line: &str) -> CliRun {
    let mut child = Command::new(require_tool("gnutls-cli"))
        .args(args)
        .args(["-p", &port.to_string(), ip])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gnutls-cli");
    let mut stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            let _ = tx.send(l.clone());
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let _ = writeln!(stdin, "{line}");
    let _ = stdin.flush();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut echoed = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l == line => {
                echoed = true;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    CliRun {
        status,
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        echoed,
    }
}

/// The base64 bodies of the `-----BEGIN PUBLIC KEY-----` blocks in a text, decoded (DER).
fn public_keys_in(text: &str) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    let mut body: Option<String> = None;
    for l in text.lines().map(str::trim) {
        match (l, &mut body) {
            ("-----BEGIN PUBLIC KEY-----", _) => body = Some(String::new()),
            ("-----END PUBLIC KEY-----", Some(b)) => {
                keys.push(base64_decode(b));
                body = None;
            }
            (l, Some(b)) => b.push_str(l),
            _ => {}
        }
    }
    keys
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {s}"),
        }
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | val(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// The DER SubjectPublicKeyInfo of a key printed as a compressed point in hex.
fn spki_of(hex_point: &str) -> Vec<u8> {
    tls::spki(&clpkc::point_from_bytes(&hex::decode(hex_point).unwrap()).unwrap())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn tp_connect_accepts_gnutls_serv_only_with_the_published_key() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hierarchy::start(dir.path(), 160);
    let www = h.resolved_key("www.example.com.", &h.www_ip);
    let (www_pem, www_pub) = h.export(&h.www_key, "www");
    // The exported SPKI is the key the hierarchy publishes.
    let exported = public_keys_in(&std::fs::read_to_string(&www_pub).unwrap());
    assert_eq!(exported, [spki_of(&www)]);

    // gnutls-serv with www's own key: accepted, the key line printed, the line echoed.
    let port = free_port("0.0.0.0");
    let (mut serv, log) = gnutls_serv(
        &h,
        "www",
        port,
        (&www_pem, &www_pub),
        &["--priority", SRV_RAWPK],
    );
    let out = h.connect(port, None, "through GnuTLS");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(
        stdout.contains(&format!(
            ";; server key (RFC 7250 raw public key) = the key published for www.example.com. at {}: {www}",
            h.www_ip
        )),
        "{stdout}"
    );
    assert!(stdout.contains("with TLSv1_3"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l == "through GnuTLS"),
        "no echo:\n{stdout}"
    );
    serv.stop();
    let served = std::fs::read_to_string(&log).unwrap();
    assert!(served.contains("Raw Public Key"), "{served}");

    // gnutls-serv on www's IP with another entity's valid TwinPeaks key (mail's): refused.
    let (mail_pem, mail_pub) = h.export(&h.mail_key, "mail");
    let mail = h.resolved_key("mail.example.com.", &h.mail_ip);
    let port = free_port("0.0.0.0");
    let (_serv, _) = gnutls_serv(
        &h,
        "mail",
        port,
        (&mail_pem, &mail_pub),
        &["--priority", SRV_RAWPK],
    );
    let out = h.connect(port, None, "must not arrive");
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("must not arrive"));
    assert!(
        stderr.contains(&format!(
            "possible spoofing: {}:{port} presents key {mail}, but the key hierarchy publishes {www} for www.example.com. at {}",
            h.www_ip, h.www_ip
        )),
        "{stderr}"
    );

    // A P-256 key of nobody's, made by openssl: refused the same way.
    let rogue = h.dir.join("rogue.pem");
    let rogue_pub = h.dir.join("rogue.pub.pem");
    ok(Command::new(require_tool("openssl"))
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&rogue));
    ok(Command::new(require_tool("openssl"))
        .args(["pkey", "-pubout", "-in"])
        .arg(&rogue)
        .arg("-out")
        .arg(&rogue_pub));
    let port = free_port("0.0.0.0");
    let (_serv, _) = gnutls_serv(
        &h,
        "rogue",
        port,
        (&rogue, &rogue_pub),
        &["--priority", SRV_RAWPK],
    );
    let out = h.connect(port, None, "must not arrive");
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        stderr.contains("possible spoofing") && stderr.contains(&format!("publishes {www}")),
        "{stderr}"
    );
}

#[test]
fn gnutls_cli_gets_the_published_key_from_tp_serve_and_the_echo() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hierarchy::start(dir.path(), 168);
    let www = h.resolved_key("www.example.com.", &h.www_ip);
    let (_, www_pub) = h.export(&h.www_key, "www");
    let (mut serve, port, log) = tp_serve(&h, &h.www_key, &[]);

    let cli = gnutls_cli(
        &[
            "--priority",
            SRV_RAWPK,
            "--no-ca-verification",
            "--print-cert",
        ],
        &h.www_ip,
        port,
        "hello from GnuTLS",
    );
    assert!(cli.echoed, "no echo:\n{}\n{}", cli.stdout, cli.stderr);
    assert!(
        cli.stdout.contains("- Certificate type: Raw Public Key"),
        "{}",
        cli.stdout
    );
    assert!(
        cli.stdout.contains("- Description: (TLS1.3-"),
        "{}",
        cli.stdout
    );
    // The raw key gnutls-cli printed is www's key as resolved, and as exported.
    let printed = public_keys_in(&cli.stdout);
    assert_eq!(printed, [spki_of(&www)], "{}", cli.stdout);
    assert_eq!(
        printed,
        public_keys_in(&std::fs::read_to_string(&www_pub).unwrap())
    );

    // With CA verification on (its default), a raw key cannot pass: GnuTLS has nothing to
    // verify it against.
    let cli = gnutls_cli(&["--priority", SRV_RAWPK], &h.www_ip, port, "unverified");
    assert!(!cli.status.success() && !cli.echoed, "{}", cli.stdout);
    assert!(
        format!("{}{}", cli.stdout, cli.stderr).contains("Could not verify certificate"),
        "{}\n{}",
        cli.stdout,
        cli.stderr
    );
    // Without raw keys in its priority (X.509 only), no common certificate type: refused.
    let cli = gnutls_cli(&["--no-ca-verification"], &h.www_ip, port, "x509 only");
    assert!(!cli.status.success() && !cli.echoed, "{}", cli.stdout);

    assert!(serve.child.try_wait().unwrap().is_none(), "tp serve died");
    serve.stop();
    let served = std::fs::read_to_string(&log).unwrap();
    assert!(served.contains(": TLS 1.3 session"), "{served}");
    assert!(served.contains("handshake refused"), "{served}");
}

#[test]
fn the_kernel_picks_127_0_0_1_as_the_source_of_a_loopback_connection() {
    // What the mutual-authentication tests rely on: a client that does not bind its socket
    // connects to 127.0.0.x from 127.0.0.1.
    let ip = "127.0.0.199";
    let l = std::net::TcpListener::bind((ip, 0)).unwrap();
    let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    assert_eq!(s.local_addr().unwrap().ip().to_string(), "127.0.0.1");
    let (_, peer) = l.accept().unwrap();
    assert_eq!(peer.ip().to_string(), "127.0.0.1");
}

#[test]
fn mutual_authentication_gnutls_cli_and_tp_connect_against_tp_serve() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hierarchy::start(dir.path(), 176);
    let mut extra = vec!["--client".to_string(), "mail.example.com.".to_string()];
    extra.extend(h.resolver_args());
    let (mut serve, port, log) = tp_serve(&h, &h.www_key, &extra);

    // gnutls-cli from 127.0.0.1 presenting mail's key for 127.0.0.1: accepted.
    let (lo_pem, lo_pub) = h.export(&h.mail_lo_key, "mail-lo");
    let lo_pem_s = lo_pem.display().to_string();
    let lo_pub_s = lo_pub.display().to_string();
    let with_key = |pem: &str, public: &str, line: &str| {
        gnutls_cli(
            &[
                "--priority",
                BOTH_RAWPK,
                "--no-ca-verification",
                "--rawpkkeyfile",
                pem,
                "--rawpkfile",
                public,
            ],
            &h.www_ip,
            port,
            line,
        )
    };
    let cli = with_key(&lo_pem_s, &lo_pub_s, "mutual with GnuTLS");
    assert!(
        cli.echoed,
        "no echo:\n{}\n{}\n{}",
        cli.stdout,
        cli.stderr,
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(
        cli.stdout.contains("Server has requested a certificate"),
        "{}",
        cli.stdout
    );

    // mail's key for its own address (base + 5), presented from 127.0.0.1: refused.
    let (mail_pem, mail_pub) = h.export(&h.mail_key, "mail");
    let cli = with_key(
        &mail_pem.display().to_string(),
        &mail_pub.display().to_string(),
        "wrong address",
    );
    assert!(!cli.echoed && !cli.status.success(), "{}", cli.stdout);
    // www's key: not an allowed client.
    let (www_pem, www_pub) = h.export(&h.www_key, "www");
    let cli = with_key(
        &www_pem.display().to_string(),
        &www_pub.display().to_string(),
        "not a client",
    );
    assert!(!cli.echoed && !cli.status.success(), "{}", cli.stdout);
    // No client key at all (nor a raw-key client certificate type offered): refused.
    let cli = gnutls_cli(
        &["--priority", SRV_RAWPK, "--no-ca-verification"],
        &h.www_ip,
        port,
        "no key",
    );
    assert!(!cli.echoed, "{}", cli.stdout);

    // Our own client binds to its key's address: mail's key for base + 5 from there, and
    // mail's key for 127.0.0.1 from 127.0.0.1, both accepted.
    for (key, from) in [
        (&h.mail_key, h.mail_ip.as_str()),
        (&h.mail_lo_key, "127.0.0.1"),
    ] {
        let out = h.connect(port, Some(key), "mutual with tp");
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
        assert!(
            stdout.contains(&format!(
                ";; client key presented: mail.example.com. at {from}"
            )),
            "{stdout}"
        );
        assert!(stdout.lines().any(|l| l == "mutual with tp"), "{stdout}");
    }
    // www's key (from www's address): no allowed client has a key there.
    let out = h.connect(port, Some(&h.www_key), "not a client");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("not a client"));

    assert!(serve.child.try_wait().unwrap().is_none(), "tp serve died");
    serve.stop();
    let served = std::fs::read_to_string(&log).unwrap();
    let sessions: Vec<&str> = served
        .lines()
        .filter(|l| l.ends_with(": TLS 1.3 session"))
        .collect();
    // gnutls-cli from 127.0.0.1; tp connect from mail's address, then from 127.0.0.1.
    assert_eq!(sessions.len(), 3, "{served}");
    assert!(sessions[0].starts_with("tp serve: 127.0.0.1:"), "{served}");
    assert!(
        sessions[1].starts_with(&format!("tp serve: {}:", h.mail_ip)),
        "{served}"
    );
    assert!(sessions[2].starts_with("tp serve: 127.0.0.1:"), "{served}");
    assert!(
        served.contains(&format!(
            "refused: no allowed client has a verified key at {}",
            h.www_ip
        )),
        "{served}"
    );
}

#[test]
fn tp_connect_presents_its_key_to_gnutls_serv() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hierarchy::start(dir.path(), 184);
    let (www_pem, www_pub) = h.export(&h.www_key, "www");
    let (mail_pem, mail_pub) = h.export(&h.mail_key, "mail");
    let mail_spki = public_keys_in(&std::fs::read_to_string(&mail_pub).unwrap());

    // --require-client-cert: our client presents mail's key; GnuTLS got it.
    let port = free_port("0.0.0.0");
    let (mut serv, log) = gnutls_serv(
        &h,
        "require",
        port,
        (&www_pem, &www_pub),
        &["--require-client-cert", "--priority", BOTH_RAWPK],
    );
    let out = h.connect(port, Some(&h.mail_key), "client key to GnuTLS");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.lines().any(|l| l == "client key to GnuTLS"),
        "{stdout}"
    );
    // Without a key: refused.
    let out = h.connect(port, None, "no key");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    serv.stop();
    let served = std::fs::read_to_string(&log).unwrap();
    assert_eq!(public_keys_in(&served), mail_spki, "{served}");
    // From mail's own address (tp connect binds to its key's address).
    assert!(
        served.contains(&format!("Accepted connection from IPv4 {} port", h.mail_ip)),
        "{served}"
    );

    // --verify-client-cert as well: GnuTLS cannot verify a raw key (GNUTLS_E_INVALID_REQUEST)
    // and refuses every raw-key client, its own gnutls-cli too.
    let port = free_port("0.0.0.0");
    let (mut serv, log) = gnutls_serv(
        &h,
        "verify",
        port,
        (&www_pem, &www_pub),
        &[
            "--require-client-cert",
            "--verify-client-cert",
            "--priority",
            BOTH_RAWPK,
        ],
    );
    let out = h.connect(port, Some(&h.mail_key), "verified?");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let cli = gnutls_cli(
        &[
            "--priority",
            BOTH_RAWPK,
            "--no-ca-verification",
            "--rawpkkeyfile",
            &mail_pem.display().to_string(),
            "--rawpkfile",
            &mail_pub.display().to_string(),
        ],
        &h.www_ip,
        port,
        "verified?",
    );
    assert!(!cli.echoed, "{}", cli.stdout);
    serv.stop();
    let served = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        served.matches("Error in the certificate").count(),
        2,
        "{served}"
    );
}
