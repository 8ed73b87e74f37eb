//! The README's main job: `tp demo` brings the demo hierarchy and the local key resolver up
//! on loopback, and every `dig` and `tp` command it prints works.

mod common;

use std::process::{Command, Stdio};

use common::{bin, dig, require_tool};

#[test]
fn the_demo_comes_up_and_its_dig_commands_work() {
    require_tool("dig");
    let state = tempfile::tempdir().unwrap();
    let zones = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
    let mut demo = Command::new(bin("tp"))
        .arg("demo")
        .arg("--zones")
        .arg(&zones)
        .arg("--state")
        .arg(state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Read what the demo prints until it is up.
    let mut out = String::new();
    let mut reader = std::io::BufReader::new(demo.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert!(n > 0, "the demo stopped early:\n{out}");
        out.push_str(&line);
        if line.contains("Ctrl-C stops everything") {
            break;
        }
    }
    assert!(
        out.contains("resolved through 3 key servers, 1 verified key(s)"),
        "{out}"
    );
    let commands: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("dig "))
        .collect();
    assert!(commands.len() >= 5, "{out}");
    for c in commands {
        let args: Vec<&str> = c
            .split('#')
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .collect();
        let reply = dig(&args);
        if c.contains("-p 5301") {
            assert!(
                reply
                    .lines()
                    .any(|l| l.contains("flags:") && l.contains(" ad")),
                "the key resolver's answer lacks AD:\n{reply}"
            );
        }
        assert!(
            reply.contains("status: NOERROR") || reply.contains("XFR size"),
            "{c}:\n{reply}"
        );
        assert!(
            reply.contains("ANSWER: 1")
                || reply.contains("ANSWER: 2")
                || reply.contains("AUTHORITY: 1")
                || reply.contains("XFR size"),
            "{c}:\n{reply}"
        );
    }
    let verified = out.lines().find(|l| l.contains("dig --anchors")).unwrap();
    let args: Vec<&str> = verified
        .split('#')
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .collect();
    let v = common::ok(Command::new(bin("tp")).args(&args));
    assert!(v.contains("signature: valid"), "{v}");
    // The key resolver, as printed: the pair from DNS and the key, cold then from the cache.
    let resolve = out
        .lines()
        .find(|l| l.contains(" resolve --config"))
        .unwrap();
    let args: Vec<&str> = resolve
        .split('#')
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .collect();
    let r = common::ok(Command::new(bin("tp")).args(&args));
    assert!(
        r.contains("www.example.com.\t127.0.0.10\t")
            && r.contains("cache miss: 3 queries")
            && r.contains("cache hit: 0 queries"),
        "{r}"
    );
    // TLS with no certificate: www's key, as resolved, is the one its service presents.
    let connect = out
        .lines()
        .find(|l| l.contains(" connect --config"))
        .unwrap();
    let args: Vec<&str> = connect
        .split('#')
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .collect();
    let c = common::ok(Command::new(bin("tp")).args(&args));
    assert!(
        c.contains("with TLSv1_3")
            && c.contains("= the key published for www.example.com. at 127.0.0.10")
            && c.contains("hello over TwinPeaks TLS"),
        "{c}"
    );
    // Online enrollment over DNS UPDATE + TSIG, as printed: the new entity is served at once.
    let enroll = out
        .lines()
        .find(|l| l.contains(" enroll --server"))
        .unwrap();
    let (cmd, comment) = enroll.split_once('#').unwrap();
    let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
    let e = common::ok(Command::new(bin("tp")).args(&args));
    assert!(e.contains("enrolled"), "{e}");
    let new_name = comment.split_whitespace().nth(1).unwrap();
    let served = dig(&["-p", "5300", "@127.0.0.4", new_name, "TYPE65300"]);
    assert!(served.contains("ANSWER: 1"), "{served}");
    let d = out
        .lines()
        .find(|l| l.trim_start().starts_with("dig -p 5301"))
        .unwrap();
    assert!(d.contains("TYPE65300"), "{d}");
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(demo.id().to_string())
        .status();
    assert!(demo.wait().unwrap().success());
    // Second run reuses the keys made on the first.
    let again = common::ok(
        Command::new(bin("tp"))
            .arg("demo")
            .arg("--check")
            .arg("--zones")
            .arg(&zones)
            .arg("--state")
            .arg(state.path()),
    );
    assert!(
        !again.contains("first run") && again.contains("1 verified key(s)"),
        "{again}"
    );
}
