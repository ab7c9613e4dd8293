//! Heartbeats: many callers' batches merged into one [`Driver::heartbeat`] call, and
//! the report split back so each caller gets the missing and superseded keys of its
//! own parts only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::queue::Entry;
use super::{call, shared_error};
use crate::driver::Driver;
use crate::error::Result;
use crate::id::MemberKey;
use crate::instance::InstanceId;
use crate::record::{Beats, HeartbeatReport};

/// One caller's heartbeat batch, owned, with where its answer goes.
pub(crate) struct BeatEntry {
    /// The caller's parts, each with sorted, unique keys.
    parts: Vec<(InstanceId, Vec<MemberKey>)>,
    keys: usize,
    reply: oneshot::Sender<Result<HeartbeatReport>>,
}

impl BeatEntry {
    /// Copies `batch` (sorting a part whose keys are not sorted).
    pub(crate) fn new(batch: &[Beats<'_>]) -> (Self, oneshot::Receiver<Result<HeartbeatReport>>) {
        let parts: Vec<(InstanceId, Vec<MemberKey>)> = batch
            .iter()
            .map(|part| {
                let mut keys = part.keys.to_vec();
                if !keys.is_sorted() {
                    keys.sort_unstable();
                }
                keys.dedup();
                (part.instance, keys)
            })
            .collect();
        let keys = parts.iter().map(|(_, keys)| keys.len()).sum();
        let (reply, answer) = oneshot::channel();
        (Self { parts, keys, reply }, answer)
    }
}

impl Entry for BeatEntry {
    fn size(&self) -> usize {
        self.keys
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// Sends the merged heartbeat of `entries` and answers each of them.
pub(crate) async fn send(
    driver: Arc<dyn Driver>,
    timeout: std::time::Duration,
    entries: Vec<BeatEntry>,
) {
    let keys: usize = entries.iter().map(|e| e.keys).sum();
    let result = if let [one] = entries.as_slice() {
        // One caller: its parts as they are.
        let batch: Vec<Beats<'_>> = beats(one.parts.iter().map(|(i, k)| (*i, k.as_slice())));
        call(
            driver.name(),
            timeout,
            "heartbeat",
            driver.heartbeat(&batch),
        )
        .await
    } else {
        let merged = merge(&entries);
        let batch = beats(merged.iter().map(|(i, k)| (*i, k.as_slice())));
        call(
            driver.name(),
            timeout,
            "heartbeat",
            driver.heartbeat(&batch),
        )
        .await
    };
    tracing::trace!(
        driver = driver.name(),
        callers = entries.len(),
        keys,
        ok = result.is_ok(),
        "coalesced heartbeat"
    );
    match result {
        Ok(report) => {
            let reports = split(&entries, report);
            for (entry, report) in entries.into_iter().zip(reports) {
                // A caller that went away meanwhile needs no answer.
                let _ = entry.reply.send(Ok(report));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for entry in entries {
                let _ = entry.reply.send(Err(shared_error(&error)));
            }
        }
    }
}

fn beats<'a>(parts: impl Iterator<Item = (InstanceId, &'a [MemberKey])>) -> Vec<Beats<'a>> {
    parts
        .map(|(instance, keys)| Beats { instance, keys })
        .collect()
}

/// The keys of every entry, one part per instance (sorted, unique).
fn merge(entries: &[BeatEntry]) -> BTreeMap<InstanceId, Vec<MemberKey>> {
    let mut merged: BTreeMap<InstanceId, Vec<MemberKey>> = BTreeMap::new();
    for (instance, keys) in entries.iter().flat_map(|e| &e.parts) {
        merged
            .entry(*instance)
            .or_default()
            .extend(keys.iter().cloned());
    }
    for keys in merged.values_mut() {
        keys.sort_unstable();
        keys.dedup();
    }
    merged
}

/// Each entry's part of `report`: the missing and superseded keys it sent, as
/// (instance, key). A key two entries sent for one instance goes to both.
fn split(entries: &[BeatEntry], report: HeartbeatReport) -> Vec<HeartbeatReport> {
    let mut out = vec![HeartbeatReport::default(); entries.len()];
    if report.missing.is_empty() && report.superseded.is_empty() {
        return out;
    }
    // Which entries sent parts for each instance (usually one).
    let mut senders: HashMap<InstanceId, Vec<(usize, usize)>> = HashMap::new();
    for (e, entry) in entries.iter().enumerate() {
        for (p, (instance, _)) in entry.parts.iter().enumerate() {
            senders.entry(*instance).or_default().push((e, p));
        }
    }
    let owners = |instance: &InstanceId, key: &MemberKey| -> Vec<usize> {
        senders
            .get(instance)
            .into_iter()
            .flatten()
            .filter(|(e, p)| entries[*e].parts[*p].1.binary_search(key).is_ok())
            .map(|(e, _)| *e)
            .collect()
    };
    for (instance, key) in report.missing {
        for e in owners(&instance, &key) {
            out[e].missing.push((instance, key.clone()));
        }
    }
    for superseded in report.superseded {
        for e in owners(&superseded.instance, &superseded.key) {
            out[e].superseded.push(superseded.clone());
        }
    }
    for report in &mut out {
        report.missing.dedup();
        report.superseded.dedup();
    }
    out
}
