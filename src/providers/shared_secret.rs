//! Authenticity for helpdesks that do not sign their webhooks (Freshdesk,
//! Gorgias): the admin configures a per-tenant secret that the helpdesk sends
//! back on every request, either as HTTP Basic auth or in a header of the
//! admin's choosing. Compared in constant time against every configured secret.
//!
//! There is no timestamp, so staleness cannot be checked; replays are absorbed
//! by the delivery and event dedupe keys. Use HTTPS so the secret stays secret.

use super::signature::ct_eq;
use super::{VerifyContext, VerifyError, Webhook};

/// Accept the request when the configured header (or, failing that,
/// `default_header`) carries a secret, or when `Authorization: Basic` carries
/// a secret as its password (and the configured user, if one is set).
pub(crate) fn verify(
    hook: &Webhook<'_>,
    ctx: &VerifyContext<'_>,
    default_header: Option<&'static str>,
    missing_name: &'static str,
) -> Result<(), VerifyError> {
    let s = ctx.settings;
    let secrets: Vec<&str> = s.usable_secrets().collect();
    if secrets.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let header_name = s
        .auth_header
        .as_deref()
        .map(str::to_ascii_lowercase)
        .or_else(|| default_header.map(str::to_string));
    let mut presented = false;
    if let Some(name) = header_name.as_deref() {
        if let Some(value) = hook.header(name) {
            presented = true;
            if any_matches(&secrets, value.trim().as_bytes()) {
                return Ok(());
            }
        }
    }
    if let Some(auth) = hook.header("authorization") {
        presented = true;
        let (user, password) = basic_credentials(auth).ok_or(VerifyError::Malformed(
            "Authorization (expected Basic credentials)",
        ))?;
        let user_ok = match s.basic_auth_user.as_deref() {
            Some(expected) => ct_eq(expected.as_bytes(), user.as_bytes()),
            None => true,
        };
        // Evaluate both checks so timing does not tell which one failed.
        let password_ok = any_matches(&secrets, password.as_bytes());
        if user_ok & password_ok {
            return Ok(());
        }
    }
    if presented {
        Err(VerifyError::Mismatch)
    } else {
        Err(VerifyError::Missing(missing_name))
    }
}

fn any_matches(secrets: &[&str], given: &[u8]) -> bool {
    secrets
        .iter()
        .fold(false, |ok, s| ok | ct_eq(s.as_bytes(), given))
}

/// `Basic base64(user:password)` → (user, password).
pub(crate) fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = super::signature::b64_decode(token)?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testdata::{ctx_at, headers, hook};
    use crate::providers::ProviderSettings;

    fn settings() -> ProviderSettings {
        ProviderSettings {
            secrets: vec!["old-secret".into(), "test-pass".into()],
            basic_auth_user: Some("sidecar".into()),
            auth_header: Some("X-Outcome-Secret".into()),
            ..Default::default()
        }
    }

    #[test]
    fn basic_auth_and_header_both_work() {
        let s = settings();
        let h = headers(&[("Authorization", "Basic c2lkZWNhcjp0ZXN0LXBhc3M=")]);
        assert_eq!(verify(&hook(&h, b"{}"), &ctx_at(&s, 0), None, "x"), Ok(()));
        let h = headers(&[("X-Outcome-Secret", "old-secret")]);
        assert_eq!(verify(&hook(&h, b"{}"), &ctx_at(&s, 0), None, "x"), Ok(()));
    }

    #[test]
    fn wrong_user_password_or_header_is_a_mismatch() {
        let s = settings();
        // other:test-pass
        let h = headers(&[("Authorization", "Basic b3RoZXI6dGVzdC1wYXNz")]);
        assert_eq!(
            verify(&hook(&h, b"{}"), &ctx_at(&s, 0), None, "x"),
            Err(VerifyError::Mismatch)
        );
        let h = headers(&[("X-Outcome-Secret", "guess")]);
        assert_eq!(
            verify(&hook(&h, b"{}"), &ctx_at(&s, 0), None, "x"),
            Err(VerifyError::Mismatch)
        );
        let h = headers(&[("Authorization", "Bearer abc")]);
        assert!(matches!(
            verify(&hook(&h, b"{}"), &ctx_at(&s, 0), None, "x"),
            Err(VerifyError::Malformed(_))
        ));
        let h = headers(&[]);
        assert_eq!(
            verify(&hook(&h, b"{}"), &ctx_at(&s, 0), None, "x"),
            Err(VerifyError::Missing("x"))
        );
        assert_eq!(
            verify(
                &hook(&h, b"{}"),
                &ctx_at(&ProviderSettings::default(), 0),
                None,
                "x"
            ),
            Err(VerifyError::NoSecret)
        );
    }

    #[test]
    fn basic_parser_rejects_junk() {
        for junk in ["", "Basic", "Basic !!!", "Basic Zm9v", "Digest abc"] {
            assert!(basic_credentials(junk).is_none(), "{junk}");
        }
        assert_eq!(
            basic_credentials("basic dTpwOnE="),
            Some(("u".into(), "p:q".into()))
        );
    }
}
