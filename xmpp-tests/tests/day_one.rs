//! What an operator meets on the first day that the rest of the suite does
//! not: a second process started with a node name already in use, and the
//! configuration mistakes `check-config` must catch before `run` fails.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use xmpp_tests::mftd::{binary, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};

#[test]
fn a_second_process_with_a_node_name_in_use_refuses_naming_the_first() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let mut opts = MftdOptions::for_prosody(&prosody);
    opts.extra = format!("[database]\nurl = \"{}\"\n", pg.url());
    let first = Mftd::start(&opts);
    first.wait_connected(1);
    // The same configuration (same name, another directory) against the same log.
    let second_dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(first.config_path())
        .unwrap()
        .replace(
            &first.node_dir().display().to_string(),
            &second_dir.path().join("node_1").display().to_string(),
        )
        .replace(
            &format!("127.0.0.1:{}", first.http_port),
            &format!("127.0.0.1:{}", xmpp_tests::process::free_port()),
        );
    let config_path = second_dir.path().join("mftd.toml");
    std::fs::write(&config_path, config).unwrap();
    let started = Instant::now();
    let out = Command::new(binary())
        .args(["run", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second process ran: {stderr}");
    assert!(
        stderr.contains("another mftd is already running as node \"node_1\"")
            && stderr.contains(&format!("pid {}", first.pid())),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        !second_dir.path().join("node_1").join("files").exists(),
        "the second process touched its node directory"
    );
    // Once the first is gone the name is free again.
    let first_pid = first.pid();
    drop(first);
    let mut again = Command::new(binary())
        .args(["run", "--config"])
        .arg(&config_path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let still_running = again.try_wait().unwrap().is_none();
    let _ = again.kill();
    let out = again.wait_with_output().unwrap();
    assert!(
        still_running,
        "after {first_pid} stopped: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mftd check-config` on `config` with `env`: (success, stdout + stderr).
fn check_config(config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mftd.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    xmpp_tests::process::outcome(&out)
}

#[test]
fn check_config_catches_what_would_fail_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node_1");
    let good = format!(
        "[xmpp]\ncomponent_jid = \"upload.example.test\"\nsecret = \"s3cret-s3cret\"\n\
         [http]\nlisten = \"127.0.0.1:5050\"\npublic_url = \"https://upload.example.test/\"\n\
         token_key = \"0123456789abcdef0123\"\n[node]\nname = \"node_1\"\n\
         [store]\nkind = \"local\"\npath = \"{}\"\n",
        node.display()
    );
    let (ok, out) = check_config(&good, &[]);
    assert!(ok, "{out}");
    assert!(!out.contains("warning: http.public_url"), "{out}");
    // Plain HTTP towards clients works but is worth a warning.
    let (ok, out) = check_config(&good.replace("https://", "http://"), &[]);
    assert!(ok && out.contains("warning: http.public_url"), "{out}");
    let missing = dir.path().join("missing.pem");
    for (config, env, want) in [
        (
            good.replace(
                "token_key",
                &format!(
                    "tls_cert = {:?}\ntls_key = {:?}\ntoken_key",
                    missing, missing
                ),
            ),
            vec![],
            "http.tls_cert (line 7)",
        ),
        (
            good.replace(
                "https://upload.example.test/",
                "https://upload.example.test:99999/",
            ),
            vec![],
            "http.public_url (line 6)",
        ),
        (
            good.replace(
                "https://upload.example.test/",
                "https://upload example.test/",
            ),
            vec![],
            "http.public_url",
        ),
        (
            good.replace(
                "secret = \"s3cret-s3cret\"",
                "secret = \"s3cret-s3cret\"\nrouter = \"host:notaport\"",
            ),
            vec![],
            "xmpp.router (line 4)",
        ),
        (
            good.clone(),
            vec![("MFTD_XMPP_ROUTER", "10.1.1.1:5347")],
            "MFTD_XMPP__ROUTER",
        ),
        (
            format!(
                "{good}[database]\nurl = \"postgresql://mftd@db.example/mftd?sslmode=require\"\n"
            ),
            vec![],
            "database.ca_file",
        ),
        (
            good.replace("name = \"node_1\"", "name = \"node_9\""),
            vec![],
            "store.path",
        ),
    ] {
        let (ok, out) = check_config(&config, &env);
        assert!(!ok, "accepted:\n{config}\n{out}");
        assert!(out.contains(want), "wanted {want:?}:\n{out}");
    }
}
