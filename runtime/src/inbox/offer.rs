//! Claims made as deliveries are stored: the dispatcher offers its free handler slots, and an
//! inbox that can (PostgreSQL) claims new deliveries in the transaction that stores them and
//! hands the claims straight to the dispatcher (with whatever held deliveries came due that the
//! dispatcher has not looked for yet). A delivery so claimed waits for no claim turn of its own:
//! no wake-up, no second transaction and commit between its acknowledgment and its handler.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::{ClaimRequest, Claimed};

/// Handler slots not taken by a claim: the dispatcher's and an inbox's claims take from the same
/// count, so that together they never hold more claims than the dispatcher runs handlers.
#[derive(Debug)]
pub struct Slots(AtomicUsize);

impl Slots {
    pub fn new(free: usize) -> Self {
        Self(AtomicUsize::new(free))
    }

    /// Takes up to `most` slots; returns how many it took.
    pub fn take(&self, most: usize) -> usize {
        let mut taken = 0;
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
            taken = free.min(most);
            Some(free - taken)
        });
        taken
    }

    /// Gives `n` slots back: their claims ended, or were not made.
    pub fn give(&self, n: usize) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::AcqRel);
        }
    }

    pub fn free(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Claims made while storing, on their way to the dispatcher.
#[derive(Debug)]
pub struct Handed {
    pub claimed: Vec<Claimed>,
    /// Before the transaction that claimed them began: their leases run from no earlier.
    pub asked: std::time::Instant,
}

/// What a dispatcher offers an inbox ([`super::Inbox::offer`]): the slots to claim into, how to
/// claim (its `limit` unused), and where to hand the claims. A claim that cannot be handed over
/// (the dispatcher has stopped) is given back, its attempt not counted.
#[derive(Debug)]
pub struct Offer {
    pub slots: std::sync::Arc<Slots>,
    pub request: ClaimRequest,
    pub handed: mpsc::UnboundedSender<Handed>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_up_to_what_is_free_and_given_back() {
        let slots = Slots::new(3);
        assert_eq!(slots.take(2), 2);
        assert_eq!(slots.take(5), 1);
        assert_eq!(slots.take(1), 0);
        slots.give(2);
        assert_eq!(slots.free(), 2);
    }
}
