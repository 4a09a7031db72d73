//! One validated configuration, loaded from the environment over an optional TOML file.
//!
//! The file uses exactly the environment variables' names as keys (`DATABASE_URL = "..."`), so
//! there is one vocabulary to learn; the environment wins over the file. Unknown keys in the file
//! are an error (a typo must not silently fall back to a default). Every problem found is
//! reported at once, each with how to fix it, and start-up stops.
//!
//! Secrets (database password, signing keys, event key, JWT secret) are [`SecretString`]s: they
//! never appear in `Debug` output or logs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// Every setting the worker reads, with its meaning. This table drives the README's
/// configuration section, unknown-key detection in files and `riveredge-backup config`.
pub const KEYS: &[(&str, &str)] = &[
    ("DATABASE_URL", "RiverEdge database (backed up, and home of root_data_backups). Unset: `serve` starts a throwaway local PostgreSQL from the installed binaries; the data commands stop with exit code 2"),
    ("DATABASE_MAX_CONNECTIONS", "pool size for bookkeeping queries (default 10)"),
    ("BACKUP_STORAGE_DIR", "directory that holds backup artifacts (default ./backups); created 0700"),
    ("BACKUP_STORAGE", "where artifacts live: local (BACKUP_STORAGE_DIR, default) or s3 (the BACKUP_S3_* settings)"),
    ("BACKUP_S3_BUCKET", "s3 storage: the bucket (required with BACKUP_STORAGE=s3)"),
    ("BACKUP_S3_ENDPOINT", "s3 storage: endpoint URL of an S3-compatible server, e.g. http://minio:9000 (default: AWS for the region)"),
    ("BACKUP_S3_REGION", "s3 storage: region (default us-east-1)"),
    ("BACKUP_S3_PREFIX", "s3 storage: key prefix inside the bucket, e.g. riveredge/prod (default: none)"),
    ("BACKUP_S3_PATH_STYLE", "s3 storage: true for path-style URLs (MinIO, SeaweedFS, Ceph); false for virtual-hosted style (default: true when BACKUP_S3_ENDPOINT is set)"),
    ("BACKUP_S3_CREDENTIALS_FILE", "s3 storage: file with aws_access_key_id / aws_secret_access_key [/ aws_session_token] lines (the AWS credentials file format, [default] profile); default: AWS_* variables, then the instance's role"),
    ("AWS_ACCESS_KEY_ID", "s3 storage: access key id (when no credentials file is given)"),
    ("AWS_SECRET_ACCESS_KEY", "s3 storage: secret access key (never printed)"),
    ("AWS_SESSION_TOKEN", "s3 storage: session token for temporary credentials (never printed)"),
    ("BACKUP_ENCRYPTION_RECIPIENTS", "encryption at rest: comma-separated age X25519 public keys (age1…) new backups are encrypted to; the worker needs no secret to write"),
    ("BACKUP_ENCRYPTION_IDENTITY_FILE", "encryption at rest: age identity file (AGE-SECRET-KEY-1… lines, old keys too after a rotation) needed to read encrypted backups; alone, new backups go to its first key"),
    ("BACKUP_ENCRYPTION_PASSPHRASE_FILE", "encryption at rest: file whose first line is a passphrase (age scrypt); instead of X25519 keys"),
    ("BIND_ADDRESS", "address the HTTP server listens on (default 127.0.0.1:3000)"),
    ("SHUTDOWN_TIMEOUT_SECS", "how long in-flight requests may run after SIGTERM (default 30)"),
    ("PG_BIN_DIR", "directory with pg_dump/pg_restore/psql; default: the server's major version under /usr/lib/postgresql, then PATH"),
    ("BACKUP_MAX_CONCURRENT", "backups (and restores) running at once in this worker and across the app (default 2)"),
    ("BACKUP_JOBS", "parallel COPY connections inside one backup or restore (default 2)"),
    ("BACKUP_COMPRESSION_LEVEL", "zstd level for artifacts, 1..=19 (default 3: smaller than pg_dump -Fc at well under half its time; 1 is ~25% faster and ~10% larger)"),
    ("BACKUP_STEP_TIMEOUT_SECS", "upper bound for one dump/restore step (default 6900; Inngest cuts a call at 2 h)"),
    ("TENANTS_TABLE", "table whose ids are the valid tenant ids (default infra_tenants); a missing table is an error; empty or none: tenant ids are not checked"),
    ("INNGEST_APP_ID", "Inngest app id; functions are registered as <app id>-<slug> (default riveredge-backup)"),
    ("INNGEST_DEV", "1/true or a dev-server URL: dev mode (no signatures); 0/false: cloud mode; anything else is an error. Default: 1 when DATABASE_URL is unset, else cloud. Only `serve` reads the INNGEST_* settings"),
    ("INNGEST_DEV_ALLOW_REMOTE", "true: allow dev mode (no signature checks) on a non-loopback BIND_ADDRESS; anyone who can reach the port can then run backups and restores (default false)"),
    ("INNGEST_BASE_URL", "Inngest API and event origin, e.g. http://localhost:8288 or http://inngest:8288"),
    ("INNGEST_API_BASE_URL", "Inngest API origin (overrides INNGEST_BASE_URL for /fn/register and /v0)"),
    ("INNGEST_EVENT_API_BASE_URL", "Inngest event origin (overrides INNGEST_BASE_URL for /e/<key>)"),
    ("INNGEST_SIGNING_KEY", "signing key (signkey-<env>-<hex>); required by `serve` in cloud mode"),
    ("INNGEST_SIGNING_KEY_FALLBACK", "previous signing key, accepted during rotation"),
    ("INNGEST_EVENT_KEY", "event key for sending events"),
    ("INNGEST_ENV", "Inngest branch environment name (sent as X-Inngest-Env)"),
    ("INNGEST_SERVE_ORIGIN", "origin the Inngest server must call, e.g. http://worker:3000 inside Docker (default http://<BIND_ADDRESS>)"),
    ("INNGEST_SERVE_PATH", "path of the Inngest endpoint (default /api/inngest)"),
    ("INNGEST_STREAMING", "true: answer step calls with 201 + keep-alive bytes, so long dumps survive proxies' idle timeouts (default false, as in the official SDKs)"),
    ("INNGEST_SYNC_ON_STARTUP", "register with the Inngest server at start-up, retried with backoff (default true)"),
    ("JWT_SECRET_KEY", "RiverEdge's HS256 secret for the REST API's bearer tokens"),
    ("API_CORS_ORIGINS", "comma-separated browser origins allowed to call the REST API, e.g. https://riveredge.example.com (default: none, same-origin only)"),
    ("LOG_FORMAT", "pretty or json (default pretty); filter with RUST_LOG"),
];

/// The whole configuration of one worker process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub storage_dir: PathBuf,
    /// `Some` when `BACKUP_STORAGE=s3`: artifacts go to the bucket, `storage_dir` is unused.
    pub s3: Option<S3Settings>,
    /// `Some` when any `BACKUP_ENCRYPTION_*` is set: every stored object is an age file.
    pub encryption: Option<EncryptionSettings>,
    pub backup: BackupSettings,
    pub inngest: InngestSettings,
    /// RiverEdge's `JWT_SECRET_KEY`; the REST API refuses every request while it is unset.
    pub jwt_secret: Option<SecretString>,
    /// Origins the REST API answers CORS preflights for (`API_CORS_ORIGINS`); empty: none.
    pub api_cors_origins: Vec<String>,
    pub log_format: LogFormat,
}

#[derive(Clone)]
pub struct DatabaseSettings {
    /// `None` means: start a throwaway local cluster (newcomer default).
    pub url: Option<SecretString>,
    pub max_connections: u32,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field(
                "url",
                &self.url.as_ref().map(|u| redact_url(u.expose_secret())),
            )
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Encryption at rest (age): X25519 recipients and identities, or one passphrase.
#[derive(Clone)]
pub struct EncryptionSettings {
    pub recipients: Vec<String>,
    pub identity_file: Option<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
}

impl fmt::Debug for EncryptionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionSettings")
            .field("recipients", &self.recipients)
            .field("identity_file", &self.identity_file)
            .field("passphrase_file", &self.passphrase_file)
            .finish()
    }
}

/// An S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph RGW, …).
#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// `None`: AWS's endpoint for the region.
    pub endpoint: Option<String>,
    pub region: String,
    /// Validated like an object key (no `..`, no hidden segments); `None`: the bucket's root.
    pub prefix: Option<String>,
    pub path_style: bool,
    /// Static credentials (file or `AWS_*`); `None`: the instance's role.
    pub credentials: Option<S3Credentials>,
}

#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|c| &c.access_key_id),
            )
            .finish()
    }
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub bind: SocketAddr,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub pg_bin_dir: Option<PathBuf>,
    /// Global cap on concurrent dumps/restores: a per-process semaphore and the Inngest
    /// function-level concurrency limit, so the database is protected across replicas too.
    pub max_concurrent: u32,
    /// COPY connections used in parallel inside one backup or restore.
    pub jobs: u32,
    pub compression_level: i32,
    pub step_timeout: Duration,
    /// Table listing valid tenants (`None`: tenant ids are not checked against a table).
    pub tenants_table: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone)]
pub struct InngestSettings {
    pub app_id: String,
    pub dev: bool,
    pub api_base_url: String,
    pub event_api_base_url: String,
    pub signing_key: Option<SecretString>,
    pub signing_key_fallback: Option<SecretString>,
    pub event_key: Option<SecretString>,
    pub env: Option<String>,
    pub serve_origin: String,
    pub serve_path: String,
    pub streaming: bool,
    pub sync_on_startup: bool,
    /// Dev mode on a non-loopback address (no signature checks reachable from outside).
    pub dev_allow_remote: bool,
    /// An Inngest server was named (`INNGEST_BASE_URL`, `INNGEST_API_BASE_URL` or a URL in
    /// `INNGEST_DEV`): `check` then tests that it answers.
    pub server_configured: bool,
}

impl fmt::Debug for InngestSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present = |s: &Option<SecretString>| if s.is_some() { "[set]" } else { "[unset]" };
        f.debug_struct("InngestSettings")
            .field("app_id", &self.app_id)
            .field("dev", &self.dev)
            .field("api_base_url", &self.api_base_url)
            .field("event_api_base_url", &self.event_api_base_url)
            .field("signing_key", &present(&self.signing_key))
            .field("signing_key_fallback", &present(&self.signing_key_fallback))
            .field("event_key", &present(&self.event_key))
            .field("env", &self.env)
            .field("serve_origin", &self.serve_origin)
            .field("serve_path", &self.serve_path)
            .field("streaming", &self.streaming)
            .field("sync_on_startup", &self.sync_on_startup)
            .field("server_configured", &self.server_configured)
            .finish()
    }
}

/// What a command needs from the configuration: the operator commands never talk to Inngest or
/// listen on a port, so problems with those settings must not stop them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `serve`: everything, Inngest and HTTP included.
    Serve,
    /// Operator commands: database, storage, backup settings, logging.
    Operator,
}

/// Everything wrong with the configuration, one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct SettingsError {
    pub problems: Vec<String>,
}

const DEV_SERVER_URL: &str = "http://localhost:8288";
const CLOUD_API_URL: &str = "https://api.inngest.com";
const CLOUD_EVENT_URL: &str = "https://inn.gs";

impl Settings {
    /// Loads from the process environment and, when given, a TOML file.
    ///
    /// # Errors
    /// Every invalid or missing value, with what to do about it.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_for(file, Need::Serve)
    }

    /// [`Settings::load`] validating only what `need` uses.
    ///
    /// # Errors
    /// See [`Settings::load`].
    pub fn load_for(file: Option<&Path>, need: Need) -> Result<Self, SettingsError> {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| KEYS.iter().any(|(name, _)| name == k))
            .collect();
        Self::from_sources_for(&env, file, need)
    }

    /// Pure form of [`Settings::load`]: `env` stands for the environment.
    ///
    /// # Errors
    /// See [`Settings::load`].
    pub fn from_sources(
        env: &BTreeMap<String, String>,
        file: Option<&Path>,
    ) -> Result<Self, SettingsError> {
        Self::from_sources_for(env, file, Need::Serve)
    }

    /// [`Settings::from_sources`] validating only what `need` uses.
    ///
    /// # Errors
    /// See [`Settings::load`].
    pub fn from_sources_for(
        env: &BTreeMap<String, String>,
        file: Option<&Path>,
        need: Need,
    ) -> Result<Self, SettingsError> {
        let mut raw = match file {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        for (k, v) in env {
            raw.insert(k.clone(), v.clone());
        }
        // An empty value means "unset" (`Parser::get`), except where a key gives it a meaning.
        Parser {
            raw,
            problems: Vec::new(),
            serve_problems: Vec::new(),
        }
        .parse(need)
    }

    /// The URL the Inngest server must POST step calls to.
    pub fn serve_url(&self) -> String {
        format!(
            "{}{}",
            self.inngest.serve_origin.trim_end_matches('/'),
            self.inngest.serve_path
        )
    }
}

impl Settings {
    /// The effective value of every documented setting, by its documented name ([`KEYS`]), with
    /// secrets redacted: what `riveredge-backup config` prints.
    pub fn documented(&self) -> Vec<(&'static str, String)> {
        let secret =
            |s: &Option<SecretString>| if s.is_some() { "[set]" } else { "[unset]" }.to_owned();
        let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "[unset]".to_owned());
        let (b, i) = (&self.backup, &self.inngest);
        KEYS.iter()
            .map(|(key, _)| {
                let value = match *key {
                    "DATABASE_URL" => self
                        .database
                        .url
                        .as_ref()
                        .map_or_else(|| "[unset]".to_owned(), |u| redact_url(u.expose_secret())),
                    "DATABASE_MAX_CONNECTIONS" => self.database.max_connections.to_string(),
                    "BACKUP_STORAGE_DIR" => self.storage_dir.display().to_string(),
                    "BACKUP_STORAGE" => if self.s3.is_some() { "s3" } else { "local" }.to_owned(),
                    "BACKUP_S3_BUCKET" => opt(&self.s3.as_ref().map(|s| s.bucket.clone())),
                    "BACKUP_S3_ENDPOINT" => opt(&self.s3.as_ref().and_then(|s| s.endpoint.clone())),
                    "BACKUP_S3_REGION" => opt(&self.s3.as_ref().map(|s| s.region.clone())),
                    "BACKUP_S3_PREFIX" => opt(&self.s3.as_ref().and_then(|s| s.prefix.clone())),
                    "BACKUP_S3_PATH_STYLE" => {
                        opt(&self.s3.as_ref().map(|s| s.path_style.to_string()))
                    }
                    "AWS_ACCESS_KEY_ID" => opt(&self
                        .s3
                        .as_ref()
                        .and_then(|s| s.credentials.as_ref())
                        .map(|c| c.access_key_id.clone())),
                    "AWS_SECRET_ACCESS_KEY"
                    | "AWS_SESSION_TOKEN"
                    | "BACKUP_S3_CREDENTIALS_FILE" => {
                        if self.s3.as_ref().is_some_and(|s| s.credentials.is_some()) {
                            "[set]"
                        } else {
                            "[unset]"
                        }
                        .to_owned()
                    }
                    "BACKUP_ENCRYPTION_RECIPIENTS" => self
                        .encryption
                        .as_ref()
                        .map_or_else(|| "[unset]".to_owned(), |e| e.recipients.join(",")),
                    "BACKUP_ENCRYPTION_IDENTITY_FILE" => opt(&self
                        .encryption
                        .as_ref()
                        .and_then(|e| e.identity_file.as_ref())
                        .map(|p| p.display().to_string())),
                    "BACKUP_ENCRYPTION_PASSPHRASE_FILE" => opt(&self
                        .encryption
                        .as_ref()
                        .and_then(|e| e.passphrase_file.as_ref())
                        .map(|p| p.display().to_string())),
                    "BIND_ADDRESS" => self.http.bind.to_string(),
                    "SHUTDOWN_TIMEOUT_SECS" => self.http.shutdown_timeout.as_secs().to_string(),
                    "PG_BIN_DIR" => opt(&b.pg_bin_dir.as_ref().map(|p| p.display().to_string())),
                    "BACKUP_MAX_CONCURRENT" => b.max_concurrent.to_string(),
                    "BACKUP_JOBS" => b.jobs.to_string(),
                    "BACKUP_COMPRESSION_LEVEL" => b.compression_level.to_string(),
                    "BACKUP_STEP_TIMEOUT_SECS" => b.step_timeout.as_secs().to_string(),
                    "TENANTS_TABLE" => b
                        .tenants_table
                        .clone()
                        .unwrap_or_else(|| "none (tenant ids are not checked)".to_owned()),
                    "INNGEST_APP_ID" => i.app_id.clone(),
                    "INNGEST_DEV" => if i.dev { "1" } else { "0" }.to_owned(),
                    "INNGEST_BASE_URL" | "INNGEST_API_BASE_URL" => i.api_base_url.clone(),
                    "INNGEST_EVENT_API_BASE_URL" => i.event_api_base_url.clone(),
                    "INNGEST_SIGNING_KEY" => secret(&i.signing_key),
                    "INNGEST_SIGNING_KEY_FALLBACK" => secret(&i.signing_key_fallback),
                    "INNGEST_EVENT_KEY" => secret(&i.event_key),
                    "INNGEST_ENV" => opt(&i.env),
                    "INNGEST_SERVE_ORIGIN" => i.serve_origin.clone(),
                    "INNGEST_SERVE_PATH" => i.serve_path.clone(),
                    "INNGEST_STREAMING" => i.streaming.to_string(),
                    "INNGEST_SYNC_ON_STARTUP" => i.sync_on_startup.to_string(),
                    "JWT_SECRET_KEY" => secret(&self.jwt_secret),
                    "LOG_FORMAT" => match self.log_format {
                        LogFormat::Pretty => "pretty",
                        LogFormat::Json => "json",
                    }
                    .to_owned(),
                    _ => "[see README]".to_owned(),
                };
                (*key, value)
            })
            .collect()
    }
}

/// Reads static S3 credentials from an AWS-credentials-style file (`key = value` lines; a
/// `[default]` section header and comments are skipped). Values never appear in the error.
fn read_s3_credentials(path: &Path) -> Result<S3Credentials, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mut values = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';', '[']) {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err("every line must be `key = value`".to_owned());
        };
        values.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let access_key_id = values
        .remove("aws_access_key_id")
        .ok_or("aws_access_key_id is missing")?;
    let secret = values
        .remove("aws_secret_access_key")
        .ok_or("aws_secret_access_key is missing")?;
    Ok(S3Credentials {
        access_key_id,
        secret_access_key: SecretString::from(secret),
        session_token: values.remove("aws_session_token").map(SecretString::from),
    })
}

fn read_file(path: &Path) -> Result<BTreeMap<String, String>, SettingsError> {
    let fail = |msg: String| SettingsError {
        problems: vec![msg],
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(format!("cannot read settings file {}: {e}", path.display())))?;
    let table: toml::Table = text.parse().map_err(|e| {
        fail(format!(
            "settings file {} is not valid TOML: {e}",
            path.display()
        ))
    })?;
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for (key, value) in table {
        if !KEYS.iter().any(|(name, _)| *name == key) {
            problems.push(format!(
                "unknown key {key} in {}; keys are the environment variable names (see README)",
                path.display()
            ));
            continue;
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                problems.push(format!(
                    "{key} must be a string, number or boolean, not {other}"
                ));
                continue;
            }
        };
        out.insert(key, text);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(SettingsError { problems })
    }
}

struct Parser {
    raw: BTreeMap<String, String>,
    problems: Vec<String>,
    /// Problems with settings only `serve` reads (HTTP, Inngest): fatal for it alone.
    serve_problems: Vec<String>,
}

impl Parser {
    fn get(&self, key: &str) -> Option<String> {
        self.raw
            .get(key)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    fn number<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
        &mut self,
        key: &str,
        default: T,
        min: T,
        max: T,
    ) -> T {
        let Some(text) = self.get(key) else {
            return default;
        };
        match text.parse::<T>() {
            Ok(v) if v >= min && v <= max => v,
            _ => {
                self.problems.push(format!(
                    "{key}={text:?} is not a number from {min} to {max}"
                ));
                default
            }
        }
    }

    fn boolean(&mut self, key: &str, default: bool) -> bool {
        match self.get(key).map(|s| s.to_ascii_lowercase()).as_deref() {
            None => default,
            Some("1" | "true" | "yes" | "on") => true,
            Some("0" | "false" | "no" | "off") => false,
            Some(other) => {
                self.problems.push(format!(
                    "{key}={other:?} must be 1, 0, true or false{}",
                    if key == "INNGEST_DEV" {
                        ", or the dev server's URL"
                    } else {
                        ""
                    }
                ));
                default
            }
        }
    }

    fn secret(&self, key: &str) -> Option<SecretString> {
        self.get(key).map(SecretString::from)
    }

    fn url(&mut self, key: &str) -> Option<String> {
        let text = self.get(key)?;
        match url::Url::parse(&text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                Some(text.trim_end_matches('/').to_owned())
            }
            _ => {
                self.problems.push(format!(
                    "{key}={text:?} must be an http(s) URL such as http://localhost:8288"
                ));
                None
            }
        }
    }

    /// A comma-separated list of origins (`scheme://host[:port]`, no path).
    fn origins(&mut self, key: &str) -> Vec<String> {
        let Some(text) = self.get(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for origin in text.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            match url::Url::parse(origin) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.path() == "/" => {
                    out.push(origin.trim_end_matches('/').to_owned());
                }
                _ => self.problems.push(format!(
                    "{key}: {origin:?} must be an origin such as https://riveredge.example.com"
                )),
            }
        }
        out
    }

    fn parse(mut self, need: Need) -> Result<Settings, SettingsError> {
        let database = self.database();
        let storage_dir = PathBuf::from(
            self.get("BACKUP_STORAGE_DIR")
                .unwrap_or_else(|| "./backups".to_owned()),
        );
        let s3 = self.s3();
        let encryption = self.encryption();
        let backup = self.backup();
        // HTTP and Inngest settings report into `problems` too; kept apart below.
        let general = std::mem::take(&mut self.problems);
        let bind = self.bind();
        let http = HttpSettings {
            bind,
            shutdown_timeout: Duration::from_secs(self.number(
                "SHUTDOWN_TIMEOUT_SECS",
                30,
                1,
                3600,
            )),
        };
        let inngest = self.inngest(database.url.is_none(), bind);
        self.serve_problems = std::mem::replace(&mut self.problems, general);
        let jwt_secret = self.secret("JWT_SECRET_KEY");
        let api_cors_origins = self.origins("API_CORS_ORIGINS");
        let log_format = match self
            .get("LOG_FORMAT")
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.problems
                    .push(format!("LOG_FORMAT={other:?} must be pretty or json"));
                LogFormat::Pretty
            }
        };
        if need == Need::Serve {
            self.problems.append(&mut self.serve_problems);
        }
        if self.problems.is_empty() {
            Ok(Settings {
                database,
                http,
                storage_dir,
                s3,
                encryption,
                backup,
                inngest,
                jwt_secret,
                api_cors_origins,
                log_format,
            })
        } else {
            Err(SettingsError {
                problems: self.problems,
            })
        }
    }

    /// The `BACKUP_ENCRYPTION_*` settings; the keys themselves are loaded (and checked) when
    /// storage is opened.
    fn encryption(&mut self) -> Option<EncryptionSettings> {
        let recipients: Vec<String> = self
            .get("BACKUP_ENCRYPTION_RECIPIENTS")
            .map(|r| {
                r.split([',', ' ', '\n'])
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let identity_file = self
            .get("BACKUP_ENCRYPTION_IDENTITY_FILE")
            .map(PathBuf::from);
        let passphrase_file = self
            .get("BACKUP_ENCRYPTION_PASSPHRASE_FILE")
            .map(PathBuf::from);
        if recipients.is_empty() && identity_file.is_none() && passphrase_file.is_none() {
            return None;
        }
        if passphrase_file.is_some() && (!recipients.is_empty() || identity_file.is_some()) {
            self.problems.push(
                "BACKUP_ENCRYPTION_PASSPHRASE_FILE cannot be combined with X25519 keys (age encrypts a passphrase file to nothing else)".to_owned(),
            );
        }
        Some(EncryptionSettings {
            recipients,
            identity_file,
            passphrase_file,
        })
    }

    /// `BACKUP_STORAGE=s3` and its bucket settings; `None` for local storage.
    fn s3(&mut self) -> Option<S3Settings> {
        match self
            .get("BACKUP_STORAGE")
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("local") => return None,
            Some("s3") => {}
            Some(other) => {
                self.problems
                    .push(format!("BACKUP_STORAGE={other:?} must be local or s3"));
                return None;
            }
        }
        let bucket = self.get("BACKUP_S3_BUCKET").unwrap_or_else(|| {
            self.problems
                .push("BACKUP_STORAGE=s3 needs BACKUP_S3_BUCKET (the bucket's name)".to_owned());
            String::new()
        });
        let endpoint = self.url("BACKUP_S3_ENDPOINT");
        let region = self
            .get("BACKUP_S3_REGION")
            .unwrap_or_else(|| "us-east-1".to_owned());
        let prefix = self
            .get("BACKUP_S3_PREFIX")
            .map(|p| p.trim_matches('/').to_owned());
        if let Some(p) = &prefix {
            if crate::storage::ObjectKey::parse(p).is_err() {
                self.problems.push(format!(
                    "BACKUP_S3_PREFIX={p:?} must be /-separated names of letters, digits, . _ -"
                ));
            }
        }
        let path_style = self.boolean("BACKUP_S3_PATH_STYLE", endpoint.is_some());
        let credentials = match self.get("BACKUP_S3_CREDENTIALS_FILE") {
            Some(file) => match read_s3_credentials(Path::new(&file)) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.problems
                        .push(format!("BACKUP_S3_CREDENTIALS_FILE={file:?}: {e}"));
                    None
                }
            },
            None => match (
                self.get("AWS_ACCESS_KEY_ID"),
                self.secret("AWS_SECRET_ACCESS_KEY"),
            ) {
                (Some(access_key_id), Some(secret_access_key)) => Some(S3Credentials {
                    access_key_id,
                    secret_access_key,
                    session_token: self.secret("AWS_SESSION_TOKEN"),
                }),
                (None, None) => None,
                _ => {
                    self.problems.push(
                        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together"
                            .to_owned(),
                    );
                    None
                }
            },
        };
        Some(S3Settings {
            bucket,
            endpoint,
            region,
            prefix,
            path_style,
            credentials,
        })
    }

    fn database(&mut self) -> DatabaseSettings {
        let url = self.get("DATABASE_URL");
        if let Some(u) = &url {
            match url::Url::parse(u) {
                Ok(parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") => {}
                _ => self.problems.push(format!(
                    "DATABASE_URL={} must look like postgres://user:password@host:5432/riveredge",
                    redact_url(u)
                )),
            }
        }
        DatabaseSettings {
            url: url.map(SecretString::from),
            max_connections: self.number("DATABASE_MAX_CONNECTIONS", 10, 2, 1000),
        }
    }

    fn bind(&mut self) -> SocketAddr {
        let default: SocketAddr = ([127, 0, 0, 1], 3000).into();
        match self.get("BIND_ADDRESS") {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|_| {
                self.problems.push(format!(
                    "BIND_ADDRESS={text:?} must be host:port, e.g. 0.0.0.0:3000"
                ));
                default
            }),
        }
    }

    fn backup(&mut self) -> BackupSettings {
        // Unset means the default table; only an explicit empty value or `none` turns the
        // check off, so a typo can never silently disable it (the table must then exist).
        let tenants_table = match self.raw.get("TENANTS_TABLE").map(|s| s.trim()) {
            None => Some("infra_tenants".to_owned()),
            Some(s) if s.is_empty() || s.eq_ignore_ascii_case("none") => None,
            Some(s) => Some(s.to_owned()),
        };
        BackupSettings {
            pg_bin_dir: self.get("PG_BIN_DIR").map(PathBuf::from),
            max_concurrent: self.number("BACKUP_MAX_CONCURRENT", 2, 1, 64),
            jobs: self.number("BACKUP_JOBS", 2, 1, 32),
            compression_level: self.number("BACKUP_COMPRESSION_LEVEL", 3, 1, 19),
            step_timeout: Duration::from_secs(self.number(
                "BACKUP_STEP_TIMEOUT_SECS",
                6900,
                10,
                7200,
            )),
            tenants_table,
        }
    }

    fn inngest(&mut self, local_database: bool, bind: SocketAddr) -> InngestSettings {
        // INNGEST_DEV: true or a URL selects dev mode; false forces cloud (protocol §1.1).
        // Anything else is an error: `maybe` must not quietly switch signatures off.
        let (dev, dev_url) = match self.get("INNGEST_DEV") {
            None => (local_database, None),
            Some(v) if v.starts_with("http://") || v.starts_with("https://") => {
                (true, self.url("INNGEST_DEV"))
            }
            Some(_) => (self.boolean("INNGEST_DEV", local_database), None),
        };
        let base = self.url("INNGEST_BASE_URL");
        let server_configured =
            base.is_some() || dev_url.is_some() || self.get("INNGEST_API_BASE_URL").is_some();
        let default_api = if dev { DEV_SERVER_URL } else { CLOUD_API_URL };
        let default_event = if dev { DEV_SERVER_URL } else { CLOUD_EVENT_URL };
        let api_base_url = self
            .url("INNGEST_API_BASE_URL")
            .or_else(|| base.clone())
            .or_else(|| dev_url.clone())
            .unwrap_or_else(|| default_api.to_owned());
        let event_api_base_url = self
            .url("INNGEST_EVENT_API_BASE_URL")
            .or(base)
            .or(dev_url)
            .unwrap_or_else(|| default_event.to_owned());
        let signing_key = self.secret("INNGEST_SIGNING_KEY");
        let signing_key_fallback = self.secret("INNGEST_SIGNING_KEY_FALLBACK");
        for (key, value) in [
            ("INNGEST_SIGNING_KEY", &signing_key),
            ("INNGEST_SIGNING_KEY_FALLBACK", &signing_key_fallback),
        ] {
            if let Some(k) = value {
                if !valid_signing_key(k.expose_secret()) {
                    self.problems.push(format!(
                        "{key} must be signkey-<env>-<hex> or bare hex (from the Inngest dashboard or `openssl rand -hex 32`)"
                    ));
                }
            }
        }
        if !dev && signing_key.is_none() {
            self.problems.push(
                "INNGEST_SIGNING_KEY is required in cloud mode (every step call is signed); \
                 for the local Inngest dev server set INNGEST_DEV=1 instead"
                    .to_owned(),
            );
        }
        let serve_origin = match self.url("INNGEST_SERVE_ORIGIN") {
            Some(o) => o,
            None => {
                // 0.0.0.0 is not an address anyone can call; advertise loopback instead.
                let host = if bind.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else {
                    bind.ip().to_string()
                };
                format!("http://{host}:{}", bind.port())
            }
        };
        let serve_path = self
            .get("INNGEST_SERVE_PATH")
            .unwrap_or_else(|| "/api/inngest".to_owned());
        if !serve_path.starts_with('/') {
            self.problems.push(format!(
                "INNGEST_SERVE_PATH={serve_path:?} must start with /"
            ));
        }
        let app_id = self
            .get("INNGEST_APP_ID")
            .unwrap_or_else(|| "riveredge-backup".to_owned());
        if !app_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.problems.push(format!(
                "INNGEST_APP_ID={app_id:?} may contain only letters, digits, - and _"
            ));
        }
        InngestSettings {
            app_id,
            dev,
            api_base_url,
            event_api_base_url,
            signing_key,
            signing_key_fallback,
            event_key: self.secret("INNGEST_EVENT_KEY"),
            env: self.get("INNGEST_ENV"),
            serve_origin,
            serve_path,
            streaming: self.boolean("INNGEST_STREAMING", false),
            sync_on_startup: self.boolean("INNGEST_SYNC_ON_STARTUP", true),
            dev_allow_remote: self.boolean("INNGEST_DEV_ALLOW_REMOTE", false),
            server_configured,
        }
    }
}

fn valid_signing_key(key: &str) -> bool {
    let hex_part = match key.strip_prefix("signkey-") {
        Some(rest) => rest.split_once('-').map_or("", |(_, h)| h),
        None => key,
    };
    !hex_part.is_empty()
        && hex_part.len() % 2 == 0
        && hex_part.chars().all(|c| c.is_ascii_hexdigit())
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for messages and Debug.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            // Passwords may also hide in the query string (libpq accepts ?password=).
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        "***".to_owned()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_environment_gives_a_local_dev_worker() {
        let s = Settings::from_sources(&env(&[]), None).unwrap();
        assert!(s.database.url.is_none());
        assert!(s.inngest.dev, "no DATABASE_URL means local: dev mode");
        assert_eq!(s.inngest.api_base_url, DEV_SERVER_URL);
        assert_eq!(s.serve_url(), "http://127.0.0.1:3000/api/inngest");
    }

    #[test]
    fn a_real_database_without_signing_key_or_dev_flag_is_refused_with_advice() {
        let err = Settings::from_sources(
            &env(&[("DATABASE_URL", "postgres://u:p@db/riveredge")]),
            None,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("INNGEST_SIGNING_KEY is required"), "{text}");
        assert!(text.contains("INNGEST_DEV=1"), "{text}");
    }

    #[test]
    fn operator_commands_do_not_need_inngest_settings() {
        let vars = env(&[("DATABASE_URL", "postgres://u:p@db/riveredge")]);
        let s = Settings::from_sources_for(&vars, None, Need::Operator).unwrap();
        assert!(s.database.url.is_some());
        let err = Settings::from_sources_for(
            &env(&[
                ("DATABASE_URL", "postgres://u:p@db/riveredge"),
                ("BACKUP_JOBS", "0"),
            ]),
            None,
            Need::Operator,
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 1, "only the backup setting: {err}");
    }

    #[test]
    fn inngest_dev_accepts_only_booleans_and_urls() {
        let err = Settings::from_sources(&env(&[("INNGEST_DEV", "maybe")]), None).unwrap_err();
        assert!(err.to_string().contains("INNGEST_DEV=\"maybe\""), "{err}");
        let s = Settings::from_sources(
            &env(&[
                ("INNGEST_DEV", "false"),
                ("INNGEST_SIGNING_KEY", "signkey-test-00ff"),
            ]),
            None,
        )
        .unwrap();
        assert!(!s.inngest.dev);
        assert!(
            Settings::from_sources(&env(&[("INNGEST_DEV", "true")]), None)
                .unwrap()
                .inngest
                .dev
        );
    }

    #[test]
    fn the_tenant_check_is_turned_off_only_explicitly() {
        let table = |v: Option<&str>| {
            let vars = v.map_or_else(|| env(&[]), |v| env(&[("TENANTS_TABLE", v)]));
            Settings::from_sources(&vars, None)
                .unwrap()
                .backup
                .tenants_table
        };
        assert_eq!(table(None).as_deref(), Some("infra_tenants"));
        assert_eq!(table(Some("tenants")).as_deref(), Some("tenants"));
        assert_eq!(table(Some("")), None);
        assert_eq!(table(Some("none")), None);
    }

    #[test]
    fn config_lists_every_documented_name_and_no_secret() {
        let s = Settings::from_sources(
            &env(&[
                ("DATABASE_URL", "postgres://app:hunter2@db:5432/riveredge"),
                ("INNGEST_SIGNING_KEY", "signkey-prod-abcdef0123"),
                ("JWT_SECRET_KEY", "jwt-secret-value"),
            ]),
            None,
        )
        .unwrap();
        let shown = s.documented();
        assert_eq!(shown.len(), KEYS.len());
        let text = format!("{shown:?}");
        for secret in ["hunter2", "abcdef0123", "jwt-secret-value"] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
    }

    #[test]
    fn all_problems_are_reported_together() {
        let err = Settings::from_sources(
            &env(&[
                ("BIND_ADDRESS", "nope"),
                ("BACKUP_JOBS", "0"),
                ("LOG_FORMAT", "xml"),
            ]),
            None,
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
    }

    #[test]
    fn debug_output_never_contains_secrets() {
        let s = Settings::from_sources(
            &env(&[
                (
                    "DATABASE_URL",
                    "postgres://app:hunter2@db:5432/riveredge?password=hunter3",
                ),
                ("INNGEST_SIGNING_KEY", "signkey-prod-abcdef0123"),
                ("INNGEST_EVENT_KEY", "evkey-secret"),
                ("JWT_SECRET_KEY", "jwt-secret-value"),
            ]),
            None,
        )
        .unwrap();
        let text = format!("{s:?}");
        for secret in [
            "hunter2",
            "hunter3",
            "abcdef0123",
            "evkey-secret",
            "jwt-secret-value",
        ] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
        assert!(
            text.contains("db:5432"),
            "non-secret parts stay visible: {text}"
        );
    }

    #[test]
    fn dev_url_sets_both_origins_and_explicit_origins_win() {
        let s = Settings::from_sources(
            &env(&[
                ("INNGEST_DEV", "http://inngest:8288/"),
                ("INNGEST_EVENT_API_BASE_URL", "http://events:9000"),
            ]),
            None,
        )
        .unwrap();
        assert!(s.inngest.dev);
        assert_eq!(s.inngest.api_base_url, "http://inngest:8288");
        assert_eq!(s.inngest.event_api_base_url, "http://events:9000");
    }

    #[test]
    fn file_values_are_overridden_by_the_environment_and_unknown_keys_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.toml");
        std::fs::write(&path, "BACKUP_JOBS = 4\nBIND_ADDRESS = \"0.0.0.0:3000\"\n").unwrap();
        let s = Settings::from_sources(&env(&[("BACKUP_JOBS", "3")]), Some(&path)).unwrap();
        assert_eq!(s.backup.jobs, 3);
        assert_eq!(s.http.bind.port(), 3000);
        assert_eq!(
            s.inngest.serve_origin, "http://127.0.0.1:3000",
            "0.0.0.0 is advertised as loopback"
        );

        std::fs::write(&path, "BACKUP_JOB = 4\n").unwrap();
        let err = Settings::from_sources(&env(&[]), Some(&path)).unwrap_err();
        assert!(err.to_string().contains("unknown key BACKUP_JOB"), "{err}");
    }

    #[test]
    fn every_setting_is_documented_in_the_readme() {
        let readme = include_str!("../README.md");
        for (key, _) in KEYS {
            assert!(
                readme.contains(&format!("| `{key}` |")),
                "{key} is missing from README's configuration table"
            );
        }
    }

    #[test]
    fn signing_keys_must_be_hex_with_optional_prefix() {
        assert!(valid_signing_key("signkey-test-0123456789abcdef"));
        assert!(valid_signing_key("0123456789abcdef"));
        assert!(!valid_signing_key("signkey-test-xyz"));
        assert!(!valid_signing_key("abc"));
    }
}
