//! What wakes the dispatcher: a commit that stored a delivery it may claim now, and the times
//! at which deliveries held back (a reorder window) come due. Without them the dispatcher
//! finds such deliveries only at its next poll.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Wake-ups for one inbox's dispatcher (a backend owns one; see [`super::Inbox::wakeups`]).
pub struct Wakeups {
    now: Notify,
    /// When held deliveries come due, each rounded up to a whole millisecond after `base` (so
    /// that a flood of deliveries adds one entry per millisecond, not one each).
    due: Mutex<Due>,
    base: Instant,
}

#[derive(Default)]
struct Due {
    heap: BinaryHeap<Reverse<u64>>,
    /// The last one asked for: a flood asks for the same millisecond many times in a row.
    last: u64,
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups").finish_non_exhaustive()
    }
}

impl Default for Wakeups {
    fn default() -> Self {
        Self { now: Notify::new(), due: Mutex::default(), base: Instant::now() }
    }
}

impl Wakeups {
    /// Something may be claimed now.
    pub fn wake(&self) {
        self.now.notify_one();
    }

    /// Something comes due `after` from now (at once for zero).
    pub fn wake_after(&self, after: Duration) {
        if after.is_zero() {
            return self.wake();
        }
        let at = (Instant::now() + after).saturating_duration_since(self.base);
        let at = u64::try_from(at.as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        if due.last == at {
            return;
        }
        let earliest = due.heap.peek().is_none_or(|&Reverse(first)| at < first);
        due.heap.push(Reverse(at));
        due.last = at;
        drop(due);
        // A dispatcher asleep until a later time (or none) must look again.
        if earliest {
            self.wake();
        }
    }

    /// Returns when woken, or when the earliest wake-up asked for comes (which it consumes): at
    /// once if one came while nobody waited (the dispatcher was taking a turn).
    pub async fn wait(&self) {
        if self.take_due() {
            return;
        }
        let next = {
            let due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
            due.heap.peek().map(|&Reverse(at)| self.base + Duration::from_millis(at))
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = self.now.notified() => {}
                    () = tokio::time::sleep_until(at) => {
                        self.take_due();
                    }
                }
            }
            None => self.now.notified().await,
        }
    }

    /// Whether a wake-up came since the last wait, consumed: the dispatcher, about to take a
    /// turn for its outcomes, looks for everything due too.
    pub fn woken(&self) -> bool {
        use futures_util::FutureExt;
        self.take_due() | self.now.notified().now_or_never().is_some()
    }

    /// Whether a wake-up asked for has come and was not consumed yet (the dispatcher has not
    /// looked since).
    pub fn due(&self) -> bool {
        let due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        due.heap.peek().is_some_and(|&Reverse(at)| at <= now)
    }

    /// Consumes the wake-ups whose time has come; whether there were any.
    fn take_due(&self) -> bool {
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut came = false;
        while due.heap.peek().is_some_and(|&Reverse(at)| at <= now) {
            due.heap.pop();
            came = true;
        }
        came
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_asked_for_later_comes_then_and_once() {
        let wakeups = Wakeups::default();
        let started = Instant::now();
        wakeups.wake_after(Duration::from_millis(300));
        // That call woke the waiter to look again (nothing else was due).
        wakeups.wait().await;
        assert!(started.elapsed() < Duration::from_millis(1));
        wakeups.wait().await;
        let waited = started.elapsed();
        assert_eq!(waited.as_millis(), 301, "rounded up to the next millisecond");
        // Consumed: nothing more is due, so only a wake ends the wait.
        let again = tokio::time::timeout(Duration::from_secs(10), wakeups.wait()).await;
        assert!(again.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_that_came_while_nobody_waited_ends_the_next_wait_at_once() {
        let wakeups = Wakeups::default();
        wakeups.wake_after(Duration::from_millis(100));
        wakeups.wait().await;
        // The dispatcher is busy past the wake-up's time, then waits.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let waited = tokio::time::timeout(Duration::from_secs(10), wakeups.wait()).await;
        assert!(waited.is_ok() && started.elapsed().is_zero(), "it came while nobody waited");
        // Consumed.
        assert!(tokio::time::timeout(Duration::from_secs(10), wakeups.wait()).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_that_came_is_seen_without_waiting_and_consumed() {
        let wakeups = Wakeups::default();
        assert!(!wakeups.woken());
        wakeups.wake();
        assert!(wakeups.woken());
        assert!(!wakeups.woken(), "consumed");
        wakeups.wake_after(Duration::from_millis(100));
        wakeups.wait().await;
        assert!(!wakeups.woken());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(wakeups.woken());
        assert!(tokio::time::timeout(Duration::from_secs(10), wakeups.wait()).await.is_err(), "consumed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_whose_time_came_shows_as_due_until_it_is_consumed() {
        let wakeups = Wakeups::default();
        wakeups.wake_after(Duration::from_millis(100));
        assert!(!wakeups.due());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(wakeups.due() && wakeups.due(), "seen, not consumed");
        assert!(wakeups.woken());
        assert!(!wakeups.due());
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_wake_up_comes_first_and_repeats_within_a_millisecond_are_one() {
        let wakeups = Wakeups::default();
        wakeups.wake_after(Duration::from_millis(500));
        wakeups.wait().await;
        for _ in 0..1000 {
            wakeups.wake_after(Duration::from_millis(200));
        }
        assert_eq!(wakeups.due.lock().unwrap().heap.len(), 2, "one entry per millisecond");
        // The first of them woke the waiter (it is the earliest now); the next wait ends at it.
        wakeups.wait().await;
        let started = Instant::now();
        wakeups.wait().await;
        assert_eq!(started.elapsed().as_millis(), 201);
        wakeups.wait().await;
        assert_eq!(started.elapsed().as_millis(), 501);
    }
}
