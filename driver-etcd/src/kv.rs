//! etcd's KV and lease API as the JSON gateway speaks it: keys and values in
//! base64, int64 values as strings, absent fields meaning zero / false / empty.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::client::{CallError, Client};

/// Most operations etcd accepts in one transaction (its `--max-txn-ops` default).
pub(crate) const MAX_TXN_OPS: usize = 128;

/// Keys per page of a paged range: 4,000 records of typical size are ~1.5 MB of
/// JSON, well below the gateway's message limit (a page it refuses as too large is
/// asked for again in halves: records may carry up to 4 KiB of metadata).
pub(crate) const PAGE: usize = 4000;

/// The smallest page [`Client::range_all`] halves down to.
const MIN_PAGE: usize = 50;

/// Base64 of `bytes`.
pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Result<Vec<u8>, CallError> {
    STANDARD
        .decode(text)
        .map_err(|e| CallError::Broken(format!("etcd sent bad base64 ({e})")))
}

/// The end of the range of every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// An int64 field: a string, a number, or absent (zero).
pub(crate) fn int(value: &Value, field: &str) -> i64 {
    match value.get(field) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The header's revision of an answer.
pub(crate) fn revision(value: &Value) -> i64 {
    value.get("header").map(|h| int(h, "revision")).unwrap_or(0)
}

/// One key-value pair.
#[derive(Debug, Clone)]
pub(crate) struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub create_revision: i64,
}

impl Kv {
    pub(crate) fn parse(value: &Value) -> Result<Self, CallError> {
        let text = |f: &str| value.get(f).and_then(Value::as_str).unwrap_or("");
        Ok(Self {
            key: unb64(text("key"))?,
            value: unb64(text("value"))?,
            mod_revision: int(value, "mod_revision"),
            create_revision: int(value, "create_revision"),
        })
    }
}

/// A range answer.
#[derive(Debug, Default)]
pub(crate) struct RangeOut {
    pub revision: i64,
    pub kvs: Vec<Kv>,
    pub more: bool,
    pub count: i64,
}

impl RangeOut {
    pub(crate) fn parse(value: &Value) -> Result<Self, CallError> {
        let kvs = match value.get("kvs").and_then(Value::as_array) {
            Some(kvs) => kvs.iter().map(Kv::parse).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(Self {
            revision: revision(value),
            kvs,
            more: value.get("more").and_then(Value::as_bool).unwrap_or(false),
            count: int(value, "count"),
        })
    }
}

/// A range request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Range {
    pub key: Vec<u8>,
    pub end: Option<Vec<u8>>,
    pub revision: i64,
    pub limit: usize,
    pub count_only: bool,
    /// Served by the member asked from what it has applied, without a round of the
    /// leader (only safe at a fixed revision that member is known to have applied).
    pub serializable: bool,
}

impl Range {
    /// One key.
    pub(crate) fn key(key: Vec<u8>) -> Self {
        Self {
            key,
            ..Self::default()
        }
    }

    /// Every key under `prefix`.
    pub(crate) fn prefix(prefix: &[u8]) -> Self {
        Self {
            key: prefix.to_vec(),
            end: Some(prefix_end(prefix)),
            ..Self::default()
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({ "key": b64(&self.key) });
        if let Some(end) = &self.end {
            v["range_end"] = json!(b64(end));
        }
        if self.revision > 0 {
            v["revision"] = json!(self.revision.to_string());
        }
        if self.limit > 0 {
            v["limit"] = json!(self.limit.to_string());
        }
        if self.count_only {
            v["count_only"] = json!(true);
        }
        if self.serializable {
            v["serializable"] = json!(true);
        }
        v
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
    },
    Range(Range),
}

impl Op {
    fn to_json(&self) -> Value {
        match self {
            Op::Put { key, value, lease } => {
                let mut put = json!({ "key": b64(key), "value": b64(value) });
                if *lease != 0 {
                    put["lease"] = json!(lease.to_string());
                }
                json!({ "request_put": put })
            }
            Op::Delete { key } => json!({ "request_delete_range": { "key": b64(key) } }),
            Op::Range(range) => json!({ "request_range": range.to_json() }),
        }
    }
}

/// A transaction's compare: the key's mod revision equals this (0: the key is absent).
#[derive(Debug, Clone)]
pub(crate) struct ModIs {
    pub key: Vec<u8>,
    pub revision: i64,
}

/// A transaction's answer: whether the compares held, and one answer per operation
/// of the branch that ran (range answers parsed, others empty).
#[derive(Debug)]
pub(crate) struct TxnOut {
    pub succeeded: bool,
    pub revision: i64,
    pub ranges: Vec<Option<RangeOut>>,
}

impl Client {
    /// One range.
    pub(crate) async fn range(&self, range: &Range) -> Result<RangeOut, CallError> {
        let answer = self.post("/v3/kv/range", &range.to_json()).await?;
        RangeOut::parse(&answer)
    }

    /// Every key of `range` at one revision, in pages of [`PAGE`] keys (the first page
    /// fixes the revision unless `range.revision` does). Returns the revision and the pairs.
    pub(crate) async fn range_all(&self, range: &Range) -> Result<(i64, Vec<Kv>), CallError> {
        let (first, page) = self.first_page(range).await?;
        let revision = page.revision;
        Ok((revision, self.rest_of(first, page).await?))
    }

    /// The first page of `range` (linearizable) and the request of the next page, at
    /// the revision of the first unless `range.revision` is set.
    pub(crate) async fn first_page(&self, range: &Range) -> Result<(RangeOut, Range), CallError> {
        let mut page = range.clone();
        page.limit = PAGE;
        page.serializable = false;
        let answer = self.page(&mut page).await?;
        if page.revision == 0 {
            page.revision = answer.revision;
        }
        Ok((answer, page))
    }

    /// The pairs of `first` and of every page after it (`next`, from
    /// [`Client::first_page`]). Those pages are serializable reads at the fixed
    /// revision: the member that answered the first has applied it, so no page needs
    /// another round of the leader (another member, after a failover, may not have:
    /// then the page is asked for again, linearizably).
    pub(crate) async fn rest_of(
        &self,
        first: RangeOut,
        mut next: Range,
    ) -> Result<Vec<Kv>, CallError> {
        let mut more = first.more;
        let mut out = Vec::new();
        let mut answer = first;
        loop {
            if let Some(last) = answer.kvs.last() {
                let mut key = last.key.clone();
                key.push(0);
                next.key = key;
            }
            out.extend(std::mem::take(&mut answer.kvs));
            if !more {
                return Ok(out);
            }
            next.serializable = true;
            answer = match self.page(&mut next).await {
                Err(e) if e.is_future_revision() => {
                    next.serializable = false;
                    self.page(&mut next).await?
                }
                other => other?,
            };
            more = answer.more;
        }
    }

    /// One page of `page`, its limit halved (down to [`MIN_PAGE`]) while the gateway
    /// refuses the answer as too large.
    async fn page(&self, page: &mut Range) -> Result<RangeOut, CallError> {
        loop {
            match self.range(page).await {
                Err(e) if e.is_too_large() && page.limit > MIN_PAGE => {
                    page.limit = (page.limit / 2).max(MIN_PAGE);
                    tracing::debug!(
                        driver = crate::NAME,
                        limit = page.limit,
                        "etcd page too large; asking for smaller pages"
                    );
                }
                other => return other,
            }
        }
    }

    /// A transaction: if every compare holds, `success` runs, else `failure`.
    pub(crate) async fn txn(
        &self,
        compare: &[ModIs],
        success: &[Op],
        failure: &[Op],
    ) -> Result<TxnOut, CallError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| {
                json!({
                    "target": "MOD",
                    "key": b64(&c.key),
                    "mod_revision": c.revision.to_string(),
                    "result": "EQUAL",
                })
            })
            .collect();
        let body = json!({
            "compare": compare,
            "success": success.iter().map(Op::to_json).collect::<Vec<_>>(),
            "failure": failure.iter().map(Op::to_json).collect::<Vec<_>>(),
        });
        let answer = self.post("/v3/kv/txn", &body).await?;
        let mut ranges = Vec::new();
        if let Some(responses) = answer.get("responses").and_then(Value::as_array) {
            for response in responses {
                ranges.push(match response.get("response_range") {
                    Some(r) => Some(RangeOut::parse(r)?),
                    None => None,
                });
            }
        }
        Ok(TxnOut {
            succeeded: answer
                .get("succeeded")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            revision: revision(&answer),
            ranges,
        })
    }

    /// Several ranges at one revision (one transaction per [`MAX_TXN_OPS`] ranges; the
    /// first fixes the revision unless `revision` is given). One answer per range.
    pub(crate) async fn ranges(
        &self,
        ranges: Vec<Range>,
        mut revision: i64,
    ) -> Result<(i64, Vec<RangeOut>), CallError> {
        let mut out = Vec::with_capacity(ranges.len());
        for chunk in ranges.chunks(MAX_TXN_OPS) {
            let ops: Vec<Op> = chunk
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.revision = revision;
                    Op::Range(r)
                })
                .collect();
            let answer = self.txn(&[], &ops, &[]).await?;
            if revision == 0 {
                revision = answer.revision;
            }
            if answer.ranges.len() != chunk.len() {
                return Err(CallError::Broken(format!(
                    "etcd answered {} of {} ranges of a transaction",
                    answer.ranges.len(),
                    chunk.len()
                )));
            }
            out.extend(answer.ranges.into_iter().map(Option::unwrap_or_default));
        }
        Ok((revision, out))
    }

    /// A new lease of `ttl` seconds; returns its id and the TTL etcd granted.
    pub(crate) async fn lease_grant(&self, ttl: i64) -> Result<(i64, i64), CallError> {
        let answer = self
            .post("/v3/lease/grant", &json!({ "TTL": ttl.to_string() }))
            .await?;
        let id = int(&answer, "ID");
        if id == 0 {
            return Err(CallError::Broken("etcd granted a lease without id".into()));
        }
        Ok((id, int(&answer, "TTL")))
    }

    /// One keep-alive of lease `id`: `Some(ttl)`, or `None` when the lease is gone.
    pub(crate) async fn lease_keepalive(&self, id: i64) -> Result<Option<i64>, CallError> {
        let answer = self
            .post("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))
            .await?;
        let result = answer.get("result").unwrap_or(&answer);
        if let Some((code, message)) = result
            .get("error")
            .and_then(|e| e.get("code").and_then(Value::as_i64).map(|c| (c, e)))
        {
            return Err(CallError::Status {
                code,
                message: message.to_string(),
                endpoint: String::new(),
            });
        }
        let ttl = int(result, "TTL");
        Ok((ttl > 0).then_some(ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn ints_as_strings_numbers_or_absent() {
        let v = json!({ "a": "12", "b": 13 });
        assert_eq!(int(&v, "a"), 12);
        assert_eq!(int(&v, "b"), 13);
        assert_eq!(int(&v, "c"), 0);
    }

    #[test]
    fn a_range_without_matches_is_empty() {
        let r = RangeOut::parse(&json!({ "header": { "revision": "7" } })).unwrap();
        assert_eq!((r.revision, r.kvs.len(), r.count, r.more), (7, 0, 0, false));
    }
}
