//! Remembers which deliveries were handled, so a retry of one is acknowledged and not handled
//! again (the receiver without the inbox; the inbox remembers on disk).
//!
//! The provider retries with the identical timestamp, body and signature, so the signature is
//! the delivery's identity. An entry only needs to live as long as verification would accept
//! the delivery again: until its timestamp is older than the max age. Entries are therefore
//! grouped by the second in which they expire, and a whole group is dropped at once when that
//! second has passed: no per-entry expiry queue, and the table a new delivery goes into is the
//! current second's, small and warm in cache (`bench/results/figures-in-code.md`, replay-tables).
//!
//! The number of live entries is capped; at the cap new deliveries are refused with 503 (the
//! provider retries) rather than forgetting a live entry and risking a double handling.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

/// A delivery's identity: its decoded signature.
pub type DeliveryKey = [u8; 32];

/// What is kept of a key: its first 128 bits. Keys are HMAC outputs, so two deliveries that
/// expire in the same second share them with probability about n²/2¹²⁹ (about 10⁻²⁹ at
/// 100,000 deliveries a second), and an entry takes 17 bytes instead of 33.
type Fingerprint = [u8; 16];

/// Extra time a group lives past its second, so a retry verified just before the deadline and
/// claimed just after it is still recognised.
const GRACE_MS: i64 = 1000;

/// Spare tables kept from expired groups, so that steady traffic reuses their memory instead
/// of allocating (and page-faulting) a new table every second.
const SPARE_TABLES: usize = 2;

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

/// Fingerprints are HMAC outputs of verified deliveries: already uniformly random and not
/// chosen by an attacker, so their first 8 bytes are a good hash (SipHash showed in profiles).
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 = u64::from_le_bytes(first);
    }

    /// The length prefix an array hashes first: the same for every key, so ignored.
    fn write_usize(&mut self, _: usize) {}
}

type Table = HashMap<Fingerprint, State, BuildHasherDefault<FingerprintHasher>>;

#[derive(Default)]
struct Inner {
    /// Entries by the second in which they expire (`expires_ms / 1000`).
    groups: BTreeMap<i64, Table>,
    len: usize,
    spare: Vec<Table>,
}

pub struct ReplayCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Inner::default()), capacity }
    }

    /// Claims `key` for handling. `expires_ms` is when verification stops accepting the
    /// delivery (its timestamp plus the max age): a retry must carry the same value, so that
    /// it finds the claim.
    pub fn begin(&self, key: &DeliveryKey, expires_ms: i64, now_ms: i64) -> Begin {
        let mut inner = self.lock();
        inner.prune(now_ms);
        let fingerprint = fingerprint(key);
        let second = expires_ms.div_euclid(1000);
        if let Some(state) = inner.groups.get(&second).and_then(|group| group.get(&fingerprint)) {
            return match state {
                State::Done => Begin::Duplicate,
                State::InFlight => Begin::InFlight,
            };
        }
        if inner.len >= self.capacity {
            return Begin::Full;
        }
        let Inner { groups, spare, len } = &mut *inner;
        groups.entry(second).or_insert_with(|| spare.pop().unwrap_or_default()).insert(fingerprint, State::InFlight);
        *len += 1;
        Begin::New
    }

    /// The delivery was handled: later attempts are duplicates.
    pub fn complete(&self, key: &DeliveryKey, expires_ms: i64) {
        let mut inner = self.lock();
        if let Some(state) =
            inner.groups.get_mut(&expires_ms.div_euclid(1000)).and_then(|group| group.get_mut(&fingerprint(key)))
        {
            *state = State::Done;
        }
    }

    /// Handling failed: forget the delivery so the provider's retry is handled afresh.
    pub fn abort(&self, key: &DeliveryKey, expires_ms: i64) {
        let mut inner = self.lock();
        let removed = inner
            .groups
            .get_mut(&expires_ms.div_euclid(1000))
            .is_some_and(|group| group.remove(&fingerprint(key)).is_some());
        if removed {
            inner.len -= 1;
        }
    }

    /// Live entries.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than refusing every delivery would.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn fingerprint(key: &DeliveryKey) -> Fingerprint {
    let mut fingerprint = [0u8; 16];
    fingerprint.copy_from_slice(&key[..16]);
    fingerprint
}

impl Inner {
    /// Drops the groups whose second (and grace) has passed.
    fn prune(&mut self, now_ms: i64) {
        while let Some(entry) = self.groups.first_entry() {
            if (entry.key() + 1) * 1000 + GRACE_MS > now_ms {
                break;
            }
            let mut table = entry.remove();
            self.len -= table.len();
            if self.spare.len() < SPARE_TABLES {
                table.clear();
                self.spare.push(table);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> DeliveryKey {
        [n; 32]
    }

    #[test]
    fn lifecycle() {
        let cache = ReplayCache::new(10);
        let expires = 100_000;
        assert_eq!(cache.begin(&key(1), expires, 0), Begin::New);
        assert_eq!(cache.begin(&key(1), expires, 1), Begin::InFlight);
        cache.complete(&key(1), expires);
        assert_eq!(cache.begin(&key(1), expires, 2), Begin::Duplicate);
        cache.abort(&key(1), expires);
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.begin(&key(1), expires, 3), Begin::New);
    }

    #[test]
    fn an_entry_lives_until_its_second_and_the_grace_have_passed() {
        let cache = ReplayCache::new(10);
        let expires = 100_250;
        assert_eq!(cache.begin(&key(1), expires, 0), Begin::New);
        cache.complete(&key(1), expires);
        // Verification accepts the delivery until `expires`; the entry outlives that.
        let last_kept = 101_000 + GRACE_MS - 1;
        assert_eq!(cache.begin(&key(1), expires, last_kept), Begin::Duplicate);
        assert_eq!(cache.len(), 1);
        // A later delivery drops the whole second.
        assert_eq!(cache.begin(&key(2), 500_000, last_kept + 1), Begin::New);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.begin(&key(1), expires, last_kept + 1), Begin::New, "forgotten once expired");
    }

    #[test]
    fn bounded() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.begin(&key(1), 10_000, 0), Begin::New);
        assert_eq!(cache.begin(&key(2), 10_000, 0), Begin::New);
        assert_eq!(cache.begin(&key(3), 10_000, 0), Begin::Full);
        assert_eq!(cache.begin(&key(1), 10_000, 0), Begin::InFlight, "a live entry is never forgotten");
        assert_eq!(cache.begin(&key(3), 30_000, 20_000), Begin::New, "expired entries make room");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_same_key_in_two_seconds_is_two_deliveries() {
        // Same signature prefix, different timestamps: cannot happen for real (the timestamp is
        // signed), but the groups must not confuse them.
        let cache = ReplayCache::new(10);
        assert_eq!(cache.begin(&key(1), 10_000, 0), Begin::New);
        assert_eq!(cache.begin(&key(1), 11_000, 0), Begin::New);
        cache.abort(&key(1), 10_000);
        assert_eq!(cache.begin(&key(1), 11_000, 0), Begin::InFlight);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn expired_tables_are_kept_cleared_and_reused() {
        let cache = ReplayCache::new(1000);
        let fill = |second: i64| {
            for n in 0..50 {
                let mut k = key(n);
                k[1] = second as u8;
                assert_eq!(cache.begin(&k, second * 1000 + 500, second * 1000), Begin::New);
            }
        };
        for second in 0..4 {
            fill(second);
        }
        // Seconds 0 and 1 expired while 2 and 3 were filled (their tables went on to 2 and 3).
        {
            let inner = cache.lock();
            assert_eq!(inner.groups.keys().copied().collect::<Vec<_>>(), [2, 3]);
            assert_eq!(inner.len, 100);
        }
        // Far later everything has expired: the tables are kept, empty, up to the limit.
        assert_eq!(cache.begin(&key(99), 100_000, 90_000), Begin::New);
        let inner = cache.lock();
        assert_eq!(inner.spare.len(), SPARE_TABLES - 1, "one spare went to the new group");
        assert!(inner.spare.iter().all(|t| t.is_empty() && t.capacity() >= 50), "cleared, capacity kept");
        assert!(inner.groups[&100].capacity() >= 50, "the new group took an old table");
        assert_eq!(inner.len, 1);
    }
}
