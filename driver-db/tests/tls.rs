//! TLS to PostgreSQL and MariaDB against the shared test servers, which scripts/test
//! starts with TLS on (scripts/lib/tls.sh makes a throwaway CA and a server
//! certificate valid for `localhost` only) and a user `sg_tls` that must use TLS
//! (PostgreSQL: `hostnossl … reject`; MariaDB: `REQUIRE SSL`), with a password:
//!
//! - `SERVICEGROUP_TEST_POSTGRES_TLS_URL`, `SERVICEGROUP_TEST_MARIADB_TLS_URL`: that
//!   user on `localhost`;
//! - `SERVICEGROUP_TEST_TLS_CA`: the CA that signed the server certificate;
//!   `SERVICEGROUP_TEST_TLS_OTHER_CA`: an unrelated one.
//!
//! Connecting to `127.0.0.1` is connecting by a name the certificate does not carry.
//! Every refusal is checked for the option it must name, and every message and log
//! line for the password, which must never show. Without the variables every test
//! fails saying so.

mod common;

use std::time::Duration;

use servicegroup_core::{Config, ConfigLoader, ErrorKind};
use servicegroup_driver_db::DbDriver;

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{name} is not set: the TLS tests need the TLS test servers. Run them through \
             scripts/test (scripts/lib/tls.sh makes the certificates, postgres.sh and \
             mariadb.sh start the servers with TLS and export the variables)"
        ),
    }
}

fn ca() -> String {
    env("SERVICEGROUP_TEST_TLS_CA")
}

fn other_ca() -> String {
    env("SERVICEGROUP_TEST_TLS_OTHER_CA")
}

/// The password in `url` (`scheme://user:PASSWORD@…`).
fn password_of(url: &str) -> String {
    let userinfo = url.split("://").nth(1).unwrap().split('@').next().unwrap();
    let password = userinfo.split_once(':').unwrap().1.to_owned();
    assert!(password.len() >= 8, "the TLS user has a real password");
    password
}

/// `url` with `localhost` replaced by `host`, and `params` appended.
fn variant(url: &str, host: &str, params: &str) -> String {
    let url = url.replacen("@localhost:", &format!("@{host}:"), 1);
    if params.is_empty() {
        url
    } else {
        format!("{url}?{params}")
    }
}

/// A `db` configuration on `url` plus `[db]` keys.
fn config(url: &str, keys: &[(&str, &str)]) -> Config {
    let mut config = Config::with_driver("db");
    config.set("db.url", url).unwrap();
    config.set("db.timeout", Duration::from_secs(5)).unwrap();
    config.set("db.pool_size", 2).unwrap();
    config.set("db.heartbeat_pool_size", 0).unwrap();
    for (key, value) in keys {
        config.set(&format!("db.{key}"), *value).unwrap();
    }
    config
}

/// Connects (migrations included), then registers a member: proof that pooled
/// connections work too. The handle keeps its pooled connections open.
async fn connects(url: &str, keys: &[(&str, &str)]) -> (DbDriver, servicegroup_core::ServiceGroup) {
    let password = password_of(url);
    let (logs, _guard) = common::capture_logs();
    let driver = match DbDriver::connect(&config(url, keys)).await {
        Ok(d) => d,
        Err(e) => panic!(
            "{}: {e}",
            servicegroup_core::config::secret::redact(url).replace(&password, "***")
        ),
    };
    let sg = servicegroup_core::ServiceGroup::connect(config(url, keys))
        .await
        .expect("the facade connects the same way");
    sg.join("tls", "m1")
        .await
        .expect("a pooled connection")
        .leave()
        .await
        .unwrap();
    assert!(sg.summary("tls").await.is_ok());
    assert!(!format!("{driver:?}").contains(&password));
    assert!(
        !driver.location().contains(&password),
        "{}",
        driver.location()
    );
    assert!(!logs.text().contains(&password), "{}", logs.text());
    (driver, sg)
}

/// Connecting fails with a `kind` error whose message contains every one of
/// `needles`; neither the error nor the log shows the password.
async fn refused(url: &str, keys: &[(&str, &str)], kind: ErrorKind, needles: &[&str]) -> String {
    let password = password_of(url);
    let (logs, _guard) = common::capture_logs();
    let err = DbDriver::connect(&config(url, keys))
        .await
        .expect_err("the connection must be refused");
    let shown = format!("{err} | {err:?}");
    assert_eq!(err.kind(), kind, "{shown}");
    for needle in needles {
        assert!(shown.contains(needle), "missing {needle:?} in: {shown}");
    }
    assert!(!shown.contains(&password), "password in: {shown}");
    let logged = logs.text();
    assert!(!logged.contains(&password), "password in the log: {logged}");
    err.to_string()
}

mod postgres {
    use super::*;

    fn tls_url() -> String {
        env("SERVICEGROUP_TEST_POSTGRES_TLS_URL")
    }

    /// A fresh database (made over the admin connection), as the TLS user's URL.
    async fn fresh_db() -> (String, String) {
        let name = common::unique("sg_tls");
        common::pg_exec(
            &common::pg_admin_url(),
            &[format!("CREATE DATABASE {name}")],
        )
        .await;
        (common::with_dbname(&tls_url(), &name), name)
    }

    /// The sessions of `sg_tls` on database `db` and whether all of them are
    /// encrypted, with the TLS version and cipher (from `pg_stat_ssl`).
    async fn sessions(db: &str) -> (i64, bool, String) {
        let (client, conn) =
            tokio_postgres::connect(&common::pg_admin_url(), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT count(*), coalesce(bool_and(s.ssl), false), \
                 coalesce(max(s.version || ' ' || s.cipher), '') \
                 FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.datname = $1 AND a.usename = 'sg_tls'",
                &[&db],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    }

    #[tokio::test]
    async fn postgres_verify_full_with_the_right_ca_connects_encrypted() {
        let (url, db) = fresh_db().await;
        let url = variant(
            &url,
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", ca()),
        );
        let held = connects(&url, &[]).await;
        let (count, all_tls, cipher) = sessions(&db).await;
        assert!(count >= 1, "the driver's sessions are there");
        assert!(all_tls, "every session of the driver is encrypted");
        assert!(cipher.starts_with("TLSv1."), "{cipher}");
        println!("pg_stat_ssl: {count} sessions of sg_tls, all encrypted, {cipher}");
        drop(held);
    }

    #[tokio::test]
    async fn postgres_tls_keys_with_nova_sqlalchemy_url_connect() {
        let (url, _db) = fresh_db().await;
        // Nova's `[database] connection` form, TLS from `[db]` keys.
        let url = variant(&url, "localhost", "client_encoding=utf8").replacen(
            "postgres://",
            "postgresql+psycopg2://",
            1,
        );
        connects(
            &url,
            &[("sslmode", "verify-full"), ("sslrootcert", ca().as_str())],
        )
        .await;
    }

    #[tokio::test]
    async fn postgres_default_prefer_and_require_without_a_ca_encrypt_unverified() {
        let (url, db) = fresh_db().await;
        // 127.0.0.1 is not in the certificate: nothing is verified, so that is fine.
        let default = connects(&variant(&url, "127.0.0.1", ""), &[]).await;
        let require = connects(&variant(&url, "127.0.0.1", "sslmode=require"), &[]).await;
        let (count, all_tls, _) = sessions(&db).await;
        assert!(
            count >= 2 && all_tls,
            "{count} sessions, all TLS: {all_tls}"
        );
        drop((default, require));
    }

    #[tokio::test]
    async fn postgres_verify_ca_checks_the_chain_but_not_the_host_name() {
        let (url, _db) = fresh_db().await;
        let at_ip = variant(&url, "127.0.0.1", "sslmode=verify-ca");
        connects(&at_ip, &[("sslrootcert", ca().as_str())]).await;
        let other = other_ca();
        refused(
            &at_ip,
            &[("sslrootcert", other.as_str())],
            ErrorKind::Config,
            &[
                &format!("TLS verification failed (sslmode=verify-ca, db.sslrootcert={other})"),
                "UnknownIssuer",
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn postgres_wrong_ca_is_refused_naming_sslrootcert() {
        let (url, _db) = fresh_db().await;
        let other = other_ca();
        let msg = refused(
            &variant(
                &url,
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={other}"),
            ),
            &[],
            ErrorKind::Config,
            &[
                &format!("TLS verification failed (sslmode=verify-full, sslrootcert={other})"),
                "invalid peer certificate: UnknownIssuer",
            ],
        )
        .await;
        println!("wrong CA: {msg}");
        // `require` with a root file checks the chain too (libpq's rule).
        refused(
            &variant(
                &url,
                "localhost",
                &format!("sslmode=require&sslrootcert={other}"),
            ),
            &[],
            ErrorKind::Config,
            &[
                "TLS verification failed (sslmode=require, sslrootcert=",
                "UnknownIssuer",
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn postgres_wrong_host_name_is_refused_naming_sslmode() {
        let (url, _db) = fresh_db().await;
        let ca = ca();
        let msg = refused(
            &variant(
                &url,
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            &[],
            ErrorKind::Config,
            &[
                &format!("TLS verification failed (sslmode=verify-full, sslrootcert={ca})"),
                "certificate not valid for name \"127.0.0.1\"",
                "localhost",
            ],
        )
        .await;
        println!("wrong host name: {msg}");
    }

    #[tokio::test]
    async fn postgres_sslmode_disable_against_a_tls_only_server_fails_clearly() {
        let (url, _db) = fresh_db().await;
        let msg = refused(
            &variant(&url, "localhost", "sslmode=disable"),
            &[],
            ErrorKind::Unavailable,
            &[
                "pg_hba.conf rejects connection",
                "no encryption",
                "(sslmode=disable)",
            ],
        )
        .await;
        println!("sslmode=disable: {msg}");
    }

    #[tokio::test]
    async fn postgres_unreadable_ca_file_is_a_config_error_naming_the_key() {
        let (url, _db) = fresh_db().await;
        refused(
            &variant(&url, "localhost", "sslmode=verify-full"),
            &[("sslrootcert", "/nonexistent/ca.pem")],
            ErrorKind::Config,
            &["cannot use the CA file /nonexistent/ca.pem (db.sslrootcert)"],
        )
        .await;
    }
}

mod mariadb {
    use super::*;

    fn tls_url() -> String {
        env("SERVICEGROUP_TEST_MARIADB_TLS_URL")
    }

    /// A fresh database (made over the admin connection), as the TLS user's URL.
    async fn fresh_db() -> String {
        let admin = common::mariadb::fresh_mdb_database("sg_tls").await;
        let name = admin
            .rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        common::with_dbname(&tls_url(), &name)
    }

    #[tokio::test]
    async fn mariadb_verify_identity_with_the_right_ca_connects_encrypted() {
        // sg_tls is `REQUIRE SSL`: a session of it is an encrypted one (the DISABLED
        // test below shows the same user refused without TLS).
        let url = fresh_db().await;
        connects(
            &variant(
                &url,
                "localhost",
                &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", ca()),
            ),
            &[],
        )
        .await;
    }

    #[tokio::test]
    async fn mariadb_pymysql_url_with_ssl_ca_verifies_and_connects() {
        let url = fresh_db().await;
        // Nova's form: a CA file alone means VERIFY_IDENTITY (PyMySQL's rule).
        let url = variant(&url, "localhost", &format!("charset=utf8&ssl_ca={}", ca())).replacen(
            "mysql://",
            "mysql+pymysql://",
            1,
        );
        connects(&url, &[]).await;
        // The same CA by name, at an address the certificate does not carry.
        refused(
            &variant(&url, "127.0.0.1", ""),
            &[],
            ErrorKind::Config,
            &[
                "TLS verification failed (ssl-mode=VERIFY_IDENTITY (implied), ssl-ca=",
                "certificate not valid for name \"127.0.0.1\"",
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn mariadb_required_without_a_ca_encrypts_unverified() {
        let url = fresh_db().await;
        connects(&variant(&url, "127.0.0.1", "ssl-mode=REQUIRED"), &[]).await;
        // The default, PREFERRED, takes TLS when offered: sg_tls gets in.
        connects(&variant(&url, "127.0.0.1", ""), &[]).await;
    }

    #[tokio::test]
    async fn mariadb_verify_ca_checks_the_chain_but_not_the_host_name() {
        let url = fresh_db().await;
        let at_ip = variant(&url, "127.0.0.1", "");
        let ca = ca();
        connects(
            &at_ip,
            &[("ssl_mode", "VERIFY_CA"), ("ssl_ca", ca.as_str())],
        )
        .await;
        let other = other_ca();
        refused(
            &at_ip,
            &[("ssl_mode", "VERIFY_CA"), ("ssl_ca", other.as_str())],
            ErrorKind::Config,
            &[
                &format!("TLS verification failed (db.ssl_mode=VERIFY_CA, db.ssl_ca={other})"),
                "UnknownIssuer",
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn mariadb_wrong_ca_is_refused_naming_ssl_ca() {
        let url = fresh_db().await;
        let other = other_ca();
        let msg = refused(
            &variant(
                &url,
                "localhost",
                &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={other}"),
            ),
            &[],
            ErrorKind::Config,
            &[
                &format!("TLS verification failed (ssl-mode=VERIFY_IDENTITY, ssl-ca={other})"),
                "UnknownIssuer",
            ],
        )
        .await;
        println!("wrong CA: {msg}");
    }

    #[tokio::test]
    async fn mariadb_wrong_host_name_is_refused_naming_ssl_mode() {
        let url = fresh_db().await;
        let ca = ca();
        let msg = refused(
            &variant(
                &url,
                "127.0.0.1",
                &format!("ssl_mode=VERIFY_IDENTITY&ssl_ca={ca}"),
            ),
            &[],
            ErrorKind::Config,
            &[
                &format!("TLS verification failed (ssl-mode=VERIFY_IDENTITY, ssl-ca={ca})"),
                "certificate not valid for name \"127.0.0.1\"",
            ],
        )
        .await;
        println!("wrong host name: {msg}");
    }

    #[tokio::test]
    async fn mariadb_disabled_against_a_tls_only_user_fails_clearly() {
        let url = fresh_db().await;
        let msg = refused(
            &variant(&url, "localhost", "ssl-mode=DISABLED"),
            &[],
            ErrorKind::Unavailable,
            &["Access denied for user 'sg_tls'", "(ssl-mode=DISABLED)"],
        )
        .await;
        println!("ssl-mode=DISABLED: {msg}");
    }
}

#[test]
fn tls_keys_come_from_toml_and_env_and_bad_values_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sg.toml");
    std::fs::write(
        &path,
        "[db]\nurl = \"postgresql://u:hunter2@db/nova\"\nsslmode = \"verify-full\"\nsslrootcert = \"/etc/ca.pem\"\n",
    )
    .unwrap();
    let loaded = ConfigLoader::new()
        .file(&path)
        .env_from([("SERVICEGROUP_DB__SSL_MODE", "verify_ca")])
        .load()
        .unwrap();
    let db: servicegroup_driver_db::DbConfig = loaded.config.driver_config("db").unwrap();
    assert_eq!(
        db.sslmode,
        Some(servicegroup_driver_db::PgSslMode::VerifyFull)
    );
    assert_eq!(
        db.sslrootcert.as_deref(),
        Some(std::path::Path::new("/etc/ca.pem"))
    );
    assert_eq!(
        db.ssl_mode,
        Some(servicegroup_driver_db::MysqlSslMode::VerifyCa)
    );
    let err = ConfigLoader::new()
        .env_from([("SERVICEGROUP_DB__SSLMODE", "verify-identity")])
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`db.sslmode`")
            && err.contains("SERVICEGROUP_DB__SSLMODE")
            && err.contains("verify-ca, verify-full"),
        "{err}"
    );
}

#[tokio::test]
async fn tls_keys_of_another_backend_are_config_errors_saying_which_to_use() {
    let dir = tempfile::tempdir().unwrap();
    for (url, key, value, needle) in [
        (
            "postgresql://u:hunter2@127.0.0.1:1/db".to_owned(),
            "ssl_mode",
            "REQUIRED",
            "`db.ssl_mode` is a MySQL/MariaDB option, but `db.url` names a PostgreSQL database: use `db.sslmode`",
        ),
        (
            "mysql://u:hunter2@127.0.0.1:1/db".to_owned(),
            "sslrootcert",
            "/ca.pem",
            "`db.sslrootcert` is a PostgreSQL option, but `db.url` names a MySQL/MariaDB database: use `db.ssl_ca`",
        ),
        (
            format!("sqlite://{}", dir.path().join("x.db").display()),
            "sslmode",
            "require",
            "`db.sslmode` is set, but `db.url` names a SQLite database",
        ),
    ] {
        let err = DbDriver::connect(&config(&url, &[(key, value)]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let msg = err.to_string();
        assert!(msg.contains(needle) && !msg.contains("hunter2"), "{msg}");
    }
}
