//! The native watch: an etcd watch on one group's records and alive keys, offered to
//! core as a [`ChangeFeed`]. Every change of a member's state is a key change there:
//! a join, takeover, metadata or forced-down change puts the record; a leave or
//! removal deletes it; a lease expiry (the member is down) deletes the alive key.
//!
//! The watch resumes after the last revision it saw when the connection breaks (the
//! break is reported once as an error, the resumption as a change). When etcd
//! compacted past that revision it starts over from the current one and signals a
//! change: core lists the group afresh and its diff reports each transition once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use servicegroup_core::{async_trait, ChangeFeed, Error, GroupId, Result};
use tokio::sync::watch;

use crate::backend::Backend;
use crate::kv::{b64, int, prefix_end};
use crate::NAME;

/// What the feed's task last saw: a count of changes, and the error of a broken watch.
#[derive(Debug, Clone, Default)]
struct Signal {
    changes: u64,
    error: Option<String>,
}

/// One group's change feed; its task ends when the feed is dropped.
#[derive(Debug)]
pub(crate) struct EtcdFeed {
    signals: watch::Receiver<Signal>,
    task: tokio::task::AbortHandle,
}

impl Drop for EtcdFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl ChangeFeed for EtcdFeed {
    async fn changed(&mut self) -> Result<()> {
        self.signals
            .changed()
            .await
            .map_err(|_| Error::unavailable("the etcd watch task ended").with_driver(NAME))?;
        let signal = self.signals.borrow_and_update().clone();
        match signal.error {
            Some(error) => Err(Error::unavailable(error).with_driver(NAME)),
            None => Ok(()),
        }
    }
}

fn create_request(key: &[u8], start: Option<i64>) -> Value {
    let mut create = json!({ "key": b64(key), "range_end": b64(&prefix_end(key)) });
    if let Some(rev) = start {
        create["start_revision"] = json!(rev.to_string());
    }
    json!({ "create_request": create })
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
    let task = tokio::spawn(async move {
        let mut next = Some(start);
        loop {
            let end = follow(&mut lines, &tx, &mut next).await;
            if tx.is_closed() {
                return;
            }
            if let End::Broken(why) = end {
                tx.send_modify(|s| s.error = Some(why));
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
            tx.send_modify(|s| {
                s.error = None;
                s.changes += 1;
            });
        }
    });
    Ok(EtcdFeed {
        signals: rx,
        task: task.abort_handle(),
    })
}

/// Opens one watch stream with a watcher per prefix and waits for both to be
/// created. Returns the stream and the revision to resume after.
async fn connect(
    backend: &Backend,
    prefixes: &[Vec<u8>],
    start: Option<i64>,
) -> Result<(crate::client::Lines, i64), crate::client::CallError> {
    let body: String = prefixes
        .iter()
        .map(|p| create_request(p, start).to_string())
        .collect();
    let mut lines = backend.client.stream("/v3/watch", body).await?;
    let mut created = 0;
    let mut revision = start.map(|r| r - 1).unwrap_or(0);
    while created < prefixes.len() {
        let result = lines.next().await?;
        if int(&result, "compact_revision") > 0 {
            return Err(crate::client::CallError::Status {
                code: crate::client::code::OUT_OF_RANGE,
                message: "required revision has been compacted".into(),
                endpoint: String::new(),
            });
        }
        if result.get("created").and_then(Value::as_bool) == Some(true) {
            created += 1;
            if start.is_none() {
                revision = revision.max(
                    result
                        .get("header")
                        .map(|h| int(h, "revision"))
                        .unwrap_or(0),
                );
            }
        }
    }
    Ok((lines, revision + 1))
}

/// Why [`follow`] stopped.
enum End {
    /// The stream broke: the feed reports it once.
    Broken(String),
    /// etcd compacted past the next revision (or cancelled the watch): start over.
    Compacted,
}

/// Follows the stream until it ends, signalling each batch of events and keeping
/// `next` (the revision to resume from; `None`: from now).
async fn follow(
    lines: &mut crate::client::Lines,
    tx: &watch::Sender<Signal>,
    next: &mut Option<i64>,
) -> End {
    loop {
        let result = tokio::select! {
            result = lines.next() => result,
            _ = tx.closed() => return End::Compacted,
        };
        let result = match result {
            Ok(result) => result,
            Err(e) => return End::Broken(e.into_error("the etcd watch").message().to_owned()),
        };
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
