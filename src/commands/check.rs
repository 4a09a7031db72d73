//! `check`: is this setup able to back up and restore? Like `pgbackrest check`, it tries each
//! part for real and changes nothing but a probe file it deletes again.

use std::time::Duration;

use serde_json::{json, Value};

use super::{context, Failure, Outcome, Output};
use crate::catalog::Catalog;
use crate::pg::PgBinaries;
use crate::settings::Settings;
use crate::storage::ObjectKey;

/// One line of the report.
struct Item {
    name: &'static str,
    ok: bool,
    detail: String,
}

pub async fn check(settings: Settings, out: Output) -> Outcome {
    let conn = context::configured_database(&settings, "check")?;
    let mut items = Vec::new();
    let mut server_major = None;
    let mut pool = None;
    match context::probe(&conn).await {
        Err(f) => items.push(fail("database", f.message().to_owned())),
        Ok(()) => match crate::db::connect(&conn, 2).await {
            Err(e) => items.push(fail("database", super::one_line(&e))),
            Ok(p) => {
                let version: Result<(String, String), _> = sqlx::query_as(
                    "SELECT current_setting('server_version'), current_setting('server_version_num')",
                )
                .fetch_one(&p)
                .await;
                match version {
                    Ok((text, num)) => {
                        server_major = num.parse::<u32>().ok().map(|n| n / 10000);
                        items.push(ok(
                            "database",
                            format!("{} reachable, PostgreSQL {text}", conn.display_url()),
                        ));
                    }
                    Err(e) => items.push(fail("database", super::one_line(&e))),
                }
                pool = Some(p);
            }
        },
    }
    items.push(pg_dump(&settings, server_major));
    items.push(storage(&settings).await);
    items.push(tenants_table(&settings, pool.as_ref()).await);
    if let Some(item) = inngest(&settings).await {
        items.push(item);
    }
    if let Some(p) = pool {
        p.close().await;
    }
    for i in &items {
        out.line(format!(
            "{:<4} {:<14} {}",
            if i.ok { "ok" } else { "FAIL" },
            i.name,
            i.detail
        ));
    }
    let failed: Vec<&Item> = items.iter().filter(|i| !i.ok).collect();
    let report: Vec<Value> = items
        .iter()
        .map(|i| json!({ "check": i.name, "ok": i.ok, "detail": i.detail }))
        .collect();
    if failed.is_empty() {
        Ok(json!({ "ok": true, "checks": report }))
    } else {
        let names: Vec<&str> = failed.iter().map(|i| i.name).collect();
        let failure = Failure::Failed(format!("check failed: {}", names.join(", ")));
        Err(Failure::Detailed(
            Box::new(failure),
            json!({ "checks": report }),
        ))
    }
}

fn ok(name: &'static str, detail: String) -> Item {
    Item {
        name,
        ok: true,
        detail,
    }
}

fn fail(name: &'static str, detail: String) -> Item {
    Item {
        name,
        ok: false,
        detail,
    }
}

/// pg_dump must exist and be at least the server's major version (an older one refuses to
/// dump); a newer one works, but says so, since its archives need an equally new pg_restore.
fn pg_dump(settings: &Settings, server: Option<u32>) -> Item {
    match PgBinaries::locate(settings.backup.pg_bin_dir.as_deref(), server) {
        Err(e) => fail("pg_dump", e.to_string()),
        Ok(bins) => {
            let program = bins.program("pg_dump").display().to_string();
            let found = bins.major;
            match server {
                Some(s) if found == s => ok("pg_dump", format!("{program} version {found} matches the server")),
                Some(s) => ok(
                    "pg_dump",
                    format!("{program} version {found}, newer than the server ({s}): dumps work; install postgresql-client-{s} for an exact match"),
                ),
                None => ok("pg_dump", format!("{program} version {found} (server version unknown)")),
            }
        }
    }
}

/// Writes (write-once, like a manifest), reads back and deletes a probe object through the same
/// storage code as backups.
async fn storage(settings: &Settings) -> Item {
    let place = crate::storage::describe(settings);
    let probe: &[u8] = b"riveredge-backup check\n";
    let keys = crate::storage::keys(settings);
    let readable = keys
        .as_ref()
        .map_or(true, |k| k.as_ref().is_none_or(|k| k.can_read()));
    let result = async {
        let storage = crate::storage::open(settings)?;
        let prefix = ObjectKey::parse(&format!("check-{}", uuid::Uuid::new_v4()))
            .map_err(std::io::Error::other)?;
        let key = prefix.join("probe").map_err(std::io::Error::other)?;
        let mut object = storage.create_new(&key).await?;
        tokio::io::AsyncWriteExt::write_all(&mut object, probe).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut object).await?;
        object.commit().await?;
        let mut back = probe.to_vec();
        let read = async {
            if readable {
                back.clear();
                tokio::io::AsyncReadExt::read_to_end(&mut storage.open(&key).await?, &mut back)
                    .await?;
            }
            Ok::<(), std::io::Error>(())
        }
        .await;
        storage.delete_prefix(&prefix).await?;
        read?;
        if back != probe {
            return Err(std::io::Error::other(
                "the probe read back differs from what was written",
            ));
        }
        Ok(())
    }
    .await;
    let encryption = match keys {
        Ok(None) => String::new(),
        Ok(Some(k)) if k.can_read() => format!(
            "; encryption: probe encrypted to {} and decrypted with the identities",
            k.key_id
        ),
        Ok(Some(k)) => format!(
            "; encryption: write-only, new backups go to {}; without an identity this worker cannot read them (verify, restore, drill need BACKUP_ENCRYPTION_IDENTITY_FILE)",
            k.key_id
        ),
        Err(_) => String::new(),
    };
    match result {
        Ok(()) => ok(
            "storage",
            format!(
                "{place} reachable and writable (probe written, read back and deleted){encryption}"
            ),
        ),
        Err(e) => fail(
            "storage",
            format!(
                "{place}: {}; {}",
                super::one_line(&e),
                if settings.s3.is_some() {
                    "check BACKUP_S3_* settings, the credentials and the bucket's permissions"
                } else {
                    "set BACKUP_STORAGE_DIR to a writable directory"
                }
            ),
        ),
    }
}

async fn tenants_table(settings: &Settings, pool: Option<&sqlx::PgPool>) -> Item {
    let Some(name) = settings.backup.tenants_table.as_deref() else {
        return ok(
            "tenants table",
            "not checked: TENANTS_TABLE=none, tenant ids are not validated".to_owned(),
        );
    };
    let Some(pool) = pool else {
        return fail("tenants table", "the database is not reachable".to_owned());
    };
    match Catalog::load(pool).await {
        Err(e) => fail("tenants table", super::one_line(&e)),
        Ok(catalog) => match catalog.resolve(name) {
            Ok(t) => ok("tenants table", format!("{t} found")),
            Err(_) => fail(
                "tenants table",
                format!("TENANTS_TABLE {name} does not exist; set it to the table of tenants, or TENANTS_TABLE=none"),
            ),
        },
    }
}

/// The Inngest server, when one is configured: any HTTP answer means it is reachable.
async fn inngest(settings: &Settings) -> Option<Item> {
    if !settings.inngest.server_configured {
        return None;
    }
    let url = &settings.inngest.api_base_url;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    Some(match client.get(url).send().await {
        Ok(r) => ok("inngest", format!("{url} answered ({})", r.status())),
        Err(e) => fail(
            "inngest",
            format!(
                "{url} does not answer: {}; check INNGEST_BASE_URL",
                super::one_line(&e)
            ),
        ),
    })
}
