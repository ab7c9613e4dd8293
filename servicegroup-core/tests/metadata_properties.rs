//! Member metadata on arbitrary input: maps with keys and values of any kind and
//! size around every limit are accepted exactly when the rules hold, and refused with
//! an `InvalidMetadata` error naming the offending key and the rule; stored JSON of
//! any shape (random text, deep nesting, huge strings, wrong types) reads back or is
//! an `InvalidMetadata` error, never a panic; valid metadata round-trips.

use std::collections::BTreeMap;

use proptest::prelude::*;
use servicegroup_core::metadata::{MAX_ENTRIES, MAX_KEY_LEN, MAX_TOTAL_LEN, MAX_VALUE_LEN};
use servicegroup_core::{ErrorKind, Metadata};

/// Longest message a metadata error may have (keys are shown shortened).
const MAX_MESSAGE: usize = 40 * 10 + 300;

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9._/-]{1,12}",
        1 => "[a-z0-9._/-]{60,66}",
        1 => "[a-zA-Z0-9 ._/\\-é\t\"]{0,10}",
        1 => any::<String>(),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        1 => (1020usize..1030).prop_map(|n| "v".repeat(n)),
        1 => (340usize..345).prop_map(|n| "é".repeat(n)),
    ]
}

fn map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop_oneof![
        proptest::collection::btree_map(key(), value(), 0..8),
        proptest::collection::btree_map("[a-z]{1,4}", "[a-z]{0,3}", 28..36),
        proptest::collection::btree_map(
            "[a-z]{1,8}",
            (0usize..1025).prop_map(|n| "x".repeat(n)),
            3..7
        ),
    ]
}

/// What the rules say about `map`: `None` when valid, else the texts the error must
/// contain (the offending key as shown, the size or the count).
fn expected_error(map: &BTreeMap<String, String>) -> Option<Vec<String>> {
    if map.len() > MAX_ENTRIES {
        return Some(vec![format!("{} entries", map.len())]);
    }
    // As metadata.rs shows keys: quoted and escaped, the first 40 characters (then `…`).
    let shown = |k: &str| {
        let head: String = k.chars().take(40).collect();
        let quoted = format!("{head:?}");
        quoted[..quoted.len() - 1].to_owned()
    };
    let mut total = 0;
    for (k, v) in map {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_KEY_LEN
            && k.chars()
                .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '/' | '-'));
        if !key_ok {
            return Some(vec![if k.is_empty() {
                "must not be empty".to_owned()
            } else {
                shown(k)
            }]);
        }
        if v.len() > MAX_VALUE_LEN {
            return Some(vec![shown(k), format!("{} bytes long", v.len())]);
        }
        total += k.len() + v.len();
    }
    (total > MAX_TOTAL_LEN).then(|| vec![format!("{total} bytes together")])
}

/// JSON text that is not metadata in many ways, and some that is.
fn stored_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("1".to_owned()),
        Just("-1e999".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        "\"[a-z]{0,5}\"",
    ];
    let nested =
        (leaf, 0usize..3000, prop_oneof![Just('['), Just('{')]).prop_map(|(leaf, depth, open)| {
            let (o, c) = if open == '[' {
                ("[", "]")
            } else {
                ("{\"a\":", "}")
            };
            format!("{}{leaf}{}", o.repeat(depth), c.repeat(depth))
        });
    prop_oneof![
        any::<String>(),
        nested,
        map().prop_map(|m| serde_json::to_string(&m).unwrap()),
        (map(), 0usize..200).prop_map(|(m, cut)| {
            let text = serde_json::to_string(&m).unwrap();
            let cut = text.len().saturating_sub(cut);
            text.get(..cut).unwrap_or("").to_owned()
        }),
        (1usize..200_000).prop_map(|n| format!("\"{}\"", "s".repeat(n))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn maps_are_accepted_exactly_when_the_rules_hold(map in map()) {
        let result = Metadata::try_from(map.clone());
        match (expected_error(&map), result) {
            (None, Ok(md)) => {
                prop_assert_eq!(md.as_map(), &map);
                let back = Metadata::from_json(&md.to_json());
                prop_assert_eq!(back.as_ref().ok(), Some(&md), "{:?}", back);
                let pairs = Metadata::from_pairs(map.clone()).unwrap();
                prop_assert_eq!(pairs, md);
            }
            (None, Err(e)) => prop_assert!(false, "refused: {e}"),
            (Some(why), Ok(_)) => prop_assert!(false, "accepted, expected {why:?}"),
            (Some(why), Err(e)) => {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidMetadata);
                for part in &why {
                    prop_assert!(e.message().contains(part.as_str()), "expected {part:?} in {}", e.message());
                }
                prop_assert!(e.message().len() <= MAX_MESSAGE, "{} bytes", e.message().len());
            }
        }
    }

    #[test]
    fn stored_text_reads_back_or_is_an_error(text in stored_text()) {
        match Metadata::from_json(&text) {
            Ok(md) => {
                // What was read is valid and writes back to what it read.
                prop_assert_eq!(Metadata::from_json(&md.to_json()).ok(), Some(md.clone()));
                prop_assert!(md.len() <= MAX_ENTRIES);
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidMetadata);
                prop_assert!(e.message().len() <= MAX_MESSAGE, "{} bytes: {}", e.message().len(), e.message().get(..200).unwrap_or(""));
            }
        }
    }

    #[test]
    fn the_serde_form_applies_the_same_rules(map in map()) {
        let text = serde_json::to_string(&map).unwrap();
        let via_serde = serde_json::from_str::<Metadata>(&text);
        let via_try = Metadata::try_from(map);
        prop_assert_eq!(via_serde.is_ok(), via_try.is_ok());
        if let (Err(serde), Err(ours)) = (via_serde, via_try) {
            prop_assert!(serde.to_string().contains(ours.message()), "{serde} / {ours}");
        }
    }
}

/// Found by `stored_text_reads_back_or_is_an_error`: serde_json's message quotes the
/// value it refused, so a stored string of a megabyte made a megabyte-long error.
#[test]
fn a_huge_stored_string_gets_a_short_error_with_the_position() {
    let text = format!("\"{}\"", "s".repeat(1 << 20));
    let e = Metadata::from_json(&text).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidMetadata);
    assert!(
        e.message().len() <= MAX_MESSAGE,
        "{} bytes",
        e.message().len()
    );
    assert!(
        e.message().contains("invalid type: string"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("at line 1 column"), "{}", e.message());
}
