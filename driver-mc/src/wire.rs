//! The memcached meta protocol as this driver speaks it: requests encoded straight
//! into one payload per pipelined exchange, answers parsed straight off the socket's
//! read buffer.
//!
//! Only what the driver sends exists here: `mg` (with `v`, `c`, `t`, `f`), `ms`
//! (modes set, add and append; `T`, `F`, `C`, `c`) and `md` (with `C`). Every
//! command carries an opaque token `O<position>` that its answer must echo, so an
//! answer is never paired with the wrong command: a mismatch fails the exchange and
//! the connection is dropped.
//!
//! Answers land in one [`Reply`] per exchange: a small fixed record per command
//! and one shared buffer for all values. A listing of thousands of members costs
//! a handful of allocations per exchange instead of several per member (the
//! `memcache` crate's client builds a command object, flag vectors and a result
//! object per operation; that was 50 % of a listing's time).

use std::io::{self, BufRead, BufReader, Read};
use std::ops::Range;

/// What a read asks for besides hit or miss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    /// The value (`v`).
    pub value: bool,
    /// The CAS token (`c`).
    pub cas: bool,
    /// The remaining TTL in seconds (`t`).
    pub ttl: bool,
    /// The client flags (`f`).
    pub flags: bool,
}

impl Want {
    /// Hit or miss only.
    pub const NOTHING: Want = Want {
        value: false,
        cas: false,
        ttl: false,
        flags: false,
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

    /// Also the client flags.
    #[must_use]
    pub const fn flags(mut self) -> Want {
        self.flags = true;
        self
    }
}

/// How a store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Store whatever is there (`MS`, the default).
    Set,
    /// Only if there is no item (`ME`); `NS` otherwise.
    Add,
    /// Append to an existing item (`MA`), keeping its TTL and flags; `NS` when missing.
    Append,
}

/// The options of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Store {
    /// Set, add or append.
    pub mode: Mode,
    /// `T<ttl>`: none = no expiry.
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

    /// With TTL `ttl` (memcached's rule: above 30 days it is an absolute unix time).
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
}

/// The kind of a command, to check its answer against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Get { value: bool },
    Store,
    Delete,
}

/// The commands of one pipelined exchange, encoded as they are added.
#[derive(Debug, Default)]
pub struct Batch {
    payload: Vec<u8>,
    kinds: Vec<Kind>,
}

/// Appends the decimal digits of `n`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commands in the batch.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// Bytes of the encoded payload.
    pub fn bytes(&self) -> usize {
        self.payload.len()
    }

    /// The encoded payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The verb, then the key as `write` appends it (keys built in place, without
    /// a `String` per command).
    fn key_with(&mut self, verb: &[u8], write: impl FnOnce(&mut Vec<u8>)) {
        self.payload.extend_from_slice(verb);
        let start = self.payload.len();
        write(&mut self.payload);
        debug_assert!(
            {
                let key = &self.payload[start..];
                !key.is_empty() && key.len() <= 250 && key.iter().all(|b| (0x21..=0x7e).contains(b))
            },
            "unsafe memcached key {:?}",
            String::from_utf8_lossy(&self.payload[start..])
        );
    }

    fn flag(&mut self, letter: u8, n: u64) {
        self.payload.push(b' ');
        self.payload.push(letter);
        push_u64(&mut self.payload, n);
    }

    fn end(&mut self, kind: Kind) -> usize {
        let position = self.kinds.len();
        self.flag(b'O', position as u64);
        self.payload.extend_from_slice(b"\r\n");
        self.kinds.push(kind);
        position
    }

    /// `mg <key> [v] [c] [t] [f]`; returns the command's position.
    pub fn get(&mut self, key: &str, want: Want) -> usize {
        self.get_with(|out| out.extend_from_slice(key.as_bytes()), want)
    }

    /// [`Self::get`] of the key `write` appends.
    pub fn get_with(&mut self, write: impl FnOnce(&mut Vec<u8>), want: Want) -> usize {
        self.key_with(b"mg ", write);
        for (on, flag) in [
            (want.value, &b" v"[..]),
            (want.cas, b" c"),
            (want.ttl, b" t"),
            (want.flags, b" f"),
        ] {
            if on {
                self.payload.extend_from_slice(flag);
            }
        }
        self.end(Kind::Get { value: want.value })
    }

    /// `ms <key> <len> ...` with `value`; returns the command's position and where
    /// the value sits in the payload (see [`Self::value_mut`]).
    pub fn store(&mut self, key: &str, value: &[u8], store: Store) -> (usize, Range<usize>) {
        self.store_with(|out| out.extend_from_slice(key.as_bytes()), value, store)
    }

    /// [`Self::store`] under the key `write` appends.
    pub fn store_with(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>),
        value: &[u8],
        store: Store,
    ) -> (usize, Range<usize>) {
        self.key_with(b"ms ", write);
        self.payload.push(b' ');
        push_u64(&mut self.payload, value.len() as u64);
        if let Some(ttl) = store.ttl {
            self.flag(b'T', u64::from(ttl));
        }
        if store.flags != 0 {
            self.flag(b'F', u64::from(store.flags));
        }
        if let Some(cas) = store.cas {
            self.flag(b'C', cas);
        }
        match store.mode {
            Mode::Set => {}
            Mode::Add => self.payload.extend_from_slice(b" ME"),
            Mode::Append => self.payload.extend_from_slice(b" MA"),
        }
        if store.return_cas {
            self.payload.extend_from_slice(b" c");
        }
        let position = self.end(Kind::Store);
        let start = self.payload.len();
        self.payload.extend_from_slice(value);
        let range = start..self.payload.len();
        self.payload.extend_from_slice(b"\r\n");
        (position, range)
    }

    /// The bytes of a value already in the payload (to patch a copied value in
    /// place instead of building it separately).
    pub fn value_mut(&mut self, range: Range<usize>) -> &mut [u8] {
        &mut self.payload[range]
    }

    /// `md <key> [C<cas>]`; returns the command's position.
    pub fn delete(&mut self, key: &str, cas: Option<u64>) -> usize {
        self.key_with(b"md ", |out| out.extend_from_slice(key.as_bytes()));
        if let Some(cas) = cas {
            self.flag(b'C', cas);
        }
        self.end(Kind::Delete)
    }
}

/// What memcached answered to one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A read found the item (`VA` or `HD`).
    Hit,
    /// A read found nothing (`EN`).
    Miss,
    /// A store or delete was applied (`HD`).
    Done,
    /// Not stored: add of an existing item, append to a missing one (`NS`).
    NotStored,
    /// The item's CAS token is another one (`EX`).
    Exists,
    /// No such item, for a store or delete with `C` (`NF`).
    NotFound,
}

/// One answer of a [`Reply`].
#[derive(Debug, Clone, Copy)]
struct Answer {
    code: Code,
    value: (u32, u32),
    cas: Option<u64>,
    ttl: Option<i64>,
    flags: Option<u32>,
}

/// The answers of one exchange, in command order.
#[derive(Debug, Default)]
pub struct Reply {
    data: Vec<u8>,
    answers: Vec<Answer>,
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
    /// The client flags, when asked for and hit.
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
    /// The answer to the read at `position`.
    pub fn got(&self, position: usize) -> Option<Got<'_>> {
        let a = self.answers.get(position)?;
        let (start, len) = (a.value.0 as usize, a.value.1 as usize);
        match a.code {
            Code::Hit | Code::Miss => Some(Got {
                hit: a.code == Code::Hit,
                value: &self.data[start..start + len],
                cas: a.cas,
                ttl: a.ttl,
                flags: a.flags,
            }),
            _ => None,
        }
    }

    /// The answer to the store or delete at `position`.
    pub fn wrote(&self, position: usize) -> Option<Wrote> {
        let a = self.answers.get(position)?;
        match a.code {
            Code::Hit | Code::Miss => None,
            code => Some(Wrote { code, cas: a.cas }),
        }
    }
}

/// Why reading answers failed.
#[derive(Debug)]
pub enum WireError {
    /// The socket failed or timed out.
    Io(io::Error),
    /// memcached answered something this driver cannot pair with its command.
    Protocol(String),
    /// memcached answered `CLIENT_ERROR`, `SERVER_ERROR` or `ERROR`.
    Server(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Protocol(m) => write!(f, "protocol error: {m}"),
            WireError::Server(m) => write!(f, "memcached answered {m:?}"),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

fn protocol(message: impl Into<String>) -> WireError {
    WireError::Protocol(message.into())
}

fn number(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in token {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

fn signed(token: &[u8]) -> Option<i64> {
    match token.split_first() {
        Some((b'-', rest)) => number(rest).and_then(|n| i64::try_from(n).ok()).map(|n| -n),
        _ => number(token).and_then(|n| i64::try_from(n).ok()),
    }
}

/// Reads one line (without its `\r\n`) into `line`. `arm` runs before every read
/// that has to go to the socket (to set the remaining time of the deadline).
fn read_line<S: Read>(
    reader: &mut BufReader<S>,
    line: &mut Vec<u8>,
    arm: &mut dyn FnMut(&S) -> io::Result<()>,
) -> Result<(), WireError> {
    line.clear();
    loop {
        if reader.buffer().is_empty() {
            arm(reader.get_ref())?;
        }
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => {
                line.extend_from_slice(&buffer[..end]);
                reader.consume(end + 1);
                break;
            }
            None => {
                let n = buffer.len();
                line.extend_from_slice(buffer);
                reader.consume(n);
                if line.len() > 64 * 1024 {
                    return Err(protocol("an answer line longer than 64 KiB"));
                }
            }
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(())
}

/// Reads exactly `n` bytes onto the end of `out`.
fn read_data<S: Read>(
    reader: &mut BufReader<S>,
    out: &mut Vec<u8>,
    mut n: usize,
    arm: &mut dyn FnMut(&S) -> io::Result<()>,
) -> Result<(), WireError> {
    out.reserve(n);
    while n > 0 {
        if reader.buffer().is_empty() {
            arm(reader.get_ref())?;
        }
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        let take = n.min(buffer.len());
        out.extend_from_slice(&buffer[..take]);
        reader.consume(take);
        n -= take;
    }
    Ok(())
}

/// Reads the answers to `batch` from `reader`, in order, each checked against its
/// command's kind and opaque token.
pub fn read_reply<S: Read>(
    reader: &mut BufReader<S>,
    batch: &Batch,
    arm: &mut dyn FnMut(&S) -> io::Result<()>,
) -> Result<Reply, WireError> {
    let mut reply = Reply {
        data: Vec::new(),
        answers: Vec::with_capacity(batch.kinds.len()),
    };
    let mut line = Vec::with_capacity(128);
    for (position, &kind) in batch.kinds.iter().enumerate() {
        read_line(reader, &mut line, arm)?;
        let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
        let head = tokens.next().unwrap_or_default();
        let mut datalen = None;
        let code = match (head, kind) {
            (b"VA", Kind::Get { value: true }) => {
                let len = tokens
                    .next()
                    .and_then(number)
                    .ok_or_else(|| protocol("VA without a length"))?;
                datalen = Some(usize::try_from(len).map_err(|_| protocol("VA too long"))?);
                Code::Hit
            }
            (b"HD", Kind::Get { value: false }) => Code::Hit,
            (b"EN", Kind::Get { .. }) => Code::Miss,
            (b"HD", Kind::Store | Kind::Delete) => Code::Done,
            (b"NS", Kind::Store) => Code::NotStored,
            (b"EX", Kind::Store | Kind::Delete) => Code::Exists,
            (b"NF", Kind::Store | Kind::Delete) => Code::NotFound,
            (b"CLIENT_ERROR" | b"SERVER_ERROR" | b"ERROR", _) => {
                return Err(WireError::Server(
                    String::from_utf8_lossy(&line).chars().take(200).collect(),
                ));
            }
            _ => {
                return Err(protocol(format!(
                    "answer {:?} to command {position} ({kind:?})",
                    String::from_utf8_lossy(&line)
                        .chars()
                        .take(80)
                        .collect::<String>()
                )));
            }
        };
        let mut answer = Answer {
            code,
            value: (0, 0),
            cas: None,
            ttl: None,
            flags: None,
        };
        let mut opaque = None;
        for token in tokens {
            let (letter, rest) = (token[0], &token[1..]);
            match letter {
                b'c' => answer.cas = number(rest),
                b't' => answer.ttl = signed(rest),
                b'f' => answer.flags = number(rest).and_then(|n| u32::try_from(n).ok()),
                b'O' => opaque = number(rest),
                _ => {}
            }
        }
        if opaque != Some(position as u64) {
            return Err(protocol(format!(
                "answer {position} carries opaque {opaque:?}: answers and commands are out of step"
            )));
        }
        if let Some(len) = datalen {
            let start = reply.data.len();
            read_data(reader, &mut reply.data, len + 2, arm)?;
            if &reply.data[start + len..] != b"\r\n" {
                return Err(protocol("a value without its \\r\\n"));
            }
            reply.data.truncate(start + len);
            let start = u32::try_from(start).map_err(|_| protocol("reply over 4 GiB"))?;
            answer.value = (start, len as u32);
        }
        reply.answers.push(answer);
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(batch: &Batch, answers: &[u8]) -> Result<Reply, WireError> {
        // A tiny buffer, so lines and values straddle refills.
        let mut reader = BufReader::with_capacity(7, answers);
        read_reply(&mut reader, batch, &mut |_| Ok(()))
    }

    #[test]
    fn commands_are_encoded_with_opaque_tokens() {
        let mut b = Batch::new();
        assert_eq!(b.get("sg:m3:g:a", Want::VALUE.cas().ttl()), 0);
        let (p, range) = b.store(
            "sg:m3:g:a",
            b"hello",
            Store::SET.ttl(60).cas(17).return_cas(),
        );
        assert_eq!(p, 1);
        b.value_mut(range).copy_from_slice(b"HELLO");
        b.store("sg:d3:g:a", b"x", Store::SET.flags(9).mode(Mode::Add));
        b.store("sg:i:g:00", b"m\n", Store::SET.mode(Mode::Append).cas(3));
        b.delete("sg:d3:g:a", Some(5));
        b.get("sg:boot", Want::NOTHING);
        assert_eq!(
            String::from_utf8(b.payload().to_vec()).unwrap(),
            "mg sg:m3:g:a v c t O0\r\n\
             ms sg:m3:g:a 5 T60 C17 c O1\r\nHELLO\r\n\
             ms sg:d3:g:a 1 F9 ME O2\r\nx\r\n\
             ms sg:i:g:00 2 C3 MA O3\r\nm\n\r\n\
             md sg:d3:g:a C5 O4\r\n\
             mg sg:boot O5\r\n"
        );
        assert_eq!(b.len(), 6);
        let mut n = Vec::new();
        push_u64(&mut n, 0);
        push_u64(&mut n, u64::MAX);
        assert_eq!(n, b"018446744073709551615");
    }

    #[test]
    fn answers_are_parsed_and_checked() {
        let mut b = Batch::new();
        b.get("a", Want::VALUE.cas().ttl().flags());
        b.get("b", Want::VALUE);
        b.get("c", Want::NOTHING.cas());
        b.store("d", b"v", Store::SET.return_cas());
        b.store("e", b"v", Store::SET);
        b.store("f", b"v", Store::SET);
        b.delete("g", None);
        b.store("h", b"v", Store::SET);
        let r = replay(
            &b,
            b"VA 12 c5 t-1 f7 O0\r\nhello\r\nworld\r\nEN O1\r\nHD c9 O2\r\nHD c10 O3\r\nEX O4\r\nNS O5\r\nNF O6\r\nHD O7\r\n",
        )
        .unwrap();
        let a = r.got(0).unwrap();
        assert!(a.hit());
        assert_eq!(a.value, b"hello\r\nworld");
        assert_eq!((a.cas, a.ttl, a.flags), (Some(5), Some(-1), Some(7)));
        assert!(!r.got(1).unwrap().hit());
        assert_eq!(r.got(2).unwrap().cas, Some(9));
        assert_eq!(
            r.wrote(3).unwrap(),
            Wrote {
                code: Code::Done,
                cas: Some(10)
            }
        );
        assert_eq!(r.wrote(4).unwrap().code, Code::Exists);
        assert_eq!(r.wrote(5).unwrap().code, Code::NotStored);
        assert_eq!(r.wrote(6).unwrap().code, Code::NotFound);
        assert_eq!(r.wrote(7).unwrap().code, Code::Done);
        assert!(r.got(3).is_none() && r.wrote(0).is_none());
    }

    #[test]
    fn mismatched_answers_fail() {
        let mut b = Batch::new();
        b.get("a", Want::VALUE);
        b.get("b", Want::VALUE);
        assert!(matches!(
            replay(&b, b"EN O1\r\nEN O0\r\n"),
            Err(WireError::Protocol(_))
        ));
        assert!(matches!(
            replay(&b, b"HD O0\r\nEN O1\r\n"),
            Err(WireError::Protocol(_))
        ));
        assert!(matches!(
            replay(&b, b"SERVER_ERROR out of memory\r\n"),
            Err(WireError::Server(_))
        ));
        assert!(matches!(replay(&b, b"EN O0\r\n"), Err(WireError::Io(_))));
        assert!(matches!(
            replay(&b, b"VA 3 O0\r\nabcd\r\nEN O1\r\n"),
            Err(WireError::Protocol(_))
        ));
    }
}
