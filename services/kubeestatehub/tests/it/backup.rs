//! Backup and restore: the shipped backup job's command (`pg_dump` as the CronJob runs it)
//! restores into an empty database, from which a rebuild gives the same read model.

use std::process::Command;

use chrono::Utc;
use kubeestatehub::Roles;

use crate::harness::*;
use crate::manifests::{documents, repo};
use crate::queries::checksum;

#[tokio::test]
async fn a_backup_restores_into_an_empty_database_and_a_rebuild_gives_the_same_read_model() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let pool = db.pool().await;
    seed_market(&pool, 40, 12, 21, Utc::now()).await;
    crate::market::settled(&pool).await;
    eventually("the read model has every listing", || async {
        checksum(&db).await.0 == 40
    })
    .await;
    let live = checksum(&db).await;
    app.stop().await;

    // The CronJob's own command and arguments, with its environment filled in.
    let yaml = std::fs::read_to_string(repo().join("deploy/kustomize/base/postgres/backup.yaml"))
        .expect("backup.yaml");
    let job = documents(&yaml)
        .into_iter()
        .find(|d| d["kind"] == "CronJob")
        .expect("the backup CronJob");
    let container = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let program = container["command"][0].as_str().expect("command");
    assert_eq!(program, "pg_dump");
    let dir = std::env::temp_dir().join(format!("keh-backup-{id}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            a.as_str()
                .expect("arg")
                .replace("$(DATABASE_URL)", &db.url)
                .replace("/backups", dir.to_str().expect("dir"))
        })
        .collect();
    let dumped = Command::new(program).args(&args).output().expect("pg_dump");
    assert!(
        dumped.status.success(),
        "{}",
        String::from_utf8_lossy(&dumped.stderr)
    );

    // Into an empty database.
    let restored = TestDb::create().await;
    let output = Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error", "--dbname", &restored.url])
        .arg(dir.join("kubeestatehub.dump"))
        .output()
        .expect("pg_restore");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);

    // A rebuild from the restored events gives the same read model.
    let restored_pool = restored.pool().await;
    sqlx::query("DROP SCHEMA read_model CASCADE")
        .execute(&restored_pool)
        .await
        .expect("drop the restored read model");
    sqlx::query("SELECT keh_create_read_model('read_model')")
        .execute(&restored_pool)
        .await
        .expect("empty read model");
    assert_eq!(
        checksum(&restored).await.0,
        0,
        "the read model starts empty"
    );
    keh_projections::rebuild::rebuild(&restored_pool, 8, |_, _| {})
        .await
        .expect("rebuild");
    assert_eq!(
        checksum(&restored).await,
        live,
        "rebuilt read model differs"
    );
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics.market_metrics")
        .fetch_one(&pool)
        .await
        .expect("metrics");
    let rebuilt =
        keh_analytics::store::rebuild(&restored_pool, Utc::now().date_naive(), 8, |_, _| {})
            .await
            .expect("analytics rebuild");
    assert_eq!(rebuilt.listings, 40);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics.market_metrics")
        .fetch_one(&restored_pool)
        .await
        .expect("metrics");
    assert_eq!(after, before, "the market figures are rebuilt too");
    restored_pool.close().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}
