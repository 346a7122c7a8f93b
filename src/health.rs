//! `outcome-meter health`: ask a running service on its admin listener whether
//! it is ready (`/readyz`) or alive (`/healthz`). For container health checks
//! and Kubernetes exec probes: the image has no curl, and the admin listener
//! stays on loopback.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("no admin listener configured (server.admin_listen is empty): pass --url")]
    NoAdminListener,
    #[error("server.admin_listen `{0}` is not an address")]
    BadAddress(String),
    #[error("{url} did not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}: {body}")]
    NotHealthy {
        url: String,
        status: u16,
        body: String,
    },
}

/// The URL of `path` on the admin listener `admin_listen`; a wildcard address
/// (`0.0.0.0`, `[::]`) is asked on loopback.
pub fn admin_url(admin_listen: &str, path: &str) -> Result<String, HealthError> {
    if admin_listen.is_empty() {
        return Err(HealthError::NoAdminListener);
    }
    let addr: std::net::SocketAddr = admin_listen
        .parse()
        .map_err(|_| HealthError::BadAddress(admin_listen.to_string()))?;
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    Ok(format!("http://{host}:{}{path}", addr.port()))
}

/// `Ok` when `url` answers 200 within `timeout`.
pub async fn probe(url: &str, timeout: Duration) -> Result<(), HealthError> {
    let unreachable = |reason: String| HealthError::Unreachable {
        url: url.to_string(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status().as_u16();
    if status == 200 {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(HealthError::NotHealthy {
        url: url.to_string(),
        status,
        body: body.chars().take(200).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_are_asked_on_loopback() {
        let url = |a: &str| admin_url(a, "/readyz").expect("url");
        assert_eq!(url("127.0.0.1:9090"), "http://127.0.0.1:9090/readyz");
        assert_eq!(url("0.0.0.0:9090"), "http://127.0.0.1:9090/readyz");
        assert_eq!(url("[::]:9090"), "http://[::1]:9090/readyz");
        assert_eq!(url("[::1]:9091"), "http://[::1]:9091/readyz");
        assert!(matches!(
            admin_url("", "/x"),
            Err(HealthError::NoAdminListener)
        ));
        assert!(matches!(
            admin_url("nope", "/x"),
            Err(HealthError::BadAddress(_))
        ));
    }
}
