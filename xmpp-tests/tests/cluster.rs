//! Several nodes, one service, against real parts: two mftd processes
//! under one component JID on ejabberd (which balances between component
//! connections), one OpenSSH sshd as the shared file server with a
//! directory per node, one PostgreSQL, HAProxy in front of the HTTP
//! endpoints with `/readyz` health checks, slixmpp clients.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xmpp_tests::client;
use xmpp_tests::ejabberd::{Ejabberd, RouterOptions};
use xmpp_tests::http::get_with;
use xmpp_tests::mftd::{binary, mint_slot, mint_slot_with_key, Mftd, MftdOptions, TOKEN_KEY};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::{free_port, kill_tree, wait_for_port, Guard};
use xmpp_tests::sshd::Sshd;

const SECRET: &str = "cluster-component-secret";
const ALICE: (&str, &str) = ("alice@example.test", "alice-pw");

struct Node {
    mftd: Mftd,
    admin_port: u16,
}

struct Cluster {
    ejabberd: Ejabberd,
    pg: Postgres,
    sshd: Sshd,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

fn node(ejabberd: &Ejabberd, sshd: &Sshd, pg: &Postgres, dir: &Path, name: &str) -> Node {
    node_with(ejabberd, sshd, pg, dir, name, Vec::new())
}

/// A node with extra environment overrides.
fn node_with(
    ejabberd: &Ejabberd,
    sshd: &Sshd,
    pg: &Postgres,
    dir: &Path,
    name: &str,
    mut env: Vec<(String, String)>,
) -> Node {
    let key = sshd.node_key(dir, name);
    let admin_port = free_port();
    let opts = MftdOptions {
        router: ejabberd.component_addr(),
        component_jid: "upload.example.test".into(),
        secret: SECRET.into(),
        limits: "max_file_size = \"10 MiB\"\nslots_per_minute = 0\n".into(),
        store: Some(sshd.store_toml(name, &key)),
        extra: format!(
            "[database]\nurl = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ncheck_interval = \"300ms\"\n",
            pg.url()
        ),
        http_port: None,
    };
    env.push(("MFTD_NODE__NAME".into(), name.into()));
    let mftd = Mftd::start_with(&opts, binary(), env);
    mftd.wait_connected(1);
    Node { mftd, admin_port }
}

fn cluster(nodes: usize) -> Cluster {
    let ejabberd = Ejabberd::start_router(&RouterOptions {
        secret: SECRET.into(),
        users: vec![("alice".into(), "alice-pw".into())],
        mftd_module: None,
    });
    let pg = Postgres::start();
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let nodes = (1..=nodes)
        .map(|i| node(&ejabberd, &sshd, &pg, dir.path(), &format!("node_{i}")))
        .collect();
    Cluster {
        ejabberd,
        pg,
        sshd,
        nodes,
        dir,
    }
}

impl Cluster {
    /// One client upload through ejabberd (slot, PUT, GET); the JSON result.
    fn upload(&self, name: &str) -> serde_json::Value {
        let file = self.dir.path().join(name);
        std::fs::write(&file, name.repeat(2000)).unwrap();
        client::run_at(
            &self.ejabberd.c2s_addr(),
            ALICE.0,
            ALICE.1,
            &["upload", "--file", file.to_str().unwrap()],
        )
    }

    fn stored(&self, name: &str) -> String {
        let out = self.upload(name);
        assert_eq!(out["put_status"], 201, "{out}");
        out["get_url"].as_str().unwrap().to_owned()
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.mftd.log())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The path of a URL (`/resource/name`).
fn path_of(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap();
    &rest[rest.find('/').unwrap()..]
}

fn sha256_of(body: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(body.as_bytes()))
}

/// HAProxy in front of the nodes' HTTP endpoints, checking `/readyz` on
/// their admin listeners every 300 ms.
struct Haproxy {
    guard: Guard,
    port: u16,
}

impl Haproxy {
    fn start(dir: &Path, nodes: &[Node]) -> Haproxy {
        let port = free_port();
        let mut cfg = format!(
            "global\n  maxconn 512\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  retries 2\n  option redispatch\n\
             frontend uploads\n  bind 127.0.0.1:{port}\n  default_backend mftd\n\
             backend mftd\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check expect status 200\n\
             \x20 default-server inter 300ms fall 2 rise 2\n"
        );
        for (i, n) in nodes.iter().enumerate() {
            cfg.push_str(&format!(
                "  server node_{} 127.0.0.1:{} check port {}\n",
                i + 1,
                n.mftd.http_port,
                n.admin_port
            ));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (Debian package haproxy) is installed");
        let guard = Guard(Some(child));
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "haproxy did not listen"
        );
        Haproxy { guard, port }
    }

    fn get(&self, path: &str) -> (u16, String) {
        get_with(&format!("http://127.0.0.1:{}{path}", self.port), &[])
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        kill_tree(self.guard.pid());
    }
}

#[test]
fn any_node_serves_any_file_directly_and_behind_haproxy() {
    let mut c = cluster(2);
    let urls: Vec<String> = (0..4).map(|i| c.stored(&format!("doc{i}.txt"))).collect();
    for url in &urls {
        let (status, original) = get_with(url, &[]);
        assert_eq!(status, 200);
        for n in &c.nodes {
            let (status, body) = get_with(
                &format!("http://127.0.0.1:{}{}", n.mftd.http_port, path_of(url)),
                &[],
            );
            assert_eq!(status, 200, "{url} via {}\n{}", n.mftd.http_port, c.logs());
            assert_eq!(sha256_of(&body), sha256_of(&original));
        }
    }
    // Each download row names the node that served it; each upload the node
    // that stored it, and both nodes stored some (ejabberd balances).
    assert_eq!(
        c.pg.psql(
            "SELECT string_agg(DISTINCT node, ',' ORDER BY node) FROM aft_log WHERE method = 'GET'"
        )
        .trim(),
        "node_1,node_2"
    );
    assert_eq!(
        c.pg.psql("SELECT count(*) FROM files f JOIN aft_log l ON l.filename = f.resource AND l.method = 'POST' WHERE f.node = l.node").trim(),
        "4"
    );
    // Behind HAProxy, one public address serves every file from either node.
    let proxy = Haproxy::start(c.dir.path(), &c.nodes);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.get(path_of(&urls[0])).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "haproxy never found a ready node"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for url in &urls {
        assert_eq!(proxy.get(path_of(url)).0, 200);
    }
    // Node 1 dies: HAProxy's /readyz checks take it out; every file is
    // still served, including those node 1 stored.
    c.nodes[0].mftd.kill9();
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..3 {
        for url in &urls {
            assert_eq!(proxy.get(path_of(url)).0, 200, "{url}\n{}", c.logs());
        }
    }
}

fn granted(node: &Node) -> usize {
    node.mftd.log().matches("slot granted").count()
}

#[test]
fn ejabberd_spreads_slots_over_nodes_and_a_killed_node_costs_at_most_one_upload() {
    let mut c = cluster(2);
    let out = client::run_at(
        &c.ejabberd.c2s_addr(),
        ALICE.0,
        ALICE.1,
        &[
            "slots",
            "--to",
            "upload.example.test",
            "--count",
            "200",
            "--parallel",
            "10",
        ],
    );
    assert_eq!(out["count"], 200, "{out}");
    let (a, b) = (granted(&c.nodes[0]), granted(&c.nodes[1]));
    println!("slots granted: node_1 {a}, node_2 {b}");
    assert_eq!(a + b, 200);
    assert!(a >= 20 && b >= 20, "ejabberd did not balance: {a} / {b}");

    let before_kill: Vec<String> = (0..3)
        .map(|i| c.stored(&format!("before{i}.txt")))
        .collect();
    c.nodes[0].mftd.kill9();
    let killed_at = Instant::now();
    let mut failures = Vec::new();
    for i in 0..6 {
        let out = c.upload(&format!("after{i}.txt"));
        if out["put_status"] != 201 {
            failures.push((i, killed_at.elapsed(), out.to_string()));
        }
    }
    println!("uploads failed after the kill: {failures:?}");
    assert!(
        failures.iter().all(|(i, _, _)| *i == 0),
        "only the first upload after the kill may fail: {failures:?}\n{}",
        c.ejabberd.log()
    );
    // Node 1's files stay downloadable through node 2.
    let survivor = c.nodes[1].mftd.http_port;
    for url in &before_kill {
        let (status, _) = get_with(&format!("http://127.0.0.1:{survivor}{}", path_of(url)), &[]);
        assert_eq!(status, 200, "{url}");
    }
    // Node 1 comes back clean: its start-up recovery runs, and `mftd verify`
    // finds its files and rows in agreement.
    c.nodes[0].mftd.restart();
    c.nodes[0].mftd.wait_connected(2);
    let verify = Command::new(binary())
        .args(["verify", "--config"])
        .arg(c.nodes[0].mftd.config_path())
        .env("MFTD_NODE__NAME", "node_1")
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let _ = &c.sshd;
}

fn curl_put(url: &str, token: &str, file: &Path) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
        .arg(file)
        .args(["-H", &format!("Authorization: Bearer {token}"), url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_rotated_token_key_keeps_earlier_slots_valid_and_retired_ones_out() {
    let dir = tempfile::tempdir().unwrap();
    let node_dir: PathBuf = dir.path().join("node_1");
    let opts = MftdOptions {
        router: format!("127.0.0.1:{}", free_port()),
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: String::new(),
        store: Some(format!(
            "kind = \"local\"\npath = \"{}\"",
            node_dir.display()
        )),
        extra: String::new(),
        http_port: None,
    };
    let previous = String::from_utf8(TOKEN_KEY.to_vec()).unwrap();
    let mftd = Mftd::start_with(
        &opts,
        binary(),
        vec![
            (
                "MFTD_HTTP__TOKEN_KEY".into(),
                "the-new-token-key-0123456789".into(),
            ),
            (
                "MFTD_HTTP__PREVIOUS_TOKEN_KEYS".into(),
                format!("[\"{previous}\"]"),
            ),
        ],
    );
    let file = dir.path().join("f.bin");
    std::fs::write(&file, b"0123456789").unwrap();
    let base = format!("http://127.0.0.1:{}", mftd.http_port);
    let (path, token) = mint_slot(10, "old-key.bin", mft_storage::ChatType::Im);
    assert_eq!(
        curl_put(&format!("{base}{path}"), &token, &file),
        "201",
        "{}",
        mftd.log()
    );
    let (path, token) = mint_slot_with_key(
        b"the-new-token-key-0123456789",
        10,
        "new.bin",
        mft_storage::ChatType::Im,
    );
    assert_eq!(curl_put(&format!("{base}{path}"), &token, &file), "201");
    let (path, token) = mint_slot_with_key(
        b"a-retired-key-0123456789abc",
        10,
        "retired.bin",
        mft_storage::ChatType::Im,
    );
    assert_eq!(curl_put(&format!("{base}{path}"), &token, &file), "403");
}

/// Prosody takes one connection per component JID and refuses a second
/// with `conflict`: a second node under the same JID is a standby that
/// connects when the first goes (docs/cluster.md lists the patterns).
#[test]
fn prosody_keeps_one_connection_per_jid_and_a_standby_takes_over() {
    use xmpp_tests::prosody::{Prosody, ProsodyOptions};
    let prosody = Prosody::start(ProsodyOptions::default());
    let mut first = Mftd::start(&MftdOptions::for_prosody(&prosody));
    first.wait_connected(1);
    let admin_port = free_port();
    let mut standby_opts = MftdOptions::for_prosody(&prosody);
    standby_opts.extra =
        format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ncheck_interval = \"500ms\"\n");
    let standby = Mftd::start(&standby_opts);
    assert!(
        standby.wait_for_log(
            "another connection holds this component JID",
            1,
            Duration::from_secs(10)
        ),
        "{}",
        standby.log()
    );
    assert!(!standby.log().contains("XMPP: connected and authenticated"));
    // A standby serves HTTP transfers: ready for a load balancer, and says
    // it does not hold the link; only /readyz/xmpp answers 503.
    let admin = format!("http://127.0.0.1:{admin_port}");
    let curl = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &format!("{admin}{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut readyz = curl("/readyz");
    while !readyz.ends_with("\n200") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        readyz = curl("/readyz");
    }
    assert!(readyz.starts_with("ready\nxmpp: standby"), "{readyz}");
    assert!(readyz.ends_with("\n200"), "{readyz}");
    let xmpp = curl("/readyz/xmpp");
    assert!(xmpp.ends_with("\n503"), "{xmpp}");
    // It serves: the PUT of a slot signed with the service's key (as the
    // active node signs them) and its download.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), b"stored through the standby").unwrap();
    let (path, token) = mint_slot(26, "standby.txt", mft_storage::ChatType::Im);
    let base = format!("http://127.0.0.1:{}", standby.http_port);
    assert_eq!(
        curl_put(&format!("{base}{path}"), &token, file.path()),
        "201"
    );
    let (status, body) = get_with(&format!("{base}{path}"), &[]);
    assert_eq!((status, body.as_str()), (200, "stored through the standby"));
    first.kill9();
    standby.wait_connected(1);
    let found = client::run(&prosody, ALICE.0, "alice-pw", &["discover"]);
    assert_eq!(
        found["services"][0]["jid"], "upload.example.test",
        "{found}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), b"after the take-over").unwrap();
    let out = client::run(
        &prosody,
        ALICE.0,
        "alice-pw",
        &["upload", "--file", file.path().to_str().unwrap()],
    );
    assert_eq!(out["put_status"], 201, "{out}");
}

/// `[limits] slots_per_minute` / `slot_burst` hold for the service, not per
/// node: two nodes behind ejabberd grant one user a burst of 4 in all, not
/// 4 each (the bucket lives in PostgreSQL).
#[test]
fn the_slot_rate_holds_across_nodes() {
    let ejabberd = Ejabberd::start_router(&RouterOptions {
        secret: SECRET.into(),
        users: vec![("alice".into(), "alice-pw".into())],
        mftd_module: None,
    });
    let pg = Postgres::start();
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let limits = || {
        vec![
            ("MFTD_LIMITS__SLOTS_PER_MINUTE".to_owned(), "1".to_owned()),
            ("MFTD_LIMITS__SLOT_BURST".to_owned(), "4".to_owned()),
        ]
    };
    let nodes: Vec<Node> = (1..=2)
        .map(|i| {
            node_with(
                &ejabberd,
                &sshd,
                &pg,
                dir.path(),
                &format!("node_{i}"),
                limits(),
            )
        })
        .collect();
    let out = client::run_at(
        &ejabberd.c2s_addr(),
        ALICE.0,
        ALICE.1,
        &[
            "slots",
            "--to",
            "upload.example.test",
            "--count",
            "40",
            "--parallel",
            "8",
        ],
    );
    assert_eq!(out["count"], 40, "{out}");
    let per_node: Vec<usize> = nodes.iter().map(granted).collect();
    println!("slots granted per node: {per_node:?}");
    // ejabberd usually spreads the requests over both nodes (each would
    // grant 4 with a per-node bucket); on a loaded machine it has sent all
    // to one node, when the run shows nothing beyond one node's limit.
    if per_node.contains(&0) {
        println!("ejabberd used one node only this run: {per_node:?}");
    }
    let total: usize = per_node.iter().sum();
    // A minute's refill (1 token) may land while the requests run.
    assert!(
        (4..=5).contains(&total),
        "granted {total} ({per_node:?}), the burst is 4 for the whole service"
    );
    assert_eq!(out["granted"], total, "{out}");
    assert!(
        out["refused"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c == "resource-constraint"),
        "{out}"
    );
}
