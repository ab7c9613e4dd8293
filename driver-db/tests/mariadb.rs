//! The db driver on real MariaDB servers: migrations, batched heartbeats counted by
//! the driver and by the server, the database clock, byte-exact ids, an outage of
//! a dedicated server (stopped and started with scripts/lib/mariadb.sh), and
//! passwords kept out of errors and logs.
//!
//! Needs `SERVICEGROUP_TEST_MARIADB_URL` (scripts/test sets it); without it every
//! test here fails with a message saying so.
#![cfg(feature = "mysql")]

mod common;

use std::time::Duration;

use common::mariadb::*;
use common::outage::*;
use common::*;
use servicegroup_core::{
    Beats, Driver, Error, ErrorKind, GroupId, InstanceId, MemberId, MemberKey, ServiceGroup,
};
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
        let a = fresh_mdb_database("sg_migr_a").await;
        let b = fresh_mdb_database("sg_migr_b").await;
        let _drop = (DropMdbDatabase::for_url(&a), DropMdbDatabase::for_url(&b));
        migrations_are_idempotent_and_concurrency_safe(&a, &b).await;
    }
}

#[tokio::test]
async fn heartbeat_batch_of_ten_thousand_is_one_statement() {
    let url = fresh_mdb_database("sg_batch").await;
    let _drop = DropMdbDatabase::for_url(&url);
    direct_batch_is_one_statement(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_with_ten_thousand_members_takes_one_statement_per_tick() {
    let url = fresh_mdb_database("sg_ticks").await;
    let _drop = DropMdbDatabase::for_url(&url);
    let (statements, ticks) = handle_ticks_are_one_statement_each(&url).await;
    assert!(ticks >= 3 && statements == ticks);
}

/// The server's own count, on a server of this test's own (its global counters see
/// no other test): three batches of 10,000 members are three `UPDATE`s executed.
#[tokio::test]
async fn server_counts_one_update_per_batch() {
    #[derive(diesel::QueryableByName, Debug)]
    struct Status {
        #[diesel(sql_type = diesel::sql_types::Text)]
        #[diesel(column_name = Variable_name)]
        name: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        #[diesel(column_name = Value)]
        value: String,
    }
    async fn updates(admin: &str) -> i64 {
        use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
        let mut conn = AsyncMysqlConnection::establish(&format!("{admin}?prefer_socket=false"))
            .await
            .unwrap();
        let rows: Vec<Status> =
            diesel::sql_query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_update')")
                .load(&mut conn)
                .await
                .unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].name, "Com_update");
        rows[0].value.parse().unwrap()
    }
    let (_server, admin) = OwnServer::start(Product::Mariadb);
    let driver = DbDriver::connect(&config(&admin)).await.unwrap();
    let keys = keys("compute", 10_000);
    let me = InstanceId::random();
    register_all(&driver, me, &keys).await;
    let before = updates(&admin).await;
    for _ in 0..3 {
        assert!(beat(&driver, me, &keys).await.missing.is_empty());
    }
    let after = updates(&admin).await;
    assert_eq!(
        after - before,
        3,
        "3 batches of 10,000 members must be 3 UPDATE statements on the server"
    );
}

#[tokio::test]
async fn age_is_measured_on_the_database_clock() {
    let url = fresh_mdb_database("sg_clock").await;
    let _drop = DropMdbDatabase::for_url(&url);
    age_comes_from_the_database(
        &url,
        "UPDATE servicegroup_members SET last_seen = NOW(6) - INTERVAL 30 SECOND",
    )
    .await;
}

/// Ids compare byte for byte (utf8mb4_bin), as on the other backends: case and
/// accents (composed or not) make different members; 255-byte ids of 4-byte
/// characters fit the unique key.
#[tokio::test]
async fn ids_compare_byte_exactly() {
    let url = fresh_mdb_database("sg_ids").await;
    let _drop = DropMdbDatabase::for_url(&url);
    let driver = DbDriver::connect(&config(&url)).await.unwrap();
    let group = GroupId::new("compute").unwrap();
    let names = [
        "host-1".to_owned(),
        "Host-1".to_owned(),
        "HOST-1".to_owned(),
        "hóst-1".to_owned(),
        "host-1\u{301}".to_owned(),
        "😀".repeat(63),
    ];
    let keys: Vec<MemberKey> = names
        .iter()
        .map(|n| MemberKey::new(group.clone(), MemberId::new(n.clone()).unwrap()))
        .collect();
    let me = InstanceId::random();
    let mut sorted = keys.clone();
    sorted.sort();
    register_all(&driver, me, &sorted).await;
    let mut listed: Vec<String> = driver
        .list(&group)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key.member.to_string())
        .collect();
    listed.sort();
    let mut expected = names.to_vec();
    expected.sort();
    assert_eq!(listed, expected);
    for key in &keys {
        assert_eq!(driver.get(key).await.unwrap().unwrap().key, *key);
    }
    // Forcing one down does not touch its look-alikes.
    assert!(driver.set_forced_down(&keys[1], true).await.unwrap());
    assert!(!driver.get(&keys[0]).await.unwrap().unwrap().forced_down);
    assert!(driver.get(&keys[1]).await.unwrap().unwrap().forced_down);
    let report = beat(&driver, me, &sorted).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
}

#[tokio::test]
async fn url_forms_reach_the_same_database() {
    let url = fresh_mdb_database("sg_forms").await;
    let _drop = DropMdbDatabase::for_url(&url);
    let rest = url.split_once("://").unwrap().1.to_owned();
    let first = DbDriver::connect(&config(&format!("mysql://{rest}")))
        .await
        .unwrap();
    assert_eq!(first.backend(), BackendKind::Mysql);
    let key = keys("forms", 1).remove(0);
    register(&first, InstanceId::random(), &key).await;
    for url in [
        format!("mariadb://{rest}"),
        format!("mysql+pymysql://{rest}?charset=utf8"),
    ] {
        let d = DbDriver::connect(&config(&url)).await.unwrap();
        assert!(d.get(&key).await.unwrap().is_some(), "{url}");
    }
}

/// A user `nova` with password [`SECRET`] on the server `admin` names, allowed
/// everything; returns `admin` with that user and password.
async fn with_password_user(admin: &str) -> String {
    mdb_exec(
        admin,
        &[
            format!("CREATE USER IF NOT EXISTS 'nova'@'127.0.0.1' IDENTIFIED BY '{SECRET}'"),
            "GRANT ALL PRIVILEGES ON *.* TO 'nova'@'127.0.0.1'".to_owned(),
        ],
    )
    .await;
    let url = admin.replacen("root@", &format!("nova:{SECRET}@"), 1);
    assert!(url.contains(SECRET), "{url}");
    url
}

/// MariaDB (a dedicated server) stopped mid-run: reads are `Unavailable`/`Timeout`,
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
    let (server, admin) = OwnServer::start(Product::Mariadb);
    rt.block_on(async {
        let url = with_password_user(&admin).await;
        outage_scenario(&server, &url, &logs).await;
    });
}

/// A password in the URL appears in no error, `Debug` output or log line, whatever
/// fails: a wrong password, an unreachable server, an unknown database, a bad URL.
#[test]
fn password_never_appears() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (logs, _guard) = capture_logs();
    let admin = mdb_admin_url();
    rt.block_on(async {
        let with_secret = with_password_user(&admin).await;

        // Works, and shows no password.
        let driver = DbDriver::connect(&config(&with_secret)).await.unwrap();
        let shown = format!(
            "{driver:?} {} {:?}",
            driver.location(),
            config(&with_secret)
        );
        assert_no_secret("Debug of the driver and config", &shown);
        assert!(shown.contains("***"), "{shown}");

        // The password of another user: refused, without the password.
        let wrong = with_secret.replacen("nova:", "root:", 1);
        let err = DbDriver::connect(&config(&wrong)).await.unwrap_err();
        assert_no_secret("the access-denied error", &format!("{err} {err:?}"));
        assert!(err.to_string().contains("root:***@"), "{err}");

        // A closed port: Unavailable, quickly, without the password.
        let closed = format!("mysql+pymysql://nova:{SECRET}@127.0.0.1:1/nova");
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
        let err = ServiceGroup::connect(config(&format!("mysql://u:{SECRET}@h:notaport/db")))
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
    common::outage::silent_server_times_out("mysql").await;
}

/// Two processes' handles (two drivers with their own pools) heartbeating the same
/// 2,000 rows at the same time never deadlock: each batch updates in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overlapping_batches_never_deadlock() {
    let url = fresh_mdb_database("sg_deadlock").await;
    let _drop = DropMdbDatabase::for_url(&url);
    let config = config(&url);
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
                    .heartbeat(&[Beats {
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

/// Two drivers registering the same 1,000 members at the same time (two processes
/// restarting together) both succeed: the rows are inserted in key order. Each takes
/// the members over from the other in turn, so a heartbeat finds every member either
/// refreshed or superseded, never missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_succeed() {
    let url = fresh_mdb_database("sg_reg").await;
    let _drop = DropMdbDatabase::for_url(&url);
    let config = config(&url);
    let keys = std::sync::Arc::new(keys("compute", 1_000));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let driver = DbDriver::connect(&config).await.unwrap();
        let keys = keys.clone();
        let me = InstanceId::random();
        tasks.spawn(async move {
            let registrations: Vec<_> = keys.iter().map(|k| registration(k, me)).collect();
            for _ in 0..10 {
                driver.register_many(&registrations).await?;
                let report = driver
                    .heartbeat(&[Beats {
                        instance: me,
                        keys: &keys,
                    }])
                    .await?;
                assert!(report.missing.is_empty(), "{report:?}");
            }
            Ok::<_, Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap()
            .expect("concurrent registrations must all succeed");
    }
}

/// A fresh database of the shared server, dropped at the end of the test.
async fn own_database(prefix: &str) -> (String, DropMdbDatabase) {
    let url = fresh_mdb_database(prefix).await;
    let drop = DropMdbDatabase::for_url(&url);
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
         VALUES ('legacy', 'old-host', NOW(6), TRUE)",
    )
    .await;
}

#[tokio::test]
async fn undecodable_rows_are_backend_errors() {
    let (url, _drop) = own_database("sg_bad").await;
    // BINARY(16) pads a shorter value to 16 bytes: no holder of another length.
    identity::undecodable_rows_are_backend_errors(
        &url,
        "UPDATE servicegroup_members SET metadata = '{\"Bad Key\": \"x\"}' WHERE member_id = 'm00000'",
        None,
    )
    .await;
}

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
    let url = fresh_mdb_database("sg_lanes").await;
    let _drop = DropMdbDatabase::for_url(&url);
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
    let url = fresh_mdb_database("sg_nolanes").await;
    let _drop = DropMdbDatabase::for_url(&url);
    let run = lanes::heartbeat_under_slow_listings(&url, 0).await;
    assert_eq!(
        run,
        lanes::LaneRun {
            heartbeat_in_time: false,
            join_in_time: false
        }
    );
}
