//! The fence watch: one etcd watch per driver on every record (`P/r/`), so that a
//! heartbeat needs no read to learn that a member it holds was taken over or
//! removed. Each change to a record some instance of this driver holds marks it
//! for a read at that instance's next tick ([`crate::holders::Instances::mark_dirty`]).
//!
//! A member becomes held after its registration's transaction (or the read that
//! found it) returned, so a takeover can reach the watch while no instance holds
//! the member yet. The watch therefore keeps a log of the changes it applied lately
//! ([`crate::holders::Changes`]); a member whose record changed after the revision
//! it is held as of is read at its next tick.
//!
//! The watch resumes from the revision after the last one it saw, so a broken
//! connection loses nothing. When that revision was compacted away, or the watch
//! starts without one (first start, a store that lost its data), every instance
//! reads all its members at its next tick instead.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::backend::Backend;
use crate::kv::{b64, int, prefix_end, Kv};
use crate::{lock, NAME};

/// Runs until the backend is dropped.
/// Holds the backend only while handling an answer, never across a wait, so dropping
/// the driver drops the backend (whose `Drop` aborts this task).
pub(crate) async fn run(backend: Weak<Backend>, restart: Arc<Notify>) {
    let mut next: Option<i64> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(b) = backend.upgrade() else { return };
        let prefix = b.keys.records();
        let mut create = json!({ "key": b64(&prefix), "range_end": b64(&prefix_end(&prefix)) });
        if let Some(rev) = next {
            create["start_revision"] = json!(rev.to_string());
        }
        let opened = b
            .client
            .stream("/v3/watch", json!({ "create_request": create }).to_string())
            .await;
        let mut lines = match opened {
            Ok(lines) => lines,
            Err(error) => {
                drop(b);
                tracing::debug!(driver = NAME, ?error, "fence watch: cannot open; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        drop(b);
        loop {
            let line = tokio::select! {
                line = lines.next() => line,
                _ = restart.notified() => {
                    tracing::debug!(driver = NAME, "fence watch: restarting from the current revision");
                    next = None;
                    break;
                }
            };
            let result = match line {
                Ok(result) => result,
                Err(error) => {
                    tracing::debug!(driver = NAME, ?error, "fence watch: stream ended; resuming");
                    break;
                }
            };
            backoff = Duration::from_millis(100);
            let Some(b) = backend.upgrade() else { return };
            if handle(&b, &result, &mut next) {
                break;
            }
        }
    }
}

/// Applies one watch answer. Returns true when the watch must be opened again.
fn handle(backend: &Backend, result: &Value, next: &mut Option<i64>) -> bool {
    let compacted = int(result, "compact_revision");
    if compacted > 0 {
        tracing::info!(driver = NAME, compacted,
            "fence watch: etcd compacted past the last revision seen; every member is checked at the next tick");
        lock(&backend.instances).mark_resync();
        *next = None;
        return true;
    }
    if result.get("canceled").and_then(Value::as_bool) == Some(true) {
        *next = None;
        lock(&backend.instances).mark_resync();
        return true;
    }
    let header_rev = result
        .get("header")
        .map(|h| int(h, "revision"))
        .unwrap_or(0);
    if let Some(events) = result.get("events").and_then(Value::as_array) {
        let mut instances = lock(&backend.instances);
        for event in events {
            let Some(kv) = event.get("kv").and_then(|kv| Kv::parse(kv).ok()) else {
                continue;
            };
            let key = backend.keys.member_of(&kv.key);
            if let Some(key) = &key {
                instances.mark_dirty(key, kv.mod_revision);
            }
            instances.changes.applied(kv.mod_revision, key);
            *next = Some(next.unwrap_or(0).max(kv.mod_revision + 1));
        }
    } else if header_rev > 0 && next.is_none() {
        // The created answer of a watch that starts now: changes before it are
        // unknown, so every instance looks at everything, and a member held later
        // as of an older revision is read too (`Instances::hold`). From here on
        // nothing is missed.
        let mut instances = lock(&backend.instances);
        instances.mark_resync();
        instances.changes.restart(header_rev);
        *next = Some(header_rev + 1);
    }
    false
}
