//! The database scenario on a real PostgreSQL server. Needs `PREFDB_TEST_POSTGRES_URL`, a URL
//! of a role that may create databases (`.ci/run` starts Debian's PostgreSQL and sets it);
//! each test creates its own database and drops it afterwards.

mod common;

use sqlx::Connection;

fn admin_url() -> String {
    std::env::var("PREFDB_TEST_POSTGRES_URL").expect(
        "PREFDB_TEST_POSTGRES_URL must name a PostgreSQL role that may create databases \
         (for example postgres://musicrl:musicrl@127.0.0.1:5432/postgres); .ci/run sets it",
    )
}

/// A fresh database on the server; returns its URL and name.
async fn fresh_database(tag: &str) -> (String, String) {
    let admin = admin_url();
    let name = format!("musicrl_test_{tag}_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connects as admin");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut conn)
        .await
        .expect("drops a stale database");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("creates the test database");
    conn.close().await.expect("closes");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    (format!("{base}/{name}"), name)
}

async fn drop_database(name: &str) {
    let mut conn = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("connects as admin");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .expect("drops the test database");
}

#[tokio::test]
#[ignore = "needs PostgreSQL (PREFDB_TEST_POSTGRES_URL); .ci/run starts one and runs it"]
async fn postgres_passes_the_scenario() {
    let (url, name) = fresh_database("scenario").await;
    common::scenario(&url).await;
    drop_database(&name).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL (PREFDB_TEST_POSTGRES_URL); .ci/run starts one and runs it"]
async fn rlhf_rows_move_from_sqlite_to_postgres() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let from = format!("sqlite:{}", dir.path().join("a.db").display());
    let (url, name) = fresh_database("rlhf").await;
    common::rlhf_round_trip(&from, &url).await;
    drop_database(&name).await;
}
