//! Every configuration key is documented. The keys come from the settings
//! types themselves: each section refuses an unknown key and names every key it
//! knows ("unknown field `…`, expected one of `a`, `b`, …").

use outcome_meter::settings::{Settings, SettingsError};

/// The keys a section accepts: load a configuration whose section `header`
/// holds one unknown key, and read the list the refusal gives.
fn keys_of(prefix: &str, header: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, format!("{prefix}\n{header}\nzzz_not_a_key = 1\n")).expect("write");
    let err = match Settings::load(Some(&path)) {
        Err(SettingsError::Load(text)) => text,
        other => panic!("`{header}`: expected an unknown-field refusal, got {other:?}"),
    };
    let list = err
        .split_once("expected one of ")
        .or_else(|| err.split_once("expected "))
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("`{header}`: {err}"));
    let list = list.split(" for key").next().unwrap_or(list);
    list.split(", ")
        .flat_map(|k| k.split(" or "))
        .map(|k| k.trim().trim_matches('`').to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

/// The documentation: the README and everything under docs/.
fn docs() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("README.md")).expect("README");
    if let Ok(dir) = std::fs::read_dir(root.join("docs")) {
        for entry in dir.flatten() {
            if entry.path().extension().is_some_and(|e| e == "md") {
                text += &std::fs::read_to_string(entry.path()).unwrap_or_default();
            }
        }
    }
    text
}

/// Table rows (`| … |` lines) of the documentation.
fn rows(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("| `")).collect()
}

/// `section.key` is documented by a row that names it, or by a row that names
/// the section's first key and this one after a slash (`a.b` / `c`).
fn documented(rows: &[&str], section: &str, key: &str) -> bool {
    // `a.b` itself, or a table `a.b` documented by its keys (`a.b.c`).
    let full = format!("`{section}.{key}");
    let short = format!("`{key}`");
    rows.iter().any(|r| {
        let first = r.split(" | ").next().unwrap_or(r);
        first.contains(&full) || (first.contains(&format!("`{section}.")) && first.contains(&short))
    })
}

#[test]
fn every_configuration_key_is_documented() {
    const MODE: &str = "[stripe]\nmode = \"dry-run\"";
    let text = docs();
    let rows = rows(&text);
    let mut missing = Vec::new();
    let sections = keys_of("", "");
    assert!(sections.contains(&"stripe".to_string()), "{sections:?}");
    let tenant = "[[tenants]]\nid = \"acme\"\nstripe_customer_id = \"cus_1\"";
    let in_tenant = format!("{MODE}\n{tenant}");
    for section in &sections {
        // `[contract]` flattens its default meter, which hides its key list from
        // the refusal; `[tenants.contract]` takes the same keys and lists them.
        let keys = match section.as_str() {
            "tenants" => continue, // below: a list of tables
            "contract" => keys_of(&in_tenant, "[tenants.contract]"),
            "stripe" => keys_of("", "[stripe]"),
            _ => keys_of(MODE, &format!("[{section}]")),
        };
        for key in keys {
            if !documented(&rows, section, &key) {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    for key in keys_of(&in_tenant, "[tenants.contract.caps]") {
        if !documented(&rows, "contract", &format!("caps.{key}"))
            && !documented(&rows, "contract.caps", &key)
        {
            missing.push(format!("contract.caps.{key}"));
        }
    }
    let categories = rows
        .iter()
        .find(|r| r.contains("`contract.categories`"))
        .copied()
        .unwrap_or_default();
    for key in keys_of(&in_tenant, "[[tenants.contract.categories]]") {
        if !categories.contains(&key) {
            missing.push(format!("contract.categories[].{key}"));
        }
    }
    for key in keys_of(MODE, "[[tenants]]") {
        let sample = text.lines().any(|l| {
            l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("[tenants.{key}"))
        });
        if !sample && !documented(&rows, "tenants[]", &key) {
            missing.push(format!("tenants[].{key}"));
        }
    }
    let providers: Vec<&str> = text
        .split("Provider settings (`[tenants.providers.<name>]`")
        .nth(1)
        .map(|after| rows_until_heading(after))
        .unwrap_or_default();
    for key in keys_of(&in_tenant, "[tenants.providers.generic]") {
        let named = format!("`{key}`");
        if !providers
            .iter()
            .any(|r| r.split(" | ").next().is_some_and(|c| c.contains(&named)))
        {
            missing.push(format!("tenants[].providers.<name>.{key}"));
        }
    }
    assert!(
        missing.is_empty(),
        "configuration keys missing from the documentation's tables: {missing:?}"
    );
}

/// The table rows of a text, up to its next heading.
fn rows_until_heading(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with("| `"))
        .collect()
}

/// `config/default.toml` (what an operator reads and edits) says what the
/// built-in defaults are: loading it alone changes nothing.
#[test]
fn config_default_toml_restates_the_built_in_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let loaded: Settings = config::Config::builder()
        .add_source(config::File::from(path))
        .build()
        .and_then(|c| c.try_deserialize())
        .expect("config/default.toml loads");
    assert_eq!(
        format!("{loaded:#?}"),
        format!("{:#?}", Settings::default()),
        "config/default.toml (left) and the Default impls (right) disagree"
    );
}
