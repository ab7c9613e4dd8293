//! Lookups and listings: one member, a group at one revision, the groups.

use std::collections::HashMap;

use servicegroup_core::{GroupId, MemberKey, MemberRecord, Result};

use super::{decode_record, Backend};
use crate::client::CallError;
use crate::kv::Range;
use crate::stored::{lease_hex, member_record, Alive, Beat};

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

    pub(crate) async fn list(&self, group: &GroupId) -> Result<Vec<MemberRecord>> {
        let mut attempt = 0;
        loop {
            match self.list_once(group).await {
                Err(e) if e.is_compacted() && attempt < 3 => attempt += 1,
                other => return other.map_err(|e| e.into_error("listing a group")),
            }
        }
    }

    /// One listing at one revision: the first page of records fixes it; the rest of
    /// the records, the alive keys and the beat keys are then read side by side.
    async fn list_once(&self, group: &GroupId) -> Result<Vec<MemberRecord>, CallError> {
        let (first, next) = self
            .client
            .first_page(&Range::prefix(&self.keys.group_records(group)))
            .await?;
        let revision = next.revision;
        let alive_range = Range {
            revision,
            ..Range::prefix(&self.keys.group_alive(group))
        };
        let beats_range = Range {
            revision,
            ..Range::prefix(&self.keys.beats())
        };
        let (records, (_, alive), (_, beats)) = tokio::try_join!(
            self.client.rest_of(first, next),
            self.client.range_all(&alive_range),
            self.client.range_all(&beats_range),
        )?;
        let beats: HashMap<String, i64> = beats
            .iter()
            .filter_map(|kv| {
                let lease = self.keys.lease_of_beat(&kv.key)?;
                let beat: Beat = serde_json::from_slice(&kv.value).ok()?;
                Some((lease_hex(lease), beat.t))
            })
            .collect();
        let alive: HashMap<MemberKey, Alive> = alive
            .iter()
            .filter_map(|kv| {
                Some((
                    self.keys.member_of(&kv.key)?,
                    Alive::decode(&kv.value).ok()?,
                ))
            })
            .collect();
        let mut out = Vec::with_capacity(records.len());
        for kv in &records {
            let Some(key) = self.keys.member_of(&kv.key) else {
                continue;
            };
            let record =
                decode_record(kv).map_err(|e| CallError::Broken(e.message().to_owned()))?;
            out.push(member_record(key.clone(), record, alive.get(&key), |l| {
                beats.get(l).copied()
            }));
        }
        Ok(out)
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
