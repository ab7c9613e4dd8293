//! What the driver asks of memcached, as the `memcache` crate's meta-protocol
//! operations ([`memcache::exp::Get`], [`Set`], [`Delete`]), and their answers
//! ([`memcache::exp::OpResult`]) seen the way the backend reads them.
//!
//! Nothing here speaks the protocol: the crate encodes every command, stamps it
//! with an opaque token, pipelines a batch on one connection and checks the echoes
//! (see [`crate::server`]). This module only names the few option sets the driver
//! uses (`mg` with `v`/`c`/`t`, `ms` in modes set, add and append with `T`, `F`,
//! `C`, `c`, `md` with `C`) and folds the crate's result types into one answer per
//! command.

use memcache::exp::{Delete, Get, Meta, MutationStatus, Op, OpResult, Set};

/// What a read asks for besides hit or miss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    /// The value (`v`).
    pub value: bool,
    /// The CAS token (`c`).
    pub cas: bool,
    /// The remaining TTL in seconds (`t`).
    pub ttl: bool,
}

impl Want {
    /// Hit or miss only (and the client flags, which the crate always asks for).
    pub const NOTHING: Want = Want {
        value: false,
        cas: false,
        ttl: false,
    };
    /// The value.
    pub const VALUE: Want = Want {
        value: true,
        ..Want::NOTHING
    };

    /// Also the CAS token.
    #[must_use]
    pub const fn cas(mut self) -> Want {
        self.cas = true;
        self
    }

    /// Also the remaining TTL.
    #[must_use]
    pub const fn ttl(mut self) -> Want {
        self.ttl = true;
        self
    }

    /// Also the client flags (the crate asks for them with every read: a no-op,
    /// kept so call sites say what they read).
    #[must_use]
    pub const fn flags(self) -> Want {
        self
    }

    fn op(self, key: &[u8]) -> Get {
        let mut meta = Meta::NONE;
        if self.cas {
            meta = meta.cas();
        }
        if self.ttl {
            meta = meta.ttl();
        }
        let get = Get::new(key).meta(meta);
        if self.value {
            get
        } else {
            get.without_value()
        }
    }
}

/// How a store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Store whatever is there (the default).
    Set,
    /// Only if there is no item (`ME`).
    Add,
    /// Append to an existing item (`MA`), keeping its TTL and flags.
    Append,
}

/// The options of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Store {
    /// Set, add or append.
    pub mode: Mode,
    /// `T<ttl>` as sent (none = no expiry).
    pub ttl: Option<u32>,
    /// `F<flags>`.
    pub flags: u32,
    /// `C<cas>`: only if the item's CAS token is this one.
    pub cas: Option<u64>,
    /// `c`: return the new CAS token.
    pub return_cas: bool,
}

impl Store {
    /// An unconditional set without TTL, flags or returned CAS.
    pub const SET: Store = Store {
        mode: Mode::Set,
        ttl: None,
        flags: 0,
        cas: None,
        return_cas: false,
    };

    /// With mode `mode`.
    #[must_use]
    pub const fn mode(mut self, mode: Mode) -> Store {
        self.mode = mode;
        self
    }

    /// With TTL `ttl`, sent as it is (callers apply memcached's 30-day rule).
    #[must_use]
    pub const fn ttl(mut self, ttl: u32) -> Store {
        self.ttl = Some(ttl);
        self
    }

    /// With client flags `flags`.
    #[must_use]
    pub const fn flags(mut self, flags: u32) -> Store {
        self.flags = flags;
        self
    }

    /// Only if the item's CAS token is `cas`.
    #[must_use]
    pub const fn cas(mut self, cas: u64) -> Store {
        self.cas = Some(cas);
        self
    }

    /// Only if the item's CAS token is `cas`, or, with `None`, only if there is no
    /// item (add).
    #[must_use]
    pub const fn cas_or_add(self, cas: Option<u64>) -> Store {
        match cas {
            Some(cas) => self.cas(cas),
            None => self.mode(Mode::Add),
        }
    }

    /// Returning the new CAS token.
    #[must_use]
    pub const fn return_cas(mut self) -> Store {
        self.return_cas = true;
        self
    }

    fn op(self, key: &[u8], value: &[u8]) -> Set {
        let mut set = Set::new(key, value).client_flags(self.flags);
        if let Some(ttl) = self.ttl {
            // Passed through untouched: the crate's `Ttl` would turn 30 days into
            // an absolute time.
            set = set.ttl_raw(ttl);
        }
        set = match self.mode {
            Mode::Set => set,
            Mode::Add => set.add(),
            Mode::Append => set.append(),
        };
        if let Some(cas) = self.cas {
            set = set.compare_cas(cas);
        }
        if self.return_cas {
            set = set.return_cas();
        }
        set
    }
}

/// The commands of one pipelined exchange.
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<Op>,
    /// Per command: an append without `C` (its "not stored" means the item is
    /// missing, which the crate reports as `NotFound`).
    plain_append: Vec<bool>,
    bytes: usize,
    key: Vec<u8>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commands in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// About the bytes the batch puts on the wire.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn push(&mut self, op: Op, plain_append: bool, bytes: usize) -> usize {
        self.ops.push(op);
        self.plain_append.push(plain_append);
        self.bytes += bytes + 32;
        self.ops.len() - 1
    }

    /// Reads `key`; returns the command's position.
    pub fn get(&mut self, key: &str, want: Want) -> usize {
        self.push(want.op(key.as_bytes()).into(), false, key.len())
    }

    /// Reads the key `write` appends (keys built without a `String` each).
    pub fn get_with(&mut self, write: impl FnOnce(&mut Vec<u8>), want: Want) -> usize {
        self.key.clear();
        write(&mut self.key);
        let op = want.op(&self.key).into();
        let len = self.key.len();
        self.push(op, false, len)
    }

    /// Stores `value` under `key`; returns the command's position.
    pub fn store(&mut self, key: &str, value: &[u8], store: Store) -> usize {
        self.store_with(|out| out.extend_from_slice(key.as_bytes()), value, store)
    }

    /// [`Self::store`] under the key `write` appends.
    pub fn store_with(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>),
        value: &[u8],
        store: Store,
    ) -> usize {
        self.key.clear();
        write(&mut self.key);
        let op = store.op(&self.key, value).into();
        let plain = store.mode == Mode::Append && store.cas.is_none();
        let len = self.key.len() + value.len();
        self.push(op, plain, len)
    }

    /// Deletes `key`, only at CAS `cas` if given; returns the command's position.
    pub fn delete(&mut self, key: &str, cas: Option<u64>) -> usize {
        let mut op = Delete::new(key);
        if let Some(cas) = cas {
            op = op.compare_cas(cas);
        }
        self.push(op.into(), false, key.len())
    }

    /// The operations for the crate, and what [`Reply::new`] needs to read their
    /// answers.
    pub fn into_parts(self) -> (Vec<Op>, Vec<bool>) {
        (self.ops, self.plain_append)
    }
}

/// What memcached answered to one store or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Applied (`HD`).
    Done,
    /// Not stored: add of an existing item, append to a missing one (`NS`).
    NotStored,
    /// The item's CAS token is another one (`EX`).
    Exists,
    /// No such item, for a store or delete with `C`, or a delete (`NF`).
    NotFound,
}

/// The answers of one exchange, in command order.
#[derive(Debug, Default)]
pub struct Reply {
    results: Vec<OpResult>,
    plain_append: Vec<bool>,
}

/// One read's answer.
#[derive(Debug, Clone, Copy)]
pub struct Got<'a> {
    hit: bool,
    /// The value (empty when not asked for or missed).
    pub value: &'a [u8],
    /// The CAS token, when asked for and hit.
    pub cas: Option<u64>,
    /// The remaining TTL in seconds (-1: none), when asked for and hit.
    pub ttl: Option<i64>,
    /// The client flags, when hit.
    pub flags: Option<u32>,
}

impl Got<'_> {
    /// Whether the item exists.
    pub fn hit(&self) -> bool {
        self.hit
    }
}

/// One store's or delete's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wrote {
    /// What happened.
    pub code: Code,
    /// The new CAS token, when asked for and applied.
    pub cas: Option<u64>,
}

impl Reply {
    /// The answers to a batch's operations (`plain_append` from
    /// [`Batch::into_parts`]).
    pub fn new(results: Vec<OpResult>, plain_append: Vec<bool>) -> Self {
        Self {
            results,
            plain_append,
        }
    }

    /// The answer to the read at `position`.
    pub fn got(&self, position: usize) -> Option<Got<'_>> {
        let get = self.results.get(position)?.as_get()?;
        Some(Got {
            hit: get.hit(),
            value: get.value.as_deref().unwrap_or_default(),
            cas: get.item.cas,
            ttl: get.item.ttl,
            flags: get.client_flags,
        })
    }

    /// The answer to the store or delete at `position`.
    pub fn wrote(&self, position: usize) -> Option<Wrote> {
        let m = self.results.get(position)?.as_mutation()?;
        let code = match m.status {
            MutationStatus::Applied => Code::Done,
            MutationStatus::AlreadyExists => Code::NotStored,
            MutationStatus::CasMismatch => Code::Exists,
            MutationStatus::NotFound if self.plain_append[position] => Code::NotStored,
            MutationStatus::NotFound => Code::NotFound,
            _ => return None,
        };
        Some(Wrote { code, cas: m.cas })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_the_crates_operations() {
        let mut b = Batch::new();
        b.get("k", Want::VALUE.cas().ttl());
        b.get_with(|out| out.extend_from_slice(b"k2"), Want::NOTHING);
        b.store(
            "s",
            b"v",
            Store::SET.ttl(2_592_000).cas(17).flags(3).return_cas(),
        );
        b.store("a", b"v", Store::SET.mode(Mode::Append));
        b.store("e", b"v", Store::SET.cas_or_add(None));
        b.delete("d", Some(5));
        assert_eq!(b.len(), 6);
        let (ops, plain) = b.into_parts();
        assert_eq!(plain, [false, false, false, true, false, false]);
        let Op::Get(g) = &ops[0] else { panic!() };
        assert!(g.value && g.meta.cas && g.meta.ttl);
        let Op::Get(g) = &ops[1] else { panic!() };
        assert!(!g.value && !g.meta.cas && g.key == b"k2");
        let Op::Set(s) = &ops[2] else { panic!() };
        assert_eq!(
            (s.compare_cas, s.client_flags, s.return_cas),
            (Some(17), 3, true)
        );
        assert!(s.ttl.is_some());
        let Op::Set(s) = &ops[4] else { panic!() };
        assert_eq!(s.mode, memcache::exp::SetMode::Add);
        let Op::Delete(d) = &ops[5] else { panic!() };
        assert_eq!(d.compare_cas, Some(5));
    }
}
