//! mftd's configuration file (TOML): one documented struct per section,
//! unknown keys rejected, sizes and durations in human units, secrets inline
//! or as `*_file` and never printed. `docs/configuration.md` describes every key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use mft_storage::hostkey::PinnedHostKey;
use mft_storage::sftp::SftpSettings;
use mft_upload_http::HttpSettings;

use mft_common::units::{ByteSize, HumanDuration, KeepFor};

use mft_component::policy::ChatRules;

pub mod content;
pub mod object_store;
pub mod sections;
pub use mft_component::slot::MAX_FILE_SIZE_CAP;

/// A secret string; `Debug` never shows it, and no error quotes it: a value
/// of another type (a number, `true`, a table) is refused without being
/// repeated.
#[derive(Clone)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretVisitor).map(Secret)
    }
}

/// Takes a string; refuses anything else with a message that names only the
/// kind of value, never the value.
struct SecretVisitor;

impl SecretVisitor {
    fn refuse<E: serde::de::Error>(kind: &str) -> Result<String, E> {
        Err(E::custom(format!(
            "a secret must be a string, not {kind} (quote it; the value is not shown)"
        )))
    }
}

impl<'de> serde::de::Visitor<'de> for SecretVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<String, E> {
        Self::refuse("a boolean")
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<String, E> {
        Self::refuse("a number")
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<String, E> {
        Self::refuse("a number")
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<String, E> {
        Self::refuse("a number")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Self::refuse("a table or a date")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Self::refuse("a list")
    }
}

/// A list of secrets: a list of strings, or one string for a list of one
/// (how an environment override gives it).
fn secret_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    struct ListVisitor;
    impl<'de> serde::de::Visitor<'de> for ListVisitor {
        type Value = Vec<Secret>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of secret strings")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![Secret(v.to_owned())])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<Secret>()? {
                out.push(s);
            }
            Ok(out)
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            SecretVisitor::refuse("a boolean").map(|_| Vec::new())
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            SecretVisitor::refuse("a number").map(|_| Vec::new())
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            SecretVisitor::refuse("a number").map(|_| Vec::new())
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            SecretVisitor::refuse("a number").map(|_| Vec::new())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            SecretVisitor::refuse("a table").map(|_| Vec::new())
        }
    }
    d.deserialize_any(ListVisitor)
}

/// The configuration keys that hold secrets: an environment override of
/// one is taken as the literal string it is, never read as a TOML value.
const SECRET_KEYS: &[&str] = &[
    "secret",
    "token_key",
    "previous_token_keys",
    "token",
    "share_key",
    "url",
    "password",
];

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[xmpp]`: the link to the router.
    pub xmpp: XmppConfig,
    /// `[http]`: the upload/download endpoint.
    pub http: HttpConfig,
    /// `[node]`: this node's identity.
    pub node: NodeConfig,
    /// `[store]`: where files go.
    pub store: StoreConfig,
    /// `[limits]`: policy.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[database]`: the PostgreSQL transfer log; without it mftd runs
    /// without a log (files only).
    pub database: Option<DatabaseConfig>,
    /// `[quotas]`: rolling 24-hour upload quotas (need the database).
    #[serde(default)]
    pub quotas: QuotasConfig,
    /// `[chat]`: how a destination JID maps to a chat type.
    #[serde(default)]
    pub chat: ChatRules,
    /// `[recipients]`: the router module's per-recipient download claims.
    #[serde(default)]
    pub recipients: RecipientsConfig,
    /// `[admin]`: the monitoring listener (metrics, health, status page).
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[log]`: how mftd writes its own log.
    #[serde(default)]
    pub log: LogConfig,
    /// `[retention]`: how long files are kept (needs the database).
    #[serde(default)]
    pub retention: RetentionConfig,
    /// `[scan]`: the malware scanner every upload goes through (ClamAV's clamd).
    pub scan: Option<content::ScanConfig>,
    /// `[adhoc]`: XEP-0050 ad-hoc commands (`mft_component::adhoc::settings`).
    #[serde(default)]
    pub adhoc: mft_component::adhoc::settings::AdhocConfig<HumanDuration>,
}

/// `[retention]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Files of 1:1 chats.
    #[serde(default)]
    pub im: KeepFor,
    /// Files of ad-hoc group chats.
    #[serde(default)]
    pub groupchat: KeepFor,
    /// Files of persistent chat rooms.
    #[serde(default)]
    pub persistent: KeepFor,
    /// The retention floor: no file is removed younger than this (retention,
    /// ephemeral expiry, an ordinary purge), whatever its chat type.
    #[serde(default)]
    pub minimum: Option<HumanDuration>,
    /// The floor of 1:1 chats' files, when stricter than `minimum`.
    #[serde(default)]
    pub minimum_im: Option<HumanDuration>,
    /// The floor of group chats' files, when stricter than `minimum`.
    #[serde(default)]
    pub minimum_groupchat: Option<HumanDuration>,
    /// The floor of persistent rooms' files, when stricter than `minimum`.
    #[serde(default)]
    pub minimum_persistent: Option<HumanDuration>,
    /// Offer XEP-0363 `ephemeral` uploads (with `[database]`).
    #[serde(default = "default_true")]
    pub allow_ephemeral: bool,
    /// Offer XEP-0363 `permanent` uploads, exempt from the limits above.
    /// Unset: offered only when every limit is `"forever"`.
    #[serde(default)]
    pub allow_permanent: Option<bool>,
    /// How often the sweeper looks for files due (jittered ±10 %).
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval: HumanDuration,
    /// How long the transfer log's records are kept: `mftd db prune-log`
    /// (run by the schema's owner) drops whole months older than this.
    /// Default `"forever"`.
    #[serde(default)]
    pub log: KeepFor,
}

fn default_true() -> bool {
    true
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            im: KeepFor::default(),
            groupchat: KeepFor::default(),
            persistent: KeepFor::default(),
            minimum: None,
            minimum_im: None,
            minimum_groupchat: None,
            minimum_persistent: None,
            allow_ephemeral: true,
            allow_permanent: None,
            sweep_interval: default_sweep_interval(),
            log: KeepFor::default(),
        }
    }
}

fn default_sweep_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

impl RetentionConfig {
    /// The rules the sweeper applies.
    pub fn rules(&self) -> mft_storage::retention::RetentionRules {
        mft_storage::retention::RetentionRules {
            im: self.im.0,
            groupchat: self.groupchat.0,
            persistent: self.persistent.0,
            permanent_exempt: true,
        }
    }

    /// The retention floor per chat type: the stricter of `minimum` and
    /// the chat type's own `minimum_<chat type>`.
    pub fn floor(&self) -> mft_storage::retention::RetentionFloor {
        let global = self.minimum.map_or(Duration::ZERO, |d| d.0);
        let of = |own: Option<HumanDuration>| own.map_or(global, |d| d.0.max(global));
        mft_storage::retention::RetentionFloor {
            im: of(self.minimum_im),
            groupchat: of(self.minimum_groupchat),
            persistent: of(self.minimum_persistent),
        }
    }

    /// Whether `permanent` uploads are offered: as configured, or when
    /// nothing has an age limit.
    pub fn offers_permanent(&self) -> bool {
        self.allow_permanent
            .unwrap_or_else(|| self.rules().keeps_forever())
    }

    /// Refuses an age limit shorter than its chat type's floor (the sweeper
    /// could never honour it), and a log kept for less time than a file
    /// may be kept (a file's record must outlive the file).
    fn check_floor(&self) -> Result<(), ConfigError> {
        let floor = self.floor();
        if let Some(log) = self.log.0 {
            // (Every finite limit is at least its floor: checked below.)
            let longest = [self.im.0, self.groupchat.0, self.persistent.0]
                .into_iter()
                .map(|limit| limit.ok_or("\"forever\"".to_owned()))
                .try_fold(Duration::ZERO, |acc, d| d.map(|d| acc.max(d)));
            let too_short = match &longest {
                Err(forever) => Some(forever.clone()),
                Ok(d) if log < *d => Some(humantime::format_duration(*d).to_string()),
                Ok(_) => None,
            };
            if let Some(keep) = too_short {
                return Err(invalid(
                    "retention.log",
                    format!(
                        "{} is shorter than files may be kept ({keep}, from retention.im/groupchat/persistent or the floor): a file's record must outlive the file; raise retention.log or shorten the file retention",
                        humantime::format_duration(log)
                    ),
                ));
            }
        }
        for (chat, key, limit) in [
            ("im", "retention.im", self.im.0),
            ("groupchat", "retention.groupchat", self.groupchat.0),
            ("persistent", "retention.persistent", self.persistent.0),
        ] {
            let min = floor.for_chat(chat);
            if let Some(limit) = limit.filter(|l| *l < min) {
                return Err(invalid(
                    key,
                    format!(
                        "{} is shorter than the retention floor of {} for {chat} files (retention.minimum / retention.minimum_{chat}): raise retention.{chat} or lower the floor",
                        humantime::format_duration(limit),
                        humantime::format_duration(min)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where `/metrics`, `/healthz`, `/readyz` and the status page are
    /// served; off when unset.
    pub listen: Option<SocketAddr>,
    /// A bearer token (or basic-auth password) every request must carry.
    pub token: Option<Secret>,
    /// A file holding the token.
    pub token_file: Option<PathBuf>,
    /// How often the file server and the database are checked.
    #[serde(default = "default_check_interval")]
    pub check_interval: HumanDuration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            token: None,
            token_file: None,
            check_interval: default_check_interval(),
        }
    }
}

fn default_check_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json` (one object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// A level (`info`) or a filter (`info,mft_storage=debug`);
    /// `RUST_LOG` overrides it.
    pub level: Option<String>,
    /// An OpenSSH Ed25519 private key (unencrypted, readable by the service
    /// user only) that signs the transfer log's daily checkpoints; without
    /// it checkpoints are written unsigned.
    pub checkpoint_key_file: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[recipients]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientsConfig {
    /// The key shared with the router module (`mftd_share_key`).
    pub share_key: Option<Secret>,
    /// A file holding the shared key.
    pub share_key_file: Option<PathBuf>,
    /// Refuse downloads whose URL carries no recipient claim.
    #[serde(default)]
    pub require_claim: bool,
    /// Router domains whose module may report shares, each for its own
    /// users only; empty means the component's parent domain (its router).
    #[serde(default)]
    pub reporters: Vec<String>,
    /// Share reports one sender may cause a minute (0: no limit).
    #[serde(default = "default_shares_per_minute")]
    pub shares_per_minute: u32,
}

fn default_shares_per_minute() -> u32 {
    mft_component::service::SHARES_PER_SENDER_MINUTE
}

impl Default for RecipientsConfig {
    fn default() -> Self {
        RecipientsConfig {
            share_key: None,
            share_key_file: None,
            require_claim: false,
            reporters: Vec::new(),
            shares_per_minute: default_shares_per_minute(),
        }
    }
}

/// `[database]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgresql://user:password@host:port/dbname` or a key=value string.
    pub url: Option<Secret>,
    /// A file holding the URL (it may contain a password).
    pub url_file: Option<PathBuf>,
    /// PEM CA certificates for `sslmode=require` in the URL.
    pub ca_file: Option<PathBuf>,
    /// The longest one statement of the running service may take (a lock
    /// wait included) before the server cancels it and the transfer fails
    /// with `503`; `0` leaves the server's own setting.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: HumanDuration,
}

pub(crate) fn default_statement_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(15))
}

impl DatabaseConfig {
    /// The URL, read from `url_file` when given there, checked: it parses,
    /// and `sslmode=require` comes with `ca_file`.
    pub fn resolve_url(&self) -> Result<Secret, ConfigError> {
        let url = load_secret(&self.url, &self.url_file, "database.url")?;
        mft_storage::db::parse_url(url.expose())
            .map_err(|e| invalid("database.url", e.to_string()))?;
        if mft_storage::db::wants_tls(url.expose()) && self.ca_file.is_none() {
            return Err(invalid(
                "database.ca_file",
                "sslmode=require (or verify-full) needs the CA that signed the server's certificate: set database.ca_file",
            ));
        }
        Ok(url)
    }
}

/// `[quotas]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasConfig {
    /// Bytes one user may upload in any 24 hours; 0 = no limit.
    #[serde(default)]
    pub per_user_daily: Option<ByteSize>,
    /// Bytes all users together may upload in any 24 hours; 0 = no limit.
    #[serde(default)]
    pub global_daily: Option<ByteSize>,
}

/// `[xmpp]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppConfig {
    /// The component's JID, e.g. `upload.example.test`.
    pub component_jid: String,
    /// The shared secret from the router's component entry.
    pub secret: Option<Secret>,
    /// A file holding the secret.
    pub secret_file: Option<PathBuf>,
    /// The router's component port, `host:port`.
    #[serde(default = "default_router")]
    pub router: String,
    /// How often to ping the router to prove the link alive.
    #[serde(default = "default_keepalive")]
    pub keepalive: HumanDuration,
}

/// `[http]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The base of slot URLs as clients reach it.
    pub public_url: String,
    /// PEM certificate chain; with `tls_key`, the endpoint speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Also speak HTTP/2 (off: HTTP/1.1 only, faster for one large
    /// transfer per request; see docs/performance.md).
    #[serde(default)]
    pub http2: bool,
    /// The key that signs slot tokens (at least 16 characters).
    pub token_key: Option<Secret>,
    /// A file holding the token key.
    pub token_key_file: Option<PathBuf>,
    /// Keys that signed slots before the current one: still accepted for
    /// slots not yet expired, never used to sign (key rotation).
    #[serde(default, deserialize_with = "secret_list")]
    pub previous_token_keys: Vec<Secret>,
    /// A file with previous token keys, one per line.
    pub previous_token_keys_file: Option<PathBuf>,
    /// How long a connection may make no progress at all: a client silent
    /// in the middle of a body, or one that stopped reading a download.
    #[serde(default = "default_body_idle")]
    pub body_idle_timeout: HumanDuration,
    /// How long a new connection may take to send its first byte.
    #[serde(default = "default_first_byte")]
    pub first_byte_timeout: HumanDuration,
    /// How long a client may take to send a request's headers.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: HumanDuration,
    /// Connections open at once; more wait in the listen backlog. Capped by
    /// the process's open-file limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Uploads and downloads in flight at once; more are answered `503`.
    #[serde(default = "default_max_transfers")]
    pub max_transfers: usize,
    /// Transfers one client address (and, for uploads, one uploader) may
    /// have in flight; `0` means a quarter of `max_transfers`.
    #[serde(default)]
    pub max_transfers_per_client: usize,
    /// Bytes the buffers of all transfers together may hold (upload gather
    /// buffers, download pieces not yet taken by the client).
    #[serde(default = "default_memory_budget")]
    pub memory_budget: ByteSize,
    /// How long an admitted transfer may move no byte before its
    /// connection is closed and its permit freed.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: HumanDuration,
    /// The slowest a body or a download may move, per second, once
    /// `rate_grace` has passed (`0` turns the floor off).
    #[serde(default = "default_min_rate")]
    pub min_rate: ByteSize,
    /// How long a transfer runs before `min_rate` applies.
    #[serde(default = "default_rate_grace")]
    pub rate_grace: HumanDuration,
    /// How long transfers in flight may continue after a stop signal.
    #[serde(default = "default_grace")]
    pub shutdown_grace: HumanDuration,
    /// Load balancers (addresses or CIDR blocks) believed about their
    /// clients' addresses: PROXY protocol v1/v2, `Forwarded`,
    /// `X-Forwarded-For`. Empty: the socket's peer is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// `[node]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name, e.g. `node_1`.
    pub name: String,
}

/// `[store]`: `kind = "local"` with `path`, or `kind = "sftp"` with a
/// `[store.sftp]` section. Each kind carries only its own keys.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// A directory on this host: the node directory.
    Local {
        /// The node directory.
        path: PathBuf,
        /// Log a warning when free space drops below this percentage.
        #[serde(default = "default_alarm_percent")]
        alarm_free_percent: f64,
        /// Refuse new slots (`wait`) while less than this is free.
        #[serde(default = "default_min_free")]
        min_free_bytes: ByteSize,
    },
    /// An SSH/SFTP file server.
    Sftp {
        /// `[store.sftp]`.
        sftp: SftpConfig,
    },
    /// A bucket of an S3 service.
    S3 {
        /// `[store.s3]`.
        s3: object_store::S3Config,
    },
}

/// When free space where the node directory lives is too low: a warning,
/// then slots refused until it returns. The same for every kind of store.
#[derive(Debug, Clone, Copy)]
pub struct SpaceLimits {
    /// Warn below this free percentage.
    pub alarm_free_percent: f64,
    /// Refuse slots below this many free bytes.
    pub min_free_bytes: u64,
}

impl SpaceLimits {
    fn checked(
        alarm_free_percent: f64,
        min_free_bytes: u64,
        key: &'static str,
    ) -> Result<Self, ConfigError> {
        if !(0.0..=100.0).contains(&alarm_free_percent) {
            return Err(invalid(key, "a percentage from 0 to 100"));
        }
        Ok(SpaceLimits {
            alarm_free_percent,
            min_free_bytes,
        })
    }
}

/// The store as the runtime uses it, validated once.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    /// A local node directory.
    Local {
        /// The node directory.
        path: PathBuf,
        /// Free-space alarm and floor.
        space: SpaceLimits,
    },
    /// An SFTP file server.
    Sftp {
        /// Connection, pinned host key, node key.
        sftp: Box<SftpSettings>,
        /// Free-space alarm and floor.
        space: SpaceLimits,
    },
    /// An S3 bucket (no free space to watch: the service says none).
    S3 {
        /// Endpoint, bucket, prefix, credentials.
        s3: Box<mft_storage::s3::S3Settings>,
    },
}

impl StoreSettings {
    /// The SFTP settings, when the store is a file server.
    pub fn sftp(&self) -> Option<&SftpSettings> {
        match self {
            StoreSettings::Sftp { sftp, .. } => Some(sftp),
            StoreSettings::Local { .. } | StoreSettings::S3 { .. } => None,
        }
    }

    /// The free-space alarm and floor.
    pub fn space(&self) -> SpaceLimits {
        match self {
            StoreSettings::Local { space, .. } | StoreSettings::Sftp { space, .. } => *space,
            // S3 says nothing of free space: nothing to alarm on or wait for.
            StoreSettings::S3 { .. } => SpaceLimits {
                alarm_free_percent: 0.0,
                min_free_bytes: 0,
            },
        }
    }

    /// `local` or `sftp`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreSettings::Local { .. } => "local",
            StoreSettings::Sftp { .. } => "sftp",
            StoreSettings::S3 { .. } => "s3",
        }
    }
}

/// `[store.sftp]`: the external file server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpConfig {
    /// Host name or address of the file server.
    pub host: String,
    /// SSH port.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// The file server user mftd logs in as.
    pub user: String,
    /// This node's directory on the server (absolute), e.g. `/opt/mftFileStore/node_1`.
    pub directory: String,
    /// The line `ssh-keyscan -t rsa host` prints.
    pub host_key: String,
    /// The node's private key (made by `mftd keys generate`).
    pub private_key: PathBuf,
    /// Connections kept open for reuse (one per concurrent transfer; one
    /// unused for a minute is closed).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Limit for connecting and the SSH handshake.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Limit for any single operation on the server.
    #[serde(default = "default_io_timeout")]
    pub io_timeout: HumanDuration,
    /// Cipher preference in libssh2 names, e.g. `aes128-gcm@openssh.com,aes128-ctr`.
    #[serde(default)]
    pub ciphers: String,
    /// Log a warning when free space drops below this percentage.
    #[serde(default = "default_alarm_percent")]
    pub alarm_free_percent: f64,
    /// Refuse new slots (`wait`) while less than this is free.
    #[serde(default = "default_min_free")]
    pub min_free_bytes: ByteSize,
}

/// `[limits]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest file; `0` means the maximum, 4 GiB.
    #[serde(default = "default_max_file_size")]
    pub max_file_size: ByteSize,
    /// How long a PUT URL stays valid.
    #[serde(default = "default_slot_ttl")]
    pub slot_ttl: HumanDuration,
    /// Domains whose users may request slots; empty means the component's
    /// parent domain only.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Slot requests one user may make per minute on average (`0`: no limit).
    #[serde(default = "default_slots_per_minute")]
    pub slots_per_minute: u32,
    /// Slot requests one user may make at once.
    #[serde(default = "default_slot_burst")]
    pub slot_burst: u32,
    /// Media types that may be uploaded (`image/*`, `application/pdf`);
    /// empty means any.
    #[serde(default)]
    pub allowed_types: Vec<String>,
    /// Media types that are never accepted; wins over `allowed_types`.
    #[serde(default)]
    pub refused_types: Vec<String>,
    /// `[[limits.group]]`: limits per group of users (`mft_component::groups`).
    #[serde(default)]
    pub group: Vec<mft_component::groups::GroupConfig<ByteSize>>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_file_size: default_max_file_size(),
            slot_ttl: default_slot_ttl(),
            allowed_domains: Vec::new(),
            slots_per_minute: default_slots_per_minute(),
            slot_burst: default_slot_burst(),
            allowed_types: Vec::new(),
            refused_types: Vec::new(),
            group: Vec::new(),
        }
    }
}

// `[http]`'s defaults are the endpoint's own (`HttpSettings::default`):
// each is written once, in the crate that uses it.
fn http_default() -> HttpSettings {
    HttpSettings::default()
}
fn default_first_byte() -> HumanDuration {
    HumanDuration(http_default().first_byte_timeout)
}
fn default_header_timeout() -> HumanDuration {
    HumanDuration(http_default().header_timeout)
}
fn default_max_connections() -> usize {
    http_default().max_connections
}
fn default_stall_timeout() -> HumanDuration {
    HumanDuration(http_default().stall_timeout)
}
fn default_memory_budget() -> ByteSize {
    ByteSize(mft_storage::budget::DEFAULT_BYTES)
}

fn default_max_transfers() -> usize {
    http_default().max_transfers
}
fn default_min_rate() -> ByteSize {
    ByteSize(http_default().min_rate)
}
fn default_rate_grace() -> HumanDuration {
    HumanDuration(http_default().rate_grace)
}
fn default_slots_per_minute() -> u32 {
    60
}
fn default_slot_burst() -> u32 {
    30
}
fn default_ssh_port() -> u16 {
    22
}
fn default_pool_size() -> usize {
    32
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_io_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_alarm_percent() -> f64 {
    10.0
}
fn default_min_free() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_router() -> String {
    "127.0.0.1:5347".into()
}
fn default_keepalive() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_body_idle() -> HumanDuration {
    HumanDuration(http_default().body_idle_timeout)
}
fn default_grace() -> HumanDuration {
    HumanDuration(http_default().shutdown_grace)
}
fn default_max_file_size() -> ByteSize {
    ByteSize(100 << 20)
}
fn default_slot_ttl() -> HumanDuration {
    HumanDuration(mft_component::service::DEFAULT_SLOT_TTL)
}

/// A configuration that cannot be used, with the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, unknown or missing keys, bad values.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's explanation (names the key and line).
        message: String,
    },
    /// A value that parses but cannot work.
    #[error("config key {key}{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        /// Where the key is in the file, when it is there.
        line: Option<usize>,
        /// The key, e.g. `http.public_url`.
        key: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        line: None,
        key,
        message: message.into(),
    }
}

impl ConfigError {
    /// The same error, naming the line of its key in `text` when it is there.
    fn located(self, text: &str) -> ConfigError {
        match self {
            ConfigError::Invalid {
                line: None,
                key,
                message,
            } => ConfigError::Invalid {
                line: line_of(text, key),
                key,
                message,
            },
            other => other,
        }
    }
}

/// The line (from 1) where the dotted `key` (`store.sftp.host_key`) is set
/// in TOML `text`: its table header, then `name =` below it.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let (table, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header
                .trim_end_matches(']')
                .split('.')
                .map(|p| p.trim().trim_matches('"'))
                .collect::<Vec<_>>()
                .join(".");
            continue;
        }
        let Some((k, _)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        if current == table && k == name {
            return Some(i + 1);
        }
        // A dotted key inside its parent table (`[store]` with `sftp.host = …`).
        if !current.is_empty() && format!("{current}.{k}") == key {
            return Some(i + 1);
        }
    }
    None
}

/// The path part of a public URL (`""` for `https://host/`, `/upload` for
/// `https://host/upload/`), parsed as a client would parse it; why not when
/// clients could not use it.
pub fn public_url_base_path(url: &str) -> Result<String, String> {
    let example = "a base URL such as https://upload.example.test:8443/";
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL ({e}); write {example}"))?;
    match uri.scheme_str() {
        Some("https" | "http") => {}
        _ => return Err(format!("{url:?} must start with https:// or http://")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} names no host; write {example}"))?;
    if authority.as_str().contains('@') {
        return Err(format!("{url:?} must not carry a user name or password"));
    }
    if authority.host().is_empty() {
        return Err(format!("{url:?} names no host; write {example}"));
    }
    if let Some((_, port)) = authority.as_str().rsplit_once(':') {
        if !port.contains(']') && port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{url:?}: port {port} is not a TCP port (1-65535)"));
        }
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!(
            "{url:?} must not have a query or fragment; write {example}"
        ));
    }
    Ok(uri.path().trim_end_matches('/').to_owned())
}

/// Checks `host:port` (`[v6]:port` for IPv6): a host, and a port 1–65535.
fn check_host_port(value: &str) -> Result<(), String> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("{value:?} has no port"))?;
    if host.is_empty() || host.contains([' ', '/']) {
        return Err(format!("{value:?} has no usable host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{port:?} is not a TCP port (1-65535)")),
    }
}

/// Whether `name` is a node name every node reads as the same plain
/// directory: ASCII letters, digits, `_`, `-` and `.`, not `.` or `..` (nor
/// only dots), at most 64 bytes. Nothing to decode, normalise or escape.
pub fn is_plain_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !name.bytes().all(|b| b == b'.')
}

/// A TOML syntax error as "line L, column C: what", without the excerpt of
/// the line the parser would print: that line may hold a secret.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}

/// " (checked as user …)" for messages about files: what this process may
/// read is what was checked, which is the service's view only when run as
/// the service user.
fn as_whom() -> String {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into());
    format!(" (checked as uid {uid}; run check-config as the service user, e.g. `sudo -u mftd`)")
}

/// The configuration's sections, as environment overrides name them.
const SECTIONS: &[&str] = &[
    "xmpp",
    "http",
    "node",
    "store",
    "limits",
    "database",
    "quotas",
    "recipients",
    "chat",
    "retention",
    "scan",
    "admin",
    "log",
];

/// The prefix of configuration overrides in the environment.
pub const ENV_PREFIX: &str = "MFTD_";

/// Applies `MFTD_<SECTION>__<KEY>=value` (any depth:
/// `MFTD_STORE__SFTP__HOST`) to the parsed file: names are lower-cased,
/// `__` separates levels, and the value is read as a TOML value when it is
/// one (`100`, `true`, `["a", "b"]`, `"quoted"`) and as a string otherwise —
/// except secret keys ([`SECRET_KEYS`]), whose value is always the literal
/// string. Returns the variables applied. Secrets should still come as
/// `*_file` (`MFTD_XMPP__SECRET_FILE=/run/secrets/component`).
pub fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, String> {
    let mut applied = Vec::new();
    let env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    // `MFTD_XMPP_ROUTER` (one underscore) would otherwise be ignored silently.
    for (name, _) in env.iter().filter(|(k, _)| !k.contains("__")) {
        let rest = &name[ENV_PREFIX.len()..];
        if let Some(section) = SECTIONS
            .iter()
            .find(|s| rest.to_ascii_lowercase().starts_with(&format!("{s}_")))
        {
            let key = &rest[section.len() + 1..];
            return Err(format!(
                "{name} is not an override: write MFTD_{}__{key} (two underscores between section and key)",
                section.to_ascii_uppercase()
            ));
        }
    }
    let mut vars: Vec<(String, String)> =
        env.into_iter().filter(|(k, _)| k.contains("__")).collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("{name}: empty name between '__' separators"));
        }
        let (key, sections) = path.split_last().expect("at least one name");
        let value = if SECRET_KEYS.contains(&key.as_str()) {
            // `MFTD_HTTP__TOKEN_KEY=1e9` is the key "1e9", not a number; a
            // list of secrets may still be written as a list of strings.
            string_list(&raw).unwrap_or_else(|| toml::Value::String(raw.clone()))
        } else {
            toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()))
        };
        let mut here = &mut *table;
        for section in sections {
            let entry = here
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            here = entry
                .as_table_mut()
                .ok_or_else(|| format!("{name}: {section} is not a section"))?;
        }
        here.insert(key.clone(), value);
        applied.push(name);
    }
    Ok(applied)
}

/// Keys and tokens are at least 16 characters.
fn check_key_length(key: &Secret, name: &'static str) -> Result<(), ConfigError> {
    if key.expose().chars().count() < 16 {
        return Err(invalid(
            name,
            "must be at least 16 characters; generate one with `openssl rand -hex 32`",
        ));
    }
    Ok(())
}

/// An optional key given inline or in a file (neither: `None`), checked
/// for length.
fn load_optional_key(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    name: &'static str,
) -> Result<Option<Secret>, ConfigError> {
    if inline.is_none() && file.is_none() {
        return Ok(None);
    }
    let key = load_secret(inline, file, name)?;
    check_key_length(&key, name)?;
    Ok(Some(key))
}

/// `raw` read as a TOML list whose items are all strings (`["a", "b"]`),
/// or `None`: how a list of secrets comes from the environment.
fn string_list(raw: &str) -> Option<toml::Value> {
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()?
        .remove("v")?;
    let all_strings = value.as_array()?.iter().all(toml::Value::is_str);
    all_strings.then_some(value)
}

/// A secret given inline or in a file; exactly one of the two.
fn load_secret(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    key: &'static str,
) -> Result<Secret, ConfigError> {
    match (inline, file) {
        (Some(s), None) if s.expose().trim().is_empty() => {
            Err(invalid(key, "is empty: give the secret"))
        }
        (Some(s), None) => Ok(s.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
            let secret = text.trim_end_matches(['\r', '\n']);
            if secret.trim().is_empty() {
                return Err(invalid(
                    key,
                    format!("{} is empty: write the secret into it", path.display()),
                ));
            }
            Ok(Secret(secret.to_owned()))
        }
        (Some(_), Some(_)) => Err(invalid(
            key,
            "give the secret inline or as a *_file, not both",
        )),
        (None, None) => Err(invalid(key, "missing: give it inline or as a *_file")),
    }
}

/// Everything resolved and checked, ready to run.
#[derive(Debug)]
pub struct Settings {
    /// `[node] name`: the node's directory on the file server, its lock and
    /// its name in the log.
    pub node_name: String,
    /// `[log]`: how mftd writes its own log.
    pub log: LogConfig,
    /// `[xmpp]`, checked: the link to the router.
    pub link: mft_component::component::LinkSettings,
    /// `[http]`, checked: the upload endpoint.
    pub http: HttpEndpoint,
    /// `[limits]`' slot lifetime and rate.
    pub slots: SlotSettings,
    /// `[quotas]`, in bytes (0: none).
    pub quotas: mft_storage::quota::Quotas,
    /// `[chat]`.
    pub chat: ChatRules,
    /// `[recipients]`, checked.
    pub recipients: RecipientSettings,
    /// `[retention]`, resolved once.
    pub retention: RetentionSettings,
    /// `[admin]`, checked.
    pub admin: AdminSettings,
    /// `[database]`: where the transfer log is, when one is configured.
    pub database: Option<mft_storage::db::DbConfig>,
    /// The slot-token key.
    pub token_key: Secret,
    /// Effective maximum file size in bytes.
    pub max_file_size: u64,
    /// Domains allowed to request slots.
    pub allowed_domains: Vec<String>,
    /// The store, validated.
    pub store: StoreSettings,
    /// Token keys still accepted (rotation), newest first.
    pub previous_token_keys: Vec<Secret>,
    /// `[scan]`, validated, when a scanner is configured.
    pub scan: Option<mft_upload_http::scan::ScanSettings>,
    /// `limits.allowed_types` and `refused_types`, parsed.
    pub types: mft_upload_http::type_policy::TypePolicy,
    /// The limits of users in no group.
    pub default_limits: mft_component::groups::Limits,
    /// `[[limits.group]]`, validated.
    pub groups: std::sync::Arc<mft_component::groups::GroupLimits>,
    /// `[adhoc]`, validated.
    pub adhoc: mft_component::adhoc::settings::AdhocSettings,
}

/// `[http]`, checked: where the endpoint listens, how clients reach it and
/// everything the HTTP server needs ([`HttpSettings`]: its defaults are the
/// endpoint's own, and the config's defaults are read from them).
#[derive(Debug, Clone)]
pub struct HttpEndpoint {
    /// `listen`.
    pub listen: SocketAddr,
    /// `public_url`: the base of slot URLs.
    pub public_url: String,
    /// The certificate and key, both or neither.
    pub tls: Option<TlsFiles>,
    /// What the server needs; `max_connections` before the open-file limit
    /// lowers it at start.
    pub settings: HttpSettings,
    /// `memory_budget`, in bytes.
    pub memory_budget: u64,
}

/// A TLS certificate chain and its key (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// `http.tls_cert`.
    pub cert: PathBuf,
    /// `http.tls_key`.
    pub key: PathBuf,
}

/// A slot's lifetime and how fast one user may ask for slots.
#[derive(Debug, Clone, Copy)]
pub struct SlotSettings {
    /// `limits.slot_ttl`.
    pub ttl: Duration,
    /// `limits.slots_per_minute` (0: no limit).
    pub per_minute: u32,
    /// `limits.slot_burst`.
    pub burst: u32,
}

/// `[recipients]`, checked.
#[derive(Debug)]
pub struct RecipientSettings {
    /// The key shared with the router module, when downloads are attributed.
    pub share_key: Option<Secret>,
    /// Downloads without a valid claim are refused.
    pub require_claim: bool,
    /// Shares one user may report per minute.
    pub shares_per_minute: u32,
    /// Router domains trusted to report their own users' shares.
    pub reporters: Vec<String>,
}

/// `[retention]`, resolved once.
#[derive(Debug, Clone, Copy)]
pub struct RetentionSettings {
    /// How long each chat type's files are kept.
    pub rules: mft_storage::retention::RetentionRules,
    /// How young a file may not be removed.
    pub floor: mft_storage::retention::RetentionFloor,
    /// How often the sweeper runs.
    pub sweep_interval: Duration,
    /// How long the log's records are kept (`None`: forever).
    pub log: Option<Duration>,
}

/// `[admin]`, checked.
#[derive(Debug)]
pub struct AdminSettings {
    /// Where the admin listener is, if anywhere.
    pub listen: Option<SocketAddr>,
    /// The token every request must carry, if set.
    pub token: Option<Secret>,
    /// How often the file server, database and scanner are checked.
    pub check_interval: Duration,
}

impl Settings {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_with_env(&text, &path.display().to_string(), std::env::vars())
    }

    /// Parses and checks configuration text; `origin` names it in errors.
    #[cfg(test)]
    pub fn from_toml(text: &str, origin: &str) -> Result<Settings, ConfigError> {
        Self::from_toml_with_env(text, origin, std::iter::empty())
    }

    /// [`Settings::from_toml`] after applying `MFTD_<SECTION>__<KEY>`
    /// overrides from `env` (see [`apply_env_overrides`]).
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: origin.to_owned(),
            message,
        };
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| parse_error(syntax_error(text, &e)))?;
        let applied = apply_env_overrides(&mut table, env).map_err(parse_error)?;
        let config: Config = table.try_into().map_err(|e: toml::de::Error| {
            if applied.is_empty() {
                parse_error(e.to_string())
            } else {
                parse_error(format!(
                    "{e} (with environment overrides {})",
                    applied.join(", ")
                ))
            }
        })?;
        Self::from_config(config).map_err(|e| e.located(text))
    }

    /// Checks a parsed configuration and resolves it into [`Settings`]:
    /// each section into its runtime type (see the section checks below),
    /// then what spans sections.
    fn from_config(config: Config) -> Result<Settings, ConfigError> {
        let link = config.xmpp.checked()?;
        let (token_key, previous_token_keys) = config.http.token_keys()?;
        let store = config.store_settings()?;
        let database = config
            .database
            .as_ref()
            .map(DatabaseConfig::checked)
            .transpose()?;
        let has_db = database.is_some();
        let quotas = config.quotas.checked(has_db)?;
        let http = config.http.checked(quotas)?;
        let parent = link
            .jid
            .split_once('.')
            .map_or(link.jid.as_str(), |(_, p)| p);
        let allowed_domains = domains_or(&config.limits.allowed_domains, parent);
        let recipients = config
            .recipients
            .checked(domains_or(&config.recipients.reporters, parent))?;
        let admin = config.admin.checked(config.http.listen)?;
        let retention = config.retention.checked(has_db)?;
        let scan = config
            .scan
            .as_ref()
            .map(|s| s.settings(http.settings.stall_timeout))
            .transpose()?;
        // No slot for what the scanner would refuse as too large.
        let scan_cap = scan
            .as_ref()
            .filter(|s| s.above_max_size == mft_upload_http::scan::AboveMaxSize::Refuse)
            .map(|s| s.max_size);
        let max_file_size = config
            .limits
            .max_file_size()?
            .min(scan_cap.unwrap_or(u64::MAX));
        let slots = config.limits.slots()?;
        let types =
            content::type_policy(&config.limits.allowed_types, &config.limits.refused_types)?;
        let default_limits = mft_component::groups::Limits {
            max_file_size,
            per_user_daily: quotas.per_user,
            slots_per_minute: slots.per_minute,
            slot_burst: slots.burst,
            allow_ephemeral: config.retention.allow_ephemeral,
            allow_permanent: config.retention.offers_permanent(),
        };
        let groups = mft_component::groups::validate(
            &config.limits.group,
            &default_limits,
            scan_cap,
            has_db,
        )
        .map_err(|e| invalid(e.key, e.message))?;
        let adhoc =
            mft_component::adhoc::settings::validate(&config.adhoc, &allowed_domains, has_db)
                .map_err(|e| invalid(e.key, e.message))?;
        Ok(Settings {
            adhoc,
            node_name: config.node.name,
            log: config.log,
            link,
            http,
            slots,
            quotas,
            chat: config.chat,
            recipients,
            retention,
            admin,
            database,
            default_limits,
            groups: std::sync::Arc::new(groups),
            scan,
            types,
            previous_token_keys,
            store,
            token_key,
            max_file_size,
            allowed_domains,
        })
    }
}

/// `list` lower-cased, or `parent` alone when the list is empty.
fn domains_or(list: &[String], parent: &str) -> Vec<String> {
    if list.is_empty() {
        vec![parent.to_owned()]
    } else {
        // Normalised as requesters' domains are (case, NFKC, the root
        // label's dot), so `Example.ORG.` admits users of example.org.
        list.iter()
            .map(|d| mft_common::jid::Jid::domain_of(d).unwrap_or_else(|| d.to_lowercase()))
            .collect()
    }
}

impl XmppConfig {
    /// `[xmpp]` → the link to the router.
    fn checked(&self) -> Result<mft_component::component::LinkSettings, ConfigError> {
        let jid = &self.component_jid;
        if jid.is_empty() || jid.contains(['@', '/', ' ']) || !jid.contains('.') {
            return Err(invalid(
                "xmpp.component_jid",
                format!("{jid:?} is not a component domain such as upload.example.test"),
            ));
        }
        check_host_port(&self.router).map_err(|why| {
            invalid(
                "xmpp.router",
                format!("{why}: write host:port, e.g. 127.0.0.1:5347"),
            )
        })?;
        let secret = load_secret(&self.secret, &self.secret_file, "xmpp.secret")?;
        Ok(mft_component::component::LinkSettings {
            router: self.router.clone(),
            jid: jid.clone(),
            secret: secret.expose().to_owned(),
            keepalive: self.keepalive.0,
        })
    }
}

impl HttpConfig {
    /// The slot-token key and the previous keys still accepted.
    fn token_keys(&self) -> Result<(Secret, Vec<Secret>), ConfigError> {
        let token_key = load_secret(&self.token_key, &self.token_key_file, "http.token_key")?;
        check_key_length(&token_key, "http.token_key")?;
        let mut previous = self.previous_token_keys.clone();
        if let Some(path) = &self.previous_token_keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "http.previous_token_keys_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            previous.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| Secret(l.to_owned())),
            );
        }
        for key in &previous {
            check_key_length(key, "http.previous_token_keys")?;
        }
        Ok((token_key, previous))
    }

    /// `[http]` → the endpoint (with the quotas a PUT re-checks).
    fn checked(&self, quotas: mft_storage::quota::Quotas) -> Result<HttpEndpoint, ConfigError> {
        let base_path = public_url_base_path(&self.public_url)
            .map_err(|why| invalid("http.public_url", why))?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "http.tls_cert",
                    "set both tls_cert and tls_key, or neither",
                ))
            }
        };
        if self.stall_timeout.0 < Duration::from_secs(1) {
            return Err(invalid("http.stall_timeout", "at least 1s"));
        }
        if self.memory_budget.0 < 1 << 20 {
            return Err(invalid(
                "http.memory_budget",
                "at least 1 MiB (transfers wait for room in it; 128 MiB by default)",
            ));
        }
        let trusted_proxies = mft_upload_http::proxy::TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|why| invalid("http.trusted_proxies", why))?;
        Ok(HttpEndpoint {
            listen: self.listen,
            public_url: self.public_url.clone(),
            tls,
            memory_budget: self.memory_budget.0,
            settings: HttpSettings {
                base_path,
                body_idle_timeout: self.body_idle_timeout.0,
                header_timeout: self.header_timeout.0,
                first_byte_timeout: self.first_byte_timeout.0,
                shutdown_grace: self.shutdown_grace.0,
                max_connections: self.max_connections,
                max_transfers: self.max_transfers,
                max_transfers_per_client: self.max_transfers_per_client,
                stall_timeout: self.stall_timeout.0,
                min_rate: self.min_rate.0,
                rate_grace: self.rate_grace.0,
                quotas,
                http2: self.http2,
                trusted_proxies,
            },
        })
    }
}

impl Config {
    /// `[node]` and `[store]` → the store: the node's name is a plain
    /// directory name and the node directory ends in it.
    fn store_settings(&self) -> Result<StoreSettings, ConfigError> {
        if !is_plain_node_name(&self.node.name) {
            return Err(invalid(
                "node.name",
                "1 to 64 ASCII letters, digits, '_', '-' or '.' (not only dots), such as node_1: \
                 it is a directory name every node must read alike",
            ));
        }
        let node_dir_name = match &self.store {
            StoreConfig::Local { path, .. } => {
                path.file_name().map(|n| n.to_string_lossy().into_owned())
            }
            StoreConfig::Sftp { sftp } => sftp
                .directory
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .map(str::to_owned),
            StoreConfig::S3 { s3 } => s3.node_dir_name(),
        };
        if node_dir_name.as_deref() != Some(self.node.name.as_str()) {
            let key = match &self.store {
                StoreConfig::Local { .. } => "store.path",
                StoreConfig::Sftp { .. } => "store.sftp.directory",
                StoreConfig::S3 { .. } => "store.s3.prefix",
            };
            return Err(invalid(
                key,
                format!(
                    "the node directory must end in the node's name ({:?}, from node.name): \
                     nodes find each other's files by name on a shared file server",
                    self.node.name
                ),
            ));
        }
        Ok(match &self.store {
            StoreConfig::Local {
                path,
                alarm_free_percent,
                min_free_bytes,
            } => StoreSettings::Local {
                path: path.clone(),
                space: SpaceLimits::checked(
                    *alarm_free_percent,
                    min_free_bytes.0,
                    "store.alarm_free_percent",
                )?,
            },
            StoreConfig::Sftp { sftp } => {
                let host_key = PinnedHostKey::parse(&sftp.host_key, &sftp.host, sftp.port)
                    .map_err(|e| invalid("store.sftp.host_key", e.to_string()))?;
                if !sftp.directory.starts_with('/') {
                    return Err(invalid(
                        "store.sftp.directory",
                        "must be an absolute path such as /opt/mftFileStore/node_1",
                    ));
                }
                if sftp.pool_size == 0 {
                    return Err(invalid("store.sftp.pool_size", "at least 1"));
                }
                let space = SpaceLimits::checked(
                    sftp.alarm_free_percent,
                    sftp.min_free_bytes.0,
                    "store.sftp.alarm_free_percent",
                )?;
                StoreSettings::Sftp {
                    sftp: Box::new(SftpSettings {
                        host: sftp.host.clone(),
                        port: sftp.port,
                        user: sftp.user.clone(),
                        directory: sftp.directory.trim_end_matches('/').to_owned(),
                        host_key,
                        private_key: sftp.private_key.clone(),
                        pool_size: sftp.pool_size,
                        connect_timeout: sftp.connect_timeout.0,
                        io_timeout: sftp.io_timeout.0,
                        ciphers: sftp.ciphers.clone(),
                    }),
                    space,
                }
            }
            StoreConfig::S3 { s3 } => StoreSettings::S3 {
                s3: Box::new(s3.checked()?),
            },
        })
    }
}

impl LimitsConfig {
    /// `max_file_size` in bytes (`0` is the 4 GiB cap).
    fn max_file_size(&self) -> Result<u64, ConfigError> {
        match self.max_file_size.0 {
            0 => Ok(MAX_FILE_SIZE_CAP),
            n if n > MAX_FILE_SIZE_CAP => Err(invalid(
                "limits.max_file_size",
                "at most 4 GiB (0 also means 4 GiB)",
            )),
            n => Ok(n),
        }
    }

    /// The slot lifetime and rate.
    fn slots(&self) -> Result<SlotSettings, ConfigError> {
        if self.slot_ttl.0 < Duration::from_secs(10) {
            return Err(invalid(
                "limits.slot_ttl",
                "at least 10s; XEP-0363 suggests 300s",
            ));
        }
        Ok(SlotSettings {
            ttl: self.slot_ttl.0,
            per_minute: self.slots_per_minute,
            burst: self.slot_burst,
        })
    }
}

impl DatabaseConfig {
    /// `[database]` → where the running service's log is.
    fn checked(&self) -> Result<mft_storage::db::DbConfig, ConfigError> {
        Ok(mft_storage::db::DbConfig {
            url: self.resolve_url()?.expose().to_owned(),
            ca_file: self.ca_file.clone(),
            statement_timeout: Some(self.statement_timeout.0).filter(|t| !t.is_zero()),
        })
    }
}

impl QuotasConfig {
    /// `[quotas]` in bytes; they are counted from the transfer log.
    fn checked(&self, has_db: bool) -> Result<mft_storage::quota::Quotas, ConfigError> {
        let quotas = mft_storage::quota::Quotas {
            per_user: self.per_user_daily.map_or(0, |b| b.0),
            global: self.global_daily.map_or(0, |b| b.0),
        };
        if (quotas.per_user > 0 || quotas.global > 0) && !has_db {
            return Err(invalid(
                "quotas",
                "quotas are counted from the transfer log: configure [database]",
            ));
        }
        Ok(quotas)
    }
}

impl RecipientsConfig {
    /// `[recipients]`, with the router domains trusted to report shares.
    fn checked(&self, reporters: Vec<String>) -> Result<RecipientSettings, ConfigError> {
        let share_key = load_optional_key(
            &self.share_key,
            &self.share_key_file,
            "recipients.share_key",
        )?;
        if self.require_claim && share_key.is_none() {
            return Err(invalid(
                "recipients.require_claim",
                "needs recipients.share_key (the key the router module signs with)",
            ));
        }
        Ok(RecipientSettings {
            share_key,
            require_claim: self.require_claim,
            shares_per_minute: self.shares_per_minute,
            reporters,
        })
    }
}

impl AdminConfig {
    /// `[admin]`: off loopback only with a token, never on `http.listen`.
    fn checked(&self, http_listen: SocketAddr) -> Result<AdminSettings, ConfigError> {
        let token = load_optional_key(&self.token, &self.token_file, "admin.token")?;
        if let Some(listen) = self.listen {
            if !listen.ip().is_loopback() && token.is_none() {
                return Err(invalid(
                    "admin.listen",
                    format!("{listen} is not a loopback address: set admin.token_file too, or listen on 127.0.0.1"),
                ));
            }
            if listen == http_listen {
                return Err(invalid(
                    "admin.listen",
                    "must differ from http.listen: the admin listener never serves files",
                ));
            }
        }
        if self.check_interval.0 < Duration::from_millis(200) {
            return Err(invalid("admin.check_interval", "at least 200ms"));
        }
        Ok(AdminSettings {
            listen: self.listen,
            token,
            check_interval: self.check_interval.0,
        })
    }
}

impl RetentionConfig {
    /// `[retention]`, resolved once; limits need the transfer log.
    fn checked(&self, has_db: bool) -> Result<RetentionSettings, ConfigError> {
        if !self.rules().keeps_forever() && !has_db {
            return Err(invalid(
                "retention",
                "retention is tracked in the transfer log: configure [database]",
            ));
        }
        if self.sweep_interval.0 < Duration::from_secs(1) {
            return Err(invalid("retention.sweep_interval", "at least 1s"));
        }
        self.check_floor()?;
        Ok(RetentionSettings {
            rules: self.rules(),
            floor: self.floor(),
            sweep_interval: self.sweep_interval.0,
            log: self.log.0,
        })
    }
}

impl Settings {
    /// Files `run` will read, opened as this process: the TLS pair (also
    /// parsed), the database CA and the node's SSH key. Errors name the key
    /// and its line.
    pub fn check_files(&self, config_path: &Path) -> Result<(), ConfigError> {
        self.check_files_unlocated(config_path)
            .map_err(|e| e.located(&std::fs::read_to_string(config_path).unwrap_or_default()))
    }

    fn check_files_unlocated(&self, config_path: &Path) -> Result<(), ConfigError> {
        if let Some(TlsFiles { cert, key }) = &self.http.tls {
            for (name, path) in [("http.tls_cert", cert), ("http.tls_key", key)] {
                std::fs::File::open(path).map_err(|e| {
                    invalid(
                        name,
                        format!("cannot read {}: {e}{}", path.display(), as_whom()),
                    )
                })?;
            }
            mft_upload_http::tls::acceptor(cert, key, self.http.settings.http2)
                .map_err(|e| invalid("http.tls_cert", mft_storage::error::chain(&e)))?;
        }
        if let Some(ca) = self.database.as_ref().and_then(|d| d.ca_file.as_ref()) {
            std::fs::File::open(ca).map_err(|e| {
                invalid(
                    "database.ca_file",
                    format!("cannot read {}: {e}{}", ca.display(), as_whom()),
                )
            })?;
        }
        if let Some(s) = self.store.sftp() {
            if s.private_key.exists() {
                std::fs::File::open(&s.private_key).map_err(|e| {
                    invalid(
                        "store.sftp.private_key",
                        format!(
                            "cannot read {}: {e}{} — create the key as the service user: `sudo -u mftd mftd keys generate --config {}`",
                            s.private_key.display(),
                            as_whom(),
                            config_path.display()
                        ),
                    )
                })?;
            }
            if !s.private_key.exists() {
                return Err(invalid(
                    "store.sftp.private_key",
                    format!(
                        "{} does not exist: create the node's key pair as the service user with `sudo -u mftd mftd keys generate --config {}` and add the printed line to the file server user's authorized_keys",
                        s.private_key.display(),
                        config_path.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[xmpp]
component_jid = "upload.example.test"
secret = "s3cret"
[http]
listen = "127.0.0.1:5443"
public_url = "https://upload.example.test:5443/files/"
token_key = "0123456789abcdef0123"
[node]
name = "node_1"
[store]
kind = "local"
path = "/tmp/node_1"
[limits]
max_file_size = "0"
slot_ttl = "5m"
"#;

    fn err(text: &str) -> String {
        Settings::from_toml(text, "test.toml")
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn the_admin_listener_needs_a_token_off_loopback_and_its_own_port() {
        let off_loopback = format!("{GOOD}[admin]\nlisten = \"0.0.0.0:5281\"\n");
        assert!(
            err(&off_loopback).contains("admin.listen"),
            "{}",
            err(&off_loopback)
        );
        let with_token = format!("{off_loopback}token = \"0123456789abcdef-admin\"\n");
        let s = Settings::from_toml(&with_token, "test.toml").expect("valid with a token");
        assert_eq!(
            s.admin.token.as_ref().map(Secret::expose),
            Some("0123456789abcdef-admin")
        );
        let short = format!("{off_loopback}token = \"short\"\n");
        assert!(err(&short).contains("admin.token"));
        let same_port = format!("{GOOD}[admin]\nlisten = \"127.0.0.1:5443\"\n");
        assert!(err(&same_port).contains("must differ from http.listen"));
        let s = Settings::from_toml(GOOD, "test.toml").expect("valid");
        assert!(s.admin.listen.is_none(), "off unless configured");
        assert_eq!(s.admin.check_interval, Duration::from_secs(10));
    }

    #[test]
    fn the_log_is_kept_forever_unless_configured_and_never_shorter_than_its_files() {
        let db = "[database]\nurl = \"postgresql://mftd@127.0.0.1/mftd\"\n";
        let with = |retention: &str| format!("{GOOD}\n{db}[retention]\n{retention}\n");
        let s = Settings::from_toml(&with(""), "test.toml").expect("valid");
        assert_eq!(s.retention.log, None, "forever by default");
        let year = Duration::from_secs(31_557_600);
        let s = Settings::from_toml(
            &with("log = \"7y\"\nim = \"1y\"\ngroupchat = \"1y\"\npersistent = \"7y\""),
            "test.toml",
        )
        .expect("valid");
        assert_eq!(s.retention.log, Some(7 * year));
        let e = err(&with(
            "log = \"1y\"\nim = \"2y\"\ngroupchat = \"1y\"\npersistent = \"1y\"",
        ));
        assert!(e.contains("retention.log") && e.contains("outlive"), "{e}");
        let e = err(&with("log = \"7y\""));
        assert!(
            e.contains("retention.log") && e.contains("forever"),
            "files kept forever: {e}"
        );
    }

    #[test]
    fn the_retention_floor_is_the_stricter_of_global_and_per_chat_and_limits_respect_it() {
        let db = "[database]\nurl = \"postgresql://mftd@127.0.0.1/mftd\"\n";
        let with = |retention: &str| format!("{GOOD}\n{db}[retention]\n{retention}\n");
        let s = Settings::from_toml(
            &with("minimum = \"7d\"\nminimum_persistent = \"365d\"\nminimum_im = \"1d\"\nim = \"30d\""),
            "test.toml",
        )
        .expect("valid");
        let floor = s.retention.floor;
        let day = Duration::from_secs(86_400);
        assert_eq!(
            floor.im,
            7 * day,
            "a per-chat floor cannot weaken the global one"
        );
        assert_eq!(floor.groupchat, 7 * day);
        assert_eq!(floor.persistent, 365 * day);
        // Purposes: ephemeral by default, permanent only when nothing ages out.
        assert!(s.default_limits.allow_ephemeral);
        assert!(!s.default_limits.allow_permanent);
        let forever =
            Settings::from_toml(&with("allow_ephemeral = false"), "test.toml").expect("valid");
        assert!(!forever.default_limits.allow_ephemeral);
        assert!(forever.default_limits.allow_permanent);
        let refused =
            Settings::from_toml(&with("allow_permanent = false"), "test.toml").expect("valid");
        assert!(!refused.default_limits.allow_permanent);
        // A limit below its floor could never be honoured: refused, naming both.
        let e = err(&with("minimum = \"30d\"\ngroupchat = \"1d\""));
        assert!(
            e.contains("retention.groupchat") && e.contains("30days") && e.contains("raise"),
            "{e}"
        );
        let e = err(&with("minimum_im = \"2d\"\nim = \"1d\""));
        assert!(e.contains("retention.im"), "{e}");
    }

    #[test]
    fn environment_overrides_any_key_with_typed_values() {
        let env = [
            ("MFTD_HTTP__MAX_TRANSFERS", "64"),
            ("MFTD_NODE__NAME", "node_7"),
            ("MFTD_STORE__PATH", "/srv/mft/node_7"),
            ("MFTD_LOG__FORMAT", "json"),
            ("MFTD_LIMITS__ALLOWED_DOMAINS", "[\"a.test\", \"b.test\"]"),
            ("MFTD_RETENTION__ALLOW_PERMANENT", "true"),
            ("MFTD_BIN", "/not/config"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let s = Settings::from_toml_with_env(GOOD, "test.toml", env).expect("valid");
        assert_eq!(s.http.settings.max_transfers, 64);
        assert_eq!(s.node_name, "node_7");
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.allowed_domains, vec!["a.test", "b.test"]);
        assert!(s.default_limits.allow_permanent);
        // A new section, a nested table, and a wrong key name each say what went wrong.
        let admin = [("MFTD_ADMIN__LISTEN".to_owned(), "127.0.0.1:5281".to_owned())];
        let s = Settings::from_toml_with_env(GOOD, "test.toml", admin).expect("valid");
        assert_eq!(
            s.admin.listen,
            Some("127.0.0.1:5281".parse().expect("addr"))
        );
        let typo = [("MFTD_HTTP__MAX_TRANSFER".to_owned(), "1".to_owned())];
        let e = Settings::from_toml_with_env(GOOD, "test.toml", typo)
            .expect_err("unknown key")
            .to_string();
        assert!(
            e.contains("max_transfer") && e.contains("MFTD_HTTP__MAX_TRANSFER"),
            "{e}"
        );
        let not_a_section = [("MFTD_NODE__NAME__X".to_owned(), "1".to_owned())];
        let e = Settings::from_toml_with_env(GOOD, "test.toml", not_a_section)
            .expect_err("scalar is not a section")
            .to_string();
        assert!(e.contains("name is not a section"), "{e}");
    }

    #[test]
    fn secrets_are_strings_from_any_source_and_never_echoed() {
        // From the environment, a secret that looks like a number, a float,
        // infinity or a boolean is that string.
        for raw in ["12345678901234567890", "1.5e300000000000000", "inf", "true"] {
            let key = format!("{raw}-padding-to-16");
            for (name, value) in [
                ("MFTD_HTTP__TOKEN_KEY", raw.to_owned()),
                ("MFTD_HTTP__TOKEN_KEY", key.clone()),
            ] {
                let env = [(name.to_owned(), value.clone())];
                match Settings::from_toml_with_env(GOOD, "test.toml", env) {
                    Ok(s) => assert_eq!(s.token_key.expose(), value),
                    Err(e) => {
                        let e = e.to_string();
                        assert!(!e.contains(raw), "the secret is echoed: {e}");
                        assert!(e.contains("http.token_key"), "{e}");
                    }
                }
            }
            let env = [(
                "MFTD_HTTP__PREVIOUS_TOKEN_KEYS".to_owned(),
                format!("{raw}0000000000000000"),
            )];
            let s = Settings::from_toml_with_env(GOOD, "test.toml", env).expect("a one-key list");
            assert_eq!(s.previous_token_keys.len(), 1);
        }
        // A list of keys from the environment is a list of strings.
        let env = [(
            "MFTD_HTTP__PREVIOUS_TOKEN_KEYS".to_owned(),
            "[\"first-key-0123456789\", \"second-key-0123456789\"]".to_owned(),
        )];
        let s = Settings::from_toml_with_env(GOOD, "test.toml", env).expect("a list of two");
        let keys: Vec<&str> = s.previous_token_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["first-key-0123456789", "second-key-0123456789"]);
        // In the file, a secret of another type is refused without its value.
        for (value, kind) in [
            ("123456789012345678901", "number"),
            ("1.25e10", "number"),
            ("true", "boolean"),
            ("[\"k1-0123456789abcdef\"]", "list"),
        ] {
            let text = GOOD.replace(
                "token_key = \"0123456789abcdef0123\"",
                &format!("token_key = {value}"),
            );
            let e = err(&text);
            assert!(
                !e.contains(value.trim_matches(['[', ']', '"'])),
                "echoed: {e}"
            );
            assert!(e.contains(kind), "{e}");
        }
        let text = GOOD.replace(
            "token_key = \"0123456789abcdef0123\"",
            "token_key = \"0123456789abcdef0123\"\nprevious_token_keys = 4242424242424242",
        );
        assert!(!err(&text).contains("4242424242424242"), "{}", err(&text));
        // A syntax error on a secret's line says where, not what the line holds.
        let text = GOOD.replace(
            "token_key = \"0123456789abcdef0123\"",
            "token_key = \"0123456789abcdef0123",
        );
        let e = err(&text);
        assert!(!e.contains("0123456789abcdef0123"), "{e}");
        assert!(e.contains("line 8"), "{e}");
    }

    #[test]
    fn trusted_proxies_are_checked_with_key_and_line() {
        let key = "token_key = \"0123456789abcdef0123\"";
        let with = |list: &str| GOOD.replace(key, &format!("{key}\ntrusted_proxies = {list}"));
        let s = Settings::from_toml(&with(r#"["10.0.0.0/8", "::1"]"#), "t").expect("valid");
        assert!(s
            .http
            .settings
            .trusted_proxies
            .contains("10.1.2.3".parse().expect("ip")));
        let s = Settings::from_toml(GOOD, "t").expect("valid");
        assert!(!s
            .http
            .settings
            .trusted_proxies
            .contains("127.0.0.1".parse().expect("ip")));
        let e = err(&with(r#"["10.0.0.0/8", "10.0.0.1/8"]"#));
        assert!(
            e.contains("http.trusted_proxies (line 9)") && e.contains("10.0.0.0/8"),
            "{e}"
        );
        let e = err(&with(r#"["haproxy.internal"]"#));
        assert!(e.contains("http.trusted_proxies (line 9)"), "{e}");
    }

    #[test]
    fn what_would_fail_at_start_fails_here_with_key_and_line() {
        let with = |from: &str, to: &str| {
            assert!(GOOD.contains(from), "{from}");
            GOOD.replace(from, to)
        };
        let url = "public_url = \"https://upload.example.test:5443/files/\"";
        for bad in [
            "https://upload example.test/",
            "https://upload.example.test:99999/",
            "https://upload.example.test:0/",
            "https://user:pw@upload.example.test/",
            "https://upload.example.test/?x=1",
            "ftp://upload.example.test/",
            "https:///files/",
        ] {
            let e = err(&with(url, &format!("public_url = {bad:?}")));
            assert!(e.contains("http.public_url (line 7)"), "{bad}: {e}");
        }
        let s = Settings::from_toml(&with(url, "public_url = \"https://h.test\""), "t")
            .expect("no path is fine");
        assert_eq!(s.http.settings.base_path, "");
        for bad in ["host:notaport", "host:0", "host:70000", ":5347", "host"] {
            let text = with(
                "secret = \"s3cret\"",
                &format!("secret = \"s3cret\"\nrouter = {bad:?}"),
            );
            let e = err(&text);
            assert!(e.contains("xmpp.router (line 5)"), "{bad}: {e}");
        }
        // Secrets: empty inline or an empty file.
        assert!(err(&with("secret = \"s3cret\"", "secret = \" \"")).contains("xmpp.secret"));
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, "\n").expect("write");
        let e = err(&with(
            "secret = \"s3cret\"",
            &format!("secret_file = {:?}", empty.display().to_string()),
        ));
        assert!(e.contains("xmpp.secret") && e.contains("is empty"), "{e}");
        // The node directory ends in the node's name.
        let e = err(&with("path = \"/tmp/node_1\"", "path = \"/tmp/node_2\""));
        assert!(
            e.contains("store.path (line 13)") && e.contains("node_1"),
            "{e}"
        );
        // TLS to the database needs its CA; libpq's verify-full is understood.
        let db = |url: &str, ca: bool| {
            let ca = if ca {
                "ca_file = \"/etc/ssl/ca.pem\"\n"
            } else {
                ""
            };
            format!("{GOOD}\n[database]\nurl = {url:?}\n{ca}")
        };
        let e = err(&db("host=db.test user=mftd sslmode=require", false));
        assert!(e.contains("database.ca_file"), "{e}");
        let e = err(&db(
            "postgresql://mftd@db.test/mftd?sslmode=verify-full",
            false,
        ));
        assert!(e.contains("database.ca_file"), "{e}");
        Settings::from_toml(
            &db("postgresql://mftd@db.test/mftd?sslmode=verify-full", true),
            "t",
        )
        .expect("verify-full with a CA");
        // An override with one underscore is not silently ignored.
        let env = [("MFTD_XMPP_ROUTER".to_owned(), "10.0.0.1:5347".to_owned())];
        let e = Settings::from_toml_with_env(GOOD, "t", env)
            .expect_err("typo")
            .to_string();
        assert!(e.contains("MFTD_XMPP__ROUTER"), "{e}");
        let harmless = [("MFTD_RUN_TAG".to_owned(), "x".to_owned())];
        Settings::from_toml_with_env(GOOD, "t", harmless).expect("not a section name");
    }

    #[test]
    fn node_names_are_plain_directory_names() {
        for bad in [
            "", ".", "..", "...", "%2e%2e", "a/b", "a\\b", "nöde", "a b", "a\u{7}b",
        ] {
            assert!(!is_plain_node_name(bad), "{bad:?}");
            let quoted = toml::Value::String(bad.to_owned()).to_string();
            let text = GOOD.replace("name = \"node_1\"", &format!("name = {quoted}"));
            if let Err(e) = Settings::from_toml(&text, "test.toml") {
                assert!(e.to_string().contains("node.name"), "{bad:?}: {e}");
            } else {
                panic!("{bad:?} accepted");
            }
        }
        assert!(!is_plain_node_name(&"n".repeat(65)));
        for good in ["node_1", "node-2.eu", "n", &"n".repeat(64)] {
            assert!(is_plain_node_name(good), "{good:?}");
        }
    }

    #[test]
    fn log_format_is_text_or_json() {
        let s = Settings::from_toml(GOOD, "test.toml").expect("valid");
        assert_eq!(s.log.format, LogFormat::Text);
        let json = format!("{GOOD}[log]\nformat = \"json\"\nlevel = \"debug\"\n");
        let s = Settings::from_toml(&json, "test.toml").expect("valid");
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.log.level.as_deref(), Some("debug"));
        let bad = format!("{GOOD}[log]\nformat = \"xml\"\n");
        assert!(err(&bad).contains("unknown variant"), "{}", err(&bad));
    }

    #[test]
    fn good_config_and_defaults() {
        let s = Settings::from_toml(GOOD, "test.toml").expect("valid");
        assert_eq!(
            s.recipients.shares_per_minute, 120,
            "the share rate limit holds without a [recipients] section"
        );
        let s = Settings::from_toml(GOOD, "test.toml").expect("valid");
        assert_eq!(s.max_file_size, 4 << 30);
        assert_eq!(s.http.settings.base_path, "/files");
        assert_eq!(s.allowed_domains, ["example.test"]);
        assert_eq!(s.link.router, "127.0.0.1:5347");
        assert_eq!(s.slots.ttl, Duration::from_secs(300));
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "secrets must not be printed"
        );
        assert!(!format!("{s:?}").contains("0123456789abcdef0123"));
    }

    #[test]
    fn unknown_missing_and_bad_keys_are_named() {
        let unknown = GOOD.replace("[node]", "[node]\ncolour = \"blue\"");
        assert!(err(&unknown).contains("colour"), "{}", err(&unknown));
        let missing = GOOD.replace("name = \"node_1\"", "");
        assert!(err(&missing).contains("name"), "{}", err(&missing));
        let bad_size = GOOD.replace("max_file_size = \"0\"", "max_file_size = \"12 XB\"");
        assert!(
            err(&bad_size).contains("max_file_size") || err(&bad_size).contains("XB"),
            "{}",
            err(&bad_size)
        );
        let bad_url = GOOD.replace("https://upload", "ftp://upload");
        assert!(err(&bad_url).contains("http.public_url"));
        let short_key = GOOD.replace("0123456789abcdef0123", "short");
        assert!(err(&short_key).contains("http.token_key"));
        let both = GOOD.replace(
            "secret = \"s3cret\"",
            "secret = \"a\"\nsecret_file = \"/x\"",
        );
        assert!(err(&both).contains("not both"));
        // Each store kind takes only its own keys.
        let local_without_path = GOOD.replace("path = \"/tmp/node_1\"", "");
        assert!(
            err(&local_without_path).contains("path"),
            "{}",
            err(&local_without_path)
        );
        let sftp_without_section = GOOD.replace(
            "kind = \"local\"\npath = \"/tmp/node_1\"",
            "kind = \"sftp\"",
        );
        assert!(
            err(&sftp_without_section).contains("sftp"),
            "{}",
            err(&sftp_without_section)
        );
        let local_with_sftp_key = GOOD.replace(
            "path = \"/tmp/node_1\"",
            "path = \"/tmp/node_1\"\nhost = \"fs\"",
        );
        assert!(
            err(&local_with_sftp_key).contains("host"),
            "{}",
            err(&local_with_sftp_key)
        );
        let no_secret = GOOD.replace("secret = \"s3cret\"", "");
        assert!(err(&no_secret).contains("xmpp.secret"));
        let huge = GOOD.replace("max_file_size = \"0\"", "max_file_size = \"5 GiB\"");
        assert!(err(&huge).contains("limits.max_file_size"));
        let bad_jid = GOOD.replace("upload.example.test\"", "user@example.test\"");
        assert!(err(&bad_jid).contains("xmpp.component_jid"));
    }

    #[test]
    fn sftp_host_key_for_another_host_is_rejected_in_those_words() {
        let sftp = GOOD.replace(
            "kind = \"local\"\npath = \"/tmp/node_1\"",
            "kind = \"sftp\"\n[store.sftp]\nhost = \"files.example.test\"\nuser = \"mft\"\ndirectory = \"/srv/node_1\"\nprivate_key = \"/k\"\nhost_key = \"evil.example.test ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"",
        );
        let text = err(&sftp);
        assert!(text.contains("store.sftp.host_key"), "{text}");
        assert!(
            text.contains("not the configured host \"files.example.test\""),
            "{text}"
        );
        let good = sftp.replace("evil.example.test", "files.example.test");
        let s = Settings::from_toml(&good, "t").expect("valid");
        assert_eq!(s.store.sftp().expect("sftp").port, 22);
        let missing_key = s
            .check_files(Path::new("/etc/mftd/mftd.toml"))
            .expect_err("no key file");
        assert!(missing_key
            .to_string()
            .contains("mftd keys generate --config /etc/mftd/mftd.toml"));
    }

    #[test]
    fn the_documented_example_uses_only_known_keys() {
        let text = include_str!("../../../mftd.example.toml");
        let parsed: Result<Config, _> = toml::from_str(text);
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-file\n").expect("write");
        let text = GOOD.replace(
            "secret = \"s3cret\"",
            &format!("secret_file = {:?}", file.display().to_string()),
        );
        let s = Settings::from_toml(&text, "t").expect("valid");
        assert_eq!(s.link.secret, "from-file");
    }
}
