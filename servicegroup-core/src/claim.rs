//! Driver calls outside a handle: core's timeout around one driver call
//! ([`timed`]) and the exclusive claim of a member ([`claim_exclusively`]). The
//! handle ([`crate::ServiceGroup`]) and the relay both use them, so the rules live
//! here once.

use std::future::Future;
use std::time::Duration;

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::id::MemberKey;
use crate::instance::{Holder, InstanceId};
use crate::liveness;
use crate::metadata::Metadata;
use crate::record::{Condition, Registered, Registration};
use crate::status::MemberStatus;

/// How often an exclusive join re-reads a record that changed between its read and
/// its conditional write before giving up with `Conflict`.
const EXCLUSIVE_ATTEMPTS: usize = 3;

/// Runs one call of the driver named `driver` under `call_timeout`, tagging errors
/// with the driver's name; running out of time is [`crate::ErrorKind::Timeout`] naming `what`.
/// `what` is the driver operation as [`crate::metrics`] labels it: the call is
/// recorded there (outcome and latency).
pub async fn timed<T>(
    driver: &str,
    call_timeout: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = tokio::time::Instant::now();
    let result = match tokio::time::timeout(call_timeout, fut).await {
        Ok(result) => result.map_err(|e| e.with_driver(driver.to_owned())),
        Err(_) => Err(Error::timeout(format!(
            "{what} did not finish within {call_timeout:?} (call_timeout)"
        ))
        .with_driver(driver.to_owned())),
    };
    let outcome = result.as_ref().map(|_| ()).map_err(Error::kind);
    crate::metrics::driver_call(driver, what, started.elapsed(), outcome);
    result
}

/// Exclusive join of `key` by `instance`: reads the record, refuses one held by
/// another instance whose heartbeat is fresh under `service_down_time`
/// ([`crate::ErrorKind::Conflict`], nothing changed), and takes it with a conditional
/// write on what was read (re-reading if it changed meanwhile, a few times).
/// Returns the epoch stored. Every driver call has `call_timeout`.
pub async fn claim_exclusively(
    driver: &dyn Driver,
    call_timeout: Duration,
    service_down_time: Duration,
    key: &MemberKey,
    instance: InstanceId,
    metadata: &Metadata,
) -> Result<u64> {
    let name = driver.name();
    for _ in 0..EXCLUSIVE_ATTEMPTS {
        let found = timed(name, call_timeout, "get", driver.get(key)).await?;
        let condition = match found {
            None => Condition::Absent,
            Some(record) => {
                let holder = record.holder;
                if holder.instance != instance
                    && liveness::is_fresh(record.freshness, service_down_time)
                {
                    let status = MemberStatus::from_record(record, service_down_time);
                    return Err(conflict(name, key, holder, status.age));
                }
                Condition::HeldAs(holder)
            }
        };
        let registration = Registration {
            key: key.clone(),
            instance,
            metadata: metadata.clone(),
            condition,
        };
        match timed(
            name,
            call_timeout,
            "register",
            driver.register(&registration),
        )
        .await?
        {
            Registered::Stored { epoch } => return Ok(epoch),
            Registered::Refused { .. } => continue,
        }
    }
    Err(Error::conflict(format!(
        "group {} member {}: the record changed hands {EXCLUSIVE_ATTEMPTS} times while joining exclusively; try again",
        key.group, key.member
    ))
    .with_driver(name.to_owned()))
}

fn conflict(driver: &str, key: &MemberKey, holder: Holder, age: Option<Duration>) -> Error {
    let age = match age {
        Some(age) => format!("{:.1} s ago", age.as_secs_f64()),
        None => "at an unknown time".to_owned(),
    };
    Error::conflict(format!(
        "group {} member {} is held by live instance {} (epoch {}, last heartbeat {age}); exclusive join refused",
        key.group, key.member, holder.instance, holder.epoch
    ))
    .with_driver(driver.to_owned())
}
