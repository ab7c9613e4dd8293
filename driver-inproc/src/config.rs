//! `[inproc]`: the in-process driver's options, declared with its registration.

use serde::{Deserialize, Serialize};
use servicegroup_core::config::{DriverConfig, DriverTable};

/// The table this driver reads: `[inproc]`, `SERVICEGROUP_INPROC__*`. No secrets, no
/// nova.conf options (Nova has no in-process driver).
pub const CONFIG: DriverConfig = DriverConfig::new::<InprocConfig>(crate::NAME);

/// `[inproc]`: the in-process driver's options.
///
/// Set from code with `config.set("inproc.name", "tests")?`; read with
/// `config.driver_config::<InprocConfig>("inproc")?`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct InprocConfig {
    /// Handles built with the same name in one process share membership. Default `"default"`.
    pub name: String,
}

impl Default for InprocConfig {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
        }
    }
}

impl DriverTable for InprocConfig {}
