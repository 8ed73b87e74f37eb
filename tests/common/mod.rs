//! Shared plumbing of the end-to-end suite: where the workspace binaries are, free loopback ports.
#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

/// Path of a workspace binary built by `cargo test` (target/<profile>/<name>).
///
/// `cargo test` builds a package's binaries when that package has integration tests, so
/// `server/` and `agent/` each keep at least one test of their own.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the suite with `cargo test` from the workspace root",
        path.display()
    );
    // `cargo test --test X` builds only this package, not the binaries of the others: refuse
    // to test a binary older than the sources it is built from.
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // A binary's sources: its library crates and its own file under src/bin (another binary's
    // edit does not relink it).
    let sources: Vec<PathBuf> = if name.starts_with("d2tls") {
        vec![root.join("agent/src")]
    } else {
        let mut v = vec![root.join("plugin/src")];
        for entry in std::fs::read_dir(root.join("server/src"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name() != "bin" {
                v.push(entry.path());
            }
        }
        v.push(root.join(format!("server/src/bin/{name}.rs")));
        v.push(root.join(format!("server/src/bin/{name}")));
        v
    };
    let newest = sources.iter().filter_map(|d| newest_mtime(d)).max();
    if let (Some(built), Some(newest)) = (built, newest) {
        assert!(
            built >= newest,
            "{} is older than its sources; run `cargo test` (or `cargo build --workspace --bins`) first",
            path.display()
        );
    }
    path
}

fn newest_mtime(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    if dir.is_file() {
        return std::fs::metadata(dir).and_then(|m| m.modified()).ok();
    }
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        let t = if p.is_dir() {
            newest_mtime(&p)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// A port free for both UDP and TCP on `ip` at the time of the call.
pub fn free_port(ip: &str) -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind((ip, 0)).expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// Fail loudly (not skip) when a real peer the suite needs is missing: CI installs them.
pub fn require_tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        for cand in [PathBuf::from(dir).join(name)] {
            if cand.is_file() {
                return cand;
            }
        }
    }
    for dir in ["/usr/sbin", "/sbin", "/usr/bin"] {
        let cand = PathBuf::from(dir).join(name);
        if cand.is_file() {
            return cand;
        }
    }
    panic!(
        "`{name}` is not installed; `bash .ci/run` installs the Debian packages the suite needs"
    );
}

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A child process stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn spawn(what: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc {
            child,
            what: what.to_string(),
        }
    }

    /// Send a signal by name (TERM, HUP…).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Stop with SIGTERM and return the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Run a command to completion and return its output (never fails the test by itself).
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run a command that must succeed; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig` with the given arguments; returns stdout.
pub fn dig(args: &[&str]) -> String {
    ok(Command::new(require_tool("dig"))
        .args(["+time=2", "+tries=2"])
        .args(args))
}

/// Wait until a DNS server at ip:port answers a SOA query for `zone`.
pub fn wait_dns(ip: &str, port: u16, zone: &str, proc_: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run(Command::new(require_tool("dig"))
            .args(["+time=1", "+tries=1", "-p", &port.to_string()])
            .arg(format!("@{ip}"))
            .args([zone, "SOA"]));
        if String::from_utf8_lossy(&out.stdout).contains("status: NOERROR") {
            return;
        }
        if let Ok(Some(status)) = proc_.child.try_wait() {
            panic!("{} exited early: {status}", proc_.what);
        }
        assert!(
            Instant::now() < deadline,
            "{} did not answer for {zone}",
            proc_.what
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tp` with arguments.
pub fn tp() -> Command {
    Command::new(bin("tp"))
}

/// A key server made with the real `tp` commands and run as the real `tpkd` process.
pub struct KeyServer {
    pub dir: PathBuf,
    pub name: String,
    pub ip: String,
    pub port: u16,
    pub config: PathBuf,
    pub zone_file: PathBuf,
    pub state: PathBuf,
    pub proc_: Option<Proc>,
}

impl KeyServer {
    /// A self-issued (root/island) key server for `name` at `ip`, its zone holding `zone_extra`
    /// after SOA and NS, its config `cfg_extra` after the basic lines.
    pub fn new(dir: &Path, name: &str, ip: &str, zone_extra: &str, cfg_extra: &str) -> KeyServer {
        let port = free_port(ip);
        let state = dir.join("state");
        ok(tp()
            .args(["kgc-setup", "--name", name, "--root-ip", ip])
            .arg("--state")
            .arg(&state)
            .args(["--port", &port.to_string()]));
        let zone_file = dir.join("zone.keys");
        // The in-zone name of the key server (glue): ks.<zone>, or ks. at the root.
        let ns = if name == "." {
            "ks.".to_string()
        } else {
            format!("ks.{name}")
        };
        std::fs::write(
            &zone_file,
            format!(
                "$ORIGIN {name}\n$TTL 3600\n@ IN SOA {ns} hostmaster.{ns} 1 7200 3600 1209600 300\n@ IN NS {ns}\nks IN A {ip}\n{zone_extra}"
            ),
        )
        .unwrap();
        let config = dir.join("tpkd.toml");
        let acl = if cfg_extra.contains("axfr_allow") {
            ""
        } else {
            "axfr_allow = [\"127.0.0.0/8\"]\n"
        };
        std::fs::write(
            &config,
            format!(
                "name = \"{name}\"\nlisten = [\"{ip}:{port}\"]\nstate_dir = \"state\"\nzone_file = \"zone.keys\"\n{acl}{cfg_extra}"
            ),
        )
        .unwrap();
        KeyServer {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ip: ip.to_string(),
            port,
            config,
            zone_file,
            state,
            proc_: None,
        }
    }

    /// A child key server for `name` at `ip`, its key-server record issued by `parent` into
    /// the parent's zone file (offline flow). Not started.
    pub fn child(dir: &Path, parent: &KeyServer, name: &str, ip: &str) -> KeyServer {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port(ip);
        let state = dir.join("state");
        ok(tp()
            .args(["kgc-setup", "--name", name])
            .arg("--state")
            .arg(&state));
        ok(tp()
            .args(["keygen", "--name", name, "--ip", ip])
            .arg("--issuer-params")
            .arg(parent.params())
            .arg("--out")
            .arg(state.join("server")));
        ok(tp()
            .arg("issue")
            .arg("--state")
            .arg(&parent.state)
            .arg("--request")
            .arg(state.join("server.req"))
            .arg("--zone-file")
            .arg(&parent.zone_file)
            .arg("--response")
            .arg(state.join("server.resp"))
            .args(["--key-server-port", &port.to_string()])
            .arg("--child-params")
            .arg(state.join("params")));
        ok(tp()
            .arg("finalize")
            .arg("--secret")
            .arg(state.join("server.secret"))
            .arg("--response")
            .arg(state.join("server.resp"))
            .arg("--out")
            .arg(state.join("server.key")));
        KeyServer::with_files(dir, name, ip, port, "")
    }

    /// A child key server whose `<dir>/state` holds its keys: writes its zone file (SOA, NS,
    /// glue) and its config (`cfg_extra` after the basic lines). Not started.
    pub fn with_files(dir: &Path, name: &str, ip: &str, port: u16, cfg_extra: &str) -> KeyServer {
        let zone_file = dir.join("zone.keys");
        std::fs::write(
            &zone_file,
            format!("$ORIGIN {name}\n$TTL 3600\n@ IN SOA ks.{name} hostmaster.{name} 1 7200 3600 1209600 300\n@ IN NS ks.{name}\nks IN A {ip}\n"),
        )
        .unwrap();
        let config = dir.join("tpkd.toml");
        std::fs::write(
            &config,
            format!("name = \"{name}\"\nlisten = [\"{ip}:{port}\"]\nstate_dir = \"state\"\nzone_file = \"zone.keys\"\naxfr_allow = [\"127.0.0.0/8\"]\n{cfg_extra}"),
        )
        .unwrap();
        KeyServer {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ip: ip.to_string(),
            port,
            config,
            zone_file,
            state: dir.join("state"),
            proc_: None,
        }
    }

    /// Requests this running tpkd has received (UDP + TCP), from `tp ctl status`.
    pub fn queries(&self) -> u64 {
        let out = ok(tp()
            .arg("ctl")
            .arg("--config")
            .arg(&self.config)
            .arg("status"));
        out.lines()
            .filter(|l| l.starts_with("queries_"))
            .filter_map(|l| l.split('=').nth(1)?.trim().parse::<u64>().ok())
            .sum()
    }

    pub fn start(&mut self) {
        self.launch(&[], false);
    }

    /// Start with the log in `<dir>/tpkd.log` (see [`KeyServer::log`]).
    pub fn start_logged(&mut self) {
        self.launch(&[], true);
    }

    /// Start through `prefix` (e.g. `prlimit --nofile=64 --`, which execs tpkd), logged.
    pub fn start_logged_under(&mut self, prefix: &[&str]) {
        self.launch(prefix, true);
    }

    fn launch(&mut self, prefix: &[&str], logged: bool) {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin("tpkd"));
                c
            }
            None => Command::new(bin("tpkd")),
        };
        cmd.arg("--config").arg(&self.config);
        if logged {
            cmd.stderr(std::fs::File::create(self.dir.join("tpkd.log")).unwrap());
        }
        let mut p = Proc::spawn(&format!("tpkd {}", self.name), &mut cmd);
        wait_dns(&self.ip, self.port, &self.name, &mut p);
        self.proc_ = Some(p);
    }

    /// The log of a server started with [`KeyServer::start_logged`].
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tpkd.log")).unwrap()
    }

    /// tpkd's process ID, while it runs.
    pub fn pid(&self) -> u32 {
        self.proc_.as_ref().expect("tpkd is running").child.id()
    }

    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.proc_.take().map(|mut p| p.stop())
    }

    pub fn params(&self) -> PathBuf {
        self.state.join("params")
    }

    pub fn at(&self) -> String {
        format!("@{}", self.ip)
    }

    pub fn p(&self) -> String {
        self.port.to_string()
    }

    /// Keygen + issue into the zone file (offline flow) + finalize. Returns the key file.
    pub fn issue_to_file(&self, name: &str, ip: &str) -> PathBuf {
        let prefix = self.keygen(name, ip, &format!("{name}{ip}"));
        ok(tp()
            .arg("issue")
            .arg("--state")
            .arg(&self.state)
            .arg("--request")
            .arg(with_ext(&prefix, "req"))
            .arg("--zone-file")
            .arg(&self.zone_file)
            .arg("--response")
            .arg(with_ext(&prefix, "resp")));
        finalize(&prefix)
    }

    /// `tp keygen` for (name, ip) against this server's params into `<dir>/<tag>`: the prefix
    /// of `<tag>.secret` and `<tag>.req`.
    pub fn keygen(&self, name: &str, ip: &str, tag: &str) -> PathBuf {
        let prefix = self.dir.join(tag);
        self.keygen_to(name, ip, &prefix);
        prefix
    }

    /// `tp keygen` for `name` at `ip` under this server's params, out to `prefix`.
    pub fn keygen_to(&self, name: &str, ip: &str, prefix: &Path) {
        ok(tp()
            .args(["keygen", "--name", name, "--ip", ip])
            .arg("--issuer-params")
            .arg(self.params())
            .arg("--out")
            .arg(prefix));
    }

    /// Keygen, `tp ctl enroll` (the running tpkd), finalize: the key file `<dir>/<tag>.key`.
    pub fn ctl_enroll(&self, name: &str, ip: &str, tag: &str) -> PathBuf {
        let prefix = self.keygen(name, ip, tag);
        ok(tp()
            .arg("ctl")
            .arg("--config")
            .arg(&self.config)
            .arg("enroll")
            .arg("--request")
            .arg(with_ext(&prefix, "req"))
            .arg("--response")
            .arg(with_ext(&prefix, "resp")));
        finalize(&prefix)
    }
}

/// `prefix.ext`.
pub fn with_ext(prefix: &std::path::Path, ext: &str) -> PathBuf {
    PathBuf::from(format!("{}.{ext}", prefix.display()))
}

/// `tp finalize` of `prefix.secret` and `prefix.resp` into `prefix.key`.
pub fn finalize(prefix: &std::path::Path) -> PathBuf {
    let key = with_ext(prefix, "key");
    ok(tp()
        .arg("finalize")
        .arg("--secret")
        .arg(with_ext(prefix, "secret"))
        .arg("--response")
        .arg(with_ext(prefix, "resp"))
        .arg("--out")
        .arg(&key));
    key
}

/// RDATA hex of every TYPE65300 record in dig output (`\# len hex…` joined).
pub fn rdata_hex(dig_out: &str) -> Vec<(String, String)> {
    dig_out
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("TYPE65300"))
        .filter_map(|l| {
            let owner = l.split_whitespace().next()?.to_string();
            let (_, rest) = l.split_once("\\#")?;
            let mut words = rest.split_whitespace();
            let _len = words.next()?;
            Some((owner, words.collect::<String>()))
        })
        .collect()
}

/// A base64 TSIG secret of 32 bytes (made from `seed`) written to `dir/file` (0600): the file
/// and the secret's text.
pub fn tsig_secret(dir: &Path, file: &str, seed: u8) -> (PathBuf, String) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(seed))
        .collect();
    let text = base64_encode(&bytes);
    let path = dir.join(file);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    writeln!(f, "{text}").unwrap();
    (path, text)
}

/// Standard base64 with padding (the TSIG secrets' form).
pub fn base64_encode(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
