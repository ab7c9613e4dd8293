//! The db driver on SQLite files: migrations, several OS processes on one file,
//! batched heartbeats, the database clock, URLs.

mod common;

use std::time::Duration;

use common::*;
use servicegroup_core::{Driver, ErrorKind, InstanceId, ServiceGroup};
use servicegroup_driver_db::{BackendKind, DbDriver};
// Name the driver crate so it is linked and registered.
use servicegroup_driver_db as _;

/// Run by the multi-process tests as a separate OS process (see `common::spawn_helper`).
#[test]
#[ignore = "helper process for the multi-process tests (they start it themselves)"]
fn helper_process() {
    helper_main();
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_from_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let a = sqlite_url(dir.path(), &format!("a{round}.db"));
        let b = sqlite_url(dir.path(), &format!("b{round}.db"));
        migrations_are_idempotent_and_concurrency_safe(&a, &b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_file_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path(), "shared.db");
    let mut child = spawn_helper("join", &url, "compute", "child-host");
    read_until(&mut child, "SG READY");

    let sg = ServiceGroup::connect(config(&url)).await.unwrap();
    assert!(
        sg.is_up("compute", "child-host").await.unwrap(),
        "the other process's member is up here"
    );
    let me = sg.join("compute", "parent-host").await.unwrap();

    // A third process lists both.
    let mut lister = spawn_helper("list", &url, "compute", "");
    let lines = read_until(&mut lister, "SG DONE");
    assert!(lister.wait().unwrap().success());
    assert!(
        lines.contains(&"SG MEMBER child-host up".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"SG MEMBER parent-host up".to_owned()),
        "{lines:?}"
    );

    // The child's heartbeats reach this process: its update time moves on.
    let first = sg
        .get_updated_time("compute", "child-host")
        .await
        .unwrap()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = sg
            .get_updated_time("compute", "child-host")
            .await
            .unwrap()
            .unwrap();
        if now > first {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat from the other process within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sg.is_up("compute", "child-host").await.unwrap());
    drop(child.stdin.take());
    read_until(&mut child, "SG LEFT");
    assert!(child.wait().unwrap().success());
    let err = sg.member("compute", "child-host").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    me.leave().await.unwrap();
}

#[tokio::test]
async fn database_file_is_in_wal_mode() {
    #[derive(diesel::QueryableByName)]
    struct Mode {
        #[diesel(sql_type = diesel::sql_types::Text)]
        journal_mode: String,
    }
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path(), "wal.db");
    DbDriver::connect(&config(&url)).await.unwrap();
    let path = dir.path().join("wal.db");
    let mode = tokio::task::spawn_blocking(move || {
        use diesel::{Connection, RunQueryDsl};
        let mut c = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        diesel::sql_query("PRAGMA journal_mode")
            .get_result::<Mode>(&mut c)
            .unwrap()
            .journal_mode
    })
    .await
    .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn heartbeat_batch_of_ten_thousand_is_one_statement() {
    let dir = tempfile::tempdir().unwrap();
    direct_batch_is_one_statement(&sqlite_url(dir.path(), "batch.db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_with_ten_thousand_members_takes_one_statement_per_tick() {
    let dir = tempfile::tempdir().unwrap();
    let (statements, ticks) =
        handle_ticks_are_one_statement_each(&sqlite_url(dir.path(), "ticks.db")).await;
    assert!(ticks >= 3 && statements == ticks);
}

#[tokio::test]
async fn age_is_measured_on_the_database_clock() {
    let dir = tempfile::tempdir().unwrap();
    age_comes_from_the_database(
        &sqlite_url(dir.path(), "clock.db"),
        "UPDATE servicegroup_members SET last_seen = unixepoch('subsec') - 30",
    )
    .await;
}

#[tokio::test]
async fn url_forms_reach_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forms.db");
    let abs = path.display().to_string();
    let sqlx = format!("sqlite://{abs}");
    let nova = format!("sqlite:///{abs}"); // sqlite:////abs/path (SQLAlchemy)
    let alchemy_driver = format!("sqlite+pysqlite:///{abs}");
    let first = DbDriver::connect(&config(&sqlx)).await.unwrap();
    let key = keys("forms", 1).remove(0);
    register(&first, InstanceId::random(), &key).await;
    for url in [nova, alchemy_driver] {
        let d = DbDriver::connect(&config(&url)).await.unwrap();
        assert_eq!(d.backend(), BackendKind::Sqlite);
        assert_eq!(d.location(), format!("sqlite://{abs}"));
        assert!(d.get(&key).await.unwrap().is_some(), "{url}");
    }
}

#[tokio::test]
async fn missing_directory_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("no/such/dir"), "x.db");
    let err = DbDriver::connect(&config(&url)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("db.url"), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn memory_database_is_private_to_its_driver() {
    let sg = ServiceGroup::connect(config("sqlite::memory:"))
        .await
        .unwrap();
    assert!(!sg.capabilities().shared_between_processes);
    let me = sg.join("g", "m").await.unwrap();
    assert!(sg.is_up("g", "m").await.unwrap());
    assert_eq!(sg.groups().await.unwrap().len(), 1);
    let other = ServiceGroup::connect(config("sqlite::memory:"))
        .await
        .unwrap();
    assert!(
        other.groups().await.unwrap().is_empty(),
        "another memory database is another database"
    );
    me.leave().await.unwrap();
    assert!(sg.members("g").await.unwrap().is_empty());
}

#[tokio::test]
async fn register_keeps_forced_down_and_remove_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let driver = DbDriver::connect(&config(&sqlite_url(dir.path(), "flags.db")))
        .await
        .unwrap();
    let key = keys("g", 1).remove(0);
    let (first, restarted) = (InstanceId::random(), InstanceId::random());
    assert!(
        !driver.set_forced_down(&key, true).await.unwrap(),
        "no such member yet"
    );
    register(&driver, first, &key).await;
    assert!(driver.set_forced_down(&key, true).await.unwrap());
    assert_eq!(register(&driver, restarted, &key).await, 2);
    assert!(
        driver.get(&key).await.unwrap().unwrap().forced_down,
        "a restart keeps the operator's flag"
    );
    assert!(driver.remove(&key, None).await.unwrap());
    assert!(!driver.remove(&key, None).await.unwrap());
    assert_eq!(
        beat(&driver, restarted, std::slice::from_ref(&key))
            .await
            .missing,
        vec![(restarted, key.clone())]
    );
    assert_eq!(register(&driver, restarted, &key).await, 1, "a new record");
    assert!(
        !driver.get(&key).await.unwrap().unwrap().forced_down,
        "a new record starts not forced down"
    );
}

#[tokio::test]
async fn takeover_bumps_the_epoch_and_fences_the_old_holder() {
    let dir = tempfile::tempdir().unwrap();
    identity::takeover_bumps_the_epoch_and_fences_the_old_holder(&sqlite_url(dir.path(), "t.db"))
        .await;
}

#[tokio::test]
async fn refused_registrations_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    identity::refused_registrations_change_nothing(&sqlite_url(dir.path(), "c.db")).await;
}

#[tokio::test]
async fn leave_by_another_instance_leaves_the_row() {
    let dir = tempfile::tempdir().unwrap();
    identity::leave_by_another_instance_leaves_the_row(&sqlite_url(dir.path(), "l.db")).await;
}

#[tokio::test]
async fn metadata_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    identity::metadata_round_trips(&sqlite_url(dir.path(), "m.db")).await;
}

#[tokio::test]
async fn id_cache_follows_removed_and_recreated_rows() {
    let dir = tempfile::tempdir().unwrap();
    identity::id_cache_follows_removed_and_recreated_rows(&sqlite_url(dir.path(), "i.db")).await;
}

#[tokio::test]
async fn legacy_rows_read_as_the_unknown_holder() {
    let dir = tempfile::tempdir().unwrap();
    identity::legacy_rows_read_as_the_unknown_holder(
        &sqlite_url(dir.path(), "legacy.db"),
        "INSERT INTO servicegroup_members (group_id, member_id, last_seen, forced_down) \
         VALUES ('legacy', 'old-host', unixepoch('subsec'), 1)",
    )
    .await;
}

#[tokio::test]
async fn undecodable_rows_are_backend_errors() {
    let dir = tempfile::tempdir().unwrap();
    identity::undecodable_rows_are_backend_errors(
        &sqlite_url(dir.path(), "bad.db"),
        "UPDATE servicegroup_members SET metadata = '{\"Bad Key\": \"x\"}' WHERE member_id = 'm00000'",
        Some("UPDATE servicegroup_members SET holder = x'010203' WHERE member_id = 'm00000'"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_conditional_claims_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    identity::racing_conditional_claims_have_one_winner(&sqlite_url(dir.path(), "race.db")).await;
}
