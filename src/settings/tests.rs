use super::*;
use crate::contract::ContractOverrides;
use crate::providers::ProviderSettings;
use std::time::Duration;

fn tenant() -> TenantSettings {
    TenantSettings {
        id: "acme".into(),
        stripe_customer_id: "cus_1".into(),
        stripe_account: None,
        metronome_customer_id: None,
        stripe_subscription_item: None,
        sink: crate::sink::Sink::StripeMeters,
        providers: [(
            "generic".to_string(),
            ProviderSettings {
                secrets: vec!["tenant-signing-secret".into()],
                ..Default::default()
            },
        )]
        .into(),
        contract: ContractOverrides::default(),
    }
}

#[test]
fn defaults_are_valid_once_a_mode_is_chosen() {
    let mut s = Settings {
        tenants: vec![tenant()],
        ..Default::default()
    };
    let Err(SettingsError::Invalid(errs)) = s.validate() else {
        panic!("a missing stripe.mode must be refused");
    };
    assert!(
        errs.iter().any(|e| e.contains("stripe.mode is required")),
        "{errs:?}"
    );
    s.stripe.mode = Some(StripeMode::DryRun);
    assert!(s.validate().is_ok());
    assert!(s.stripe.dry_run());
}

#[test]
fn the_rate_defaults_to_the_modes() {
    let mut s = Settings::default();
    for (mode, rate) in [(StripeMode::Live, 800.0), (StripeMode::Test, 20.0)] {
        s.stripe.mode = Some(mode);
        assert_eq!(s.rate_per_second(), rate);
    }
    for (mode, rate) in [(StripeMode::Live, 90.0), (StripeMode::Test, 5.0)] {
        s.stripe.mode = Some(mode);
        assert_eq!(
            s.stream_rate_per_second(),
            rate,
            "stream calls carry 100 events"
        );
    }
    s.reporter.rate_per_second = Some(50.0);
    assert_eq!(s.rate_per_second(), 50.0, "a configured rate wins");
    assert_eq!(s.stream_rate_per_second(), 5.0, "v1's rate is its own");
    s.reporter.stream_rate_per_second = Some(0.0);
    assert!(s
        .validate()
        .is_err_and(|e| e.to_string().contains("stream_rate_per_second")));
    s.reporter.stream_rate_per_second = Some(5.0);
    assert_eq!(s.stream_rate_per_second(), 5.0);
}

#[test]
fn the_meter_event_stream_needs_a_secret_key_and_a_url() {
    let mut s = Settings::default();
    s.stripe.mode = Some(StripeMode::Test);
    s.stripe.api_key = "rk_test_restricted".into();
    assert!(s.validate().is_ok(), "v1 takes restricted keys");
    s.stripe.meter_event_api = MeterEventApi::V2Stream;
    s.stripe.meter_events_api_base = "meter-events.stripe.com".into();
    let Err(SettingsError::Invalid(errs)) = s.validate() else {
        panic!("a restricted key on the stream must be refused");
    };
    assert!(
        errs.iter().any(|e| e.contains("restricted keys")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("not an http(s) URL")),
        "{errs:?}"
    );
    s.stripe.api_key = "sk_test_secret".into();
    s.stripe.meter_events_api_base = "https://meter-events.stripe.com".into();
    assert!(s.validate().is_ok());
    let parse = |toml: &str| {
        config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<Settings>())
    };
    let named = parse("[stripe]\nmeter_event_api = \"v2_stream\"\n").expect("valid");
    assert_eq!(named.stripe.meter_event_api, MeterEventApi::V2Stream);
    assert!(parse("[stripe]\nmeter_event_api = \"v2\"\n").is_err());
}

#[test]
fn a_connected_account_must_look_like_one() {
    let mut s = Settings {
        tenants: vec![tenant()],
        ..Default::default()
    };
    s.stripe.mode = Some(StripeMode::DryRun);
    s.tenants[0].stripe_account = Some("acct_1Nv0FGQ9RKHgCVdK".into());
    assert!(s.validate().is_ok());
    s.tenants[0].stripe_account = Some("cus_123".into());
    assert!(s.validate().is_err());
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut bad = tenant();
    bad.providers
        .insert("nope".into(), ProviderSettings::default());
    bad.providers
        .insert("zendesk".into(), ProviderSettings::default());
    bad.providers
        .insert("hubspot".into(), ProviderSettings::default());
    bad.providers
        .insert("zohodesk".into(), ProviderSettings::default());
    let s = Settings {
        tenants: vec![bad.clone(), bad],
        ..Default::default()
    };
    let Err(SettingsError::Invalid(errs)) = s.validate() else {
        panic!("expected invalid");
    };
    let text = errs.join("\n");
    assert!(text.contains("listed twice"), "{text}");
    assert!(text.contains("unknown provider `nope`"), "{text}");
    assert!(
        text.contains("provider `zendesk` needs at least one secret"),
        "{text}"
    );
    assert!(
        text.contains("provider `hubspot` needs closed_stage_ids"),
        "{text}"
    );
    assert!(
        text.contains("provider `zohodesk` needs jwks_file"),
        "{text}"
    );
    assert!(text.contains("provider `zohodesk` needs issuer"), "{text}");
    assert!(
        !text.contains("provider `zohodesk` needs at least one secret"),
        "Zoho Desk verifies with keys, not secrets: {text}"
    );
}

#[test]
fn meter_aggregations_default_to_sum_and_reject_unknown_formulas() {
    let parse = |toml: &str| {
        config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<Settings>())
    };
    let s = parse("[stripe.meter_aggregations]\nescalation = \"count\"\n").expect("valid");
    assert_eq!(s.stripe.aggregation("escalation"), MeterAggregation::Count);
    assert_eq!(
        s.stripe.aggregation("resolved_ticket"),
        MeterAggregation::Sum
    );
    assert!(parse("[stripe.meter_aggregations]\nx = \"average\"\n").is_err());
}

#[test]
fn an_empty_secret_beside_a_real_one_is_refused_at_load() {
    for weak in ["", " ", "short"] {
        let mut t = tenant();
        if let Some(p) = t.providers.get_mut("generic") {
            p.secrets.push(weak.into());
        }
        let s = Settings {
            tenants: vec![t],
            ..Default::default()
        };
        let Err(SettingsError::Invalid(errs)) = s.validate() else {
            panic!("a secret of {weak:?} was accepted");
        };
        let text = errs.join("\n");
        assert!(text.contains("provider `generic` secrets[1]"), "{text}");
        assert!(!text.contains("tenant-signing-secret"), "{text}");
    }
}

#[test]
fn the_stripe_events_secret_is_checked_like_a_signing_secret() {
    let with = |secret: &str| Settings {
        tenants: vec![tenant()],
        stripe: StripeSettings {
            mode: Some(StripeMode::DryRun),
            webhook_secret: secret.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(with("").validate().is_ok(), "none: the endpoint is off");
    assert!(with("whsec_0123456789abcdef").validate().is_ok());
    for (bad, why) in [
        (" ", "empty or blank"),
        ("whsec_", "shorter than 8"),
        ("whsec_0123456789abcdef\n", "whitespace"),
        ("sk_test_0123456789abcdef", "start with whsec_"),
    ] {
        let Err(SettingsError::Invalid(errs)) = with(bad).validate() else {
            panic!("{bad:?} was accepted");
        };
        let text = errs.join("\n");
        assert!(
            text.contains("stripe.webhook_secret") && text.contains(why),
            "{text}"
        );
        assert!(!text.contains("0123456789abcdef"), "never repeated: {text}");
    }
}

#[test]
fn reconcile_every_defaults_to_an_hour_and_can_be_turned_off() {
    let parse = |toml: &str| {
        config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<Settings>())
    };
    let s = parse("").expect("defaults");
    assert_eq!(s.reconcile.every, Some(Duration::from_secs(3600)));
    let s = parse("[reconcile]\nevery = \"none\"\n").expect("off");
    assert_eq!(s.reconcile.every, None);
    let mut s =
        parse("[reconcile]\nevery = \"10s\"\nwindow = \"5m\"\nlag = \"10m\"\n").expect("parses");
    s.tenants = vec![tenant()];
    let Err(SettingsError::Invalid(errs)) = s.validate() else {
        panic!("accepted");
    };
    let text = errs.join("\n");
    assert!(
        text.contains("reconcile.every must be at least 1m"),
        "{text}"
    );
    assert!(text.contains("reconcile.window"), "{text}");
}

#[test]
fn secrets_are_not_in_debug_output() {
    let mut s = Settings {
        tenants: vec![tenant()],
        ..Default::default()
    };
    s.stripe.api_key = "sk_test_supersecret".into();
    s.stripe.webhook_secret = "whsec_hooksupersecret".into();
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("supersecret"));
    assert!(!dbg.contains("tenant-signing-secret"));
}

#[test]
fn the_meter_event_stream_is_in_use_only_for_meter_tenants_on_the_platform() {
    let mut s = Settings {
        tenants: vec![tenant()],
        ..Default::default()
    };
    assert!(!s.meter_event_stream_in_use(), "v1");
    s.stripe.meter_event_api = MeterEventApi::V2Stream;
    assert!(s.meter_event_stream_in_use());
    s.tenants[0].stripe_account = Some("acct_1Nv0FGQ9RKHgCVdK".into());
    assert!(
        !s.meter_event_stream_in_use(),
        "connected accounts go by v1"
    );
    s.tenants[0].stripe_account = None;
    s.tenants[0].sink = crate::sink::Sink::StripeUsageRecords;
    assert!(!s.meter_event_stream_in_use(), "not a meter events tenant");
}
