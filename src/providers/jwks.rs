//! JSON Web Key Sets for providers that sign with RS256 (Zoho Desk), from a file
//! (read on first use, re-read every few minutes) or a URL (fetched in the
//! background by the receiver and cached; an unknown `kid` asks for an early
//! refresh). Verification itself never does network I/O.

use jsonwebtoken::jwk::JwkSet;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

/// How long a JWKS file is trusted before it is read again.
const FILE_TTL: Duration = Duration::from_secs(300);
/// How often URL key sets are fetched again.
pub const URL_REFRESH: Duration = Duration::from_secs(3600);
/// Never fetch more often than this, even when asked (unknown `kid`).
const MIN_REFETCH: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read JWKS file `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("`{source_name}` is not a JWKS document: {error}")]
    Parse {
        source_name: String,
        error: serde_json::Error,
    },
    #[error("cannot fetch JWKS `{url}`: {error}")]
    Fetch { url: String, error: String },
    #[error("JWKS `{0}` has not been fetched yet")]
    NotYetFetched(String),
}

struct Cached {
    set: Arc<JwkSet>,
    loaded: Instant,
}

static CACHE: LazyLock<RwLock<HashMap<String, Cached>>> = LazyLock::new(Default::default);
static REFRESH: LazyLock<tokio::sync::Notify> = LazyLock::new(tokio::sync::Notify::new);

fn get(key: &str, ttl: Option<Duration>) -> Option<Arc<JwkSet>> {
    let cache = CACHE.read().ok()?;
    let c = cache.get(key)?;
    match ttl {
        Some(ttl) if c.loaded.elapsed() > ttl => None,
        _ => Some(c.set.clone()),
    }
}

fn put(key: &str, set: JwkSet) -> Arc<JwkSet> {
    let set = Arc::new(set);
    if let Ok(mut cache) = CACHE.write() {
        cache.insert(
            key.to_string(),
            Cached {
                set: set.clone(),
                loaded: Instant::now(),
            },
        );
    }
    set
}

pub fn parse(source_name: &str, bytes: &[u8]) -> Result<JwkSet, JwksError> {
    serde_json::from_slice(bytes).map_err(|error| JwksError::Parse {
        source_name: source_name.to_string(),
        error,
    })
}

/// The key set in a file (cached for a few minutes).
pub fn from_file(path: &str) -> Result<Arc<JwkSet>, JwksError> {
    let key = format!("file:{path}");
    if let Some(set) = get(&key, Some(FILE_TTL)) {
        return Ok(set);
    }
    let bytes = std::fs::read(path).map_err(|source| JwksError::Read {
        path: path.to_string(),
        source,
    })?;
    Ok(put(&key, parse(path, &bytes)?))
}

/// The last fetched key set of a URL.
pub fn from_url(url: &str) -> Result<Arc<JwkSet>, JwksError> {
    get(&format!("url:{url}"), None).ok_or_else(|| JwksError::NotYetFetched(url.to_string()))
}

/// Ask the background refresher to fetch URL key sets now (rate-limited).
/// Key ids asked for and not in their URL's set, with when first asked.
static UNKNOWN_KIDS: LazyLock<RwLock<HashMap<(String, String), Instant>>> =
    LazyLock::new(Default::default);

/// At most this many unknown key ids are remembered (forged JWTs can name any).
const MAX_UNKNOWN_KIDS: usize = 1024;

/// A JWT names key `kid`, which the set fetched from `url` does not hold.
/// `true` while the set has not been fetched again since that key was first
/// asked for (the sender should retry: a refresh is requested); `false` once a
/// fresh set still lacks it (the key is not Zoho's: refuse).
pub fn unknown_kid_may_appear(url: &str, kid: &str) -> bool {
    let key = (url.to_string(), kid.to_string());
    let first_asked = match UNKNOWN_KIDS.read().ok().and_then(|m| m.get(&key).copied()) {
        Some(t) => t,
        None => {
            let Ok(mut m) = UNKNOWN_KIDS.write() else {
                return false;
            };
            if m.len() >= MAX_UNKNOWN_KIDS {
                return false;
            }
            let now = Instant::now();
            m.insert(key, now);
            request_refresh();
            return true;
        }
    };
    let loaded = CACHE
        .read()
        .ok()
        .and_then(|c| c.get(&format!("url:{url}")).map(|c| c.loaded));
    match loaded {
        Some(loaded) if loaded > first_asked => false,
        _ => {
            request_refresh();
            true
        }
    }
}

/// Put a set in the cache as if fetched from `url` now (tests).
#[cfg(test)]
pub(crate) fn fetched_for_test(url: &str, set: JwkSet) {
    put(&format!("url:{url}"), set);
}

pub fn request_refresh() {
    REFRESH.notify_one();
}

/// Fetch one URL's key set into the cache.
pub async fn fetch(client: &reqwest::Client, url: &str) -> Result<(), JwksError> {
    let fail = |error: String| JwksError::Fetch {
        url: url.to_string(),
        error,
    };
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    let bytes = resp.bytes().await.map_err(|e| fail(e.to_string()))?;
    put(&format!("url:{url}"), parse(url, &bytes)?);
    Ok(())
}

/// Keep every URL's key set fresh until `token` is cancelled: at once, then
/// every [`URL_REFRESH`], and early when verification meets an unknown key.
pub async fn run_refresher(
    client: reqwest::Client,
    urls: Vec<String>,
    token: tokio_util::sync::CancellationToken,
) {
    loop {
        for url in &urls {
            match fetch(&client, url).await {
                Ok(()) => tracing::debug!(%url, "JWKS refreshed"),
                Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the last keys"),
            }
        }
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(URL_REFRESH) => {}
            _ = REFRESH.notified() => {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(MIN_REFETCH) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sets_load_and_bad_ones_say_why() {
        let dir = tempfile::tempdir().expect("tmp");
        let good = dir.path().join("jwks.json");
        std::fs::write(
            &good,
            r#"{"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","use":"sig","n":"AQAB","e":"AQAB"}]}"#,
        )
        .expect("write");
        let set = from_file(&good.display().to_string()).expect("loads");
        assert!(set.find("k1").is_some());
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "nope").expect("write");
        assert!(matches!(
            from_file(&bad.display().to_string()),
            Err(JwksError::Parse { .. })
        ));
        assert!(matches!(
            from_file("/nonexistent/jwks.json"),
            Err(JwksError::Read { .. })
        ));
        assert!(matches!(
            from_url("https://keys.invalid/jwks.json"),
            Err(JwksError::NotYetFetched(_))
        ));
    }
}
