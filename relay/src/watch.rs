//! Watch fan-out: one backend poll per watched group per relay, shared by every
//! watcher of that group.
//!
//! The first watcher of a group starts a [`Feed`]: a task running core's
//! [`servicegroup_core::Watch`] on the relay's handle, which sends each transition
//! once, as its `watch --json` object, to every subscriber. A failed poll (the
//! backend restarting) is logged once and the same watch goes on polling, so the
//! stream survives it and reports what changed meanwhile exactly once. The task ends
//! when the last watcher leaves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use servicegroup_core::json::EventRow;
use servicegroup_core::{GroupId, ServiceGroup};
use tokio::sync::broadcast;

/// Events a slow watcher may fall behind by before it is told it lost some.
const BACKLOG: usize = 4096;

/// The watched groups of one relay.
#[derive(Debug)]
pub struct Hub {
    sg: ServiceGroup,
    interval: Duration,
    feeds: Mutex<HashMap<GroupId, Weak<Feed>>>,
}

/// One group's poll and its subscribers. Dropping the last [`Subscription`] ends it.
#[derive(Debug)]
pub struct Feed {
    events: broadcast::Sender<Arc<str>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A watcher's place in a feed: its receiver, keeping the feed alive.
#[derive(Debug)]
pub struct Subscription {
    /// The events, each the JSON text of one [`EventRow`].
    pub events: broadcast::Receiver<Arc<str>>,
    _feed: Arc<Feed>,
}

impl Hub {
    /// A hub polling through `sg` every `interval`.
    pub fn new(sg: ServiceGroup, interval: Duration) -> Self {
        Self {
            sg,
            interval,
            feeds: Mutex::new(HashMap::new()),
        }
    }

    /// How many groups are polled now.
    pub fn watched_groups(&self) -> usize {
        self.lock()
            .values()
            .filter(|f| f.strong_count() > 0)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, Weak<Feed>>> {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to `group`'s transitions, starting its feed if nobody watches it yet.
    /// The first listing is taken before this returns, so every later transition is seen.
    pub async fn subscribe(&self, group: &GroupId) -> servicegroup_core::Result<Subscription> {
        if let Some(feed) = self.lock().get(group).and_then(Weak::upgrade) {
            return Ok(Subscription {
                events: feed.events.subscribe(),
                _feed: feed,
            });
        }
        // Outside the lock: the first listing is a backend call.
        let mut watch = self.sg.watch_with_interval(group, self.interval).await?;
        let mut feeds = self.lock();
        feeds.retain(|_, f| f.strong_count() > 0);
        if let Some(feed) = feeds.get(group).and_then(Weak::upgrade) {
            // Another watcher started it meanwhile: use that one.
            return Ok(Subscription {
                events: feed.events.subscribe(),
                _feed: feed,
            });
        }
        let (events, receiver) = broadcast::channel(BACKLOG);
        let sender = events.clone();
        let name = group.clone();
        let task = tokio::spawn(async move {
            let mut failing = false;
            loop {
                match watch.next().await {
                    Ok(event) => {
                        if failing {
                            failing = false;
                            tracing::info!(group = %name, "watch poll recovered");
                        }
                        match serde_json::to_string(&EventRow::from(&event)) {
                            Ok(text) => {
                                // No receiver left: the feed is being dropped.
                                let _ = sender.send(text.into());
                            }
                            Err(e) => tracing::error!(group = %name, "cannot encode an event: {e}"),
                        }
                    }
                    Err(error) => {
                        if !failing {
                            failing = true;
                            tracing::warn!(group = %name, kind = %error.kind(), "watch poll failed, retrying: {error}");
                        }
                    }
                }
            }
        });
        let feed = Arc::new(Feed { events, task });
        feeds.insert(group.clone(), Arc::downgrade(&feed));
        Ok(Subscription {
            events: receiver,
            _feed: feed,
        })
    }
}
