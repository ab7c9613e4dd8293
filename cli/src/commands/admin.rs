//! `servicegroup drivers` and `servicegroup config`.

use servicegroup::{LoadedConfig, Registry};

use crate::console;
use crate::failure::{Failure, EXIT_OK};
use crate::settings;

/// Prints every registered driver: name and description.
pub fn drivers() -> Result<u8, Failure> {
    let factories = Registry::factories();
    let width = factories.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in factories {
        console::line(format_args!("{:width$}  {}", f.name, f.description))?;
    }
    Ok(EXIT_OK)
}

/// Prints the effective configuration, one `key = value  # origin` line each.
pub fn config(loaded: &LoadedConfig) -> Result<u8, Failure> {
    let lines = settings::lines(loaded)?;
    let kw = lines.iter().map(|l| l.key.len()).max().unwrap_or(0);
    let vw = lines
        .iter()
        .map(|l| l.value.chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    for l in &lines {
        console::line(format_args!(
            "{:kw$} = {:vw$}  # {}",
            l.key, l.value, l.origin
        ))?;
    }
    Ok(EXIT_OK)
}
