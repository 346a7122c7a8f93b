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

/// `config/default.toml` (what an operator reads and copies; the binary does
/// not read it) says what the built-in defaults are: loading it alone changes nothing.
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

/// Settings from configuration text alone, as the loader reads it (no validation:
/// a default configuration has no `stripe.mode`).
fn parse(toml: &str) -> Result<Settings, config::ConfigError> {
    config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
}

/// A section left empty, or without the key at hand, takes the built-in default
/// (serde's defaults are the `Default` impls): the binary reads no file of
/// defaults, so this is what every unset key becomes.
#[test]
fn an_empty_section_is_the_built_in_defaults() {
    let default = format!("{:#?}", Settings::default());
    let mut sections: Vec<String> = keys_of("", "")
        .into_iter()
        .filter(|s| s != "tenants")
        .collect();
    sections.extend(
        [
            "contract.caps",
            "stripe.meter_ids",
            "stripe.meter_aggregations",
            "metronome.billable_metric_ids",
            "metronome.metric_aggregations",
        ]
        .map(String::from),
    );
    assert!(sections.len() > 10, "{sections:?}");
    for section in sections {
        let loaded = parse(&format!("[{section}]\n"))
            .unwrap_or_else(|e| panic!("an empty [{section}] loads: {e}"));
        assert_eq!(
            format!("{loaded:#?}"),
            default,
            "an empty [{section}] (left) is not the built-in default (right)"
        );
    }
}

/// The value at `path` (`server.listen`, `tenants.[].sink`) in a `{:#?}` rendering.
fn debug_value(debug: &str, path: &str) -> Option<String> {
    let mut open: Vec<(usize, String)> = Vec::new();
    for line in debug.lines().skip(1) {
        let indent = line.len() - line.trim_start().len();
        while open.last().is_some_and(|(at, _)| *at >= indent) {
            open.pop();
        }
        let (name, value) = line.trim().split_once(": ").unwrap_or(("[]", line.trim()));
        let here: Vec<&str> = open.iter().map(|(_, n)| n.as_str()).chain([name]).collect();
        if here.join(".") == path {
            return Some(value.trim_end_matches(',').to_string());
        }
        if value.ends_with(['{', '[', '(']) {
            open.push((indent, name.to_string()));
        }
    }
    None
}

/// The documented default of each key in docs/configuration.md's tables with a
/// default column, as (`section.key`, default cell). A row naming several keys
/// (`reporter.backoff_base` / `backoff_max`) gives each its part of the cell,
/// or the one value to all.
fn documented_defaults() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docs/configuration.md")).expect("docs");
    let mut out = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with("| key | default |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
        }
        if !in_table || !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        let keys: Vec<&str> = cells[0]
            .trim_start_matches("| ")
            .split(" / ")
            .map(|k| k.trim().trim_matches('`'))
            .collect();
        let section = keys[0].split('.').next().unwrap_or_default().to_string();
        let cell = cells[1].trim();
        let values: Vec<&str> = match cell.split(" / ").collect::<Vec<_>>() {
            parts if parts.len() == keys.len() => parts,
            _ => vec![cell; keys.len()],
        };
        for (i, (key, value)) in keys.iter().zip(values).enumerate() {
            let key = if i == 0 || key.starts_with(&format!("{section}.")) {
                key.to_string()
            } else {
                format!("{section}.{key}")
            };
            out.push((key, value.to_string()));
        }
    }
    out
}

/// docs/configuration.md shows the built-in default of every key it gives one
/// for: each documented value, configured, changes nothing; a key documented
/// as unset (or required, or decided by the mode) is `None` by default.
#[test]
fn the_documented_defaults_are_the_built_in_defaults() {
    let tenant = "[[tenants]]\nid = \"acme\"\nstripe_customer_id = \"cus_1\"\n";
    let rows = documented_defaults();
    assert!(rows.len() > 50, "{rows:?}");
    let mut wrong = Vec::new();
    for (key, cell) in rows {
        let (base, local) = match key.strip_prefix("tenants[].") {
            Some(k) => (tenant, k.to_string()),
            None => ("", key.clone()),
        };
        let default = format!("{:#?}", parse(base).expect("the base loads"));
        if cell == "unset" || cell == "**required**" || cell.starts_with("by mode") {
            let path = key.replace("tenants[].", "tenants.[].");
            let value = debug_value(&default, &path);
            if value.as_deref() != Some("None") {
                wrong.push(format!("{key}: documented {cell}, built in {value:?}"));
            }
            continue;
        }
        let value = match cell.as_str() {
            "empty" => "\"\"".to_string(),
            v if v.starts_with('`') && v.ends_with('`') => v.trim_matches('`').to_string(),
            v => panic!("{key}: cannot read the documented default {v:?}"),
        };
        // A TOML value as written (`true`, `512`, `["ai"]`, `"1"`), else a string.
        let is_toml = config::Config::builder()
            .add_source(config::File::from_str(
                &format!("v = {value}"),
                config::FileFormat::Toml,
            ))
            .build()
            .is_ok();
        let literal = if is_toml {
            value.clone()
        } else {
            format!("{value:?}")
        };
        match parse(&format!("{base}{local} = {literal}\n")) {
            Ok(set) if format!("{set:#?}") == default => {}
            Ok(_) => wrong.push(format!(
                "{key}: documented {cell}, not the built-in default"
            )),
            Err(e) => wrong.push(format!(
                "{key}: documented {cell}, which does not load: {e}"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/configuration.md disagrees with the built-in defaults:\n{}",
        wrong.join("\n")
    );
}

/// The binary reads no file of defaults: a `config/default.toml` in the
/// directory it starts in changes nothing when it equals the built-in defaults
/// (the Docker image has one); one that says something else (earlier releases
/// read it: an operator may have edited it) stops the start with what to do,
/// unless it is the file passed with `--config`.
#[test]
fn the_working_directory_does_not_change_the_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("config")).expect("mkdir");
    let defaults = dir.path().join("config/default.toml");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_outcome-meter"))
            .args(args)
            .arg("check")
            .current_dir(dir.path())
            .env_remove("OUTCOME_METER_CONFIG")
            .env(
                "OUTCOME_METER__DATABASE__URL",
                format!("sqlite://{}", dir.path().join("om.db").display()),
            )
            .env("OUTCOME_METER__STRIPE__MODE", "dry-run")
            .env_remove("STRIPE_API_KEY")
            .env("RUST_LOG", "error")
            .output()
            .expect("run outcome-meter")
    };
    let valid = |out: &std::process::Output| {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("configuration is valid"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Equal to the built-in defaults (as shipped): nothing to say.
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"),
        &defaults,
    )
    .expect("copy");
    let out = run(&[]);
    valid(&out);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Edited: refused, never silently replaced by the built-in defaults.
    for edited in [
        "[server]\nlisten = \"not an address\"\n",
        "[worker]\nbatch_size = 7\n",
    ] {
        std::fs::write(&defaults, edited).expect("write");
        let out = run(&[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("config/default.toml differs from the built-in defaults")
                && stderr.contains("no longer reads it")
                && stderr.contains("pass it with --config config/default.toml"),
            "{stderr}"
        );
    }
    // Passed with --config, it is the configuration.
    valid(&run(&["--config", "config/default.toml"]));
}
