//! Pipelined exchanges that carry remembered CAS tokens: every exchange opens with
//! a read of the server's boot token, so what it returns is judged against the
//! life of the server it came from (see [`crate::cache`]).

use std::sync::atomic::Ordering;

use memcache::exp::{Get, GetResult, MutationResult, Op, OpResult, Set};
use servicegroup_core::{Error, InstanceId, Result};

use super::{Backend, MAX_ATTEMPTS};
use crate::cache::{token_of, Boot};
use crate::server::{get_at, mutation_at, CHUNK};
use crate::NAME;

/// Where a group of operations went: which exchange, and the index of its first
/// operation there.
#[derive(Debug, Clone, Copy)]
pub(super) struct At {
    chunk: usize,
    index: usize,
}

/// Operations for one server in exchanges of at most [`CHUNK`] plus the read of
/// the boot key each one opens with.
pub(super) struct Pipeline {
    boot: String,
    chunks: Vec<Vec<Op>>,
}

impl Pipeline {
    /// Adds operations that must travel in one exchange, in this order.
    pub(super) fn push<const N: usize>(&mut self, ops: [Op; N]) -> At {
        let fits = self
            .chunks
            .last()
            .is_some_and(|chunk| chunk.len() + N <= CHUNK + 1);
        if !fits {
            self.chunks.push(vec![Get::new(&self.boot).into()]);
        }
        let chunk = self.chunks.len() - 1;
        let ops_of_chunk = &mut self.chunks[chunk];
        let index = ops_of_chunk.len();
        ops_of_chunk.extend(ops);
        At { chunk, index }
    }

    /// Whether nothing was pushed.
    pub(super) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// The results of a [`Pipeline`]: per exchange, what its boot read found and the
/// answers.
pub(super) struct Ran {
    chunks: Vec<(Boot, Vec<OpResult>)>,
}

impl Ran {
    /// What the boot read of `at`'s exchange found.
    pub(super) fn boot(&self, at: At) -> Boot {
        self.chunks[at.chunk].0
    }

    /// Whether some exchange found the boot key missing.
    pub(super) fn boot_missing(&self) -> bool {
        self.chunks.iter().any(|(boot, _)| *boot == Boot::Missing)
    }

    /// The read `offset` operations after `at`.
    pub(super) fn get(&self, at: At, offset: usize) -> Result<&GetResult> {
        get_at(&self.chunks[at.chunk].1, at.index + offset)
    }

    /// The store or delete `offset` operations after `at`.
    pub(super) fn mutation(&self, at: At, offset: usize) -> Result<&MutationResult> {
        mutation_at(&self.chunks[at.chunk].1, at.index + offset)
    }
}

impl Backend {
    /// An empty pipeline for this backend's boot key.
    pub(super) fn pipeline(&self) -> Pipeline {
        Pipeline {
            boot: self.keys.boot(),
            chunks: Vec::new(),
        }
    }

    /// Runs `pipe` on `server`, one exchange per chunk in order (counted in
    /// [`super::heartbeat_exchanges`] when `counted`), and records each boot read in
    /// the server's cache as it comes.
    pub(super) fn run_pipeline(&self, server: usize, pipe: Pipeline, counted: bool) -> Result<Ran> {
        let mut chunks = Vec::with_capacity(pipe.chunks.len());
        for ops in pipe.chunks {
            if counted {
                self.exchanges.fetch_add(1, Ordering::Relaxed);
            }
            let results = self.servers[server].run_exchange(ops)?;
            let got = get_at(&results, 0)?;
            let read = match (&got.value, got.hit()) {
                (Some(value), true) => Some(token_of(value)),
                _ => None,
            };
            let boot = self.cache(server).observe(read);
            chunks.push((boot, results));
        }
        Ok(Ran { chunks })
    }

    /// Writes a new boot token if there is none (memcached restarted or was
    /// flushed): `add` a random one and read back whichever won, in one exchange.
    pub(super) fn ensure_boot(&self, server: usize, counted: bool) -> Result<Boot> {
        let key = self.keys.boot();
        for _ in 0..MAX_ATTEMPTS {
            let ops: Vec<Op> = vec![
                Set::new(&key, InstanceId::random().to_hex()).add().into(),
                Get::new(&key).into(),
            ];
            let results = if counted {
                self.run_counted(server, ops)?
            } else {
                self.run(server, ops)?
            };
            let got = get_at(&results, 1)?;
            if let (Some(value), true) = (&got.value, got.hit()) {
                let boot = self.cache(server).observe(Some(token_of(value)));
                tracing::debug!(
                    driver = NAME,
                    server = self.servers[server].address(),
                    "memcached server has a new boot token (it restarted or was flushed)"
                );
                return Ok(boot);
            }
        }
        Err(Error::backend(format!(
            "memcached server {} drops its boot key as soon as it is written (is it out of memory?)",
            self.servers[server].address()
        ))
        .with_driver(NAME))
    }
}
