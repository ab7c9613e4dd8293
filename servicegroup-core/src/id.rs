//! Validated group and member identifiers.
//!
//! Every id that enters the API is checked here, once: non-empty, at most
//! [`MAX_ID_LEN`] bytes (the size of Nova's `host`/`topic` columns), valid UTF-8,
//! and free of whitespace and control characters. Drivers may therefore rely on ids
//! being printable and space-free, but must still encode them for their backend
//! (the memcached driver, for one, has a 250-byte key limit).

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Longest id accepted, in bytes (Nova's `services.host` column is `VARCHAR(255)`).
pub const MAX_ID_LEN: usize = 255;

/// Which id a validation error is about; shown in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdKind {
    Group,
    Member,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Group => "group id",
            IdKind::Member => "member id",
        })
    }
}

/// Checks `raw` against the id rules; on failure the error shows the id escaped
/// (`"a\r\nflush_all"`) and names the rule it broke.
fn validate(kind: IdKind, raw: &str) -> Result<()> {
    // Fast path for the common case (every listed row is checked): printable ASCII
    // has no control characters and no whitespace.
    if !raw.is_empty() && raw.len() <= MAX_ID_LEN && raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Ok(());
    }
    let rule = if raw.is_empty() {
        Some("must not be empty".to_owned())
    } else if raw.len() > MAX_ID_LEN {
        Some(format!(
            "is {} bytes long, at most {MAX_ID_LEN} are allowed",
            raw.len()
        ))
    } else {
        raw.char_indices().find_map(|(at, c)| {
            if c.is_control() {
                Some(format!("contains a control character {c:?} at byte {at}"))
            } else if c.is_whitespace() {
                Some(format!("contains whitespace {c:?} at byte {at}"))
            } else {
                None
            }
        })
    };
    match rule {
        None => Ok(()),
        Some(rule) => Err(Error::invalid_id(format!(
            "invalid {kind} {}: it {rule}",
            escaped(raw)
        ))),
    }
}

/// The id quoted and escaped for messages, with long ids shortened.
fn escaped(raw: &str) -> String {
    const SHOWN: usize = 64;
    if raw.chars().count() > SHOWN {
        let head: String = raw.chars().take(SHOWN).collect();
        format!("{head:?}…")
    } else {
        format!("{raw:?}")
    }
}

/// Anything the API accepts as an id: an id itself, or text / bytes that are
/// validated on the way in (a bad one is an `InvalidId` error, never a panic).
pub trait IntoId<T> {
    /// Validates and converts.
    fn into_id(self) -> Result<T>;
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        ///
        /// Cheap to clone: the text is shared (`Arc<str>`), so the copies of one id
        /// kept by a membership, its handle and its driver hold one allocation.
        #[derive(Clone)]
        pub struct $name(Arc<str>);

        // Compared and hashed as text. Copies of one id share their text, so equal
        // pointers settle a comparison without reading it (map lookups of keys
        // that came from the same join compare the group this way).
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
            }
        }

        impl Eq for $name {}

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                if Arc::ptr_eq(&self.0, &other.0) {
                    std::cmp::Ordering::Equal
                } else {
                    self.0.cmp(&other.0)
                }
            }
        }

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state)
            }
        }

        impl $name {
            /// Validates `id` and wraps it; a bad id is an [`ErrorKind::InvalidId`](crate::ErrorKind::InvalidId) error.
            pub fn new(id: impl Into<String>) -> Result<Self> {
                let id = id.into();
                validate($kind, &id)?;
                Ok(Self(Arc::from(id)))
            }

            /// [`Self::new`] for borrowed text: one allocation, no intermediate `String`.
            fn from_text(id: &str) -> Result<Self> {
                validate($kind, id)?;
                Ok(Self(Arc::from(id)))
            }

            /// Validates raw bytes: they must be UTF-8 and follow the same rules as [`Self::new`].
            pub fn from_bytes(id: &[u8]) -> Result<Self> {
                match std::str::from_utf8(id) {
                    Ok(s) => Self::from_text(s),
                    // Shown shortened, as every other bad id is: the bytes may be
                    // as long as a request body.
                    Err(e) => Err(Error::invalid_id(format!(
                        "invalid {} {}: it is not valid UTF-8 ({e})",
                        $kind,
                        escaped(&String::from_utf8_lossy(id))
                    ))),
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;
            fn try_from(id: &str) -> Result<Self> {
                Self::from_text(id)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(id: String) -> Result<Self> {
                Self::new(id)
            }
        }

        impl TryFrom<&String> for $name {
            type Error = Error;
            fn try_from(id: &String) -> Result<Self> {
                Self::from_text(id)
            }
        }

        impl IntoId<$name> for $name {
            fn into_id(self) -> Result<$name> {
                Ok(self)
            }
        }

        impl IntoId<$name> for &$name {
            fn into_id(self) -> Result<$name> {
                Ok(self.clone())
            }
        }

        impl IntoId<$name> for &str {
            fn into_id(self) -> Result<$name> {
                $name::from_text(self)
            }
        }

        impl IntoId<$name> for String {
            fn into_id(self) -> Result<$name> {
                $name::new(self)
            }
        }

        impl IntoId<$name> for &String {
            fn into_id(self) -> Result<$name> {
                $name::from_text(self)
            }
        }

        impl IntoId<$name> for &[u8] {
            fn into_id(self) -> Result<$name> {
                $name::from_bytes(self)
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = Error;
            fn try_from(id: &[u8]) -> Result<Self> {
                Self::from_bytes(id)
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(id: &str) -> Result<Self> {
                Self::from_text(id)
            }
        }
    };
}

id_type!(
    /// The name of a group (Nova: a topic such as `compute`).
    GroupId,
    IdKind::Group
);
id_type!(
    /// The name of a member within a group (Nova: a host).
    MemberId,
    IdKind::Member
);

/// A (group, member) pair: the key of one membership record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberKey {
    /// The group.
    pub group: GroupId,
    /// The member within the group.
    pub member: MemberId,
}

impl MemberKey {
    /// Pairs a group and a member.
    pub fn new(group: GroupId, member: MemberId) -> Self {
        Self { group, member }
    }
}

impl fmt::Display for MemberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn accepts_ordinary_ids() {
        for id in [
            "compute",
            "host-1.example.org",
            "ü",
            "a:b/c",
            &"x".repeat(255),
        ] {
            assert_eq!(MemberId::new(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn rejects_bad_ids_with_escaped_message() {
        let cases: &[(&str, &str)] = &[
            ("", "must not be empty"),
            ("a b", "whitespace"),
            ("a\r\nflush_all", "control character"),
            ("tab\there", "control character"),
            ("nbsp\u{a0}x", "whitespace"),
            ("del\u{7f}", "control character"),
        ];
        for (id, rule) in cases {
            let err = MemberId::new(*id).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidId, "{id:?}");
            let msg = err.to_string();
            assert!(msg.contains(rule), "{msg}");
            assert!(msg.contains(&format!("{id:?}")), "{msg}");
        }
        let err = GroupId::new("a\r\nflush_all").unwrap_err();
        assert!(err.to_string().contains(r#""a\r\nflush_all""#), "{err}");
        assert!(err.to_string().contains("group id"), "{err}");
    }

    #[test]
    fn shared_and_separate_copies_compare_and_hash_alike() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        fn hash(id: &impl Hash) -> u64 {
            let mut h = DefaultHasher::new();
            id.hash(&mut h);
            h.finish()
        }
        let a = GroupId::new("compute").unwrap();
        let shared = a.clone();
        let separate = GroupId::new("compute").unwrap();
        let other = GroupId::new("conductor").unwrap();
        assert_eq!(a, shared);
        assert_eq!(a, separate);
        assert_eq!(a.cmp(&separate), std::cmp::Ordering::Equal);
        assert_eq!(hash(&a), hash(&separate));
        assert_eq!(hash(&a), hash(&"compute"), "hashes as its text");
        assert!(a < other && other > separate);
        let k1 = MemberKey::new(a.clone(), MemberId::new("h1").unwrap());
        let k2 = MemberKey::new(separate, MemberId::new("h2").unwrap());
        assert!(k1 < k2);
        assert_eq!(k1, MemberKey::new(shared, MemberId::new("h1").unwrap()));
    }

    #[test]
    fn rejects_too_long_and_non_utf8() {
        let err = MemberId::new("x".repeat(256)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidId);
        assert!(err.to_string().contains("256 bytes"), "{err}");
        let err = MemberId::from_bytes(b"ab\xffcd").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidId);
        assert!(err.to_string().contains("UTF-8"), "{err}");
        // 255 bytes of multi-byte characters is fine, 256 is not.
        assert!(MemberId::new("é".repeat(127) + "x").is_ok());
        assert!(MemberId::new("é".repeat(128)).is_err());
    }
}
