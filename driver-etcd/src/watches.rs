//! Opening one etcd watch stream with several watchers (the change feed's two, a
//! mirror's three): one create request per watcher in one streamed body, answered
//! once each watcher is created.

use serde_json::{json, Value};

use crate::client::{code, CallError, Client, Lines};
use crate::kv::{b64, int, prefix_end};

/// One watcher: the keys `[key, end)` from `start` (`None`: from now).
#[derive(Debug, Clone)]
pub(crate) struct Watcher {
    pub key: Vec<u8>,
    pub end: Vec<u8>,
    pub start: Option<i64>,
}

impl Watcher {
    /// Every key starting with `prefix`.
    pub(crate) fn prefix(prefix: &[u8], start: Option<i64>) -> Self {
        Self {
            key: prefix.to_vec(),
            end: prefix_end(prefix),
            start,
        }
    }

    fn create_request(&self) -> Value {
        let mut create = json!({ "key": b64(&self.key), "range_end": b64(&self.end) });
        if let Some(rev) = self.start {
            create["start_revision"] = json!(rev.to_string());
        }
        json!({ "create_request": create })
    }
}

/// Opens a stream of `watchers` and waits until etcd created each. Returns the
/// stream and the highest revision the created answers carry (the store's revision
/// when they were created). A start revision already compacted is an error that
/// [`CallError::is_compacted`] recognises.
pub(crate) async fn open(client: &Client, watchers: &[Watcher]) -> Result<(Lines, i64), CallError> {
    let body: String = watchers
        .iter()
        .map(|w| w.create_request().to_string())
        .collect();
    let mut lines = client.stream("/v3/watch", body).await?;
    let mut created = 0;
    let mut revision = 0;
    while created < watchers.len() {
        let result = lines.next().await?;
        if int(&result, "compact_revision") > 0 {
            return Err(CallError::Status {
                code: code::OUT_OF_RANGE,
                message: "required revision has been compacted".into(),
                endpoint: String::new(),
            });
        }
        if result.get("created").and_then(Value::as_bool) == Some(true) {
            created += 1;
            revision = revision.max(
                result
                    .get("header")
                    .map(|h| int(h, "revision"))
                    .unwrap_or(0),
            );
        }
    }
    Ok((lines, revision))
}
