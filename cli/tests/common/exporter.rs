//! Helpers for the tests of `servicegroup exporter` and its status page.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::{Bg, Env};

/// Starts `servicegroup exporter` on a free port; returns it and its base URL.
pub fn start_exporter(env: &Env, extra: &[&str]) -> (Bg, String) {
    let mut args = vec!["exporter", "--listen", "127.0.0.1:0", "--interval", "200ms"];
    args.extend_from_slice(extra);
    let mut bg = env.spawn(&args);
    let line = bg.wait_stdout("`exporter listening on`", Duration::from_secs(60), |l| {
        l.starts_with("exporter listening on http://")
    });
    let url = line
        .split_whitespace()
        .nth(3)
        .expect("the URL in the listening line")
        .to_owned();
    (bg, url)
}

/// A blocking `GET` of `url` (`http://host:port/path`): status code and body.
/// (A test client only: one request per connection, `Connection: close`.)
pub fn get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// The value of the series line `series` (`name{labels}`) in a scrape, if present.
pub fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
