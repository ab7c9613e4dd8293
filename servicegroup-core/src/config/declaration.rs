//! How a driver declares its own configuration table: [`DriverConfig`] (given to
//! [`register_driver!`](crate::register_driver) as `config:`), the [`DriverTable`]
//! trait its typed options struct implements, [`NovaOption`] (which nova.conf option
//! feeds which of its keys) and [`InvalidKey`] (a rule its options broke).
//!
//! Core knows only the common keys (`driver`, `report_interval`,
//! `service_down_time`, `call_timeout`, `watch_interval`, `coalesce_window`). Everything else (its
//! table's keys, their environment variables, their nova.conf options, which of them
//! are secret) comes from the declarations of the drivers linked into the program,
//! and core checks, reports origins for and masks a driver's keys exactly as it does
//! its own.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use servicegroup_core::config::{DriverConfig, DriverTable, InvalidKey, NovaOption};
//!
//! /// `[filestore]`: a third party's driver keeping membership in files.
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! #[serde(deny_unknown_fields, default)]
//! pub struct FilestoreConfig {
//!     /// Directory holding the member files.
//!     pub root: String,
//!     /// Token of the (hypothetical) lock service. Secret.
//!     pub token: Option<String>,
//! }
//!
//! impl Default for FilestoreConfig {
//!     fn default() -> Self {
//!         Self { root: "/var/lib/filestore".into(), token: None }
//!     }
//! }
//!
//! impl DriverTable for FilestoreConfig {
//!     fn check(&self) -> Result<(), InvalidKey> {
//!         if !self.root.starts_with('/') {
//!             return Err(InvalidKey::new("root", "must be an absolute path"));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! /// What `register_driver!` is given as `config:`.
//! pub const CONFIG: DriverConfig = DriverConfig::new::<FilestoreConfig>("filestore")
//!     .secrets(&["token"])
//!     .nova(&[NovaOption::new("filestore", "root_dir", "root")]);
//! # assert_eq!(CONFIG.table(), "filestore");
//! ```

use std::fmt;

use figment::value::{Dict, Value as Raw};
use figment::Figment;
use serde::de::{self, DeserializeOwned, Visitor};
use serde::Serialize;

/// A driver's typed options: the table it declares with [`DriverConfig::new`].
///
/// Implement it for a `serde` struct with `#[serde(deny_unknown_fields, default)]`,
/// a `Default` holding the documented defaults, and doc comments on every field.
/// Durations use [`config::duration`](crate::config::duration) (`#[serde(with =
/// "servicegroup_core::config::duration")]`), so they read as every core duration
/// does and zero, negative and non-numeric values are errors naming the key.
///
/// Its `Serialize` is used to learn the keys, their defaults and how text for them
/// is read (numbers, flags, lists) and to show the values; keep every field
/// serialized (no `skip_serializing`), and let secret values serialize masked if they
/// like (core masks declared secrets anyway).
pub trait DriverTable: Serialize + DeserializeOwned + Default + 'static {
    /// Rules `serde` cannot state (a format, a range, two keys that go together).
    /// Return the key, relative to the table, and what is wrong with it: core turns it
    /// into a `Config` error naming the whole key and the file, variable or override
    /// its value came from. The message must not contain the value of a secret.
    ///
    /// Core applies it when the configuration selects this driver (at load, in
    /// [`Config::validated`](crate::Config::validated)) and in
    /// [`Config::driver_config`](crate::Config::driver_config); the types and unknown
    /// keys of every linked driver's table are checked whichever driver is selected.
    fn check(&self) -> Result<(), InvalidKey> {
        Ok(())
    }
}

/// A rule a driver's options broke: the key (relative to its table) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKey {
    key: String,
    message: String,
}

impl InvalidKey {
    /// `key` (such as `timeout`, or `tls.cert` in a nested table) broke a rule;
    /// `message` says which (`must be greater than zero`).
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key, relative to the driver's table.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong with its value.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for InvalidKey {}

/// One nova.conf option a driver reads into one of its keys.
///
/// `section` is `DEFAULT` (exact) or another section (matched case-insensitively, as
/// oslo.config does). Several options may feed one key: the first one, in
/// declaration order, that the file sets (and not to `<None>`) is used, so
/// `[DEFAULT] memcached_servers` declared before `[cache] memcache_servers` is used
/// when both are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NovaOption {
    section: &'static str,
    option: &'static str,
    key: &'static str,
    list: bool,
}

impl NovaOption {
    /// `[section] option` of nova.conf sets `key` of the driver's table.
    pub const fn new(section: &'static str, option: &'static str, key: &'static str) -> Self {
        Self {
            section,
            option,
            key,
            list: false,
        }
    }

    /// Reads the option as a list: items separated by commas or continued on
    /// indented lines (Nova's multi-line form), each trimmed and unquoted, empty items
    /// dropped. Keys whose default is a list are read so without this.
    pub const fn list(mut self) -> Self {
        self.list = true;
        self
    }

    /// The nova.conf section (`DEFAULT`, `database`, `cache`, ...).
    pub fn section(&self) -> &'static str {
        self.section
    }

    /// The option's name in that section.
    pub fn option(&self) -> &'static str {
        self.option
    }

    /// The key of the driver's table it sets.
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// Whether it is read as a list (see [`NovaOption::list`]).
    pub fn is_list(&self) -> bool {
        self.list
    }
}

/// Why a driver's table was refused (crate-private: the loader formats it).
pub(crate) enum Rejected {
    /// Deserialization failed: each error with its whole dotted key path (table
    /// included) and layer metadata.
    Serde(Vec<figment::Error>),
    /// The driver's [`DriverTable::check`] refused it.
    Rule(InvalidKey),
    /// The table could not be serialized back (a driver bug), with why.
    Unrepresentable(String),
}

/// A driver's configuration table, declared with its registration:
///
/// ```text
/// servicegroup_core::register_driver! {
///     name: "db",
///     description: "...",
///     config: DriverConfig::new::<DbConfig>("db")
///         .secrets(&["url"])
///         .nova(&[NovaOption::new("database", "connection", "url")]),
///     build: |config| ...,
/// }
/// ```
///
/// The table is a top-level TOML table (`[db]`, `[filestore]`); each leaf key has its
/// environment variable (`SERVICEGROUP_<TABLE>__<KEY>`); `[options.<driver>]` and
/// `SERVICEGROUP_OPTIONS__<DRIVER>__<KEY>` are read as this table too. Its values reach
/// the driver's factory through [`Config::driver_config`](crate::Config::driver_config).
///
/// Built in a `const` (registrations are statics), so it keeps the type `T` only as
/// functions: which keys it has, its defaults, and how to read and check a table.
#[derive(Clone, Copy)]
pub struct DriverConfig {
    table: &'static str,
    secrets: &'static [&'static str],
    nova: &'static [NovaOption],
    type_name: fn() -> &'static str,
    fields: fn() -> &'static [&'static str],
    defaults: fn() -> Result<Dict, String>,
    read: fn(&Figment, &str, bool) -> Result<Dict, Rejected>,
}

impl DriverConfig {
    /// The table named `table`, read as `T`. No secrets, no nova.conf options.
    pub const fn new<T: DriverTable>(table: &'static str) -> Self {
        Self {
            table,
            secrets: &[],
            nova: &[],
            type_name: std::any::type_name::<T>,
            fields: fields_of::<T>,
            defaults: defaults_of::<T>,
            read: read_of::<T>,
        }
    }

    /// These keys (relative to the table; dotted for nested tables) hold secrets:
    /// their values never appear in errors, logs, `Debug` or `servicegroup config`
    /// (a URL is shown with its password masked, anything else as `***`).
    pub const fn secrets(mut self, keys: &'static [&'static str]) -> Self {
        self.secrets = keys;
        self
    }

    /// These nova.conf options feed these keys when a nova.conf is read.
    pub const fn nova(mut self, options: &'static [NovaOption]) -> Self {
        self.nova = options;
        self
    }

    /// The table's name.
    pub fn table(&self) -> &'static str {
        self.table
    }

    /// The keys declared secret.
    pub fn secret_keys(&self) -> &'static [&'static str] {
        self.secrets
    }

    /// The nova.conf options it reads, in declaration order.
    pub fn nova_options(&self) -> &'static [NovaOption] {
        self.nova
    }

    /// Whether `key` (relative to the table) is secret, or lies inside a secret table.
    pub fn is_secret(&self, key: &str) -> bool {
        self.secrets.iter().any(|s| {
            key == *s
                || key
                    .strip_prefix(s)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// The Rust type the table is read as.
    pub fn type_name(&self) -> &'static str {
        (self.type_name)()
    }

    pub(crate) fn fields(&self) -> &'static [&'static str] {
        (self.fields)()
    }

    pub(crate) fn defaults(&self) -> Result<Dict, String> {
        (self.defaults)()
    }

    /// Reads the table at `path` of `figment` as `T`, applies [`DriverTable::check`]
    /// when `check` is set, and returns it serialized back (every key, normalized: for
    /// display, never for use).
    pub(crate) fn read(
        &self,
        figment: &Figment,
        path: &str,
        check: bool,
    ) -> Result<Dict, Rejected> {
        (self.read)(figment, path, check)
    }
}

impl fmt::Debug for DriverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverConfig")
            .field("table", &self.table)
            .field("type", &self.type_name())
            .field("secrets", &self.secrets)
            .field("nova", &self.nova)
            .finish()
    }
}

fn defaults_of<T: DriverTable>() -> Result<Dict, String> {
    match Raw::serialize(T::default()) {
        Ok(Raw::Dict(_, dict)) => Ok(dict),
        Ok(other) => Err(format!(
            "its defaults serialize to {}, not a table",
            other.to_actual()
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn read_of<T: DriverTable>(figment: &Figment, path: &str, check: bool) -> Result<Dict, Rejected> {
    let value: T = figment
        .extract_inner(path)
        .map_err(|e| Rejected::Serde(rooted(e, path)))?;
    if check {
        value.check().map_err(Rejected::Rule)?;
    }
    match Raw::serialize(&value) {
        Ok(Raw::Dict(_, dict)) => Ok(dict),
        Ok(other) => Err(Rejected::Unrepresentable(format!(
            "it serializes to {}, not a table",
            other.to_actual()
        ))),
        Err(e) => Err(Rejected::Unrepresentable(e.to_string())),
    }
}

/// The errors of `extract_inner(path)` with their key paths starting at the root
/// (figment appends `path` after the key inside it: `timeout.db` for `db.timeout`).
pub(crate) fn rooted(error: figment::Error, path: &str) -> Vec<figment::Error> {
    let prefix: Vec<String> = path
        .split('.')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    error
        .into_iter()
        .map(|mut e| {
            if e.path.ends_with(&prefix) {
                e.path.truncate(e.path.len() - prefix.len());
            }
            if !e.path.starts_with(&prefix) {
                e.path.splice(0..0, prefix.iter().cloned());
            }
            e
        })
        .collect()
}

/// The field names `T`'s derived `Deserialize` knows (all of them, `Option`s and
/// skipped-when-serializing ones included), learnt by asking it to deserialize from
/// a deserializer that only records what it is asked for.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldNames(&mut fields));
    fields.unwrap_or(&[])
}

struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

#[derive(Debug)]
struct Introspected;

impl fmt::Display for Introspected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("introspection only")
    }
}

impl std::error::Error for Introspected {}

impl de::Error for Introspected {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Introspected
    }
}

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = Introspected;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Introspected> {
        Err(Introspected)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Introspected> {
        *self.0 = Some(fields);
        Err(Introspected)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        url: Option<String>,
        #[serde(skip_serializing)]
        hidden: u32,
        servers: Vec<String>,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                url: None,
                hidden: 1,
                servers: vec![],
            }
        }
    }

    impl DriverTable for Sample {}

    const SAMPLE: DriverConfig = DriverConfig::new::<Sample>("sample")
        .secrets(&["url", "tls"])
        .nova(&[NovaOption::new("DEFAULT", "sample_servers", "servers").list()]);

    #[test]
    fn a_const_declaration_knows_its_type() {
        assert_eq!(SAMPLE.table(), "sample");
        assert_eq!(SAMPLE.fields(), ["url", "hidden", "servers"]);
        let defaults = SAMPLE.defaults().unwrap();
        assert!(defaults.contains_key("servers"));
        assert!(SAMPLE.is_secret("url"));
        assert!(SAMPLE.is_secret("tls.key"));
        assert!(!SAMPLE.is_secret("urls"));
        assert!(SAMPLE.nova_options()[0].is_list());
        assert!(format!("{SAMPLE:?}").contains("Sample"));
    }
}
