//! Connection parameters for the database, for our pool and for libpq child processes.
//!
//! Child processes (`pg_dump`, `pg_restore`, `psql`) never see the password on their command
//! line or in `PGPASSWORD`: it goes into a private password file (directory 0700, file 0600,
//! removed on drop) named by `PGPASSFILE`. libpq ignores a password file readable by others,
//! which is why the modes matter.

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

/// Where and as whom to connect. Parsed once from `DATABASE_URL`.
#[derive(Clone)]
pub struct ConnInfo {
    /// TCP host name, or a directory holding the server's unix socket.
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<SecretString>,
    pub database: String,
    /// `sslmode` and other libpq parameters that are not secrets.
    pub params: Vec<(String, String)>,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnInfo")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnInfoError {
    #[error("the database URL is not a postgres:// URL")]
    NotPostgres,
    #[error("the database URL names no database (add /<name> to its path)")]
    NoDatabase,
}

/// libpq parameters that may appear in the query string and are passed on to children.
const PASSTHROUGH: &[(&str, &str)] = &[
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("application_name", "PGAPPNAME"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
];

impl ConnInfo {
    /// Parses `postgres://user:password@host:port/db?host=/socket/dir&sslmode=...`.
    ///
    /// # Errors
    /// A URL of another scheme, or one without a database name.
    pub fn parse(raw: &str) -> Result<Self, ConnInfoError> {
        let url = url::Url::parse(raw).map_err(|_| ConnInfoError::NotPostgres)?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(ConnInfoError::NotPostgres);
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let mut host = url.host_str().unwrap_or("").to_owned();
        let mut port = url.port().unwrap_or(5432);
        let mut user = decode(url.username());
        let mut password = url.password().map(|p| SecretString::from(decode(p)));
        let mut params = Vec::new();
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "host" => host = v.into_owned(),
                "port" => port = v.parse().unwrap_or(port),
                "user" => user = v.into_owned(),
                "password" => password = Some(SecretString::from(v.into_owned())),
                key if PASSTHROUGH.iter().any(|(p, _)| *p == key) => {
                    params.push((key.to_owned(), v.into_owned()));
                }
                _ => {}
            }
        }
        let database = decode(url.path().trim_start_matches('/'));
        if database.is_empty() {
            return Err(ConnInfoError::NoDatabase);
        }
        if host.is_empty() {
            host = "localhost".to_owned();
        }
        if user.is_empty() {
            user = "postgres".to_owned();
        }
        Ok(Self {
            host,
            port,
            user,
            password,
            database,
            params,
        })
    }

    /// The same server and credentials, another database (restore targets, drills, tests).
    pub fn with_database(&self, database: &str) -> Self {
        Self {
            database: database.to_owned(),
            ..self.clone()
        }
    }

    /// Options for sqlx; the password travels in memory only.
    pub fn connect_options(&self) -> PgConnectOptions {
        let mut opts = PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(&self.database)
            .application_name("riveredge-backup");
        if let Some(p) = &self.password {
            opts = opts.password(p.expose_secret());
        }
        if let Some((_, mode)) = self.params.iter().find(|(k, _)| k == "sslmode") {
            if let Ok(mode) = mode.parse() {
                opts = opts.ssl_mode(mode);
            }
        }
        opts
    }

    /// A URL for humans and logs, without the password.
    pub fn display_url(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    /// Environment for a libpq child process. The password, if any, is in `passfile`.
    pub fn child_env(&self, passfile: Option<&PassFile>) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = vec![
            ("PGHOST".into(), self.host.clone().into()),
            ("PGPORT".into(), self.port.to_string().into()),
            ("PGUSER".into(), self.user.clone().into()),
            ("PGDATABASE".into(), self.database.clone().into()),
            // Deterministic text output whatever the server or login defaults are.
            ("PGCLIENTENCODING".into(), "UTF8".into()),
            ("PGTZ".into(), "UTC".into()),
            ("PGDATESTYLE".into(), "ISO".into()),
        ];
        for (key, value) in &self.params {
            if let Some((_, var)) = PASSTHROUGH.iter().find(|(p, _)| p == key) {
                env.push(((*var).into(), value.clone().into()));
            }
        }
        if let Some(pf) = passfile {
            env.push(("PGPASSFILE".into(), pf.path().into()));
        }
        env
    }

    /// Writes the password (if any) to a private password file for child processes.
    ///
    /// # Errors
    /// The temporary directory or file cannot be created.
    pub fn passfile(&self) -> std::io::Result<Option<PassFile>> {
        self.password.as_ref().map(PassFile::create).transpose()
    }
}

/// Password-file directories are `<tmp>/rbk-pgpass-<pid>-<random>`.
pub const PASSFILE_PREFIX: &str = "rbk-pgpass-";

/// A 0600 `.pgpass`-format file in a 0700 directory, deleted on drop.
pub struct PassFile {
    dir: tempfile::TempDir,
}

impl PassFile {
    fn create(password: &SecretString) -> std::io::Result<Self> {
        // The pid in the name lets the reaper remove the files of a process killed with -9
        // (its drop never ran) and only those.
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PASSFILE_PREFIX}{}-", std::process::id()))
            .tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.path().join("pgpass"))?;
        // Any host, port, database and user: the file only ever serves this one connection's
        // children, and restore drills connect to other databases on the same server.
        let escaped = password
            .expose_secret()
            .replace('\\', "\\\\")
            .replace(':', "\\:");
        writeln!(file, "*:*:*:*:{escaped}")?;
        file.sync_all()?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("pgpass")
    }
}

/// Quotes an identifier for SQL (`"a""b"`). Names still come from the catalog, never raw input.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL (`'it''s'`).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_url_with_encoded_password_and_sslmode() {
        let c =
            ConnInfo::parse("postgres://app:p%40ss%3Aw@db.internal:6543/riveredge?sslmode=require")
                .unwrap();
        assert_eq!(
            (
                c.host.as_str(),
                c.port,
                c.user.as_str(),
                c.database.as_str()
            ),
            ("db.internal", 6543, "app", "riveredge")
        );
        assert_eq!(c.password.as_ref().unwrap().expose_secret(), "p@ss:w");
        assert!(!format!("{c:?}").contains("p@ss"));
        let env = c.child_env(None);
        assert!(env.contains(&("PGSSLMODE".into(), "require".into())));
        assert!(env.iter().all(|(k, _)| k != "PGPASSWORD"));
    }

    #[test]
    fn parses_unix_socket_directory_from_query() {
        let c =
            ConnInfo::parse("postgres://postgres@localhost/db?host=/tmp/rbk-x&port=5433").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("/tmp/rbk-x", 5433));
        assert!(c.passfile().unwrap().is_none());
    }

    #[test]
    fn passfile_is_private_and_escapes_separators() {
        let c = ConnInfo::parse("postgres://u:a%3Ab%5Cc@h/d").unwrap();
        let pf = c.passfile().unwrap().unwrap();
        let meta = std::fs::metadata(pf.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(pf.path()).unwrap(),
            "*:*:*:*:a\\:b\\\\c\n"
        );
        let dir = pf.path().parent().unwrap().to_owned();
        drop(pf);
        assert!(!dir.exists(), "password file removed on drop");
    }

    #[test]
    fn missing_database_is_an_error() {
        assert!(matches!(
            ConnInfo::parse("postgres://u@h/"),
            Err(ConnInfoError::NoDatabase)
        ));
        assert!(matches!(
            ConnInfo::parse("mysql://u@h/d"),
            Err(ConnInfoError::NotPostgres)
        ));
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
