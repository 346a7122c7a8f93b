//! Secrets that come from files (Docker and Kubernetes mount them as files) or
//! from environment variables, for the keys that hold secrets:
//! `stripe.api_key_file`, `stripe.webhook_secret_file`, `metronome.api_token_file`, `database.url_file`, and per tenant provider
//! `secret_files` / `secret_env` (tenants are a list, which environment
//! overrides cannot address). Read once at load; a missing or unusable source
//! is a configuration error that names the source, never the value.

use crate::providers::secret_problem;
use crate::settings::Settings;

/// A file's secret: its content without one trailing newline (`\n` or `\r\n`),
/// as `echo` and most secret stores leave it.
pub(crate) fn read_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
}

/// Fill the settings from their file and environment sources. Returns the
/// problems found (empty when all is well).
pub fn resolve(s: &mut Settings) -> Vec<String> {
    let mut errs = Vec::new();
    if let Some(path) = s.stripe.api_key_file.clone() {
        if !s.stripe.api_key.is_empty() {
            errs.push("stripe.api_key and stripe.api_key_file are both set: keep one".into());
        }
        match read_file(&path) {
            Ok(key) if key.trim().is_empty() => {
                errs.push(format!("stripe.api_key_file `{path}` is empty"))
            }
            Ok(key) => s.stripe.api_key = key,
            Err(e) => errs.push(format!("stripe.api_key_file: {e}")),
        }
    }
    if let Some(path) = s.stripe.webhook_secret_file.clone() {
        if !s.stripe.webhook_secret.is_empty() {
            errs.push(
                "stripe.webhook_secret and stripe.webhook_secret_file are both set: keep one"
                    .into(),
            );
        }
        match read_file(&path) {
            Ok(secret) if secret.trim().is_empty() => {
                errs.push(format!("stripe.webhook_secret_file `{path}` is empty"))
            }
            Ok(secret) => s.stripe.webhook_secret = secret,
            Err(e) => errs.push(format!("stripe.webhook_secret_file: {e}")),
        }
    }
    errs.extend(s.metronome.resolve_token_file());
    if let Some(path) = s.database.url_file.clone() {
        match read_file(&path) {
            Ok(url) if url.trim().is_empty() => {
                errs.push(format!("database.url_file `{path}` is empty"))
            }
            Ok(url) => s.database.url = url,
            Err(e) => errs.push(format!("database.url_file: {e}")),
        }
    }
    for t in &mut s.tenants {
        for (name, p) in &mut t.providers {
            if let Some(api) = p.api.as_mut() {
                errs.extend(api.resolve_sources(&format!("tenant `{}`: provider `{name}`", t.id)));
            }
            let mut found = Vec::new();
            for path in &p.secret_files {
                match read_file(path) {
                    Ok(v) => found.push((format!("secret_files `{path}`"), v)),
                    Err(e) => errs.push(format!(
                        "tenant `{}`: provider `{name}` secret_files: {e}",
                        t.id
                    )),
                }
            }
            for var in &p.secret_env {
                match std::env::var(var) {
                    Ok(v) => found.push((format!("secret_env `{var}`"), v)),
                    Err(_) => errs.push(format!(
                        "tenant `{}`: provider `{name}` secret_env `{var}` is not set",
                        t.id
                    )),
                }
            }
            for (source, value) in found {
                match secret_problem(&value) {
                    Some(problem) => errs.push(format!(
                        "tenant `{}`: provider `{name}` {source} {problem}",
                        t.id
                    )),
                    None => p.secrets.push(value),
                }
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::TenantSettings;

    fn settings() -> Settings {
        Settings {
            tenants: vec![TenantSettings::generic("acme", "cus_1", "inline-secret-1")],
            ..Default::default()
        }
    }

    #[test]
    fn files_and_environment_fill_the_secrets() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = dir.path().join("stripe_key");
        std::fs::write(&key, "sk_test_from_a_file\n").expect("write");
        let url = dir.path().join("db_url");
        std::fs::write(&url, "postgres://om:pw@db/om\r\n").expect("write");
        let whsec = dir.path().join("stripe_webhook_secret");
        std::fs::write(&whsec, "whsec_from_a_file_123\n").expect("write");
        let hook = dir.path().join("hook_secret");
        std::fs::write(&hook, "file-signing-secret\n").expect("write");
        std::env::set_var("OM_TEST_SECRET_SOURCES_A", "env-signing-secret");
        let mut s = settings();
        s.stripe.api_key_file = Some(key.display().to_string());
        s.database.url_file = Some(url.display().to_string());
        s.stripe.webhook_secret_file = Some(whsec.display().to_string());
        if let Some(p) = s.tenants[0].providers.get_mut("generic") {
            p.secret_files = vec![hook.display().to_string()];
            p.secret_env = vec!["OM_TEST_SECRET_SOURCES_A".into()];
        }
        assert_eq!(resolve(&mut s), Vec::<String>::new());
        assert_eq!(s.stripe.api_key, "sk_test_from_a_file");
        assert_eq!(s.database.url, "postgres://om:pw@db/om");
        assert_eq!(s.stripe.webhook_secret, "whsec_from_a_file_123");
        assert_eq!(
            s.tenants[0].providers["generic"].secrets,
            vec![
                "inline-secret-1",
                "file-signing-secret",
                "env-signing-secret"
            ]
        );
        s.stripe.mode = Some(crate::settings::StripeMode::Test);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn missing_empty_and_weak_sources_are_errors_that_name_the_source() {
        let dir = tempfile::tempdir().expect("tmp");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").expect("write");
        let mut s = settings();
        s.stripe.api_key_file = Some(empty.display().to_string());
        if let Some(p) = s.tenants[0].providers.get_mut("generic") {
            p.secret_files = vec![short.display().to_string(), "/nonexistent/secret".into()];
            p.secret_env = vec!["OM_TEST_SECRET_SOURCES_UNSET".into()];
        }
        let errs = resolve(&mut s).join("\n");
        assert!(errs.contains("stripe.api_key_file"), "{errs}");
        assert!(errs.contains("is empty"), "{errs}");
        assert!(errs.contains("/nonexistent/secret"), "{errs}");
        assert!(
            errs.contains("OM_TEST_SECRET_SOURCES_UNSET` is not set"),
            "{errs}"
        );
        assert!(errs.contains("shorter than 8"), "{errs}");
        assert!(!errs.contains("abc"), "the value is never repeated: {errs}");
    }
}
