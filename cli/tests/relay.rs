//! The relay's HTTP API, against real `servicegroup relay` processes: auth, TLS with a
//! certificate made by the test (openssl), bad requests (too large, malformed JSON,
//! bad ids and metadata), slow clients, the watch stream (each transition once, across
//! a backend restart), and two relays on one backend with one killed mid-run.
//!
//! Requests are written on raw TCP here (an independent client that also lets a test
//! be slow on purpose); the relay driver is exercised through the CLI.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::{group, Env, RelayProcess, RELAY_TOKEN};
use serde_json::{json, Value};

const HEX_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HEX_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// One request, `Connection: close`; the status and the body (JSON when it parses).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).expect("connect to the relay");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    request.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status: u16 = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let text = answer.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    let value = serde_json::from_str(text).unwrap_or(Value::String(text.to_owned()));
    (status, value)
}

fn authed(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    http(addr, method, path, Some(RELAY_TOKEN), body)
}

fn error_kind(v: &Value) -> &str {
    v["error"]["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error object: {v}"))
}

fn error_message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

/// Stops a relay with SIGTERM and returns everything it wrote on stderr.
fn stop(mut relay: RelayProcess) -> String {
    relay.bg.signal("TERM");
    relay.bg.wait_exit(Duration::from_secs(30));
    relay.bg.seen_err.join("\n")
}

#[test]
fn the_token_is_required_and_never_logged() {
    let mut backend = Env::sqlite();
    backend.set("RUST_LOG", "debug");
    let relay = RelayProcess::start(&backend, &[]);
    let addr = relay.addr();

    let (status, body) = http(&addr, "GET", "/v1/groups", None, None);
    assert_eq!((status, error_kind(&body)), (401, "unauthorized"), "{body}");
    let (status, body) = http(&addr, "GET", "/v1/groups", Some("wrong-token-zzz"), None);
    assert_eq!((status, error_kind(&body)), (401, "unauthorized"), "{body}");
    let (status, body) = http(
        &addr,
        "PUT",
        &format!("/v1/groups/{}/members/m", group("auth")),
        Some("wrong-token-zzz"),
        Some(&format!(r#"{{"instance":"{HEX_A}"}}"#)),
    );
    assert_eq!(status, 401, "a write without the token: {body}");
    let (status, body) = authed(&addr, "GET", "/v1/groups", None);
    assert_eq!((status, body), (200, json!([])));
    let (status, body) = http(&addr, "GET", "/healthz", None, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["driver"], "db");

    // The client side: a wrong token is an error (exit 2), never a verdict.
    let mut client = Env::relay_client(&relay.url);
    client.set("SERVICEGROUP_RELAY__TOKEN", "wrong-token-zzz");
    let line = client.run(&["list", "g"]).expect_one_line_error();
    assert!(line.contains("401"), "{line}");
    assert!(
        !line.contains("wrong-token-zzz"),
        "token in the error: {line}"
    );
    // And `servicegroup config` masks it.
    let config = client.run(&["config"]);
    config.expect_code(0);
    assert!(config.stdout.contains("relay.token"), "{}", config.stdout);
    assert!(
        !config.stdout.contains("wrong-token-zzz"),
        "{}",
        config.stdout
    );

    let logs = stop(relay);
    assert!(logs.contains("refused"), "the refusals are logged: {logs}");
    for secret in [RELAY_TOKEN, "wrong-token-zzz"] {
        assert!(
            !logs.contains(secret),
            "{secret} in the relay's log:\n{logs}"
        );
    }
}

#[test]
fn unprotected_serving_is_refused() {
    let backend = Env::sqlite();
    let line = backend
        .run(&["relay", "--listen", "0.0.0.0:0", "--insecure"])
        .expect_one_line_error();
    assert!(line.contains("loopback"), "{line}");
    let line = backend
        .run(&["relay", "--listen", "127.0.0.1:0"])
        .expect_one_line_error();
    assert!(line.contains("no token"), "{line}");
    let token = backend.dir.path().join("t");
    std::fs::write(&token, "abc").unwrap();
    let line = backend
        .run(&[
            "relay",
            "--listen",
            "0.0.0.0:0",
            "--token-file",
            token.to_str().unwrap(),
        ])
        .expect_one_line_error();
    assert!(line.contains("plain HTTP"), "{line}");
    // Loopback with --insecure serves without a token.
    let relay = RelayProcess::start(&backend, &["--insecure"]);
    let (status, _) = http(&relay.addr(), "GET", "/v1/groups", None, None);
    assert_eq!(status, 200);
}

fn openssl_cert(dir: &Path, name: &str) -> (String, String) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command (Debian package openssl) makes the test certificate");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn tls_with_a_self_signed_certificate() {
    let backend = Env::sqlite();
    let (cert, key) = openssl_cert(backend.dir.path(), "relay");
    let relay = RelayProcess::start(&backend, &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(relay.url.starts_with("https://"), "{}", relay.url);
    let url = relay.url.replace("127.0.0.1", "localhost");

    let mut client = Env::relay_client(&url);
    client.set("SERVICEGROUP_RELAY__CA_FILE", &cert);
    let g = group("tls");
    let mut member = client.spawn(&["join", &g, "host-a"]);
    member.wait_joined();
    let list = client.run(&["list", &g, "--json"]).json();
    assert_eq!(list[0]["member"], "host-a", "{list}");
    assert_eq!(list[0]["state"], "up", "{list}");
    // HTTP/2 over TLS (ALPN h2): the same answers.
    client.set("SERVICEGROUP_RELAY__HTTP2", "true");
    let list = client.run(&["list", &g, "--json"]).json();
    assert_eq!(list[0]["member"], "host-a", "http2: {list}");
    assert_eq!(list[0]["state"], "up", "http2: {list}");
    client.unset("SERVICEGROUP_RELAY__HTTP2");

    // Another certificate as the root: refused, an error, not an answer.
    let (other, _) = openssl_cert(backend.dir.path(), "other");
    client.set("SERVICEGROUP_RELAY__CA_FILE", &other);
    let line = client.run(&["list", &g]).expect_one_line_error();
    assert!(line.to_lowercase().contains("certificate"), "{line}");
    // https without a CA file is a configuration error.
    client.unset("SERVICEGROUP_RELAY__CA_FILE");
    let line = client.run(&["list", &g]).expect_one_line_error();
    assert!(line.contains("ca_file"), "{line}");
    // Plain HTTP to the TLS port gets no answer of the API.
    let mut stream = TcpStream::connect(relay.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("\"status\""),
        "plain HTTP was served on the TLS port"
    );
    member.signal("TERM");
    member.wait_exit(Duration::from_secs(30));
}

#[test]
fn bad_requests_get_json_errors_naming_what_was_wrong() {
    let backend = Env::sqlite();
    let relay = RelayProcess::start(&backend, &["--body-limit", "2048"]);
    let addr = relay.addr();
    let g = group("bad");
    let member = format!("/v1/groups/{g}/members/host-a");

    // Too large.
    let members: Vec<[String; 2]> = (0..200)
        .map(|i| [g.clone(), format!("member-{i}")])
        .collect();
    let big = json!({"instance": HEX_A, "members": members}).to_string();
    assert!(big.len() > 2048);
    let (status, body) = authed(&addr, "POST", "/v1/heartbeat", Some(&big));
    assert_eq!(
        (status, error_kind(&body)),
        (413, "payload_too_large"),
        "{body}"
    );

    // Malformed JSON, a wrong type, a missing field, an unknown field.
    let (status, body) = authed(&addr, "PUT", &member, Some(r#"{"instance": "#));
    assert_eq!((status, error_kind(&body)), (400, "bad_request"), "{body}");
    assert!(error_message(&body).contains("malformed JSON"), "{body}");
    let (status, body) = authed(
        &addr,
        "PUT",
        &member,
        Some(&format!(r#"{{"instance":"{HEX_A}","exclusive":"yes"}}"#)),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_message(&body).contains("`exclusive`"), "{body}");
    let (status, body) = authed(&addr, "PUT", &member, Some("{}"));
    assert_eq!(status, 400, "{body}");
    assert!(error_message(&body).contains("`instance`"), "{body}");
    let (status, body) = authed(
        &addr,
        "PUT",
        &format!("{member}/forced_down"),
        Some(r#"{"forced":true}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_message(&body).contains("forced"), "{body}");
    let (status, body) = authed(&addr, "PUT", &member, Some(r#"{"instance":"12zz"}"#));
    assert_eq!((status, error_kind(&body)), (400, "invalid_id"), "{body}");

    // Bad ids, in paths (percent-encoded) and in heartbeat bodies.
    let (status, body) = authed(
        &addr,
        "GET",
        &format!("/v1/groups/{g}/members/bad%20id"),
        None,
    );
    assert_eq!((status, error_kind(&body)), (400, "invalid_id"), "{body}");
    assert!(error_message(&body).contains("whitespace"), "{body}");
    let long = "x".repeat(300);
    let (status, body) = authed(&addr, "GET", &format!("/v1/groups/{long}/members"), None);
    assert_eq!((status, error_kind(&body)), (400, "invalid_id"), "{body}");
    let beat = json!({"instance": HEX_A, "members": [[g, "a\u{7}b"]]}).to_string();
    let (status, body) = authed(&addr, "POST", "/v1/heartbeat", Some(&beat));
    assert_eq!((status, error_kind(&body)), (400, "invalid_id"), "{body}");

    // Bad metadata, in a join and as the metadata body.
    let join = json!({"instance": HEX_A, "metadata": {"Bad Key": "v"}}).to_string();
    let (status, body) = authed(&addr, "PUT", &member, Some(&join));
    assert_eq!(
        (status, error_kind(&body)),
        (400, "invalid_metadata"),
        "{body}"
    );
    assert!(error_message(&body).contains("`metadata`"), "{body}");
    let (status, body) = authed(
        &addr,
        "PUT",
        &format!("{member}/metadata"),
        Some(r#"{"k": 1}"#),
    );
    assert_eq!(
        (status, error_kind(&body)),
        (400, "invalid_metadata"),
        "{body}"
    );

    // Unknown members and paths.
    let (status, body) = authed(&addr, "GET", &member, None);
    assert_eq!((status, error_kind(&body)), (404, "not_found"), "{body}");
    let (status, _) = authed(&addr, "DELETE", &member, None);
    assert_eq!(status, 404);
    let (status, _) = authed(
        &addr,
        "PUT",
        &format!("{member}/forced_down"),
        Some(r#"{"forced_down":true}"#),
    );
    assert_eq!(status, 404);
    let (status, body) = authed(&addr, "GET", "/v1/nothing", None);
    assert_eq!((status, error_kind(&body)), (404, "not_found"), "{body}");

    // The contract: join 200 with the record, exclusive 409, metadata, forced down,
    // heartbeat, leave 204.
    let join = json!({"instance": HEX_A, "metadata": {"zone": "eu-1"}}).to_string();
    let (status, row) = authed(&addr, "PUT", &member, Some(&join));
    assert_eq!(status, 200, "{row}");
    assert_eq!(
        (row["instance"].as_str(), row["epoch"].as_u64()),
        (Some(HEX_A), Some(1))
    );
    assert_eq!(row["metadata"], json!({"zone": "eu-1"}));
    let exclusive = json!({"instance": HEX_B, "exclusive": true}).to_string();
    let (status, body) = authed(&addr, "PUT", &member, Some(&exclusive));
    assert_eq!((status, error_kind(&body)), (409, "conflict"), "{body}");
    let (status, row) = authed(
        &addr,
        "PUT",
        &format!("{member}/metadata"),
        Some(r#"{"zone":"eu-2"}"#),
    );
    assert_eq!(
        (status, &row["metadata"]),
        (200, &json!({"zone": "eu-2"})),
        "{row}"
    );
    let (status, row) = authed(
        &addr,
        "PUT",
        &format!("{member}/forced_down"),
        Some(r#"{"forced_down":true}"#),
    );
    assert_eq!(
        (status, &row["forced_down"], &row["state"]),
        (200, &json!(true), &json!("down")),
        "{row}"
    );
    let beat = json!({"instance": HEX_B, "members": [[g, "host-a"], [g, "host-z"]]}).to_string();
    let (status, answer) = authed(&addr, "POST", "/v1/heartbeat", Some(&beat));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["missing"], json!([[g, "host-z"]]), "{answer}");
    assert_eq!(answer["superseded"][0]["instance"], HEX_A, "{answer}");
    let (status, _) = authed(&addr, "DELETE", &format!("{member}?instance={HEX_B}"), None);
    assert_eq!(status, 404, "a leave by an instance that does not hold it");
    let (status, _) = authed(&addr, "DELETE", &format!("{member}?instance={HEX_A}"), None);
    assert_eq!(status, 204);
    let (status, body) = authed(&addr, "GET", &format!("/v1/groups/{g}/members"), None);
    assert_eq!((status, body), (200, json!([])));
    // Still alive after all that.
    assert_eq!(http(&addr, "GET", "/healthz", None, None).0, 200);
}

/// `/revision` answers the backend's membership revision: 401 without the token, it
/// moves with a join and a forced-down change and stays while heartbeats land, and a
/// bad group id is a 400 `invalid_id`.
#[test]
fn revision_moves_with_membership_changes_and_needs_the_token() {
    let backend = Env::sqlite();
    let relay = RelayProcess::start(&backend, &[]);
    let addr = relay.addr();
    let g = group("revision");
    let path = format!("/v1/groups/{g}/revision");
    let (status, body) = http(&addr, "GET", &path, None, None);
    assert_eq!((status, error_kind(&body)), (401, "unauthorized"), "{body}");
    let revision = || {
        let (status, body) = authed(&addr, "GET", &path, None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["group"], json!(g), "{body}");
        body["revision"]
            .as_u64()
            .unwrap_or_else(|| panic!("no revision: {body}"))
    };
    let start = revision();
    let (status, body) = authed(
        &addr,
        "PUT",
        &format!("/v1/groups/{g}/members/host-a"),
        Some(&format!(r#"{{"instance":"{HEX_A}"}}"#)),
    );
    assert_eq!(status, 200, "{body}");
    let joined = revision();
    assert_ne!(joined, start, "a join must move the revision");
    let (status, body) = authed(
        &addr,
        "POST",
        "/v1/heartbeat",
        Some(&format!(
            r#"{{"instance":"{HEX_A}","members":[["{g}","host-a"]]}}"#
        )),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(revision(), joined, "a heartbeat must not move the revision");
    let (status, body) = authed(
        &addr,
        "PUT",
        &format!("/v1/groups/{g}/members/host-a/forced_down"),
        Some(r#"{"forced_down": true}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_ne!(revision(), joined, "forcing down must move the revision");
    let (status, body) = authed(&addr, "GET", "/v1/groups/a%20b/revision", None);
    assert_eq!((status, error_kind(&body)), (400, "invalid_id"), "{body}");
}

/// `?state=` ships only the members in that state and `/summary` counts them, both
/// judged with the caller's `?down_after=` on the backend's clock; bad values are
/// 400s naming the parameter.
#[test]
fn listing_by_state_and_summary_judge_with_the_callers_down_time() {
    let backend = Env::sqlite();
    let relay = RelayProcess::start(&backend, &[]);
    let addr = relay.addr();
    let g = group("state");
    for (member, instance) in [("host-a", HEX_A), ("host-b", HEX_B)] {
        let (status, body) = authed(
            &addr,
            "PUT",
            &format!("/v1/groups/{g}/members/{member}"),
            Some(&format!(r#"{{"instance":"{instance}"}}"#)),
        );
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = authed(
        &addr,
        "PUT",
        &format!("/v1/groups/{g}/members/host-b/forced_down"),
        Some(r#"{"forced_down": true}"#),
    );
    assert_eq!(status, 200, "{body}");
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not an array: {v}"))
            .iter()
            .map(|m| m["member"].as_str().unwrap().to_owned())
            .collect()
    };

    // Fresh heartbeats: host-a up, host-b forced down.
    let (status, body) = authed(
        &addr,
        "GET",
        &format!("/v1/groups/{g}/members?state=down"),
        None,
    );
    assert_eq!(
        (status, names(&body)),
        (200, vec!["host-b".to_owned()]),
        "{body}"
    );
    let (status, body) = authed(
        &addr,
        "GET",
        &format!("/v1/groups/{g}/members?state=up"),
        None,
    );
    assert_eq!(
        (status, names(&body)),
        (200, vec!["host-a".to_owned()]),
        "{body}"
    );
    let (status, body) = authed(&addr, "GET", &format!("/v1/groups/{g}/summary"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"group": g, "up": 1, "down": 0, "forced_down": 1, "total": 2})
    );

    // A caller whose down time has passed since the joins sees host-a down too
    // (nothing heartbeats it), while the relay's own default still says up.
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = authed(
        &addr,
        "GET",
        &format!("/v1/groups/{g}/members?state=down&down_after=0.2"),
        None,
    );
    assert_eq!(
        (status, names(&body)),
        (200, vec!["host-a".to_owned(), "host-b".to_owned()]),
        "{body}"
    );
    let (status, body) = authed(
        &addr,
        "GET",
        &format!("/v1/groups/{g}/summary?down_after=0.2"),
        None,
    );
    assert_eq!(
        (status, body.clone()),
        (
            200,
            json!({"group": g, "up": 0, "down": 1, "forced_down": 1, "total": 2})
        ),
        "{body}"
    );

    // Bad parameters name themselves.
    for (query, name) in [
        ("state=sideways", "`state`"),
        ("state=down&down_after=0", "`down_after`"),
        ("state=down&down_after=-1", "`down_after`"),
        ("state=down&down_after=NaN", "`down_after`"),
        ("state=down&down_after=1e300", "`down_after`"),
        ("state=down&colour=red", "colour"),
    ] {
        let (status, body) = authed(
            &addr,
            "GET",
            &format!("/v1/groups/{g}/members?{query}"),
            None,
        );
        assert_eq!(
            (status, error_kind(&body)),
            (400, "bad_request"),
            "{query}: {body}"
        );
        assert!(error_message(&body).contains(name), "{query}: {body}");
    }
    let (status, body) = authed(
        &addr,
        "GET",
        &format!("/v1/groups/{g}/summary?state=up"),
        None,
    );
    assert_eq!((status, error_kind(&body)), (400, "bad_request"), "{body}");
    assert!(error_message(&body).contains("`state`"), "{body}");
}

#[test]
fn slow_clients_are_timed_out_and_do_not_hold_the_relay() {
    let backend = Env::sqlite();
    let relay = RelayProcess::start(
        &backend,
        &["--header-timeout", "1s", "--request-timeout", "1s"],
    );
    let addr = relay.addr();
    // Headers never finished.
    let mut slow_headers = TcpStream::connect(&addr).unwrap();
    slow_headers
        .write_all(b"GET /v1/groups HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A body that never arrives.
    let mut slow_body = TcpStream::connect(&addr).unwrap();
    slow_body
        .write_all(
            format!(
                "POST /v1/heartbeat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {RELAY_TOKEN}\r\nContent-Length: 1000\r\n\r\n{{\"instance\""
            )
            .as_bytes(),
        )
        .unwrap();
    // A kept-alive connection left idle after its request.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    // Meanwhile others are served.
    assert_eq!(http(&addr, "GET", "/healthz", None, None).0, 200);
    assert_eq!(authed(&addr, "GET", "/v1/groups", None).0, 200);

    for stream in [&slow_headers, &slow_body, &idle] {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
    }
    let mut answer = Vec::new();
    let closed = slow_headers.read_to_end(&mut answer);
    assert!(
        closed.is_ok(),
        "the relay did not close a connection whose headers never came: {closed:?}"
    );
    let mut answer = Vec::new();
    let closed = idle.read_to_end(&mut answer);
    assert!(
        closed.is_ok() && String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "an idle kept-alive connection was not answered and closed: {closed:?}"
    );
    let mut answer = String::new();
    let _ = slow_body.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("request_timeout"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "slow clients were held for {:?}",
        started.elapsed()
    );
}

/// A watcher reading the SSE stream of a group on raw TCP: each `data:` line, parsed.
fn watcher(addr: &str, group: &str) -> Receiver<Value> {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /v1/groups/{group}/watch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {RELAY_TOKEN}\r\n\r\n"
    )
    .unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.lines().map_while(Result::ok) {
            if line.starts_with("HTTP/1.1 ") && !line.contains("200") {
                panic!("watch refused: {line}");
            }
            if let Some(data) = line.strip_prefix("data:") {
                if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Events received until `until` returns true for one (within `timeout`).
fn events_until(
    rx: &Receiver<Value>,
    seen: &mut Vec<Value>,
    timeout: Duration,
    until: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => {
                let stop = until(&v);
                seen.push(v);
                if stop {
                    return;
                }
            }
            Err(_) => panic!("no awaited event within {timeout:?}; seen: {seen:#?}"),
        }
    }
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["event"].as_str().unwrap_or("?"),
                e["member"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// A PostgreSQL server this test owns (scripts/lib/postgres.sh), to restart it.
struct OwnPostgres {
    dir: tempfile::TempDir,
}

impl OwnPostgres {
    fn run(action: &str, dir: &Path) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/postgres.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(action)
            .arg(dir)
            .output()
            .expect("bash scripts/lib/postgres.sh");
        assert!(
            out.status.success(),
            "scripts/lib/postgres.sh {action} failed (the PostgreSQL tests need the server binaries scripts/test installs): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/postgres.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("destroy")
            .arg(self.dir.path())
            .output();
    }
}

fn wait_health(addr: &str, want: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, body) = http(addr, "GET", "/healthz", None, None);
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz stayed {status} {body}, waited for {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn watch_reports_each_transition_once_and_survives_a_backend_restart() {
    let dir = tempfile::Builder::new()
        .prefix("sg-relay-pg-")
        .tempdir_in("/tmp")
        .unwrap();
    let url = OwnPostgres::run("start", dir.path());
    let pg = OwnPostgres { dir };
    let mut backend = Env::bare();
    backend.set("SERVICEGROUP_DRIVER", "db");
    backend.set("SERVICEGROUP_DB__URL", &url);
    backend.set("SERVICEGROUP_DB__TIMEOUT", "1s");
    backend.set("SERVICEGROUP_CALL_TIMEOUT", "1s");
    // Long enough that the outage below cannot make the member go down.
    backend.set("SERVICEGROUP_SERVICE_DOWN_TIME", "8s");
    backend.set("SERVICEGROUP_REPORT_INTERVAL", "200ms");
    backend.set("SERVICEGROUP_WATCH_INTERVAL", "100ms");
    let relay = RelayProcess::start(&backend, &[]);
    let addr = relay.addr();
    let mut client = Env::relay_client(&relay.url);
    client.set("SERVICEGROUP_SERVICE_DOWN_TIME", "8s");
    let g = group("sse");
    let w1 = watcher(&addr, &g);
    let w2 = watcher(&addr, &g);
    let (mut seen1, mut seen2) = (Vec::new(), Vec::new());

    let mut member = client.spawn(&["join", &g, "host-a"]);
    member.wait_joined();
    for (rx, seen) in [(&w1, &mut seen1), (&w2, &mut seen2)] {
        events_until(rx, seen, Duration::from_secs(20), |e| {
            e["event"] == "joined"
        });
    }

    // The backend restarts under the relay; the stream goes on.
    OwnPostgres::run("stop", pg.dir.path());
    wait_health(&addr, 503, Duration::from_secs(20));
    let again = OwnPostgres::run("start", pg.dir.path());
    assert_eq!(again, url, "the server came back on another port");
    wait_health(&addr, 200, Duration::from_secs(30));

    // A transition after the restart is reported, once, to both watchers.
    member.kill9();
    for (rx, seen) in [(&w1, &mut seen1), (&w2, &mut seen2)] {
        events_until(rx, seen, Duration::from_secs(40), |e| e["event"] == "down");
    }
    let mut after = client.spawn(&["join", &g, "host-b"]);
    after.wait_joined();
    for (rx, seen) in [(&w1, &mut seen1), (&w2, &mut seen2)] {
        events_until(rx, seen, Duration::from_secs(20), |e| {
            e["event"] == "joined" && e["member"] == "host-b"
        });
    }
    // Nothing more than that: no event twice.
    for seen in [&seen1, &seen2] {
        assert_eq!(
            kinds(seen),
            ["joined host-a", "down host-a", "joined host-b"],
            "{seen:#?}"
        );
    }
    after.signal("TERM");
    after.wait_exit(Duration::from_secs(30));
}

#[test]
fn two_relays_one_backend_one_killed_clients_fail_over() {
    fail_over("relay_failover", false);
}

#[test]
fn two_relays_one_backend_one_killed_http2_clients_fail_over() {
    fail_over("relay_failover_h2", true);
}

/// Six members joined through the first of two relays on one PostgreSQL database;
/// the first relay killed: every member goes on through the second, no down, no
/// record lost (HTTP/1.1 or HTTP/2 clients).
fn fail_over(database: &str, http2: bool) {
    let backend = Env::postgres(database);
    let first = RelayProcess::start(&backend, &[]);
    let second = RelayProcess::start(&backend, &[]);
    let mut client = Env::relay_client(&format!("{},{}", first.url, second.url));
    client.set("SERVICEGROUP_RELAY__TIMEOUT", "1s");
    client.set(
        "SERVICEGROUP_RELAY__HTTP2",
        if http2 { "true" } else { "false" },
    );
    let observer = Env::relay_client(&second.url);

    let g = group(if http2 { "failover-h2" } else { "failover" });
    let mut watch = observer.spawn(&["watch", &g, "--json"]);
    watch.wait_stderr("`watching group`", Duration::from_secs(30), |l| {
        l.contains("watching group")
    });
    let names: Vec<String> = (0..6).map(|i| format!("host-{i}")).collect();
    let mut members: Vec<_> = names
        .iter()
        .map(|m| client.spawn(&["join", &g, m]))
        .collect();
    for m in &mut members {
        m.wait_joined();
    }
    let mut first = first;
    first.bg.kill9();
    // Two service_down_times of heartbeats through the second relay only.
    let window = Instant::now() + common::SERVICE_DOWN_TIME * 2 + Duration::from_secs(1);
    while Instant::now() < window {
        std::thread::sleep(Duration::from_millis(200));
    }
    let list = observer.run(&["list", &g, "--json"]).json();
    let rows = list.as_array().expect("array");
    assert_eq!(rows.len(), names.len(), "a record was lost: {list}");
    assert!(rows.iter().all(|r| r["state"] == "up"), "{list}");
    for m in &mut members {
        m.signal("TERM");
        assert!(
            m.wait_exit(Duration::from_secs(30)).success(),
            "{:?}",
            m.seen_err
        );
    }
    let list = observer.run(&["list", &g, "--json"]).json();
    assert_eq!(
        list,
        json!([]),
        "every member left through the second relay"
    );
    watch.signal("TERM");
    watch.wait_exit(Duration::from_secs(30));
    let downs: Vec<&String> = watch
        .seen_out
        .iter()
        .filter(|l| l.contains("\"event\":\"down\""))
        .collect();
    assert!(downs.is_empty(), "false downs: {downs:?}");
    let joined = watch
        .seen_out
        .iter()
        .filter(|l| l.contains("\"event\":\"joined\""))
        .count();
    assert_eq!(joined, names.len(), "{:?}", watch.seen_out);
    drop(second);
}
