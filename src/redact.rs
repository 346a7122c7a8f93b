//! Credentials never leave the process: not in command output, logs, error
//! messages or HTTP answers. Two tools: [`url`] hides the credentials a URL
//! carries (user-info and password-like query parameters), and [`Redactor`]
//! replaces every configured secret value (Stripe key, webhook secrets, the
//! database password) wherever it appears in a text, as a last line of defence
//! for anything that formats an error or a log line.

use crate::settings::Settings;

/// What a hidden value is replaced with.
pub const MASK: &str = "***";

/// Query parameters whose value is a credential (compared case-insensitively;
/// a parameter matches when its name contains one of these).
const SECRET_PARAMS: [&str; 6] = ["pass", "pwd", "secret", "token", "key", "auth"];

/// A URL cut where its credentials are: `scheme://`, the user-info (up to the
/// `@` before the host), and what follows (host, path, query).
struct UrlParts<'a> {
    scheme: &'a str,
    user: Option<&'a str>,
    password: Option<&'a str>,
    rest: &'a str,
}

/// Characters a host, a port or a bracketed IPv6 address is written with.
fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ".-_:[]%".contains(c)
}

/// Split off the user-info. A password may hold unencoded `/`, `?` or `@`, so
/// the user-info ends at the last `@` that is followed by something shaped like
/// a host (an `@` inside the query, as in `?user=a@b.com&x=1`, is not).
fn parts(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, after) = url.split_once("://")?;
    let at = after.match_indices('@').rev().map(|(i, _)| i).find(|&i| {
        let host = after[i + 1..]
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default();
        !host.is_empty() && host.chars().all(is_host_char)
    });
    Some(match at {
        Some(i) => {
            let info = &after[..i];
            let (user, password) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            UrlParts {
                scheme,
                user: Some(user),
                password,
                rest: &after[i + 1..],
            }
        }
        None => UrlParts {
            scheme,
            user: None,
            password: None,
            rest: after,
        },
    })
}

/// `scheme://user:password@host/db?password=x&sslmode=require` →
/// `scheme://user:***@host/db?password=***&sslmode=require`.
pub fn url(url: &str) -> String {
    let Some(p) = parts(url) else {
        return mask_query(url);
    };
    let info = match (p.user, p.password) {
        (Some(user), Some(_)) => format!("{user}:{MASK}@"),
        (Some(user), None) => format!("{user}@"),
        (None, _) => String::new(),
    };
    format!("{}://{info}{}", p.scheme, mask_query(p.rest))
}

/// Mask the values of password-like parameters in the query of `rest`.
fn mask_query(rest: &str) -> String {
    let Some((before, query)) = rest.split_once('?') else {
        return rest.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_param(k) => format!("{k}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{before}?{}", params.join("&"))
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|p| name.contains(p))
}

/// The credentials a URL carries: its user-info password and the values of
/// password-like query parameters.
fn url_secrets(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let rest = match parts(url) {
        Some(p) => {
            found.extend(p.password.map(str::to_string));
            p.rest
        }
        None => url,
    };
    if let Some((_, query)) = rest.split_once('?') {
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                if is_secret_param(k) {
                    found.push(v.to_string());
                }
            }
        }
    }
    found
}

/// Replaces every known secret value in a text with [`MASK`].
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is hidden whole.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

/// Values shorter than this are not scrubbed from free text: they would mask
/// ordinary words (a database password `test` or `postgres` would hide the
/// database name). Signing secrets are refused below 8 characters at load, and
/// URLs are masked by their structure ([`url`]) whatever the password's length.
const MIN_SCRUBBED: usize = 8;

impl Redactor {
    pub fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = values
            .into_iter()
            .flat_map(|v| {
                // A percent-encoded value appears decoded in some messages.
                let decoded = percent_decode(&v);
                [v, decoded]
            })
            .filter(|v| v.trim().len() >= MIN_SCRUBBED)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// Every secret the settings hold.
    pub fn from_settings(s: &Settings) -> Redactor {
        let mut values = vec![
            s.stripe.api_key.clone(),
            s.stripe.webhook_secret.clone(),
            s.metronome.api_token.clone(),
        ];
        values.extend(url_secrets(&s.database.url));
        for t in &s.tenants {
            for p in t.providers.values() {
                values.extend(p.secrets.iter().cloned());
            }
        }
        Redactor::new(values)
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parser's error message without the source lines it quotes (`2 | key =
/// value` and the caret line under it): the position and the reason stay.
pub fn without_source_lines(message: &str) -> String {
    message
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            let numbered = t
                .split_once('|')
                .is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()));
            !numbered && !t.starts_with('|')
        })
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The value a type error quotes (`invalid type: integer `98765432123`,
/// expected a sequence`), whatever its kind, hidden; the key path stays.
pub fn unexpected_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = ["invalid type: ", "invalid value: "]
        .iter()
        .filter_map(|m| rest.find(m).map(|i| i + m.len()))
        .min()
    {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(", expected").unwrap_or(rest.len());
        let (what, tail) = rest.split_at(end);
        match (what.find('`'), what.rfind('`')) {
            (Some(a), Some(b)) if b > a => {
                out.push_str(&what[..=a]);
                out.push_str(MASK);
                out.push_str(&what[b..]);
            }
            _ => out.push_str(what),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Double-quoted values in a configuration error (`invalid type: string
/// "sk_live_…", expected …`) hidden: the loader failed, so which of them are
/// secrets is not known.
pub fn quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find('"') {
        out.push_str(&rest[..=start]);
        match rest[start + 1..].find('"') {
            Some(end) => {
                out.push_str(MASK);
                out.push('"');
                rest = &rest[start + 1 + end + 1..];
            }
            None => {
                out.push_str(MASK);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hides_user_info_password_and_password_like_parameters() {
        assert_eq!(
            url("postgres://om:hunter2@db:5432/om?sslmode=require&password=p4ss&sslpassword=x"),
            "postgres://om:***@db:5432/om?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(
            url("postgres://host/db?user=om&password=secret"),
            "postgres://host/db?user=om&password=***"
        );
        assert_eq!(url("sqlite://data/om.db"), "sqlite://data/om.db");
        assert_eq!(url("postgres://om@db/om"), "postgres://om@db/om");
        assert_eq!(
            url("postgres://a:b@c@host/db"),
            "postgres://a:***@host/db",
            "the last @ ends the user-info"
        );
        assert_eq!(
            url("postgres://om:PL/AN?TED@db:5432/om?sslmode=require"),
            "postgres://om:***@db:5432/om?sslmode=require",
            "a password with / and ?"
        );
        assert_eq!(
            url("postgres://db/om?user=a@b.com&password=x"),
            "postgres://db/om?user=a@b.com&password=***",
            "an @ in the query is not user-info"
        );
        assert_eq!(
            url_secrets("postgres://om:PL/AN?TED@db:5432/om?password=q1"),
            vec!["PL/AN?TED".to_string(), "q1".to_string()]
        );
    }

    #[test]
    fn redactor_scrubs_every_known_value_and_its_decoded_form() {
        let r = Redactor::new([
            "sk_test_abcdef".to_string(),
            "p%40ss-word".to_string(),
            "".to_string(),
            "test".to_string(),
        ]);
        assert_eq!(
            r.scrub("key sk_test_abcdef and p@ss-word and p%40ss-word; database test stays"),
            "key *** and *** and ***; database test stays"
        );
    }

    #[test]
    fn settings_secrets_are_collected() {
        let mut s = Settings::default();
        s.stripe.api_key = "sk_live_planted".into();
        s.metronome.api_token = "mtr_token_planted".into();
        s.database.url = "postgres://om:dbpass-one@h/db?password=qpass-two".into();
        s.tenants = vec![crate::settings::TenantSettings::generic(
            "t",
            "cus_1",
            "hook-secret-1",
        )];
        s.stripe.webhook_secret = "whsec_planted_destination".into();
        let r = Redactor::from_settings(&s);
        let text = "sk_live_planted dbpass-one qpass-two hook-secret-1 whsec_planted_destination mtr_token_planted";
        assert_eq!(r.scrub(text), "*** *** *** *** *** ***");
    }

    #[test]
    fn parse_errors_lose_their_source_lines() {
        let msg = "TOML parse error at line 2, column 11\n  |\n2 | api_key = sk_live_X\n  |           ^\ninvalid string\nexpected `\"`, `'`\n";
        let out = without_source_lines(msg);
        assert!(!out.contains("sk_live_X"), "{out}");
        assert!(out.contains("line 2, column 11"), "{out}");
        assert!(out.contains("invalid string"), "{out}");
    }

    #[test]
    fn numbers_and_booleans_in_type_errors_are_hidden() {
        let msg = "invalid type: integer `98765432123`, expected a sequence for key `tenants[0].providers.generic.secrets`";
        assert_eq!(
            unexpected_values(msg),
            "invalid type: integer `***`, expected a sequence for key `tenants[0].providers.generic.secrets`"
        );
        assert_eq!(
            unexpected_values("no type error here `x`"),
            "no type error here `x`"
        );
    }

    #[test]
    fn quoted_values_are_hidden_in_config_errors() {
        assert_eq!(
            quoted_values(r#"invalid type: string "sk_live_x", expected a sequence for key `a.b`"#),
            r#"invalid type: string "***", expected a sequence for key `a.b`"#
        );
        assert_eq!(quoted_values(r#"open "unterminated"#), r#"open "***"#);
    }
}
