//! `https://` endpoints with `[etcd] ca_file`: a one-member etcd serving TLS with a
//! certificate of a throwaway CA (made with openssl). The right CA connects; another
//! CA is refused with an error naming the certificate problem, never "down".

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use servicegroup_core::{Config, ServiceGroup};
use tokio::time::Instant;
// Name the driver crate, or the linker drops it and its registration.
use servicegroup_driver_etcd as _;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(dir: &Path, args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
}

/// A CA (`NAME.crt`) and, with `server`, a server certificate for 127.0.0.1 it signs.
fn make_ca(dir: &Path, name: &str, server: bool) {
    let key = format!("{name}.key");
    let crt = format!("{name}.crt");
    let subj = format!("/CN=sg-test-{name}");
    run(
        dir,
        &[
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out",
            &crt, "-days", "2", "-subj", &subj,
        ],
    );
    if server {
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(
            dir,
            &[
                "openssl",
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        run(
            dir,
            &[
                "openssl",
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                &crt,
                "-CAkey",
                &key,
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
    }
}

struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(endpoint: &str, ca: &Path) -> Config {
    let mut c = Config::with_driver("etcd");
    c.set("etcd.endpoints", vec![endpoint.to_owned()]).unwrap();
    c.set("etcd.ca_file", ca.to_str().unwrap()).unwrap();
    c.set("etcd.prefix", servicegroup_conformance::unique_name("tls"))
        .unwrap();
    c.set("etcd.timeout", Duration::from_secs(1)).unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_verified_with_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca", true);
    make_ca(dir.path(), "other", false);
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("https://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let _etcd = Etcd(
        Command::new("etcd")
            .current_dir(dir.path())
            .args(["--name", "tls", "--data-dir", "data"])
            .args([
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("tls={peer_url}")])
            .args(["--cert-file", "server.crt", "--key-file", "server.key"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian's etcd-server, installed by scripts/lib/etcd.sh)"),
    );

    let sg = ServiceGroup::connect(config(&endpoint, &dir.path().join("ca.crt")))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        match sg.join("compute", "host-1").await {
            Ok(m) => break m,
            Err(e) => {
                assert!(e.kind().is_unreachable(), "{e}");
                assert!(
                    Instant::now() < deadline,
                    "etcd over TLS never answered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(sg.is_up("compute", "host-1").await.unwrap());
    m.leave().await.unwrap();

    let wrong = ServiceGroup::connect(config(&endpoint, &dir.path().join("other.crt")))
        .await
        .unwrap();
    let err = wrong.members("compute").await.unwrap_err();
    assert!(err.kind().is_unreachable(), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    let err = ServiceGroup::connect(config(&endpoint, &dir.path().join("missing.crt")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), servicegroup_core::ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("etcd.ca_file"), "{err}");
}
