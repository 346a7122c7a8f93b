//! The settings of the usage-record sink: `stripe.legacy_api_version` (on
//! [`crate::settings::StripeSettings`]) and, per tenant,
//! `stripe_subscription_item` (on [`crate::settings::TenantSettings`]).

use super::rules::{supports_usage_records, REMOVED_IN};
use crate::settings::{Settings, TenantSettings};

/// What is wrong with them (called by [`Settings::validate`]).
pub fn problems(s: &Settings) -> Vec<String> {
    let mut errs = Vec::new();
    let v = &s.stripe.legacy_api_version;
    if !supports_usage_records(v) {
        errs.push(format!(
            "stripe.legacy_api_version `{v}` has no usage records: they exist only in Stripe-Versions before \
             {REMOVED_IN} (the default is {})",
            super::rules::LEGACY_API_VERSION
        ));
    }
    errs.extend(s.tenants.iter().filter_map(tenant_problem));
    errs
}

/// A tenant's `stripe_subscription_item`, when set, is a subscription item id
/// (`si_` and letters, digits or `_`): it goes into the request path.
fn tenant_problem(t: &TenantSettings) -> Option<String> {
    let item = t.stripe_subscription_item.as_deref()?;
    let ok = item.len() > 3
        && item.starts_with("si_")
        && item.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (!ok).then(|| {
        format!(
            "tenant `{}`: stripe_subscription_item `{item}` is not a subscription item id (si_…)",
            t.id
        )
    })
}

#[cfg(test)]
mod tests {
    use crate::settings::{Settings, SettingsError, StripeMode, TenantSettings};

    fn settings() -> Settings {
        let mut s = Settings {
            tenants: vec![TenantSettings::generic("acme", "cus_1", "inline-secret-1")],
            ..Default::default()
        };
        s.stripe.mode = Some(StripeMode::DryRun);
        s
    }

    fn errors(s: &Settings) -> String {
        match s.validate() {
            Err(SettingsError::Invalid(errs)) => errs.join("\n"),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn defaults_pin_the_last_version_with_usage_records() {
        let s = settings();
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        assert_eq!(s.stripe.legacy_api_version, "2025-02-24.acacia");
        assert_eq!(s.tenants[0].stripe_subscription_item, None);
    }

    #[test]
    fn a_version_without_usage_records_is_refused() {
        let mut s = settings();
        s.stripe.legacy_api_version = "2025-03-31.basil".into();
        assert!(errors(&s).contains("stripe.legacy_api_version"));
        s.stripe.legacy_api_version = "2024-06-20".into();
        assert!(s.validate().is_ok());
    }

    #[test]
    fn a_subscription_item_must_be_one() {
        let mut s = settings();
        s.tenants[0].stripe_subscription_item = Some("si_IutmSSymhsWA5i".into());
        assert!(s.validate().is_ok());
        for bad in ["", "si_", "sub_123", "si_1/usage", " si_1"] {
            s.tenants[0].stripe_subscription_item = Some(bad.into());
            assert!(errors(&s).contains("stripe_subscription_item"), "{bad:?}");
        }
    }

    #[test]
    fn both_keys_load_from_configuration() {
        let s: Settings = config::Config::builder()
            .add_source(config::File::from_str(
                "[stripe]\nlegacy_api_version = \"2024-12-18.acacia\"\n[[tenants]]\nid = \"acme\"\n\
                 stripe_customer_id = \"cus_1\"\nstripe_subscription_item = \"si_1\"\n",
                config::FileFormat::Toml,
            ))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("valid");
        assert_eq!(s.stripe.legacy_api_version, "2024-12-18.acacia");
        assert_eq!(
            s.tenants[0].stripe_subscription_item.as_deref(),
            Some("si_1")
        );
    }
}
