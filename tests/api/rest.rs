//! The REST API over real HTTP against a real PostgreSQL: auth rules, tenant isolation on every
//! route, validation, the page's exact calls (riveredge.md §7), deletes, restores, the policy
//! and the OpenAPI document. Events go to the fake Inngest server, which records them.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp, TestDb};

pub const SECRET: &str = "riveredge-test-jwt-secret";
const EVENT_KEY: &str = "test-event-key";
pub const BASE: &str = "/api/v1/core/data-backups";

/// A worker with the REST API enabled, events going to a fake Inngest server.
pub struct Api {
    pub app: TestApp,
    pub db: TestDb,
    pub inngest: inngest::testing::FakeInngestServer,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// [`Api::spawn`] with more settings (e.g. S3 storage).
    pub async fn spawn_with(extra: &[(&str, &str)]) -> Self {
        let db = TestDb::with_fixture().await;
        let inngest = inngest::testing::FakeInngestServer::start_dev().await;
        let url = inngest.url();
        let mut settings = vec![
            ("JWT_SECRET_KEY", SECRET),
            ("INNGEST_EVENT_KEY", EVENT_KEY),
            ("INNGEST_EVENT_API_BASE_URL", &url),
        ];
        settings.extend_from_slice(extra);
        let app = spawn_app_with(&db, &settings).await;
        Self {
            app,
            db,
            inngest,
            http: reqwest::Client::new(),
        }
    }

    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let r = self.http.request(method, self.app.url(path));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends and returns the status and the JSON body (`null` when not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.request(method, path, Some(token));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let response = r.send().await.unwrap();
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The events the API sent, in order.
    pub fn events(&self) -> Vec<Value> {
        self.inngest
            .requests_to(&format!("/e/{EVENT_KEY}"))
            .into_iter()
            .flat_map(|r| match r.body {
                Value::Array(events) => events,
                other => vec![other],
            })
            .collect()
    }

    /// Creates a backup through the API as `token` and checks the 201.
    pub async fn create(&self, token: &str, body: Value) -> Value {
        let (status, created) = self.call(Method::POST, BASE, token, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    /// Runs the event the API sent for `backup_uuid` (or restore) through the worker.
    pub async fn run_sent(&self, slug: &str, id: &str) -> inngest::testing::RunRecord {
        let event = self
            .events()
            .into_iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("no event {id} was sent"));
        let event: inngest::Event = serde_json::from_value(event).unwrap();
        self.app.run_event(slug, event).await
    }

    pub async fn status_of(&self, uuid: &str) -> (String, Option<chrono::DateTime<chrono::Utc>>) {
        sqlx::query_as("SELECT status, deleted_at FROM root_data_backups WHERE uuid = $1")
            .bind(uuid)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

fn b64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A RiverEdge access token with these claims, signed with `secret`.
pub fn token_with(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims(tenant: Option<i32>, infra_admin: bool, tenant_admin: bool) -> Value {
    json!({"sub": "7", "username": "u", "tenant_id": tenant, "is_infra_admin": infra_admin,
           "is_tenant_admin": tenant_admin, "exp": now() + 1800, "iat": now()})
}

pub fn tenant_admin(tenant: i32) -> String {
    token_with(claims(Some(tenant), false, true), SECRET)
}

pub fn platform_admin() -> String {
    token_with(claims(None, true, false), SECRET)
}

fn superadmin() -> String {
    token_with(
        json!({"sub": "1", "username": "root", "is_infra_superadmin": true, "tenant_id": null, "exp": now() + 600}),
        SECRET,
    )
}

/// Inserts a backup row directly (the state the routes act on), optionally with files.
pub async fn insert_backup(api: &Api, tenant: Option<i32>, scope: &str, status: &str) -> String {
    let uuid = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO root_data_backups (uuid, tenant_id, name, backup_type, backup_scope, backup_tables, status, checksum, file_path)
         VALUES ($1, $2, 'row ' || $1, 'full', $3, CASE WHEN $3 = 'table' THEN ARRAY['core_users'] END, $4,
                 CASE WHEN $4 = 'success' THEN repeat('a', 64) END, $1 || '/')",
    )
    .bind(&uuid)
    .bind(tenant)
    .bind(scope)
    .bind(status)
    .execute(&api.db.pool)
    .await
    .unwrap();
    let dir = api.app.storage_dir.path().join(&uuid);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("manifest.json"), b"{}").unwrap();
    std::fs::write(dir.join("data/t.zst"), b"data").unwrap();
    uuid
}

/// Every route of the API for one backup uuid: (method, path, body).
fn routes(uuid: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, BASE.to_owned(), None),
        (
            Method::POST,
            BASE.to_owned(),
            Some(json!({"name": "x", "backup_scope": "tenant"})),
        ),
        (Method::GET, format!("{BASE}/{uuid}"), None),
        (Method::DELETE, format!("{BASE}/{uuid}"), None),
        (
            Method::POST,
            format!("{BASE}/{uuid}/restore"),
            Some(json!({"confirm": true})),
        ),
        (Method::GET, format!("{BASE}/{uuid}/download"), None),
        (
            Method::GET,
            format!("{BASE}/{uuid}/files/manifest.json"),
            None,
        ),
        (Method::GET, format!("{BASE}/restores"), None),
        (Method::GET, format!("{BASE}/restores/{uuid}"), None),
        (Method::GET, format!("{BASE}/policy"), None),
        (Method::PUT, format!("{BASE}/policy"), Some(json!({}))),
        (Method::GET, format!("{BASE}/tables"), None),
    ]
}

#[tokio::test]
async fn missing_expired_forged_and_unsigned_tokens_get_401_on_every_route() {
    let api = Api::spawn().await;
    let uuid = insert_backup(&api, Some(1), "tenant", "success").await;
    let expired = token_with(
        json!({"sub": "7", "tenant_id": 1, "is_tenant_admin": true, "exp": now() - 3600}),
        SECRET,
    );
    let other_secret = token_with(claims(Some(1), false, true), "not-the-secret");
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims(None, true, false).to_string().as_bytes());
    let alg_none = format!("{header}.{payload}.");
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims(None, true, false),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    for (method, path, body) in routes(&uuid) {
        for token in [
            None,
            Some("garbage"),
            Some(&*expired),
            Some(&*other_secret),
            Some(&*alg_none),
            Some(&*hs512),
        ] {
            let mut r = api.request(method.clone(), &path, token);
            if let Some(b) = &body {
                r = r.json(b);
            }
            let response = r.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
            let body: Value = response.json().await.unwrap();
            assert!(body["detail"].is_string(), "{body}");
            assert_eq!(body["code"], "not_authenticated");
        }
    }
    assert!(api.events().is_empty(), "nothing was queued");
    assert_eq!(api.status_of(&uuid).await, ("success".to_owned(), None));
}

#[tokio::test]
async fn users_who_are_not_admins_get_403_and_tenant_admins_get_403_on_platform_only_things() {
    let api = Api::spawn().await;
    let uuid = insert_backup(&api, Some(1), "tenant", "success").await;
    let plain = token_with(claims(Some(1), false, false), SECRET);
    // is_infra_admin with a tenant is not a platform admin (riveredge.md §5).
    let infra_with_tenant = token_with(claims(Some(1), true, false), SECRET);
    for (method, path, body) in routes(&uuid) {
        for token in [&plain, &infra_with_tenant] {
            let (status, body) = api.call(method.clone(), &path, token, body.clone()).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        }
    }
    let tenant = tenant_admin(1);
    for (method, path, body) in [
        (Method::GET, format!("{BASE}/policy"), None),
        (Method::PUT, format!("{BASE}/policy"), Some(json!({}))),
        (
            Method::POST,
            BASE.to_owned(),
            Some(json!({"name": "x", "backup_scope": "all"})),
        ),
        (Method::GET, format!("{BASE}?backup_scope=all"), None),
        (
            Method::POST,
            BASE.to_owned(),
            Some(json!({"name": "x", "backup_scope": "tenant", "tenant_id": 2})),
        ),
        (
            Method::POST,
            format!("{BASE}/{uuid}/restore"),
            Some(json!({"confirm": true, "target_database": "elsewhere"})),
        ),
        (
            Method::POST,
            format!("{BASE}/{uuid}/restore"),
            Some(json!({"confirm": true, "replace": true})),
        ),
    ] {
        let (status, body) = api.call(method.clone(), &path, &tenant, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert!(body["detail"].is_string());
    }
    assert!(api.events().is_empty());
}

#[tokio::test]
async fn another_tenants_backup_is_404_on_every_route_and_nothing_changes() {
    let api = Api::spawn().await;
    let theirs = insert_backup(&api, Some(2), "tenant", "success").await;
    let platform = insert_backup(&api, None, "all", "success").await;
    let restore = uuid::Uuid::new_v4().to_string();
    sqlx::query("INSERT INTO root_data_restores (uuid, tenant_id, backup_uuid, restore_scope) VALUES ($1, 2, $2, 'tenant')")
        .bind(&restore)
        .bind(&theirs)
        .execute(&api.db.pool)
        .await
        .unwrap();
    let me = tenant_admin(1);
    for target in [&theirs, &platform] {
        for (method, path, body) in routes(target) {
            if path == BASE
                || path.ends_with("/policy")
                || path.ends_with("/restores")
                || path.ends_with("/tables")
            {
                continue;
            }
            let path = path.replace(
                &format!("restores/{target}"),
                &format!("restores/{restore}"),
            );
            // X-Tenant-ID naming the owner changes nothing: the tenant comes from the token.
            let mut r = api
                .request(method.clone(), &path, Some(&me))
                .header("X-Tenant-ID", "2");
            if let Some(b) = &body {
                r = r.json(b);
            }
            let response = r.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
            let body: Value = response.json().await.unwrap();
            assert!(body["detail"].is_string(), "{body}");
        }
    }
    let (_, list) = api.call(Method::GET, BASE, &me, None).await;
    assert_eq!(list["total"], 0, "{list}");
    let (_, restores) = api
        .call(Method::GET, &format!("{BASE}/restores"), &me, None)
        .await;
    assert_eq!(restores["total"], 0);
    assert_eq!(api.status_of(&theirs).await, ("success".to_owned(), None));
    assert_eq!(api.status_of(&platform).await, ("success".to_owned(), None));
    assert!(api
        .app
        .storage_dir
        .path()
        .join(&theirs)
        .join("manifest.json")
        .exists());
    assert!(api.events().is_empty(), "no event was sent");
}

#[tokio::test]
async fn a_created_backup_is_pending_and_queued_once_with_a_deterministic_event_id() {
    let api = Api::spawn().await;
    let created = api
        .create(
            &tenant_admin(1),
            json!({"name": "nightly", "backup_type": "full", "backup_scope": "tenant"}),
        )
        .await;
    let uuid = created["uuid"].as_str().unwrap();
    assert_eq!(
        (created["status"].as_str(), created["tenant_id"].as_i64()),
        (Some("pending"), Some(1))
    );
    assert_eq!(api.status_of(uuid).await.0, "pending");
    let events = api.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["name"], "backup/execute");
    assert_eq!(events[0]["id"], format!("backup-execute-{uuid}"));
    assert_eq!(events[0]["data"]["backup_uuid"], uuid);
    assert_eq!(events[0]["data"]["tenant_id"], 1);
}

#[tokio::test]
async fn a_retried_post_with_the_same_idempotency_key_returns_the_same_backup() {
    let api = Api::spawn().await;
    let post = |token: String| {
        api.request(Method::POST, BASE, Some(&token))
            .header("Idempotency-Key", "click-1")
            .json(&json!({"name": "once", "backup_scope": "tenant"}))
            .send()
    };
    let first: Value = post(tenant_admin(1)).await.unwrap().json().await.unwrap();
    let second = post(tenant_admin(1)).await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["uuid"], second["uuid"]);
    // The same key from another tenant is another backup.
    let other: Value = post(tenant_admin(2)).await.unwrap().json().await.unwrap();
    assert_ne!(first["uuid"], other["uuid"]);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM root_data_backups")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(count, 2);
    // Once that backup is deleted, its key cannot silently create another.
    let uuid = first["uuid"].as_str().unwrap();
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("{BASE}/{uuid}"),
            &tenant_admin(1),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let reused = post(tenant_admin(1)).await.unwrap();
    assert_eq!(reused.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn when_the_event_cannot_be_sent_the_backup_is_failed_and_the_answer_is_503() {
    let api = Api::spawn().await;
    api.inngest.fail_next_event_sends(100);
    let (status, body) = api
        .call(
            Method::POST,
            BASE,
            &tenant_admin(1),
            Some(json!({"name": "doomed", "backup_scope": "tenant"})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "event_send_failed");
    assert!(
        !body["detail"].as_str().unwrap().contains(EVENT_KEY),
        "the event key never leaks"
    );
    let (failed, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error_message FROM root_data_backups WHERE name = 'doomed'")
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert_eq!(failed, "failed");
    let error = error.unwrap();
    assert!(
        error.contains("500") && !error.contains(EVENT_KEY),
        "{error}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_named() {
    let api = Api::spawn().await;
    let tenant = tenant_admin(1);
    let platform = platform_admin();
    for (token, body, field) in [
        (
            &tenant,
            json!({"name": "x", "backup_scope": "everything"}),
            "backup_scope",
        ),
        (
            &tenant,
            json!({"name": "x", "backup_type": "differential"}),
            "backup_type",
        ),
        (&tenant, json!({"backup_scope": "tenant"}), "name"),
        (
            &tenant,
            json!({"name": "", "backup_scope": "tenant"}),
            "name",
        ),
        (
            &tenant,
            json!({"name": "x", "backup_scope": "table"}),
            "backup_tables",
        ),
        (
            &tenant,
            json!({"name": "x", "backup_scope": "table", "backup_tables": ["no_such_table"]}),
            "backup_tables",
        ),
        (
            &tenant,
            json!({"name": "x", "backup_scope": "tenant", "backup_type": "differential"}),
            "backup_type",
        ),
        (
            &tenant,
            json!({"name": 5, "backup_scope": "tenant"}),
            "name",
        ),
        (
            &platform,
            json!({"name": "x", "backup_scope": "tenant"}),
            "tenant_id",
        ),
        (
            &platform,
            json!({"name": "x", "backup_scope": "tenant", "tenant_id": 99}),
            "tenant_id",
        ),
        (
            &platform,
            json!({"name": "x", "backup_scope": "all", "tenant_id": 1}),
            "tenant_id",
        ),
    ] {
        let (status, response) = api
            .call(Method::POST, BASE, token, Some(body.clone()))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {response}"
        );
        let detail = &response["detail"][0];
        assert_eq!(detail["loc"][1], field, "{body}: {response}");
        assert!(
            detail["msg"].is_string() && detail["type"].is_string(),
            "{response}"
        );
    }
    // Not JSON at all.
    let response = api
        .request(Method::POST, BASE, Some(&tenant))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["detail"][0]["type"], "json_invalid");
    // A body over the limit is refused before it is parsed.
    let huge = json!({"name": "x".repeat(riveredge_backup::api::BODY_LIMIT + 1)});
    let (status, body) = api.call(Method::POST, BASE, &tenant, Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["code"], "payload_too_large");
    // Malformed uuids never reach a query.
    for path in ["/not-a-uuid", "/not-a-uuid/download", "/restores/42"] {
        let (status, body) = api
            .call(Method::GET, &format!("{BASE}{path}"), &tenant, None)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_eq!(body["detail"][0]["loc"], json!(["path", "uuid"]));
    }
    // Bad list filters.
    for query in [
        "status=done",
        "page=zero",
        "page=0",
        "created_from=yesterday",
    ] {
        let (status, body) = api
            .call(Method::GET, &format!("{BASE}?{query}"), &tenant, None)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
    }
    assert!(api.events().is_empty(), "nothing invalid was queued");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM root_data_backups")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing invalid was recorded");
}

#[tokio::test]
async fn the_list_is_tenant_scoped_newest_first_filtered_and_clamps_page_size() {
    let api = Api::spawn().await;
    let mut mine = Vec::new();
    for status in ["success", "failed", "success"] {
        mine.push(insert_backup(&api, Some(1), "tenant", status).await);
    }
    insert_backup(&api, Some(2), "tenant", "success").await;
    insert_backup(&api, None, "all", "success").await;
    sqlx::query("UPDATE root_data_backups SET created_at = now() - interval '1 hour' + (id || ' minutes')::interval, name = 'n' || id")
        .execute(&api.db.pool)
        .await
        .unwrap();
    let tenant = tenant_admin(1);
    let (status, list) = api
        .call(
            Method::GET,
            &format!("{BASE}?page=1&page_size=10000"),
            &tenant,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(
        (
            list["total"].as_i64(),
            list["page_size"].as_i64(),
            list["page"].as_i64()
        ),
        (Some(3), Some(1000), Some(1))
    );
    let uuids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["uuid"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = mine.iter().rev().map(String::as_str).collect();
    assert_eq!(uuids, newest_first);
    let (_, failed) = api
        .call(
            Method::GET,
            &format!("{BASE}?status=failed&backup_type=full&backup_scope=tenant"),
            &tenant,
            None,
        )
        .await;
    assert_eq!(failed["total"], 1);
    assert_eq!(failed["items"][0]["uuid"], mine[1].as_str());
    let (_, paged) = api
        .call(
            Method::GET,
            &format!("{BASE}?page=2&page_size=2"),
            &tenant,
            None,
        )
        .await;
    assert_eq!(
        (
            paged["total"].as_i64(),
            paged["items"].as_array().unwrap().len()
        ),
        (Some(3), 1)
    );
    let name = list["items"][0]["name"].as_str().unwrap();
    let (_, named) = api
        .call(Method::GET, &format!("{BASE}?name={name}"), &tenant, None)
        .await;
    assert_eq!(named["total"], 1);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (_, none) = api
        .call(
            Method::GET,
            &format!("{BASE}?created_from={}", urlencode(&future)),
            &tenant,
            None,
        )
        .await;
    assert_eq!(none["total"], 0);
    // Platform admins see everything, and may narrow by tenant.
    let (_, all) = api.call(Method::GET, BASE, &platform_admin(), None).await;
    assert_eq!(all["total"], 5);
    let (_, two) = api
        .call(
            Method::GET,
            &format!("{BASE}?tenant_id=2"),
            &superadmin(),
            None,
        )
        .await;
    assert_eq!(two["total"], 1);
    // A tenant admin's tenant_id parameter cannot widen the list.
    let (_, still_mine) = api
        .call(Method::GET, &format!("{BASE}?tenant_id=2"), &tenant, None)
        .await;
    assert_eq!(still_mine["total"], 3);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn delete_soft_deletes_removes_the_files_and_refuses_running_backups() {
    let api = Api::spawn().await;
    let tenant = tenant_admin(1);
    let done = insert_backup(&api, Some(1), "tenant", "success").await;
    let (status, body) = api
        .call(Method::DELETE, &format!("{BASE}/{done}"), &tenant, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    let (state, deleted_at) = api.status_of(&done).await;
    assert_eq!(state, "success");
    assert!(
        deleted_at.is_some(),
        "soft-deleted, the row stays for the record"
    );
    assert!(
        !api.app.storage_dir.path().join(&done).exists(),
        "files removed"
    );
    let (status, _) = api
        .call(Method::GET, &format!("{BASE}/{done}"), &tenant, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .call(Method::DELETE, &format!("{BASE}/{done}"), &tenant, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let running = insert_backup(&api, Some(1), "tenant", "running").await;
    let (status, body) = api
        .call(Method::DELETE, &format!("{BASE}/{running}"), &tenant, None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "backup_running");
    assert_eq!(api.status_of(&running).await, ("running".to_owned(), None));
    assert!(api
        .app
        .storage_dir
        .path()
        .join(&running)
        .join("manifest.json")
        .exists());
}

#[tokio::test]
async fn restore_needs_confirm_and_a_successful_backup_and_queues_one_restore() {
    let api = Api::spawn().await;
    let tenant = tenant_admin(1);
    let ok = insert_backup(&api, Some(1), "tenant", "success").await;
    let failed = insert_backup(&api, Some(1), "tenant", "failed").await;
    let path = format!("{BASE}/{ok}/restore");
    for body in [json!({}), json!({"confirm": false})] {
        let (status, response) = api.call(Method::POST, &path, &tenant, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
        assert_eq!(response["code"], "confirmation_required");
    }
    let (status, response) = api
        .call(
            Method::POST,
            &format!("{BASE}/{failed}/restore"),
            &tenant,
            Some(json!({"confirm": true})),
        )
        .await;
    assert_eq!(
        (status, response["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("backup_not_restorable"))
    );
    let (status, dry) = api
        .call(
            Method::POST,
            &path,
            &tenant,
            Some(json!({"confirm": true, "dry_run": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["success"].as_bool(), Some(true));
    assert_eq!(dry["restore"]["dry_run"], true, "{dry}");
    assert_eq!(dry["restore"]["status"], "pending");
    let events = api.events();
    assert_eq!(events.len(), 1, "a dry run is queued like a restore");
    assert_eq!(events[0]["data"]["dry_run"], true);
    assert_eq!(events[0]["data"]["restore_uuid"], dry["restore"]["uuid"]);

    let (status, started) = api
        .call(Method::POST, &path, &tenant, Some(json!({"confirm": true})))
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["success"], true);
    assert!(started["message"].is_string());
    let restore = started["restore"]["uuid"].as_str().unwrap();
    assert_eq!(started["restore"]["status"], "pending");
    let events = api.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["name"], "backup/restore");
    assert_eq!(events[1]["id"], format!("backup-restore-{restore}"));
    assert_eq!(events[1]["data"]["restore_uuid"], restore);
    assert_eq!(events[1]["data"]["backup_uuid"], ok.as_str());
    assert_eq!(events[1]["data"]["dry_run"], false);

    let (_, list) = api
        .call(Method::GET, &format!("{BASE}/restores"), &tenant, None)
        .await;
    assert_eq!(list["total"], 2, "the dry run and the restore");
    assert_eq!(list["items"][0]["uuid"], restore);
    assert_eq!(list["items"][1]["uuid"], dry["restore"]["uuid"]);
    let (status, one) = api
        .call(
            Method::GET,
            &format!("{BASE}/restores/{restore}"),
            &tenant,
            None,
        )
        .await;
    assert_eq!(
        (status, one["backup_uuid"].as_str()),
        (StatusCode::OK, Some(ok.as_str()))
    );
    let (_, detail) = api
        .call(Method::GET, &format!("{BASE}/{ok}"), &tenant, None)
        .await;
    assert_eq!(detail["restores"][0]["uuid"], restore);
    assert_eq!(detail["chain"]["parent"], json!(null));
    assert_eq!(detail["chain"]["children"], json!([]));
    let (status, _) = api
        .call(
            Method::GET,
            &format!("{BASE}/restores/{restore}"),
            &tenant_admin(2),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_policy_is_for_platform_admins_validated_and_stored() {
    let api = Api::spawn().await;
    let admin = platform_admin();
    let path = format!("{BASE}/policy");
    let (status, policy) = api.call(Method::GET, &path, &admin, None).await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    assert_eq!(policy["full_cron"], "0 2 * * *");
    let new = json!({"retention_days_full": 14, "retention_days_incremental": 2, "min_keep": 3,
                     "full_cron": "30 1 * * *", "incremental_cron": null});
    let (status, saved) = api
        .call(Method::PUT, &path, &superadmin(), Some(new.clone()))
        .await;
    // Fields a client leaves out (the schedule's time zone, GFS tiers, fan-out, stall limit)
    // take their defaults.
    let mut new = new;
    for (k, v) in [
        ("timezone", json!("UTC")),
        ("keep_daily", json!(0)),
        ("keep_weekly", json!(0)),
        ("keep_monthly", json!(0)),
        ("keep_yearly", json!(0)),
        ("tenant_fanout", json!(false)),
        ("stall_minutes", json!(10)),
    ] {
        new[k] = v;
    }
    assert_eq!((status, &saved), (StatusCode::OK, &new));
    let (_, read) = api.call(Method::GET, &path, &admin, None).await;
    assert_eq!(read, new);
    let mut tiers = new.clone();
    tiers["timezone"] = json!("Asia/Shanghai");
    tiers["keep_weekly"] = json!(4);
    tiers["stall_minutes"] = json!(20);
    let (status, saved) = api
        .call(Method::PUT, &path, &superadmin(), Some(tiers.clone()))
        .await;
    assert_eq!((status, &saved), (StatusCode::OK, &tiers));
    let (status, _) = api
        .call(Method::PUT, &path, &superadmin(), Some(new.clone()))
        .await;
    assert_eq!(status, StatusCode::OK);
    let bad = json!({"retention_days_full": 0, "retention_days_incremental": 2, "min_keep": 3,
                     "full_cron": "every day", "incremental_cron": null});
    let (status, body) = api.call(Method::PUT, &path, &admin, Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&Value> = body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["loc"][1])
        .collect();
    assert_eq!(fields, [&json!("retention_days_full"), &json!("full_cron")]);
    let (_, unchanged) = api.call(Method::GET, &path, &admin, None).await;
    assert_eq!(unchanged, new);
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_route() {
    let api = Api::spawn().await;
    let doc: Value = api
        .http
        .get(api.app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        (BASE.to_owned(), "post"),
        (BASE.to_owned(), "get"),
        (format!("{BASE}/{{uuid}}"), "get"),
        (format!("{BASE}/{{uuid}}"), "delete"),
        (format!("{BASE}/{{uuid}}/restore"), "post"),
        (format!("{BASE}/{{uuid}}/download"), "get"),
        (format!("{BASE}/{{uuid}}/files/{{path}}"), "get"),
        (format!("{BASE}/restores"), "get"),
        (format!("{BASE}/restores/{{uuid}}"), "get"),
        (format!("{BASE}/policy"), "put"),
        (format!("{BASE}/tables"), "get"),
    ] {
        assert!(
            paths.get(&path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn the_system_prefix_serves_the_same_api_and_cors_answers_the_configured_origin() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app_with(
        &db,
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("API_CORS_ORIGINS", "https://riveredge.example.com"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let response = http
        .get(app.url("/api/v1/system/data-backups?page=1&page_size=20"))
        .bearer_auth(tenant_admin(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers().get("x-request-id").is_some(),
        "request ids are set and returned"
    );
    let preflight = http
        .request(Method::OPTIONS, app.url(BASE))
        .header("Origin", "https://riveredge.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("https://riveredge.example.com")
    );
    let stranger = http
        .request(Method::OPTIONS, app.url(BASE))
        .header("Origin", "https://evil.example.com")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(stranger
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn platform_admins_back_up_everything_and_must_say_where_a_whole_database_restore_goes() {
    let api = Api::spawn().await;
    let admin = platform_admin();
    let created = api
        .create(&admin, json!({"name": "everything", "backup_scope": "all"}))
        .await;
    assert_eq!(
        (
            created["backup_scope"].as_str(),
            created["tenant_id"].is_null()
        ),
        (Some("all"), true)
    );
    assert!(api.events()[0]["data"]["tenant_id"].is_null());

    let whole = insert_backup(&api, None, "all", "success").await;
    let path = format!("{BASE}/{whole}/restore");
    let (status, body) = api
        .call(Method::POST, &path, &admin, Some(json!({"confirm": true})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "replace"]));
    let (status, body) = api
        .call(
            Method::POST,
            &path,
            &admin,
            Some(json!({"confirm": true, "target_database": "scratch_copy"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["restore"]["target_database"], "scratch_copy");
    let sent = api.events();
    assert_eq!(
        sent.last().unwrap()["data"]["target_database"],
        "scratch_copy"
    );
    // Unknown routes and methods answer in the error shape.
    let (status, body) = api
        .call(
            Method::GET,
            &format!("{BASE}/{whole}/nothing"),
            &admin,
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, body) = api
        .call(Method::PATCH, &format!("{BASE}/{whole}"), &admin, None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn a_backup_deleted_while_pending_is_not_recreated_by_its_queued_run() {
    let api = Api::spawn().await;
    let me = tenant_admin(1);
    let created = api
        .create(
            &me,
            json!({"name": "changed my mind", "backup_scope": "tenant"}),
        )
        .await;
    let uuid = created["uuid"].as_str().unwrap();
    let (status, _) = api
        .call(Method::DELETE, &format!("{BASE}/{uuid}"), &me, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let run = api
        .run_sent("backup-execute", &format!("backup-execute-{uuid}"))
        .await;
    let error = crate::helpers::assert_failed(&run).to_string();
    assert!(error.contains("does not exist"), "{error}");
    assert!(
        run.calls.iter().all(|c| c.attempt == 0),
        "a final error, not retried: {:?}",
        run.calls
    );
    let (status, deleted_at) = api.status_of(uuid).await;
    assert_eq!(status, "pending");
    assert!(deleted_at.is_some());
    assert!(!api.app.storage_dir.path().join(uuid).exists());
}

#[tokio::test]
async fn tables_lists_the_databases_tables_for_the_picker_but_never_our_own() {
    let api = Api::spawn().await;
    let (status, body) = api
        .call(
            Method::GET,
            &format!("{BASE}/tables"),
            &tenant_admin(1),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["items"].as_array().unwrap();
    let named = |name: &str| items.iter().find(|t| t["name"] == name);
    let users = named("core_users").expect("a fixture table is listed");
    assert_eq!(users["schema"], "public");
    assert_eq!(users["tenant_id"], true, "core_users has tenant_id");
    for own in riveredge_backup::db::OWN_TABLES {
        assert!(named(own).is_none(), "{own} must not be offered");
    }
    // The picker's names are accepted by create as they are.
    let created = api
        .create(
            &tenant_admin(1),
            json!({"name": "t", "backup_scope": "table",
                   "backup_tables": [format!("{}.{}", users["schema"].as_str().unwrap(), "core_users")]}),
        )
        .await;
    assert_eq!(created["backup_tables"], json!(["public.core_users"]));
}
