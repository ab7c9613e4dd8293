//! The relay's HTTP API fuzzed: the real relay (`Relay::build` + `start` on
//! 127.0.0.1:0, token required) over the real inproc driver, sent requests on every
//! route with random and truncated JSON bodies, a wrong type in each field, huge
//! numbers, deep nesting, unknown fields, bad percent-encoding in paths and bad
//! `instance` hex, with and without the token.
//!
//! Every answer is below 500, and every error answer is a JSON
//! `{"error": {"kind", "message"}}` of bounded size; a wrong type in a field of an
//! otherwise good request is a 400 naming that field. The hand-written cases of
//! `cli/tests/relay.rs` (one of each kind, through the CLI) are not repeated here.
//!
//! Requests are written on raw TCP (`Connection: close`), so any path the HTTP
//! grammar allows can be sent, encoded or not.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};
use servicegroup_core::config::Secret;
use servicegroup_core::Config;
use servicegroup_driver_inproc as _;
use servicegroup_relay::{Relay, RelayOptions, RunningRelay};

const TOKEN: &str = "fuzz-token";
const BODY_LIMIT: usize = 64 * 1024;
const HEX: &str = "0123456789abcdef0123456789abcdef";
/// Longest error message accepted: errors name what was wrong, shortened.
const MAX_MESSAGE: usize = 2_000;

struct Server {
    addr: SocketAddr,
    _relay: RunningRelay,
    _runtime: tokio::runtime::Runtime,
}

/// One relay for the whole file, on its own runtime.
fn server() -> SocketAddr {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let relay = runtime.block_on(async {
                let mut config = Config::with_driver("inproc");
                config.set("inproc.name", "relay-http-fuzz").unwrap();
                let mut options = RelayOptions::new("127.0.0.1:0".parse().unwrap());
                options.token = Some(Secret::new(TOKEN));
                options.body_limit = BODY_LIMIT;
                Relay::build(config, options)
                    .await
                    .unwrap()
                    .start()
                    .await
                    .unwrap()
            });
            Server {
                addr: relay.addr(),
                _relay: relay,
                _runtime: runtime,
            }
        })
        .addr
}

/// An answer: status, content type and body (empty for an event stream, which is
/// not read).
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

fn send(method: &str, target: &str, token: Option<&str>, body: &[u8]) -> Answer {
    send_framed(method, target, token, body, Framing::Length)
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// A `Content-Length` header.
    Length,
    /// `Transfer-Encoding: chunked`, in chunks of 8 KiB: the relay learns the size
    /// only by reading.
    Chunked,
}

fn send_framed(
    method: &str,
    target: &str,
    token: Option<&str>,
    body: &[u8],
    framing: Framing,
) -> Answer {
    let addr = server();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("Content-Type: application/json\r\n");
    let body = match framing {
        Framing::Length => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            body.to_vec()
        }
        Framing::Chunked => {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            let mut framed = Vec::new();
            for chunk in body.chunks(8192) {
                framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                framed.extend_from_slice(chunk);
                framed.extend_from_slice(b"\r\n");
            }
            framed.extend_from_slice(b"0\r\n\r\n");
            framed
        }
    };
    stream.write_all(head.as_bytes()).unwrap();
    // The relay may answer (413) before reading all of a large body and close.
    let _ = stream.write_all(&body);
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {status_line:?}"));
    let (mut content_type, mut length, mut chunked) = (String::new(), None, false);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.to_owned(),
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if content_type.starts_with("text/event-stream") {
        // A watch: the stream stays open; its headers are the answer.
    } else if let Some(n) = length {
        body.resize(n, 0);
        reader.read_exact(&mut body).unwrap();
    } else if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        reader.read_to_end(&mut body).unwrap();
    }
    Answer {
        status,
        content_type,
        body,
    }
}

/// The contract for every answer: below 500; an error is a JSON error object of
/// bounded size. Returns the error's kind and message.
fn check(what: &str, answer: &Answer) -> Result<Option<(String, String)>, TestCaseError> {
    let text = String::from_utf8_lossy(&answer.body);
    let shown: String = text.chars().take(400).collect();
    prop_assert!(answer.status < 500, "{what}: {} {shown}", answer.status);
    if answer.status < 400 {
        return Ok(None);
    }
    prop_assert!(
        answer.content_type.starts_with("application/json"),
        "{what}: {} with content type {:?}: {shown}",
        answer.status,
        answer.content_type
    );
    let value: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| TestCaseError::fail(format!("{what}: not JSON ({e}): {shown}")))?;
    let kind = value["error"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let message = value["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    prop_assert!(!kind.is_empty() && !message.is_empty(), "{what}: {shown}");
    prop_assert!(
        message.len() <= MAX_MESSAGE,
        "{what}: a message of {} bytes: {shown}",
        message.len()
    );
    Ok(Some((kind, message)))
}

/// Percent-encodes every byte but the unreserved ones.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A path segment: good ids, any text encoded, bad encodings, too long, empty.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9.-]{1,16}",
        2 => any::<String>().prop_map(|s| encode(&s)),
        2 => proptest::sample::select(&[
            "%", "%z", "%zz", "a%", "%e9", "%ff%fe", "%00", "%20", "%0d%0a", "%C3", "%2F",
            "%2e%2e", "..", ".", "a%2", "%%", "%u0041",
        ][..]).prop_map(str::to_owned),
        1 => (250usize..300).prop_map(|n| "x".repeat(n)),
        1 => "[!$&'()*+,;=:@a-z]{1,10}",
        1 => Just(String::new()),
    ]
}

/// The `instance` query: none, good, bad hex, bad encoding, repeated.
fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        2 => Just(format!("?instance={HEX}")),
        2 => "[0-9a-zA-Z]{0,40}".prop_map(|s| format!("?instance={s}")),
        1 => any::<String>().prop_map(|s| format!("?instance={}", encode(&s))),
        1 => proptest::sample::select(&[
            "?instance=%zz", "?instance", "?instance=", "?=1", "?instance=%ff",
            "?other=1", "?instance=1&instance=2", "?&&", "?instance=+",
        ][..]).prop_map(str::to_owned),
        1 => Just(format!("?instance={}", "0".repeat(32))),
    ]
}

/// Any JSON value, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(Value::from(HEX)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The routes of the contract (docs/relay.md).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    Groups,
    Members,
    Revision,
    Member,
    Join,
    Leave,
    ForcedDown,
    Metadata,
    Watch,
    Heartbeat,
    Register,
    Health,
}

const ROUTES: &[Route] = &[
    Route::Groups,
    Route::Members,
    Route::Revision,
    Route::Member,
    Route::Join,
    Route::Leave,
    Route::ForcedDown,
    Route::Metadata,
    Route::Watch,
    Route::Heartbeat,
    Route::Register,
    Route::Health,
];

impl Route {
    fn method(self) -> &'static str {
        match self {
            Route::Groups
            | Route::Members
            | Route::Revision
            | Route::Member
            | Route::Watch
            | Route::Health => "GET",
            Route::Join | Route::ForcedDown | Route::Metadata => "PUT",
            Route::Leave => "DELETE",
            Route::Heartbeat | Route::Register => "POST",
        }
    }

    fn target(self, group: &str, member: &str, query: &str) -> String {
        let key = format!("/v1/groups/{group}/members/{member}");
        match self {
            Route::Groups => "/v1/groups".to_owned(),
            Route::Members => format!("/v1/groups/{group}/members"),
            Route::Revision => format!("/v1/groups/{group}/revision"),
            Route::Member | Route::Join => key,
            Route::Leave => format!("{key}{query}"),
            Route::ForcedDown => format!("{key}/forced_down"),
            Route::Metadata => format!("{key}/metadata{query}"),
            Route::Watch => format!("/v1/groups/{group}/watch"),
            Route::Heartbeat => "/v1/heartbeat".to_owned(),
            Route::Register => "/v1/register".to_owned(),
            Route::Health => "/healthz".to_owned(),
        }
    }

    /// A good body for the route (`null` for routes without one).
    fn good_body(self, n: u8) -> Value {
        let metadata = json!({"zone": format!("z{n}")});
        match self {
            Route::Join => json!({"instance": HEX, "metadata": metadata, "exclusive": n % 2 == 0}),
            Route::ForcedDown => json!({"forced_down": n % 2 == 0}),
            Route::Metadata => metadata,
            Route::Heartbeat => json!({"instance": HEX, "members": [["fuzz", format!("m{n}")]]}),
            Route::Register => json!({"registrations": [{
                "group": "fuzz", "member": format!("m{n}"), "instance": HEX,
                "metadata": metadata, "if_absent": n % 3 == 0,
            }]}),
            _ => Value::Null,
        }
    }

    /// The fields of the good body a wrong value may replace: its JSON pointer, the
    /// name the error must mention, and values of a wrong type for it.
    fn fields(self) -> Vec<(&'static str, &'static str, Vec<Value>)> {
        let instance = vec![
            json!(1),
            json!(true),
            json!(null),
            json!([]),
            json!({}),
            json!("zz"),
            json!(HEX.to_uppercase() + "0"),
            json!("0".repeat(32)),
            json!("g".repeat(32)),
            json!("a".repeat(20_000)),
        ];
        let flag = vec![
            json!(1),
            json!("true"),
            json!(null),
            json!([]),
            json!({}),
            json!(0.5),
            json!("s".repeat(20_000)),
        ];
        let metadata = vec![
            json!(1),
            json!("x"),
            json!([]),
            json!(true),
            json!(null),
            json!({"Zone": "v"}),
            json!({"k": 1}),
            json!({"k": null}),
            json!({"k": {"a": "b"}}),
            json!({"k": "v".repeat(1025)}),
        ];
        let holder = vec![
            json!(1),
            json!("x"),
            json!([]),
            json!({"instance": HEX}),
            json!({"instance": HEX, "epoch": -1}),
            json!({"instance": HEX, "epoch": 1.5}),
            json!({"instance": HEX, "epoch": "1"}),
            json!({"instance": "x", "epoch": 1}),
            json!({"instance": HEX, "epoch": 1, "other": 1}),
            json!({"instance": HEX, "epoch": 3.7e19}),
        ];
        let id = vec![
            json!(1),
            json!(null),
            json!([]),
            json!({}),
            json!(true),
            json!(u64::MAX),
        ];
        match self {
            Route::Join => vec![
                ("/instance", "instance", instance),
                ("/metadata", "metadata", metadata),
                ("/exclusive", "exclusive", flag.clone()),
                ("/if_absent", "if_absent", flag),
                ("/if_held_by", "if_held_by", holder),
            ],
            Route::ForcedDown => vec![("/forced_down", "forced_down", flag)],
            Route::Metadata => vec![(
                "/zone",
                "zone",
                vec![json!(1), json!(null), json!([]), json!({}), json!(true)],
            )],
            Route::Heartbeat => vec![
                ("/instance", "instance", instance),
                (
                    "/members",
                    "members",
                    vec![
                        json!(1),
                        json!("x"),
                        json!({}),
                        json!(null),
                        json!([["a"]]),
                        json!([["a", "b", "c"]]),
                        json!([[1, 2]]),
                        json!([["a", null]]),
                        json!(["a"]),
                    ],
                ),
            ],
            Route::Register => vec![
                (
                    "/registrations",
                    "registrations",
                    vec![
                        json!(1),
                        json!({}),
                        json!("x"),
                        json!(null),
                        json!([1]),
                        json!([[]]),
                    ],
                ),
                ("/registrations/0/group", "group", id.clone()),
                ("/registrations/0/member", "member", id),
                ("/registrations/0/instance", "instance", instance),
                ("/registrations/0/metadata", "metadata", metadata),
                (
                    "/registrations/0/if_absent",
                    "if_absent",
                    vec![json!(1), json!("x"), json!(null)],
                ),
                ("/registrations/0/if_held_by", "if_held_by", holder),
            ],
            _ => Vec::new(),
        }
    }
}

/// `value` with the pointer `at` set to `to` (the field added when it is absent).
fn replaced(mut value: Value, at: &str, to: Value) -> Value {
    let (parent, field) = at.rsplit_once('/').unwrap_or(("", at));
    match value.pointer_mut(parent) {
        Some(Value::Object(object)) => {
            object.insert(field.to_owned(), to);
        }
        Some(Value::Array(items)) => {
            if let Some(slot) = field.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *slot = to;
            }
        }
        _ => {}
    }
    value
}

/// A body: good, truncated, random bytes, random JSON, deeply nested, huge numbers,
/// an unknown field, too large.
fn body(good: Value) -> impl Strategy<Value = Vec<u8>> {
    let text = good.to_string();
    let bytes = text.clone().into_bytes();
    let len = bytes.len();
    prop_oneof![
        2 => Just(bytes.clone()),
        3 => (0..len.max(1)).prop_map(move |cut| bytes[..cut.min(len)].to_vec()),
        2 => proptest::collection::vec(any::<u8>(), 0..200),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => (1usize..5_000, proptest::bool::ANY).prop_map(|(depth, arrays)| {
            if arrays {
                format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
            } else {
                format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes()
            }
        }),
        1 => proptest::sample::select(&[
            "1e400", "-1e400", "18446744073709551616", "-0", "123456789012345678901234567890",
            "{\"epoch\": 1e999}", "\"\\ud800\"", "{\"a\":1,\"a\":2}", "", " ", "null", "{}",
        ][..]).prop_map(|s| s.as_bytes().to_vec()),
        1 => Just({
            let mut v = good.clone();
            if let Some(o) = v.as_object_mut() {
                o.insert("bogus_field".to_owned(), json!(1));
            }
            v.to_string().into_bytes()
        }),
        1 => Just(format!("{text}{}", " ".repeat(BODY_LIMIT)).into_bytes()),
    ]
}

/// Any request on any route.
fn any_request() -> impl Strategy<Value = (Route, String, Vec<u8>, Option<&'static str>)> {
    (
        proptest::sample::select(ROUTES),
        segment(),
        segment(),
        query(),
        any::<u8>(),
        prop_oneof![8 => Just(Some(TOKEN)), 1 => Just(None), 1 => Just(Some("wrong"))],
    )
        .prop_flat_map(|(route, group, member, query, n, token)| {
            let target = route.target(&group, &member, &query);
            body(route.good_body(n)).prop_map(move |body| (route, target.clone(), body, token))
        })
}

/// A good request on a route with a body, with one field given a value of the wrong
/// type: the field's name and the request.
fn wrong_field() -> impl Strategy<Value = (Route, &'static str, Value)> {
    (
        proptest::sample::select(
            &[
                Route::Join,
                Route::ForcedDown,
                Route::Metadata,
                Route::Heartbeat,
                Route::Register,
            ][..],
        ),
        any::<u8>(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(route, n, field, value)| {
            let fields = route.fields();
            let (at, name, values) = fields[field.index(fields.len())].clone();
            let to = values[value.index(values.len())].clone();
            (route, name, replaced(route.good_body(n), at, to))
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1_500,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_request_gets_an_answer_below_500_and_json_errors(
        (route, target, body, token) in any_request(),
        method in prop_oneof![8 => Just(None), 1 => proptest::sample::select(&["GET", "PUT", "POST", "DELETE", "PATCH"][..]).prop_map(Some)],
    ) {
        let method = method.unwrap_or(route.method());
        let answer = send(method, &target, token, &body);
        let what = format!("{method} {target} ({} body bytes)", body.len());
        let error = check(&what, &answer)?;
        if token != Some(TOKEN) && route != Route::Health && method == route.method() {
            // The token is checked before anything else on a route that matched.
            if let Some((kind, _)) = &error {
                prop_assert!(kind == "unauthorized" || kind == "not_found" || kind == "method_not_allowed", "{what}: {kind}");
            } else {
                prop_assert!(false, "{what}: {} without the token", answer.status);
            }
        }
        if body.len() > BODY_LIMIT && token == Some(TOKEN) && answer.status >= 400 {
            if let Some((kind, _)) = &error {
                prop_assert!(kind != "bad_request" || !matches!(route, Route::Join | Route::ForcedDown | Route::Metadata | Route::Heartbeat | Route::Register), "{what}: {kind}");
            }
        }
    }

    #[test]
    fn a_wrong_type_in_a_field_is_a_400_naming_it((route, field, body) in wrong_field()) {
        let target = route.target("fuzz", "m", "");
        let body = body.to_string();
        let answer = send(route.method(), &target, Some(TOKEN), body.as_bytes());
        let what = format!("{} {target} {body}", route.method());
        let error = check(&what, &answer)?;
        prop_assert_eq!(answer.status, 400, "{}", what);
        let (kind, message) = error.unwrap();
        prop_assert!(
            ["bad_request", "invalid_id", "invalid_metadata"].contains(&kind.as_str()),
            "{what}: {kind}"
        );
        prop_assert!(message.contains(field), "{what}: {kind}: {message}");
    }

    #[test]
    fn bad_ids_in_paths_are_400_invalid_id(
        route in proptest::sample::select(&[Route::Members, Route::Revision, Route::Member, Route::Join, Route::Leave, Route::ForcedDown, Route::Metadata, Route::Watch][..]),
        bad in prop_oneof![
            Just("%ff".to_owned()),
            Just("%e9".to_owned()),
            Just("a%20b".to_owned()),
            Just("%0d%0a".to_owned()),
            Just("%00".to_owned()),
            Just("%7f".to_owned()),
            (256usize..400).prop_map(|n| "x".repeat(n)),
        ],
        in_group in any::<bool>(),
        n in any::<u8>(),
    ) {
        let (group, member) = if in_group { (bad.as_str(), "m") } else { ("fuzz", bad.as_str()) };
        prop_assume!(in_group || !matches!(route, Route::Members | Route::Revision | Route::Watch));
        let target = route.target(group, member, "");
        let body = route.good_body(n).to_string();
        let answer = send(route.method(), &target, Some(TOKEN), body.as_bytes());
        let what = format!("{} {target}", route.method());
        let (kind, message) = check(&what, &answer)?.unwrap_or_default();
        prop_assert_eq!(answer.status, 400, "{}: {}", what, message);
        prop_assert_eq!(kind.as_str(), "invalid_id", "{}: {}", what, message);
    }

    #[test]
    fn bad_instance_queries_are_400_naming_instance(
        route in proptest::sample::select(&[Route::Leave, Route::Metadata][..]),
        bad in prop_oneof![
            "[g-z]{32}",
            "[0-9a-f]{0,31}",
            "[0-9a-f]{33,40}",
            Just("%zz".to_owned()),
            Just("%ff".to_owned()),
        ],
        n in any::<u8>(),
    ) {
        let target = route.target("fuzz", "m", &format!("?instance={bad}"));
        let body = route.good_body(n).to_string();
        let answer = send(route.method(), &target, Some(TOKEN), body.as_bytes());
        let what = format!("{} {target}", route.method());
        let (kind, message) = check(&what, &answer)?.unwrap_or_default();
        prop_assert_eq!(answer.status, 400, "{}: {}", what, message);
        prop_assert!(message.contains("instance") || message.contains("query"), "{what}: {kind}: {message}");
    }
}

/// `/healthz` answers without the token (the one route outside `/v1`).
#[test]
fn healthz_answers_without_the_token() {
    let answer = send("GET", "/healthz", None, b"");
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// Found by `a_wrong_type_in_a_field_is_a_400_naming_it`: `if_held_by` took unknown
/// fields (`HolderBody` lacked `deny_unknown_fields`), so a misspelt holder was
/// silently read as the fields it did know, against the contract's "unknown fields
/// are refused".
#[test]
fn an_unknown_field_in_if_held_by_is_refused() {
    let body = json!({"instance": HEX, "if_held_by": {"instance": HEX, "epoch": 1, "epcoh": 2}});
    for (method, target, body) in [
        ("PUT", "/v1/groups/fuzz/members/held".to_owned(), body),
        (
            "POST",
            "/v1/register".to_owned(),
            json!({"registrations": [{"group": "fuzz", "member": "held", "instance": HEX,
                "if_held_by": {"instance": HEX, "epoch": 1, "epcoh": 2}}]}),
        ),
    ] {
        let answer = send(method, &target, Some(TOKEN), body.to_string().as_bytes());
        assert_eq!(answer.status, 400, "{answer:?}");
        let text = String::from_utf8_lossy(&answer.body);
        assert!(
            text.contains("if_held_by") && text.contains("epcoh"),
            "{text}"
        );
    }
}

/// Found by `a_wrong_type_in_a_field_is_a_400_naming_it`: serde_json's message quotes
/// the refused value, so a 60 kB string in `exclusive` came back as a 60 kB message.
#[test]
fn a_huge_wrong_value_is_shown_shortened() {
    let body = json!({"instance": HEX, "exclusive": "s".repeat(60_000)}).to_string();
    let answer = send(
        "PUT",
        "/v1/groups/fuzz/members/m",
        Some(TOKEN),
        body.as_bytes(),
    );
    assert_eq!(answer.status, 400);
    let value: Value = serde_json::from_slice(&answer.body).unwrap();
    let message = value["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`exclusive`") && message.contains("column"),
        "{message}"
    );
    assert!(message.len() < 600, "{} bytes", message.len());
}

/// Found by `a_wrong_type_in_a_field_is_a_400_naming_it`: a member given as three
/// strings was "malformed JSON: trailing characters" (serde_json's syntax error for a
/// too long tuple), naming no field, though the body is well-formed JSON.
#[test]
fn a_member_of_three_strings_names_the_field() {
    let body = json!({"instance": HEX, "members": [["fuzz", "m", "x"]]}).to_string();
    let answer = send("POST", "/v1/heartbeat", Some(TOKEN), body.as_bytes());
    assert_eq!(answer.status, 400);
    let value: Value = serde_json::from_slice(&answer.body).unwrap();
    let message = value["error"]["message"].as_str().unwrap();
    assert!(message.contains("`members[0]`"), "{message}");
    assert!(!message.contains("malformed"), "{message}");
}

/// Found by `every_request_gets_an_answer_below_500_and_json_errors`: a body over the
/// limit on a path with a bad query (`instance` twice) was a 400 naming the query,
/// because the query's extractor ran before the body was read. The size is judged
/// first now, whether the client sends a `Content-Length` or chunks.
#[test]
fn a_body_over_the_limit_is_413_before_a_bad_query() {
    let target = "/v1/groups/-/members/%2F/metadata?instance=1&instance=2";
    let body = vec![b' '; BODY_LIMIT + 15];
    for framing in [Framing::Length, Framing::Chunked] {
        let answer = send_framed("PUT", target, Some(TOKEN), &body, framing);
        assert_eq!(answer.status, 413, "{framing:?}: {answer:?}");
        let value: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(value["error"]["kind"], "payload_too_large", "{framing:?}");
    }
    // Without the token the answer is still 401: the size is judged after it.
    let answer = send_framed("PUT", target, Some("wrong"), &body, Framing::Chunked);
    assert_eq!(answer.status, 401, "{answer:?}");
    // Under the limit the bad query is named as before.
    let answer = send("PUT", target, Some(TOKEN), b"{}");
    assert_eq!(answer.status, 400, "{answer:?}");
}
