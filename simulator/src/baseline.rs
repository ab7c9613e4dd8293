//! [`Baseline::Nova`](crate::Baseline::Nova) (feature `nova`): Nova's own database servicegroup driver, reproduced
//! inside the simulator as the yardstick for ours (not a driver users can pick).
//!
//! What Nova does, and so what this does:
//! - The `services` table (here `nova_services`): one row per service, `updated_at` a
//!   `TIMESTAMP` written from the **client's** clock, a `report_count`.
//! - Every service process reports its own state every `report_interval`
//!   (`nova.servicegroup.drivers.db.DbDriver._report_state`): one transaction per
//!   member that reads the row (`service_get`) and then updates it
//!   (`report_count + 1`, `updated_at = utcnow()` of the client). A report that
//!   overruns the interval is followed at once by the next (oslo's
//!   `FixedIntervalLoopingCall`), so an overloaded database stretches every member's
//!   period. Each report also pays oslo.db's `SELECT 1` ping on connection checkout.
//! - `is_up`: `abs(client now - updated_at) <= service_down_time`, forced-down
//!   services are down.
//!
//! Simulation: one sequence of due times for the whole fleet (member `i` of `n` is due
//! at `start + round * ri + i * ri / n`), served in order by as many worker tasks as
//! the connections ours gets (`db.pool_size`), each with its own connection; so no
//! task per member, and when the database cannot keep up every member's heartbeats
//! drift later just as Nova's loops do. Per member the simulator keeps only its row id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::{Array, BigInt, Bool, Double, Integer, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use servicegroup::config::DatabaseUrl;
use servicegroup::{Error, ErrorKind};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::latency::Latency;
use crate::run::{lock, Sim};

/// The table, as Nova's `services` (the columns the servicegroup path touches).
const CREATE_TABLE: &str = "
SELECT pg_advisory_xact_lock(7370616);
CREATE TABLE IF NOT EXISTS nova_services (
    id BIGSERIAL PRIMARY KEY,
    host VARCHAR(255) NOT NULL,
    topic VARCHAR(255) NOT NULL,
    report_count INTEGER NOT NULL DEFAULT 0,
    disabled BOOLEAN NOT NULL DEFAULT false,
    forced_down BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMP,
    updated_at TIMESTAMP,
    deleted_at TIMESTAMP,
    deleted INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT uniq_nova_services_host_topic_deleted UNIQUE (host, topic, deleted)
);
CREATE INDEX IF NOT EXISTS nova_services_topic_idx ON nova_services (topic);
";

/// Rows per multi-row INSERT while the fleet joins.
const JOIN_ROWS: usize = 1000;

/// The client's clock, as Nova's `timeutils.utcnow()`: epoch seconds.
fn client_now() -> f64 {
    let now = chrono::Utc::now();
    now.timestamp() as f64 + f64::from(now.timestamp_subsec_micros()) / 1e6
}

fn db_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::backend(format!("nova baseline: {what}: {e}"))
}

fn unreachable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::unavailable(format!("nova baseline: {what}: {e}"))
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    host: String,
}

/// `service_get`: the row as the ORM loads it.
#[derive(QueryableByName)]
#[allow(dead_code)] // loaded like the ORM does; only report_count is used
struct ServiceRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Integer)]
    report_count: i32,
    #[diesel(sql_type = Bool)]
    disabled: bool,
    #[diesel(sql_type = Bool)]
    forced_down: bool,
    #[diesel(sql_type = Double)]
    updated_at: f64,
}

/// One row of a listing, judged on the client.
#[derive(QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = Bool)]
    forced_down: bool,
    #[diesel(sql_type = Double)]
    updated_at: f64,
}

/// Nova's `is_up`, on the client's clock.
fn nova_is_up(forced_down: bool, updated_at: f64, now: f64, service_down_time: Duration) -> bool {
    !forced_down && (now - updated_at).abs() <= service_down_time.as_secs_f64()
}

/// The baseline's connection settings and per-member row ids.
pub struct Nova {
    url: DatabaseUrl,
    timeout: Duration,
    /// `nova_services.id` per fleet index (0: not joined).
    ids: Vec<AtomicU64>,
    /// Heartbeat lateness (due time → transaction start), the drift Nova's loops see.
    pub lateness: std::sync::Mutex<Latency>,
}

impl Nova {
    /// Checks that `url` is PostgreSQL (the only backend the baseline speaks) and
    /// creates the table if needed.
    pub async fn connect(
        url: Option<&DatabaseUrl>,
        timeout: Duration,
        members: usize,
    ) -> Result<Self, crate::Error> {
        let Some(url) = url else {
            return Err(crate::Error::Baseline(
                "`--baseline nova` needs a PostgreSQL `db.url` (postgres://...); none is configured"
                    .to_owned(),
            ));
        };
        let scheme = url.expose().split(':').next().unwrap_or("");
        if !scheme.starts_with("postgres") {
            return Err(crate::Error::Baseline(format!(
                "`--baseline nova` runs on PostgreSQL only; `db.url` is {}",
                url.redacted()
            )));
        }
        let nova = Self {
            url: url.clone(),
            timeout,
            ids: (0..members).map(|_| AtomicU64::new(0)).collect(),
            lateness: std::sync::Mutex::new(Latency::new()),
        };
        let mut conn = nova.connection().await?;
        nova.bounded("create table", async {
            conn.batch_execute(&format!("BEGIN;{CREATE_TABLE}COMMIT;"))
                .await
                .map_err(|e| db_error("creating nova_services", e))
        })
        .await?;
        Ok(nova)
    }

    /// A new connection (the URL's password never appears in the error).
    pub async fn connection(&self) -> Result<AsyncPgConnection, Error> {
        let url = self.url.expose().to_owned();
        self.bounded("connect", async move {
            AsyncPgConnection::establish(&url).await.map_err(|e| {
                let text = e.to_string().replace(url.as_str(), "<db.url>");
                unreachable("cannot connect", text)
            })
        })
        .await
    }

    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::timeout(format!(
                "nova baseline: {what} did not finish within {:?}",
                self.timeout
            ))),
        }
    }

    /// The row id of member `i`, if it joined.
    fn id(&self, i: usize) -> Option<i64> {
        match AtomicU64::load(&self.ids[i], Ordering::Relaxed) {
            0 => None,
            id => i64::try_from(id).ok(),
        }
    }

    /// `service_create` for members `range`, in multi-row INSERTs (the join is not
    /// what is measured). Returns how many rows were created.
    pub async fn join(
        &self,
        conn: &mut AsyncPgConnection,
        sim: &Sim,
        range: std::ops::Range<usize>,
    ) -> Result<u64, Error> {
        let mut joined = 0;
        let group = sim.group.as_str().to_owned();
        let indexes: Vec<usize> = range.collect();
        for chunk in indexes.chunks(JOIN_ROWS) {
            let hosts: Vec<String> = chunk.iter().map(|&i| sim.fleet.member_id(i)).collect();
            let rows: Vec<IdRow> = self
                .bounded("join", async {
                    diesel::sql_query(
                        "INSERT INTO nova_services (host, topic, report_count, created_at, updated_at) \
                         SELECT h, $2, 0, to_timestamp($3) AT TIME ZONE 'UTC', to_timestamp($3) AT TIME ZONE 'UTC' \
                         FROM unnest($1::text[]) AS h \
                         ON CONFLICT (host, topic, deleted) DO UPDATE SET updated_at = EXCLUDED.updated_at \
                         RETURNING id, host",
                    )
                    .bind::<Array<Text>, _>(&hosts)
                    .bind::<Text, _>(&group)
                    .bind::<Double, _>(client_now())
                    .load(conn)
                    .await
                    .map_err(|e| db_error("inserting services", e))
                })
                .await?;
            for row in rows {
                if let Some(i) = sim.fleet.index_of(&row.host) {
                    AtomicU64::store(&self.ids[i], row.id as u64, Ordering::Relaxed);
                    sim.fleet.mark_joined(i);
                    joined += 1;
                }
            }
        }
        Ok(joined)
    }

    /// One report of member `id`: oslo.db's checkout ping (`SELECT 1` whenever the
    /// engine hands out a connection), then read the row and update it in one
    /// transaction.
    async fn report_state(&self, conn: &mut AsyncPgConnection, id: i64) -> Result<(), Error> {
        self.bounded("heartbeat", async {
            conn.batch_execute("SELECT 1")
                .await
                .map_err(|e| db_error("checkout ping", e))?;
            conn.transaction::<_, diesel::result::Error, _>(async |c| {
                let row: ServiceRow = diesel::sql_query(
                    "SELECT id, host, topic, report_count, disabled, forced_down, \
                     date_part('epoch', updated_at) AS updated_at \
                     FROM nova_services WHERE id = $1 AND deleted = 0",
                )
                .bind::<BigInt, _>(id)
                .get_result(c)
                .await?;
                diesel::sql_query(
                    "UPDATE nova_services SET report_count = $2, \
                     updated_at = to_timestamp($3) AT TIME ZONE 'UTC' WHERE id = $1",
                )
                .bind::<BigInt, _>(id)
                .bind::<Integer, _>(row.report_count.saturating_add(1))
                .bind::<Double, _>(client_now())
                .execute(c)
                .await?;
                Ok(())
            })
            .await
            .map_err(|e| db_error("report_state", e))
        })
        .await
    }

    /// `service_get_all_by_topic` + `is_up` per row: (member index, up) for this fleet.
    pub async fn list(
        &self,
        conn: &mut AsyncPgConnection,
        sim: &Sim,
        sdt: Duration,
    ) -> Result<Vec<(usize, bool)>, Error> {
        let rows: Vec<StatusRow> = self
            .bounded("list", async {
                diesel::sql_query(
                    "SELECT host, forced_down, date_part('epoch', updated_at) AS updated_at \
                     FROM nova_services WHERE topic = $1 AND deleted = 0",
                )
                .bind::<Text, _>(sim.group.as_str())
                .load(conn)
                .await
                .map_err(|e| db_error("listing services", e))
            })
            .await?;
        let now = client_now();
        Ok(rows
            .iter()
            .filter_map(|r| {
                let i = sim.fleet.index_of(&r.host)?;
                Some((i, nova_is_up(r.forced_down, r.updated_at, now, sdt)))
            })
            .collect())
    }

    /// `service_get_by_host_and_topic` + `is_up`. `None`: no such row.
    pub async fn check(
        &self,
        conn: &mut AsyncPgConnection,
        sim: &Sim,
        i: usize,
        sdt: Duration,
    ) -> Result<Option<bool>, Error> {
        let host = sim.fleet.member_id(i);
        let rows: Vec<StatusRow> = self
            .bounded("check", async {
                diesel::sql_query(
                    "SELECT host, forced_down, date_part('epoch', updated_at) AS updated_at \
                     FROM nova_services WHERE host = $1 AND topic = $2 AND deleted = 0",
                )
                .bind::<Text, _>(&host)
                .bind::<Text, _>(sim.group.as_str())
                .load(conn)
                .await
                .map_err(|e| db_error("reading a service", e))
            })
            .await?;
        let now = client_now();
        Ok(rows
            .into_iter()
            .next()
            .map(|r| nova_is_up(r.forced_down, r.updated_at, now, sdt)))
    }

    /// Deletes the group's rows in one statement.
    pub async fn clean_up(&self, sim: &Sim) -> Result<u64, Error> {
        let mut conn = self.connection().await?;
        let n = self
            .bounded("clean up", async {
                diesel::sql_query("DELETE FROM nova_services WHERE topic = $1")
                    .bind::<Text, _>(sim.group.as_str())
                    .execute(&mut conn)
                    .await
                    .map_err(|e| db_error("deleting services", e))
            })
            .await?;
        Ok(n as u64)
    }
}

/// The shared schedule: sequence number `s` is member `s % n`, round `s / n`.
pub struct Schedule {
    next: AtomicU64,
    start: Instant,
    interval: Duration,
}

impl Schedule {
    /// Starts round 0 at `start`.
    pub fn new(start: Instant, interval: Duration) -> Self {
        Self {
            next: AtomicU64::new(0),
            start,
            interval,
        }
    }

    /// Takes the next (member, due time).
    fn take(&self, n: usize) -> (usize, Instant) {
        let s = AtomicU64::fetch_add(&self.next, 1, Ordering::Relaxed);
        let n64 = n as u64;
        let (round, i) = (s / n64, s % n64);
        let offset = self.interval.mul_f64(round as f64 + i as f64 / n as f64);
        (i as usize, self.start + offset)
    }
}

/// One worker with its own connection: takes the next due member, waits for its time
/// (not at all when behind), runs its report transaction. Killed members are skipped.
pub async fn worker(sim: Arc<Sim>, nova: Arc<Nova>, schedule: Arc<Schedule>) {
    let n = sim.fleet.len();
    let mut conn = None;
    while !sim.stopped() {
        let (i, due) = schedule.take(n);
        let Some(id) = nova.id(i) else { continue };
        if sim.fleet.is_killed(i) {
            continue;
        }
        tokio::time::sleep_until(due).await;
        if sim.stopped() {
            break;
        }
        let started = Instant::now();
        lock(&nova.lateness).record(started.saturating_duration_since(due));
        if conn.is_none() {
            match nova.connection().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    sim.stats.errors.add(e.kind());
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match nova.report_state(c, id).await {
            Ok(()) => sim.stats.record_heartbeat(started.elapsed(), 1),
            Err(e) => {
                sim.stats.errors.add(e.kind());
                if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout) {
                    conn = None;
                }
            }
        }
    }
}

/// Joins the Nova baseline's fleet: `concurrency` tasks, each with its own
/// connection, inserting a contiguous part of the fleet. Returns (joined, failed).
pub async fn join_nova(
    sim: &Arc<Sim>,
    nova: &Arc<Nova>,
    concurrency: u32,
) -> Result<(u64, u64), crate::Error> {
    let n = sim.fleet.len();
    let bar = crate::run::bar(
        sim.progress,
        n as u64,
        "{prefix:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} members",
    );
    bar.set_prefix("joining");
    let parts = (concurrency as usize).clamp(1, n);
    let per_part = n.div_ceil(parts);
    let mut set = JoinSet::new();
    for p in 0..parts {
        let range = (p * per_part)..((p + 1) * per_part).min(n);
        let (sim, nova, bar) = (sim.clone(), nova.clone(), bar.clone());
        set.spawn(async move {
            let mut conn = nova.connection().await?;
            let mut joined = 0;
            let mut start = range.start;
            while start < range.end {
                let end = (start + 10_000).min(range.end);
                joined += nova.join(&mut conn, &sim, start..end).await?;
                bar.inc((end - start) as u64);
                start = end;
            }
            Ok::<u64, Error>(joined)
        });
    }
    let (mut joined, mut first_error) = (0, None);
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(k)) => joined += k,
            Ok(Err(error)) => {
                sim.stats.errors.add(error.kind());
                first_error.get_or_insert(error);
            }
            Err(join_error) => tracing::warn!("join task failed: {join_error}"),
        }
    }
    bar.finish_and_clear();
    if let Some(error) = first_error {
        // All or nothing, so the measured fleet is the requested one.
        return Err(crate::Error::from(error));
    }
    Ok((joined, n as u64 - joined))
}

/// One observer of the Nova baseline: list the group (`service_get_all_by_topic`),
/// judge every row on the client clock, check a few single members, pause, repeat.
pub async fn observe_nova(sim: Arc<Sim>, nova: Arc<Nova>, sdt: Duration, pause: Duration) {
    let mut rng = fastrand::Rng::new();
    let n = sim.fleet.len();
    let mut conn = None;
    while !sim.stopped() {
        if conn.is_none() {
            match nova.connection().await {
                Ok(c) => conn = Some(c),
                Err(error) => {
                    sim.stats.errors.add(error.kind());
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let started = Instant::now();
        let listed_in;
        match nova.list(c, &sim, sdt).await {
            Ok(rows) => {
                listed_in = started.elapsed();
                lock(&sim.observed.listing_latency).record(listed_in);
                sim.observed.listings.fetch_add(1, Ordering::Relaxed);
                for (i, _) in rows.into_iter().filter(|(_, up)| !up) {
                    sim.fleet.judged_down(i, &sim.fleet.member_id(i));
                }
            }
            Err(error) => {
                sim.stats.errors.add(error.kind());
                conn = None;
                continue;
            }
        }
        for _ in 0..crate::observe::CHECKS_PER_ROUND {
            let i = rng.usize(..n);
            if !sim.fleet.is_joined(i) {
                continue;
            }
            let Some(c) = conn.as_mut() else { break };
            match nova.check(c, &sim, i, sdt).await {
                Ok(Some(up)) => {
                    sim.observed.checks.fetch_add(1, Ordering::Relaxed);
                    if !up {
                        sim.fleet.judged_down(i, &sim.fleet.member_id(i));
                    }
                }
                Ok(None) => sim.stats.errors.add(ErrorKind::NotFound),
                Err(error) => {
                    sim.stats.errors.add(error.kind());
                    conn = None;
                }
            }
        }
        tokio::time::sleep(crate::observe::observer_pause(pause, listed_in)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nova_liveness_is_the_client_clock_against_the_stored_time() {
        let sdt = Duration::from_secs(60);
        assert!(nova_is_up(false, 1000.0, 1060.0, sdt));
        assert!(!nova_is_up(false, 1000.0, 1060.5, sdt));
        assert!(!nova_is_up(true, 1000.0, 1000.0, sdt));
        // Nova takes the absolute value: a stored time far in the future is down too.
        assert!(!nova_is_up(false, 1100.0, 1000.0, sdt));
    }

    #[test]
    fn the_schedule_spreads_members_over_the_interval() {
        let start = Instant::now();
        let s = Schedule::new(start, Duration::from_secs(10));
        let taken: Vec<_> = (0..6).map(|_| s.take(4)).collect();
        let expect = [
            (0, 0),
            (1, 2500),
            (2, 5000),
            (3, 7500),
            (0, 10_000),
            (1, 12_500),
        ];
        for ((i, due), (ei, ems)) in taken.into_iter().zip(expect) {
            assert_eq!(i, ei);
            assert_eq!(due - start, Duration::from_millis(ems));
        }
    }
}
