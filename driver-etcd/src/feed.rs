//! The native watch: an etcd watch on one group's records and alive keys, offered to
//! core as a [`ChangeFeed`]. Every change of a member's state is a key change there:
//! a join, takeover, metadata or forced-down change puts the record; a leave or
//! removal deletes it; a lease expiry (the member is down) deletes the alive key.
//!
//! The watch resumes after the last revision it saw when the connection breaks (the
//! break is reported once as an error, the resumption as a change). When etcd
//! compacted past that revision it starts over from the current one and signals a
//! change: core lists the group afresh and its diff reports each transition once.
//!
//! A stream can also go silent without breaking: a stalled cluster (every member
//! stopped, or no quorum) keeps the connection open and sends nothing. So after
//! [`quiet_limit`] without a line the feed asks etcd for one small key; when that
//! fails as unreachable, the feed reports the outage like a break. Core then holds
//! back what the first listings after it show (a cluster stalled past the lease TTL
//! may revoke every lease at once when it resumes: etcd #15247; the members register
//! again within one interval), exactly as for a poll that failed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;
use servicegroup_core::{async_trait, ChangeFeed, Error, GroupId, Result};
use tokio::sync::watch;

use crate::backend::Backend;
use crate::kv::{int, Range};
use crate::watches::{self, Watcher};
use crate::NAME;

/// What the feed's task last saw: a count of changes, and of outages (a broken or
/// silently stalled watch) with the last one's error while it lasts.
#[derive(Debug, Clone, Default)]
struct Signal {
    changes: u64,
    outages: u64,
    /// Why the current outage began (`None`: etcd answers).
    error: Option<String>,
    /// Why the last outage began (kept after it ended).
    last_error: String,
}

impl Signal {
    /// Starts an outage (once: a lasting one is not reported again).
    fn outage(&mut self, why: String) {
        if self.error.is_none() {
            self.outages += 1;
            self.last_error.clone_from(&why);
            self.error = Some(why);
        }
    }

    /// Ends the outage, if any, and signals a change: what changed meanwhile is listed.
    fn resumed(&mut self) {
        self.error = None;
        self.changes += 1;
    }
}

/// One group's change feed; its task ends when the feed is dropped.
#[derive(Debug)]
pub(crate) struct EtcdFeed {
    signals: watch::Receiver<Signal>,
    task: tokio::task::AbortHandle,
    /// Outages already reported to core.
    outages_seen: u64,
    /// A change that came with an outage's end, reported after the outage.
    change_owed: bool,
}

impl Drop for EtcdFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl ChangeFeed for EtcdFeed {
    /// Every outage is reported as one `Err`, even one that began and ended before
    /// this was called (core must know the store was away to hold back what its
    /// next listings show); the change that ended it follows as `Ok`.
    async fn changed(&mut self) -> Result<()> {
        if std::mem::take(&mut self.change_owed) {
            return Ok(());
        }
        self.signals
            .changed()
            .await
            .map_err(|_| Error::unavailable("the etcd watch task ended").with_driver(NAME))?;
        let signal = self.signals.borrow_and_update().clone();
        if signal.outages > self.outages_seen {
            self.outages_seen = signal.outages;
            self.change_owed = signal.error.is_none();
            let why = signal.error.unwrap_or(signal.last_error);
            return Err(Error::unavailable(why).with_driver(NAME));
        }
        match signal.error {
            Some(error) => Err(Error::unavailable(error).with_driver(NAME)),
            None => Ok(()),
        }
    }
}

/// Opens the feed of `group`: returns once etcd confirmed both watches.
pub(crate) async fn open(backend: &Arc<Backend>, group: &GroupId) -> Result<EtcdFeed> {
    let prefixes = [
        backend.keys.group_records(group),
        backend.keys.group_alive(group),
    ];
    let (mut lines, start) = connect(backend, &prefixes, None)
        .await
        .map_err(|e| e.into_error("opening an etcd watch"))?;
    let (tx, rx) = watch::channel(Signal::default());
    let weak = Arc::downgrade(backend);
    let probe = Probe {
        backend: weak.clone(),
        key: backend.keys.index(group),
        quiet: quiet_limit(backend.ttl()),
    };
    let task = tokio::spawn(async move {
        let mut next = Some(start);
        loop {
            match follow(&mut lines, &tx, &mut next, &probe).await {
                End::Gone => return,
                _ if tx.is_closed() => return,
                End::Broken(why) => tx.send_modify(|s| s.outage(why)),
                End::Compacted => {}
            }
            let mut backoff = Duration::from_millis(100);
            loop {
                tokio::time::sleep(backoff).await;
                let Some(b) = weak.upgrade() else { return };
                match connect(&b, &prefixes, next).await {
                    Ok((l, rev)) => {
                        lines = l;
                        next = Some(rev);
                        break;
                    }
                    // Fell behind compaction: start over from now; the listing catches up.
                    Err(e) if e.is_compacted() => {
                        tracing::info!(driver = NAME, "a watch fell behind etcd's compaction; resynchronising from a fresh listing");
                        next = None;
                    }
                    Err(_) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            // Resumed: what changed meanwhile is listed.
            tx.send_modify(Signal::resumed);
        }
    });
    Ok(EtcdFeed {
        signals: rx,
        task: task.abort_handle(),
        outages_seen: 0,
        change_owed: false,
    })
}

/// How long a watch stream may stay silent before the feed checks that etcd still
/// answers: a quarter of the lease TTL (`ttl_secs`), between 250 ms and 10 s, so a
/// cluster stalled long enough to expire leases is noticed while it is stalled.
fn quiet_limit(ttl_secs: i64) -> Duration {
    let ms = u64::try_from(ttl_secs.max(1))
        .unwrap_or(u64::MAX)
        .saturating_mul(250);
    Duration::from_millis(ms.clamp(250, 10_000))
}

/// The check of a silent stream: a count of the group's index key, a linearizable
/// read (so a cluster without quorum fails it too).
struct Probe {
    backend: Weak<Backend>,
    key: Vec<u8>,
    quiet: Duration,
}

/// What a [`Probe`] found.
enum Probed {
    /// etcd answered.
    Answered,
    /// etcd cannot be reached (why).
    Unreachable(String),
    /// The driver is gone: the feed ends.
    Gone,
}

impl Probe {
    async fn check(&self) -> Probed {
        let Some(backend) = self.backend.upgrade() else {
            return Probed::Gone;
        };
        let range = Range {
            count_only: true,
            ..Range::key(self.key.clone())
        };
        match backend.client.range(&range).await {
            Ok(_) => Probed::Answered,
            Err(e) => {
                let error = e.into_error("the etcd watch stream went silent; checking etcd");
                if error.kind().is_unreachable() {
                    Probed::Unreachable(error.message().to_owned())
                } else {
                    // Not a sign of a stalled cluster (a bad answer is the next
                    // listing's to report).
                    tracing::debug!(driver = NAME, %error, "watch probe failed (not as unreachable)");
                    Probed::Answered
                }
            }
        }
    }
}

/// Opens one watch stream with a watcher per prefix and waits for each to be
/// created. Returns the stream and the revision to resume after.
async fn connect(
    backend: &Backend,
    prefixes: &[Vec<u8>],
    start: Option<i64>,
) -> Result<(crate::client::Lines, i64), crate::client::CallError> {
    let watchers: Vec<Watcher> = prefixes.iter().map(|p| Watcher::prefix(p, start)).collect();
    let (lines, created_at) = watches::open(&backend.client, &watchers).await?;
    Ok((lines, start.map_or(created_at + 1, |s| s)))
}

/// Why [`follow`] stopped.
enum End {
    /// The stream broke: the feed reports it once.
    Broken(String),
    /// etcd compacted past the next revision (or cancelled the watch): start over.
    Compacted,
    /// The feed was dropped or the driver is gone: the task ends.
    Gone,
}

/// Follows the stream until it ends, signalling each batch of events and keeping
/// `next` (the revision to resume from; `None`: from now). A stream silent for
/// `probe.quiet` is checked ([`Probe`]): an outage while etcd does not answer, ended
/// by the next line or the next answer.
async fn follow(
    lines: &mut crate::client::Lines,
    tx: &watch::Sender<Signal>,
    next: &mut Option<i64>,
    probe: &Probe,
) -> End {
    let mut stalled = false;
    loop {
        let result = tokio::select! {
            // Cancel-safe: a line half read stays in `lines`' buffer.
            result = lines.next() => result,
            _ = tx.closed() => return End::Gone,
            () = tokio::time::sleep(probe.quiet) => {
                match probe.check().await {
                    // Reported once; the stream is kept (it resumes with the cluster).
                    Probed::Unreachable(why) if !stalled => {
                        tracing::warn!(driver = NAME, error = %why, "etcd watch stream silent and etcd not answering");
                        stalled = true;
                        tx.send_modify(|s| s.outage(why));
                    }
                    Probed::Answered if stalled => {
                        stalled = false;
                        tx.send_modify(Signal::resumed);
                    }
                    Probed::Gone => return End::Gone,
                    Probed::Unreachable(_) | Probed::Answered => {}
                }
                continue;
            }
        };
        let result = match result {
            Ok(result) => result,
            // Stalled or not, the caller reports the break (an outage already begun
            // is not reported twice) and resumes.
            Err(e) => return End::Broken(e.into_error("the etcd watch").message().to_owned()),
        };
        if std::mem::take(&mut stalled) {
            tx.send_modify(Signal::resumed);
        }
        if int(&result, "compact_revision") > 0
            || result.get("canceled").and_then(Value::as_bool) == Some(true)
        {
            *next = None;
            return End::Compacted;
        }
        if let Some(events) = result.get("events").and_then(Value::as_array) {
            for event in events {
                if let Some(kv) = event.get("kv") {
                    let rev = int(kv, "mod_revision") + 1;
                    *next = Some(next.map_or(rev, |n| n.max(rev)));
                }
            }
            if !events.is_empty() {
                tx.send_modify(|s| s.changes += 1);
            }
        }
    }
}
