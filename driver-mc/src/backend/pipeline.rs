//! Pipelined exchanges: commands of one work item split into exchanges of at most
//! [`CHUNK`] commands (and [`CHUNK_BYTES`] bytes), keeping groups of commands that
//! must travel together in one exchange; and the boot token a session's exchanges
//! are checked against (see [`crate::server`] and [`crate::cache`]).

use std::sync::atomic::Ordering;

use servicegroup_core::{Error, InstanceId, Result};

use super::{Backend, MAX_ATTEMPTS};
use crate::cache::{token_of, Boot, Token};
use crate::ops::{Batch, Got, Mode, Reply, Store, Want, Wrote};
use crate::server::{Session, CHUNK, CHUNK_BYTES};
use crate::NAME;

/// Where a group of commands went: which exchange, and the position of its first
/// command there.
#[derive(Debug, Clone, Copy)]
pub(super) struct At {
    chunk: u32,
    index: u32,
}

/// Commands for one server in exchanges of at most [`CHUNK`] commands.
#[derive(Debug, Default)]
pub(super) struct Pipeline {
    batches: Vec<Batch>,
}

impl Pipeline {
    /// The batch the next group of `n` commands goes to (they travel in one
    /// exchange, in the order they are added), and where the group starts.
    pub(super) fn group(&mut self, n: usize) -> (At, &mut Batch) {
        let fits = self
            .batches
            .last()
            .is_some_and(|b| b.len() + n <= CHUNK && b.bytes() < CHUNK_BYTES);
        if !fits {
            self.batches.push(Batch::new());
        }
        let chunk = self.batches.len() - 1;
        let batch = &mut self.batches[chunk];
        let at = At {
            chunk: chunk as u32,
            index: batch.len() as u32,
        };
        (at, batch)
    }

    /// Adds one read; returns where it went.
    pub(super) fn get(&mut self, key: &str, want: Want) -> At {
        let (at, batch) = self.group(1);
        batch.get(key, want);
        at
    }

    /// Adds one store; returns where it went.
    pub(super) fn store(&mut self, key: &str, value: &[u8], store: Store) -> At {
        let (at, batch) = self.group(1);
        batch.store(key, value, store);
        at
    }

    /// Adds one delete; returns where it went.
    pub(super) fn delete(&mut self, key: &str, cas: Option<u64>) -> At {
        let (at, batch) = self.group(1);
        batch.delete(key, cas);
        at
    }

    /// Whether nothing was added.
    pub(super) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// The answers of a [`Pipeline`].
pub(super) struct Ran {
    replies: Vec<Reply>,
}

fn wrong_kind(what: &str) -> Error {
    Error::backend(format!(
        "memcached answered a {what} with another kind of answer"
    ))
    .with_driver(NAME)
}

impl Ran {
    /// The read `offset` commands after `at`.
    pub(super) fn got(&self, at: At, offset: usize) -> Result<Got<'_>> {
        self.replies
            .get(at.chunk as usize)
            .and_then(|r| r.got(at.index as usize + offset))
            .ok_or_else(|| wrong_kind("read"))
    }

    /// The store or delete `offset` commands after `at`.
    pub(super) fn wrote(&self, at: At, offset: usize) -> Result<Wrote> {
        self.replies
            .get(at.chunk as usize)
            .and_then(|r| r.wrote(at.index as usize + offset))
            .ok_or_else(|| wrong_kind("store or delete"))
    }
}

impl Backend {
    /// Runs `pipe` in the session, one exchange per batch in order
    /// (counted in [`super::heartbeat_exchanges`] when `counted`).
    pub(super) fn run_pipeline(
        &self,
        session: &mut Session<'_>,
        pipe: Pipeline,
        counted: bool,
    ) -> Result<Ran> {
        let mut replies = Vec::with_capacity(pipe.batches.len());
        for batch in pipe.batches {
            if counted {
                self.exchanges.fetch_add(1, Ordering::Relaxed);
            }
            replies.push(session.exchange(batch)?);
        }
        Ok(Ran { replies })
    }

    /// One exchange of `batch` (counted when `counted`).
    pub(super) fn run_batch(
        &self,
        session: &mut Session<'_>,
        batch: Batch,
        counted: bool,
    ) -> Result<Reply> {
        if counted && !batch.is_empty() {
            self.exchanges.fetch_add(1, Ordering::Relaxed);
        }
        session.exchange(batch)
    }

    /// The boot token of the server as this session sees it, checked against what
    /// this driver remembers about `server`: read in an exchange of its own (a
    /// missing token is written first), then every later exchange of the session
    /// opens with a read of it and fails if it changed (see [`crate::server`]). The
    /// cache then holds only what belongs to the life of the server the session
    /// talks to, so remembered CAS tokens may be compared and sent in it.
    pub(super) fn life(
        &self,
        server: usize,
        session: &mut Session<'_>,
        counted: bool,
    ) -> Result<(Token, Boot)> {
        if let Some(token) = session.life() {
            if self.cache(server).boot() == Some(token) {
                return Ok((token, Boot::Same));
            }
        }
        let token = self.read_boot(server, session, counted)?;
        session.set_life(token);
        let boot = self.cache(server).observe(token);
        if boot == Boot::Changed {
            tracing::debug!(
                driver = NAME,
                server = self.servers[server].address(),
                "memcached server has a boot token this driver did not know (first contact, or it restarted)"
            );
        }
        Ok((token, boot))
    }

    /// Reads the server's boot token, writing a random one first if there is none
    /// (memcached restarted or was flushed): `add`, then read back whichever won.
    fn read_boot(&self, server: usize, session: &mut Session<'_>, counted: bool) -> Result<Token> {
        let key = self.keys.boot();
        let mut batch = Batch::new();
        batch.get(&key, Want::VALUE);
        let reply = self.run_batch(session, batch, counted)?;
        if let Some(got) = reply.got(0).filter(|g| g.hit()) {
            return Ok(token_of(got.value));
        }
        for _ in 0..MAX_ATTEMPTS {
            let mut batch = Batch::new();
            batch.store(
                &key,
                InstanceId::random().to_hex().as_bytes(),
                Store::SET.mode(Mode::Add),
            );
            batch.get(&key, Want::VALUE);
            let reply = self.run_batch(session, batch, counted)?;
            if let Some(got) = reply.got(1).filter(|g| g.hit()) {
                return Ok(token_of(got.value));
            }
        }
        Err(Error::backend(format!(
            "memcached server {} drops its boot key as soon as it is written (is it out of memory?)",
            self.servers[server].address()
        ))
        .with_driver(NAME))
    }
}
