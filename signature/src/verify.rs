//! Signature verification, exactly as the provider signs: pure, no HTTP types.
//!
//! The provider sends `X-Timestamp: <decimal>` and `X-Signature: <hex of
//! HMAC-SHA256(key, "<X-Timestamp>.<raw body>")>`. The message is built from the header's exact
//! bytes and the body's exact bytes: never from parsed-and-reserialized JSON, which is how the
//! provider's own Node and Python receivers end up rejecting validly signed bodies.
//!
//! # Security
//! - The MAC is compared in constant time (`Mac::verify_slice`).
//! - A signature that is not exactly 64 hex digits is rejected before any MAC is computed.
//! - Timestamps older than [`Policy::max_age`] or further ahead than [`Policy::max_future`] are
//!   rejected: the provider's receivers accept any future timestamp, which lets a captured
//!   delivery with a far-future timestamp be replayed for ever.
//! - Several keys may be active (the provider signs with its first API key, so a rotation
//!   changes the key without warning); a delivery is authentic if any of them verifies it.

use std::time::{Duration, SystemTime};

use crate::{Key, TimestampUnit};

/// The provider's own receivers refuse a timestamp this old.
pub const MAX_AGE: Duration = Duration::from_secs(120);
/// Clock skew allowed for a timestamp in the future.
pub const MAX_FUTURE: Duration = Duration::from_secs(30);

/// Milliseconds since the Unix epoch (negative before it).
fn millis_since_epoch(time: SystemTime) -> i64 {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// How strict the timestamp check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_age: Duration,
    pub max_future: Duration,
    pub unit: TimestampUnit,
}

impl Default for Policy {
    fn default() -> Self {
        Self { max_age: MAX_AGE, max_future: MAX_FUTURE, unit: TimestampUnit::Auto }
    }
}

/// Exactly which check a delivery failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("X-Timestamp is not a decimal integer")]
    MalformedTimestamp,
    #[error("X-Signature is not 64 hexadecimal digits")]
    MalformedSignature,
    #[error("the timestamp is {age_ms} ms old; the limit is {limit_ms} ms")]
    TimestampTooOld { age_ms: i64, limit_ms: i64 },
    #[error("the timestamp is {ahead_ms} ms in the future; the limit is {limit_ms} ms")]
    TimestampInFuture { ahead_ms: i64, limit_ms: i64 },
    #[error("the signature does not match the body and timestamp under any configured key")]
    InvalidSignature,
}

impl VerifyError {
    /// A stable machine-readable code for responses, logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedTimestamp => "malformed_timestamp",
            Self::MalformedSignature => "malformed_signature",
            Self::TimestampTooOld { .. } => "timestamp_too_old",
            Self::TimestampInFuture { .. } => "timestamp_in_future",
            Self::InvalidSignature => "invalid_signature",
        }
    }
}

/// An authentic delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Which configured key verified it (never the key itself).
    pub key_index: usize,
    /// The timestamp in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The decoded signature: the delivery's identity (a retry carries the same one).
    pub signature: [u8; 32],
}

/// Verifies deliveries against one or more keys.
#[derive(Clone)]
pub struct Verifier {
    /// Already keyed: checking a delivery skips hashing the key again.
    keys: Vec<Key>,
    policy: Policy,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        f.debug_struct("Verifier").field("keys", &self.keys.len()).field("policy", &self.policy).finish()
    }
}

/// Building a [`Verifier`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no key given")]
    NoKey,
    #[error("key {0} is empty")]
    EmptyKey(usize),
}

impl Verifier {
    /// A verifier for `keys` (in order; the index of the one that matched is reported).
    pub fn new<K: AsRef<[u8]>>(keys: &[K], policy: Policy) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKey);
        }
        let keys = keys
            .iter()
            .enumerate()
            .map(
                |(i, key)| {
                    if key.as_ref().is_empty() { Err(KeyError::EmptyKey(i)) } else { Ok(Key::new(key.as_ref())) }
                },
            )
            .collect::<Result<_, _>>()?;
        Ok(Self { keys, policy })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Number of configured keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Checks one delivery: `timestamp` and `signature` are the raw header values.
    ///
    /// Cheap checks come first, so garbage costs no MAC computation.
    pub fn verify(
        &self,
        timestamp: &[u8],
        signature: &[u8],
        body: &[u8],
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let timestamp_ms = self.timestamp_ms(timestamp)?;
        let signature = decode_signature(signature)?;
        self.check_window(timestamp_ms, now)?;
        let key_index = self.matching_key(timestamp, &signature, body)?;
        Ok(Verified { key_index, timestamp_ms, signature })
    }

    /// Checks the signature alone, whatever the time (for `meet-webhooks verify` on a captured
    /// delivery): the index of the key that made it.
    pub fn verify_signature(&self, timestamp: &[u8], signature: &[u8], body: &[u8]) -> Result<usize, VerifyError> {
        self.timestamp_ms(timestamp)?;
        self.matching_key(timestamp, &decode_signature(signature)?, body)
    }

    fn matching_key(&self, timestamp: &[u8], signature: &[u8; 32], body: &[u8]) -> Result<usize, VerifyError> {
        self.keys.iter().position(|key| key.verifies(timestamp, body, signature)).ok_or(VerifyError::InvalidSignature)
    }

    /// Parses `X-Timestamp` into milliseconds according to the configured unit.
    pub fn timestamp_ms(&self, timestamp: &[u8]) -> Result<i64, VerifyError> {
        let value = parse_decimal(timestamp).ok_or(VerifyError::MalformedTimestamp)?;
        self.policy.unit.to_millis(value).ok_or(VerifyError::MalformedTimestamp)
    }

    /// Checks the timestamp window alone.
    pub fn check_window(&self, timestamp_ms: i64, now: SystemTime) -> Result<(), VerifyError> {
        let now_ms = millis_since_epoch(now);
        let limit = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let (max_age, max_future) = (limit(self.policy.max_age), limit(self.policy.max_future));
        let age = now_ms.saturating_sub(timestamp_ms);
        // Same bound as the provider's receivers: `now - timestamp >= max_age` is too old.
        if age >= max_age {
            return Err(VerifyError::TimestampTooOld { age_ms: age, limit_ms: max_age });
        }
        if -age > max_future {
            return Err(VerifyError::TimestampInFuture { ahead_ms: -age, limit_ms: max_future });
        }
        Ok(())
    }
}

/// A non-negative decimal integer, ASCII digits only, no sign, no spaces, at most 18 digits.
fn parse_decimal(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 18 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
}

/// Exactly 64 hex digits (either case) → 32 bytes.
fn decode_signature(signature: &[u8]) -> Result<[u8; 32], VerifyError> {
    let mut out = [0u8; 32];
    if signature.len() != 64 {
        return Err(VerifyError::MalformedSignature);
    }
    hex::decode_to_slice(signature, &mut out).map_err(|_| VerifyError::MalformedSignature)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::KNOWN_ANSWERS as VECTORS;
    use crate::sign;

    fn at(ms: i64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    #[test]
    fn known_answer_vectors() {
        for (key, ts, body, expected) in VECTORS {
            assert_eq!(sign(key, ts, body), *expected, "sign({ts})");
            let verifier = Verifier::new(&[*key], Policy { unit: TimestampUnit::Auto, ..Policy::default() }).unwrap();
            let ms = verifier.timestamp_ms(ts.as_bytes()).unwrap();
            let ok = verifier.verify(ts.as_bytes(), expected.as_bytes(), body, at(ms)).unwrap();
            assert_eq!(ok.key_index, 0);
            assert_eq!(ok.timestamp_ms, ms);
        }
    }

    #[test]
    fn second_key_and_upper_case() {
        let (ts, body) = ("1764230400000", b"{}".as_slice());
        let signature = sign(b"new", ts, body).to_uppercase();
        let verifier = Verifier::new(&["old", "new"], Policy::default()).unwrap();
        let ok = verifier.verify(ts.as_bytes(), signature.as_bytes(), body, at(1_764_230_400_000)).unwrap();
        assert_eq!(ok.key_index, 1);
    }

    #[test]
    fn units_by_magnitude_or_configuration() {
        let auto = Verifier::new(&["k"], Policy::default()).unwrap();
        assert_eq!(auto.timestamp_ms(b"1764230400"), Ok(1_764_230_400_000));
        assert_eq!(auto.timestamp_ms(b"1764230400000"), Ok(1_764_230_400_000));
        let ms = Verifier::new(&["k"], Policy { unit: TimestampUnit::Milliseconds, ..Policy::default() }).unwrap();
        assert_eq!(ms.timestamp_ms(b"1764230400"), Ok(1_764_230_400));
        let s = Verifier::new(&["k"], Policy { unit: TimestampUnit::Seconds, ..Policy::default() }).unwrap();
        assert_eq!(s.timestamp_ms(b"1764230400000"), Ok(1_764_230_400_000_000));
        for bad in [&b""[..], b"-1", b"+1", b" 1", b"1.5", b"1e9", b"0x10", b"1234567890123456789"] {
            assert_eq!(auto.timestamp_ms(bad), Err(VerifyError::MalformedTimestamp), "{bad:?}");
        }
    }

    #[test]
    fn window_bounds() {
        let verifier = Verifier::new(&["k"], Policy::default()).unwrap();
        let now = 1_764_230_400_000;
        let check = |ts: i64| {
            let ts = ts.to_string();
            let signature = sign(b"k", &ts, b"{}");
            verifier.verify(ts.as_bytes(), signature.as_bytes(), b"{}", at(now))
        };
        assert!(check(now - 119_999).is_ok());
        assert_eq!(check(now - 120_000).unwrap_err().code(), "timestamp_too_old");
        assert!(check(now + 30_000).is_ok());
        assert_eq!(check(now + 30_001).unwrap_err().code(), "timestamp_in_future");
    }

    #[test]
    fn malformed_signatures_cost_nothing() {
        let verifier = Verifier::new(&["k"], Policy::default()).unwrap();
        let now = at(1_764_230_400_000);
        let good = sign(b"k", "1764230400000", b"{}");
        for bad in [&good[..63], &format!("{good}0")[..], &format!("{}g", &good[..63])[..], ""] {
            assert_eq!(
                verifier.verify(b"1764230400000", bad.as_bytes(), b"{}", now),
                Err(VerifyError::MalformedSignature)
            );
        }
    }

    #[test]
    fn no_keys_or_empty_keys_are_refused() {
        assert_eq!(Verifier::new::<&str>(&[], Policy::default()).unwrap_err(), KeyError::NoKey);
        assert_eq!(Verifier::new(&["a", ""], Policy::default()).unwrap_err(), KeyError::EmptyKey(1));
    }

    /// Fuzzing the entry point: arbitrary header and body bytes never panic and are never
    /// accepted; a well-formed signature over the wrong key never verifies. Run longer with
    /// `PROPTEST_CASES=1000000 cargo test --lib verify::tests::fuzz`.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn verifier() -> Verifier {
            Verifier::new(&["k1", "k2"], Policy::default()).unwrap()
        }

        proptest! {
            #[test]
            fn arbitrary_bytes(timestamp in proptest::collection::vec(any::<u8>(), 0..24),
                               signature in proptest::collection::vec(any::<u8>(), 0..80),
                               body in proptest::collection::vec(any::<u8>(), 0..512)) {
                let now = SystemTime::now();
                prop_assert!(verifier().verify(&timestamp, &signature, &body, now).is_err());
                let _ = verifier().verify_signature(&timestamp, &signature, &body);
            }

            #[test]
            fn well_formed_but_wrong(signature in "[0-9a-fA-F]{64}", body in proptest::collection::vec(any::<u8>(), 0..512)) {
                let now = SystemTime::now();
                let timestamp = millis_since_epoch(now).to_string();
                let error = verifier().verify(timestamp.as_bytes(), signature.as_bytes(), &body, now).unwrap_err();
                prop_assert_eq!(error, VerifyError::InvalidSignature);
            }

            #[test]
            fn any_valid_delivery_verifies(key in 0usize..2, body in proptest::collection::vec(any::<u8>(), 0..512), skew in -119_000i64..30_000) {
                let now = SystemTime::now();
                let timestamp = (millis_since_epoch(now) + skew).to_string();
                let signature = sign(["k1", "k2"][key].as_bytes(), &timestamp, &body);
                let verified = verifier().verify(timestamp.as_bytes(), signature.as_bytes(), &body, now).unwrap();
                prop_assert_eq!(verified.key_index, key);
            }
        }
    }
}
