//! Signs and delivers OpenVidu Meet webhooks exactly as the provider does, whatever its spec:
//! the bytes its sender writes for a body ([`provider_bytes`]), `X-Timestamp: <ms>` and
//! `X-Signature: hex(HMAC-SHA256(key, "<X-Timestamp>.<body>"))`, posted to the one URL its admin
//! configured. For `meet-webhooks send`, tests and load tools.
//!
//! ```no_run
//! # async fn run() -> Result<(), meet_webhooks_sender::SendError> {
//! use meet_webhooks_sender::{Sender, Signing, provider_bytes};
//! let sender = Sender::new("http://127.0.0.1:5080/webhook", Signing::new("my-api-key"))?;
//! let body = serde_json::json!({"event": "recordingStarted", "creationDate": 1764230400000u64, "data": {}});
//! let delivered = sender.send(provider_bytes(&body)).await?;
//! println!("{} {}", delivered.status, delivered.body);
//! # Ok(()) }
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use meet_webhooks_signature::{Key, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use reqwest::header::{CONTENT_TYPE, HeaderValue};

/// How deliveries are signed (its `Debug` never shows the key).
#[derive(Debug, Clone)]
pub struct Signing {
    key: Key,
    timestamp: Option<i64>,
}

impl Signing {
    /// Signs with `key` and the current time in milliseconds, as the provider does.
    pub fn new(key: impl AsRef<[u8]>) -> Self {
        Self { key: Key::new(key.as_ref()), timestamp: None }
    }

    /// Sends this `X-Timestamp` value instead of the current time in milliseconds (another
    /// unit, a test of the window).
    pub fn fixed_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// The `X-Timestamp` value to send now.
    pub fn timestamp(&self) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let now_ms = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        self.timestamp.unwrap_or(now_ms).to_string()
    }

    /// The `X-Signature` value: lower-case hex of HMAC-SHA256(key, "<timestamp>.<body>").
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        hex::encode(self.key.sign(timestamp.as_bytes(), body))
    }
}

/// Posts signed deliveries to one webhook URL.
#[derive(Debug, Clone)]
pub struct Sender {
    url: reqwest::Url,
    signing: Signing,
    http: reqwest::Client,
}

impl Sender {
    /// Delivers to `url`, signed with `signing`.
    pub fn new(url: &str, signing: Signing) -> Result<Self, SendError> {
        let url = reqwest::Url::parse(url).map_err(|e| SendError(format!("invalid webhook URL {url:?}: {e}")))?;
        Ok(Self { url, signing, http: reqwest::Client::new() })
    }

    /// Posts `body` byte for byte, signed over exactly those bytes.
    pub async fn send(&self, body: Vec<u8>) -> Result<Delivered, SendError> {
        let timestamp = self.signing.timestamp();
        let signature = self.signing.sign(&timestamp, &body);
        let response = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(TIMESTAMP_HEADER, timestamp)
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        let body = response.text().await.map_err(failed)?;
        Ok(Delivered { status, body })
    }
}

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub status: reqwest::StatusCode,
    /// The response body (the receiver's `{"status":"accepted","id":N}`).
    pub body: String,
}

/// Why a delivery got no answer (an answer with an error status is a [`Delivered`]): an
/// invalid URL, a refused connection, a timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError(String);

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "delivery failed: {}", self.0)
    }
}

impl std::error::Error for SendError {}

/// reqwest's own message ("error sending request") hides the cause: say it all.
fn failed(e: reqwest::Error) -> SendError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    SendError(message)
}

/// The bytes the provider sends for `body`: its sender builds the object as `event`,
/// `creationDate`, `data` and serializes it with `JSON.stringify`, so those three come first, in
/// that order (any other field after them), and a number with no fraction is written as an
/// integer (`1796048768187`, never `1796048768187.0`).
pub fn provider_bytes(body: &serde_json::Value) -> Vec<u8> {
    use serde_json::Value;
    fn js(value: &Value) -> Value {
        match value {
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => Value::from(f as i64),
                _ => value.clone(),
            },
            Value::Array(items) => items.iter().map(js).collect(),
            Value::Object(fields) => fields.iter().map(|(k, v)| (k.clone(), js(v))).collect(),
            other => other.clone(),
        }
    }
    let Value::Object(fields) = body else {
        return serde_json::to_vec(&js(body)).unwrap_or_default();
    };
    const FIRST: [&str; 3] = ["event", "creationDate", "data"];
    let mut out = Vec::from(&b"{"[..]);
    let ordered = FIRST
        .iter()
        .filter_map(|k| fields.get_key_value(*k))
        .chain(fields.iter().filter(|(k, _)| !FIRST.contains(&k.as_str())));
    for (i, (key, value)) in ordered.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend(serde_json::to_vec(key).unwrap_or_default());
        out.push(b':');
        out.extend(serde_json::to_vec(&js(value)).unwrap_or_default());
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_written_as_the_providers_json_stringify_writes_them() {
        let body =
            serde_json::json!({"data": {"n": 2.0}, "extra": [1.5], "creationDate": 1796048768187.0, "event": "e"});
        assert_eq!(
            String::from_utf8(provider_bytes(&body)).unwrap(),
            r#"{"event":"e","creationDate":1796048768187,"data":{"n":2},"extra":[1.5]}"#
        );
    }

    #[test]
    fn the_signature_is_over_the_timestamp_and_the_exact_bytes() {
        let signing = Signing::new("k").fixed_timestamp(1700000000000);
        assert_eq!(signing.timestamp(), "1700000000000");
        let expected = hex::encode(Key::new(b"k").sign(b"1700000000000", b"{}"));
        assert_eq!(signing.sign("1700000000000", b"{}"), expected);
        assert!(!format!("{signing:?}").contains("\"k\""));
    }
}
