//! The HTTP client the CLI uses to talk to the admin API (reqwest, already the delivery
//! client). It returns the server's JSON as is, so `--json` prints exactly what the API
//! said, and tables are built from the same [`super::views`] types the server writes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::de::DeserializeOwned;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL given with `--admin` is not a URL.
    #[error("admin URL {url:?}: {message}")]
    Url {
        /// What was given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The admin API could not be reached.
    #[error("cannot reach the admin API at {url}: {message} (is hookrouter running, and is server.admin_listen right?)")]
    Unreachable {
        /// The URL called.
        url: String,
        /// What reqwest said.
        message: String,
    },
    /// The API answered with an error.
    #[error("{status}: {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The `error` code.
        code: String,
        /// The `message`.
        message: String,
    },
    /// The answer was not what the CLI expected.
    #[error("unexpected answer from the admin API: {0}")]
    Decode(String),
}

/// The admin base URL for a listen address: an unspecified address (0.0.0.0, ::) is
/// reached on loopback.
pub fn base_url_for(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// A connection to one admin API.
pub struct AdminClient {
    base: reqwest::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the API at `base` (`http://127.0.0.1:9090`), sending `token` as a bearer
    /// token when given.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let bad = |message: String| ClientError::Url {
            url: base.to_string(),
            message,
        };
        let base = reqwest::Url::parse(base).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("expected http:// or https://".into()));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(AdminClient { base, token, http })
    }

    /// Calls `method path` and returns the JSON answer, or the API's error.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<serde_json::Value, ClientError> {
        self.call_with(method, path, None).await
    }

    /// Like [`AdminClient::call`], sending `body` (a candidate config for the shadow test).
    pub async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> Result<serde_json::Value, ClientError> {
        let url = self.base.join(path).map_err(|e| ClientError::Url {
            url: path.to_string(),
            message: e.to_string(),
        })?;
        // The API refuses a state change without it (a cross-site form cannot send it).
        let changes = !matches!(method, reqwest::Method::GET | reqwest::Method::HEAD);
        let mut request = self.http.request(method, url.clone());
        if changes {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.body(b);
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: url.to_string(),
            message: e.to_string(),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ClientError::Decode(format!("{e}: {}", super::table::clip(&text, 200))))?;
        if !status.is_success() {
            let field = |k: &str| {
                value
                    .get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: field("error"),
                message: field("message"),
            });
        }
        Ok(value)
    }

    /// Calls `method path` and decodes the answer as `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<T, ClientError> {
        let value = self.call(method, path).await?;
        serde_json::from_value(value).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// Percent-encodes a query value.
pub fn encode_query(value: &str) -> String {
    reqwest::Url::parse_with_params("http://admin/", &[("v", value)])
        .ok()
        .and_then(|u| u.query().map(|q| q.trim_start_matches("v=").to_string()))
        .unwrap_or_default()
}
