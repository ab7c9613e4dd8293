//! Who holds a member, against real memcached, at the driver level: takeover and
//! fencing, conditional registrations, holder-only leave and metadata, races of
//! two driver objects (two processes), and memcached losing its data.
//!
//! The raw meta client reads the keys behind the driver's back to show what a
//! call did or did not change (values and CAS tokens).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use memcache::exp::{Meta, MetaClient};
use servicegroup_core::{
    Condition, Driver, ErrorKind, Freshness, Holder, HolderUpdate, InstanceId, MemberKey, Metadata,
    Registered,
};
use servicegroup_driver_mc::keys::Keys;
use servicegroup_driver_mc::{heartbeat_exchanges, McDriver};

fn key(g: &str, m: &str) -> MemberKey {
    MemberKey::new(g.parse().unwrap(), m.parse().unwrap())
}

/// A driver on `servers` and a raw client on the server `key` is placed on.
struct Setup {
    config: servicegroup_core::Config,
    driver: McDriver,
}

impl Setup {
    async fn new(servers: &[String], tag: &str) -> Self {
        let config = config(servers, tag);
        let driver = McDriver::connect(&config).await.unwrap();
        Self { config, driver }
    }

    /// Another driver object on the same servers and prefix: another process.
    async fn other_process(&self) -> McDriver {
        McDriver::connect(&self.config).await.unwrap()
    }

    fn keys(&self) -> Keys {
        Keys::new(&mc(&self.config).prefix)
    }

    fn raw(&self, key: &MemberKey) -> MetaClient {
        let server = self.driver.backend().unwrap().server_of(key);
        MetaClient::connect(mc(&self.config).servers[server].as_str()).unwrap()
    }

    /// (value, CAS) of the live record and of the durable record of `key`.
    fn snapshot(&self, key: &MemberKey) -> [Option<(Vec<u8>, u64)>; 2] {
        let raw = self.raw(key);
        let (g, m) = (
            key.group.as_str().as_bytes(),
            key.member.as_str().as_bytes(),
        );
        let keys = self.keys();
        [keys.live(g, m), keys.durable(g, m)].map(|name| {
            let got = raw.get(&name).meta(Meta::NONE.cas()).send().unwrap();
            got.hit()
                .then(|| (got.value.unwrap_or_default(), got.item.cas.unwrap()))
        })
    }

    /// The remaining TTL of the live record of `key` (memcached's clock).
    fn remaining_ttl(&self, key: &MemberKey) -> Option<i64> {
        let name = self.keys().live(
            key.group.as_str().as_bytes(),
            key.member.as_str().as_bytes(),
        );
        let got = self
            .raw(key)
            .get(&name)
            .meta(Meta::NONE.ttl())
            .without_value()
            .send()
            .unwrap();
        got.hit().then(|| got.item.ttl.unwrap())
    }
}

fn stored(outcome: Registered) -> u64 {
    match outcome {
        Registered::Stored { epoch } => epoch,
        Registered::Refused { found } => panic!("refused (found {found:?})"),
    }
}

async fn register_as(
    driver: &McDriver,
    key: &MemberKey,
    instance: InstanceId,
    condition: Condition,
    metadata: Metadata,
) -> Registered {
    let mut r = registration(key, instance, condition);
    r.metadata = metadata;
    driver.register(&r).await.unwrap()
}

/// Takeover by another process bumps the epoch and moves `holder_since`; the old
/// holder's next heartbeat is reported superseded and writes nothing (both
/// records keep value and CAS); the new holder's heartbeats go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_bumps_epoch_and_fences_the_old_holder() {
    let s = Setup::new(&shared_servers()[..1], "takeover").await;
    let k = key("compute", "host-1");
    let (a, b) = (InstanceId::random(), InstanceId::random());
    let epoch = stored(register_as(&s.driver, &k, a, Condition::Always, Metadata::new()).await);
    assert_eq!(epoch, 1);
    let report = beat(&s.driver, a, std::slice::from_ref(&k)).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    let first = s.driver.get(&k).await.unwrap().unwrap();
    assert_eq!(first.holder, Holder::new(a, 1));
    assert_eq!(first.freshness, Freshness::Present);

    // The same instance registering again keeps epoch and holder_since.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        stored(register_as(&s.driver, &k, a, Condition::Always, Metadata::new()).await),
        1
    );
    let again = s.driver.get(&k).await.unwrap().unwrap();
    assert_eq!(again.holder_since, first.holder_since);

    // Another process takes it over.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let other = s.other_process().await;
    assert_eq!(
        stored(register_as(&other, &k, b, Condition::Always, Metadata::new()).await),
        2
    );
    let taken = s.driver.get(&k).await.unwrap().unwrap();
    assert_eq!(taken.holder, Holder::new(b, 2));
    assert!(taken.holder_since > first.holder_since, "{taken:?}");
    // The new holder's first heartbeat also reads the index bucket in full (this
    // driver object never read it before); later ones need one exchange.
    let report = beat(&other, b, std::slice::from_ref(&k)).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    let before = s.snapshot(&k);

    // The old holder heartbeats: superseded, nothing written.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let ops = heartbeat_exchanges(&mc(&s.config).prefix);
    let report = beat(&s.driver, a, std::slice::from_ref(&k)).await;
    assert!(report.missing.is_empty(), "{report:?}");
    assert_eq!(report.superseded.len(), 1, "{report:?}");
    assert_eq!(report.superseded[0].key, k);
    assert_eq!(report.superseded[0].instance, a);
    assert_eq!(report.superseded[0].holder, Holder::new(b, 2));
    assert_eq!(
        s.snapshot(&k),
        before,
        "the superseded heartbeat changed a key"
    );
    // The boot check, then the second look costs one more exchange, for this key
    // only.
    assert_eq!(heartbeat_exchanges(&mc(&s.config).prefix) - ops, 3);
    // And again (the old holder no longer remembers the member: one read, no write).
    let report = beat(&s.driver, a, std::slice::from_ref(&k)).await;
    assert_eq!(report.superseded.len(), 1, "{report:?}");
    assert_eq!(
        s.snapshot(&k),
        before,
        "the superseded heartbeat changed a key"
    );

    // The new holder's heartbeats refresh it: the boot check, then one exchange.
    let ops = heartbeat_exchanges(&mc(&s.config).prefix);
    let report = beat(&other, b, std::slice::from_ref(&k)).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert_eq!(heartbeat_exchanges(&mc(&s.config).prefix) - ops, 2);
    let after = s.snapshot(&k);
    assert_ne!(after[0], before[0], "the holder's heartbeat was not stored");
    assert_eq!(
        after[1], before[1],
        "a heartbeat rewrote the durable record"
    );

    // Two handles of one process in one batch (one driver object): only the
    // holder's heartbeat counts.
    let batch = [
        servicegroup_core::Beats {
            instance: a,
            keys: std::slice::from_ref(&k),
        },
        servicegroup_core::Beats {
            instance: b,
            keys: std::slice::from_ref(&k),
        },
    ];
    let report = other.heartbeat(&batch).await.unwrap();
    assert!(report.missing.is_empty(), "{report:?}");
    assert_eq!(report.superseded.len(), 1, "{report:?}");
    assert_eq!(report.superseded[0].instance, a);

    // Taking it back: epoch 3.
    assert_eq!(
        stored(register_as(&s.driver, &k, a, Condition::Always, Metadata::new()).await),
        3
    );
    let report = beat(&other, b, std::slice::from_ref(&k)).await;
    assert_eq!(report.superseded.len(), 1, "{report:?}");
    assert_eq!(report.superseded[0].holder, Holder::new(a, 3));
}

/// A heartbeat from a process that did not register the member (a new driver
/// object: nothing remembered) works when its instance holds the record, and is
/// superseded otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_remembers_nothing_checks_the_record() {
    let s = Setup::new(&shared_servers(), "cold").await;
    let keys: Vec<MemberKey> = (0..50)
        .map(|i| key("compute", &format!("h{i:02}")))
        .collect();
    let a = InstanceId::random();
    register_all(&s.driver, &keys, a).await;
    let cold = s.other_process().await;
    let before = heartbeat_exchanges(&mc(&s.config).prefix);
    let report = beat(&cold, a, &keys).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    // Three servers: the boot token read by each session, a read exchange
    // and a write exchange each, and a full read of the index buckets this driver
    // object never saw.
    assert_eq!(heartbeat_exchanges(&mc(&s.config).prefix) - before, 12);
    // Now it remembers them: the boot check and one exchange per server.
    let before = heartbeat_exchanges(&mc(&s.config).prefix);
    let report = beat(&cold, a, &keys).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert_eq!(heartbeat_exchanges(&mc(&s.config).prefix) - before, 6);
    // The driver that registered them finds its CAS tokens stale (the other
    // wrote the live records): one second look, then the boot check and one
    // exchange again.
    let report = beat(&s.driver, a, &keys).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    let before = heartbeat_exchanges(&mc(&s.config).prefix);
    beat(&s.driver, a, &keys).await;
    assert_eq!(heartbeat_exchanges(&mc(&s.config).prefix) - before, 6);

    let stranger = InstanceId::random();
    let report = beat(&cold, stranger, &keys).await;
    assert_eq!(report.superseded.len(), keys.len(), "{report:?}");
    assert!(report
        .superseded
        .iter()
        .all(|x| x.instance == stranger && x.holder == Holder::new(a, 1)));
}

/// A registration whose condition fails is refused with what was found, and
/// changes nothing: both records keep their values and CAS tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_registration_changes_nothing() {
    let s = Setup::new(&shared_servers()[..1], "refused").await;
    let k = key("compute", "host-1");
    let (a, b) = (InstanceId::random(), InstanceId::random());
    let md = Metadata::from_pairs([("address", "10.0.0.1")]).unwrap();
    stored(register_as(&s.driver, &k, a, Condition::Always, md.clone()).await);
    let before = s.snapshot(&k);
    let record = s.driver.get(&k).await.unwrap().unwrap();
    let other = s.other_process().await;
    let other_md = Metadata::from_pairs([("address", "10.9.9.9")]).unwrap();
    for condition in [
        Condition::Absent,
        Condition::HeldAs(Holder::new(a, 2)),
        Condition::HeldAs(Holder::new(b, 1)),
    ] {
        for driver in [&s.driver, &other] {
            let outcome = register_as(driver, &k, b, condition, other_md.clone()).await;
            assert_eq!(
                outcome,
                Registered::Refused {
                    found: Some(Holder::new(a, 1))
                },
                "{condition:?}"
            );
            assert_eq!(s.snapshot(&k), before, "{condition:?} changed a key");
        }
    }
    assert_eq!(s.driver.get(&k).await.unwrap().unwrap(), record);
    // The holder's own heartbeats are unaffected.
    let report = beat(&s.driver, a, std::slice::from_ref(&k)).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );

    // The matching condition takes it.
    assert_eq!(
        stored(
            register_as(
                &other,
                &k,
                b,
                Condition::HeldAs(Holder::new(a, 1)),
                other_md.clone()
            )
            .await
        ),
        2
    );
    let taken = s.driver.get(&k).await.unwrap().unwrap();
    assert_eq!(taken.holder, Holder::new(b, 2));
    assert_eq!(taken.metadata, other_md);

    // No record: HeldAs is refused with nothing found and creates nothing;
    // Absent creates it at epoch 1.
    let fresh = key("compute", "host-2");
    assert_eq!(
        register_as(
            &s.driver,
            &fresh,
            a,
            Condition::HeldAs(Holder::new(b, 1)),
            md.clone()
        )
        .await,
        Registered::Refused { found: None }
    );
    assert_eq!(s.snapshot(&fresh), [None, None]);
    assert!(s.driver.get(&fresh).await.unwrap().is_none());
    assert!(
        s.driver
            .list(&"compute".parse().unwrap())
            .await
            .unwrap()
            .len()
            == 1
    );
    assert_eq!(
        stored(register_as(&s.driver, &fresh, a, Condition::Absent, md).await),
        1
    );
}

/// Leave deletes only the leaving instance's record; an operator's delete any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_by_a_non_holder_leaves_the_record() {
    let s = Setup::new(&shared_servers(), "leave").await;
    let k = key("compute", "host-1");
    let (a, b) = (InstanceId::random(), InstanceId::random());
    stored(register_as(&s.driver, &k, a, Condition::Always, Metadata::new()).await);
    let other = s.other_process().await;
    stored(register_as(&other, &k, b, Condition::Always, Metadata::new()).await);
    let before = s.snapshot(&k);

    assert!(!s.driver.remove(&k, Some(a)).await.unwrap());
    assert_eq!(s.snapshot(&k), before, "a non-holder's leave changed a key");
    let record = s.driver.get(&k).await.unwrap().unwrap();
    assert_eq!(record.holder, Holder::new(b, 2));
    let listed = s.driver.list(&k.group).await.unwrap();
    assert_eq!(listed.len(), 1);
    let report = beat(&other, b, std::slice::from_ref(&k)).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );

    // The holder's leave: gone, listing empty.
    assert!(other.remove(&k, Some(b)).await.unwrap());
    assert_eq!(s.snapshot(&k), [None, None]);
    assert!(s.driver.get(&k).await.unwrap().is_none());
    assert!(s.driver.list(&k.group).await.unwrap().is_empty());
    assert!(!other.remove(&k, Some(b)).await.unwrap());
    let report = beat(&other, b, std::slice::from_ref(&k)).await;
    assert_eq!(report.missing, vec![(b, k.clone())]);

    // An operator's delete removes whoever holds it, forced-down flag included.
    stored(register_as(&s.driver, &k, a, Condition::Always, Metadata::new()).await);
    assert!(s.driver.set_forced_down(&k, true).await.unwrap());
    assert!(other.remove(&k, None).await.unwrap());
    assert!(!other.remove(&k, None).await.unwrap());
    stored(register_as(&s.driver, &k, a, Condition::Always, Metadata::new()).await);
    assert!(!s.driver.get(&k).await.unwrap().unwrap().forced_down);
}

/// Metadata is stored at registration, replaced by `set_metadata` of the holder
/// only, returned exactly by `get` and `list`, and untouched by heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_round_trips_exactly() {
    use servicegroup_core::metadata::{MAX_ENTRIES, MAX_VALUE_LEN};
    let s = Setup::new(&shared_servers(), "metadata").await;
    let unicode = Metadata::from_pairs([
        ("zone", "eu-1/Zürich ✓ 東京 🚀"),
        (
            "note",
            "line one\nline two \"quoted\" \\ back\\slash\t%41 \r\n",
        ),
        ("empty", ""),
    ])
    .unwrap();
    let long = Metadata::from_pairs([
        ("long.ascii", "x".repeat(MAX_VALUE_LEN)),
        ("long/utf-8", "é".repeat(MAX_VALUE_LEN / 2)),
        ("long_4byte", "🚀".repeat(MAX_VALUE_LEN / 4)),
    ])
    .unwrap();
    let many = Metadata::from_pairs(
        (0..MAX_ENTRIES).map(|i| (format!("key-{i:02}"), format!("value {i} ✓"))),
    )
    .unwrap();
    assert_eq!(many.len(), 32);
    let a = InstanceId::random();
    let keys: Vec<MemberKey> = (0..3).map(|i| key("meta", &format!("m{i}"))).collect();
    for (k, md) in keys.iter().zip([&unicode, &long, &many]) {
        stored(register_as(&s.driver, k, a, Condition::Always, md.clone()).await);
        assert_eq!(&s.driver.get(k).await.unwrap().unwrap().metadata, md);
    }
    let mut sorted = keys.clone();
    sorted.sort();
    let report = beat(&s.driver, a, &sorted).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    let listed = s.driver.list(&"meta".parse().unwrap()).await.unwrap();
    for (k, md) in keys.iter().zip([&unicode, &long, &many]) {
        let r = listed.iter().find(|r| &r.key == k).unwrap();
        assert_eq!(&r.metadata, md, "{k}");
        assert_eq!(r.holder, Holder::new(a, 1));
    }

    // Replaced by the holder, keeping the live record's TTL (its age); a
    // heartbeat afterwards needs no second look.
    let k = &keys[0];
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ttl_before = s.remaining_ttl(k).unwrap();
    let before = s.driver.get(k).await.unwrap().unwrap();
    assert_eq!(
        s.driver.set_metadata(k, a, &many).await.unwrap(),
        HolderUpdate::Stored
    );
    let record = s.driver.get(k).await.unwrap().unwrap();
    assert_eq!(record.metadata, many);
    assert_eq!(record.holder, Holder::new(a, 1));
    assert_eq!(record.last_heartbeat, before.last_heartbeat);
    assert!(
        s.remaining_ttl(k).unwrap() <= ttl_before,
        "set_metadata refreshed the live record's TTL"
    );
    let durable = s.snapshot(k)[1].clone().unwrap().0;
    assert!(
        String::from_utf8_lossy(&durable).contains("key-31"),
        "the durable record did not get the new metadata"
    );
    let ops = heartbeat_exchanges(&mc(&s.config).prefix);
    let report = beat(&s.driver, a, std::slice::from_ref(k)).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert_eq!(heartbeat_exchanges(&mc(&s.config).prefix) - ops, 2);
    assert_eq!(s.driver.get(k).await.unwrap().unwrap().metadata, many);

    // Not by another instance, not on a missing member; emptied by the holder.
    let b = InstanceId::random();
    assert_eq!(
        s.driver.set_metadata(k, b, &unicode).await.unwrap(),
        HolderUpdate::NotHeld(Holder::new(a, 1))
    );
    assert_eq!(s.driver.get(k).await.unwrap().unwrap().metadata, many);
    assert_eq!(
        s.driver
            .set_metadata(&key("meta", "nobody"), a, &unicode)
            .await
            .unwrap(),
        HolderUpdate::Missing
    );
    assert_eq!(
        s.driver.set_metadata(k, a, &Metadata::new()).await.unwrap(),
        HolderUpdate::Stored
    );
    assert!(s.driver.get(k).await.unwrap().unwrap().metadata.is_empty());
}

/// Two processes claiming a member with a condition at the same moment: exactly
/// one is stored, the other is refused with the winner as holder, and the
/// winner's heartbeats work while the loser's are superseded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_conditional_claims_store_exactly_one() {
    let s = Setup::new(&shared_servers(), "race").await;
    let one = s.driver.clone();
    let two = s.other_process().await;
    let crashed = InstanceId::random();
    for round in 0..40 {
        let k = key("race", &format!("m{round}"));
        // Even rounds: nobody holds it (Absent). Odd rounds: a crashed holder's
        // record (HeldAs, the exclusive join of a down member).
        let condition = if round % 2 == 0 {
            Condition::Absent
        } else {
            stored(register_as(&one, &k, crashed, Condition::Always, Metadata::new()).await);
            Condition::HeldAs(Holder::new(crashed, 1))
        };
        let (a, b) = (InstanceId::random(), InstanceId::random());
        let (ra, rb) = tokio::join!(
            register_as(&one, &k, a, condition, Metadata::new()),
            register_as(&two, &k, b, condition, Metadata::new()),
        );
        let epoch = if round % 2 == 0 { 1 } else { 2 };
        let (winner, winner_driver, loser, loser_driver) = match (ra, rb) {
            (Registered::Stored { epoch: e }, Registered::Refused { found }) => {
                assert_eq!(
                    (e, found),
                    (epoch, Some(Holder::new(a, epoch))),
                    "round {round}"
                );
                (a, &one, b, &two)
            }
            (Registered::Refused { found }, Registered::Stored { epoch: e }) => {
                assert_eq!(
                    (e, found),
                    (epoch, Some(Holder::new(b, epoch))),
                    "round {round}"
                );
                (b, &two, a, &one)
            }
            other => panic!("round {round}: {other:?}"),
        };
        assert_eq!(
            one.get(&k).await.unwrap().unwrap().holder,
            Holder::new(winner, epoch)
        );
        let report = beat(winner_driver, winner, std::slice::from_ref(&k)).await;
        assert!(
            report.missing.is_empty() && report.superseded.is_empty(),
            "{report:?}"
        );
        let report = beat(loser_driver, loser, std::slice::from_ref(&k)).await;
        assert_eq!(report.superseded.len(), 1, "round {round}: {report:?}");
        assert_eq!(report.superseded[0].holder, Holder::new(winner, epoch));
    }
}

/// The forced-down flag is not part of fencing: the holder's heartbeats go on
/// unsuperseded while it is set, and it survives takeover and re-registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_down_does_not_fence_and_survives_takeover() {
    let s = Setup::new(&shared_servers()[..1], "forced").await;
    let k = key("compute", "host-1");
    let (a, b) = (InstanceId::random(), InstanceId::random());
    stored(register_as(&s.driver, &k, a, Condition::Always, Metadata::new()).await);
    beat(&s.driver, a, std::slice::from_ref(&k)).await;
    assert!(s.driver.set_forced_down(&k, true).await.unwrap());
    let ops = heartbeat_exchanges(&mc(&s.config).prefix);
    let report = beat(&s.driver, a, std::slice::from_ref(&k)).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert_eq!(heartbeat_exchanges(&mc(&s.config).prefix) - ops, 2);
    let r = s.driver.get(&k).await.unwrap().unwrap();
    assert!(r.forced_down && r.freshness == Freshness::Present);
    stored(register_as(&s.driver, &k, a, Condition::Always, Metadata::new()).await);
    assert!(s.driver.get(&k).await.unwrap().unwrap().forced_down);
    let other = s.other_process().await;
    stored(register_as(&other, &k, b, Condition::Always, Metadata::new()).await);
    let r = s.driver.get(&k).await.unwrap().unwrap();
    assert!(r.forced_down);
    assert_eq!(r.holder, Holder::new(b, 2));
    let listed = s.driver.list(&k.group).await.unwrap();
    assert!(listed[0].forced_down);
    let report = beat(&other, b, std::slice::from_ref(&k)).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert!(s.driver.set_forced_down(&k, false).await.unwrap());
    assert!(!s.driver.get(&k).await.unwrap().unwrap().forced_down);
}

fn flush_all(address: &str) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(b"flush_all\r\n").unwrap();
    let mut answer = [0u8; 4];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"OK\r\n");
}

/// `flush_all` (memcached emptied without a restart): the next heartbeat reports
/// every member missing, none superseded; registered again (as core does, with
/// `Absent`) they heartbeat in one exchange again (after the boot check) and are listed completely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_memcached_reports_missing_not_superseded() {
    let server = Dedicated::start();
    let s = Setup::new(&[server.address()], "flush").await;
    let a = InstanceId::random();
    let mut keys: Vec<MemberKey> = (0..300)
        .map(|i| key("compute", &format!("h{i:03}")))
        .collect();
    keys.sort();
    register_all(&s.driver, &keys, a).await;
    assert!(s.driver.set_forced_down(&keys[7], true).await.unwrap());
    let report = beat(&s.driver, a, &keys).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert_eq!(s.driver.backend().unwrap().remembered(0), keys.len());

    flush_all(&server.address());
    let report = beat(&s.driver, a, &keys).await;
    assert!(
        report.superseded.is_empty(),
        "{:?}",
        &report.superseded[..3]
    );
    let expected: Vec<(InstanceId, MemberKey)> = keys.iter().map(|k| (a, k.clone())).collect();
    assert_eq!(report.missing, expected);
    assert!(s
        .driver
        .list(&"compute".parse().unwrap())
        .await
        .unwrap()
        .is_empty());

    let registrations: Vec<_> = keys
        .iter()
        .map(|k| registration(k, a, Condition::Absent))
        .collect();
    let outcomes = s.driver.register_many(&registrations).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| *o == Registered::Stored { epoch: 1 }),
        "{outcomes:?}"
    );
    // The first heartbeat after the loss reads the recreated index buckets in full.
    let report = beat(&s.driver, a, &keys).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    let ops = heartbeat_exchanges(&mc(&s.config).prefix);
    let report = beat(&s.driver, a, &keys).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert_eq!(heartbeat_exchanges(&mc(&s.config).prefix) - ops, 2);
    let listed = s.driver.list(&"compute".parse().unwrap()).await.unwrap();
    assert_eq!(listed.len(), keys.len());
    assert!(listed
        .iter()
        .all(|r| r.freshness == Freshness::Present && !r.forced_down));
}

/// memcached restarted empty, and another instance registered a member exactly as
/// the first did, so the record's new CAS token equals the one the first driver
/// remembers (the CAS counter starts again at 1). The boot token tells the first
/// driver its tokens are from an earlier life of the server: it looks at the
/// record and reports the member superseded instead of taking the coincidence
/// for "still held".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_coinciding_cas_tokens_is_not_taken_for_holding() {
    let server = Dedicated::start();
    let s = Setup::new(&[server.address()], "reboot").await;
    let k = key("compute", "host-1");
    let (a, b) = (InstanceId::random(), InstanceId::random());
    stored(register_as(&s.driver, &k, a, Condition::Always, Metadata::new()).await);
    let [record_a, beat_a] = s.snapshot(&k);
    server.down();
    server.up();
    let other = s.other_process().await;
    stored(register_as(&other, &k, b, Condition::Always, Metadata::new()).await);
    let [record_b, beat_b] = s.snapshot(&k);
    let coincide = record_a.as_ref().map(|r| r.1) == record_b.as_ref().map(|r| r.1)
        && beat_a.as_ref().map(|r| r.1) == beat_b.as_ref().map(|r| r.1);
    eprintln!("CAS tokens coincide after the restart: {coincide}");
    // The connections of the first driver died with the server: the first call
    // fails over to fresh ones.
    let report = beat(&s.driver, a, std::slice::from_ref(&k)).await;
    assert!(report.missing.is_empty(), "{report:?}");
    assert_eq!(report.superseded.len(), 1, "{report:?}");
    assert_eq!(report.superseded[0].holder, Holder::new(b, 1));
    let report = beat(&s.driver, a, std::slice::from_ref(&k)).await;
    assert_eq!(report.superseded.len(), 1, "{report:?}");
    let report = beat(&other, b, std::slice::from_ref(&k)).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
}

/// A value this driver cannot read is a `Backend` error naming server and key,
/// never a panic; a heartbeat skips that member (neither refreshed nor reported)
/// and goes on for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_values_are_typed_errors() {
    let servers = shared_servers()[..1].to_vec();
    let s = Setup::new(&servers, "garbage").await;
    let (bad, good) = (key("compute", "bad"), key("compute", "good"));
    let a = InstanceId::random();
    let mut keys = vec![bad.clone(), good.clone()];
    keys.sort();
    register_all(&s.driver, &keys, a).await;
    let record = s.keys().live(b"compute", b"bad");
    s.raw(&bad)
        .set(&record, "1 not-an-instance 1 2 3\n")
        .send()
        .unwrap();

    for e in [
        s.driver.get(&bad).await.unwrap_err(),
        s.driver.list(&bad.group).await.unwrap_err(),
        s.driver
            .register(&registration(&bad, a, Condition::Always))
            .await
            .unwrap_err(),
        s.driver
            .set_metadata(&bad, a, &Metadata::new())
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Backend, "{e}");
        assert!(e.to_string().contains(&servers[0]), "{e}");
        assert!(e.to_string().contains(&record), "{e}");
    }
    let cold = s.other_process().await;
    let report = beat(&cold, a, &keys).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    assert!(s.driver.get(&good).await.unwrap().is_some());
    // An operator can still delete it.
    assert!(s.driver.remove(&bad, None).await.unwrap());
    assert_eq!(s.driver.list(&bad.group).await.unwrap().len(), 1);
}

/// Index entries memcached lost while the records stayed (eviction of the index
/// keys) are written back by the heartbeat of the members' holder: they are not
/// reported missing (core's `Absent` re-registration would be refused for a record
/// that exists), and listings and `groups()` are complete again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_index_entries_of_held_members_are_written_back() {
    let s = Setup::new(&shared_servers()[..1], "reindex").await;
    let a = InstanceId::random();
    let mut keys: Vec<MemberKey> = (0..40)
        .map(|i| key("compute", &format!("h{i:02}")))
        .collect();
    keys.sort();
    register_all(&s.driver, &keys, a).await;
    let raw = s.raw(&keys[0]);
    let index = s.keys();
    for b in 0..64 {
        raw.delete(index.bucket(b"compute", b)).send().unwrap();
    }
    raw.delete(index.groups()).send().unwrap();
    assert!(s
        .driver
        .list(&"compute".parse().unwrap())
        .await
        .unwrap()
        .is_empty());
    assert!(s.driver.groups().await.unwrap().is_empty());

    let report = beat(&s.driver, a, &keys).await;
    assert!(
        report.missing.is_empty() && report.superseded.is_empty(),
        "{report:?}"
    );
    let listed = s.driver.list(&"compute".parse().unwrap()).await.unwrap();
    assert_eq!(listed.len(), keys.len());
    assert_eq!(
        s.driver.groups().await.unwrap(),
        vec!["compute".parse().unwrap()]
    );

    // A member that left is not written back by a heartbeat that still carries it.
    assert!(s.driver.remove(&keys[0], Some(a)).await.unwrap());
    let report = beat(&s.driver, a, &keys).await;
    assert_eq!(report.missing, vec![(a, keys[0].clone())]);
    for k in &keys[1..] {
        assert!(s.driver.remove(k, Some(a)).await.unwrap());
    }
    beat(&s.driver, a, &keys).await;
    assert!(s.driver.groups().await.unwrap().is_empty());
}
