//! Registrations: many callers' registrations merged into one
//! [`Driver::register_many`] call (sorted by key, each key once), the outcomes handed
//! back to each caller in its own order.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::queue::Entry;
use super::{call, shared_error};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::id::MemberKey;
use crate::record::{Registered, Registration};

/// One caller's registrations (unique keys), with where the outcomes go.
pub(crate) struct RegisterEntry {
    registrations: Vec<Registration>,
    keys: Vec<MemberKey>,
    reply: oneshot::Sender<Result<Vec<Registered>>>,
}

impl RegisterEntry {
    /// Copies `registrations`.
    pub(crate) fn new(
        registrations: &[Registration],
    ) -> (Self, oneshot::Receiver<Result<Vec<Registered>>>) {
        let (reply, answer) = oneshot::channel();
        let entry = Self {
            keys: registrations.iter().map(|r| r.key.clone()).collect(),
            registrations: registrations.to_vec(),
            reply,
        };
        (entry, answer)
    }
}

impl Entry for RegisterEntry {
    fn size(&self) -> usize {
        self.registrations.len()
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn unique_keys(&self) -> &[MemberKey] {
        &self.keys
    }
}

/// Sends the registrations of `entries` in one call and answers each of them.
pub(crate) async fn send(
    driver: Arc<dyn Driver>,
    timeout: std::time::Duration,
    entries: Vec<RegisterEntry>,
) {
    // Every registration with its caller and its place in the caller's slice, sorted
    // by key (the queue keeps keys unique within a batch).
    let mut all: Vec<(Registration, (usize, usize))> = Vec::new();
    let mut replies = Vec::with_capacity(entries.len());
    let mut counts = Vec::with_capacity(entries.len());
    for (e, entry) in entries.into_iter().enumerate() {
        counts.push(entry.registrations.len());
        all.extend(
            entry
                .registrations
                .into_iter()
                .enumerate()
                .map(|(at, r)| (r, (e, at))),
        );
        replies.push(entry.reply);
    }
    all.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    let (registrations, places): (Vec<Registration>, Vec<(usize, usize)>) = all.into_iter().unzip();
    let result = match registrations.as_slice() {
        [one] => call(driver.name(), timeout, "register", driver.register(one))
            .await
            .map(|outcome| vec![outcome]),
        many => {
            call(
                driver.name(),
                timeout,
                "register_many",
                driver.register_many(many),
            )
            .await
        }
    };
    let result = result.and_then(|outcomes| {
        if outcomes.len() == registrations.len() {
            Ok(outcomes)
        } else {
            Err(Error::backend(format!(
                "register_many returned {} outcomes for {} registrations",
                outcomes.len(),
                registrations.len()
            ))
            .with_driver(driver.name().to_owned()))
        }
    });
    tracing::trace!(
        driver = driver.name(),
        callers = replies.len(),
        registrations = registrations.len(),
        ok = result.is_ok(),
        "coalesced registration"
    );
    match result {
        Ok(outcomes) => {
            let mut per_caller: Vec<Vec<Option<Registered>>> =
                counts.iter().map(|n| vec![None; *n]).collect();
            for (outcome, (e, at)) in outcomes.into_iter().zip(places) {
                per_caller[e][at] = Some(outcome);
            }
            for (reply, outcomes) in replies.into_iter().zip(per_caller) {
                // Every place was filled: one outcome per registration, checked above.
                let outcomes: Vec<Registered> = outcomes.into_iter().flatten().collect();
                // A caller that went away meanwhile needs no answer.
                let _ = reply.send(Ok(outcomes));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(shared_error(&error)));
            }
        }
    }
}
