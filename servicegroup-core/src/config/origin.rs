//! [`Origin`]: where a configuration value came from (default, file, environment
//! variable, override), as origins and error messages name it.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The built-in default.
    Default,
    /// A configuration file.
    File(PathBuf),
    /// An environment variable (its name).
    Env(String),
    /// An override from code or a command-line flag: the name given to
    /// [`ConfigLoader::set_from`](crate::ConfigLoader::set_from) (such as `--driver`), or `code` for [`ConfigLoader::set`](crate::ConfigLoader::set).
    Override(String),
}

impl Origin {
    /// The kind of source in one word: `default`, `file`, `env` or `override`.
    pub fn label(&self) -> &'static str {
        match self {
            Origin::Default => "default",
            Origin::File(_) => "file",
            Origin::Env(_) => "env",
            Origin::Override(_) => "override",
        }
    }

    /// How error messages name this source: the file path, `environment variable X`,
    /// or `override (X)`.
    pub fn describe(&self) -> String {
        match self {
            Origin::Default => "the defaults".to_owned(),
            Origin::File(path) => path.display().to_string(),
            Origin::Env(var) => format!("environment variable {var}"),
            Origin::Override(by) => format!("override ({by})"),
        }
    }
}

/// `default`, `file /etc/nova/nova.conf`, `env SERVICEGROUP_DRIVER`, `override --driver`.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Override(by) => write!(f, "override {by}"),
        }
    }
}
