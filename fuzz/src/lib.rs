//! Shared harness of the outcome-meter fuzz targets (see `fuzz/README.md`).
//!
//! Request input (`parse_*`, and `verify_signatures` after its two leading
//! bytes) is HTTP-like: `name: value` header lines, a blank line (`\n\n`), the
//! body. Input with no blank line is all body, so a bare JSON payload is a
//! seed as it is. Header names starting with `@` steer the harness instead of
//! becoming headers: `@now` (Unix seconds), `@tolerance` (seconds), `@method`,
//! `@path`.

use outcome_meter::providers::signature::{b64, b64_decode, hmac_sha1, hmac_sha256};
use outcome_meter::providers::{
    self, generic, hubspot, unix_seconds, Headers, ProviderSettings, VerifyContext, Webhook,
};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

/// `@now` when the input gives none: 2026-01-01T00:00:00Z.
const DEFAULT_NOW: i64 = 1_767_225_600;
const DEFAULT_TOLERANCE: u64 = 300;
/// The secret `verify_signatures` signs with when asked to (flag [`RESIGN`]).
const SECRET: &str = "fuzz-secret";
/// `verify_signatures` flag bit: replace the signature with a valid one.
const RESIGN: u8 = 1;

/// One request decoded from fuzz input.
pub struct Request<'a> {
    pub headers: Headers,
    pub body: &'a [u8],
    pub method: String,
    pub path: String,
    pub now: i64,
    pub tolerance: u64,
}

impl<'a> Request<'a> {
    pub fn decode(data: &'a [u8]) -> Self {
        let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (&data[..0], data),
        };
        let mut r = Request {
            headers: Headers::new(),
            body,
            method: "POST".into(),
            path: "/".into(),
            now: DEFAULT_NOW,
            tolerance: DEFAULT_TOLERANCE,
        };
        for line in String::from_utf8_lossy(head).lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "@now" => r.now = value.parse().unwrap_or(DEFAULT_NOW),
                "@tolerance" => r.tolerance = value.parse().unwrap_or(DEFAULT_TOLERANCE),
                "@method" => r.method = value.into(),
                "@path" => r.path = value.into(),
                _ => {
                    r.headers.insert(name, value.into());
                }
            }
        }
        r
    }

    pub fn hook(&self) -> Webhook<'_> {
        Webhook {
            method: &self.method,
            path_and_query: &self.path,
            headers: &self.headers,
            body: self.body,
        }
    }
}

/// With `OUTCOME_METER_FUZZ_DEBUG` set, print what each input did (for
/// `cargo fuzz run <target> <file>`).
fn debug(what: std::fmt::Arguments<'_>) {
    static ON: LazyLock<bool> =
        LazyLock::new(|| std::env::var_os("OUTCOME_METER_FUZZ_DEBUG").is_some());
    if *ON {
        eprintln!("{what}");
    }
}

/// Settings that make every AI/human, closed/open branch of the parsers reachable.
static PARSE_SETTINGS: LazyLock<ProviderSettings> = LazyLock::new(|| ProviderSettings {
    secrets: vec![SECRET.into()],
    ai_agent_ids: vec!["1".into(), "ai-agent".into(), "fin".into()],
    ai_tags: vec!["ai_resolved".into(), "ai".into()],
    ai_channels: vec!["chat".into(), "email".into()],
    closed_stage_ids: vec!["4".into(), "closed".into()],
    open_stage_ids: vec!["1".into(), "2".into()],
    ..Default::default()
});

/// `parse_<provider>`: delivery key, challenge and parse must not panic and must
/// be deterministic (the delivery key is the dedupe key).
pub fn fuzz_parse(provider: &str, data: &[u8]) {
    let p = providers::lookup(provider).expect("a known provider");
    let req = Request::decode(data);
    let hook = req.hook();
    let key = p.delivery_key(&hook);
    assert_eq!(
        key,
        p.delivery_key(&hook),
        "delivery_key is not deterministic"
    );
    let _ = p.challenge(&hook);
    for s in [&*PARSE_SETTINGS, &ProviderSettings::default()] {
        let events = p.parse(&hook, s);
        debug(format_args!("{provider} key {key:?} parse {events:?}"));
        assert_eq!(events, p.parse(&hook, s), "parse is not deterministic");
    }
}

/// `verify_signatures` settings, chosen by flag bits 1-2: bare; with every optional
/// auth setting (auth header, Basic user, HubSpot URL, Zoho issuer/audience);
/// Zoho by a JWKS URL that is never fetched.
fn verify_settings(flags: u8) -> ProviderSettings {
    let mut s = ProviderSettings {
        secrets: vec!["fuzz-old-secret".into(), SECRET.into()],
        jwks_file: Some(
            ZOHO.as_ref()
                .map_or("/nonexistent/jwks.json".into(), |z| z.jwks_file.clone()),
        ),
        ..Default::default()
    };
    if flags & 2 != 0 {
        s.auth_header = Some("X-Outcome-Secret".into());
        s.basic_auth_user = Some("sidecar".into());
        s.webhook_url = Some("https://sidecar.example.com/webhooks/hubspot".into());
        s.issuer = Some("orgId:54983163".into());
        s.audience = Some("webhookId:31138000012345678".into());
    }
    if flags & 4 != 0 {
        s.jwks_file = None;
        s.jwks_url = Some("https://keys.invalid/jwks.json".into());
    }
    s
}

static VERIFY_SETTINGS: LazyLock<Vec<ProviderSettings>> =
    LazyLock::new(|| (0..4).map(|i| verify_settings(i << 1)).collect());

/// `verify_signatures`: byte 0 picks the provider, byte 1 holds flags
/// ([`RESIGN`], settings variant in bits 1-2), the rest is a request.
pub fn fuzz_verify(data: &[u8]) {
    let [selector, flags, rest @ ..] = data else {
        return;
    };
    let all = providers::all();
    let p = all[usize::from(*selector) % all.len()];
    let settings = &VERIFY_SETTINGS[usize::from((flags >> 1) & 3)];
    let mut req = Request::decode(rest);
    if flags & RESIGN != 0 {
        resign(p.name(), &mut req, settings);
    }
    let ctx = VerifyContext {
        settings,
        now: unix_seconds(req.now)
            .or_else(|| unix_seconds(DEFAULT_NOW))
            .expect("time"),
        tolerance: Duration::from_secs(req.tolerance),
    };
    let hook = req.hook();
    let verdict = p.verify(&hook, &ctx);
    debug(format_args!(
        "{} flags {flags:#04x} verify {verdict:?}",
        p.name()
    ));
    let _ = p.challenge(&hook);
    let none = ProviderSettings::default();
    let unconfigured = VerifyContext {
        settings: &none,
        ..ctx
    };
    assert!(
        p.verify(&hook, &unconfigured).is_err(),
        "verified with nothing configured"
    );
}

/// Put a valid signature for [`SECRET`] over the fuzzed body and timestamp header,
/// so the checks after the MAC (timestamp tolerance, JWT claims) are fuzzed too.
fn resign(provider: &str, req: &mut Request<'_>, s: &ProviderSettings) {
    let key = SECRET.as_bytes();
    let body = req.body;
    let header = |name: &str| req.headers.get(name).cloned();
    let (name, value) = match provider {
        "generic" => {
            let sig = header(generic::SIGNATURE_HEADER);
            let t = sig.as_deref().and_then(|v| {
                v.split(',')
                    .find_map(|p| p.trim().strip_prefix("t=")?.parse::<i64>().ok())
            });
            let value = match (sig, t) {
                (Some(sig), Some(t)) => {
                    let mac = hmac_sha256(key, &[t.to_string().as_bytes(), b".", body]);
                    format!("{sig},v1={}", hex(&mac))
                }
                _ => generic::sign(SECRET, req.now, body),
            };
            (generic::SIGNATURE_HEADER, value)
        }
        "zendesk" => {
            use providers::zendesk::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
            let ts = header(TIMESTAMP_HEADER).unwrap_or_else(|| req.now.to_string());
            req.headers.insert(TIMESTAMP_HEADER.into(), ts.clone());
            (
                SIGNATURE_HEADER,
                b64(&hmac_sha256(key, &[ts.as_bytes(), body])),
            )
        }
        "intercom" => (
            providers::intercom::SIGNATURE_HEADER,
            format!("sha1={}", hex(&hmac_sha1(key, &[body]))),
        ),
        "helpscout" => (
            providers::helpscout::SIGNATURE_HEADER,
            b64(&hmac_sha1(key, &[body])),
        ),
        "front" => {
            use providers::front::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
            let mac = match header(TIMESTAMP_HEADER) {
                Some(ts) => hmac_sha256(key, &[ts.trim().as_bytes(), b":", body]),
                None => hmac_sha1(key, &[body]),
            };
            (SIGNATURE_HEADER, b64(&mac))
        }
        "hubspot" => {
            use hubspot::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
            let ts = header(TIMESTAMP_HEADER)
                .unwrap_or_else(|| req.now.saturating_mul(1000).to_string());
            req.headers.insert(TIMESTAMP_HEADER.into(), ts.clone());
            let Some(uri) = hubspot_uri(req, s) else {
                return;
            };
            let parts: [&[u8]; 4] = [
                req.method.as_bytes(),
                uri.as_bytes(),
                body,
                ts.trim().as_bytes(),
            ];
            (SIGNATURE_HEADER, b64(&hmac_sha256(key, &parts)))
        }
        "freshdesk" | "gorgias" => {
            let user = s.basic_auth_user.as_deref().unwrap_or("fuzz");
            let secret_header =
                s.auth_header
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .or((provider == "gorgias")
                        .then(|| providers::gorgias::DEFAULT_AUTH_HEADER.into()));
            if let Some(h) = secret_header.filter(|h| req.headers.contains_key(h)) {
                req.headers.insert(h, SECRET.into());
                return;
            }
            (
                "authorization",
                format!("Basic {}", b64(format!("{user}:{SECRET}").as_bytes())),
            )
        }
        "zohodesk" => {
            use providers::zohodesk::JWT_HEADER;
            let Some(z) = ZOHO.as_ref() else { return };
            let claims = header(JWT_HEADER).unwrap_or_else(|| {
                let (iat, exp) = (req.now, req.now.saturating_add(300));
                format!(r#"{{"iss":"orgId:54983163","aud":"31138000012345678","iat":{iat},"exp":{exp}}}"#)
            });
            (JWT_HEADER, z.jwt(claims.as_bytes()))
        }
        _ => return,
    };
    req.headers.insert(name.into(), value);
}

/// The URI HubSpot signs, rebuilt as the provider does.
fn hubspot_uri(req: &Request<'_>, s: &ProviderSettings) -> Option<String> {
    if let Some(url) = s.webhook_url.as_deref().filter(|u| !u.trim().is_empty()) {
        return Some(hubspot::decode_uri(url.trim()));
    }
    let h = &req.headers;
    let host = h.get("x-forwarded-host").or_else(|| h.get("host"))?;
    let proto = h
        .get("x-forwarded-proto")
        .and_then(|p| p.split(',').next())
        .map_or("https", str::trim);
    Some(hubspot::decode_uri(&format!(
        "{proto}://{host}{}",
        req.path
    )))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn b64url(bytes: &[u8]) -> String {
    b64(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// The Zoho Desk reference test key (public JWKS written to a file, private key
/// to sign with), from `tests/fixtures/helpdesk/vectors.json`.
struct ZohoKey {
    jwks_file: String,
    kid: String,
    key: ring::signature::RsaKeyPair,
}

impl ZohoKey {
    fn jwt(&self, claims: &[u8]) -> String {
        let header = format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{}"}}"#, self.kid);
        let signing_input = format!("{}.{}", b64url(header.as_bytes()), b64url(claims));
        let mut sig = vec![0; self.key.public().modulus_len()];
        let rng = ring::rand::SystemRandom::new();
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &rng,
                signing_input.as_bytes(),
                &mut sig,
            )
            .expect("RSA signing");
        format!("{signing_input}.{}", b64url(&sig))
    }
}

/// The repository's own fixtures (`tests/fixtures/helpdesk`), or `$OUTCOME_METER_REFERENCE`.
pub fn reference_dir() -> PathBuf {
    std::env::var_os("OUTCOME_METER_REFERENCE").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/helpdesk"),
        PathBuf::from,
    )
}

static ZOHO: LazyLock<Option<ZohoKey>> = LazyLock::new(|| {
    let key = load_zoho_key();
    if key.is_none() {
        eprintln!(
            "outcome-meter-fuzz: no Zoho reference key; Zoho Desk is fuzzed without valid JWTs"
        );
    }
    key
});

fn load_zoho_key() -> Option<ZohoKey> {
    let text = std::fs::read(reference_dir().join("vectors.json")).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    let z = v["vectors"]
        .as_array()?
        .iter()
        .find(|x| x["vendor"] == "zohodesk")?;
    let pem = z["private_key_pem_for_tests_only"].as_str()?;
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let key = ring::signature::RsaKeyPair::from_pkcs8(&b64_decode(&der)?).ok()?;
    let kid = z["jwks"]["keys"][0]["kid"].as_str()?.to_string();
    // Written once per process, then renamed: concurrent fuzz jobs never read half a file.
    let dir = std::env::temp_dir();
    let tmp = dir.join(format!("outcome-meter-fuzz-jwks.{}", std::process::id()));
    let path = dir.join("outcome-meter-fuzz-jwks.json");
    std::fs::write(&tmp, z["jwks"].to_string()).ok()?;
    std::fs::rename(&tmp, &path).ok()?;
    Some(ZohoKey {
        jwks_file: path.display().to_string(),
        kid,
        key,
    })
}

/// `signature_headers`: the public header/time parsers on any string, and the
/// generic header's sign/parse round trip.
pub fn fuzz_header_parsers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(h) = generic::parse_signature_header(&text) {
        assert!(!h.v1.is_empty(), "a parsed Outcome-Signature has a v1");
    }
    let decoded = hubspot::decode_uri(&text);
    assert!(decoded.len() <= text.len(), "decode_uri grew its input");
    let _ = b64_decode(&text);
    let _ = providers::parse_time(&text);
    let _ = providers::freshdesk::parse_freshdesk_time(&text);
    let _ = providers::gorgias::parse_gorgias_time(&text);
    let _ = providers::freshdesk::is_resolved_status(&text);
    if let Some(n) = data
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_le_bytes)
    {
        let _ = providers::unix_seconds_or_millis(n);
        let body = &data[8..];
        let sig = generic::parse_signature_header(&generic::sign(SECRET, n, body))
            .expect("a header from sign() parses");
        assert_eq!(sig.timestamp, n);
        let t = n.to_string();
        assert_eq!(
            sig.v1,
            vec![hmac_sha256(SECRET.as_bytes(), &[t.as_bytes(), b".", body])]
        );
    }
}
