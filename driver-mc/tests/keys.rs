//! Ids that break memcached's protocol (spaces, CR LF, 255 bytes, long common
//! prefixes) are stored, listed, never collide and never touch another key.
//!
//! The key encoding is checked on arbitrary bytes (core would reject spaces and
//! control characters before they reach the driver, but the encoding must not
//! rely on it); storage is checked through the driver on a real server with
//! every kind of id core accepts.

mod common;

use std::collections::BTreeSet;

use common::*;
use memcache::exp::MetaClient;
use proptest::prelude::*;
use servicegroup_core::{Driver, GroupId, InstanceId, MemberId, MemberKey};
use servicegroup_driver_mc::keys::{segment, Keys, MAX_KEY_LEN};
use servicegroup_driver_mc::McDriver;

fn safe(key: &str) -> bool {
    key.len() <= MAX_KEY_LEN
        && MAX_KEY_LEN <= 250
        && key.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Byte strings up to 255 bytes, biased towards the troublesome ones.
fn raw_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..=255),
        proptest::collection::vec(
            prop_oneof![
                Just(b' '),
                Just(b'\r'),
                Just(b'\n'),
                Just(b'%'),
                Just(b':'),
                Just(b'#'),
                Just(b'a')
            ],
            1..=255
        ),
        (proptest::collection::vec(any::<u8>(), 0..=55)).prop_map(|tail| {
            let mut v = vec![b'y'; 200];
            v.extend(tail);
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn keys_are_safe_and_injective(g1 in raw_id(), m1 in raw_id(), g2 in raw_id(), m2 in raw_id()) {
        let k = Keys::new("prefix-of-32-bytes-long-xxxxxxxx");
        for (g, m) in [(&g1, &m1), (&g2, &m2)] {
            for key in [k.live(g, m), k.durable(g, m), k.legacy_forced(g, m), k.bucket(g, 63)] {
                prop_assert!(safe(&key), "unsafe key {key:?}");
            }
        }
        if (&g1, &m1) != (&g2, &m2) {
            prop_assert_ne!(k.live(&g1, &m1), k.live(&g2, &m2));
            prop_assert_ne!(k.durable(&g1, &m1), k.durable(&g2, &m2));
        }
        if g1 != g2 {
            prop_assert_ne!(k.bucket(&g1, 0), k.bucket(&g2, 0));
        }
        // Kinds never meet.
        prop_assert_ne!(k.live(&g1, &m1), k.durable(&g2, &m2));
    }
}

#[test]
fn named_troublemakers() {
    let k = Keys::new("sg");
    let long_a = "y".repeat(200) + "a";
    let long_b = "y".repeat(200) + "b";
    let max = "z".repeat(255);
    let ids: [&[u8]; 6] = [
        b"a b",
        b"x\r\nflush_all",
        b"a%20b",
        long_a.as_bytes(),
        long_b.as_bytes(),
        max.as_bytes(),
    ];
    let mut seen = BTreeSet::new();
    for id in ids {
        let key = k.live(b"compute", id);
        assert!(safe(&key), "{key}");
        assert!(seen.insert(key.clone()), "collision on {key}");
    }
    assert_eq!(segment(b"a b"), "a%20b");
    assert_eq!(segment(b"a%20b"), "a%2520b");
    assert_eq!(
        k.live(b"compute", b"x\r\nflush_all"),
        "sg:m3:compute:x%0D%0Aflush_all"
    );
}

/// Valid ids (what core lets through): printable, no whitespace, up to 255 bytes,
/// with the encoding's special characters and multi-byte characters.
fn valid_id() -> impl Strategy<Value = String> {
    let chars = prop_oneof![
        proptest::char::range('a', 'z'),
        Just('%'),
        Just(':'),
        Just('#'),
        Just('/'),
        Just('é'),
        Just('€'),
        Just('-'),
    ];
    prop_oneof![
        proptest::collection::vec(chars.clone(), 1..=90)
            .prop_map(|v| v.into_iter().collect::<String>()),
        proptest::collection::vec(chars, 0..=20).prop_map(|v| {
            // A 200-byte common prefix; the difference comes after it.
            let mut s = "p".repeat(200);
            s.extend(v);
            s
        }),
    ]
    .prop_map(|mut s| {
        while s.len() > 255 {
            s.pop();
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn stored_listed_and_isolated(members in proptest::collection::btree_set(valid_id(), 1..12), group in valid_id()) {
        let servers = shared_servers();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let config = config(&servers, "prop");
            let driver = McDriver::connect(&config).await.unwrap();
            // Sentinels an injected command would overwrite or flush.
            let raw: Vec<MetaClient> = servers.iter().map(|s| MetaClient::connect(s.as_str()).unwrap()).collect();
            let sentinel = format!("{}-sentinel", mc(&config).prefix);
            for r in &raw {
                r.set(&sentinel, "keep").send().unwrap();
            }
            let group: GroupId = group.parse().unwrap();
            let keys: Vec<MemberKey> = members.iter().map(|m| MemberKey::new(group.clone(), m.parse::<MemberId>().unwrap())).collect();
            let me = InstanceId::random();
            register_all(&driver, &keys, me).await;
            let listed: BTreeSet<String> = driver.list(&group).await.unwrap().into_iter().map(|r| r.key.member.to_string()).collect();
            assert_eq!(&listed, &members);
            for key in &keys {
                let record = driver.get(key).await.unwrap().expect("stored");
                assert_eq!(&record.key, key);
            }
            let mut sorted = keys.clone();
            sorted.sort();
            let report = beat(&driver, me, &sorted).await;
            assert!(report.missing.is_empty() && report.superseded.is_empty(), "{report:?}");
            // Removing one touches no other.
            let (first, rest) = keys.split_first().unwrap();
            assert!(driver.remove(first, Some(me)).await.unwrap());
            assert!(driver.get(first).await.unwrap().is_none());
            let listed: BTreeSet<String> = driver.list(&group).await.unwrap().into_iter().map(|r| r.key.member.to_string()).collect();
            let expected: BTreeSet<String> = rest.iter().map(|k| k.member.to_string()).collect();
            assert_eq!(listed, expected);
            for r in &raw {
                let got = r.get(&sentinel).send().unwrap();
                assert_eq!(got.value.as_deref(), Some(&b"keep"[..]), "a sentinel key was touched");
            }
            assert_eq!(driver.groups().await.unwrap().is_empty(), rest.is_empty());
        });
    }
}
