//! What the generated OpenVidu Meet REST client stands on (feature `client`): a deployment's
//! [`Settings`] (base URL, API key, timeout) and [`execute`], through which every call goes:
//! the key on every request, and a `429` or `503` tried again after its `Retry-After`, within a
//! bound.
//!
//! The generated `client::Client::from_settings(&settings)` is the client a handler holds.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

/// The header the Meet API reads its key from.
pub const API_KEY_HEADER: &str = "X-API-KEY";

/// How long a call may take unless [`Settings::timeout`] says otherwise.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts of one call, the first included, when the API answers `429` or `503`.
pub const ATTEMPTS: u32 = 3;

/// The longest `Retry-After` waited for; a longer one is answered as it came.
pub const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(10);

/// A deployment of the Meet API: where it is and the key it takes. Its `Debug` never shows
/// the key.
#[derive(Clone)]
pub struct Settings {
    url: String,
    /// Marked sensitive: left out of reqwest's `Debug` and of any log of the headers.
    key: HeaderValue,
    http: reqwest::Client,
    timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings").field("url", &self.url).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// Why [`Settings`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("--meet-url {url:?} is not an http(s) URL")]
    Url { url: String },
    #[error("--meet-api-key is not a valid header value (it holds a control character)")]
    Key,
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
}

impl Settings {
    /// The Meet API at `url` (`https://meet.example.com/meet/api/v1`), called with `api_key`.
    pub fn new(url: &str, api_key: &str) -> Result<Self, SettingsError> {
        let mut key = HeaderValue::from_str(api_key).map_err(|_| SettingsError::Key)?;
        key.set_sensitive(true);
        Self::build(url, key, TIMEOUT)
    }

    /// The same, each call given at most `timeout` ([`TIMEOUT`] by default).
    pub fn timeout(self, timeout: Duration) -> Result<Self, SettingsError> {
        Self::build(&self.url, self.key, timeout)
    }

    fn build(url: &str, key: HeaderValue, timeout: Duration) -> Result<Self, SettingsError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| SettingsError::Url { url: url.to_owned() })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SettingsError::Url { url: url.to_owned() });
        }
        let mut headers = HeaderMap::new();
        headers.insert(API_KEY_HEADER, key.clone());
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| SettingsError::Http(e.to_string()))?;
        Ok(Self { url: url.trim_end_matches('/').to_owned(), key, http, timeout })
    }

    /// The base URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The HTTP client, with the key on every request and the timeout.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// Sends one call of `operation`: a `429` or `503` whose `Retry-After` (seconds) is at most
/// [`LONGEST_RETRY_AFTER`] is sent again after it, up to [`ATTEMPTS`] in all; any other answer,
/// or a request whose body cannot be sent twice, is returned as it came.
pub async fn execute(
    settings: &Settings,
    request: reqwest::Request,
    operation: &str,
) -> reqwest::Result<reqwest::Response> {
    let mut request = request;
    let mut attempt = 1;
    loop {
        let again = if attempt < ATTEMPTS { request.try_clone() } else { None };
        let response = settings.http.execute(request).await?;
        let wait = retry_after(&response);
        match (again, wait) {
            (Some(next), Some(wait)) => {
                log::info!(
                    "meet api {operation}: {} (attempt {attempt} of {ATTEMPTS}): trying again in {} ms",
                    response.status(),
                    wait.as_millis()
                );
                drop(response);
                tokio::time::sleep(wait).await;
                request = next;
                attempt += 1;
            }
            _ => return Ok(response),
        }
    }
}

/// How long to wait before trying a `429`/`503` again: its `Retry-After` in seconds (1 s when
/// it has none), if within [`LONGEST_RETRY_AFTER`].
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    if !matches!(response.status(), StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        return None;
    }
    let wait = match response.headers().get(RETRY_AFTER) {
        None => Duration::from_secs(1),
        Some(value) => Duration::from_secs(value.to_str().ok()?.trim().parse().ok()?),
    };
    (wait <= LONGEST_RETRY_AFTER).then_some(wait)
}
