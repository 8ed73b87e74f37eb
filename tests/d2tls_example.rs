//! The newcomer's path: the shell block of docs/d2tls.md §2, run as it stands from the
//! workspace root (only the binaries' directory, the demo directory and the loopback address
//! are changed). The device sends a line and prints the server's reply, s_server shows the
//! resumed session under the device's subject, and the block's last line stops everything it
//! started.

mod common;
mod d2tls_common;

use std::path::Path;
use std::process::Command;

use d2tls_common::*;

/// The fenced `sh` block that follows `## 2. Running it` in docs/d2tls.md.
fn example_block(doc: &str) -> String {
    let section = doc
        .split_once("## 2. Running it")
        .expect("docs/d2tls.md has a section `## 2. Running it`")
        .1;
    let body = section
        .split_once("```sh\n")
        .expect("§2 has a ```sh block")
        .1;
    body.split_once("\n```")
        .expect("the block is closed")
        .0
        .to_string()
}

/// Processes whose command line names `dir` (the demo's files are all under it).
fn processes_under(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) {
            found.push((pid, cmd));
        }
    }
    found
}

#[test]
fn the_documented_example_runs_from_the_workspace_root_and_stops_cleanly() {
    common::require_tool("openssl");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/d2tls.md")).expect("read docs/d2tls.md");
    let block = example_block(&doc);
    let bin = common::bin("d2tls-agent");
    let _ = common::bin("d2tls-device");
    let bin_dir = bin.parent().expect("bin dir");
    let tmp = TempDir::new("example");
    let demo = tmp.path().join("demo");

    // The same block, with this build's binaries, a private demo directory and an address of
    // the tests' own loopback range.
    let mut script = String::from("set -e\n");
    for line in block.lines() {
        let line = match line.trim() {
            "cargo build --release -p d2tls" => continue,
            "BIN=$PWD/target/release" => format!("BIN={}", bin_dir.display()),
            "DEMO=$PWD/target/d2tls-demo" => format!("DEMO={}", demo.display()),
            _ => line.replace("127.0.0.1", "127.0.9.31"),
        };
        script.push_str(&line);
        script.push('\n');
    }
    assert!(
        script.contains(&format!("BIN={}", bin_dir.display()))
            && script.contains(&format!("DEMO={}", demo.display())),
        "the block no longer sets BIN and DEMO as expected:\n{block}"
    );
    let mut run = Proc::spawn(
        Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(root),
    );
    let status = run.wait();
    let out = run.out.text();
    let server_log = std::fs::read_to_string(demo.join("server.log")).unwrap_or_default();
    let agent_log = std::fs::read_to_string(demo.join("agent.log")).unwrap_or_default();
    let left = processes_under(&demo);
    for (pid, _) in &left {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
    assert!(
        status.success(),
        "the example failed\nstdout:\n{out}\nstderr:\n{}\nserver.log:\n{server_log}\nagent.log:\n{agent_log}",
        run.err.text()
    );
    // Stock s_server issues tickets: the device resumes with the one the agent got.
    assert!(
        out.contains("session reused=true resumed_by=ticket"),
        "{out}"
    );
    assert!(out.contains("sent: hello from the device"), "{out}");
    assert!(out.contains("received: hello from the server"), "{out}");
    let block = reused_block(&server_log)
        .unwrap_or_else(|| panic!("s_server shows no reused session:\n{server_log}"));
    assert!(block.contains("subject=CN = sensor-1"), "{block}");
    assert!(server_log.contains("hello from the device"), "{server_log}");
    assert!(
        agent_log.contains("event=\"context.forgotten\""),
        "{agent_log}"
    );
    assert!(
        left.is_empty(),
        "the example's last line left processes running: {left:?}"
    );
}
