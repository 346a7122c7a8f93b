//! Reading the configuration from its sources: the built-in defaults (the
//! `Default` impls, the one source of defaults), `--config FILE`, then the
//! environment. `config/default.toml` restates the defaults for operators and
//! is not read (tests/it/config_keys.rs keeps it, and docs/configuration.md, equal
//! to the built-in ones). Earlier releases read it from the working directory:
//! one there that says something else, and is not the `--config` file, stops the
//! start ([`SettingsError::UnreadDefaults`]) rather than being silently ignored.

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
        refuse_unread_defaults(Path::new(UNREAD_DEFAULTS), file)?;
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

/// Where earlier releases read their defaults from (relative to the working directory).
const UNREAD_DEFAULTS: &str = "config/default.toml";

/// `Err` when `defaults` (earlier releases' file of defaults) exists, is not
/// `file` (the `--config` file), and does not load equal to the built-in
/// defaults: an operator who edited it would otherwise get other settings
/// (another contract, no tenants) without a word. Equal, or absent: nothing.
fn refuse_unread_defaults(defaults: &Path, file: Option<&Path>) -> Result<(), SettingsError> {
    if !defaults.is_file() {
        return Ok(());
    }
    let canonical = |p: &Path| std::fs::canonicalize(p).ok();
    if file.is_some_and(|f| canonical(f).is_some() && canonical(f) == canonical(defaults)) {
        return Ok(());
    }
    let loaded: Result<Settings, config::ConfigError> = config::Config::builder()
        .add_source(config::File::from(defaults).required(true))
        .build()
        .and_then(config::Config::try_deserialize);
    // `Settings` has no `PartialEq`; its `Debug` shows every value.
    match loaded {
        Ok(s) if format!("{s:?}") == format!("{:?}", Settings::default()) => Ok(()),
        _ => Err(SettingsError::UnreadDefaults {
            path: defaults.display().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_defaults_that_says_something_else_stops_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let defaults = dir.path().join("default.toml");
        assert!(refuse_unread_defaults(&defaults, None).is_ok(), "absent");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        std::fs::copy(&repo, &defaults).expect("copy");
        assert!(refuse_unread_defaults(&defaults, None).is_ok(), "equal");
        std::fs::write(&defaults, "[worker]\nbatch_size = 7\n").expect("write");
        let err = refuse_unread_defaults(&defaults, None).expect_err("differs");
        assert!(err.to_string().contains("no longer reads it"), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("--config {}", defaults.display())),
            "{err}"
        );
        std::fs::write(&defaults, "not toml [").expect("write");
        assert!(
            refuse_unread_defaults(&defaults, None).is_err(),
            "unreadable"
        );
        // Passed with --config: read as configuration, not refused.
        assert!(refuse_unread_defaults(&defaults, Some(&defaults)).is_ok());
        let other = dir.path().join("om.toml");
        std::fs::write(&other, "").expect("write");
        assert!(refuse_unread_defaults(&defaults, Some(&other)).is_err());
    }
}
