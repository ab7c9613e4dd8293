//! The status page in a real browser: headless Chromium, driven through
//! chromedriver (WebDriver), loads the page of a real `servicegroup exporter`
//! while real `join` processes run. A member forced down shows as such; a member
//! killed with `kill -9` shows as down within service_down_time + margin, without
//! a reload; a screenshot is saved as `target/tmp/status-page.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver`, which scripts/test installs
//! (scripts/lib/chromium.sh exports SERVICEGROUP_TEST_CHROMEDRIVER and
//! SERVICEGROUP_TEST_CHROMIUM); without them this test fails, it never skips.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::exporter;
use common::{group, Env};
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the browser test needs Debian's chromium and chromium-driver, \
             which scripts/test installs (scripts/lib/chromium.sh). Run `scripts/test`, or \
             install them and set SERVICEGROUP_TEST_CHROMEDRIVER=/usr/bin/chromedriver \
             SERVICEGROUP_TEST_CHROMIUM=/usr/bin/chromium."
        )
    })
}

fn start_chromedriver() -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(var("SERVICEGROUP_TEST_CHROMEDRIVER"))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        url,
        _profile: tempfile::tempdir().unwrap(),
    }
}

#[test]
fn a_killed_member_turns_down_on_the_live_page_and_forced_down_shows() {
    let env = Env::sqlite();
    let g = group("page");
    let (mut exporter, url) = exporter::start_exporter(&env, &[&g]);
    let mut a = env.spawn(&["join", &g, "alive", "--meta", "role=web"]);
    let mut b = env.spawn(&["join", &g, "doomed"]);
    let mut c = env.spawn(&["join", &g, "drained"]);
    a.wait_joined();
    b.wait_joined();
    c.wait_joined();
    env.run(&["force-down", &g, "drained"]).expect_code(0);
    // The exporter has listed the forced-down member before the page loads.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, scrape) = exporter::get(&format!("{url}/metrics"));
        let series = format!(r#"servicegroup_members{{group="{g}",state="forced_down"}}"#);
        if exporter::value(&scrape, &series) == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "forced-down never counted:\n{scrape}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let chromedriver = start_chromedriver();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let shot = runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": var("SERVICEGROUP_TEST_CHROMIUM"),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                    format!("--user-data-dir={}", chromedriver._profile.path().display()),
                ],
            }),
        );
        let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&chromedriver.url)
            .await
            .expect("a WebDriver session in headless Chromium");
        browser.goto(&format!("{url}/")).await.unwrap();
        // Forced down shows as such, as the server rendered it.
        let drained = browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(
                r#"tr[data-member="drained"][data-state="forced_down"]"#,
            ))
            .await
            .expect("the forced-down member on the page");
        assert!(drained.text().await.unwrap().contains("forced_down"));
        // A marker that a reload would wipe.
        browser
            .execute("window.__sgNoReload = 42; return 1;", vec![])
            .await
            .unwrap();
        assert!(
            browser
                .find(Locator::Css(r#"tr[data-member="doomed"]"#))
                .await
                .is_err(),
            "the live member is not in the down list"
        );

        b.kill9();
        let killed_at = Instant::now();
        let budget = common::SERVICE_DOWN_TIME + Duration::from_secs(8);
        let doomed = browser
            .wait()
            .at_most(budget)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(
                r#"tr[data-member="doomed"][data-state="down"]"#,
            ))
            .await
            .unwrap_or_else(|e| {
                panic!("the killed member never showed as down within {budget:?}: {e}")
            });
        let shown_after = killed_at.elapsed();
        assert!(doomed.text().await.unwrap().contains("down"));
        let marker = browser
            .execute("return window.__sgNoReload === 42;", vec![])
            .await
            .unwrap();
        assert_eq!(marker, json!(true), "the page was reloaded");
        // The counts row was redrawn too.
        let down = browser
            .find(Locator::Css(&format!(
                r#"#summary tr[data-group="{g}"] td.down"#
            )))
            .await
            .unwrap();
        assert_eq!(down.text().await.unwrap(), "1");
        let forced = browser
            .find(Locator::Css(&format!(
                r#"#summary tr[data-group="{g}"] td.forced"#
            )))
            .await
            .unwrap();
        assert_eq!(forced.text().await.unwrap(), "1");
        let png = browser.screenshot().await.unwrap();
        browser.close().await.unwrap();
        eprintln!("the killed member showed as down {shown_after:?} after kill -9");
        png
    });
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::write(&path, &shot).unwrap();
    println!("screenshot: {}", path.display());
    eprintln!("screenshot: {}", path.display());

    exporter.signal("TERM");
    assert!(exporter.wait_exit(Duration::from_secs(10)).success());
    drop((a, c));
}
