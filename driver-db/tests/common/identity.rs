//! The identity contract (servicegroup_core::driver) on a real database, one function
//! per rule, run by each backend's test file on a database of its own: takeover and
//! fencing, conditional registrations, leave by holder, metadata, the id cache,
//! rows written before the holder columns existed, rows that cannot be decoded, and
//! two processes racing for one member.

use std::sync::Arc;
use std::time::Duration;

use servicegroup_core::{
    Beats, Condition, Driver, ErrorKind, Holder, HolderUpdate, InstanceId, MemberKey, MemberRecord,
    Metadata, Registered, Registration, Superseded,
};
use servicegroup_driver_db::DbDriver;

use super::{beat, config, keys, register, register_all, registration};

/// Long enough for the database clock to move visibly between two writes.
const TICK: Duration = Duration::from_millis(20);

/// A registration of `key` by `instance` under `condition`, with `metadata`.
fn claim(
    key: &MemberKey,
    instance: InstanceId,
    metadata: &Metadata,
    condition: Condition,
) -> Registration {
    Registration {
        metadata: metadata.clone(),
        condition,
        ..registration(key, instance)
    }
}

async fn record(driver: &DbDriver, key: &MemberKey) -> MemberRecord {
    driver
        .get(key)
        .await
        .expect("get")
        .unwrap_or_else(|| panic!("{key} has a record"))
}

/// The stored facts of a record, without its age (which moves with the clock).
fn stored(
    r: &MemberRecord,
) -> (
    Holder,
    Option<servicegroup_core::chrono::DateTime<servicegroup_core::chrono::Utc>>,
    Metadata,
    bool,
    Option<servicegroup_core::chrono::DateTime<servicegroup_core::chrono::Utc>>,
) {
    (
        r.holder,
        r.holder_since,
        r.metadata.clone(),
        r.forced_down,
        r.last_heartbeat,
    )
}

fn md(pairs: &[(&str, &str)]) -> Metadata {
    Metadata::from_pairs(pairs.iter().copied()).expect("valid metadata")
}

/// The epoch rule and fencing: a new record is epoch 1; the holder registering again
/// keeps epoch and `holder_since` (metadata replaced, forced-down kept); another
/// instance takes it over with epoch + 1 and a new `holder_since`; the old holder's
/// heartbeat then leaves the row untouched and reports it superseded, while its
/// other members are refreshed; two parts of one batch naming one key refresh it for
/// the holder only.
pub async fn takeover_bumps_the_epoch_and_fences_the_old_holder(url: &str) {
    let config = config(url);
    let a = DbDriver::connect(&config).await.expect("connect a");
    let b = DbDriver::connect(&config).await.expect("connect b");
    let (ia, ib) = (InstanceId::random(), InstanceId::random());
    let keys = keys("takeover", 3);
    let key = &keys[0];

    assert_eq!(register(&a, ia, key).await, 1, "a new record");
    let first = record(&a, key).await;
    assert_eq!(first.holder, Holder::new(ia, 1));
    let since = first
        .holder_since
        .expect("a new record has its holder's start");
    assert!(first.metadata.is_empty());

    tokio::time::sleep(TICK).await;
    let zone = md(&[("zone", "eu-1")]);
    assert_eq!(
        a.register(&claim(key, ia, &zone, Condition::Always))
            .await
            .unwrap(),
        Registered::Stored { epoch: 1 },
        "the holder registering again keeps the epoch"
    );
    let again = record(&a, key).await;
    assert_eq!(again.holder, Holder::new(ia, 1));
    assert_eq!(again.holder_since, Some(since), "same holder, same start");
    assert_eq!(again.metadata, zone, "metadata replaced");
    assert!(
        again.last_heartbeat > first.last_heartbeat,
        "a registration stores a heartbeat"
    );
    assert!(a.set_forced_down(key, true).await.unwrap());
    register_all(&a, ia, &keys[1..]).await;

    tokio::time::sleep(TICK).await;
    assert_eq!(register(&b, ib, key).await, 2, "a takeover adds one");
    let taken = record(&b, key).await;
    assert_eq!(taken.holder, Holder::new(ib, 2));
    assert!(
        taken.holder_since > Some(since),
        "a new holder has a new start: {:?} after {since}",
        taken.holder_since
    );
    assert!(taken.metadata.is_empty(), "the new holder's metadata");
    assert!(taken.forced_down, "a takeover keeps the operator's flag");

    // A's next tick (its id cache still names the row): fenced for `key`, and its
    // other members refreshed as usual.
    let others_before = record(&a, &keys[1]).await;
    tokio::time::sleep(TICK).await;
    let report = beat(&a, ia, &keys).await;
    assert!(report.missing.is_empty(), "{report:?}");
    assert_eq!(
        report.superseded,
        vec![Superseded {
            key: key.clone(),
            instance: ia,
            holder: Holder::new(ib, 2),
        }]
    );
    let fenced = record(&a, key).await;
    assert_eq!(
        fenced.last_heartbeat, taken.last_heartbeat,
        "a fenced heartbeat leaves last_seen as it was"
    );
    assert_eq!(stored(&fenced), stored(&taken));
    assert!(record(&a, &keys[1]).await.last_heartbeat > others_before.last_heartbeat);

    // The holder's heartbeat refreshes it.
    let report = beat(&b, ib, &keys[..1]).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    let refreshed = record(&b, key).await;
    assert!(refreshed.last_heartbeat > taken.last_heartbeat);

    // One batch, two parts naming `key` (two handles of one process): the holder's
    // part refreshes it, the other is superseded.
    tokio::time::sleep(TICK).await;
    let report = a
        .heartbeat(&[
            Beats {
                instance: ia,
                keys: &keys,
            },
            Beats {
                instance: ib,
                keys: &keys[..1],
            },
        ])
        .await
        .unwrap();
    assert!(report.missing.is_empty(), "{report:?}");
    assert_eq!(
        report.superseded,
        vec![Superseded {
            key: key.clone(),
            instance: ia,
            holder: Holder::new(ib, 2),
        }]
    );
    assert!(record(&a, key).await.last_heartbeat > refreshed.last_heartbeat);

    // A takes it back: epoch 3, and now B is fenced.
    assert_eq!(register(&a, ia, key).await, 3);
    let report = beat(&b, ib, &keys[..1]).await;
    assert_eq!(
        report.superseded,
        vec![Superseded {
            key: key.clone(),
            instance: ib,
            holder: Holder::new(ia, 3),
        }]
    );
}

/// Conditions: `Absent` and `HeldAs` that do not hold are refused with the holder
/// found and change nothing at all; those that hold apply; a batch mixing them gets
/// one outcome each, in order.
pub async fn refused_registrations_change_nothing(url: &str) {
    let config = config(url);
    let a = DbDriver::connect(&config).await.expect("connect a");
    let b = DbDriver::connect(&config).await.expect("connect b");
    let (ia, ib) = (InstanceId::random(), InstanceId::random());
    let keys = keys("cond", 3);
    let (k0, k1, k2) = (&keys[0], &keys[1], &keys[2]);
    let primary = md(&[("role", "primary")]);
    let intruder = md(&[("role", "intruder")]);

    assert_eq!(
        a.register(&claim(k0, ia, &primary, Condition::Always))
            .await
            .unwrap(),
        Registered::Stored { epoch: 1 }
    );
    assert!(a.set_forced_down(k0, true).await.unwrap());
    let before = record(&b, k0).await;
    tokio::time::sleep(TICK).await;
    for (condition, what) in [
        (Condition::Absent, "absent"),
        (
            Condition::HeldAs(Holder::new(ia, 2)),
            "held as a later epoch",
        ),
        (
            Condition::HeldAs(Holder::new(ib, 1)),
            "held by another instance",
        ),
        (
            Condition::HeldAs(Holder::UNKNOWN),
            "held by the unknown holder",
        ),
    ] {
        assert_eq!(
            b.register(&claim(k0, ib, &intruder, condition))
                .await
                .unwrap(),
            Registered::Refused {
                found: Some(Holder::new(ia, 1))
            },
            "{what}"
        );
        let after = record(&b, k0).await;
        assert_eq!(
            stored(&after),
            stored(&before),
            "a refused registration ({what}) changes nothing, last_seen included"
        );
    }
    assert_eq!(
        b.register(&claim(
            k1,
            ib,
            &intruder,
            Condition::HeldAs(Holder::new(ia, 1))
        ))
        .await
        .unwrap(),
        Registered::Refused { found: None },
        "held as, but there is no record"
    );
    assert!(b.get(k1).await.unwrap().is_none(), "nothing was created");

    // Conditions that hold.
    assert_eq!(
        b.register(&claim(
            k0,
            ib,
            &intruder,
            Condition::HeldAs(Holder::new(ia, 1))
        ))
        .await
        .unwrap(),
        Registered::Stored { epoch: 2 }
    );
    let taken = record(&b, k0).await;
    assert_eq!(taken.holder, Holder::new(ib, 2));
    assert_eq!(taken.metadata, intruder);
    assert!(taken.forced_down);
    assert!(taken.last_heartbeat > before.last_heartbeat);
    assert_eq!(
        b.register(&claim(k1, ib, &Metadata::new(), Condition::Absent))
            .await
            .unwrap(),
        Registered::Stored { epoch: 1 }
    );

    // One batch (sorted by key), one outcome per registration, in order.
    let batch = [
        claim(k0, ia, &primary, Condition::Absent),
        claim(k1, ia, &primary, Condition::Always),
        claim(k2, ia, &primary, Condition::HeldAs(Holder::new(ia, 1))),
    ];
    assert_eq!(
        a.register_many(&batch).await.unwrap(),
        vec![
            Registered::Refused {
                found: Some(Holder::new(ib, 2))
            },
            Registered::Stored { epoch: 2 },
            Registered::Refused { found: None },
        ]
    );
    assert_eq!(record(&a, k1).await.metadata, primary);
    assert!(a.get(k2).await.unwrap().is_none());
    // The stored one is cached: its heartbeat is one statement.
    let statements = a.statistics().statements;
    let report = beat(&a, ia, std::slice::from_ref(k1)).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert_eq!(a.statistics().statements - statements, 1);
}

/// Leave deletes only one's own record; an operator's delete any.
pub async fn leave_by_another_instance_leaves_the_row(url: &str) {
    let a = DbDriver::connect(&config(url)).await.expect("connect");
    let (ia, ib) = (InstanceId::random(), InstanceId::random());
    let keys = keys("leave", 2);
    register_all(&a, ia, &keys).await;

    assert!(
        !a.remove(&keys[0], Some(ib)).await.unwrap(),
        "another instance's leave deletes nothing"
    );
    assert_eq!(record(&a, &keys[0]).await.holder, Holder::new(ia, 1));
    let statements = a.statistics().statements;
    let report = beat(&a, ia, &keys[..1]).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        a.statistics().statements - statements,
        1,
        "the cached id is still right"
    );

    assert!(a.remove(&keys[0], Some(ia)).await.unwrap());
    assert!(a.get(&keys[0]).await.unwrap().is_none());
    assert!(!a.remove(&keys[0], Some(ia)).await.unwrap());
    assert_eq!(
        beat(&a, ia, &keys[..1]).await.missing,
        vec![(ia, keys[0].clone())]
    );

    assert!(
        a.remove(&keys[1], None).await.unwrap(),
        "an operator's delete"
    );
    assert!(a.get(&keys[1]).await.unwrap().is_none());
}

/// Metadata set at registration and by `set_metadata` reads back exactly (unicode,
/// quotes, control characters, SQL-looking text, values of the 1,024-byte maximum),
/// in `get` and in `list`; only the holder may replace it, and nothing else moves.
pub async fn metadata_round_trips(url: &str) {
    let a = DbDriver::connect(&config(url)).await.expect("connect");
    let (ia, ib) = (InstanceId::random(), InstanceId::random());
    let keys = keys("meta", 2);
    let key = &keys[0];
    let x1024 = "x".repeat(1024);
    let u1024 = "ü".repeat(512);
    let e1024 = "😀".repeat(256);
    assert_eq!(u1024.len(), 1024);
    assert_eq!(e1024.len(), 1024);
    let first = md(&[
        ("address", "10.0.0.1:8774"),
        (
            "note",
            "héllo \"wörld\" \n\t✓ 日本語 \\ '; DROP TABLE servicegroup_members; --",
        ),
        ("big", &x1024),
        ("emoji", &e1024),
    ]);
    assert_eq!(
        a.register(&claim(key, ia, &first, Condition::Always))
            .await
            .unwrap(),
        Registered::Stored { epoch: 1 }
    );
    assert_eq!(record(&a, key).await.metadata, first);
    let listed = a.list(&key.group).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].metadata, first);

    let before = record(&a, key).await;
    let second = md(&[("version", "29.1.0"), ("umlauts", &u1024), ("zone", "eu/1")]);
    tokio::time::sleep(TICK).await;
    assert_eq!(
        a.set_metadata(key, ia, &second).await.unwrap(),
        HolderUpdate::Stored
    );
    let after = record(&a, key).await;
    assert_eq!(after.metadata, second);
    assert_eq!(after.holder, before.holder, "set_metadata keeps the holder");
    assert_eq!(after.holder_since, before.holder_since);
    assert_eq!(
        after.last_heartbeat, before.last_heartbeat,
        "set_metadata is not a heartbeat"
    );
    assert_eq!(a.list(&key.group).await.unwrap()[0].metadata, second);

    assert_eq!(
        a.set_metadata(key, ib, &first).await.unwrap(),
        HolderUpdate::NotHeld(Holder::new(ia, 1))
    );
    assert_eq!(record(&a, key).await.metadata, second, "unchanged");
    assert_eq!(
        a.set_metadata(&keys[1], ia, &first).await.unwrap(),
        HolderUpdate::Missing
    );
    assert!(a.get(&keys[1]).await.unwrap().is_none());
    assert_eq!(
        a.set_metadata(key, ia, &Metadata::new()).await.unwrap(),
        HolderUpdate::Stored
    );
    assert!(record(&a, key).await.metadata.is_empty());
}

/// The id cache follows rows that are removed and created again: the stale id reads
/// as missing, the new row (held by another instance) as superseded after a look-up
/// by name, and once the instance registers again one statement per tick.
pub async fn id_cache_follows_removed_and_recreated_rows(url: &str) {
    let config = config(url);
    let a = DbDriver::connect(&config).await.expect("connect a");
    let b = DbDriver::connect(&config).await.expect("connect b");
    let (ia, ib) = (InstanceId::random(), InstanceId::random());
    let key = keys("cache", 1).remove(0);
    let one = std::slice::from_ref(&key);
    register(&a, ia, &key).await;

    assert!(b.remove(&key, None).await.unwrap());
    assert_eq!(register(&b, ib, &key).await, 1, "a new row");
    assert_eq!(
        beat(&a, ia, one).await.missing,
        vec![(ia, key.clone())],
        "the cached id is gone"
    );
    // Core registers a missing member again only if it is still absent.
    assert_eq!(
        a.register(&claim(&key, ia, &Metadata::new(), Condition::Absent))
            .await
            .unwrap(),
        Registered::Refused {
            found: Some(Holder::new(ib, 1))
        }
    );
    let report = beat(&a, ia, one).await;
    assert!(report.missing.is_empty(), "{report:?}");
    assert_eq!(
        report.superseded,
        vec![Superseded {
            key: key.clone(),
            instance: ia,
            holder: Holder::new(ib, 1),
        }]
    );

    assert!(b.remove(&key, Some(ib)).await.unwrap());
    assert_eq!(register(&a, ia, &key).await, 1);
    let statements = a.statistics().statements;
    let report = beat(&a, ia, one).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert_eq!(a.statistics().statements - statements, 1);
}

/// Applies the migrations shipped before the holder columns existed (those dated
/// before 2026-12-01) to the empty database `url` names, as an older release of the
/// driver did, diesel's bookkeeping included.
pub async fn apply_pre_holder_migrations(url: &str) {
    use diesel_migrations::{FileBasedMigrations, MigrationHarness};
    let backend = if url.starts_with("postgres") {
        "postgres"
    } else if url.starts_with("mysql") {
        "mysql"
    } else {
        "sqlite"
    };
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let old = tempfile::tempdir().expect("a temporary directory");
    for entry in std::fs::read_dir(&shipped).expect("the shipped migrations") {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && name.as_str() < "2026-12-01" {
            let to = old.path().join(&name);
            std::fs::create_dir(&to).unwrap();
            for file in ["up.sql", "down.sql"] {
                std::fs::copy(entry.path().join(file), to.join(file)).unwrap();
            }
        }
    }
    let url = url.to_owned();
    let applied = tokio::task::spawn_blocking(move || -> usize {
        let migrations = FileBasedMigrations::from_path(old.path()).expect("old migrations");
        match backend {
            "postgres" => {
                use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
                use diesel_async::AsyncPgConnection;
                let mut c =
                    <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(
                        &url,
                    )
                    .expect("connect");
                c.run_pending_migrations(migrations).expect("migrate").len()
            }
            #[cfg(feature = "mysql")]
            "mysql" => {
                use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
                use diesel_async::AsyncMysqlConnection;
                let sep = if url.contains('?') { '&' } else { '?' };
                let mut c =
                    <AsyncConnectionWrapper<AsyncMysqlConnection> as diesel::Connection>::establish(
                        &format!("{url}{sep}prefer_socket=false"),
                    )
                    .expect("connect");
                c.run_pending_migrations(migrations).expect("migrate").len()
            }
            _ => {
                let path = url.strip_prefix("sqlite://").expect("a sqlite:// URL");
                let mut c = <diesel::SqliteConnection as diesel::Connection>::establish(path)
                    .expect("open the SQLite file");
                c.run_pending_migrations(migrations).expect("migrate").len()
            }
        }
    })
    .await
    .expect("the migration task");
    assert!(applied >= 1, "no pre-holder migration applied");
}

/// A row written before the holder columns existed (by a release whose schema had
/// none) reads, once the driver migrated the database, as held by the unknown holder
/// (nil instance, epoch 0) with no `holder_since` and no metadata, its flag kept; it
/// is nobody's to heartbeat, and a registration takes it over with epoch 1.
///
/// `insert_old_row` inserts `legacy/old-host` (forced down) with the old columns only.
pub async fn legacy_rows_read_as_the_unknown_holder(url: &str, insert_old_row: &str) {
    apply_pre_holder_migrations(url).await;
    assert_eq!(super::raw_exec(url, insert_old_row).await, 1);
    let a = DbDriver::connect(&config(url))
        .await
        .expect("connect migrates");
    let key = MemberKey::new(
        servicegroup_core::GroupId::new("legacy").unwrap(),
        servicegroup_core::MemberId::new("old-host").unwrap(),
    );
    let old = record(&a, &key).await;
    assert_eq!(old.holder, Holder::UNKNOWN);
    assert_eq!(old.holder_since, None);
    assert!(old.metadata.is_empty());
    assert!(old.forced_down, "the flag survives the migration");
    let servicegroup_core::Freshness::Age(age) = old.freshness else {
        panic!("db records carry ages: {old:?}")
    };
    assert!(age < Duration::from_secs(30), "{age:?}");
    let listed = a.list(&key.group).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (&listed[0].key, stored(&listed[0])),
        (&old.key, stored(&old))
    );

    let ia = InstanceId::random();
    let one = std::slice::from_ref(&key);
    let report = beat(&a, ia, one).await;
    assert_eq!(
        report.superseded,
        vec![Superseded {
            key: key.clone(),
            instance: ia,
            holder: Holder::UNKNOWN,
        }],
        "a legacy row is nobody's to heartbeat"
    );
    assert_eq!(register(&a, ia, &key).await, 1);
    let taken = record(&a, &key).await;
    assert_eq!(taken.holder, Holder::new(ia, 1));
    assert!(taken.holder_since.is_some());
    assert!(taken.forced_down);
    let report = beat(&a, ia, one).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
}

/// A row whose metadata (or, where the column allows it, holder) cannot be decoded
/// is a `Backend` error naming the database and the member on `get` and `list`,
/// never a panic; a heartbeat batch containing it still refreshes the others and
/// fences that one. `bad_metadata` / `bad_holder` are statements breaking row
/// `bad/m00000` (`bad_holder` is `None` for a `BINARY(16)` column, which pads).
pub async fn undecodable_rows_are_backend_errors(
    url: &str,
    bad_metadata: &str,
    bad_holder: Option<&str>,
) {
    let a = DbDriver::connect(&config(url)).await.expect("connect");
    let ia = InstanceId::random();
    let keys = keys("bad", 2);
    register_all(&a, ia, &keys).await;

    assert_eq!(super::raw_exec(url, bad_metadata).await, 1);
    let err = a.get(&keys[0]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    let text = err.to_string();
    assert!(text.contains(a.location()), "{text}");
    assert!(text.contains("bad/m00000"), "{text}");
    assert!(text.contains("metadata"), "{text}");
    let err = a.list(&keys[0].group).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(err.to_string().contains("bad/m00000"), "{err}");
    assert!(
        a.get(&keys[1]).await.unwrap().is_some(),
        "the other row reads"
    );

    let Some(bad_holder) = bad_holder else {
        return;
    };
    assert_eq!(
        super::raw_exec(
            url,
            "UPDATE servicegroup_members SET metadata = '{}' WHERE member_id = 'm00000'"
        )
        .await,
        1
    );
    assert_eq!(super::raw_exec(url, bad_holder).await, 1);
    let err = a.get(&keys[0]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(a.location()) && text.contains("bad/m00000"),
        "{text}"
    );
    assert!(text.contains("3 bytes long"), "{text}");
    let before = a.get(&keys[1]).await.unwrap().unwrap();
    tokio::time::sleep(TICK).await;
    let report = beat(&a, ia, &keys).await;
    assert!(report.missing.is_empty(), "{report:?}");
    assert_eq!(report.superseded.len(), 1, "{report:?}");
    assert_eq!(report.superseded[0].key, keys[0]);
    assert_eq!(report.superseded[0].holder.instance, InstanceId::NIL);
    assert!(a.get(&keys[1]).await.unwrap().unwrap().last_heartbeat > before.last_heartbeat);
}

/// Two processes (two drivers, two pools) claiming one member at the same moment
/// with a condition: exactly one is stored, the other refused with the winner as the
/// holder found, over many rounds: claims of an absent member (`Absent`) and of a
/// member held by a third instance (`HeldAs`, the exclusive join of a down member).
pub async fn racing_conditional_claims_have_one_winner(url: &str) {
    const ROUNDS: usize = 20;
    let config = config(url);
    let a = Arc::new(DbDriver::connect(&config).await.expect("connect a"));
    let b = Arc::new(DbDriver::connect(&config).await.expect("connect b"));
    let (ia, ib, third) = (
        InstanceId::random(),
        InstanceId::random(),
        InstanceId::random(),
    );
    let keys = keys("race", ROUNDS);

    async fn race(
        a: &Arc<DbDriver>,
        b: &Arc<DbDriver>,
        (ia, ib): (InstanceId, InstanceId),
        key: &MemberKey,
        condition: Condition,
    ) -> (Registered, Registered) {
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let spawn = |driver: Arc<DbDriver>, instance: InstanceId| {
            let registration = claim(key, instance, &Metadata::new(), condition);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                driver.register(&registration).await
            })
        };
        let (ta, tb) = (spawn(a.clone(), ia), spawn(b.clone(), ib));
        (
            ta.await.unwrap().expect("claim a"),
            tb.await.unwrap().expect("claim b"),
        )
    }

    /// The winner's instance, checking that exactly one won with `epoch` and the
    /// other saw it.
    fn one_winner(
        what: &str,
        (ia, ib): (InstanceId, InstanceId),
        outcomes: (Registered, Registered),
        epoch: u64,
    ) -> InstanceId {
        match outcomes {
            (Registered::Stored { epoch: e }, Registered::Refused { found }) => {
                assert_eq!(e, epoch, "{what}");
                assert_eq!(found, Some(Holder::new(ia, epoch)), "{what}");
                ia
            }
            (Registered::Refused { found }, Registered::Stored { epoch: e }) => {
                assert_eq!(e, epoch, "{what}");
                assert_eq!(found, Some(Holder::new(ib, epoch)), "{what}");
                ib
            }
            other => panic!("{what}: exactly one claim must be stored, got {other:?}"),
        }
    }

    let mut wins = [0usize; 2];
    for (round, key) in keys.iter().enumerate() {
        let outcomes = race(&a, &b, (ia, ib), key, Condition::Absent).await;
        let winner = one_winner(&format!("round {round}, absent"), (ia, ib), outcomes, 1);
        wins[usize::from(winner == ib)] += 1;
        assert_eq!(record(&a, key).await.holder, Holder::new(winner, 1));

        // A third instance holds it; both claim it as held by that one.
        assert_eq!(register(&a, third, key).await, 2);
        let held = Holder::new(third, 2);
        let outcomes = race(&a, &b, (ia, ib), key, Condition::HeldAs(held)).await;
        let winner = one_winner(&format!("round {round}, held as"), (ia, ib), outcomes, 3);
        assert_eq!(record(&b, key).await.holder, Holder::new(winner, 3));
    }
    eprintln!("absent claims won: a {} b {}", wins[0], wins[1]);
}
