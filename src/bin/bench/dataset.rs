//! The generated RiverEdge-shaped data set: server-side SQL generation from `bench/*.sql` in
//! seeded batches, and exact row counts per table and tenant for the report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use riveredge_backup::pg::quote_ident;
use sqlx::Row;

use crate::report::human_bytes;
use crate::target::Target;

use crate::DataArgs;

/// What was generated, for the report.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dataset {
    pub(crate) size_bytes: i64,
    pub(crate) tables: BTreeMap<String, i64>,
    pub(crate) total_rows: i64,
    pub(crate) tenants: u32,
    /// Rows with a `tenant_id`, per tenant.
    pub(crate) tenant_rows: BTreeMap<i32, i64>,
    pub(crate) generate_secs: Option<f64>,
    pub(crate) batches: u64,
}

impl Dataset {
    pub(crate) fn tenant_share(&self, tenant: i32) -> f64 {
        let rows = self.tenant_rows.get(&tenant).copied().unwrap_or(0);
        rows as f64 / self.total_rows.max(1) as f64
    }

    /// The tenant whose share of all rows is closest to 1/tenants ("one of 100").
    pub(crate) fn typical_tenant(&self) -> Option<i32> {
        let ideal = 1.0 / f64::from(self.tenants.max(1));
        self.tenant_rows.keys().copied().min_by(|a, b| {
            let da = (self.tenant_share(*a) - ideal).abs();
            let db = (self.tenant_share(*b) - ideal).abs();
            da.total_cmp(&db)
        })
    }

    pub(crate) fn describe(&self) -> String {
        let mut s = format!(
            "{} on disk, {} rows in {} tables, {} tenants",
            human_bytes(self.size_bytes as f64),
            self.total_rows,
            self.tables.len(),
            self.tenants
        );
        if let Some(secs) = self.generate_secs {
            let _ = write!(s, ", generated in {secs:.0} s ({} batches)", self.batches);
        }
        s
    }
}

pub(crate) fn sql_file(bench_dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = bench_dir.join(name);
    std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (--bench-dir)", path.display()))
}

/// The setseed value of batch `b`: spreads batches over [-1, 1] by the golden ratio, so no two
/// batches share a random stream.
pub(crate) fn batch_seed(seed: f64, batch: u64) -> f64 {
    ((seed + 1.0) / 2.0 + batch as f64 * 0.618_033_988_749_895).fract() * 2.0 - 1.0
}

pub(crate) async fn generate(target: &Target, args: &DataArgs) -> anyhow::Result<Dataset> {
    if !(-1.0..=1.0).contains(&args.seed) {
        bail!("--seed must be within [-1, 1] (PostgreSQL setseed)");
    }
    if args.tenants == 0 || args.size_mb < 20 {
        bail!("--tenants must be at least 1 and --size-mb at least 20");
    }
    let started = Instant::now();
    let existing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'infra_tenants'",
    )
    .fetch_one(&target.pool)
    .await
    .context("checking the target database")?;
    if existing > 0 {
        bail!("the target database already has RiverEdge tables: use an empty database, or run with --skip-generate");
    }
    let schema = sql_file(&args.bench_dir, "schema.sql")?;
    sqlx::raw_sql(&schema)
        .execute(&target.pool)
        .await
        .context("creating the schema (bench/schema.sql)")?;
    let setup = sql_file(&args.bench_dir, "generate_setup.sql")?
        .replace("{{TENANTS}}", &args.tenants.to_string())
        .replace("{{SIZE_MB}}", &args.size_mb.to_string())
        .replace("{{SEED}}", &format!("{:.6}", args.seed));
    // One connection: the setup creates a temporary table that later statements read.
    let mut conn = target
        .pool
        .acquire()
        .await
        .context("acquiring a connection")?;
    sqlx::raw_sql(&setup)
        .execute(&mut *conn)
        .await
        .context("generating master data (bench/generate_setup.sql)")?;
    drop(conn);
    eprintln!(
        "riveredge-bench: master data done in {:.1} s; loading batches",
        started.elapsed().as_secs_f64()
    );

    let batch_sql = sql_file(&args.bench_dir, "generate_batch.sql")?;
    let target_bytes =
        i64::try_from(args.size_mb * 1024 * 1024).context("--size-mb is too large")?;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    // Two loaders: one per core; a third would only contend.
    for _ in 0..2 {
        let pool = target.pool.clone();
        let next = Arc::clone(&next);
        let done = Arc::clone(&done);
        let batch_sql = batch_sql.clone();
        let tenants = args.tenants;
        let seed = args.seed;
        workers.push(tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let batch = next.fetch_add(1, Ordering::SeqCst);
                let sql = batch_sql
                    .replace("{{BATCH}}", &batch.to_string())
                    .replace("{{TENANTS}}", &tenants.to_string())
                    .replace("{{SEED}}", &format!("{:.9}", batch_seed(seed, batch)));
                sqlx::raw_sql(&sql)
                    .execute(&pool)
                    .await
                    .with_context(|| format!("loading batch {batch} (bench/generate_batch.sql)"))?;
                let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                    .fetch_one(&pool)
                    .await
                    .context("measuring the database size")?;
                if size >= target_bytes {
                    done.store(true, Ordering::SeqCst);
                }
                if batch % 10 == 9 {
                    eprintln!(
                        "riveredge-bench: batch {batch}: {} of {}",
                        human_bytes(size as f64),
                        human_bytes(target_bytes as f64)
                    );
                }
            }
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        worker.await.context("a loader task panicked")??;
    }
    let batches = next.load(Ordering::SeqCst);
    let constraints = sql_file(&args.bench_dir, "constraints.sql")?;
    sqlx::raw_sql(&constraints)
        .execute(&target.pool)
        .await
        .context("adding foreign keys (bench/constraints.sql)")?;
    // Vacuumed and checkpointed like a settled production database: the first measured dump
    // must not pay for hint bits and dirty buffers the load left behind.
    sqlx::raw_sql("VACUUM (ANALYZE)")
        .execute(&target.pool)
        .await
        .context("VACUUM ANALYZE")?;
    sqlx::raw_sql("CHECKPOINT")
        .execute(&target.pool)
        .await
        .context("CHECKPOINT")?;
    let mut dataset = describe_dataset(target, args.tenants).await?;
    dataset.generate_secs = Some(started.elapsed().as_secs_f64());
    dataset.batches = batches;
    Ok(dataset)
}

/// Exact row counts per table and per tenant.
pub(crate) async fn describe_dataset(target: &Target, tenants: u32) -> anyhow::Result<Dataset> {
    let size_bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&target.pool)
        .await
        .context("measuring the database size")?;
    let rows = sqlx::query(
        "SELECT c.relname::text AS name,
                EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS has_tenant
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname NOT LIKE 'root\\_%' AND c.relname NOT LIKE '\\_sqlx%'
         ORDER BY 1",
    )
    .fetch_all(&target.pool)
    .await
    .context("listing tables")?;
    let mut dataset = Dataset {
        size_bytes,
        tenants,
        ..Dataset::default()
    };
    for row in rows {
        let name: String = row.try_get("name")?;
        let has_tenant: bool = row.try_get("has_tenant")?;
        let count: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {}", quote_ident(&name)))
                .fetch_one(&target.pool)
                .await
                .with_context(|| format!("counting {name}"))?;
        if has_tenant {
            let per_tenant = sqlx::query(&format!(
                "SELECT tenant_id, count(*) AS n FROM {} WHERE tenant_id IS NOT NULL GROUP BY 1",
                quote_ident(&name)
            ))
            .fetch_all(&target.pool)
            .await
            .with_context(|| format!("counting {name} per tenant"))?;
            for r in per_tenant {
                let t: i32 = r.try_get("tenant_id")?;
                let n: i64 = r.try_get("n")?;
                *dataset.tenant_rows.entry(t).or_insert(0) += n;
            }
        }
        dataset.total_rows += count;
        dataset.tables.insert(name, count);
    }
    Ok(dataset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_stay_in_range() {
        let seeds: Vec<f64> = (0..1000).map(|b| batch_seed(0.42, b)).collect();
        assert!(seeds.iter().all(|s| (-1.0..=1.0).contains(s)));
    }
}
