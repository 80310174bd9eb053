//! What the generated OpenVidu Meet REST client stands on (feature `client`): a deployment's
//! [`Settings`] (base URL, API key, timeout) and [`execute`], through which every call goes:
//! the key on every request, and a `429` or `503` tried again after its `Retry-After`, within a
//! bound.
//!
//! The generated `client::Client::from_settings(&settings)` is the client a handler holds;
//! [`download`] saves a recording's media through it, resuming where an earlier attempt stopped.

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
    /// Certificate authorities trusted besides the system's.
    roots: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings").field("url", &self.url).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// Why [`Settings`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{url:?} is not an http(s) URL")]
    Url { url: String },
    #[error("the API key is not a valid header value (it holds a control character)")]
    Key,
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
    #[error("not a PEM certificate: {0}")]
    Certificate(String),
}

impl Settings {
    /// The Meet API at `url` (`https://meet.example.com/meet/api/v1`), called with `api_key`.
    pub fn new(url: &str, api_key: &str) -> Result<Self, SettingsError> {
        let mut key = HeaderValue::from_str(api_key).map_err(|_| SettingsError::Key)?;
        key.set_sensitive(true);
        Self::build(url, key, TIMEOUT, Vec::new())
    }

    /// The same, each call given at most `timeout` ([`TIMEOUT`] by default).
    pub fn timeout(self, timeout: Duration) -> Result<Self, SettingsError> {
        Self::build(&self.url, self.key, timeout, self.roots)
    }

    /// The same, trusting the certificate authority in `pem` besides the system's (a
    /// deployment behind a private CA). https is verified either way.
    pub fn root_certificate(mut self, pem: &[u8]) -> Result<Self, SettingsError> {
        let root = reqwest::Certificate::from_pem(pem).map_err(|e| SettingsError::Certificate(e.to_string()))?;
        self.roots.push(root);
        Self::build(&self.url, self.key, self.timeout, self.roots)
    }

    fn build(
        url: &str,
        key: HeaderValue,
        timeout: Duration,
        roots: Vec<reqwest::Certificate>,
    ) -> Result<Self, SettingsError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| SettingsError::Url { url: url.to_owned() })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SettingsError::Url { url: url.to_owned() });
        }
        let mut headers = HeaderMap::new();
        headers.insert(API_KEY_HEADER, key.clone());
        let mut http = reqwest::Client::builder();
        for root in &roots {
            http = http.add_root_certificate(root.clone());
        }
        let http = http
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| SettingsError::Http(e.to_string()))?;
        Ok(Self { url: url.trim_end_matches('/').to_owned(), key, http, timeout, roots })
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

/// What [`download`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downloaded {
    /// The file was there already (a run after one that completed): nothing was asked for.
    AlreadyThere,
    /// The media is in place: this many bytes, of which `resumed_at` were kept from an earlier
    /// attempt.
    Complete { bytes: u64, resumed_at: u64 },
}

/// Why a download did not complete. What arrived is kept beside the file (`<file>.partial`)
/// and the next attempt asks only for the rest.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("the Meet API did not serve the media: {0}")]
    Api(ApiError),
    #[error("the media broke off after {got} bytes ({problem}): the next attempt asks for the rest")]
    BrokenOff { got: u64, problem: String },
    #[error("{}: {source}", path.display())]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("the media ended after {got} of {expected} bytes: the next attempt asks for the rest")]
    Short { got: u64, expected: u64 },
    #[error(
        "the Meet API answered a request for bytes from {asked} with {answer:?}: what was kept is dropped, the next \
         attempt starts the file again"
    )]
    Range { asked: u64, answer: String },
}

/// Saves media to `path`, streamed (memory flat whatever its size) into `<path>.partial` and
/// renamed into place only once it holds every byte the answer announced (`Content-Length`, or
/// the total of `Content-Range`). `fetch(range)` makes the call, e.g.
/// `|range| client.get_recording_media().recording_id(&id).range(range).send()`; `range` is
/// `bytes=<n>-`, `n` the bytes kept from an earlier attempt (0 at first; an error of the call
/// names it `getRecordingMedia`), and an answer that
/// ignores it (`200`) starts the file again. A `path` that exists is left alone: a handler's second run
/// after a success does nothing.
pub async fn download<E, F, Fut>(path: &std::path::Path, mut fetch: F) -> Result<Downloaded, DownloadError>
where
    E: serde::Serialize,
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<
            Output = Result<
                progenitor_client::ResponseValue<progenitor_client::ByteStream>,
                progenitor_client::Error<E>,
            >,
        >,
{
    use futures_core::Stream;
    use tokio::io::AsyncWriteExt;

    if tokio::fs::try_exists(path).await.map_err(|source| io(path, source))? {
        return Ok(Downloaded::AlreadyThere);
    }
    let mut partial_name = path.as_os_str().to_owned();
    partial_name.push(".partial");
    let partial = std::path::PathBuf::from(partial_name);
    let kept = match tokio::fs::metadata(&partial).await {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(source) => return Err(io(&partial, source)),
    };
    let response = match fetch(format!("bytes={kept}-")).await {
        Ok(response) => response,
        // What is kept is more than the media: it changed.
        Err(progenitor_client::Error::ErrorResponse(answer))
            if kept > 0 && answer.status() == StatusCode::RANGE_NOT_SATISFIABLE =>
        {
            return Err(start_over(&partial, kept, "416 Range Not Satisfiable").await);
        }
        Err(e) => return Err(DownloadError::Api(ApiError::new("getRecordingMedia", e))),
    };
    let (from, total) = match response.status() {
        StatusCode::PARTIAL_CONTENT => {
            let range = response.headers().get(reqwest::header::CONTENT_RANGE).and_then(|v| v.to_str().ok());
            match range.and_then(content_range) {
                Some((start, total)) if start == kept => (kept, total),
                // Not the rest of what is kept: asking again would get the same.
                _ => return Err(start_over(&partial, kept, range.unwrap_or("no Content-Range")).await),
            }
        }
        _ => {
            let length =
                response.headers().get(reqwest::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
            (0, length)
        }
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(from > 0)
        .truncate(from == 0)
        .open(&partial)
        .await
        .map_err(|source| io(&partial, source))?;
    let mut got = from;
    let mut stream = response.into_inner_stream();
    while let Some(chunk) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                file.flush().await.map_err(|source| io(&partial, source))?;
                return Err(DownloadError::BrokenOff { got, problem: without_url(e) });
            }
        };
        file.write_all(&chunk).await.map_err(|source| io(&partial, source))?;
        got += chunk.len() as u64;
    }
    file.sync_all().await.map_err(|source| io(&partial, source))?;
    drop(file);
    if let Some(expected) = total
        && got != expected
    {
        return Err(DownloadError::Short { got, expected });
    }
    tokio::fs::rename(&partial, path).await.map_err(|source| io(path, source))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename itself survives a crash only once the directory is synced.
        let dir = tokio::fs::File::open(dir).await.map_err(|source| io(dir, source))?;
        dir.sync_all().await.map_err(|source| io(path, source))?;
    }
    Ok(Downloaded::Complete { bytes: got, resumed_at: from })
}

/// Drops what an earlier attempt kept, which the API's answer to `bytes=<kept>-` does not
/// continue, so that the next attempt asks for the whole media.
async fn start_over(partial: &std::path::Path, kept: u64, answer: &str) -> DownloadError {
    match tokio::fs::remove_file(partial).await {
        Ok(()) => DownloadError::Range { asked: kept, answer: answer.to_owned() },
        Err(source) => io(partial, source),
    }
}

fn io(path: &std::path::Path, source: std::io::Error) -> DownloadError {
    DownloadError::Io { path: path.to_owned(), source }
}

/// `bytes <start>-<end>/<total>` → `(start, Some(total))` (`*` for the total: `None`).
fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_content_range_gives_where_it_starts_and_the_whole_length() {
        assert_eq!(super::content_range("bytes 100-199/1000"), Some((100, Some(1000))));
        assert_eq!(super::content_range("bytes 0-9/*"), Some((0, None)));
        assert_eq!(super::content_range("items 0-9/10"), None);
    }
}

/// A Meet API call that did not succeed, as a handler reports it: the operation, the status,
/// and the API's error body (`error`, `message`) in one line, never the key. The generated
/// builders' `call()` gives it (their `send()` gives progenitor's own error).
#[derive(Debug)]
pub struct ApiError {
    operation: &'static str,
    status: Option<StatusCode>,
    body: Option<serde_json::Value>,
    problem: String,
}

impl ApiError {
    /// `error`, from a call of `operation`.
    pub fn new<E: serde::Serialize>(operation: &'static str, error: progenitor_client::Error<E>) -> Self {
        use progenitor_client::Error;
        let (status, body, problem) = match error {
            Error::ErrorResponse(answer) => {
                let status = answer.status();
                let body = serde_json::to_value(answer.into_inner()).ok();
                (Some(status), body, String::new())
            }
            Error::UnexpectedResponse(response) => {
                (Some(response.status()), None, "an answer the spec does not describe".to_owned())
            }
            Error::InvalidResponsePayload(_, e) => (None, None, format!("the answer does not fit the spec: {e}")),
            Error::CommunicationError(e) | Error::ResponseBodyError(e) | Error::InvalidUpgrade(e) => {
                (e.status(), None, without_url(e))
            }
            Error::InvalidRequest(e) | Error::Custom(e) => (None, None, e),
        };
        Self { operation, status, body, problem }
    }

    /// The operationId of the call.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The answer's status, when there was one (`404`: gone already, for a delete).
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// The API's error body (the spec's `Error`: `error`, `message`, `details`), when it sent one.
    pub fn body(&self) -> Option<&serde_json::Value> {
        self.body.as_ref()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "meet api {}", self.operation)?;
        if let Some(status) = self.status {
            write!(f, ": {status}")?;
        }
        match self.body.as_ref().and_then(|b| b.get("message")).and_then(serde_json::Value::as_str) {
            Some(message) => {
                write!(f, ": {message}")?;
                if let Some(error) = self.body.as_ref().and_then(|b| b.get("error")).and_then(serde_json::Value::as_str)
                {
                    write!(f, " ({error})")?;
                }
            }
            None => {
                if let Some(body) = &self.body {
                    write!(f, ": {body}")?;
                }
            }
        }
        if !self.problem.is_empty() {
            write!(f, ": {}", self.problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// reqwest's error and its causes, without the URL (which can carry a recording's secret).
fn without_url(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
