//! `riveredge-bench`: side-by-side benchmark of riveredge-backup against what RiverEdge runs
//! today (`pg_dump`/`psql`/`pg_restore`, and the official Inngest Python SDK), in one run on the
//! same data. Results and method are written to `docs/benchmarks.md`.
//!
//! Why it is built this way:
//! - Our side is driven through the worker's CLI as a child process (`riveredge-backup backup`
//!   / `restore`), exactly like the baselines, so every operation is measured by the same
//!   `/usr/bin/time` wrapper (wall, user+sys CPU, peak RSS) and nothing depends on internal APIs.
//! - The data set is generated server-side with SQL (`bench/*.sql`): fast, reproducible (fixed
//!   `setseed` per batch, ids derived from batch numbers), RiverEdge-shaped and realistically
//!   compressible (word-list text in Chinese and English, jsonb, numerics, NULLs, skewed tenants).
//! - Operations alternate (baseline, ours, baseline, ...) within each run and every operation
//!   runs `--runs` times; medians are reported, so slow drifts (page cache, autovacuum, other
//!   builds on the machine) hit both sides alike.
//! - An operation that fails (for example a CLI command not implemented yet) is reported as
//!   `unavailable: <stderr>` instead of aborting the whole run.
//!
//! Map: this file holds the command line and the whole run; `target` the database under test,
//! `dataset` the generated data set, `measure` timing and RSS of child processes, `backups` the
//! backup/restore operations, `protocol` the Inngest protocol load test, `report` the markdown.

mod backups;
mod dataset;
mod measure;
mod protocol;
mod report;
mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::backups::BackupBench;
use crate::dataset::{describe_dataset, generate};
use crate::measure::remove_path;
use crate::protocol::protocol_bench;
use crate::report::{machine_description, Report};
use crate::target::Target;

#[derive(Debug, Parser)]
#[command(
    name = "riveredge-bench",
    version,
    about = "Benchmark riveredge-backup against pg_dump/psql/pg_restore and the Inngest Python SDK"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate the RiverEdge-shaped data set (into --database-url, or a local durable cluster
    /// that is kept until Ctrl-C so it can be inspected).
    Generate(GenerateArgs),
    /// Generate, then measure backups, restores and the protocol endpoint; write the report.
    Run(RunArgs),
    /// Only the protocol benchmark (ours vs the Python SDK); prints the table.
    Protocol(ProtocolOnlyArgs),
}

#[derive(Debug, Clone, Args)]
struct DataArgs {
    /// Target database size on disk (heap + indexes), in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mb: u64,
    /// Number of tenants (power-law sizes: the largest holds ~10 %, tenant N/4 ~1 %).
    #[arg(long, default_value_t = 100)]
    tenants: u32,
    /// setseed value in [-1, 1]; the same seed, size and tenant count give the same data set.
    #[arg(long, default_value_t = 0.42, allow_negative_numbers = true)]
    seed: f64,
    /// An existing, empty database to fill (and measure). Default: a private durable cluster.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Directory holding pg_dump, psql, pg_restore, initdb, postgres.
    #[arg(long, env = "PG_BIN_DIR", default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin_dir: PathBuf,
    /// Directory with the harness's SQL, Lua and Python files.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench"))]
    bench_dir: PathBuf,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Debug, Clone, Args)]
struct ProtocolArgs {
    /// Python interpreter with inngest, fastapi and uvicorn (bench/requirements.txt).
    /// Default: /tmp/rbk-bench-venv/bin/python when present, else python3.
    #[arg(long)]
    python: Option<PathBuf>,
    /// wrk connections (same for both servers).
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    wrk_threads: u32,
    /// Measured seconds per wrk run.
    #[arg(long, default_value_t = 15)]
    duration_secs: u64,
    /// Unmeasured warm-up seconds before each measured wrk run.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
}

#[derive(Debug, Args)]
struct ProtocolOnlyArgs {
    #[command(flatten)]
    protocol: ProtocolArgs,
    /// Measured runs per side (alternating); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Directory with the harness's SQL, Lua and Python files.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench"))]
    bench_dir: PathBuf,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    protocol: ProtocolArgs,
    /// Runs per operation (at least 3 for a meaningful median).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Report file (Markdown).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// The worker binary. Default: `riveredge-backup` next to this binary.
    #[arg(long)]
    backup_bin: Option<PathBuf>,
    /// Scratch directory for dumps and our artifacts. Default: a fresh directory under /tmp.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Tenant for the tenant backup/restore. Default: the one whose share of rows is closest to 1/tenants.
    #[arg(long)]
    tenant: Option<i32>,
    /// The database at --database-url already holds the data set: do not generate.
    #[arg(long, requires = "database_url")]
    skip_generate: bool,
    /// Skip the backup/restore measurements.
    #[arg(long)]
    skip_backup: bool,
    /// Skip the protocol measurements.
    #[arg(long)]
    skip_protocol: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("riveredge-bench: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("riveredge-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Generate(args) => {
            let target = Target::open(&args.data).await?;
            let dataset = generate(&target, &args.data).await?;
            println!("{}", dataset.describe());
            if target.cluster.is_some() {
                println!("database: {} (kept until Ctrl-C)", target.url);
                tokio::signal::ctrl_c()
                    .await
                    .context("waiting for Ctrl-C")?;
            }
            Ok(())
        }
        Command::Protocol(args) => {
            let report = protocol_bench(&args.protocol, &args.bench_dir, args.runs).await?;
            println!("{}", report.markdown());
            Ok(())
        }
        Command::Run(args) => run_all(args).await,
    }
}

async fn run_all(args: RunArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let started = Instant::now();
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let work_dir = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => tempfile::Builder::new()
            .prefix("rbk-bench-")
            .tempdir_in("/tmp")
            .context("creating the work directory")?
            .keep(),
    };
    let backup_bin = match &args.backup_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("riveredge-backup"),
    };
    if !Path::new("/usr/bin/time").exists() {
        bail!("/usr/bin/time is missing (apt-get install time)");
    }

    let target = Target::open(&args.data).await?;
    let dataset = if args.skip_generate {
        describe_dataset(&target, args.data.tenants).await?
    } else {
        generate(&target, &args.data).await?
    };
    eprintln!("riveredge-bench: data set: {}", dataset.describe());
    let tenant = args
        .tenant
        .or_else(|| dataset.typical_tenant())
        .context("the data set has no tenant rows")?;

    let mut bench = BackupBench {
        target: &target,
        storage_dir: work_dir.join("storage"),
        work_dir: work_dir.clone(),
        backup_bin,
        pg_bin_dir: args.data.pg_bin_dir.clone(),
        tenant,
        stats: BTreeMap::new(),
    };
    std::fs::create_dir_all(&bench.storage_dir)
        .with_context(|| format!("creating {}", bench.storage_dir.display()))?;
    if !args.skip_backup {
        for run in 1..=args.runs {
            eprintln!("riveredge-bench: backup/restore run {run} of {}", args.runs);
            bench.one_run(run).await;
        }
        bench.incremental(args.runs).await;
    }
    let stats = std::mem::take(&mut bench.stats);
    let storage_dir = bench.storage_dir.clone();

    let protocol = if args.skip_protocol {
        None
    } else {
        Some(protocol_bench(&args.protocol, &args.data.bench_dir, args.runs).await?)
    };

    let machine = machine_description(&target, &args.data.pg_bin_dir).await;
    let report = Report {
        command_line,
        machine,
        dataset,
        tenant,
        runs: args.runs,
        stats,
        protocol,
        size_mb: args.data.size_mb,
        total_secs: started.elapsed().as_secs_f64(),
        skip_backup: args.skip_backup,
    };
    let markdown = report.markdown();
    if let Some(parent) = args.out.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    std::fs::write(&args.out, &markdown)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{markdown}");
    eprintln!("riveredge-bench: report written to {}", args.out.display());
    remove_path(&storage_dir);
    if args.work_dir.is_none() {
        remove_path(&work_dir);
    }
    drop(target);
    Ok(())
}
