//! Helpers of the D2TLS end-to-end tests: a throw-away PKI made by the openssl CLI, configs,
//! child processes whose output is collected, a stock `openssl s_server`, memory scans.
//! Shared by tests/d2tls_*.rs and agent/tests/*.rs (included by path), so std only.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for waits: only reached when something is broken (never a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("d2tls-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free for UDP and TCP on 127.0.0.1 at the time of the call.
pub fn port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// CA, server and device credentials (P-256), made at test time.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub device_cert: PathBuf,
    pub device_key: PathBuf,
}

/// Runs the `openssl` CLI in `dir`; panics with its stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("`openssl` CLI is not installed (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issues `{name}.pem` from `{name}.csr` under the test CA, with extensions `ext` (the lines
/// of an openssl extfile).
fn sign_csr(dir: &Path, name: &str, ext: &str) {
    let (csr, pem, ext_file) = (
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    std::fs::write(dir.join(&ext_file), ext).expect("write ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext_file,
        ],
    );
}

impl Pki {
    /// Issues the device certificate again, with other extensions.
    pub fn reissue_device(&self, ext: &str) {
        sign_csr(&self.dir, "device", ext);
    }

    pub fn new(dir: &Path) -> Pki {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=D2TLS Test CA",
            "-days",
            "2",
        ]);
        openssl(dir, &a);
        for (name, subj) in [
            ("server", "/CN=localhost"),
            ("device", "/CN=sensor-1/O=D2TLS Devices"),
        ] {
            let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
            let mut a = vec!["req"];
            a.extend(ec);
            a.extend(["-keyout", &key, "-out", &csr, "-subj", subj]);
            openssl(dir, &a);
            let ext = if name == "server" {
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
            } else {
                "extendedKeyUsage=clientAuth\n"
            };
            sign_csr(dir, name, ext);
        }
        Pki {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            device_cert: dir.join("device.pem"),
            device_key: dir.join("device.key"),
        }
    }

    /// The device's private scalar (32 bytes), to look for in other processes' memory.
    pub fn device_scalar(&self) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(["ec", "-in"])
            .arg(&self.device_key)
            .args(["-noout", "-text"])
            .output()
            .expect("openssl ec");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut hex = String::new();
        let mut inside = false;
        for line in text.lines() {
            if line.starts_with("priv:") {
                inside = true;
                continue;
            }
            if inside {
                if !line.starts_with(' ') {
                    break;
                }
                hex.extend(line.trim().split(':').filter(|s| !s.is_empty()));
            }
        }
        let mut bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        while bytes.len() > 32 && bytes[0] == 0 {
            bytes.remove(0);
        }
        assert_eq!(bytes.len(), 32, "device scalar from {text}");
        bytes
    }
}

pub fn pairing_key_hex() -> String {
    let out = Command::new("openssl")
        .args(["rand", "-hex", "32"])
        .output()
        .expect("openssl rand");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One frame of the agent<->device channel (`len u16 ‖ body`); empty when the peer closed.
pub fn read_frame(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    if s.read_exact(&mut len).is_err() {
        return vec![];
    }
    let mut b = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut b).expect("frame");
    b
}

/// Writes `len u16 ‖ body`.
pub fn write_frame(s: &mut std::net::TcpStream, body: &[u8]) {
    let len = u16::try_from(body.len()).expect("frame length");
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    s.write_all(&frame).expect("write");
}

/// Writes a file only its owner may read: the binaries refuse a pairing key others can read.
pub fn write_private(path: &Path, text: impl AsRef<[u8]>) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    f.write_all(text.as_ref()).expect("write");
}

pub fn agent_config(pki: &Pki, port: u16, key_hex: &str) -> PathBuf {
    let path = pki.dir.join("agent.toml");
    let text = format!(
        "listen = \"127.0.0.1:{port}\"\nca_file = \"ca.pem\"\nsession_lifetime_secs = 600\n\n[[device]]\nid = \"sensor-1\"\npairing_key = \"{key_hex}\"\n"
    );
    write_private(&path, text);
    path
}

pub fn device_config(
    pki: &Pki,
    agent_port: u16,
    key_hex: &str,
    server: &str,
    transport: &str,
    suite: &str,
) -> PathBuf {
    let path = pki.dir.join(format!("device-{transport}-{suite}.toml"));
    let text = format!(
        "device_id = \"sensor-1\"\nagent = \"127.0.0.1:{agent_port}\"\npairing_key = \"{key_hex}\"\ncertificate = \"device.pem\"\nprivate_key = \"device.key\"\nserver = \"{server}\"\nserver_name = \"127.0.0.1\"\ntransport = \"{transport}\"\nsuite = \"{suite}\"\nca_file = \"ca.pem\"\nmax_delegations = 3\ntimeout_secs = 30\n"
    );
    write_private(&path, text);
    path
}

/// Text a child wrote so far, with a way to wait for a line.
#[derive(Clone, Default)]
pub struct Output(Arc<(Mutex<String>, Condvar)>);

impl Output {
    fn collect(self, r: impl Read + Send + 'static) -> Output {
        let me = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                let (m, c) = &*me.0;
                let mut s = m.lock().expect("lock");
                s.push_str(&line);
                s.push('\n');
                c.notify_all();
            }
        });
        self
    }

    pub fn text(&self) -> String {
        self.0.0.lock().expect("lock").clone()
    }

    /// Waits until the output contains `needle`; false if PATIENCE runs out.
    pub fn wait_for(&self, needle: &str) -> bool {
        let deadline = Instant::now() + PATIENCE;
        let (m, c) = &*self.0;
        let mut s = m.lock().expect("lock");
        while !s.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = c.wait_timeout(s, left).expect("wait").0;
        }
        true
    }
}

/// A child process killed when dropped, with its stdout and stderr collected.
pub struct Proc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub out: Output,
    pub err: Output,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let out = Output::default().collect(child.stdout.take().expect("stdout"));
        let err = Output::default().collect(child.stderr.take().expect("stderr"));
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            out,
            err,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn write_stdin(&mut self, text: &str) {
        let s = self.stdin.as_mut().expect("stdin");
        s.write_all(text.as_bytes()).expect("write stdin");
        s.flush().expect("flush stdin");
    }

    /// Waits for exit; panics (with the output) if PATIENCE runs out.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // Let the collector threads drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "process did not exit\nstdout:\n{}\nstderr:\n{}",
                    self.out.text(),
                    self.err.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stock `openssl s_server` that requires a client certificate and issues session IDs only.
pub fn s_server(pki: &Pki, transport: &str, suite: &str, port: u16) -> Proc {
    s_server_with(pki, transport, suite, port, &["-no_ticket"])
}

/// A stock `openssl s_server` that requires a client certificate, with `extra` options
/// (`-no_ticket`: session IDs only; none: a session cache and tickets; `-no_cache`: tickets
/// only). `transport` `tls13` runs it with `-tls1_3` (its `-cipher` is then unused).
pub fn s_server_with(pki: &Pki, transport: &str, suite: &str, port: u16, extra: &[&str]) -> Proc {
    let cipher = match suite {
        "ccm8" => "ECDHE-ECDSA-AES128-CCM8",
        _ => "ECDHE-ECDSA-AES128-GCM-SHA256",
    };
    let proto = match transport {
        "dtls" => "-dtls1_2",
        "tls13" => "-tls1_3",
        _ => "-tls1_2",
    };
    let p = Proc::spawn(
        Command::new("openssl")
            .current_dir(&pki.dir)
            .args(["s_server", proto, "-accept", &format!("127.0.0.1:{port}")])
            .args([
                "-cert",
                "server.pem",
                "-key",
                "server.key",
                "-CAfile",
                "ca.pem",
            ])
            .args(["-Verify", "1", "-cipher", cipher])
            .args(extra),
    );
    assert!(
        p.out.wait_for("ACCEPT"),
        "s_server did not start: {}",
        p.err.text()
    );
    p
}

/// A stock `gnutls-serv --echo` on `port` (all addresses: it has no listen-address option)
/// requiring a client certificate, with `priority` and `extra` options; waits until it
/// listens. stdbuf: its stdout is block-buffered on a pipe, and what it prints there about a
/// connection must arrive when printed ("listening" goes to stderr).
pub fn gnutls_serv(gnutls: &Path, pki: &Pki, port: u16, priority: &str, extra: &[&str]) -> Proc {
    let stdbuf = which("stdbuf").expect("stdbuf (coreutils) is not installed");
    let server = Proc::spawn(
        Command::new(stdbuf)
            .arg("-oL")
            .arg(gnutls)
            .current_dir(&pki.dir)
            .args(extra)
            .args(["--port", &port.to_string(), "--echo"])
            .args([
                "--x509certfile",
                "server.pem",
                "--x509keyfile",
                "server.key",
            ])
            .args(["--x509cafile", "ca.pem", "--require-client-cert"])
            .args(["--verify-client-cert", "--priority", priority]),
    );
    assert!(
        server.err.wait_for("Server listening on IPv4"),
        "gnutls-serv did not start:\n{}\n{}",
        server.out.text(),
        server.err.text()
    );
    server
}

/// Runs the device `bin` with `cfg`, `--send line --expect-reply 30` (an echo server sends the
/// line back), waits for it and asserts it succeeded; returns its stdout.
pub fn device_echo(bin: &Path, cfg: &Path, line: &str, agent: &Proc, server: &Proc) -> String {
    device_ok(
        bin,
        cfg,
        &["--send", line, "--expect-reply", "30"],
        agent,
        server,
    )
}

/// Runs the device `bin` with `cfg` and `args`, waits for it and asserts it succeeded (with
/// every process's output if not); returns its stdout.
pub fn device_ok(bin: &Path, cfg: &Path, args: &[&str], agent: &Proc, server: &Proc) -> String {
    let mut device = Proc::spawn(Command::new(bin).arg("--config").arg(cfg).args(args));
    let status = device.wait();
    let out = device.out.text();
    assert!(
        status.success(),
        "device failed\nstdout:\n{out}\nstderr:\n{}\nagent:\n{}\nserver:\n{}{}",
        device.err.text(),
        agent.err.text(),
        server.out.text(),
        server.err.text()
    );
    out
}

/// The first `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Asserts that s_server's output shows a reused session with the device's certificate and
/// `cipher`; returns that part of the output.
pub fn assert_resumed_by_device<'a>(server_out: &'a str, cipher: &str) -> &'a str {
    let block = reused_block(server_out)
        .unwrap_or_else(|| panic!("s_server shows no reused session:\n{server_out}"));
    assert!(
        block.contains("subject=CN = sensor-1, O = D2TLS Devices"),
        "reused session without the device's subject:\n{block}"
    );
    assert!(block.contains(&format!("CIPHER is {cipher}")), "{block}");
    block
}

/// Starts `d2tls-agent` and waits until it listens.
pub fn start_agent(bin: &Path, config: &Path) -> Proc {
    let p = Proc::spawn(Command::new(bin).arg("--config").arg(config));
    assert!(
        p.out.wait_for("listening on"),
        "agent did not start: {}",
        p.err.text()
    );
    p
}

/// The part of s_server's output about the connection that reused a session: from the
/// session parameters printed before it up to "Reused session-id".
pub fn reused_block(server_out: &str) -> Option<&str> {
    let end = server_out.find("Reused session-id")?;
    let start = server_out[..end]
        .rfind("BEGIN SSL SESSION PARAMETERS")
        .unwrap_or(0);
    Some(&server_out[start..end])
}

/// Whether `needle` occurs anywhere in the writable memory of process `pid`.
pub fn memory_contains(pid: u32, needle: &[u8]) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    let mut mem =
        std::fs::File::open(format!("/proc/{pid}/mem")).expect("open mem (needs ptrace rights)");
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        if buf.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

/// Sanity check that the scanner reads memory at all: it must find `needle` in our own process.
pub fn scanner_works(needle: &[u8]) -> bool {
    let held = std::hint::black_box(needle.to_vec());
    let found = memory_contains(std::process::id(), &held);
    drop(held);
    found
}
