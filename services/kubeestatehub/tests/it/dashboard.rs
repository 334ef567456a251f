//! The dashboard in a real browser: `web/tests/dashboard.mjs` drives Debian's Chromium
//! (playwright-core) against the real running platform with a seeded market. Its checks and
//! the screenshots it saves (`web/test-results/`) are printed with the test's output.

use std::path::PathBuf;

use chrono::Utc;
use kubeestatehub::Roles;

use crate::harness::*;

fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

#[tokio::test]
async fn the_dashboard_works_in_a_real_browser() {
    let chromium = std::env::var("KEH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's chromium (`./dev test` does) or set KEH_CHROMIUM"
    );
    assert!(
        web_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci` in web/ (`./dev test` does)"
    );
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let pool = db.pool().await;
    seed_market(&pool, 300, 24, 5, Utc::now()).await;
    crate::market::settled(&pool).await;
    let auth = keh_auth::AuthService::new(pool.clone(), app.settings.auth());
    auth.create_user(
        "test",
        keh_auth::service::NewUser {
            username: "agent.smith".to_owned(),
            password: "correct horse battery".to_owned(),
            role: keh_auth::Role::Agent,
            agent_key: Some("AGENT-SMITH".to_owned()),
            office_key: None,
        },
    )
    .await
    .expect("agent");

    let output = tokio::process::Command::new("node")
        .arg("tests/dashboard.mjs")
        .current_dir(web_dir())
        .env("KEH_DASHBOARD_URL", &app.base)
        .env("KEH_CHROMIUM", &chromium)
        .env("KEH_TEST_USERNAME", "agent.smith")
        .env("KEH_TEST_PASSWORD", "correct horse battery")
        .kill_on_drop(true)
        .output()
        .await
        .expect("node (Node.js) must be installed to run the dashboard's browser tests");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the dashboard's browser checks failed:\n{}",
        report
            .lines()
            .filter(|l| l.starts_with("not ok"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(report.contains("# dashboard: all checks passed"));
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}
