//! One configuration source as a figment [`Provider`], and the way back from
//! figment's [`Metadata`] to our [`Origin`].
//!
//! Every source (the defaults, the file, each environment variable, each override)
//! is merged as its own layer, so `Figment::find_metadata` and the metadata of an
//! extraction error name exactly the file, variable or flag a value came from.

use figment::value::{Dict, Map};
use figment::{Metadata, Profile, Provider, Source};

use crate::config::origin::Origin;

const DEFAULT: &str = "default";
const FILE: &str = "file";
const ENV: &str = "env";
const OVERRIDE: &str = "override";

/// A dictionary of values from one [`Origin`].
pub(crate) struct Layer {
    origin: Origin,
    dict: Dict,
}

impl Layer {
    pub(crate) fn new(origin: Origin, dict: Dict) -> Self {
        Self { origin, dict }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        match &self.origin {
            Origin::Default => Metadata::named(DEFAULT),
            Origin::File(path) => Metadata::from(FILE, Source::File(path.clone())),
            Origin::Env(var) => Metadata::from(ENV, Source::Custom(var.clone())),
            Origin::Override(by) => Metadata::from(OVERRIDE, Source::Custom(by.clone())),
        }
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// The [`Origin`] of a layer's metadata (`None` for metadata no [`Layer`] made).
pub(crate) fn origin_of(metadata: &Metadata) -> Option<Origin> {
    match (metadata.name.as_ref(), &metadata.source) {
        (DEFAULT, _) => Some(Origin::Default),
        (FILE, Some(Source::File(path))) => Some(Origin::File(path.clone())),
        (ENV, Some(Source::Custom(var))) => Some(Origin::Env(var.clone())),
        (OVERRIDE, Some(Source::Custom(by))) => Some(Origin::Override(by.clone())),
        _ => None,
    }
}
