//! The dashboard of `wsledger serve`: its JSON and token over HTTP, and the page in
//! a real headless Chromium driven by Playwright.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use wsledger::adapters::sqlite::SqliteStore;
use wsledger::local::{Backend, ServeConfig, Server};

use crate::serve::urlencode;
use crate::sqlite::temp_db;

async fn server(dashboard: bool, token: Option<&str>) -> Server {
    let config = ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        sweep_interval: Duration::from_secs(3_600),
        dashboard,
        dashboard_token: token.map(str::to_owned),
        ..ServeConfig::default()
    };
    Server::start(config, Backend::Sqlite(SqliteStore::open(temp_db()).unwrap())).await.unwrap()
}

#[tokio::test]
async fn the_dashboard_serves_its_page_and_json_and_honours_its_token() {
    let open = server(true, None).await;
    let base = format!("http://{}", open.local_addr());
    let page = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<title>wsledger</title>"));
    let (_client, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/?userId=api-user", open.local_addr())).await.unwrap();
    let listed = wsledger_testkit::eventually(Duration::from_secs(5), "the connection listed", || async {
        let listed = get_json(&format!("{base}/api/connections")).await.as_array().cloned().unwrap_or_default();
        (!listed.is_empty()).then_some(listed)
    })
    .await;
    assert_eq!(listed[0]["userId"], "api-user");
    assert_eq!(listed[0]["status"], "CONNECTED");
    let id = listed[0]["connectionId"].as_str().unwrap();
    let history = get_json(&format!("{base}/api/connections/{}/history", urlencode(id))).await;
    assert_eq!(history[0]["type"], "Connected");
    let activity = get_json(&format!("{base}/api/activity")).await;
    assert_eq!(activity["perMinute"].as_array().unwrap().len(), 30);
    open.shutdown().await;

    let guarded = server(true, Some("s3cret")).await;
    let base = format!("http://{}", guarded.local_addr());
    assert_eq!(reqwest::get(format!("{base}/")).await.unwrap().status(), 401);
    assert_eq!(reqwest::get(format!("{base}/api/connections")).await.unwrap().status(), 401);
    assert_eq!(reqwest::get(format!("{base}/?token=s3cret")).await.unwrap().status(), 200);
    assert_eq!(reqwest::get(format!("{base}/api/connections?token=s3cret")).await.unwrap().status(), 200);
    guarded.shutdown().await;

    let off = server(false, None).await;
    let base = format!("http://{}", off.local_addr());
    assert_eq!(reqwest::get(format!("{base}/")).await.unwrap().status(), 426);
    assert_eq!(reqwest::get(format!("{base}/api/connections")).await.unwrap().status(), 401);
    off.shutdown().await;
}

async fn get_json(url: &str) -> Value {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{url}: {error}: {text}"))
}

/// Where screenshots and other test artifacts go.
fn artifacts() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into()),
    )
    .join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_dashboard_works_in_a_real_browser() {
    let modules = crate::serve::node_modules();
    assert!(
        modules.join("playwright-core").is_dir(),
        "playwright-core is missing under {}: run the tests through scripts/test, which installs it",
        modules.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: scripts/test installs Debian's chromium (apt-get install chromium), or set CHROMIUM"
    );
    let app = server(true, None).await;
    let output_dir = artifacts();
    for width in [390, 800, 1280] {
        let _ = std::fs::remove_file(output_dir.join(format!("dashboard-{width}.png")));
    }
    let output = tokio::process::Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/dashboard.js"))
        .arg(format!("http://{}/", app.local_addr()))
        .arg(&output_dir)
        .env("NODE_PATH", &modules)
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .expect("node runs");
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for width in [390, 800, 1280] {
        let screenshot = output_dir.join(format!("dashboard-{width}.png"));
        assert!(screenshot.is_file(), "the screenshot is saved at {}", screenshot.display());
    }
    app.shutdown().await;
}
