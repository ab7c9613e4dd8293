//! The db driver on real PostgreSQL servers: migrations, batched heartbeats counted
//! by the driver and by pg_stat_statements, the database clock, an outage of a
//! dedicated server (stopped and started with scripts/lib/postgres.sh), and
//! passwords kept out of errors and logs.
//!
//! Needs `SERVICEGROUP_TEST_POSTGRES_URL` (scripts/test sets it); without it every
//! test here fails with a message saying so.
#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use common::outage::*;
use common::*;
use servicegroup_core::{Driver, Error, ErrorKind, InstanceId, ServiceGroup};
use servicegroup_driver_db::{BackendKind, DbDriver};
// Name the driver crate so it is linked and registered.
use servicegroup_driver_db as _;
use tokio::time::Instant;

/// Run by the multi-process tests as a separate OS process (see `common::spawn_helper`).
#[test]
#[ignore = "helper process for the multi-process tests (they start it themselves)"]
fn helper_process() {
    helper_main();
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_from_two_processes() {
    for _ in 0..3 {
        let a = fresh_pg_database("sg_migr_a").await;
        let b = fresh_pg_database("sg_migr_b").await;
        migrations_are_idempotent_and_concurrency_safe(&a, &b).await;
    }
}

#[tokio::test]
async fn heartbeat_batch_of_ten_thousand_is_one_statement() {
    direct_batch_is_one_statement(&fresh_pg_database("sg_batch").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_with_ten_thousand_members_takes_one_statement_per_tick() {
    let url = fresh_pg_database("sg_ticks").await;
    let (statements, ticks) = handle_ticks_are_one_statement_each(&url).await;
    assert!(ticks >= 3 && statements == ticks);
}

/// How often the table was analyzed by hand (`ANALYZE`, not autovacuum), once that is
/// at least `at_least` (polling every 20 ms, at most 10 s).
async fn wait_for_analyze(url: &str, at_least: i64) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    let started = Instant::now();
    loop {
        let n = diesel::sql_query(
            "SELECT analyze_count AS n FROM pg_stat_user_tables WHERE relname = 'servicegroup_members'",
        )
        .get_result::<N>(&mut conn)
        .await
        .unwrap()
        .n;
        if n >= at_least {
            return n;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the table was analyzed {n} times within 10 s, expected at least {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fleet registered in one go gets planner statistics from the driver itself
/// (autovacuum may come a minute later): after 10,000 registrations the table is
/// analyzed, and the heartbeat statement for a batch that is a small part of the table
/// reads it by index (at 1,000,000 rows without statistics the planner chose
/// sequential scans for batches of 10,000: 10x the cost per batch).
#[tokio::test]
async fn registering_a_fleet_refreshes_the_planner_statistics() {
    let url = fresh_pg_database("sg_analyze").await;
    let driver = DbDriver::connect(&config(&url)).await.unwrap();
    let keys = keys("compute", 20_000);
    let me = InstanceId::random();
    register_all(&driver, me, &keys[..9_000]).await;
    assert_eq!(
        wait_for_analyze(&url, 0).await,
        0,
        "analyzed before 10,000 rows"
    );
    register_all(&driver, me, &keys[9_000..]).await;
    wait_for_analyze(&url, 1).await;

    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let ids: Vec<i64> = (10_000..10_200).collect();
    // The heartbeat statement of one instance (TOUCH_ONE in backend/postgres.rs).
    let plan: Vec<Line> = diesel::sql_query(
        "EXPLAIN UPDATE servicegroup_members AS t SET last_seen = now() \
         FROM (SELECT id FROM servicegroup_members WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE) AS s \
         WHERE t.id = s.id AND t.id = ANY($1) AND t.holder = $2",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(&ids)
    .bind::<diesel::sql_types::Binary, _>(&me.to_bytes()[..])
    .load(&mut conn)
    .await
    .unwrap();
    let plan: String = plan.into_iter().map(|l| l.line + "\n").collect();
    assert!(!plan.contains("Seq Scan"), "{plan}");
    // ... and of several instances (TOUCH_MANY).
    let holders: Vec<Vec<u8>> = ids.iter().map(|_| me.to_bytes().to_vec()).collect();
    let plan: Vec<Line> = diesel::sql_query(
        "EXPLAIN UPDATE servicegroup_members AS t SET last_seen = now() \
         FROM (SELECT id FROM servicegroup_members WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE) AS s \
         WHERE t.id = s.id AND t.id = ANY($1) \
         AND (t.id, t.holder) IN (SELECT * FROM unnest($2::bigint[], $3::bytea[]))",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(&ids)
    .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(&ids)
    .bind::<diesel::sql_types::Array<diesel::sql_types::Binary>, _>(&holders)
    .load(&mut conn)
    .await
    .unwrap();
    let plan: String = plan.into_iter().map(|l| l.line + "\n").collect();
    assert!(!plan.contains("Seq Scan on servicegroup_members"), "{plan}");
}

/// The server's own count: three batches of 10,000 members are three statements in
/// pg_stat_statements, all of them the one `UPDATE … = ANY($1)`.
#[tokio::test]
async fn pg_stat_statements_counts_one_update_per_batch() {
    #[derive(diesel::QueryableByName, Debug)]
    struct Stat {
        #[diesel(sql_type = diesel::sql_types::Text)]
        query: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        calls: i64,
    }
    let admin = pg_admin_url();
    let url = fresh_pg_database("sg_pgss").await;
    let dbname = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    pg_exec(
        &admin,
        &["CREATE EXTENSION IF NOT EXISTS pg_stat_statements".to_owned()],
    )
    .await;

    let driver = DbDriver::connect(&config(&url)).await.unwrap();
    let keys = keys("compute", 10_000);
    let me = InstanceId::random();
    register_all(&driver, me, &keys).await;
    // Registering 10,000 members makes the driver analyze the table in the background:
    // wait for it, so it is not counted below.
    wait_for_analyze(&url, 1).await;
    pg_exec(
        &admin,
        &[format!(
            "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = '{dbname}'), 0)"
        )],
    )
    .await;
    for _ in 0..3 {
        assert!(beat(&driver, me, &keys).await.missing.is_empty());
    }

    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    let mut conn = AsyncPgConnection::establish(&admin).await.unwrap();
    let stats: Vec<Stat> = diesel::sql_query(format!(
        "SELECT query, calls FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '{dbname}') AND calls > 0"
    ))
    .load(&mut conn)
    .await
    .unwrap();
    let total: i64 = stats.iter().map(|s| s.calls).sum();
    assert_eq!(
        total, 3,
        "3 batches of 10,000 members must be 3 statements; the server saw {stats:#?}"
    );
    assert!(
        stats[0].query.contains("UPDATE") && stats[0].query.contains("ANY"),
        "{stats:#?}"
    );
}

#[tokio::test]
async fn age_is_measured_on_the_database_clock() {
    age_comes_from_the_database(
        &fresh_pg_database("sg_clock").await,
        "UPDATE servicegroup_members SET last_seen = now() - interval '30 seconds'",
    )
    .await;
}

#[tokio::test]
async fn url_forms_reach_the_same_database() {
    let url = fresh_pg_database("sg_forms").await;
    let rest = url.split_once("://").unwrap().1.to_owned();
    let first = DbDriver::connect(&config(&format!("postgres://{rest}")))
        .await
        .unwrap();
    assert_eq!(first.backend(), BackendKind::Postgres);
    let key = keys("forms", 1).remove(0);
    register(&first, InstanceId::random(), &key).await;
    for url in [
        format!("postgresql://{rest}"),
        format!("postgresql+psycopg2://{rest}?client_encoding=utf8"),
    ] {
        let d = DbDriver::connect(&config(&url)).await.unwrap();
        assert!(d.get(&key).await.unwrap().is_some(), "{url}");
    }
}

/// PostgreSQL (a dedicated server) stopped mid-run: reads are `Unavailable`/`Timeout`,
/// never "down"; the heartbeat loop logs "lost" once and "recovered" once; after the
/// restart every member is up again within one report_interval (plus a margin), and
/// no member record was lost. The URL's password appears in no error or log line.
#[test]
fn outage_of_a_dedicated_server() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (logs, _guard) = capture_logs();
    let (server, url) = OwnServer::start(Product::Postgres);
    let url = url.replacen("postgres@", &format!("postgres:{SECRET}@"), 1);
    assert!(url.contains(SECRET));
    rt.block_on(outage_scenario(&server, &url, &logs));
}

/// A password in the URL appears in no error, `Debug` output or log line, whatever
/// fails: an unreachable server, an unknown database, a bad URL.
#[test]
fn password_never_appears() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (logs, _guard) = capture_logs();
    let admin = pg_admin_url();
    rt.block_on(async {
        let with_secret = admin.replacen("postgres@", &format!("postgres:{SECRET}@"), 1);
        assert!(with_secret.contains(SECRET), "{with_secret}");

        // Works (trust authentication ignores the password), and shows no password.
        let driver = DbDriver::connect(&config(&with_secret)).await.unwrap();
        let shown = format!(
            "{driver:?} {} {:?}",
            driver.location(),
            config(&with_secret)
        );
        assert_no_secret("Debug of the driver and config", &shown);
        assert!(shown.contains("***"), "{shown}");

        // A closed port: Unavailable, quickly, without the password.
        let closed = with_dbname(&format!("postgresql://nova:{SECRET}@127.0.0.1:1"), "nova");
        let started = Instant::now();
        let err = DbDriver::connect(&config(&closed)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_no_secret("the connect error", &format!("{err} {err:?}"));
        assert!(err.to_string().contains("nova:***@127.0.0.1:1"), "{err}");

        // An unknown database.
        let unknown = with_dbname(&with_secret, "no_such_database_here");
        let err = DbDriver::connect(&config(&unknown)).await.unwrap_err();
        assert!(err.kind().is_unreachable(), "{err}");
        assert!(err.to_string().contains("no_such_database_here"), "{err}");
        assert_no_secret("the unknown-database error", &format!("{err} {err:?}"));

        // Through the registry and the handle too.
        let err = ServiceGroup::connect(config(&closed)).await.unwrap_err();
        assert_no_secret("the handle's connect error", &format!("{err} {err:?}"));
        let err = ServiceGroup::connect(config(&format!("postgresql://u:{SECRET}@h:notaport/db")))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("db.url"), "{err}");
        assert_no_secret("the bad-URL error", &format!("{err} {err:?}"));
    });
    assert_no_secret("the captured logs", &logs.text());
}

/// A server that accepts connections but never answers: `Timeout`/`Unavailable`
/// within `[db] timeout`, not a hang.
#[tokio::test]
async fn silent_server_times_out() {
    common::outage::silent_server_times_out("postgresql").await;
}

/// Two processes' handles (two drivers with their own pools) heartbeating the same
/// 2,000 rows at the same time never deadlock: each batch locks its rows in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overlapping_batches_never_deadlock() {
    let url = fresh_pg_database("sg_deadlock").await;
    let mut config = config(&url);
    // This test is about deadlocks (PostgreSQL reports one as an error after
    // deadlock_timeout), not speed: batches that wait for each other's row locks on
    // a loaded machine must not fail as timeouts.
    config.set("db.timeout", Duration::from_secs(20)).unwrap();
    config.call_timeout = Duration::from_secs(30);
    let a = std::sync::Arc::new(DbDriver::connect(&config).await.unwrap());
    let b = std::sync::Arc::new(DbDriver::connect(&config).await.unwrap());
    let keys = std::sync::Arc::new(keys("compute", 2_000));
    let me = InstanceId::random();
    register_all(&a, me, &keys).await;
    // b finds the rows by name once, then by id like a.
    assert!(beat(&b, me, &keys).await.missing.is_empty());
    let mut tasks = tokio::task::JoinSet::new();
    for driver in [a.clone(), b.clone(), a, b] {
        let keys = keys.clone();
        tasks.spawn(async move {
            for _ in 0..40 {
                let report = driver
                    .heartbeat(&[servicegroup_core::Beats {
                        instance: me,
                        keys: &keys,
                    }])
                    .await?;
                assert!(report.missing.is_empty() && report.superseded.is_empty());
            }
            Ok::<_, Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap()
            .expect("concurrent heartbeat batches must all succeed");
    }
}

/// A fresh database of the shared server, dropped at the end of the test.
async fn own_database(prefix: &str) -> (String, DropDatabase) {
    let url = fresh_pg_database(prefix).await;
    let drop = DropDatabase::for_url(&url);
    (url, drop)
}

#[tokio::test]
async fn takeover_bumps_the_epoch_and_fences_the_old_holder() {
    let (url, _drop) = own_database("sg_takeover").await;
    identity::takeover_bumps_the_epoch_and_fences_the_old_holder(&url).await;
}

#[tokio::test]
async fn refused_registrations_change_nothing() {
    let (url, _drop) = own_database("sg_cond").await;
    identity::refused_registrations_change_nothing(&url).await;
}

#[tokio::test]
async fn leave_by_another_instance_leaves_the_row() {
    let (url, _drop) = own_database("sg_leave").await;
    identity::leave_by_another_instance_leaves_the_row(&url).await;
}

#[tokio::test]
async fn metadata_round_trips() {
    let (url, _drop) = own_database("sg_meta").await;
    identity::metadata_round_trips(&url).await;
}

#[tokio::test]
async fn id_cache_follows_removed_and_recreated_rows() {
    let (url, _drop) = own_database("sg_cache").await;
    identity::id_cache_follows_removed_and_recreated_rows(&url).await;
}

#[tokio::test]
async fn legacy_rows_read_as_the_unknown_holder() {
    let (url, _drop) = own_database("sg_legacy").await;
    identity::legacy_rows_read_as_the_unknown_holder(
        &url,
        "INSERT INTO servicegroup_members (group_id, member_id, last_seen, forced_down) \
         VALUES ('legacy', 'old-host', now(), true)",
    )
    .await;
}

#[tokio::test]
async fn undecodable_rows_are_backend_errors() {
    let (url, _drop) = own_database("sg_bad").await;
    identity::undecodable_rows_are_backend_errors(
        &url,
        "UPDATE servicegroup_members SET metadata = '{\"Bad Key\": \"x\"}' WHERE member_id = 'm00000'",
        Some("UPDATE servicegroup_members SET holder = '\\x010203' WHERE member_id = 'm00000'"),
    )
    .await;
}

/// Two drivers (two processes) on one PostgreSQL database claiming one member at
/// once with a condition: exactly one is stored, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_conditional_claims_have_one_winner() {
    let (url, _drop) = own_database("sg_race").await;
    identity::racing_conditional_claims_have_one_winner(&url).await;
}

/// A heartbeat batch and a join complete within their deadline while slow listings
/// (a bandwidth-limited link) hold every connection of the general pool: they have
/// a lane of their own (`db.heartbeat_pool_size`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_joins_never_wait_behind_listings() {
    let url = fresh_pg_database("sg_lanes").await;
    let _drop = DropDatabase::for_url(&url);
    let run = lanes::heartbeat_under_slow_listings(&url, 2).await;
    assert_eq!(
        run,
        lanes::LaneRun {
            heartbeat_in_time: true,
            join_in_time: true
        }
    );
}

/// The same without the lane (`db.heartbeat_pool_size = 0`): the heartbeat and the
/// join queue behind the listings and miss the deadline (what the lane prevents).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_lane_heartbeats_wait_behind_listings() {
    let url = fresh_pg_database("sg_nolanes").await;
    let _drop = DropDatabase::for_url(&url);
    let run = lanes::heartbeat_under_slow_listings(&url, 0).await;
    assert_eq!(
        run,
        lanes::LaneRun {
            heartbeat_in_time: false,
            join_in_time: false
        }
    );
}
