//! Lookups and listings: one member, a group at one revision (what a group's
//! mirror starts from, [`crate::mirror`]), the groups.

use servicegroup_core::{GroupId, MemberKey, MemberRecord, Result};

use super::{decode_record, Backend};
use crate::client::CallError;

/// A group read at one revision.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The revision it was read at.
    pub revision: i64,
    /// The creation revision of the group's index key (0: none). The index key is
    /// never deleted, so a different one later means the store was replaced (a
    /// cluster restored or started empty), whose revisions say nothing of ours.
    pub anchor: i64,
    /// The group.
    pub state: GroupState,
}
use crate::kv::{Range, RangeOut};
use crate::mirror::{Decoder, GroupState};
use crate::stored::{member_record, Alive, Beat};

impl Backend {
    pub(crate) async fn get(&self, key: &MemberKey) -> Result<Option<MemberRecord>> {
        let ranges = vec![
            Range::key(self.keys.record(key)),
            Range::key(self.keys.alive(key)),
        ];
        let (revision, answers) = self
            .client
            .ranges(ranges, 0)
            .await
            .map_err(|e| e.into_error("reading a member"))?;
        let Some(kv) = answers.first().and_then(|a| a.kvs.first()) else {
            return Ok(None);
        };
        let record = decode_record(kv)?;
        let alive = answers
            .get(1)
            .and_then(|a| a.kvs.first())
            .and_then(|kv| Alive::decode(&kv.value).ok());
        let lease = match &alive {
            Some(a) if a.i == record.i && a.e == record.e => a.l.clone(),
            Some(_) => String::new(),
            None => record.l.clone(),
        };
        let mut beat = None;
        if let Ok(id) = i64::from_str_radix(&lease, 16) {
            let range = Range {
                revision,
                ..Range::key(self.keys.beat(id))
            };
            let answer = self
                .client
                .range(&range)
                .await
                .map_err(|e| e.into_error("reading a lease's beat key"))?;
            beat = answer
                .kvs
                .first()
                .and_then(|kv| serde_json::from_slice::<Beat>(&kv.value).ok())
                .map(|b| b.t);
        }
        Ok(Some(member_record(
            key.clone(),
            record,
            alive.as_ref(),
            |_| beat,
        )))
    }

    /// `group` read at one revision (retried when compacted while paging), decoded:
    /// what listings are answered from.
    pub(crate) async fn snapshot(&self, group: &GroupId) -> Result<Snapshot> {
        let mut attempt = 0;
        loop {
            match self.snapshot_once(group).await {
                Err(e) if e.is_compacted() && attempt < 3 => attempt += 1,
                other => return other.map_err(|e| e.into_error("listing a group"))?,
            }
        }
    }

    /// One read of a group at one revision: the first page of records fixes it; the
    /// rest of the records, the alive keys, the beat keys and the group's index key
    /// are then read side by side.
    async fn snapshot_once(&self, group: &GroupId) -> Result<Result<Snapshot>, CallError> {
        let (first, next) = self
            .client
            .first_page(&Range::prefix(&self.keys.group_records(group)))
            .await?;
        let revision = next.revision;
        let at = |range: Range| Range { revision, ..range };
        let alive_range = at(Range::prefix(&self.keys.group_alive(group)));
        let beats_range = at(Range::prefix(&self.keys.beats()));
        let index_range = at(Range::key(self.keys.index(group)));
        let (mut pairs, (_, alive), (_, beats), index) = tokio::try_join!(
            self.client.rest_of(first, next),
            self.client.range_all(&alive_range),
            self.client.range_all(&beats_range),
            self.client.range(&index_range),
        )?;
        pairs.extend(alive);
        pairs.extend(beats);
        let decoder = Decoder::new(&self.keys, group);
        Ok(
            GroupState::from_pairs(&decoder, &pairs).map(|state| Snapshot {
                revision,
                anchor: anchor_of(&index),
                state,
            }),
        )
    }

    /// The creation revision of `group`'s index key (0: none): the mark of the
    /// store a mirror was started on ([`Snapshot::anchor`]).
    pub(crate) async fn anchor(&self, group: &GroupId) -> Result<i64, CallError> {
        let index = self
            .client
            .range(&Range::key(self.keys.index(group)))
            .await?;
        Ok(anchor_of(&index))
    }

    pub(crate) async fn groups(&self) -> Result<Vec<GroupId>> {
        let (revision, indexes) = self
            .client
            .range_all(&Range::prefix(&self.keys.indexes()))
            .await
            .map_err(|e| e.into_error("listing groups"))?;
        let groups: Vec<GroupId> = indexes
            .iter()
            .filter_map(|kv| self.keys.group_of_index(&kv.key))
            .collect();
        let ranges = groups
            .iter()
            .map(|g| Range {
                count_only: true,
                ..Range::prefix(&self.keys.group_records(g))
            })
            .collect();
        let (_, counts) = self
            .client
            .ranges(ranges, revision)
            .await
            .map_err(|e| e.into_error("counting group members"))?;
        Ok(groups
            .into_iter()
            .zip(counts)
            .filter(|(_, c)| c.count > 0)
            .map(|(g, _)| g)
            .collect())
    }
}

/// The creation revision of the index key a range of it answered (0: none).
fn anchor_of(index: &RangeOut) -> i64 {
    index.kvs.first().map_or(0, |kv| kv.create_revision)
}
