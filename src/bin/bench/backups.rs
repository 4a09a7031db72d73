//! The backup and restore benchmark: whole-database, table and tenant backups and restores,
//! ours against `pg_dump`/`pg_restore`/`psql`, plus the incremental run over a 1 % change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use riveredge_backup::pg::quote_ident;
use sqlx::Connection;

use crate::measure::{disk_size, find_uuid, measure, os_args, remove_path, OpStats, Sample};
use crate::report::human_bytes;
use crate::target::Target;

/// Tables the 1 % change of the incremental benchmark touches (all have `updated_at`).
pub(crate) const CHANGED_TABLES: &[(&str, &str)] = &[
    ("apps_kuaizhizao_sales_orders", "status = '已完成'"),
    (
        "apps_kuaizhizao_sales_order_items",
        "remark = coalesce(remark, '') || ' 改'",
    ),
    ("apps_kuaizhizao_work_orders", "status = 'completed'"),
    ("apps_master_data_materials", "is_active = NOT is_active"),
    ("apps_master_data_customers", "category = 'VIP'"),
    ("core_users", "last_login = now()"),
];
/// Tables whose row counts are compared after every whole-database restore (cheap sanity check
/// that the restore really restored something).
pub(crate) const CHECKED_TABLES: &[&str] = &[
    "core_operation_logs",
    "apps_kuaizhizao_sales_orders",
    "apps_kuaizhizao_sales_order_items",
    "core_user_roles",
];

/// Operation keys, in report order.
pub(crate) const OPS: &[(&str, &str)] = &[
    ("dump_plain", "`pg_dump -Fp` (original design)"),
    ("dump_custom", "`pg_dump -Fc` (current RiverEdge)"),
    ("dump_dir", "`pg_dump -Fd -j2 -Z0` (practical limit)"),
    ("ours_full", "**ours: full backup** (`--scope all`)"),
    ("ours_tenant", "**ours: tenant backup** (1 tenant)"),
    (
        "ours_incremental",
        "**ours: incremental** (after 1 % changed)",
    ),
    ("restore_psql", "`psql -f` of the plain dump"),
    ("restore_pg_restore", "`pg_restore` of the -Fc dump"),
    ("ours_restore", "**ours: restore full** (new database)"),
    (
        "ours_tenant_restore",
        "**ours: tenant restore** (live database)",
    ),
];

pub(crate) struct BackupBench<'a> {
    pub(crate) target: &'a Target,
    pub(crate) work_dir: PathBuf,
    pub(crate) storage_dir: PathBuf,
    pub(crate) backup_bin: PathBuf,
    pub(crate) pg_bin_dir: PathBuf,
    pub(crate) tenant: i32,
    pub(crate) stats: BTreeMap<&'static str, OpStats>,
}

impl BackupBench<'_> {
    pub(crate) fn pg(&self, program: &str) -> PathBuf {
        self.pg_bin_dir.join(program)
    }

    pub(crate) fn worker_env(&self) -> Vec<(String, String)> {
        let mut url = self.target.url.clone();
        if let Some(p) = &self.target.password {
            let _ = url.set_password(Some(p));
        }
        vec![
            ("DATABASE_URL".to_owned(), url.to_string()),
            (
                "BACKUP_STORAGE_DIR".to_owned(),
                self.storage_dir.display().to_string(),
            ),
            ("INNGEST_DEV".to_owned(), "1".to_owned()),
            ("INNGEST_SYNC_ON_STARTUP".to_owned(), "false".to_owned()),
            ("BACKUP_JOBS".to_owned(), "2".to_owned()),
            (
                "PG_BIN_DIR".to_owned(),
                self.pg_bin_dir.display().to_string(),
            ),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ]
    }

    pub(crate) fn stats(&mut self, key: &'static str) -> &mut OpStats {
        self.stats.entry(key).or_default()
    }

    /// Skip operations that already failed: a missing CLI command fails the same way each run.
    pub(crate) fn failed(&self, key: &str) -> bool {
        self.stats.get(key).is_some_and(|s| !s.available())
    }

    pub(crate) fn note_unavailable(&mut self, key: &'static str, why: &str) {
        let stats = self.stats(key);
        if stats.failure.is_none() {
            stats.failure = Some(why.to_owned());
        }
    }

    pub(crate) async fn pg_dump(
        &mut self,
        key: &'static str,
        format_args: &[&str],
        out: &Path,
    ) -> Option<Sample> {
        if self.failed(key) {
            return None;
        }
        remove_path(out);
        let mut args = os_args(format_args);
        args.push("-f".into());
        args.push(out.into());
        args.push("-d".into());
        args.push(self.target.url.as_str().into());
        let result = measure(self.target, &self.work_dir, &self.pg("pg_dump"), &args, &[])
            .await
            .and_then(|o| {
                let size = disk_size(out).with_context(|| format!("sizing {}", out.display()))?;
                Ok(Sample {
                    output_bytes: Some(size),
                    ..o.sample
                })
            });
        eprintln!("riveredge-bench: {key}: {}", brief(&result));
        self.stats(key).record(result)
    }

    pub(crate) async fn restore_baseline(
        &mut self,
        key: &'static str,
        program: &str,
        pre_args: &[&str],
        input: &Path,
        run: usize,
    ) {
        if self.failed(key) {
            return;
        }
        let db = format!("rbk_bench_{key}_{run}");
        let result = async {
            self.target.create_database(&db).await?;
            let mut args = os_args(pre_args);
            args.push("-d".into());
            args.push(self.target.url_for(&db).as_str().into());
            if program == "psql" {
                args.push("-f".into());
            }
            args.push(input.into());
            let out = measure(self.target, &self.work_dir, &self.pg(program), &args, &[]).await?;
            self.check_restored(&db).await?;
            anyhow::Ok(out.sample)
        }
        .await;
        if let Err(e) = self.target.drop_database(&db).await {
            eprintln!("riveredge-bench: {e:#}");
        }
        eprintln!("riveredge-bench: {key}: {}", brief(&result));
        self.stats(key).record(result);
    }

    /// Runs our CLI; returns the uuid it printed and the measured sample.
    pub(crate) async fn ours(
        &mut self,
        key: &'static str,
        args: &[&str],
    ) -> Option<(String, Sample)> {
        if self.failed(key) {
            return None;
        }
        let before = disk_size(&self.storage_dir).unwrap_or(0);
        let env = self.worker_env();
        let result = measure(
            self.target,
            &self.work_dir,
            &self.backup_bin,
            &os_args(args),
            &env,
        )
        .await
        .and_then(|o| {
            let uuid = find_uuid(&o.stdout)
                .with_context(|| format!("no backup uuid in the output: {:?}", o.stdout.trim()))?;
            // The artifact lives under <storage>/<uuid>/; otherwise count what the run added.
            let dir = self.storage_dir.join(&uuid);
            let size = if dir.is_dir() {
                disk_size(&dir)?
            } else {
                disk_size(&self.storage_dir)
                    .unwrap_or(0)
                    .saturating_sub(before)
            };
            Ok((
                uuid,
                Sample {
                    output_bytes: Some(size),
                    ..o.sample
                },
            ))
        });
        eprintln!(
            "riveredge-bench: {key}: {}",
            brief(
                &result
                    .as_ref()
                    .map(|(_, s)| *s)
                    .map_err(|e| anyhow::anyhow!("{e:#}"))
            )
        );
        match result {
            Ok((uuid, sample)) => {
                self.stats(key).samples.push(sample);
                Some((uuid, sample))
            }
            Err(e) => {
                self.stats(key).record(Err(e));
                None
            }
        }
    }

    pub(crate) async fn ours_restore(&mut self, uuid: &str, run: usize) {
        let key = "ours_restore";
        if self.failed(key) {
            return;
        }
        let db = format!("rbk_bench_ours_restore_{run}");
        let result = async {
            self.target.drop_database(&db).await?;
            let env = self.worker_env();
            let out = measure(
                self.target,
                &self.work_dir,
                &self.backup_bin,
                &os_args(&["restore", uuid, "--target-database", &db]),
                &env,
            )
            .await?;
            self.check_restored(&db).await?;
            anyhow::Ok(out.sample)
        }
        .await;
        if let Err(e) = self.target.drop_database(&db).await {
            eprintln!("riveredge-bench: {e:#}");
        }
        eprintln!("riveredge-bench: {key}: {}", brief(&result));
        self.stats(key).record(result);
    }

    pub(crate) async fn ours_tenant_restore(&mut self, uuid: &str) {
        let key = "ours_tenant_restore";
        if self.failed(key) {
            return;
        }
        let env = self.worker_env();
        let result = measure(
            self.target,
            &self.work_dir,
            &self.backup_bin,
            &os_args(&["restore", uuid]),
            &env,
        )
        .await
        .map(|o| o.sample);
        eprintln!("riveredge-bench: {key}: {}", brief(&result));
        self.stats(key).record(result);
    }

    /// Row counts of a few big tables must match the source after a whole-database restore.
    pub(crate) async fn check_restored(&self, db: &str) -> anyhow::Result<()> {
        let mut conn = self.target.connect_to(db).await?;
        for table in CHECKED_TABLES {
            let sql = format!("SELECT count(*) FROM {}", quote_ident(table));
            let restored: i64 = sqlx::query_scalar(&sql)
                .fetch_one(&mut conn)
                .await
                .with_context(|| format!("counting {table} in the restored database"))?;
            let source: i64 = sqlx::query_scalar(&sql)
                .fetch_one(&self.target.pool)
                .await
                .with_context(|| format!("counting {table}"))?;
            if restored != source {
                bail!("restored {table} has {restored} rows, the source {source}");
            }
        }
        conn.close().await.ok();
        Ok(())
    }

    pub(crate) async fn one_run(&mut self, run: usize) {
        let plain = self.work_dir.join("plain.sql");
        let custom = self.work_dir.join("custom.dump");
        let dir = self.work_dir.join("dir.dump");
        let tenant = self.tenant.to_string();
        // Backups, alternating baseline and ours.
        let plain_ok = self.pg_dump("dump_plain", &["-Fp"], &plain).await.is_some();
        let full = self.ours("ours_full", &["backup", "--scope", "all"]).await;
        let custom_ok = self
            .pg_dump("dump_custom", &["-Fc"], &custom)
            .await
            .is_some();
        let tenant_backup = self
            .ours(
                "ours_tenant",
                &["backup", "--scope", "tenant", "--tenant", &tenant],
            )
            .await;
        self.pg_dump("dump_dir", &["-Fd", "-j2", "-Z0"], &dir).await;
        remove_path(&dir);
        // Restores, alternating likewise.
        if plain_ok {
            self.restore_baseline(
                "restore_psql",
                "psql",
                &["-X", "-q", "-v", "ON_ERROR_STOP=1"],
                &plain,
                run,
            )
            .await;
        } else {
            self.note_unavailable("restore_psql", "no plain dump");
        }
        remove_path(&plain);
        match &full {
            Some((uuid, _)) => self.ours_restore(uuid, run).await,
            None => self.note_unavailable("ours_restore", "no full backup to restore"),
        }
        if custom_ok {
            self.restore_baseline(
                "restore_pg_restore",
                "pg_restore",
                &["--no-owner"],
                &custom,
                run,
            )
            .await;
        } else {
            self.note_unavailable("restore_pg_restore", "no custom dump");
        }
        remove_path(&custom);
        match &tenant_backup {
            Some((uuid, _)) => self.ours_tenant_restore(uuid).await,
            None => self.note_unavailable("ours_tenant_restore", "no tenant backup to restore"),
        }
    }

    /// Incremental backups, each after a fresh 1 % of rows changed. A full backup first, so the
    /// chain starts from data that no tenant restore rewrote in between.
    pub(crate) async fn incremental(&mut self, runs: usize) {
        if self.failed("ours_full") {
            self.note_unavailable("ours_incremental", "no full backup");
            return;
        }
        let env = self.worker_env();
        if let Err(e) = measure(
            self.target,
            &self.work_dir,
            &self.backup_bin,
            &os_args(&["backup", "--scope", "all"]),
            &env,
        )
        .await
        {
            self.note_unavailable(
                "ours_incremental",
                &format!("parent full backup failed: {e:#}"),
            );
            return;
        }
        let mut changed_total = 0;
        for run in 0..runs {
            match change_one_percent(self.target, run).await {
                Ok(n) => changed_total += n,
                Err(e) => {
                    self.note_unavailable(
                        "ours_incremental",
                        &format!("changing 1 % of rows: {e:#}"),
                    );
                    return;
                }
            }
            if self
                .ours(
                    "ours_incremental",
                    &["backup", "--scope", "all", "--type", "incremental"],
                )
                .await
                .is_none()
            {
                break;
            }
        }
        let per_run = changed_total / runs.max(1) as u64;
        self.stats("ours_incremental").note = Some(format!(
            "{per_run} rows changed or added before each incremental"
        ));
    }
}

/// Updates 1 % of the rows of the busy tables (a different slice each run) and appends 1 % new
/// operation-log rows. Returns how many rows were touched.
pub(crate) async fn change_one_percent(target: &Target, run: usize) -> anyhow::Result<u64> {
    let slice = (run * 37 + 11) % 100;
    let mut touched = 0;
    for (table, set) in CHANGED_TABLES {
        let sql = format!(
            "UPDATE {} SET {set}, updated_at = now() WHERE id % 100 = {slice}",
            quote_ident(table)
        );
        touched += sqlx::query(&sql)
            .execute(&target.pool)
            .await
            .with_context(|| format!("updating {table}"))?
            .rows_affected();
    }
    let sql = format!(
        "INSERT INTO core_operation_logs (uuid, tenant_id, user_id, operation_type, operation_module, operation_content, ip_address, request_method, request_path)
         SELECT md5(random()::text)::uuid::text, tenant_id, user_id, 'update', operation_module, operation_content, ip_address, 'PUT', request_path
         FROM core_operation_logs WHERE id % 100 = {slice}"
    );
    touched += sqlx::query(&sql)
        .execute(&target.pool)
        .await
        .context("appending operation logs")?
        .rows_affected();
    Ok(touched)
}

pub(crate) fn brief<T: std::borrow::Borrow<Sample>>(result: &anyhow::Result<T>) -> String {
    match result {
        Ok(s) => {
            let s = s.borrow();
            format!(
                "{:.2} s wall, {:.2} s CPU, {} RSS{}",
                s.wall_s,
                s.cpu_s,
                human_bytes(s.rss_kib as f64 * 1024.0),
                s.output_bytes
                    .map(|b| format!(", {}", human_bytes(b as f64)))
                    .unwrap_or_default()
            )
        }
        Err(e) => format!("unavailable: {e:#}"),
    }
}
