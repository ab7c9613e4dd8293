//! Holder and operator updates of one record (metadata, forced down, removal), each
//! a read-decide-write cycle comparing the revision read.

use servicegroup_core::{Error, HolderUpdate, InstanceId, MemberKey, Metadata, Result};

use super::{Backend, ATTEMPTS};
use crate::kv::{ModIs, Op};
use crate::stored::Record;
use crate::{lock, NAME};

impl Backend {
    /// A read-decide-write cycle on one record: `change` returns the new record (or
    /// `None`: nothing to write) and the outcome; the write compares the revision read.
    async fn update<T>(
        &self,
        key: &MemberKey,
        mut change: impl FnMut(Option<&Record>) -> (Option<Record>, T),
        also: impl Fn(&Record) -> Vec<Op>,
    ) -> Result<T> {
        for _ in 0..ATTEMPTS {
            let found = self.read_record(key).await?;
            let (new, outcome) = change(found.record.as_ref());
            let Some(new) = new else {
                return Ok(outcome);
            };
            let (compare, put) = self.guarded_put(key, found.revision, &new);
            let mut ops = vec![put];
            ops.extend(also(&new));
            let answer = self
                .client
                .txn(&[compare], &ops, &[])
                .await
                .map_err(|e| e.into_error("updating a member record"))?;
            if answer.succeeded {
                return Ok(outcome);
            }
        }
        Err(Error::conflict(format!(
            "the record of {key} kept changing during {ATTEMPTS} update attempts"
        ))
        .with_driver(NAME))
    }

    pub(crate) async fn set_metadata(
        &self,
        key: &MemberKey,
        instance: InstanceId,
        metadata: &Metadata,
    ) -> Result<HolderUpdate> {
        self.update(
            key,
            |found| match found {
                None => (None, HolderUpdate::Missing),
                Some(r) if r.i != instance => (None, HolderUpdate::NotHeld(r.holder())),
                Some(r) => {
                    let mut r = r.clone();
                    r.m = metadata.clone();
                    (Some(r), HolderUpdate::Stored)
                }
            },
            |_| Vec::new(),
        )
        .await
    }

    pub(crate) async fn set_forced_down(&self, key: &MemberKey, forced_down: bool) -> Result<bool> {
        self.update(
            key,
            |found| match found {
                None => (None, false),
                Some(r) if r.f == forced_down => (None, true),
                Some(r) => {
                    let mut r = r.clone();
                    r.f = forced_down;
                    (Some(r), true)
                }
            },
            |_| Vec::new(),
        )
        .await
    }

    pub(crate) async fn remove(&self, key: &MemberKey, holder: Option<InstanceId>) -> Result<bool> {
        for _ in 0..ATTEMPTS {
            let found = self.read_record(key).await?;
            let Some(record) = &found.record else {
                return Ok(false);
            };
            if holder.is_some_and(|i| i != record.i) {
                return Ok(false);
            }
            let compare = ModIs {
                key: self.keys.record(key),
                revision: found.revision,
            };
            let ops = [
                Op::Delete {
                    key: self.keys.record(key),
                },
                Op::Delete {
                    key: self.keys.alive(key),
                },
            ];
            let answer = self
                .client
                .txn(&[compare], &ops, &[])
                .await
                .map_err(|e| e.into_error("removing a member"))?;
            if answer.succeeded {
                if let Some(instance) = holder {
                    let mut instances = lock(&self.instances);
                    if let Some(state) = instances.map.get_mut(&instance) {
                        state.held.remove(key);
                    }
                }
                return Ok(true);
            }
        }
        Err(Error::conflict(format!(
            "the record of {key} kept changing during {ATTEMPTS} removal attempts"
        ))
        .with_driver(NAME))
    }
}
