//! Group and member ids on arbitrary input: text and bytes of any kind (control
//! characters, whitespace of every script, invalid UTF-8, far too long) are accepted
//! exactly when the id rules hold, and refused with an `InvalidId` error that says
//! which id and which rule, in a message of bounded size, never a panic.

use proptest::prelude::*;
use servicegroup_core::{ErrorKind, GroupId, IntoId, MemberId, MAX_ID_LEN};

/// The id rules (see `id.rs`), written again here independently of its code.
fn rule_broken(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        Some("must not be empty")
    } else if text.len() > MAX_ID_LEN {
        Some("bytes long")
    } else if let Some(c) = text.chars().find(|c| c.is_control() || c.is_whitespace()) {
        Some(if c.is_control() {
            "control character"
        } else {
            "whitespace"
        })
    } else {
        None
    }
}

/// Longest message an id error may have: the shown part of the id is shortened
/// (64 characters, each escaped to at most 10 bytes) plus the rule.
const MAX_MESSAGE: usize = 64 * 10 + 200;

/// Text biased towards what breaks ids: the edges of the length limit, controls,
/// Unicode whitespace, multi-byte characters.
fn id_text() -> impl Strategy<Value = String> {
    let troublesome = prop_oneof![
        Just(' '),
        Just('\t'),
        Just('\r'),
        Just('\n'),
        Just('\0'),
        Just('\u{7f}'),
        Just('\u{85}'),
        Just('\u{a0}'),
        Just('\u{2028}'),
        Just('\u{3000}'),
        Just('\u{feff}'),
        Just('é'),
        Just('✓'),
        Just('𝄞'),
        Just('%'),
        Just('/'),
        Just('a'),
    ];
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(troublesome, 0..300).prop_map(|v| v.into_iter().collect()),
        "[a-z0-9._:/-]{1,300}",
        (250usize..=260, any::<char>()).prop_map(|(n, c)| {
            let mut s = "x".repeat(n);
            s.push(c);
            s
        }),
    ]
}

/// Bytes: mostly text as above, some arbitrary (invalid UTF-8 among them).
fn id_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        id_text().prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..600),
        (id_text(), any::<u8>(), 0usize..300).prop_map(|(s, b, at)| {
            let mut v = s.into_bytes();
            let at = at.min(v.len());
            v.insert(at, 0x80 | (b & 0x3f));
            v
        }),
    ]
}

fn check_text<T: std::fmt::Debug>(
    kind: &str,
    text: &str,
    result: servicegroup_core::Result<T>,
    shown: impl Fn(&T) -> String,
) -> Result<(), TestCaseError> {
    match (rule_broken(text), result) {
        (None, Ok(id)) => prop_assert_eq!(shown(&id), text),
        (None, Err(e)) => prop_assert!(false, "{text:?} refused: {e}"),
        (Some(rule), Ok(id)) => prop_assert!(false, "{text:?} accepted as {id:?} ({rule})"),
        (Some(rule), Err(e)) => {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidId);
            let message = e.message();
            prop_assert!(message.contains(kind), "{message}");
            prop_assert!(message.contains(rule), "{text:?}: {message}");
            prop_assert!(message.len() <= MAX_MESSAGE, "{} bytes", message.len());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn text_is_accepted_exactly_when_the_rules_hold(text in id_text()) {
        check_text("group id", &text, GroupId::new(text.clone()), |g| g.as_str().to_owned())?;
        check_text("member id", &text, MemberId::new(text.as_str()), |m| m.as_str().to_owned())?;
        // Every way in agrees.
        let via_parse = text.parse::<MemberId>().ok();
        let via_into: Option<MemberId> = text.as_str().into_id().ok();
        let via_try = MemberId::try_from(&text).ok();
        prop_assert_eq!(&via_parse, &via_into);
        prop_assert_eq!(&via_parse, &via_try);
        if let Some(id) = via_parse {
            prop_assert_eq!(id.to_string(), text.clone());
            prop_assert_eq!(MemberId::from_bytes(text.as_bytes()).ok(), Some(id));
        }
    }

    #[test]
    fn bytes_are_accepted_exactly_when_utf8_and_the_rules_hold(bytes in id_bytes()) {
        let result = GroupId::from_bytes(&bytes);
        match std::str::from_utf8(&bytes) {
            Ok(text) => check_text("group id", text, result, |g| g.as_str().to_owned())?,
            Err(_) => {
                let e = result.unwrap_err();
                prop_assert_eq!(e.kind(), ErrorKind::InvalidId);
                prop_assert!(e.message().contains("group id"), "{}", e.message());
                prop_assert!(e.message().contains("UTF-8"), "{}", e.message());
                prop_assert!(e.message().len() <= MAX_MESSAGE, "{} bytes", e.message().len());
            }
        }
    }
}

/// Found by `bytes_are_accepted_exactly_when_utf8_and_the_rules_hold`: an invalid
/// UTF-8 id was echoed in full, so a megabyte of bytes made a megabyte-long message.
#[test]
fn a_huge_invalid_utf8_id_gets_a_short_message() {
    let mut bytes = vec![b'a'; 1 << 20];
    bytes[10] = 0xff;
    let e = MemberId::from_bytes(&bytes).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidId);
    assert!(e.message().contains("UTF-8"), "{}", e.message());
    assert!(
        e.message().len() <= MAX_MESSAGE,
        "{} bytes",
        e.message().len()
    );
}
