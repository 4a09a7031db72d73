//! The acceptance path of the REST API (create → Inngest → success → zip download → restore,
//! and another tenant's admin locked out), and a 200 MB resumable download.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::assert_completed;
use crate::rest::{tenant_admin, Api, BASE};

/// Every stored file of a backup, by its path inside the backup.
fn stored_files(api: &Api, uuid: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let root = api.app.storage_dir.path().join(uuid);
    api.app
        .artifact_files(uuid)
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(&root).unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

pub(crate) fn unzip(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a valid zip");
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            assert_eq!(entry.compression(), zip::CompressionMethod::Stored);
            let mut out = Vec::new();
            entry.read_to_end(&mut out).unwrap();
            (entry.name().to_owned(), out)
        })
        .collect()
}

pub(crate) async fn get(
    api: &Api,
    path: &str,
    token: &str,
    range: Option<&str>,
) -> reqwest::Response {
    let mut r = api.request(Method::GET, path, Some(token));
    if let Some(range) = range {
        r = r.header("Range", range);
    }
    r.send().await.unwrap()
}

/// Creates a tenant backup through the API and runs it through the worker to success.
pub(crate) async fn backed_up(api: &Api, tenant: i32, name: &str) -> String {
    let created = api
        .create(
            &tenant_admin(tenant),
            json!({"name": name, "backup_type": "full", "backup_scope": "tenant"}),
        )
        .await;
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    let run = api
        .run_sent("backup-execute", &format!("backup-execute-{uuid}"))
        .await;
    assert_completed(&run);
    uuid
}

#[tokio::test]
async fn a_tenant_admin_backs_up_downloads_and_restores_and_another_tenant_sees_nothing() {
    let api = Api::spawn().await;
    let me = tenant_admin(1);
    let uuid = backed_up(&api, 1, "acceptance").await;

    let (status, detail) = api
        .call(Method::GET, &format!("{BASE}/{uuid}"), &me, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["status"], "success");
    assert!(detail["verified_at"].is_string(), "{detail}");
    assert!(detail["progress"]["tables_total"].as_i64().unwrap() > 0);
    assert_eq!(
        detail["progress"]["tables_done"],
        detail["progress"]["tables_total"]
    );

    // The download is one zip whose files are byte-identical to the stored artifact.
    let response = get(&api, &format!("{BASE}/{uuid}/download"), &me, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/zip");
    assert_eq!(headers["accept-ranges"], "bytes");
    let disposition = headers["content-disposition"].to_str().unwrap().to_owned();
    assert!(
        disposition.starts_with(&format!(
            "attachment; filename=\"acceptance_{}.zip\"",
            &uuid[..8]
        )),
        "{disposition}"
    );
    let zip = response.bytes().await.unwrap();
    assert_eq!(
        headers["content-length"].to_str().unwrap(),
        zip.len().to_string()
    );
    let stored = stored_files(&api, &uuid);
    assert!(stored.contains_key("manifest.json"));
    assert_eq!(unzip(&zip), stored);
    // The same bytes again (the CRC index is cached now).
    let again = get(&api, &format!("{BASE}/{uuid}/download"), &me, None)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(again, zip);

    // Single files, and paths that try to leave the backup.
    let manifest = get(
        &api,
        &format!("{BASE}/{uuid}/files/manifest.json"),
        &me,
        None,
    )
    .await;
    assert_eq!(manifest.status(), StatusCode::OK);
    assert_eq!(
        manifest.bytes().await.unwrap().as_ref(),
        stored["manifest.json"].as_slice()
    );
    for bad in ["data%2F..%2F..%2Fsecret", ".partial%2Fx", "data%2F%2Fx"] {
        let response = get(&api, &format!("{BASE}/{uuid}/files/{bad}"), &me, None).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let head = get(
        &api,
        &format!("{BASE}/{uuid}/files/manifest.json"),
        &me,
        Some("bytes=0-9"),
    )
    .await;
    assert_eq!(head.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        head.bytes().await.unwrap().as_ref(),
        &stored["manifest.json"][..10]
    );
    let missing = get(&api, &format!("{BASE}/{uuid}/files/nope.json"), &me, None).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // Restore with the page's body.
    let (status, started) = api
        .call(
            Method::POST,
            &format!("{BASE}/{uuid}/restore"),
            &me,
            Some(json!({"confirm": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let restore = started["restore"]["uuid"].as_str().unwrap().to_owned();
    let run = api
        .run_sent("backup-restore", &format!("backup-restore-{restore}"))
        .await;
    assert_completed(&run);
    let (_, done) = api
        .call(
            Method::GET,
            &format!("{BASE}/restores/{restore}"),
            &me,
            None,
        )
        .await;
    assert_eq!(done["status"], "success", "{done}");

    // Another tenant's admin: 404 on every route of this backup and its restore.
    let other = tenant_admin(2);
    for (method, path, body) in [
        (Method::GET, format!("{BASE}/{uuid}"), None),
        (Method::GET, format!("{BASE}/{uuid}/download"), None),
        (
            Method::GET,
            format!("{BASE}/{uuid}/files/manifest.json"),
            None,
        ),
        (
            Method::POST,
            format!("{BASE}/{uuid}/restore"),
            Some(json!({"confirm": true})),
        ),
        (Method::DELETE, format!("{BASE}/{uuid}"), None),
        (Method::GET, format!("{BASE}/restores/{restore}"), None),
    ] {
        let (status, body) = api.call(method.clone(), &path, &other, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }
    assert_eq!(api.status_of(&uuid).await, ("success".to_owned(), None));
    assert_eq!(stored_files(&api, &uuid), stored, "nothing changed");
}

#[tokio::test]
async fn a_200_mb_download_resumes_with_ranges_to_the_same_bytes() {
    let api = Api::spawn().await;
    // ~205 MB of incompressible bytes for tenant 1 (md5 output is as good as random to zstd).
    api.db
        .execute_script(
            "CREATE TABLE bulk_payloads (id serial PRIMARY KEY, tenant_id int, payload bytea NOT NULL);
             INSERT INTO bulk_payloads (tenant_id, payload)
             SELECT 1, decode(string_agg(md5(g::text || ':' || i::text), ''), 'hex')
             FROM generate_series(1, 400000) g, generate_series(1, 32) i GROUP BY g;",
        )
        .await;
    let me = tenant_admin(1);
    let uuid = backed_up(&api, 1, "大 备份").await;
    let path = format!("{BASE}/{uuid}/download");

    let full = get(&api, &path, &me, None).await;
    assert_eq!(full.status(), StatusCode::OK);
    let disposition = full.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.contains(&format!("_{}.zip", &uuid[..8])),
        "{disposition}"
    );
    assert!(
        disposition.contains("filename*=UTF-8''"),
        "the exact name is there too: {disposition}"
    );
    let full = full.bytes().await.unwrap();
    let total = full.len();
    assert!(total > 200_000_000, "a 200 MB artifact: {total} bytes");
    assert_eq!(unzip(&full), stored_files(&api, &uuid));

    // Interrupted after a third, resumed from there: the pieces are the whole.
    let cut = total / 3;
    let first = get(&api, &path, &me, Some(&format!("bytes=0-{}", cut - 1))).await;
    assert_eq!(first.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        first.headers()["content-range"],
        format!("bytes 0-{}/{total}", cut - 1).as_str()
    );
    let mut stitched = first.bytes().await.unwrap().to_vec();
    let rest = get(&api, &path, &me, Some(&format!("bytes={cut}-"))).await;
    assert_eq!(rest.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        rest.headers()["content-length"],
        (total - cut).to_string().as_str()
    );
    stitched.extend_from_slice(&rest.bytes().await.unwrap());
    assert_eq!(stitched, full.as_ref());
    // The last bytes (the central directory), and a range inside the data.
    let tail = get(&api, &path, &me, Some("bytes=-100"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(tail.as_ref(), &full[total - 100..]);
    let (a, b) = (total / 2, total / 2 + 1_000_000);
    let middle = get(&api, &path, &me, Some(&format!("bytes={a}-{b}")))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(middle.as_ref(), &full[a..=b]);

    // Ranges past the end are 416 with the size; a stale If-Range gets the whole file.
    let past = get(&api, &path, &me, Some(&format!("bytes={total}-"))).await;
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        past.headers()["content-range"],
        format!("bytes */{total}").as_str()
    );
    let body: Value = past.json().await.unwrap();
    assert_eq!(body["code"], "range_not_satisfiable");
    let stale = api
        .request(Method::GET, &path, Some(&me))
        .header("Range", "bytes=0-9")
        .header("If-Range", "\"some-other-version\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.bytes().await.unwrap().len(), total);
}

/// The backup page's calls, exactly as `riveredge.md` §7 lists them, replayed in its order.
#[tokio::test]
async fn the_backup_pages_exact_calls_work_as_it_expects() {
    let api = Api::spawn().await;
    let me = tenant_admin(1);
    // Every call but download carries X-Tenant-ID and the bearer token.
    let page = |method: Method, path: String| {
        api.request(method, &format!("/api/v1{path}"), Some(&me))
            .header("X-Tenant-ID", "1")
    };

    // Create: {name, backup_type, backup_scope}; the body of the answer is ignored, any 2xx works.
    let created = page(Method::POST, "/core/data-backups".into())
        .json(&json!({"name": "页面备份", "backup_type": "full", "backup_scope": "tenant"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    // Scope table without tables (the page has no tables field): a clear 4xx with detail[0].msg.
    let table = page(Method::POST, "/core/data-backups".into())
        .json(&json!({"name": "t", "backup_type": "full", "backup_scope": "table"}))
        .send()
        .await
        .unwrap();
    assert!(table.status().is_client_error());
    let body: Value = table.json().await.unwrap();
    assert!(
        body["detail"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("backup_tables"),
        "{body}"
    );

    // List with unset parameters omitted; items[] keyed by uuid, total.
    let list: Value = page(Method::GET, "/core/data-backups?page=1&page_size=20".into())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 1);
    let row = &list["items"][0];
    for field in [
        "uuid",
        "name",
        "backup_type",
        "backup_scope",
        "status",
        "file_size",
        "created_at",
    ] {
        assert!(row.get(field).is_some(), "list rows carry {field}");
    }
    let uuid = row["uuid"].as_str().unwrap().to_owned();
    assert_eq!(row["status"], "pending");
    let filtered: Value = page(Method::GET, "/core/data-backups?page=1&page_size=20&backup_type=full&backup_scope=tenant&status=pending".into())
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(filtered["total"], 1);

    // The run happens; a manual refresh shows success (the only status that shows Download).
    assert_completed(
        &api.run_sent("backup-execute", &format!("backup-execute-{uuid}"))
            .await,
    );

    // Statistics and export: page_size=1000, and 10000 clamped instead of rejected.
    for size in [1000, 10000] {
        let response = page(
            Method::GET,
            format!("/core/data-backups?page=1&page_size={size}"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let stats: Value = response.json().await.unwrap();
        assert_eq!(stats["items"][0]["status"], "success");
        assert!(stats["items"][0]["file_size"].as_i64().unwrap() > 0);
    }

    // Detail drawer fields.
    let detail: Value = page(Method::GET, format!("/core/data-backups/{uuid}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for field in [
        "name",
        "backup_type",
        "backup_scope",
        "status",
        "file_path",
        "file_size",
        "started_at",
        "completed_at",
        "error_message",
        "created_at",
        "updated_at",
    ] {
        assert!(detail.get(field).is_some(), "detail carries {field}");
    }

    // Download: raw fetch with Authorization and X-Tenant-Id, read whole as a Blob.
    let download = api
        .request(Method::GET, &format!("{BASE}/{uuid}/download"), Some(&me))
        .header("X-Tenant-Id", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert!(!download.bytes().await.unwrap().is_empty());

    // Restore: {confirm: true}; reads success and message.
    let restore: Value = page(Method::POST, format!("/core/data-backups/{uuid}/restore"))
        .json(&json!({"confirm": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(restore["success"], true);
    assert!(restore["message"].is_string());

    // Delete: any 2xx.
    let deleted = page(Method::DELETE, format!("/core/data-backups/{uuid}"))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());

    // A 401 is what makes the page go to /login.
    let anonymous = api
        .http
        .get(api.app.url("/api/v1/core/data-backups"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}
