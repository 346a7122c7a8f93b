//! Reading the configuration from its sources: the built-in defaults (the
//! `Default` impls, the one source of defaults), `--config FILE`, then the
//! environment. `config/default.toml` restates the defaults for operators and
//! is not read (tests/it/config_keys.rs keeps it, and docs/configuration.md, equal
//! to the built-in ones).

use super::{Settings, SettingsError};
use std::path::Path;

impl From<config::ConfigError> for SettingsError {
    fn from(e: config::ConfigError) -> Self {
        let text = match &e {
            // The parser quotes the offending line, which may hold a secret: keep
            // where it is and what is wrong, drop the quoted source.
            config::ConfigError::FileParse { uri, cause } => format!(
                "{}: {}",
                uri.as_deref().unwrap_or("configuration"),
                crate::redact::without_source_lines(&cause.to_string())
            ),
            // A missing file names only its path.
            config::ConfigError::NotFound(_) => e.to_string(),
            // Type and value errors echo the value: hide every quoted value.
            _ => crate::redact::unexpected_values(&crate::redact::quoted_values(&e.to_string())),
        };
        SettingsError::Load(text)
    }
}

impl Settings {
    /// Load and validate, as `serve` and every command do.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        Self::load_with(file, &[])
    }

    /// Load with `overrides` (key, value) above every source, then validate (the
    /// demo: always a dry-run, whatever the environment says).
    pub fn load_with(
        file: Option<&Path>,
        overrides: &[(&str, &str)],
    ) -> Result<Settings, SettingsError> {
        // The built-in defaults are the base layer (serde fills every key no source
        // sets from the `Default` impls); no file of defaults is read, so what the
        // binary does never depends on the directory it is started from.
        let mut b = config::Config::builder();
        if let Some(f) = file {
            b = b.add_source(config::File::from(f).required(true));
        }
        b = b.add_source(
            config::Environment::with_prefix("OUTCOME_METER")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        if let Ok(key) = std::env::var("STRIPE_API_KEY") {
            if std::env::var("OUTCOME_METER__STRIPE__API_KEY").is_err() {
                b = b.set_override("stripe.api_key", key)?;
            }
        }
        for (key, value) in overrides {
            b = b.set_override(*key, *value)?;
        }
        let mut s: Settings = b.build()?.try_deserialize()?;
        let problems = crate::secret_sources::resolve(&mut s);
        if !problems.is_empty() {
            return Err(SettingsError::Invalid(problems));
        }
        s.validate()?;
        Ok(s)
    }
}
