//! The two records of a member (format 3), against real memcached: the live
//! record (30-day TTL, the one key a listing reads) and the durable record (no TTL,
//! read only where the live one is gone). What each test shows:
//!
//! - a heartbeat never writes back what this driver remembers when the record
//!   changed behind it (metadata or forced-down flag set by another process, a
//!   takeover): listings and the next heartbeats show the change;
//! - memcached losing one key heals or is reported, never mistaken: the live
//!   record alone (listed from the durable one, down; the holder's next heartbeat
//!   creates it again, flag and metadata kept), the durable record alone (written
//!   back by the holder's check), both (reported missing);
//! - changes other than heartbeats never make a member fresh, and keep the live
//!   record's age;
//! - an operator's forced-down flag from before format 3 carries over once.

mod common;

use std::time::Duration;

use common::*;
use memcache::exp::{Meta, MetaClient};
use servicegroup_core::{
    Condition, Driver, Freshness, Holder, HolderUpdate, InstanceId, MemberKey, Metadata,
    Registered, State,
};
use servicegroup_driver_mc::keys::Keys;
use servicegroup_driver_mc::stored::StoredRecord;
use servicegroup_driver_mc::{heartbeat_exchanges, McDriver};

fn key(g: &str, m: &str) -> MemberKey {
    MemberKey::new(g.parse().unwrap(), m.parse().unwrap())
}

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

    async fn other_process(&self) -> McDriver {
        McDriver::connect(&self.config).await.unwrap()
    }

    fn raw(&self, key: &MemberKey) -> MetaClient {
        let server = self.driver.backend().unwrap().server_of(key);
        MetaClient::connect(mc(&self.config).servers[server].as_str()).unwrap()
    }

    fn names(&self, key: &MemberKey) -> (String, String, String) {
        let k = Keys::new(&mc(&self.config).prefix);
        let (g, m) = (
            key.group.as_str().as_bytes(),
            key.member.as_str().as_bytes(),
        );
        (k.live(g, m), k.durable(g, m), k.legacy_forced(g, m))
    }

    /// Deletes the live record of `key` behind the driver's back (an eviction).
    fn evict_live(&self, key: &MemberKey) {
        assert!(self
            .raw(key)
            .delete(self.names(key).0)
            .send()
            .unwrap()
            .applied());
    }

    /// Deletes the durable record of `key` behind the driver's back.
    fn evict_durable(&self, key: &MemberKey) {
        assert!(self
            .raw(key)
            .delete(self.names(key).1)
            .send()
            .unwrap()
            .applied());
    }

    fn value(&self, name: &str, key: &MemberKey) -> Option<Vec<u8>> {
        let got = self.raw(key).get(name).send().unwrap();
        got.hit().then(|| got.value.unwrap_or_default())
    }

    fn remaining_ttl(&self, key: &MemberKey) -> Option<i64> {
        let got = self
            .raw(key)
            .get(self.names(key).0)
            .meta(Meta::NONE.ttl())
            .without_value()
            .send()
            .unwrap();
        got.hit().then(|| got.item.ttl.unwrap())
    }
}

async fn register(
    driver: &McDriver,
    key: &MemberKey,
    instance: InstanceId,
    metadata: Metadata,
) -> u64 {
    let mut r = registration(key, instance, Condition::Always);
    r.metadata = metadata;
    match driver.register(&r).await.unwrap() {
        Registered::Stored { epoch } => epoch,
        other => panic!("{other:?}"),
    }
}

fn quiet(report: &servicegroup_core::HeartbeatReport) -> bool {
    report.missing.is_empty() && report.superseded.is_empty()
}

/// Another process of the same instance (a second relay) changes metadata and
/// forced-down flag: the first process's remembered value is never written back
/// over them, never served by a listing, and its next heartbeat keeps the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_never_writes_back_a_stale_value() {
    let s = Setup::new(&shared_servers()[..1], "stale").await;
    let k = key("compute", "host-1");
    let a = InstanceId::random();
    let old = Metadata::from_pairs([("version", "1")]).unwrap();
    let new = Metadata::from_pairs([("version", "2")]).unwrap();
    register(&s.driver, &k, a, old.clone()).await;
    assert!(quiet(&beat(&s.driver, a, std::slice::from_ref(&k)).await));
    assert_eq!(s.driver.backend().unwrap().remembered(0), 1);

    let other = s.other_process().await;
    assert_eq!(
        other.set_metadata(&k, a, &new).await.unwrap(),
        HolderUpdate::Stored
    );
    assert!(other.set_forced_down(&k, true).await.unwrap());
    // Listings read the live record, never a driver's memory.
    for driver in [&s.driver, &other] {
        let listed = driver.list(&k.group).await.unwrap();
        assert_eq!(
            (listed[0].metadata.clone(), listed[0].forced_down),
            (new.clone(), true)
        );
        let got = driver.get(&k).await.unwrap().unwrap();
        assert_eq!((got.metadata, got.forced_down), (new.clone(), true));
    }
    // The first process's remembered CAS is stale: its heartbeat is refused, it
    // reads the record and writes it again as it is now (the boot check, then
    // one more exchange).
    let ops = heartbeat_exchanges(&mc(&s.config).prefix);
    assert!(quiet(&beat(&s.driver, a, std::slice::from_ref(&k)).await));
    assert_eq!(heartbeat_exchanges(&mc(&s.config).prefix) - ops, 4);
    let got = s.driver.get(&k).await.unwrap().unwrap();
    assert_eq!((got.metadata, got.forced_down), (new.clone(), true));
    assert_eq!(got.freshness, Freshness::Present);
    // And from then on the boot check and one exchange again, still with the
    // change.
    let ops = heartbeat_exchanges(&mc(&s.config).prefix);
    assert!(quiet(&beat(&s.driver, a, std::slice::from_ref(&k)).await));
    assert_eq!(heartbeat_exchanges(&mc(&s.config).prefix) - ops, 2);
    let got = s.driver.get(&k).await.unwrap().unwrap();
    assert_eq!((got.metadata, got.forced_down), (new, true));

    // A takeover by another instance: the first process's heartbeat writes
    // nothing and is superseded.
    let b = InstanceId::random();
    register(&other, &k, b, Metadata::new()).await;
    let live = s.value(&s.names(&k).0, &k);
    let report = beat(&s.driver, a, std::slice::from_ref(&k)).await;
    assert_eq!(report.superseded.len(), 1, "{report:?}");
    assert_eq!(report.superseded[0].holder, Holder::new(b, 2));
    assert_eq!(
        s.value(&s.names(&k).0, &k),
        live,
        "a superseded heartbeat wrote"
    );
    let got = s.driver.get(&k).await.unwrap().unwrap();
    assert_eq!(got.holder, Holder::new(b, 2));
    assert!(got.forced_down, "the takeover cleared the operator's flag");
}

/// memcached loses the live record alone (eviction): the member is listed from
/// its durable record (down, same holder, metadata and flag) and never missing;
/// the holder's next heartbeat creates the live record again from the durable one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_live_record_alone_heals() {
    let s = Setup::new(&shared_servers(), "evict-live").await;
    let keys: Vec<MemberKey> = {
        let mut v: Vec<MemberKey> = (0..30)
            .map(|i| key("compute", &format!("h{i:02}")))
            .collect();
        v.sort();
        v
    };
    let a = InstanceId::random();
    let md = Metadata::from_pairs([("zone", "b")]).unwrap();
    for k in &keys {
        register(&s.driver, k, a, md.clone()).await;
    }
    assert!(s.driver.set_forced_down(&keys[3], true).await.unwrap());
    assert!(quiet(&beat(&s.driver, a, &keys).await));
    for k in &keys[..10] {
        s.evict_live(k);
    }
    let listed = s.driver.list(&keys[0].group).await.unwrap();
    assert_eq!(listed.len(), keys.len());
    for r in &listed {
        let lost = keys[..10].contains(&r.key);
        assert_eq!(r.holder, Holder::new(a, 1));
        assert_eq!(r.metadata, md);
        assert_eq!(r.forced_down, r.key == keys[3]);
        let expected = if lost {
            Freshness::Absent
        } else {
            Freshness::Present
        };
        assert_eq!(r.freshness, expected, "{}", r.key);
    }
    assert_eq!(
        s.driver.get(&keys[3]).await.unwrap().unwrap().freshness,
        Freshness::Absent
    );
    // The down set and the counts agree with the listing (records from both kinds
    // of record; forced down counted once, as forced down).
    let sdt = s.config.service_down_time;
    let summary = s.driver.summary(&keys[0].group, sdt).await.unwrap();
    assert_eq!((summary.up, summary.down, summary.forced_down), (20, 9, 1));
    let mut down: Vec<MemberKey> = s
        .driver
        .list_in(&keys[0].group, State::Down, sdt)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    down.sort();
    assert_eq!(down, keys[..10].to_vec());
    let up = s
        .driver
        .list_in(&keys[0].group, State::Up, sdt)
        .await
        .unwrap();
    assert_eq!(up.len(), 20);
    assert!(up
        .iter()
        .all(|r| r.metadata == md && !keys[..10].contains(&r.key)));
    // Not missing (core would register it again), not superseded: created again.
    assert!(quiet(&beat(&s.driver, a, &keys).await));
    let listed = s.driver.list(&keys[0].group).await.unwrap();
    assert!(listed.iter().all(|r| r.freshness == Freshness::Present));
    assert!(listed
        .iter()
        .all(|r| r.metadata == md && r.holder == Holder::new(a, 1)));
    assert_eq!(
        listed.iter().filter(|r| r.forced_down).count(),
        1,
        "the forced-down flag was lost with the live record"
    );
    // Another instance's heartbeat finds the durable record and is superseded.
    let stranger = InstanceId::random();
    s.evict_live(&keys[5]);
    let report = beat(&s.other_process().await, stranger, &keys[5..6]).await;
    assert_eq!(report.superseded.len(), 1, "{report:?}");
    assert!(s.driver.get(&keys[5]).await.unwrap().is_some());
}

/// memcached loses the durable record alone: nothing changes for listings (they
/// read the live record) and the holder's check writes it back; both records
/// lost: the member is reported missing and registered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_durable_record_alone_or_both() {
    let s = Setup::new(&shared_servers()[..1], "evict-durable").await;
    let k = key("compute", "host-1");
    let a = InstanceId::random();
    let md = Metadata::from_pairs([("address", "10.0.0.7")]).unwrap();
    register(&s.driver, &k, a, md.clone()).await;
    let durable = s.names(&k).1;
    let copy = s.value(&durable, &k).unwrap();
    s.evict_durable(&k);
    let got = s.driver.get(&k).await.unwrap().unwrap();
    assert_eq!(
        (got.freshness, got.metadata.clone()),
        (Freshness::Present, md.clone())
    );
    // A process that did not register it learns the member from its live record;
    // its next heartbeat checks the durable record and writes it back.
    let other = s.other_process().await;
    assert!(quiet(&beat(&other, a, std::slice::from_ref(&k)).await));
    assert!(quiet(&beat(&other, a, std::slice::from_ref(&k)).await));
    let back = s
        .value(&durable, &k)
        .expect("the durable record was not written back");
    // The same record (the heartbeat time in it may differ).
    let (mut back, copy) = (
        StoredRecord::decode(&back).unwrap(),
        StoredRecord::decode(&copy).unwrap(),
    );
    back.beat_ms = copy.beat_ms;
    assert_eq!(back, copy);
    // Then the live record lost too: the durable one serves until the heartbeat.
    s.evict_live(&k);
    let got = s.driver.get(&k).await.unwrap().unwrap();
    assert_eq!((got.freshness, got.metadata), (Freshness::Absent, md));

    // Both lost: missing, never superseded.
    s.evict_live_if_present(&k);
    s.evict_durable(&k);
    assert!(s.driver.get(&k).await.unwrap().is_none());
    let report = beat(&other, a, std::slice::from_ref(&k)).await;
    assert_eq!(report.missing, vec![(a, k.clone())]);
    assert!(report.superseded.is_empty());
    assert!(s.driver.list(&k.group).await.unwrap().is_empty());
}

impl Setup {
    fn evict_live_if_present(&self, key: &MemberKey) {
        self.raw(key).delete(self.names(key).0).send().unwrap();
    }
}

/// Metadata and forced-down changes keep the live record's age, so they never
/// make a member fresh: a member whose heartbeats stopped stays down through any
/// number of changes, also when the change had to create its live record (only the
/// durable record left). Many changes of a member that does not heartbeat are
/// compacted, keeping the age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_other_than_heartbeats_never_make_a_member_fresh() {
    let s = Setup::new(&shared_servers()[..1], "not-fresh").await;
    // service_down_time 2 s: the window is 3 s.
    let (k, lost) = (key("compute", "host-1"), key("compute", "host-2"));
    let a = InstanceId::random();
    register(&s.driver, &k, a, Metadata::new()).await;
    register(&s.driver, &lost, a, Metadata::new()).await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(
        s.driver.get(&k).await.unwrap().unwrap().freshness,
        Freshness::Absent
    );
    let ttl = s.remaining_ttl(&k).unwrap();
    let big = Metadata::from_pairs([("blob", "x".repeat(1_000))]).unwrap();
    for round in 0..12 {
        assert!(s.driver.set_forced_down(&k, round % 2 == 0).await.unwrap());
        assert_eq!(
            s.driver.set_metadata(&k, a, &big).await.unwrap(),
            HolderUpdate::Stored
        );
        let got = s.driver.get(&k).await.unwrap().unwrap();
        assert_eq!(got.freshness, Freshness::Absent, "round {round}");
        assert_eq!(got.forced_down, round % 2 == 0);
        assert_eq!(got.metadata, big);
    }
    assert!(
        s.remaining_ttl(&k).unwrap() <= ttl,
        "a change refreshed the TTL"
    );
    let value = s.value(&s.names(&k).0, &k).unwrap();
    assert!(
        value.len() < 10_000,
        "patches were not compacted: {} bytes",
        value.len()
    );
    // The holder's heartbeat makes it fresh again, with the changes.
    assert!(quiet(&beat(&s.driver, a, std::slice::from_ref(&k)).await));
    let got = s.driver.get(&k).await.unwrap().unwrap();
    assert_eq!(
        (got.freshness, got.metadata),
        (Freshness::Present, big.clone())
    );

    // Only the durable record left: the change creates the live record, not fresh.
    s.evict_live(&lost);
    assert!(s.driver.set_forced_down(&lost, true).await.unwrap());
    let got = s.driver.get(&lost).await.unwrap().unwrap();
    assert_eq!((got.freshness, got.forced_down), (Freshness::Absent, true));
    assert!(s.value(&s.names(&lost).0, &lost).is_some());
    assert_eq!(
        s.driver.set_metadata(&lost, a, &big).await.unwrap(),
        HolderUpdate::Stored
    );
    assert_eq!(
        s.driver.get(&lost).await.unwrap().unwrap().freshness,
        Freshness::Absent
    );
    assert!(quiet(
        &beat(&s.driver, a, std::slice::from_ref(&lost)).await
    ));
    let got = s.driver.get(&lost).await.unwrap().unwrap();
    assert_eq!(
        (got.freshness, got.forced_down, got.metadata),
        (Freshness::Present, true, big)
    );
}

/// An operator's forced-down flag set by an earlier release (the `f` key) is
/// taken into the record when the member is first registered in format 3;
/// clearing the flag deletes the old key, so it never comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_releases_forced_down_flag_carries_over_once() {
    let s = Setup::new(&shared_servers()[..1], "upgrade").await;
    let k = key("compute", "host-1");
    let legacy = s.names(&k).2;
    s.raw(&k).set(&legacy, "1").send().unwrap();
    let a = InstanceId::random();
    register(&s.driver, &k, a, Metadata::new()).await;
    assert!(s.driver.get(&k).await.unwrap().unwrap().forced_down);
    assert!(s.driver.set_forced_down(&k, false).await.unwrap());
    assert!(
        s.value(&legacy, &k).is_none(),
        "the old flag key is still there"
    );
    // Both records lost (memcached emptied of them): registered again, not forced.
    s.evict_live(&k);
    s.evict_durable(&k);
    register(&s.driver, &k, a, Metadata::new()).await;
    assert!(!s.driver.get(&k).await.unwrap().unwrap().forced_down);
    // An operator's removal deletes the old key too.
    s.raw(&k).set(&legacy, "1").send().unwrap();
    assert!(s.driver.remove(&k, None).await.unwrap());
    assert!(s.value(&legacy, &k).is_none());
}

/// Two processes heartbeating for one instance (two relays taking turns): both
/// keep the member up and neither is ever superseded; each turn costs the second
/// look of a record written by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_of_one_instance_take_turns() {
    let s = Setup::new(&shared_servers(), "turns").await;
    let keys: Vec<MemberKey> = {
        let mut v: Vec<MemberKey> = (0..20)
            .map(|i| key("compute", &format!("h{i:02}")))
            .collect();
        v.sort();
        v
    };
    let a = InstanceId::random();
    let md = Metadata::from_pairs([("zone", "c")]).unwrap();
    for k in &keys {
        register(&s.driver, k, a, md.clone()).await;
    }
    let other = s.other_process().await;
    for turn in 0..6 {
        let driver = if turn % 2 == 0 { &other } else { &s.driver };
        assert!(quiet(&beat(driver, a, &keys).await), "turn {turn}");
        let listed = s.driver.list(&keys[0].group).await.unwrap();
        assert_eq!(listed.len(), keys.len());
        assert!(listed
            .iter()
            .all(|r| r.freshness == Freshness::Present && r.metadata == md));
    }
}
