//! Which pending deliveries may be claimed next, kept in the writer's memory.
//!
//! Each room's deliveries are handled one at a time, in the room's order (`ord`: the provider's
//! `creationDate`, then `id`): only a room's *head* (its first pending delivery, or the one a
//! claim holds) may be claimed, and every delivery without a room is a head of its own. A
//! delivery that arrives before its room's head in that order takes its place unless a claim
//! holds the head (it is running, or its process stopped mid-handler); so does a waiting one
//! when the head is released for a retry. Until schema version 4 the file kept this in a `head`
//! column with an index of its own, and every delivery paid for it at each step: its arrival
//! looked for a pending delivery of its room, its outcome wrote the room's next head, and each
//! claim read past the heads being handled. Only the writer thread claims, so it keeps the
//! heads here instead, and the file keeps only what it must: the deliveries, their states and
//! their claims (`bench/results/figures-in-code.md`, heads-in-memory).
//!
//! **The file stays the truth.** The schedule is derived from it and rebuilt from it
//! ([`super::store`]): when the service starts, when another process changed the file (the CLI's
//! replay; SQLite's `data_version` says so), after a transaction that failed (its changes
//! here are not undone one by one: the whole schedule is dropped and read again), and when the
//! file disagrees with it (a head it holds is not pending there). It holds each room with
//! pending deliveries and each head; deliveries without a room are held up to
//! [`ROOMLESS_WINDOW`] at a time, the oldest, so that a backlog of them stays on disk. A
//! property test in `store.rs` (`the_schedule_keeps_each_room_in_order_whatever_happens`) holds
//! it against a model of the file through random arrivals, claims (and leases that run out),
//! outcomes (and late ones), replays and restarts.
//!
//! Behind each head it holds the room's other pending deliveries when it knows them all (the
//! room was empty when the first of them arrived here, and it has held no more than
//! [`WAITING_LIMIT`] in all): the room's next head is then taken from here when its head
//! leaves, not read from the file. A room read from the file reads its next heads there until
//! it is empty once.
//!
//! It also holds what the writer stored since it was read and no claim has taken yet, as it
//! arrived ([`Self::keep_unread`], up to [`UNREAD_BYTES`] of bodies): a pending delivery that was
//! never claimed is in the file exactly as it was inserted (only a claim changes it, or another
//! process, and then the schedule is read again), so a claim takes it from here instead of
//! reading its 700-byte row back (`bench/results/figures-in-code.md`, heads-in-memory).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::inbox::Stored;

/// Most heads without a room held here ready to be claimed; the rest stay in the file, read in
/// id order as these are claimed. (Claimed ones are held too, as many as are being handled.)
pub const ROOMLESS_WINDOW: usize = 4096;

/// Most body bytes of unread deliveries held ([`Schedule::keep_unread`]); past it, a claim reads
/// the row from the file. A flood keeps a few hundred unread at a time; a backlog keeps its
/// oldest arrivals (those claimed first) up to this.
pub const UNREAD_BYTES: usize = 4 << 20;

/// Most deliveries held waiting behind their room's head ([`Waiting::Known`]), all rooms
/// together; past it, a room's are left to the file and read from there one by one.
pub const WAITING_LIMIT: usize = 65_536;

/// What waits behind a room's head.
#[derive(Debug)]
enum Waiting {
    /// Every other pending delivery of the room, `(ord, id) → due_at` in the room's order: the
    /// room had nothing pending when its first of these arrived here, and all since arrived
    /// here. Its next head is taken from here, not read from the file.
    Known(BTreeMap<(i64, i64), i64>),
    /// The file may hold more (the room was read from it, or it had too many waiting): its next
    /// head is read from there.
    InFile,
}

/// A head: the room it stands for, its place in it, when it is due, and its lease while it is
/// claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    room: Option<Box<str>>,
    /// Its room's order (`ord`).
    order: i64,
    due_at: i64,
    lease_until: Option<i64>,
    /// A claim holds it, live or run out (cleared when the claim ends with it pending): no
    /// arrival takes its place.
    held: bool,
}

/// A room with pending deliveries: its head (`None` between its head leaving and the next one
/// read from the file) and what waits behind it.
#[derive(Debug)]
struct Room {
    head: Option<i64>,
    waiting: Waiting,
}

#[derive(Debug, Default)]
pub struct Schedule {
    heads: HashMap<i64, Head>,
    /// Heads not claimed, by when they are due: `(due_at, id)`.
    ready: BTreeSet<(i64, i64)>,
    /// Claimed heads, by when their lease runs out: `(lease_until, id)`. A lease that ran out
    /// makes its head claimable again (its process stopped or froze mid-handler).
    leased: BTreeSet<(i64, i64)>,
    /// Rooms with at least one pending delivery (one of them their head), and what waits
    /// behind it.
    rooms: HashMap<Box<str>, Room>,
    /// Deliveries in the [`Waiting::Known`] queues: at most [`WAITING_LIMIT`].
    waiting: usize,
    /// Heads without a room in `ready`: at most `window`.
    roomless_ready: usize,
    window: usize,
    /// Every pending delivery without a room up to this id is held here; those after it are
    /// held too if `roomless_complete`, else they are in the file only.
    roomless_until: i64,
    roomless_complete: bool,
    /// Something the file did was not what this schedule expected: it is read again.
    out_of_step: bool,
    /// Deliveries stored since the schedule was read that no claim has taken, as their rows
    /// are (copied: a request's body may share a larger buffer, which is not kept).
    unread: HashMap<i64, Stored>,
    /// Their bodies' bytes: at most [`UNREAD_BYTES`].
    unread_bytes: usize,
}

impl Schedule {
    /// A schedule about to be read from a file, holding up to `window` deliveries without a
    /// room ([`ROOMLESS_WINDOW`]) ready: it holds nothing yet and asks for those
    /// ([`Self::wants_roomless`]).
    pub fn reading(window: usize) -> Self {
        Self { window: window.max(2), ..Self::default() }
    }

    /// The schedule of an empty file: it holds every delivery without a room that arrives (up
    /// to the window).
    #[cfg(test)]
    pub fn new() -> Self {
        Self { roomless_complete: true, ..Self::reading(ROOMLESS_WINDOW) }
    }

    /// A delivery stored with `id` (ids grow with arrival), at `order` in its room, due at
    /// `due_at`. It is a head if its room had nothing pending, if it comes before its room's
    /// head and no claim holds that, or if it has no room (held if the window has room).
    pub fn arrived(&mut self, id: i64, room: Option<&str>, order: i64, due_at: i64) {
        let Some(room) = room else {
            if self.roomless_complete && self.roomless_ready < self.window {
                self.add(id, None, order, due_at, None);
                self.roomless_until = id;
            } else {
                self.roomless_complete = false;
            }
            return;
        };
        let Some(state) = self.rooms.get_mut(room) else {
            self.rooms.insert(room.into(), Room { head: Some(id), waiting: Waiting::Known(BTreeMap::new()) });
            self.add(id, Some(room.into()), order, due_at, None);
            return;
        };
        let displaced = state.head.filter(|head| {
            let head_at = &self.heads[head];
            !head_at.held && (order, id) < (head_at.order, *head)
        });
        if let Some(displaced) = displaced {
            // It goes back behind the arrival, as the file has it.
            state.head = Some(id);
            let old = self.heads.remove(&displaced).expect("a room's head is held");
            Self::unready(&mut self.ready, &mut self.roomless_ready, displaced, &old);
            self.add(id, Some(room.into()), order, due_at, None);
            self.wait(room, displaced, old.order, old.due_at);
        } else if state.head.is_some() {
            self.wait(room, id, order, due_at);
        }
        // A room whose head is being read from the file finds this one there.
    }

    /// `id` waits behind `room`'s head: known here, or left to the file.
    fn wait(&mut self, room: &str, id: i64, order: i64, due_at: i64) {
        let Some(state) = self.rooms.get_mut(room) else { return };
        match &mut state.waiting {
            Waiting::Known(queue) if self.waiting >= WAITING_LIMIT => {
                // Too many held: this room's are left to the file from now on.
                self.waiting -= queue.len();
                state.waiting = Waiting::InFile;
            }
            Waiting::Known(queue) => {
                queue.insert((order, id), due_at);
                self.waiting += 1;
            }
            Waiting::InFile => {}
        }
    }

    /// Holds the delivery just stored as `id` (its row as a claim would read it, made by `row`
    /// only if its `body_len` bytes fit) for the claim that takes it.
    pub fn keep_unread(&mut self, id: i64, body_len: usize, row: impl FnOnce() -> Stored) {
        let bytes = self.unread_bytes + body_len;
        if bytes <= UNREAD_BYTES {
            self.unread_bytes = bytes;
            self.unread.insert(id, row());
        }
    }

    /// The row of delivery `id` as it was stored, if it is held here and was never claimed:
    /// the file's is that, untouched.
    pub fn take_unread(&mut self, id: i64) -> Option<Stored> {
        let row = self.unread.remove(&id)?;
        self.unread_bytes -= row.body.len();
        Some(row)
    }

    /// Whether the window of deliveries without a room should be topped up from the file (it
    /// is under half full and more are there): `(after, wanted)`, for [`Self::roomless_loaded`]
    /// with the next ones after `after`, at most `wanted`.
    pub fn wants_roomless(&self) -> Option<(i64, usize)> {
        (!self.roomless_complete && self.roomless_ready < self.window / 2)
            .then(|| (self.roomless_until, self.window - self.roomless_ready))
    }

    /// The next pending deliveries without a room (`(id, due_at)`, in id order) read from the
    /// file after [`Self::wants_roomless`] asked for `wanted`: fewer means none are left there.
    pub fn roomless_loaded(&mut self, loaded: &[(i64, i64)], wanted: usize) {
        for &(id, due_at) in loaded {
            if !self.heads.contains_key(&id) {
                self.add(id, None, id, due_at, None);
            }
            self.roomless_until = self.roomless_until.max(id);
        }
        self.roomless_complete = loaded.len() < wanted;
    }

    /// A head with a live claim (when the schedule is read from the file).
    pub fn claimed_head(&mut self, id: i64, room: Option<&str>, order: i64, due_at: i64, lease_until: i64) {
        if let Some(room) = room {
            self.rooms.insert(room.into(), Room { head: Some(id), waiting: Waiting::InFile });
        }
        self.add(id, room.map(Into::into), order, due_at, Some(lease_until));
    }

    /// A room's head read from the file, if it has no claimed head already.
    pub fn room_head(&mut self, room: &str, id: i64, order: i64, due_at: i64) {
        if !self.rooms.contains_key(room) {
            self.rooms.insert(room.into(), Room { head: Some(id), waiting: Waiting::InFile });
            self.add(id, Some(room.into()), order, due_at, None);
        }
    }

    /// Whether `room` has a head here.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    fn add(&mut self, id: i64, room: Option<Box<str>>, order: i64, due_at: i64, lease_until: Option<i64>) {
        let roomless = room.is_none();
        self.heads.insert(id, Head { room, order, due_at, lease_until, held: lease_until.is_some() });
        match lease_until {
            Some(until) => {
                self.leased.insert((until, id));
            }
            None => self.make_ready(id, due_at, roomless),
        }
    }

    fn make_ready(&mut self, id: i64, due_at: i64, roomless: bool) {
        if self.ready.insert((due_at, id)) && roomless {
            self.roomless_ready += 1;
        }
    }

    /// Takes `head` out of `ready`, if it is there.
    fn unready(ready: &mut BTreeSet<(i64, i64)>, roomless_ready: &mut usize, id: i64, head: &Head) {
        if ready.remove(&(head.due_at, id)) && head.room.is_none() {
            *roomless_ready -= 1;
        }
    }

    /// Heads whose lease ran out by `now` are ready again, at their own due time (their
    /// process stopped or froze mid-handler). Once per claim, before [`Self::take_due`]: a head
    /// claimed with a lease that ends at once is not taken twice by one claim.
    pub fn expire(&mut self, now: i64) {
        while let Some(&(until, id)) = self.leased.first().filter(|(until, _)| *until <= now) {
            self.leased.remove(&(until, id));
            if let Some(head) = self.heads.get_mut(&id) {
                head.lease_until = None;
                let (due_at, roomless) = (head.due_at, head.room.is_none());
                self.make_ready(id, due_at, roomless);
            }
        }
    }

    /// The oldest head due at `now`, taken out of the ready ones: the caller claims it
    /// ([`Self::claimed`]) or buries it ([`Self::left`]).
    pub fn take_due(&mut self, now: i64) -> Option<i64> {
        let &(due_at, id) = self.ready.first().filter(|(due_at, _)| *due_at <= now)?;
        let head = &self.heads[&id];
        Self::unready(&mut self.ready, &mut self.roomless_ready, id, head);
        debug_assert_eq!(head.due_at, due_at);
        Some(id)
    }

    /// The head `id` (taken by [`Self::take_due`]) is claimed until `until`.
    pub fn claimed(&mut self, id: i64, until: i64) {
        match self.heads.get_mut(&id) {
            Some(head) => {
                head.lease_until = Some(until);
                head.held = true;
                self.leased.insert((until, id));
            }
            None => self.lost_step(),
        }
    }

    /// The claim on `id` was renewed until `until`: also one whose lease had run out here, if no
    /// claim took its head since (the file kept it: its process was only late).
    pub fn renewed(&mut self, id: i64, until: i64) {
        let Some(head) = self.heads.get_mut(&id) else { return self.lost_step() };
        head.held = true;
        match head.lease_until.replace(until) {
            Some(old) => {
                self.leased.remove(&(old, id));
            }
            None => Self::unready(&mut self.ready, &mut self.roomless_ready, id, head),
        }
        self.leased.insert((until, id));
    }

    /// The claim on `id` ended with the head still pending (a retry due at `due_at`, or an
    /// attempt given back, due as it was): it may be claimed again when due, unless an earlier
    /// delivery of its room arrived while it was held, which takes its place: known here, or
    /// read from the file ([`Advance::Read`], as when a head leaves).
    pub fn released(&mut self, id: i64, due_at: Option<i64>) -> Advance {
        let Some(head) = self.heads.get_mut(&id) else {
            self.lost_step();
            return Advance::Done;
        };
        if let Some(until) = head.lease_until.take() {
            self.leased.remove(&(until, id));
        }
        head.held = false;
        Self::unready(&mut self.ready, &mut self.roomless_ready, id, head);
        if let Some(due_at) = due_at {
            head.due_at = due_at;
        }
        let head = head.clone();
        if let Some(room) = &head.room {
            let state = self.rooms.get_mut(room).expect("a head's room is held");
            match &mut state.waiting {
                Waiting::Known(queue) => {
                    if let Some(entry) = queue.first_entry().filter(|e| *e.key() < (head.order, id)) {
                        let ((order, first), first_due) = entry.remove_entry();
                        queue.insert((head.order, id), head.due_at);
                        state.head = Some(first);
                        self.heads.remove(&id);
                        self.add(first, head.room.clone(), order, first_due, None);
                        return Advance::Done;
                    }
                }
                Waiting::InFile => {
                    // The file has its room's first: this one, or one that arrived meanwhile.
                    state.head = None;
                    self.heads.remove(&id);
                    return Advance::Read(room.clone());
                }
            }
        }
        self.make_ready(id, head.due_at, head.room.is_none());
        Advance::Done
    }

    /// The head `id` left `pending` (done, dead or buried). If it has a room, the room's next
    /// head is taken from the deliveries known to wait behind it ([`Advance::Done`]), or the
    /// caller reads it from the file and gives it to [`Self::advanced`] ([`Advance::Read`]).
    pub fn left(&mut self, id: i64) -> Result<Advance, NotAHead> {
        let head = self.heads.remove(&id).ok_or(NotAHead)?;
        if let Some(until) = head.lease_until {
            self.leased.remove(&(until, id));
        }
        Self::unready(&mut self.ready, &mut self.roomless_ready, id, &head);
        let Some(room) = head.room else { return Ok(Advance::Done) };
        let Some(state) = self.rooms.get_mut(&room) else { return Ok(Advance::Read(room)) };
        state.head = None;
        let next = match &mut state.waiting {
            Waiting::Known(queue) => Some(queue.pop_first()),
            Waiting::InFile => None,
        };
        match next {
            Some(Some(((order, next), due_at))) => {
                self.waiting -= 1;
                state.head = Some(next);
                self.add(next, Some(room), order, due_at, None);
            }
            Some(None) => {
                self.rooms.remove(&room);
            }
            None => return Ok(Advance::Read(room)),
        }
        Ok(Advance::Done)
    }

    /// `room`'s first pending delivery (`(id, ord, due_at)`), read from the file after its head
    /// left or was released ([`Advance::Read`]), or `None`: the room has nothing pending (and
    /// what arrives for it from now on is known here).
    pub fn advanced(&mut self, room: Box<str>, next: Option<(i64, i64, i64)>) {
        match next {
            Some((id, order, due_at)) => {
                if self.heads.contains_key(&id) {
                    // The room's head left or was released just before: it cannot be one still.
                    return self.lost_step();
                }
                match self.rooms.get_mut(&room) {
                    Some(state) => state.head = Some(id),
                    None => {
                        self.rooms.insert(room.clone(), Room { head: Some(id), waiting: Waiting::InFile });
                    }
                }
                self.add(id, Some(room), order, due_at, None)
            }
            None => {
                self.rooms.remove(&room);
            }
        }
    }

    /// The file did something this schedule did not expect (a head it holds is not pending
    /// there, or what the file changed was not a head here): it must be read again.
    pub fn lost_step(&mut self) {
        self.out_of_step = true;
    }

    /// Whether [`Self::lost_step`] was called.
    pub fn out_of_step(&self) -> bool {
        self.out_of_step
    }

    /// The heads a claim holds, live or run out (to carry over when the schedule is read again:
    /// an earlier delivery of the room that arrived meanwhile must not take a run-out one's place).
    pub fn claimed_ids(&self) -> Vec<i64> {
        self.heads.iter().filter(|(_, head)| head.held).map(|(&id, _)| id).collect()
    }

    /// Heads held (ready or claimed), rooms held.
    #[cfg(test)]
    pub fn len(&self) -> (usize, usize) {
        (self.heads.len(), self.rooms.len())
    }
}

/// What [`Schedule::left`] leaves to its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// Nothing: the room, if any, has its next head (or is empty).
    Done,
    /// The room's next head is in the file: read it and give it to [`Schedule::advanced`].
    Read(Box<str>),
}

/// An outcome for a delivery the schedule did not hold as a head: it no longer matches the
/// file, and is read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAHead;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_has_one_head_and_goes_on_in_order() {
        let mut s = Schedule::new();
        s.arrived(1, Some("a"), 1, 10);
        s.arrived(2, Some("a"), 2, 11);
        s.arrived(3, Some("b"), 3, 12);
        assert_eq!((s.take_due(100), s.take_due(100), s.take_due(100)), (Some(1), Some(3), None));
        s.claimed(1, 200);
        s.claimed(3, 200);
        assert_eq!(s.left(1), Ok(Advance::Done), "room a's next arrived here: known, not read");
        assert_eq!(s.take_due(100), Some(2));
        s.claimed(2, 200);
        assert_eq!(s.left(2), Ok(Advance::Done));
        assert!(!s.has_room("a") && s.has_room("b"));
        s.arrived(4, Some("a"), 4, 13);
        assert_eq!(s.take_due(100), Some(4), "an empty room's next arrival is its head");
    }

    #[test]
    fn a_room_read_from_the_file_reads_its_next_head_there_until_it_is_empty() {
        let mut s = Schedule::reading(ROOMLESS_WINDOW);
        s.room_head("a", 1, 1, 10);
        s.arrived(5, Some("a"), 5, 50);
        assert_eq!(s.take_due(100), Some(1));
        s.claimed(1, 200);
        let Ok(Advance::Read(room)) = s.left(1) else { panic!("the file may hold a's deliveries 2 to 4") };
        s.advanced(room, Some((2, 2, 20)));
        assert_eq!(s.take_due(100), Some(2));
        s.claimed(2, 200);
        let Ok(Advance::Read(room)) = s.left(2) else { panic!("still the file's") };
        s.advanced(room, None);
        assert!(!s.has_room("a"), "read empty");
        s.arrived(6, Some("a"), 6, 60);
        s.arrived(7, Some("a"), 7, 70);
        assert_eq!(s.take_due(100), Some(6));
        s.claimed(6, 200);
        assert_eq!(s.left(6), Ok(Advance::Done), "known since it was empty");
        assert_eq!(s.take_due(100), Some(7));
    }

    #[test]
    fn past_the_limit_a_room_s_waiting_deliveries_are_left_to_the_file() {
        let mut s = Schedule::new();
        let limit = i64::try_from(WAITING_LIMIT).unwrap();
        s.arrived(1, Some("a"), 1, 0);
        for id in 2..=limit + 2 {
            s.arrived(id, Some("b"), id, 0);
        }
        assert_eq!(s.waiting, WAITING_LIMIT, "b's, behind its head");
        s.arrived(limit + 3, Some("a"), limit + 3, 0); // over the limit: a's are the file's now
        assert_eq!(s.waiting, WAITING_LIMIT);
        assert_eq!(s.take_due(100), Some(1));
        s.claimed(1, 200);
        let Ok(Advance::Read(room)) = s.left(1) else { panic!("a's next is read from the file") };
        s.advanced(room, Some((limit + 3, limit + 3, 0)));
        assert_eq!(s.take_due(100), Some(2), "b's head");
        s.claimed(2, 200);
        assert_eq!(s.left(2), Ok(Advance::Done), "b's are still known");
        assert_eq!(s.waiting, WAITING_LIMIT - 1);
    }

    #[test]
    fn a_lease_that_ran_out_is_due_again_at_its_own_due_time() {
        let mut s = Schedule::new();
        s.arrived(1, None, 1, 10);
        s.arrived(2, None, 2, 20);
        assert_eq!(s.take_due(100), Some(1));
        s.claimed(1, 150);
        assert_eq!(s.take_due(100), Some(2));
        s.claimed(2, 300);
        s.expire(149);
        assert_eq!(s.take_due(149), None);
        s.renewed(2, 140);
        assert_eq!(s.take_due(150), None, "not before the leases are looked at");
        s.expire(150);
        assert_eq!(s.take_due(150), Some(1), "due at 10, before 2 (due at 20)");
        assert_eq!(s.take_due(150), Some(2));
    }

    #[test]
    fn a_renewal_that_comes_after_the_lease_ran_out_here_keeps_the_claim() {
        let mut s = Schedule::new();
        s.arrived(1, None, 1, 10);
        assert_eq!(s.take_due(100), Some(1));
        s.claimed(1, 150);
        s.expire(150);
        s.renewed(1, 300);
        s.expire(200);
        assert_eq!(s.take_due(200), None, "claimed again by its renewal");
        assert!(!s.out_of_step(), "nothing to read again");
        s.expire(300);
        assert_eq!(s.take_due(300), Some(1));
    }

    #[test]
    fn a_retry_waits_until_it_is_due_and_an_interruption_keeps_its_place() {
        let mut s = Schedule::new();
        s.arrived(1, Some("a"), 1, 10);
        s.arrived(2, Some("b"), 2, 20);
        assert_eq!((s.take_due(100), s.take_due(100)), (Some(1), Some(2)));
        s.claimed(1, 200);
        s.claimed(2, 200);
        s.released(1, Some(500));
        s.released(2, None);
        assert_eq!((s.take_due(100), s.take_due(100)), (Some(2), None));
        assert_eq!(s.take_due(500), Some(1));
    }

    #[test]
    fn deliveries_without_a_room_beyond_the_window_stay_in_the_file_until_asked_for() {
        let (now, lease) = (1 << 40, i64::MAX);
        let mut s = Schedule::new();
        let window = i64::try_from(ROOMLESS_WINDOW).unwrap();
        for id in 1..=window + 2 {
            s.arrived(id, None, id, id);
        }
        assert_eq!(s.len(), (ROOMLESS_WINDOW, 0));
        assert_eq!(s.wants_roomless(), None, "the window is full");
        for id in 1..=window / 2 + 1 {
            assert_eq!(s.take_due(now), Some(id));
            s.claimed(id, lease);
        }
        assert_eq!(s.len().0, ROOMLESS_WINDOW, "the claimed ones are held, outside the window");
        assert_eq!(s.wants_roomless(), Some((window, ROOMLESS_WINDOW / 2 + 1)));
        s.roomless_loaded(&[(window + 1, 0), (window + 2, 0)], ROOMLESS_WINDOW / 2 + 1);
        assert_eq!(s.wants_roomless(), None, "all of the file's are held");
        s.arrived(window + 3, None, window + 3, window + 3);
        assert_eq!(s.len().0, ROOMLESS_WINDOW + 3, "held again once the file's are");
        assert_eq!(s.take_due(now), Some(window + 1), "the loaded ones, due as the file says");
    }

    #[test]
    fn unread_deliveries_are_held_up_to_their_bodies_limit() {
        let row = |id: i64, len: usize| Stored {
            id,
            event: None,
            state: crate::inbox::State::Pending,
            kind: crate::inbox::Kind::Fallback,
            attempts: 0,
            received_at: 0,
            queued_at: 0,
            timestamp: String::new(),
            timestamp_ms: 0,
            room: None,
            recording: None,
            created_us: None,
            late: None,
            signature: [0; 32],
            body: vec![0; len],
            last_error: None,
            claimed_by: None,
            claimed_until: None,
            done_at: None,
            due_at: None,
            history: Vec::new(),
        };
        let mut s = Schedule::new();
        let half = UNREAD_BYTES / 2;
        s.keep_unread(1, half, || row(1, half));
        s.keep_unread(2, half, || row(2, half));
        s.keep_unread(3, 1, || panic!("not made: the limit is reached"));
        assert_eq!(s.take_unread(3).map(|r| r.id), None, "its claim reads the file");
        assert_eq!(s.take_unread(1).map(|r| r.id), Some(1));
        assert_eq!(s.take_unread(1).map(|r| r.id), None, "taken once");
        s.keep_unread(4, 1, || row(4, 1));
        assert_eq!(s.take_unread(4).map(|r| r.body.len()), Some(1), "room again once one is taken");
    }

    #[test]
    fn an_earlier_arrival_takes_an_unclaimed_head_s_place_and_waits_behind_a_claimed_one() {
        let mut s = Schedule::new();
        s.arrived(1, Some("a"), 30, 0);
        s.arrived(2, Some("a"), 10, 0); // created before 1: the room's head now
        assert_eq!((s.take_due(100), s.take_due(100)), (Some(2), None));
        s.claimed(2, 200);
        s.arrived(3, Some("a"), 5, 0); // before 2, which runs: it waits
        assert_eq!(s.take_due(100), None);
        assert_eq!(s.released(2, Some(50)), Advance::Done, "a retry of 2: 3 goes first");
        assert_eq!(s.take_due(100), Some(3));
        s.claimed(3, 200);
        assert_eq!(s.left(3), Ok(Advance::Done));
        assert_eq!((s.take_due(100), s.take_due(100)), (Some(2), None), "then 2, then 1");
        s.claimed(2, 200);
        assert_eq!(s.left(2), Ok(Advance::Done));
        assert_eq!(s.take_due(100), Some(1));
    }

    #[test]
    fn a_released_head_of_a_room_read_from_the_file_reads_the_room_s_first_again() {
        let mut s = Schedule::reading(ROOMLESS_WINDOW);
        s.room_head("a", 1, 30, 0);
        assert_eq!(s.take_due(100), Some(1));
        s.claimed(1, 200);
        s.arrived(2, Some("a"), 10, 0); // in the file only
        let Advance::Read(room) = s.released(1, None) else { panic!("the file may hold an earlier one") };
        s.advanced(room, Some((2, 10, 0)));
        assert_eq!((s.take_due(100), s.take_due(100)), (Some(2), None));
    }

    #[test]
    fn an_outcome_for_what_is_not_a_head_is_refused() {
        let mut s = Schedule::new();
        s.arrived(1, Some("a"), 1, 10);
        s.arrived(2, Some("a"), 2, 11);
        assert_eq!(s.left(2), Err(NotAHead));
    }
}
