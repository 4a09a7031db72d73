//! The database under test: the caller's (`--database-url`) or a private durable cluster, with
//! the helpers every operation needs (URLs per database, child environment, server CPU).

use std::path::Path;

use anyhow::{bail, Context};
use riveredge_backup::local_cluster::{ClusterOptions, LocalCluster};
use riveredge_backup::pg::{quote_ident, PgBinaries};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::DataArgs;

/// The database under test: either the caller's (`--database-url`) or a private durable cluster.
pub(crate) struct Target {
    /// Keeps the private cluster alive for as long as the target lives.
    pub(crate) cluster: Option<LocalCluster>,
    /// URL of the benchmark database, without password (it goes to `PGPASSWORD` for children).
    pub(crate) url: url::Url,
    pub(crate) password: Option<String>,
    pub(crate) pool: PgPool,
    /// The postmaster's pid when we own the cluster: its children's CPU is the server's share.
    pub(crate) postmaster_pid: Option<u32>,
}

impl Target {
    pub(crate) async fn open(args: &DataArgs) -> anyhow::Result<Self> {
        let (cluster, raw_url) = match &args.database_url {
            Some(url) => (None, url.clone()),
            None => {
                let bins = PgBinaries::locate(Some(&args.pg_bin_dir), None)
                    .context("locating the PostgreSQL binaries (--pg-bin-dir)")?;
                // Durable: fsync and synchronous commit on, as in production; a benchmark on a
                // non-durable cluster would flatter every restore.
                let options = ClusterOptions {
                    durable: true,
                    settings: Vec::new(),
                };
                let cluster =
                    tokio::task::spawn_blocking(move || LocalCluster::start(&bins, &options))
                        .await
                        .context("starting the local cluster")??;
                let admin_url = cluster.url("postgres");
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .context("connecting to the local cluster")?;
                sqlx::raw_sql("CREATE DATABASE riveredge_bench")
                    .execute(&mut admin)
                    .await
                    .context("creating the benchmark database")?;
                admin.close().await.ok();
                let url = cluster.url("riveredge_bench");
                (Some(cluster), url)
            }
        };
        let mut url = url::Url::parse(&raw_url).context("--database-url is not a URL")?;
        let password = url.password().map(str::to_owned);
        url.set_password(None)
            .map_err(|()| anyhow::anyhow!("--database-url cannot carry a password"))?;
        if url.path().trim_start_matches('/').is_empty() {
            bail!("--database-url names no database");
        }
        let options: PgConnectOptions = raw_url.parse().context("parsing the database URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options.disable_statement_logging())
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let postmaster_pid = match &cluster {
            Some(c) => read_postmaster_pid(c.data_dir()),
            None => None,
        };
        Ok(Self {
            cluster,
            url,
            password,
            pool,
            postmaster_pid,
        })
    }

    /// URL of another database on the same server.
    pub(crate) fn url_for(&self, database: &str) -> url::Url {
        let mut url = self.url.clone();
        url.set_path(&format!("/{database}"));
        url
    }

    pub(crate) async fn connect_to(&self, database: &str) -> anyhow::Result<PgConnection> {
        let mut url = self.url_for(database);
        if let Some(p) = &self.password {
            url.set_password(Some(p))
                .map_err(|()| anyhow::anyhow!("cannot set the password on the URL"))?;
        }
        let options: PgConnectOptions = url.as_str().parse().context("parsing the database URL")?;
        options
            .disable_statement_logging()
            .connect()
            .await
            .with_context(|| format!("connecting to database {database}"))
    }

    /// libpq environment for child processes: the password never goes on a command line.
    pub(crate) fn child_env(&self) -> Vec<(String, String)> {
        self.password
            .iter()
            .map(|p| ("PGPASSWORD".to_owned(), p.clone()))
            .collect()
    }

    pub(crate) async fn create_database(&self, name: &str) -> anyhow::Result<()> {
        self.drop_database(name).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {}", quote_ident(name)))
            .execute(&self.pool)
            .await
            .with_context(|| format!("creating database {name}"))?;
        Ok(())
    }

    pub(crate) async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .execute(&self.pool)
        .await
        .with_context(|| format!("dropping database {name}"))?;
        Ok(())
    }

    /// CPU seconds of the server's exited processes (backends are reaped by the postmaster, so
    /// they land in its `cutime`/`cstime`). Linux reports them in USER_HZ, which is 100.
    pub(crate) fn server_cpu(&self) -> Option<f64> {
        let pid = self.postmaster_pid?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name; utime is field 14 (index 11 here).
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields
            .get(11..15)?
            .iter()
            .filter_map(|f| f.parse::<u64>().ok())
            .sum();
        Some(ticks as f64 / 100.0)
    }
}

pub(crate) fn read_postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}
