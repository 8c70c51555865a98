//! A real Garage cluster for the S3 tests: three nodes on 127.0.0.1, each
//! with its own metadata and data directories, replication factor 3 (each
//! object on every node; a write needs two of them), a layout with one zone
//! per node, one bucket and one access key allowed on it. Nodes can be
//! killed (SIGKILL) and started again; the cluster is stopped on drop.
//!
//! The `garage` binary comes from `scripts/install-deps.sh` (built once with
//! cargo into the tool cache) or `MFTD_GARAGE`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, wait_for_port, Guard};

/// The region the cluster signs for.
pub const REGION: &str = "garage";
/// The bucket the tests use.
pub const BUCKET: &str = "mft-files";

/// Where the `garage` binary is.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("MFTD_GARAGE") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("MFTD_TOOL_CACHE").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/mftd-tools")
    });
    let cached = Path::new(&cache).join("bin/garage");
    if cached.exists() {
        return cached;
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("garage");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "garage missing: run scripts/install-deps.sh (it builds Garage into ~/.cache/mftd-tools)"
    )
}

/// One node: its configuration and, while it runs, its process.
struct Node {
    config: PathBuf,
    s3_port: u16,
    rpc_port: u16,
    guard: Guard,
}

/// A running three-node cluster with a bucket and a key.
pub struct Garage {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    /// The access key id allowed on [`BUCKET`].
    pub key_id: String,
    /// Its secret.
    pub secret: String,
}

impl Garage {
    /// Starts three nodes, joins them, applies a layout, and makes the
    /// bucket and the key.
    pub fn start() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let secret: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let (s3_port, rpc_port) = (free_port(), free_port());
            let root = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&root).unwrap();
            let config = root.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{root}/meta\"\ndata_dir = \"{root}/data\"\n\
                     db_engine = \"lmdb\"\nreplication_factor = 3\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\
                     [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                     root_domain = \".s3.garage.localhost\"\n",
                    root = root.display()
                ),
            )
            .unwrap();
            nodes.push(Node {
                config,
                s3_port,
                rpc_port,
                guard: Guard(None),
            });
        }
        let mut garage = Garage {
            dir,
            nodes,
            key_id: String::new(),
            secret: String::new(),
        };
        for i in 0..3 {
            garage.start_node(i);
        }
        garage.form_cluster();
        garage
    }

    /// The S3 endpoint of node `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// Kills node `i` (SIGKILL), as a machine dying would.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].guard = Guard(None);
    }

    /// Starts node `i` again on its directories and waits for its S3 port.
    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::File::create(node.config.with_file_name("garage.log")).unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting garage");
        node.guard = Guard(Some(child));
        assert!(
            wait_for_port(node.s3_port, Duration::from_secs(60)),
            "garage node {i} did not listen; its log:\n{}",
            self.log(i)
        );
    }

    /// Node `i`'s log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].config.with_file_name("garage.log"))
            .unwrap_or_default()
    }

    /// Runs the `garage` command line against node 0.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_on(0, args)
    }

    fn cli_on(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new(binary())
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .output()
            .expect("running garage");
        assert!(
            out.status.success(),
            "garage {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The node id (`<hex>@127.0.0.1:<rpc port>`) of node `i`, once it answers.
    fn node_id(&self, i: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new(binary())
                .arg("-c")
                .arg(&self.nodes[i].config)
                .args(["node", "id", "-q"])
                .output()
                .expect("running garage");
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && text.contains('@') {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "garage node {i} gave no id: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn form_cluster(&mut self) {
        let ids: Vec<String> = (0..3).map(|i| self.node_id(i)).collect();
        for id in &ids[1..] {
            self.cli(&["node", "connect", id]);
        }
        for (i, id) in ids.iter().enumerate() {
            let short = &id[..16];
            let zone = format!("dc{}", i + 1);
            self.cli(&["layout", "assign", short, "-z", &zone, "-c", "1G"]);
        }
        self.cli(&["layout", "apply", "--version", "1"]);
        self.wait_healthy();
        let key = self.cli(&["json-api", "CreateKey", r#"{"name":"mftd"}"#]);
        let key: serde_json::Value = serde_json::from_str(&key).unwrap();
        self.key_id = key["accessKeyId"].as_str().unwrap().to_owned();
        self.secret = key["secretAccessKey"].as_str().unwrap().to_owned();
        let bucket = self.cli(&[
            "json-api",
            "CreateBucket",
            &format!(r#"{{"globalAlias":"{BUCKET}"}}"#),
        ]);
        let bucket: serde_json::Value = serde_json::from_str(&bucket).unwrap();
        let bucket_id = bucket["id"].as_str().unwrap();
        self.cli(&[
            "json-api",
            "AllowBucketKey",
            &format!(
                r#"{{"bucketId":"{bucket_id}","accessKeyId":"{}","permissions":{{"read":true,"write":true,"owner":true}}}}"#,
                self.key_id
            ),
        ]);
    }

    /// Waits until every node says the cluster is healthy (connected to
    /// every storage node, every partition complete): after the layout is
    /// applied, or after a node came back.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        for i in 0..self.nodes.len() {
            loop {
                let out = Command::new(binary())
                    .arg("-c")
                    .arg(&self.nodes[i].config)
                    .args(["json-api", "GetClusterHealth"])
                    .output()
                    .expect("running garage");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let status = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["status"].as_str().map(str::to_owned));
                if out.status.success() && status.as_deref() == Some("healthy") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "garage node {i} does not see a healthy cluster: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }

    /// The `[store]` section for mftd on node `i`'s endpoint, with the
    /// secret in a file of the test's directory.
    pub fn store_section(&self, i: usize, node_name: &str) -> String {
        let secret_file = self.secret_file();
        if !secret_file.exists() {
            std::fs::write(&secret_file, &self.secret).unwrap();
        }
        format!(
            "kind = \"s3\"\n[store.s3]\nendpoint = \"{}\"\nregion = \"{REGION}\"\n\
             bucket = \"{BUCKET}\"\nprefix = \"mftFileStore/{node_name}\"\n\
             access_key_id = \"{}\"\nsecret_access_key_file = \"{}\"\n\
             io_timeout = \"10s\"\n",
            self.endpoint(i),
            self.key_id,
            secret_file.display()
        )
    }

    /// A GET on the bucket of node 0, signed by a few lines of Python's
    /// standard library (`hmac`, `hashlib`): a client independent of
    /// mftd's. `query` is a list of (name, value). Returns the body; panics
    /// on a failure.
    pub fn s3_get(&self, query: &[(&str, &str)]) -> String {
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let out = Command::new("python3")
            .args(["-c", SIGNED_GET])
            .arg(self.endpoint(0))
            .arg(BUCKET)
            .arg(REGION)
            .arg(&self.key_id)
            .arg(&self.secret)
            .args(&query)
            .output()
            .expect("running python3");
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "S3 GET {query:?}: {body}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        body
    }

    /// Every key under `prefix` (first 1000).
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        let body = self.s3_get(&[("list-type", "2"), ("prefix", prefix)]);
        tags(&body, "Key")
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn unfinished_uploads(&self) -> usize {
        tags(&self.s3_get(&[("uploads", "")]), "UploadId").len()
    }

    /// The file [`store_section`](Self::store_section) names for the secret.
    pub fn secret_file(&self) -> PathBuf {
        self.dir.path().join("s3-secret")
    }

    /// The RPC port of node `i` (for messages).
    pub fn rpc_port(&self, i: usize) -> u16 {
        self.nodes[i].rpc_port
    }
}

/// A SigV4-signed GET of a bucket with a query, in Python's standard
/// library: argv = endpoint bucket region key secret name=value…
const SIGNED_GET: &str = r#"
import sys, hmac, hashlib, datetime, urllib.parse, urllib.request
endpoint, bucket, region, key, secret = sys.argv[1:6]
query = sorted(tuple(a.split("=", 1)) for a in sys.argv[6:])
q = "&".join(urllib.parse.quote(k, safe="-_.~") + "=" + urllib.parse.quote(v, safe="-_.~") for k, v in query)
host = urllib.parse.urlparse(endpoint).netloc
now = datetime.datetime.now(datetime.timezone.utc)
amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
payload = hashlib.sha256(b"").hexdigest()
headers = "host:%s\nx-amz-content-sha256:%s\nx-amz-date:%s\n" % (host, payload, amz)
signed = "host;x-amz-content-sha256;x-amz-date"
canonical = "GET\n/%s\n%s\n%s\n%s\n%s" % (bucket, q, headers, signed, payload)
scope = "%s/%s/s3/aws4_request" % (day, region)
to_sign = "AWS4-HMAC-SHA256\n%s\n%s\n%s" % (amz, scope, hashlib.sha256(canonical.encode()).hexdigest())
k = ("AWS4" + secret).encode()
for part in (day, region, "s3", "aws4_request"):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
req = urllib.request.Request("%s/%s?%s" % (endpoint, bucket, q), headers={
    "x-amz-date": amz, "x-amz-content-sha256": payload,
    "Authorization": "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (key, scope, signed, sig)})
sys.stdout.write(urllib.request.urlopen(req, timeout=30).read().decode())
"#;

/// The text of every `<tag>` element of an S3 answer.
fn tags(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(t, _)| t.to_owned()))
        .collect()
}

fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    getrandom::getrandom(&mut b).unwrap();
    b[0]
}
