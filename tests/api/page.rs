//! The backup page (`/backups/`) in a real headless Chromium driven over WebDriver
//! (chromedriver), against a real worker and PostgreSQL: a tenant admin logs in with a token,
//! creates a backup and watches it succeed, opens it, previews and runs a restore, downloads
//! and deletes it, and never sees another tenant's backups. Screenshots of the list, the detail
//! and the restore preview are written to `target/screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without them the
//! test fails and says so (it never skips).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::rest::{insert_backup, platform_admin, tenant_admin, Api, BASE};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest wait for something the page shows (it polls every second).
const PATIENCE: Duration = Duration::from_secs(30);

/// One chromedriver on a free port and one browser session with a fresh profile.
struct Browser {
    client: Client,
    /// chromedriver's port and our session on it, to end the session (and so the browser)
    /// if the test panics: killing chromedriver alone would leave Chromium running.
    port: u16,
    session: Option<String>,
    driver: tokio::process::Child,
    downloads: tempfile::TempDir,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the browser tests need Debian's {package} package \
                 (apt-get install -y chromium chromium-driver; .ci/run installs both)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let ready = async {
            loop {
                if let Ok(r) = http.get(format!("{url}/status")).send().await {
                    if r.status().is_success() {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), ready)
            .await
            .expect("chromedriver answers /status within 20 s");
        let profile = tempfile::tempdir().unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.path().display().to_string(),
                    "download.prompt_for_download": false,
                },
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a chromium session over chromedriver");
        let session = client.session_id().await.ok().flatten();
        Self {
            client,
            port,
            session,
            driver,
            downloads,
            _profile: profile,
        }
    }

    async fn stop(mut self) {
        let _ = self.client.clone().close().await;
        self.session = None;
        let _ = self.driver.kill().await;
    }

    /// Runs `script` (a JS expression's body with `return`) until it returns true.
    async fn until(&self, what: &str, script: &str, args: Vec<Value>) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let v = self
                .client
                .execute(script, args.clone())
                .await
                .unwrap_or(Value::Null);
            if v == Value::Bool(true) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; notice: {:?}",
                self.text("#notice").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn css(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    /// Clicks `css`, finding it again if the page redrew it in between (it polls).
    async fn click(&self, css: &str) {
        let mut tries = 0;
        loop {
            match self.css(css).await.click().await {
                Ok(()) => return,
                Err(e) if tries < 3 => {
                    tries += 1;
                    tracing::debug!(%css, %e, "click retried");
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn visible(&self, what: &str, css: &str) {
        self.until(
            what,
            "const e = document.querySelector(arguments[0]); return !!e && e.offsetParent !== null;",
            vec![json!(css)],
        )
        .await;
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        save(name, &png)
    }

    async fn log_in(&self, app_url: &str, token: &str) {
        self.client.goto(app_url).await.unwrap();
        self.css("#token").await.send_keys(token).await.unwrap();
        self.click("#login-submit").await;
        self.visible("the list after logging in", "#rows").await;
        self.until(
            "the list to load",
            "return document.getElementById('page-info').textContent !== '';",
            vec![],
        )
        .await;
    }

    /// The uuids of the rows the list shows.
    async fn row_uuids(&self) -> Vec<String> {
        let v = self
            .client
            .execute(
                "return [...document.querySelectorAll('#rows tr')].map(r => r.dataset.uuid);",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(v).unwrap()
    }
}

impl Drop for Browser {
    /// A failed test still closes its browser: `DELETE /session/{id}` by hand (`Drop` cannot
    /// await; chromedriver answers once the browser quit), then chromedriver is killed
    /// (`kill_on_drop`).
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let Some(session) = self.session.take() else {
            return;
        };
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
                 Content-Length: 0\r\n\r\n",
                self.port
            );
            let _ = stream.read(&mut [0; 256]);
        }
    }
}

/// Screenshots go to `target/screenshots/` (CI artifacts).
fn save(name: &str, png: &[u8]) -> PathBuf {
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    path
}

/// A backup of `tenant` that a worker is in the middle of (claimed, with progress).
async fn insert_running(api: &Api, tenant: i32, name: &str) -> String {
    let uuid = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO root_data_backups (uuid, tenant_id, name, backup_type, backup_scope, status,
             inngest_run_id, created_at, started_at, bytes_written, rows_written, progress_updated_at)
         VALUES ($1, $2, $3, 'full', 'tenant', 'running', 'run-in-progress', now() - interval '97 seconds',
                 now() - interval '95 seconds', 48234496, 1234567, now())",
    )
    .bind(&uuid)
    .bind(tenant)
    .bind(name)
    .execute(&api.db.pool)
    .await
    .unwrap();
    uuid
}

#[tokio::test]
async fn a_tenant_admin_backs_up_restores_downloads_and_deletes_in_the_browser() {
    let api = Api::spawn().await;
    let browser = Browser::start().await;
    let me = tenant_admin(1);
    let running = insert_running(&api, 1, "hourly tenant 1 (running)").await;
    let theirs = insert_backup(&api, Some(2), "tenant", "success").await;

    // Log in with a token; another tenant's backup is nowhere on the page.
    browser.log_in(&api.app.url("/backups/"), &me).await;
    assert_eq!(browser.row_uuids().await, vec![running.clone()]);
    let source = browser.client.source().await.unwrap();
    assert!(!source.contains(&theirs), "tenant 2's backup leaked");
    assert!(browser.text("#who").await.contains('1'), "shows the tenant");

    // Create a tenant backup; the worker runs it; the page (polling) shows it succeed.
    browser.click("#open-create").await;
    browser
        .css("#c-name")
        .await
        .send_keys("nightly tenant 1")
        .await
        .unwrap();
    assert_eq!(
        browser.css("#c-scope").await.prop("value").await.unwrap(),
        Some("tenant".to_owned())
    );
    browser.click("#create-submit").await;
    browser
        .until(
            "the new backup in the list",
            "return [...document.querySelectorAll('#rows tr [data-action=open]')]
                 .some(b => b.textContent === 'nightly tenant 1');",
            vec![],
        )
        .await;
    let uuid: String =
        sqlx::query_scalar("SELECT uuid FROM root_data_backups WHERE name = 'nightly tenant 1'")
            .fetch_one(&api.db.pool)
            .await
            .expect("the page created the backup");
    let row = format!("#rows tr[data-uuid='{uuid}']");
    browser.css(&row).await;
    crate::helpers::assert_completed(
        &api.run_sent("backup-execute", &format!("backup-execute-{uuid}"))
            .await,
    );
    browser
        .css(&format!(
            "{row}[data-status='success'] [data-action='download']"
        ))
        .await;
    browser
        .css(&format!(
            "#rows tr[data-uuid='{running}'] .tag[data-status='running']"
        ))
        .await;
    let size = browser.text(&format!("{row} td[data-col='size']")).await;
    assert!(
        size.ends_with("KB") || size.ends_with(" B") || size.ends_with("MB"),
        "human size, got {size:?}"
    );
    browser
        .until(
            "the chart to draw the finished backup",
            "return document.querySelectorAll('#chart rect.bar-size').length === 1;",
            vec![],
        )
        .await;
    let list_png = browser.screenshot("list.png").await;

    // Live progress: what the worker reports shows up without a reload.
    sqlx::query(
        "UPDATE root_data_backups SET bytes_written = 99 * 1024 * 1024, progress_updated_at = now()
         WHERE uuid = $1",
    )
    .bind(&running)
    .execute(&api.db.pool)
    .await
    .unwrap();
    browser
        .until(
            "the running backup's progress to move",
            "const p = document.querySelector(`[data-progress='${arguments[0]}']`);
             return !!p && p.textContent.startsWith('99.0 MB');",
            vec![json!(running)],
        )
        .await;

    // Detail: manifest summary from the artifact, chain, no restores yet.
    browser
        .click(&format!("{row} [data-action='detail']"))
        .await;
    browser
        .css("#detail [data-manifest='tables'] tbody tr")
        .await;
    let body = browser.text("#detail-body").await;
    assert!(
        body.contains("nightly tenant 1") && body.contains(&uuid),
        "{body}"
    );
    assert!(
        body.contains("core_users"),
        "per-table manifest rows: {body}"
    );
    let detail_png = browser.screenshot("detail.png").await;

    // Restore: dry-run preview first, then the typed confirmation unlocks the button.
    browser.click("#detail [data-action='restore']").await;
    // Since the backup, tenant 1 renamed one user: the preview shows that row's update.
    sqlx::query(
        "UPDATE core_users SET username = username || '-renamed'
         WHERE id = (SELECT min(id) FROM core_users WHERE tenant_id = 1)",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    browser.click("#r-preview").await;
    // The preview is a dry-run restore: queued like a restore, it records what it would do.
    let dry = until_some(async || {
        api.events()
            .into_iter()
            .find(|e| e["name"] == "backup/restore" && e["data"]["dry_run"] == true)
            .map(|e| e["data"]["restore_uuid"].as_str().unwrap().to_owned())
    })
    .await;
    crate::helpers::assert_completed(
        &api.run_sent("backup-restore", &format!("backup-restore-{dry}"))
            .await,
    );
    browser.css("#r-preview-out [data-preview='tables']").await;
    let preview_out = browser.text("#r-preview-out").await;
    assert!(
        preview_out.contains("dry run") && preview_out.contains("public.core_users 0 1 0"),
        "the dry run's message and its per-table preview: {preview_out}"
    );
    let locked = !browser.css("#r-submit").await.is_enabled().await.unwrap();
    assert!(locked, "restore stays locked until the name is typed");
    let dialog_png = browser.screenshot("restore-dialog.png").await;
    let (applied, safety): (Option<chrono::DateTime<chrono::Utc>>, Option<String>) =
        sqlx::query_as(
            "SELECT applied_at, safety_backup_uuid FROM root_data_restores WHERE uuid = $1",
        )
        .bind(&dry)
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert!(
        applied.is_none() && safety.is_none(),
        "a preview changes nothing and takes no safety backup"
    );
    browser
        .css("#r-confirm")
        .await
        .send_keys("nightly tenant 1")
        .await
        .unwrap();
    browser.click("#r-submit").await;
    browser.css("#detail [data-restore]").await;
    let restore: String = sqlx::query_scalar(
        "SELECT uuid FROM root_data_restores WHERE backup_uuid = $1 AND NOT dry_run",
    )
    .bind(&uuid)
    .fetch_one(&api.db.pool)
    .await
    .expect("the page queued a restore");
    crate::helpers::assert_completed(
        &api.run_sent("backup-restore", &format!("backup-restore-{restore}"))
            .await,
    );
    browser
        .css(&format!(
            "#detail [data-restore='{restore}'][data-status='success']"
        ))
        .await;

    // A dry-run restore with a recorded preview shows rows to insert/update/delete per table.
    let dry = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO root_data_restores (uuid, tenant_id, backup_uuid, restore_scope, status, dry_run,
             preview, started_at, completed_at)
         VALUES ($1, 1, $2, 'tenant', 'success', true, $3, now() - interval '2 seconds', now())",
    )
    .bind(&dry)
    .bind(&uuid)
    .bind(json!({
        "tables": [
            {"table": "public.core_users", "insert": 3, "update": 12, "delete": 1},
            {"table": "public.core_departments", "insert": 0, "update": 2, "delete": 0},
        ],
        "sequences": [{"sequence": "public.core_users_id_seq", "from": 40, "to": 52}],
    }))
    .execute(&api.db.pool)
    .await
    .unwrap();
    let preview = format!("#detail [data-restore='{dry}'] [data-preview='tables']");
    let preview_el = browser.css(&preview).await;
    let preview_text = preview_el.text().await.unwrap();
    assert!(
        preview_text.contains("public.core_users") && preview_text.contains("12"),
        "{preview_text}"
    );
    let card = browser
        .css(&format!("#detail [data-restore='{dry}']"))
        .await;
    let preview_png = save(
        "restore-preview.png",
        &card.screenshot().await.expect("element screenshot"),
    );
    browser.click("#detail [data-close]").await;

    // Download: the zip the API serves lands in the browser's download folder.
    browser
        .click(&format!("{row} [data-action='download']"))
        .await;
    let file = format!("nightly tenant 1_{}.zip", &uuid[..8]);
    browser
        .until(
            "the download notice",
            "return document.getElementById('notice').textContent.includes(arguments[0]);",
            vec![json!(file)],
        )
        .await;
    let saved = browser.downloads.path().join(&file);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !saved.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never appeared: {:?}",
            saved.display(),
            std::fs::read_dir(browser.downloads.path())
                .unwrap()
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let zip = std::fs::read(&saved).unwrap();
    assert!(zip.starts_with(b"PK"), "a zip");
    let listed = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("a readable zip");
    assert!(listed.file_names().any(|n| n.ends_with("manifest.json")));

    // Delete, with a confirmation; the row leaves the list and the backup is gone.
    browser
        .click(&format!("{row} [data-action='delete']"))
        .await;
    browser.click("#d-submit").await;
    browser
        .until(
            "the deleted row to leave the list",
            "return !document.querySelector(arguments[0]);",
            vec![json!(row)],
        )
        .await;
    let (_, deleted_at) = api.status_of(&uuid).await;
    assert!(deleted_at.is_some());
    let (status, _) = api
        .call(Method::GET, &format!("{BASE}/{uuid}"), &me, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // English labels.
    browser.click("#lang").await;
    assert_eq!(browser.text("h1").await, "Data backups");

    // At phone width the list fits the screen (rows become cards).
    browser.client.set_window_size(390, 900).await.unwrap();
    browser
        .until(
            "no horizontal overflow at phone width",
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await;
    browser.screenshot("list-phone.png").await;

    // Tenant 2's admin sees tenant 2's backup and none of tenant 1's.
    browser.client.set_window_size(1280, 1000).await.unwrap();
    browser.click("#logout").await;
    browser.visible("the login box", "#token").await;
    browser
        .log_in(&api.app.url("/backups/"), &tenant_admin(2))
        .await;
    assert_eq!(browser.row_uuids().await, vec![theirs.clone()]);
    assert!(
        browser.text("#open-policy").await.is_empty(),
        "no policy editor for tenants"
    );

    // A platform admin sees every tenant's backups, the tenant column, and edits the policy.
    browser.click("#logout").await;
    browser.visible("the login box", "#token").await;
    browser
        .log_in(&api.app.url("/backups/"), &platform_admin())
        .await;
    let all = browser.row_uuids().await;
    assert!(all.contains(&theirs) && all.contains(&running), "{all:?}");
    browser.visible("the tenant column", "th.col-tenant").await;
    browser.click("#open-policy").await;
    let min_keep = browser.css("#p-min_keep").await;
    min_keep.clear().await.unwrap();
    min_keep.send_keys("5").await.unwrap();
    browser.click("#policy-submit").await;
    browser
        .until(
            "the policy saved notice",
            "return document.getElementById('notice').textContent === 'Policy saved';",
            vec![],
        )
        .await;
    let (_, policy) = api
        .call(
            Method::GET,
            &format!("{BASE}/policy"),
            &platform_admin(),
            None,
        )
        .await;
    assert_eq!(policy["min_keep"], 5, "{policy}");

    // Scope `table` offers the table picker (never the worker's own tables).
    browser.click("#open-create").await;
    browser
        .css("#c-name")
        .await
        .send_keys("users only")
        .await
        .unwrap();
    browser
        .css("#c-scope")
        .await
        .select_by_value("table")
        .await
        .unwrap();
    browser
        .css("#c-table-list input[value='public.core_users']")
        .await;
    let offered = browser.text("#c-table-list").await;
    assert!(offered.contains("public.core_departments"), "{offered}");
    assert!(!offered.contains("root_data_backups"), "{offered}");
    browser
        .css("#c-table-filter")
        .await
        .send_keys("core_us")
        .await
        .unwrap();
    browser
        .until(
            "the filter to narrow the picker",
            "return !document.querySelector(\"#c-table-list input[value='public.core_departments']\");",
            vec![],
        )
        .await;
    browser
        .click("#c-table-list input[value='public.core_users']")
        .await;
    browser.click("#create-submit").await;
    browser
        .until(
            "the table backup in the list",
            "return [...document.querySelectorAll('#rows tr [data-action=open]')]
                 .some(b => b.textContent === 'users only');",
            vec![],
        )
        .await;
    let (scope, tables): (String, Vec<String>) = sqlx::query_as(
        "SELECT backup_scope, backup_tables FROM root_data_backups WHERE name = 'users only'",
    )
    .fetch_one(&api.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (scope.as_str(), tables),
        ("table", vec!["public.core_users".to_owned()])
    );

    for png in [list_png, detail_png, dialog_png, preview_png] {
        assert!(std::fs::metadata(&png).unwrap().len() > 10_000, "{png:?}");
    }
    browser.stop().await;
}

#[tokio::test]
async fn the_page_is_served_with_a_content_security_policy() {
    let api = Api::spawn().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let bare = http.get(api.app.url("/backups")).send().await.unwrap();
    assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.headers()["location"], "/backups/");
    for (path, content_type) in [
        ("/backups/", "text/html"),
        ("/backups/app.js", "text/javascript"),
        ("/backups/app.css", "text/css"),
    ] {
        let r = http.get(api.app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        assert!(h["content-type"]
            .to_str()
            .unwrap()
            .starts_with(content_type));
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'self'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    let missing = http
        .get(api.app.url("/backups/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // The page needs no token to load; the API still does.
    let api_call = http.get(api.app.url(BASE)).send().await.unwrap();
    assert_eq!(api_call.status(), StatusCode::UNAUTHORIZED);
}

/// Polls `probe` every 50 ms until it yields a value (at most the page's patience).
async fn until_some<T>(mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
