//! Remembers which deliveries were handled, so a retry of one is acknowledged and not handled
//! again.
//!
//! The provider retries with the identical timestamp, body and signature, so the signature is
//! the delivery's identity. An entry only needs to outlive the window in which verification
//! would still accept the delivery: received-at + max future skew + max age. Entries are kept
//! in arrival order, so expired ones are dropped from the front in O(1) each; the number of
//! live entries is capped, and when the cap is reached new deliveries are refused with 503
//! (the provider retries) rather than forgetting a live entry and risking a double handling.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

/// A delivery's identity: its decoded signature.
pub type DeliveryKey = [u8; 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    Done,
}

/// What [`ReplayCache::begin`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// First time: handle it, then call `complete` or `abort`.
    New,
    /// Already handled within the window: acknowledge, do not handle.
    Duplicate,
    /// Another attempt of the same delivery is being handled right now.
    InFlight,
    /// The cache is full of live entries.
    Full,
}

struct Entry {
    state: State,
    expires_ms: i64,
}

/// Keys are HMAC outputs of verified deliveries: already uniformly random and not chosen by an
/// attacker, so their first 8 bytes are a good hash (SipHash showed in profiles).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its bytes; take the first 8.
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 |= u64::from(*b) << (8 * i);
        }
    }
}

struct Inner {
    entries: HashMap<DeliveryKey, Entry, BuildHasherDefault<KeyHasher>>,
    order: VecDeque<(i64, DeliveryKey)>,
}

pub struct ReplayCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Inner { entries: HashMap::default(), order: VecDeque::new() }), capacity }
    }

    /// Claims `key` for handling until `expires_ms`.
    pub fn begin(&self, key: DeliveryKey, now_ms: i64, expires_ms: i64) -> Begin {
        let mut inner = self.lock();
        inner.prune(now_ms);
        match inner.entries.get(&key).map(|e| e.state) {
            Some(State::Done) => return Begin::Duplicate,
            Some(State::InFlight) => return Begin::InFlight,
            None => {}
        }
        if inner.entries.len() >= self.capacity {
            return Begin::Full;
        }
        inner.entries.insert(key, Entry { state: State::InFlight, expires_ms });
        inner.order.push_back((expires_ms, key));
        Begin::New
    }

    /// The delivery was handled: later attempts are duplicates.
    pub fn complete(&self, key: &DeliveryKey) {
        if let Some(entry) = self.lock().entries.get_mut(key) {
            entry.state = State::Done;
        }
    }

    /// Handling failed: forget the delivery so the provider's retry is handled afresh.
    pub fn abort(&self, key: &DeliveryKey) {
        self.lock().entries.remove(key);
    }

    /// Live entries.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than refusing every delivery would.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn prune(&mut self, now_ms: i64) {
        while let Some(&(expires_ms, key)) = self.order.front() {
            if expires_ms > now_ms {
                break;
            }
            self.order.pop_front();
            // The key may have been aborted and claimed again since: only the entry this
            // queue slot was made for goes.
            if self.entries.get(&key).is_some_and(|e| e.expires_ms == expires_ms) {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        let cache = ReplayCache::new(10);
        let key = [1; 32];
        assert_eq!(cache.begin(key, 0, 100), Begin::New);
        assert_eq!(cache.begin(key, 1, 101), Begin::InFlight);
        cache.complete(&key);
        assert_eq!(cache.begin(key, 2, 102), Begin::Duplicate);
        // After the window the entry is gone.
        assert_eq!(cache.begin(key, 100, 200), Begin::New);
        cache.abort(&key);
        assert_eq!(cache.begin(key, 101, 201), Begin::New);
    }

    #[test]
    fn bounded() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.begin([1; 32], 0, 10), Begin::New);
        assert_eq!(cache.begin([2; 32], 0, 10), Begin::New);
        assert_eq!(cache.begin([3; 32], 0, 10), Begin::Full);
        assert_eq!(cache.begin([3; 32], 10, 20), Begin::New, "expired entries make room");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_aborted_and_reclaimed_key_survives_its_old_slot() {
        let cache = ReplayCache::new(10);
        let key = [7; 32];
        assert_eq!(cache.begin(key, 0, 10), Begin::New);
        cache.abort(&key);
        assert_eq!(cache.begin(key, 5, 15), Begin::New);
        cache.complete(&key);
        // The first slot expires at 10; the second claim lives until 15.
        assert_eq!(cache.begin(key, 11, 21), Begin::Duplicate);
    }
}
