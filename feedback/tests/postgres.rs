//! The feedback service on a real PostgreSQL server when the server drops every connection
//! under it (what a restart or a failover does to its clients): each vote is stored exactly
//! once or refused with a clear status, nothing is half-written, and the service recovers by
//! itself. Needs `PREFDB_TEST_POSTGRES_URL` (`.ci/run` starts Debian's PostgreSQL and sets
//! it); the test creates its own database and drops it afterwards.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use common::{error_of, raw};
use musicrl_config::FeedbackConfig;
use musicrl_feedback::api::PairView;
use sqlx::Connection;

fn admin_url() -> String {
    std::env::var("PREFDB_TEST_POSTGRES_URL")
        .expect("PREFDB_TEST_POSTGRES_URL must name a PostgreSQL role that may create databases")
}

async fn admin(sql: &str) {
    let mut conn = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("connects as admin");
    sqlx::query(sql).execute(&mut conn).await.expect(sql);
    conn.close().await.expect("closes");
}

/// Drops every connection to database `name` (the server side of a restart); returns how
/// many it dropped.
async fn terminate(name: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("connects as admin");
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ))
    .fetch_one(&mut conn)
    .await
    .expect("terminates");
    conn.close().await.expect("closes");
    n
}

/// A call that meets the outage is answered with a clear server-side status (never a
/// success that stored nothing); it is retried until answered otherwise.
async fn until_answered(
    mut call: impl AsyncFnMut() -> (StatusCode, axum::http::HeaderMap, axum::body::Bytes),
) -> (StatusCode, axum::http::HeaderMap, axum::body::Bytes) {
    for _ in 0..100 {
        let (status, h, body) = call().await;
        if !status.is_server_error() {
            return (status, h, body);
        }
        let e = error_of(&body);
        assert!(!e.is_empty() && !e.starts_with("not a JSON error"), "{e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the service did not recover from the dropped connections");
}

#[tokio::test]
#[ignore = "needs PostgreSQL (PREFDB_TEST_POSTGRES_URL); .ci/run starts one and runs it"]
async fn votes_are_stored_once_when_postgres_drops_every_connection() {
    let name = format!("musicrl_test_feedback_{}", std::process::id());
    admin(&format!("DROP DATABASE IF EXISTS {name}")).await;
    admin(&format!("CREATE DATABASE {name}")).await;
    let base = admin_url();
    let url = format!(
        "{}/{name}",
        base.rsplit_once('/').map_or(base.as_str(), |(b, _)| b)
    );
    let s = common::start_on(
        FeedbackConfig {
            min_listen_seconds: 0.0,
            health_check_seconds: 0.1,
            ..FeedbackConfig::default()
        },
        None,
        Some(&url),
    )
    .await;
    let mut stored = 0i64;
    let mut cookie = String::new();
    for round in 0..3 {
        if round > 0 {
            // Every connection of the service, dropped by the server.
            let dropped = terminate(&name).await;
            assert!(dropped > 0, "the service held no connection to drop");
        }
        let headers: Vec<(&str, &str)> = if cookie.is_empty() {
            Vec::new()
        } else {
            vec![("cookie", cookie.as_str())]
        };
        let (status, h, body) =
            until_answered(async || raw(Method::GET, &s.url("/api/pair"), &headers, "").await)
                .await;
        assert_eq!(status, StatusCode::OK, "{}", error_of(&body));
        if let Some(c) = h.get(header::SET_COOKIE).and_then(|v| v.to_str().ok()) {
            cookie = c.split(';').next().unwrap_or("").to_string();
        }
        let view: PairView = serde_json::from_slice(&body).expect("a pair");
        if round > 0 {
            let dropped = terminate(&name).await;
            assert!(dropped > 0, "the service held no connection to drop");
        }
        let vote = serde_json::to_vec(&serde_json::json!({"pair": view.pair, "outcome": "a"}))
            .expect("json");
        let post_headers = [
            ("cookie", cookie.as_str()),
            ("x-csrf-token", view.csrf.as_str()),
            ("content-type", "application/json"),
        ];
        let (status, _, body) = until_answered(async || {
            raw(
                Method::POST,
                &s.url("/api/vote"),
                &post_headers,
                vote.clone(),
            )
            .await
        })
        .await;
        // Stored now, or stored by an attempt whose answer was lost: never twice.
        assert!(
            status == StatusCode::CREATED || status == StatusCode::CONFLICT,
            "{status}: {}",
            error_of(&body)
        );
        stored += 1;
        assert!(
            s.db.vote_for_pair(&view.pair)
                .await
                .expect("reads")
                .is_some()
        );
    }
    let counts =
        s.db.vote_counts(musicrl_prefdb::VoteFilter::default())
            .await
            .expect("counts");
    assert_eq!(counts.total(), stored, "each vote stored exactly once");
    let (status, _, body) =
        until_answered(async || raw(Method::GET, &s.url("/healthz"), &[], "").await).await;
    assert_eq!(status, StatusCode::OK, "{}", error_of(&body));
    s.stop().await;
    admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
}
