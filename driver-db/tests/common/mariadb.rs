//! MariaDB helpers for the db driver's tests: the shared throwaway server
//! scripts/test starts (`SERVICEGROUP_TEST_MARIADB_URL`), fresh databases on it,
//! statements on connections of their own, and a server owned by one test.

use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};

/// The variable scripts/test exports with the shared throwaway MariaDB server.
pub const MDB_ENV: &str = "SERVICEGROUP_TEST_MARIADB_URL";

/// The shared test server's URL. Fails (never skips) when it is not set.
pub fn mdb_admin_url() -> String {
    match std::env::var(MDB_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{MDB_ENV} is not set: the MariaDB tests need a server. Run them through \
             scripts/test (it starts a throwaway MariaDB and sets {MDB_ENV}), or start one \
             with `scripts/lib/mariadb.sh start DIR` and export {MDB_ENV}=<the URL it prints>"
        ),
    }
}

/// `url` for the client library: stays on TCP (never the server's socket).
fn client(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}prefer_socket=false")
}

/// Runs statements on the server `url` names, on a connection of its own.
pub async fn mdb_exec(url: &str, statements: &[String]) {
    let mut conn = AsyncMysqlConnection::establish(&client(url))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test MariaDB server: {e}"));
    for sql in statements {
        diesel::sql_query(sql.as_str())
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Runs one statement; the number of rows it touched.
pub async fn mdb_raw_exec(url: &str, sql: &str) -> usize {
    let mut conn = AsyncMysqlConnection::establish(&client(url))
        .await
        .expect("connect");
    diesel::sql_query(sql)
        .execute(&mut conn)
        .await
        .expect("statement")
}

/// Rows of diesel's migration bookkeeping table (one per applied migration).
pub async fn mdb_applied_migrations(url: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = AsyncMysqlConnection::establish(&client(url))
        .await
        .expect("connect");
    diesel::sql_query("SELECT count(*) AS n FROM __diesel_schema_migrations")
        .get_result::<N>(&mut conn)
        .await
        .expect("count")
        .n
}

/// A fresh, empty database on the shared server; returns its URL.
pub async fn fresh_mdb_database(prefix: &str) -> String {
    let admin = mdb_admin_url();
    let name = super::unique(prefix);
    mdb_exec(&admin, &[format!("CREATE DATABASE {name}")]).await;
    super::with_dbname(&admin, &name)
}

/// Drops a database of the shared test server when dropped (so a run's throwaway
/// databases do not pile up).
pub struct DropMdbDatabase {
    admin_url: String,
    name: String,
}

impl DropMdbDatabase {
    /// A guard for the database `url` names.
    pub fn for_url(url: &str) -> Self {
        let name = url
            .rsplit('/')
            .next()
            .unwrap_or("")
            .split('?')
            .next()
            .unwrap_or("")
            .to_owned();
        Self {
            admin_url: mdb_admin_url(),
            name,
        }
    }
}

impl Drop for DropMdbDatabase {
    fn drop(&mut self) {
        let (admin, name) = (client(&self.admin_url), self.name.clone());
        // Its own thread and runtime: the case's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = AsyncMysqlConnection::establish(&admin).await.ok()?;
                // Bounded: a connection still holding a lock must not hang the run.
                diesel::sql_query("SET SESSION lock_wait_timeout = 10")
                    .execute(&mut conn)
                    .await
                    .ok()?;
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}
