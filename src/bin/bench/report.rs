//! Writing the report (`docs/benchmarks.md`): the machine description, the results tables and
//! the formatting helpers for sizes and durations.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::backups::OPS;
use crate::dataset::Dataset;
use crate::measure::OpStats;
use crate::protocol::ProtocolReport;
use crate::target::Target;

pub(crate) async fn machine_description(
    target: &Target,
    pg_bin_dir: &Path,
) -> BTreeMap<&'static str, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "CPU",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_else(|| "unknown".into()),
    );
    m.insert(
        "cores (nproc)",
        std::thread::available_parallelism().map_or("unknown".into(), |n| n.to_string()),
    );
    m.insert(
        "memory",
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            })
            .map_or("unknown".into(), |kib| human_bytes(kib * 1024.0)),
    );
    m.insert("kernel", command_line_output("uname", &["-sr"]).await);
    let data_path = target
        .cluster
        .as_ref()
        .map_or_else(|| "/".to_owned(), |c| c.data_dir().display().to_string());
    let df = command_line_output("df", &["-hT", &data_path]).await;
    m.insert(
        "disk (data directory)",
        df.lines()
            .last()
            .unwrap_or("unknown")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    );
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&target.pool)
        .await
        .unwrap_or_else(|_| "unknown".into());
    m.insert("PostgreSQL server", version);
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, current_setting(name) FROM pg_settings WHERE name IN ('shared_buffers','fsync','synchronous_commit','max_wal_size','maintenance_work_mem','wal_level') ORDER BY 1",
    )
    .fetch_all(&target.pool)
    .await
    .unwrap_or_default();
    m.insert(
        "server settings",
        settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let pg_dump = pg_bin_dir.join("pg_dump").display().to_string();
    m.insert(
        "pg_dump",
        command_line_output(&pg_dump, &["--version"]).await,
    );
    m.insert(
        "wrk",
        command_line_output("wrk", &["-v"])
            .await
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
    );
    m
}

pub(crate) async fn command_line_output(program: &str, args: &[&str]) -> String {
    match tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
    {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text).trim().to_owned()
        }
        Err(e) => format!("unavailable ({e})"),
    }
}

pub(crate) struct Report {
    pub(crate) command_line: String,
    pub(crate) machine: BTreeMap<&'static str, String>,
    pub(crate) dataset: Dataset,
    pub(crate) tenant: i32,
    pub(crate) runs: usize,
    pub(crate) stats: BTreeMap<&'static str, OpStats>,
    pub(crate) protocol: Option<ProtocolReport>,
    pub(crate) size_mb: u64,
    pub(crate) total_secs: f64,
    pub(crate) skip_backup: bool,
}

impl Report {
    pub(crate) fn op(&self, key: &str) -> Option<&OpStats> {
        self.stats.get(key)
    }

    pub(crate) fn wall(&self, key: &str) -> Option<f64> {
        self.op(key).and_then(OpStats::wall)
    }

    pub(crate) fn ratio(&self, ours: &str, base: &str) -> Option<f64> {
        Some(self.wall(ours)? / self.wall(base)?)
    }

    pub(crate) fn size_ratio(&self, ours: &str, base: &str) -> Option<f64> {
        Some(self.op(ours)?.output()? / self.op(base)?.output()?)
    }

    pub(crate) fn row(&self, s: &mut String, key: &str, label: &str, baselines: &[&str]) {
        let Some(op) = self.op(key) else {
            return;
        };
        if let Some(f) = &op.failure {
            let _ = writeln!(
                s,
                "| {label} | unavailable: {} |{}",
                one_line(f),
                " |".repeat(5 + baselines.len())
            );
            return;
        }
        let walls: Vec<String> = op
            .samples
            .iter()
            .map(|x| format!("{:.2}", x.wall_s))
            .collect();
        let _ = write!(
            s,
            "| {label} | {} | {} | {} | {} | {} | {} |",
            op.wall().map_or("–".into(), |w| format!("{w:.2} s")),
            walls.join(" / "),
            op.median(|x| Some(x.cpu_s))
                .map_or("–".into(), |c| format!("{c:.2} s")),
            op.median(|x| x.server_cpu_s)
                .map_or("–".into(), |c| format!("{c:.2} s")),
            op.rss_max()
                .map_or("–".into(), |k| human_bytes(k as f64 * 1024.0)),
            op.output().map_or("–".into(), human_bytes),
        );
        for base in baselines {
            let cell = match (self.ratio(key, base), key == *base) {
                (_, true) => "1x".to_owned(),
                (Some(r), false) => {
                    let size = self
                        .size_ratio(key, base)
                        .filter(|_| op.output().is_some())
                        .map_or(String::new(), |r| format!(" (size {r:.2}x)"));
                    format!("{r:.2}x{size}")
                }
                (None, false) => "–".to_owned(),
            };
            let _ = write!(s, " {cell} |");
        }
        let _ = writeln!(s);
    }

    pub(crate) fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Benchmarks\n");
        let _ = writeln!(
            s,
            "Side-by-side measurement of riveredge-backup against what RiverEdge runs today, in one run on the \
             same data, produced by `riveredge-bench` (`src/bin/bench/`, `bench/`). Regenerate this file with \
             the command below; numbers from another machine are not comparable with these.\n"
        );
        let _ = writeln!(s, "## Command\n\n```sh\n{}\n```\n", self.command_line);
        let _ = writeln!(
            s,
            "Built with `cargo build --release --bin riveredge-bench --bin riveredge-backup`; the protocol peer needs \
             `python3 -m venv /tmp/rbk-bench-venv && /tmp/rbk-bench-venv/bin/pip install -r bench/requirements.txt` \
             and `apt-get install -y time wrk`. Total wall time of this run: {:.1} min.\n",
            self.total_secs / 60.0
        );
        let _ = writeln!(s, "## Machine\n\n| | |\n|---|---|");
        for (k, v) in &self.machine {
            let _ = writeln!(s, "| {k} | {} |", one_line(v));
        }
        let _ = writeln!(
            s,
            "\nPostgreSQL runs on the same machine (a private cluster started by the bench unless `--database-url` \
             is given, durable: fsync and synchronous_commit on). Client tools, the worker, the server, wrk and \
             both protocol servers all share these cores.\n"
        );
        self.dataset_section(&mut s);
        if !self.skip_backup {
            self.backup_sections(&mut s);
        }
        if let Some(p) = &self.protocol {
            let _ = writeln!(
                s,
                "## Protocol endpoint\n\nSigned execution calls (`POST /api/inngest?fnId=bench-echo&stepId=step`, the \
                 JCS-canonical first call of a run, `X-Inngest-Signature` computed just before each wrk run), one \
                 function with one `step.run` returning `{{\"ok\":true,\"n\":1}}`, answered by a 206 with a StepRun \
                 op on both sides (checked before loading, as is the refusal of a forged signature). Load: \
                 `wrk -t{} -c{} -d{}s` after a warm-up, alternating the two servers, {} runs each; medians.\n",
                p.threads,
                p.connections,
                p.duration_secs,
                self.runs
            );
            if !p.versions.is_empty() {
                let _ = writeln!(s, "Python side: {}.\n", p.versions);
            }
            let _ = writeln!(s, "{}", p.markdown());
        }
        self.targets_section(&mut s);
        self.notes_section(&mut s);
        s
    }

    pub(crate) fn dataset_section(&self, s: &mut String) {
        let d = &self.dataset;
        let _ = writeln!(s, "## Data set\n");
        let _ = writeln!(
            s,
            "Requested `--size-mb {}`; generated: {}. RiverEdge-shaped (riveredge.md §3): `tenant_id` int never a \
             foreign key, join tables without `tenant_id` (`core_user_roles`, `core_role_permissions`), two FK \
             cycles, partial unique indexes on `(tenant_id, code)`, jsonb columns, numerics, timestamps with and \
             without time zone, soft-deleted rows, NULLs, and text built from Chinese and English word lists with \
             varied lengths (COPY text compresses about 2.5-3.5x with gzip, not 30x). Tenant sizes follow a power \
             law: the largest tenant holds {:.1} % of the rows with a tenant_id, the smallest {:.2} %.\n",
            self.size_mb,
            d.describe(),
            d.tenant_rows.keys().map(|t| d.tenant_share(*t)).fold(0.0, f64::max) * 100.0,
            d.tenant_rows.keys().map(|t| d.tenant_share(*t)).fold(1.0, f64::min) * 100.0,
        );
        let _ = writeln!(
            s,
            "Tenant used for the tenant backup and restore: **{}**, {} rows with its `tenant_id` = **{:.2} %** of all rows \
             (plus its rows in the join tables, which it reaches through foreign keys).\n",
            self.tenant,
            d.tenant_rows.get(&self.tenant).copied().unwrap_or(0),
            d.tenant_share(self.tenant) * 100.0
        );
        let mut tables: Vec<(&String, &i64)> = d.tables.iter().collect();
        tables.sort_by(|a, b| b.1.cmp(a.1));
        let _ = writeln!(
            s,
            "<details><summary>Rows per table</summary>\n\n| table | rows |\n|---|---:|"
        );
        for (name, rows) in tables {
            let _ = writeln!(s, "| {name} | {rows} |");
        }
        let _ = writeln!(s, "\n</details>\n");
    }

    pub(crate) fn backup_sections(&self, s: &mut String) {
        let header = "| Operation | Wall (median) | Wall per run (s) | Client CPU user+sys | Server CPU | Peak RSS | Output |";
        let _ = writeln!(s, "## Backups\n\nMedians of {} runs; ratios are our median wall time over the baseline's (output size ratio in parentheses).\n", self.runs);
        let _ = writeln!(s, "{header} vs `-Fp` | vs `-Fc` | vs `-Fd -j2 -Z0` | vs our full |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let backup_bases = ["dump_plain", "dump_custom", "dump_dir", "ours_full"];
        for (key, label) in OPS.iter().filter(|(k, _)| {
            k.starts_with("dump") || (k.starts_with("ours") && !k.contains("restore"))
        }) {
            self.row(s, key, label, &backup_bases);
        }
        let _ = writeln!(s, "\n## Restores\n\nWhole-database restores go into a fresh database, dropped afterwards (its row counts are checked against the source first); the tenant restore replaces the tenant's rows in the live database.\n");
        let _ = writeln!(s, "{header} vs `psql -f` | vs `pg_restore` |\n|---|---:|---|---:|---:|---:|---:|---:|---:|");
        let restore_bases = ["restore_psql", "restore_pg_restore"];
        for (key, label) in OPS.iter().filter(|(k, _)| k.contains("restore")) {
            self.row(s, key, label, &restore_bases);
        }
        if let Some(note) = self.op("ours_incremental").and_then(|o| o.note.as_ref()) {
            let _ = writeln!(s, "\nIncremental: {note}.");
        }
        let _ = writeln!(s);
    }

    pub(crate) fn targets_section(&self, s: &mut String) {
        let _ = writeln!(s, "## Targets\n\nRecorded, not asserted in tests.\n\n| Target | Measured | Status |\n|---|---|---|");
        let mut line = |target: &str, measured: Option<String>, met: Option<bool>| {
            let status = match met {
                Some(true) => "**met**",
                Some(false) => "**not met**",
                None => "not measured",
            };
            let _ = writeln!(
                s,
                "| {target} | {} | {status} |",
                measured.unwrap_or_else(|| "–".into())
            );
        };
        let full_vs_fc = self.ratio("ours_full", "dump_custom");
        let size_vs_fc = self.size_ratio("ours_full", "dump_custom");
        line(
            "full backup ≤ 0.5x the wall time of `pg_dump -Fc`, output no larger",
            full_vs_fc
                .zip(size_vs_fc)
                .map(|(t, z)| format!("time {t:.2}x, size {z:.2}x")),
            full_vs_fc
                .zip(size_vs_fc)
                .map(|(t, z)| t <= 0.5 && z <= 1.0),
        );
        let vs_dir = self.ratio("ours_full", "dump_dir");
        line(
            "full backup ≤ 1.2x of `pg_dump -Fd -j2 -Z0`",
            vs_dir.map(|r| format!("{r:.2}x")),
            vs_dir.map(|r| r <= 1.2),
        );
        let restore = self.ratio("ours_restore", "restore_psql");
        line(
            "restore ≤ 0.6x the time of `psql -f` of a plain dump",
            restore.map(|r| format!("{r:.2}x")),
            restore.map(|r| r <= 0.6),
        );
        let tenant = self.ratio("ours_tenant", "ours_full");
        line(
            "tenant backup (1 of 100) ≤ 0.05x of a full backup's time",
            tenant.map(|r| format!("{r:.3}x")),
            tenant.map(|r| r <= 0.05),
        );
        let inc_t = self.ratio("ours_incremental", "ours_full");
        let inc_z = self.size_ratio("ours_incremental", "ours_full");
        line(
            "incremental after 1 % changes: size ≤ 0.05x and time ≤ 0.3x of a full's",
            inc_t
                .zip(inc_z)
                .map(|(t, z)| format!("time {t:.3}x, size {z:.3}x")),
            inc_t.zip(inc_z).map(|(t, z)| t <= 0.3 && z <= 0.05),
        );
        let ours_keys = [
            "ours_full",
            "ours_tenant",
            "ours_incremental",
            "ours_restore",
            "ours_tenant_restore",
        ];
        let rss = ours_keys
            .iter()
            .filter_map(|k| {
                self.op(k)
                    .filter(|o| o.available())
                    .and_then(OpStats::rss_max)
            })
            .max();
        line(
            "our peak RSS ≤ 64 MiB whatever the database size",
            rss.map(|k| {
                format!(
                    "{} (max over our operations)",
                    human_bytes(k as f64 * 1024.0)
                )
            }),
            rss.map(|k| k <= 64 * 1024),
        );
        let proto = self.protocol.as_ref().and_then(|p| {
            let rps = p.ours.median(|r| r.rps)? / p.python.median(|r| r.rps)?;
            let p99 = p.ours.median(|r| r.p99_us)? / p.python.median(|r| r.p99_us)?;
            Some((rps, p99))
        });
        line(
            "protocol: ≥ 10x the Python SDK's calls/s, p99 ≤ 0.1x of its p99",
            proto.map(|(r, p)| format!("{r:.1}x calls/s, p99 {p:.3}x")),
            proto.map(|(r, p)| r >= 10.0 && p <= 0.1),
        );
        let _ = writeln!(s);
    }

    pub(crate) fn notes_section(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "## Method and caveats\n\n\
             - Every operation is a child process run under `/usr/bin/time -f '%e %U %S %M'`: wall time (measured by the \
               bench around the child), user+sys CPU of the client process tree, and peak RSS (the largest single process \
               of the tree, so for ours it includes the `pg_dump --schema-only` child). Output size is the bytes of the \
               dump file/directory, or of our artifact directory `<storage>/<uuid>/`.\n\
             - Server CPU is the CPU of the PostgreSQL backends that served the operation (the postmaster's reaped \
               children's time, so it also catches an autovacuum worker that finished meanwhile); only when the bench \
               owns the cluster.\n\
             - Order within a run: `pg_dump -Fp`, our full backup, `pg_dump -Fc`, our tenant backup, `pg_dump -Fd -j2 -Z0`, \
               `psql -f`, our restore, `pg_restore`, our tenant restore; then the incremental series (a parent full \
               backup, then per run: 1 % of rows changed, incremental backup). Medians over runs.\n\
             - Ours is the `riveredge-backup` CLI (`backup --scope all|tenant`, `restore <uuid> --target-database <db>`, \
               `restore <tenant uuid>`) with `BACKUP_JOBS=2`, storage on the local disk. The baseline restores get an \
               empty database created beforehand (not timed); our restore creates its target database itself (timed).\n\
             - `pg_restore` runs single-job without `--jobs` (what a straightforward implementation of the current \
               RiverEdge code does); `psql -f` with `ON_ERROR_STOP`.\n\
             - The tenant restore replaces the tenant's rows in the live database (and takes the safety backup the \
               design requires), so each run rewrites ~1 % of the rows; that bloat is small next to the 1 % the \
               incremental series changes.\n\
             - The database (about {}) fits in the page cache of this machine; the numbers are CPU- and fsync-bound, not \
               read-bound. On 2 cores, `-j2` style parallelism competes with the server's own backends.\n\
             - Protocol: both servers, wrk and its 2 threads share the 2 cores, so absolute calls/s understate what \
               either server does on dedicated cores; the ratio is what matters. Our server runs inside the bench \
               process (tokio multi-thread runtime), the Python one as a separate uvicorn process with one worker \
               and no access log.\n\
             - Operations reported as `unavailable: …` failed or are not implemented in the worker build that was \
               measured; re-run the command once they exist.",
            human_bytes(self.dataset.size_bytes as f64)
        );
    }
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

pub(crate) fn human_bytes(bytes: f64) -> String {
    pub(crate) const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub(crate) fn human_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}
