//! OpenVidu Meet's webhook signing scheme, in one place: the key, signing as the provider
//! signs, and the receiver's verifier ([`verify`]: its policy, errors and timestamp window).
//! The receiver, the client that signs like the provider, the examples and the load tool all
//! use it.
//!
//! The provider sends `X-Timestamp: <decimal>` (milliseconds since the epoch today; its spec
//! once said seconds) and `X-Signature: <lower-case hex of HMAC-SHA256(key, "<X-Timestamp>.<raw
//! body>")>`, where the key is its API key. The message is the header's exact bytes and the
//! body's exact bytes, never re-serialized JSON.
//!
//! ```
//! use meet_webhooks_signature::{Key, sign};
//! let signature = sign(b"my-api-key", "1764230400000", br#"{"event":"testEvent"}"#);
//! let key = Key::new(b"my-api-key");
//! let mut bytes = [0u8; 32];
//! hex::decode_to_slice(&signature, &mut bytes).unwrap();
//! assert!(key.verifies(b"1764230400000", br#"{"event":"testEvent"}"#, &bytes));
//! ```

pub mod verify;

use std::fmt;
use std::str::FromStr;

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The header that carries the timestamp (lower case, as HTTP/2 and the spec write it).
pub const TIMESTAMP_HEADER: &str = "x-timestamp";
/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-signature";

/// A signing key, hashed into HMAC's state once: signing or checking with it costs no key
/// setup. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct Key(HmacSha256);

impl Key {
    pub fn new(key: &[u8]) -> Self {
        Self(HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length"))
    }

    fn message(&self, timestamp: &[u8], body: &[u8]) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(timestamp);
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The signature of `body` sent with `timestamp` (the header's exact bytes).
    pub fn sign(&self, timestamp: &[u8], body: &[u8]) -> [u8; 32] {
        self.message(timestamp, body).finalize().into_bytes().into()
    }

    /// Whether `signature` (decoded) signs `body` with `timestamp`, compared in constant time.
    pub fn verifies(&self, timestamp: &[u8], body: &[u8], signature: &[u8; 32]) -> bool {
        self.message(timestamp, body).verify_slice(signature).is_ok()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The `X-Signature` value for `body` sent with `timestamp` under `key`: lower-case hex.
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    hex::encode(Key::new(key).sign(timestamp.as_bytes(), body))
}

/// The unit of `X-Timestamp`. The spec said seconds until mid 2026 while the provider sent
/// milliseconds all along: a receiver goes by the magnitude ([`TimestampUnit::Auto`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampUnit {
    /// Seconds below 10^11, milliseconds from there on (when receiving; milliseconds when
    /// sending).
    #[default]
    Auto,
    Seconds,
    Milliseconds,
}

/// Timestamps at or above this are milliseconds: as seconds it would be the year 5138, as
/// milliseconds it is 1973.
pub const MILLISECONDS_FROM: i64 = 100_000_000_000;

impl TimestampUnit {
    /// A received `X-Timestamp` value in milliseconds; `None` if it overflows.
    pub fn to_millis(self, value: i64) -> Option<i64> {
        let milliseconds = match self {
            Self::Milliseconds => true,
            Self::Seconds => false,
            Self::Auto => value >= MILLISECONDS_FROM,
        };
        if milliseconds { Some(value) } else { value.checked_mul(1000) }
    }

    /// The `X-Timestamp` value to send for a time in milliseconds.
    pub fn from_millis(self, ms: i64) -> i64 {
        match self {
            Self::Seconds => ms.div_euclid(1000),
            Self::Auto | Self::Milliseconds => ms,
        }
    }
}

impl fmt::Display for TimestampUnit {
    /// As it is written on the command line: `auto`, `s`, `ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Seconds => "s",
            Self::Milliseconds => "ms",
        })
    }
}

impl FromStr for TimestampUnit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "s" | "seconds" => Ok(Self::Seconds),
            "ms" | "milliseconds" => Ok(Self::Milliseconds),
            other => Err(format!("{other:?} is not a timestamp unit: use auto, s or ms")),
        }
    }
}

/// Known-answer vectors for anything that signs or verifies: `(key, X-Timestamp, body,
/// X-Signature)`, computed outside Rust, with Python 3.11's standard library:
/// `hmac.new(key, ts + b"." + body, hashlib.sha256).hexdigest()`.
pub const KNOWN_ANSWERS: &[(&[u8], &str, &[u8], &str)] = &[
    (
        b"test-api-key",
        "1764230400000",
        br#"{"event":"recordingStarted","creationDate":1764230400000,"data":{"recordingId":"room-123--EG_XYZ--XX445","roomId":"room-123","status":"active"}}"#,
        "9c9dac675b2aab02c9176271b94b6589144842858f095470b7e26c70f74871ed",
    ),
    (
        b"another key, longer than sixty-four bytes so that HMAC hashes it first..........",
        "1764230400",
        b"{}",
        "fc5d7f587c1d6c880fcdb55664b8d34cc9b347a3b0fb6d6a48da84b2f00f184f",
    ),
    (
        b"k",
        "1764230400123",
        "{ \"event\" : \"caf\\u00e9\", \"data\": {\"name\": \"Jos\u{e9}\"} }".as_bytes(),
        "a22d5f4654ba4ad288e7aa80d506b48ec74d8bb872be353b2587fcd379c8ed99",
    ),
    // `printf '1764230400000.{}' | openssl dgst -sha256 -hmac k` (OpenSSL 3.0).
    (b"k", "1764230400000", b"{}", "a285df12c4c3918490f1a1d13aeb428f83df41481cf1af52bcf1c924654b1d28"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_vectors() {
        for (key, timestamp, body, expected) in KNOWN_ANSWERS {
            assert_eq!(sign(key, timestamp, body), *expected, "sign({timestamp})");
            let mut signature = [0u8; 32];
            hex::decode_to_slice(expected, &mut signature).unwrap();
            assert!(Key::new(key).verifies(timestamp.as_bytes(), body, &signature));
            signature[31] ^= 1;
            assert!(!Key::new(key).verifies(timestamp.as_bytes(), body, &signature));
        }
    }

    #[test]
    fn units_by_magnitude_and_both_ways() {
        assert_eq!(TimestampUnit::Auto.to_millis(1_764_230_400), Some(1_764_230_400_000));
        assert_eq!(TimestampUnit::Auto.to_millis(1_764_230_400_123), Some(1_764_230_400_123));
        assert_eq!(TimestampUnit::Seconds.to_millis(i64::MAX), None);
        assert_eq!(TimestampUnit::Seconds.from_millis(1_764_230_400_999), 1_764_230_400);
        assert_eq!(TimestampUnit::Auto.from_millis(5), 5);
        for unit in [TimestampUnit::Auto, TimestampUnit::Seconds, TimestampUnit::Milliseconds] {
            assert_eq!(unit.to_string().parse::<TimestampUnit>(), Ok(unit));
        }
    }
}
