//! Issue 10.1: a signature made with an empty, blank or very short key is
//! refused by every provider that verifies with secrets, even when such a key
//! is configured beside a real one and `Settings::validate` was bypassed.
//! (Zoho Desk verifies RS256 JWTs with public keys and refuses every other
//! algorithm; its own tests cover that.)

use super::signature::{b64, hmac_sha1, hmac_sha256};
use super::*;

const REAL: &str = "real-signing-secret";
const WEAK: [&str; 4] = ["", " ", "\n", "abc12"];
const NOW: i64 = 1_767_225_600;
const BODY: &[u8] = br#"{"event_id":"e1","ticket_id":"T1","type":"resolved","occurred_at":"2026-01-01T00:00:00Z","resolver":"ai"}"#;

/// Headers for `provider`, signed (or authenticated) with `key`.
fn signed(provider: &str, key: &str) -> Headers {
    let k = key.as_bytes();
    let ts = NOW.to_string();
    let ms = (NOW * 1000).to_string();
    let pairs: Vec<(&str, String)> = match provider {
        "generic" => vec![("outcome-signature", generic::sign(key, NOW, BODY))],
        "zendesk" => vec![
            (
                "x-zendesk-webhook-signature",
                b64(&hmac_sha256(k, &[ts.as_bytes(), BODY])),
            ),
            ("x-zendesk-webhook-signature-timestamp", ts.clone()),
        ],
        "intercom" => vec![(
            "x-hub-signature",
            format!("sha1={}", hex::encode(hmac_sha1(k, &[BODY]))),
        )],
        "helpscout" => vec![
            ("x-helpscout-signature", b64(&hmac_sha1(k, &[BODY]))),
            ("x-helpscout-event", "convo.status".into()),
        ],
        "front" => vec![
            (
                "x-front-signature",
                b64(&hmac_sha256(k, &[ms.as_bytes(), b":", BODY])),
            ),
            ("x-front-request-timestamp", ms.clone()),
        ],
        "hubspot" => vec![
            (
                "x-hubspot-signature-v3",
                b64(&hmac_sha256(
                    k,
                    &[
                        b"POST",
                        b"https://h.example/webhooks/hubspot/acme",
                        BODY,
                        ms.as_bytes(),
                    ],
                )),
            ),
            ("x-hubspot-request-timestamp", ms.clone()),
            ("host", "h.example".into()),
            ("x-forwarded-proto", "https".into()),
        ],
        "freshdesk" => vec![(
            "authorization",
            format!("Basic {}", b64(format!("sidecar:{key}").as_bytes())),
        )],
        "gorgias" => vec![("x-api-key", key.to_string())],
        other => panic!("no signer for {other}"),
    };
    pairs.into_iter().map(|(n, v)| (n.to_string(), v)).collect()
}

fn verify(provider: &str, secrets: &[&str], headers: &Headers) -> Result<(), VerifyError> {
    let p = lookup(provider).expect("known provider");
    let settings = ProviderSettings {
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let hook = Webhook {
        method: "POST",
        path_and_query: "/webhooks/hubspot/acme",
        headers,
        body: BODY,
    };
    p.verify(&hook, &testdata::ctx_at(&settings, NOW))
}

const SIGNING: [&str; 8] = [
    "generic",
    "zendesk",
    "intercom",
    "helpscout",
    "front",
    "hubspot",
    "freshdesk",
    "gorgias",
];

#[test]
fn the_real_secret_still_verifies_beside_weak_ones() {
    for provider in SIGNING {
        let mut secrets = vec![REAL];
        secrets.extend(WEAK);
        assert_eq!(
            verify(provider, &secrets, &signed(provider, REAL)),
            Ok(()),
            "{provider}"
        );
    }
}

#[test]
fn a_signature_made_with_a_weak_key_is_refused_beside_a_real_one() {
    for provider in SIGNING {
        for weak in WEAK {
            let mut secrets = vec![REAL];
            secrets.extend(WEAK);
            let got = verify(provider, &secrets, &signed(provider, weak));
            assert!(got.is_err(), "{provider} accepted a key of {weak:?}");
        }
    }
}

#[test]
fn only_weak_secrets_configured_means_no_secret() {
    for provider in SIGNING {
        for weak in WEAK {
            assert_eq!(
                verify(provider, &WEAK, &signed(provider, weak)),
                Err(VerifyError::NoSecret),
                "{provider} with a key of {weak:?}"
            );
        }
    }
}

#[test]
fn settings_refuse_weak_secrets_without_repeating_them() {
    for provider in SIGNING {
        let p = lookup(provider).expect("known provider");
        for weak in WEAK {
            let s = ProviderSettings {
                secrets: vec![REAL.into(), weak.into()],
                closed_stage_ids: vec!["4".into()],
                ..Default::default()
            };
            let problems = p.check_settings(&s);
            assert_eq!(problems.len(), 1, "{provider} {weak:?}: {problems:?}");
            assert!(problems[0].starts_with("secrets[1] "), "{problems:?}");
            if !weak.trim().is_empty() {
                assert!(!problems[0].contains(weak), "{problems:?}");
            }
        }
        let padded = ProviderSettings {
            secrets: vec![format!("{REAL}\n")],
            closed_stage_ids: vec!["4".into()],
            ..Default::default()
        };
        assert!(p.check_settings(&padded)[0].contains("whitespace"));
    }
}
