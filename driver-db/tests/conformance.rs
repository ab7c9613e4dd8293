//! The conformance suite on the `db` driver, per backend:
//!
//! - `sqlite`: a fresh SQLite file in a temporary directory per case;
//! - `postgres`: a fresh database per case on the shared test server
//!   (`SERVICEGROUP_TEST_POSTGRES_URL`, started by scripts/test), reached through the
//!   suite's TCP proxy, which is the case's outage hook (the shared server keeps
//!   running for the other tests). Without the variable every case fails saying so.
//! - `mariadb` (feature `mysql`): the same on the shared MariaDB test server
//!   (`SERVICEGROUP_TEST_MARIADB_URL`): a fresh database per case, behind the proxy.
//!
//! The heartbeat operation counter is the number of statements every driver of the
//! process sent to the case's database (diesel instrumentation at the connections).

mod common;

use std::sync::Arc;
use std::time::Duration;

use servicegroup_conformance::{conformance_suite, Fixture};
use servicegroup_core::{BoxError, Config, DatabaseUrl};
// Name the driver crate, or the linker drops it and its registration.
use servicegroup_driver_db as _;

fn db_config(url: &str) -> Config {
    let mut config = Config::with_driver("db");
    config
        .set("db.url", url)
        .and_then(|c| {
            // Below the suite's call_timeout (1 s), so the driver's own bounds answer first.
            c.set("db.timeout", Duration::from_millis(800))?
                .set("db.pool_size", 4)
        })
        .expect("the db driver's keys");
    config
}

fn statement_counter(url: &str) -> impl Fn() -> u64 + Send + Sync + 'static {
    let url = DatabaseUrl::new(url);
    move || servicegroup_driver_db::statements_sent(Some(&url)).unwrap_or(0)
}

async fn sqlite() -> Result<Fixture, BoxError> {
    let dir = tempfile::tempdir()?;
    let url = common::sqlite_url(dir.path(), "conformance.db");
    Ok(Fixture::new(db_config(&url))
        .with_heartbeat_ops(statement_counter(&url))
        .keep(dir))
}

conformance_suite!(sqlite, sqlite, skip: {
    outage_is_an_error_never_down:
        "a local SQLite file has no server or network to lose; the db driver's outage handling runs on PostgreSQL (postgres::outage_*, tests/postgres.rs)",
    heartbeats_recover_after_outage:
        "a local SQLite file has no server or network to lose; the db driver's outage handling runs on PostgreSQL (postgres::heartbeats_recover_after_outage, tests/postgres.rs)",
    outage_logs_lost_and_recovered_once:
        "a local SQLite file has no server or network to lose; the db driver's outage handling runs on PostgreSQL (postgres::outage_logs_lost_and_recovered_once, tests/postgres.rs)",
});

#[cfg(feature = "postgres")]
async fn postgres() -> Result<Fixture, BoxError> {
    use servicegroup_conformance::proxy::OutageProxy;
    let direct = common::fresh_pg_database("sg_conf").await;
    let drop_database = common::DropDatabase::for_url(&direct);
    // postgres://user@HOST:PORT/db -> upstream HOST:PORT, replaced by the proxy's address.
    let (scheme, rest) = direct.split_once("://").ok_or("URL without ://")?;
    let (authority, path) = rest.split_once('/').ok_or("URL without a database")?;
    let (user, hostport) = authority.rsplit_once('@').ok_or("URL without a user")?;
    let proxy = Arc::new(OutageProxy::start(hostport.parse()?).await?);
    let url = format!("{scheme}://{user}@{}/{path}", proxy.addr());
    let switch = proxy.clone();
    Ok(Fixture::new(db_config(&url))
        .with_outage_switch(move |reachable| {
            switch.set_reachable(reachable);
            async { Ok(()) }
        })
        .with_heartbeat_ops(statement_counter(&url))
        .keep(proxy)
        .keep(drop_database))
}

#[cfg(feature = "postgres")]
conformance_suite!(postgres, postgres);

#[cfg(feature = "mysql")]
async fn mariadb() -> Result<Fixture, BoxError> {
    use servicegroup_conformance::proxy::OutageProxy;
    let direct = common::mariadb::fresh_mdb_database("sg_conf").await;
    let drop_database = common::mariadb::DropMdbDatabase::for_url(&direct);
    // mysql://user@HOST:PORT/db -> upstream HOST:PORT, replaced by the proxy's address.
    let (scheme, rest) = direct.split_once("://").ok_or("URL without ://")?;
    let (authority, path) = rest.split_once('/').ok_or("URL without a database")?;
    let (user, hostport) = authority.rsplit_once('@').ok_or("URL without a user")?;
    let proxy = Arc::new(OutageProxy::start(hostport.parse()?).await?);
    let url = format!("{scheme}://{user}@{}/{path}", proxy.addr());
    let switch = proxy.clone();
    Ok(Fixture::new(db_config(&url))
        .with_outage_switch(move |reachable| {
            switch.set_reachable(reachable);
            async { Ok(()) }
        })
        .with_heartbeat_ops(statement_counter(&url))
        .keep(proxy)
        .keep(drop_database))
}

#[cfg(feature = "mysql")]
conformance_suite!(mariadb, mariadb);
