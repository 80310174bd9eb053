//! The rules every inbox keeps, written once over the `Inbox` seam and run on each backend
//! under the same test names: `contract::sqlite::<rule>`, `contract::postgres::<rule>` and
//! `contract::memory::<rule>` (the in-memory inbox, the contract as plain code). A backend that
//! breaks a rule fails its own run of it.

use std::time::Duration;

use meet_webhooks_runtime::inbox::{
    Appended, Claim, ClaimRequest, Claimed, Completed, Completion, Filter, Inbox, Kind, NewDelivery, Outcome, Query,
    Selection, State,
};

use crate::common::now_ms;

const LEASE: Duration = Duration::from_secs(30);

fn delivery(n: u8, room: Option<&str>) -> NewDelivery {
    NewDelivery {
        signature: [n; 32],
        timestamp: n.to_string(),
        timestamp_ms: i64::from(n),
        event: Some("testEvent".into()),
        kind: if n.is_multiple_of(2) { Kind::Typed } else { Kind::Fallback },
        room: room.map(Into::into),
        body: format!(r#"{{"n":{n}}}"#).into(),
        received_at_ms: now_ms(),
        recording: None,
        created_us: None,
        hold: std::time::Duration::ZERO,
    }
}

async fn append(inbox: &impl Inbox, n: u8, room: Option<&str>) -> i64 {
    match inbox.append(delivery(n, room)).await.unwrap() {
        Appended::New(id) => id,
        other => panic!("delivery {n}: {other:?}"),
    }
}

async fn claim(inbox: &impl Inbox, limit: usize, lease: Duration) -> Vec<Claimed> {
    inbox.claim(ClaimRequest { limit, lease, max_attempts: 3 }).await.unwrap()
}

fn ids(claimed: &[Claimed]) -> Vec<i64> {
    let mut ids: Vec<i64> = claimed.iter().map(|c| c.claim.id).collect();
    ids.sort_unstable();
    ids
}

async fn complete(inbox: &impl Inbox, claim: Claim, outcome: Outcome) -> Completed {
    inbox.complete(&[Completion { claim, kind: Kind::Fallback, outcome }]).await.unwrap()[0]
}

/// A retry of a stored delivery (same timestamp and signature) is a duplicate of it.
pub async fn a_retry_is_a_duplicate_of_what_is_stored(inbox: &impl Inbox) {
    let id = append(inbox, 1, Some("r")).await;
    assert_eq!(inbox.append(delivery(1, Some("r"))).await.unwrap(), Appended::Duplicate(id));
    let mut other_time = delivery(1, Some("r"));
    other_time.timestamp_ms += 1;
    assert!(
        matches!(inbox.append(other_time).await.unwrap(), Appended::New(_)),
        "another timestamp is another delivery"
    );
    assert_eq!(inbox.stats().await.unwrap().pending, 2);
}

/// A claim takes each room's oldest pending delivery and every one without a room, oldest
/// first, each once; a room's next waits for its head's outcome.
pub async fn a_room_is_handled_one_at_a_time_in_order(inbox: &impl Inbox) {
    let a1 = append(inbox, 1, Some("a")).await;
    let a2 = append(inbox, 2, Some("a")).await;
    let b1 = append(inbox, 3, Some("b")).await;
    let n1 = append(inbox, 4, None).await;
    let n2 = append(inbox, 5, None).await;
    let first = claim(inbox, 10, LEASE).await;
    assert_eq!(ids(&first), [a1, b1, n1, n2]);
    assert!(first.iter().all(|c| c.attempt == 1));
    assert!(claim(inbox, 10, LEASE).await.is_empty(), "nothing claimed twice, nothing past a claimed head");
    let head = first.iter().find(|c| c.claim.id == a1).unwrap().claim;
    assert_eq!(complete(inbox, head, Outcome::Done).await, Completed::Recorded);
    assert_eq!(ids(&claim(inbox, 10, LEASE).await), [a2]);
}

/// A limit is a limit, and the oldest go first.
pub async fn a_claim_takes_at_most_its_limit_oldest_first(inbox: &impl Inbox) {
    let all = [append(inbox, 1, None).await, append(inbox, 2, None).await, append(inbox, 3, None).await];
    assert_eq!(ids(&claim(inbox, 2, LEASE).await), all[..2]);
    assert_eq!(ids(&claim(inbox, 2, LEASE).await), all[2..]);
}

/// An outcome or a renewal counts only for the claim that holds the delivery.
pub async fn a_stale_claim_changes_nothing(inbox: &impl Inbox) {
    append(inbox, 1, Some("r")).await;
    let [held] = &claim(inbox, 1, LEASE).await[..] else { panic!() };
    let stale = Claim { id: held.claim.id, fence: held.claim.fence - 1 };
    assert_eq!(complete(inbox, stale, Outcome::Done).await, Completed::Fenced);
    assert_eq!(inbox.renew(&[stale, held.claim], LEASE).await.unwrap(), [stale], "the stale one is lost");
    assert_eq!(complete(inbox, held.claim, Outcome::Done).await, Completed::Recorded);
    assert_eq!(complete(inbox, held.claim, Outcome::Done).await, Completed::Fenced, "recorded once");
}

/// A claim whose lease ran out is taken over with a new fence, saying whose it was and how long
/// ago it ran out; its late outcome is fenced.
pub async fn a_claim_whose_lease_ran_out_is_taken_over(inbox: &impl Inbox) {
    append(inbox, 1, Some("r")).await;
    let [first] = &claim(inbox, 1, Duration::from_millis(1)).await[..] else { panic!() };
    assert_eq!(first.took_over, None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let [second] = &claim(inbox, 1, LEASE).await[..] else { panic!("taken over") };
    assert_eq!(second.claim.id, first.claim.id);
    assert!(second.claim.fence > first.claim.fence);
    assert_eq!(second.attempt, 2, "the lost attempt counts");
    let took_over = second.took_over.as_ref().expect("a takeover says so");
    assert_eq!(took_over.owner, "contract");
    assert!((40..10_000).contains(&took_over.ran_out_ms), "{took_over:?}");
    assert_eq!(complete(inbox, first.claim, Outcome::Done).await, Completed::Fenced);
    assert_eq!(complete(inbox, second.claim, Outcome::Done).await, Completed::Recorded);
}

/// Each outcome leaves the delivery where it says: done; pending for a retry (the attempt
/// counted); dead, its room going on; interrupted (the attempt not counted).
pub async fn each_outcome_is_recorded_as_given(inbox: &impl Inbox) {
    let retry = append(inbox, 1, Some("retry")).await;
    let dead = append(inbox, 2, Some("dead")).await;
    let after_dead = append(inbox, 3, Some("dead")).await;
    let interrupted = append(inbox, 4, Some("interrupted")).await;
    let claimed = claim(inbox, 10, LEASE).await;
    let of = |id: i64| claimed.iter().find(|c| c.claim.id == id).unwrap().claim;
    let outcomes = [
        Completion {
            claim: of(retry),
            kind: Kind::Typed,
            outcome: Outcome::Retry { after: Duration::ZERO, error: "again".into() },
        },
        Completion { claim: of(dead), kind: Kind::Fallback, outcome: Outcome::Dead { error: "boom".into() } },
        Completion { claim: of(interrupted), kind: Kind::Typed, outcome: Outcome::Interrupted },
    ];
    assert_eq!(inbox.complete(&outcomes).await.unwrap(), [Completed::Recorded; 3]);
    let row = |id| async move { inbox.get(id).await.unwrap().unwrap() };
    let (r, d, i) = (row(retry).await, row(dead).await, row(interrupted).await);
    assert_eq!((r.state, r.attempts, r.last_error.as_deref()), (State::Pending, 1, Some("again")));
    assert_eq!((d.state, d.last_error.as_deref(), d.due_at), (State::Dead, Some("boom"), None));
    assert_eq!((i.state, i.attempts), (State::Pending, 0));
    // Due again at once (a retry after no wait), on the storage's clock.
    assert!(r.due_at.is_some_and(|due| (now_ms() - 10_000..=now_ms() + 1000).contains(&due)), "{r:?}");
    let again = claim(inbox, 10, LEASE).await;
    assert_eq!(ids(&again), [retry, after_dead, interrupted], "the dead one's room goes on");
    assert!(again.iter().all(|c| c.took_over.is_none()), "each claim had ended with an outcome");
    assert_eq!(again.iter().find(|c| c.claim.id == retry).unwrap().attempt, 2);
    assert_eq!(again.iter().find(|c| c.claim.id == interrupted).unwrap().attempt, 1);
}

/// Each attempt that ends is kept in the delivery's history, through replays: its number, the
/// replica that ran it, when it started, how long it took, its outcome and error; a last
/// attempt that never finished is kept as `unfinished`, and when the delivery was handled.
pub async fn every_attempt_is_kept_in_the_delivery_s_history(inbox: &impl Inbox) {
    let id = append(inbox, 1, Some("r")).await;
    let before = now_ms();
    let outcomes = [
        Outcome::Retry { after: Duration::ZERO, error: "first".into() },
        Outcome::Interrupted,
        Outcome::Dead { error: "second".into() },
    ];
    for outcome in outcomes {
        let [claimed] = &claim(inbox, 1, LEASE).await[..] else { panic!("claimed") };
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert_eq!(complete(inbox, claimed.claim, outcome).await, Completed::Recorded);
    }
    let dead = inbox.get(id).await.unwrap().unwrap();
    let seen: Vec<(u32, &str, Option<&str>)> =
        dead.history.iter().map(|a| (a.attempt, a.outcome.as_str(), a.error.as_deref())).collect();
    assert_eq!(seen, [(1, "retry", Some("first")), (2, "interrupted", None), (2, "dead", Some("second"))]);
    for attempt in &dead.history {
        assert_eq!(attempt.replica.as_deref(), Some("contract"));
        let started = attempt.started_at.expect("a start");
        assert!(started >= before - 1000 && started <= now_ms() + 1000, "{attempt:?}");
        assert!(attempt.duration_ms.is_some_and(|ms| ms >= 10), "{attempt:?}");
    }
    assert!(dead.done_at.is_some_and(|at| at >= before - 1000), "when it died");

    // Replayed, it starts again from attempt 1, and the history goes on.
    assert_eq!(inbox.replay(Selection::One(id)).await.unwrap(), 1);
    assert_eq!(inbox.get(id).await.unwrap().unwrap().done_at, None, "pending again");
    let request = |lease| ClaimRequest { limit: 1, lease, max_attempts: 1 };
    assert_eq!(ids(&inbox.claim(request(Duration::from_millis(1))).await.unwrap()), [id]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(inbox.claim(request(LEASE)).await.unwrap().is_empty(), "buried");
    let buried = inbox.get(id).await.unwrap().unwrap();
    let last = buried.history.last().unwrap();
    assert_eq!(buried.history.len(), 4);
    assert_eq!((last.attempt, last.outcome.as_str(), last.replica.as_deref()), (1, "unfinished", Some("contract")));
    assert_eq!(last.duration_ms, None, "it never finished");
    assert_eq!(last.error, buried.last_error);

    let other = append(inbox, 2, None).await;
    let [claimed] = &claim(inbox, 1, LEASE).await[..] else { panic!("claimed") };
    assert_eq!(complete(inbox, claimed.claim, Outcome::Done).await, Completed::Recorded);
    let done = inbox.get(other).await.unwrap().unwrap();
    assert_eq!(done.history.iter().map(|a| a.outcome.as_str()).collect::<Vec<_>>(), ["done"]);
    assert!(done.done_at.is_some(), "when it was handled");
}

/// A search finds deliveries newest first, by state, event, room, recording or id, a page at a
/// time, whatever their state.
pub async fn a_search_finds_deliveries_by_what_they_are_newest_first(inbox: &impl Inbox) {
    let mut ids = Vec::new();
    for n in 1..=6u8 {
        let mut d = delivery(n, Some(if n <= 3 { "room-a" } else { "room-b" }));
        d.event = Some(if n % 2 == 0 { "recordingEnded" } else { "meetingStarted" }.into());
        d.recording = (n == 4).then(|| "rec-4".into());
        ids.push(append_new(inbox, d).await);
    }
    // The first of room-a is handled: done.
    let [first, ..] = &claim(inbox, 10, LEASE).await[..] else { panic!("claimed") };
    assert_eq!(first.claim.id, ids[0]);
    assert_eq!(complete(inbox, first.claim, Outcome::Done).await, Completed::Recorded);
    let found =
        |query: Query| async move { inbox.search(&query).await.unwrap().iter().map(|d| d.id).collect::<Vec<i64>>() };
    let newest = Query::newest(100);
    assert_eq!(found(newest.clone()).await, ids.iter().rev().copied().collect::<Vec<_>>(), "newest first");
    assert_eq!(found(Query { filter: Filter::State(State::Done), ..newest.clone() }).await, [ids[0]]);
    assert_eq!(found(Query { filter: Filter::Fallback, ..newest.clone() }).await, [ids[4], ids[2], ids[0]]);
    assert_eq!(found(Query { event: Some("recordingEnded".into()), ..newest.clone() }).await, [ids[5], ids[3], ids[1]]);
    assert_eq!(found(Query { room: Some("room-a".into()), ..newest.clone() }).await, [ids[2], ids[1], ids[0]]);
    assert_eq!(
        found(Query { room: Some("room-a".into()), event: Some("meetingStarted".into()), ..newest.clone() }).await,
        [ids[2], ids[0]],
        "conditions together"
    );
    assert_eq!(found(Query { text: Some("rec-4".into()), ..newest.clone() }).await, [ids[3]], "a recording");
    assert_eq!(found(Query { text: Some(ids[1].to_string()), ..newest.clone() }).await, [ids[1]], "an id");
    assert!(found(Query { text: Some("nothing".into()), ..newest.clone() }).await.is_empty());
    assert!(found(Query { room: Some("room-a' OR 'x'='x".into()), ..newest.clone() }).await.is_empty(), "a value");
    // Pages of two: each the next older, the last one short.
    let page = |before| Query { before, ..Query::newest(2) };
    assert_eq!(found(page(None)).await, [ids[5], ids[4]]);
    assert_eq!(found(page(Some(ids[4]))).await, [ids[3], ids[2]]);
    assert_eq!(found(page(Some(ids[0]))).await, Vec::<i64>::new());
    assert_eq!(found(page(Some(ids[1]))).await, [ids[0]]);
}

/// A delivery whose last claim ran out on its last attempt is buried, with one text on every
/// inbox, and its room goes on.
pub async fn a_delivery_that_never_finished_its_last_attempt_is_buried(inbox: &impl Inbox) {
    let first = append(inbox, 1, Some("r")).await;
    let second = append(inbox, 2, Some("r")).await;
    let request = |lease| ClaimRequest { limit: 10, lease, max_attempts: 2 };
    for _ in 0..2 {
        assert_eq!(ids(&inbox.claim(request(Duration::from_millis(1))).await.unwrap()), [first]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ids(&inbox.claim(request(LEASE)).await.unwrap()), [second], "buried, and the room goes on");
    let buried = inbox.get(first).await.unwrap().unwrap();
    assert_eq!(buried.state, State::Dead);
    assert_eq!(
        buried.last_error.as_deref(),
        Some("its last attempt (of 2) never finished: the process handling it stopped or lost its claim")
    );
}

/// A replay makes a dead or done delivery pending again with fresh attempts; a pending one is
/// left alone.
pub async fn a_replay_starts_a_delivery_afresh(inbox: &impl Inbox) {
    let id = append(inbox, 1, None).await;
    let [c] = &claim(inbox, 1, LEASE).await[..] else { panic!() };
    assert_eq!(complete(inbox, c.claim, Outcome::Dead { error: "boom".into() }).await, Completed::Recorded);
    let pending = append(inbox, 2, None).await;
    assert_eq!(inbox.replay(Selection::One(pending)).await.unwrap(), 0, "a pending delivery is not replayed");
    assert_eq!(inbox.replay(Selection::Dead).await.unwrap(), 1);
    let row = inbox.get(id).await.unwrap().unwrap();
    assert_eq!((row.state, row.attempts, row.last_error), (State::Pending, 0, None));
    let again = claim(inbox, 10, LEASE).await;
    let replayed = again.iter().find(|a| a.claim.id == id).expect("the replayed delivery is claimed");
    assert_eq!(replayed.attempt, 1);
    assert!(replayed.claim.fence > c.claim.fence, "a fence is never reused");
}

/// A delivery is queued by the commit that stores it, however long after its receipt, and
/// again by a replay: its handler's lag (`queued_at`) counts from there.
pub async fn a_delivery_is_queued_by_the_commit_that_stores_or_replays_it(inbox: &impl Inbox) {
    let mut late = delivery(1, Some("r"));
    let received = now_ms() - 120_000;
    late.received_at_ms = received;
    // Within a millisecond: each clock is read in whole milliseconds.
    let between = |before: i64, after: i64, at: i64| (before - 1..=after + 1).contains(&at);
    let before = now_ms();
    let Appended::New(id) = inbox.append(late).await.unwrap() else { panic!("new") };
    let after = now_ms();
    let [c] = &claim(inbox, 10, LEASE).await[..] else { panic!("claimed") };
    assert_eq!(c.delivery.received_at, received);
    let queued = c.delivery.queued_at;
    assert!(between(before, after, queued), "stored at {before}..={after}, queued at {queued}");
    assert_eq!(inbox.get(id).await.unwrap().unwrap().queued_at, queued);
    assert_eq!(complete(inbox, c.claim, Outcome::Done).await, Completed::Recorded);

    std::thread::sleep(Duration::from_millis(5));
    let before = now_ms();
    assert_eq!(inbox.replay(Selection::One(id)).await.unwrap(), 1);
    let after = now_ms();
    let [c] = &claim(inbox, 10, LEASE).await[..] else { panic!("claimed again") };
    assert_eq!((c.attempt, c.delivery.received_at), (1, received));
    let requeued = c.delivery.queued_at;
    assert!(
        between(before, after, requeued) && requeued > queued,
        "replayed at {before}..={after}, queued at {requeued}"
    );
}

/// A replayed delivery is handled after whatever of its room is pending already (the README's
/// promise for `inbox replay`). Three deliveries of one room: the first handled, the other
/// two waiting, then the first replayed: it is claimed last.
pub async fn a_replayed_delivery_goes_behind_its_room_s_pending_ones(inbox: &impl Inbox) {
    // Handles the room's deliveries one claim at a time: the ids in the order claimed.
    let handle_all = async || {
        let mut order = Vec::new();
        while let [c] = &claim(inbox, 10, LEASE).await[..] {
            assert_eq!(complete(inbox, c.claim, Outcome::Done).await, Completed::Recorded);
            order.push(c.claim.id);
        }
        order
    };
    let first = append(inbox, 1, Some("room")).await;
    assert_eq!(handle_all().await, [first]);
    let second = append(inbox, 2, Some("room")).await;
    let third = append(inbox, 3, Some("room")).await;
    assert_eq!(inbox.replay(Selection::One(first)).await.unwrap(), 1);
    assert_eq!(handle_all().await, [second, third, first]);
    // Replayed one after the other, they are handled in the order replayed.
    for id in [third, first, second] {
        assert_eq!(inbox.replay(Selection::One(id)).await.unwrap(), 1);
    }
    assert_eq!(handle_all().await, [third, first, second]);
}

/// Pruning deletes handled deliveries older than the retention, by the storage's clock;
/// pending and dead ones stay.
pub async fn pruning_deletes_handled_deliveries_only(inbox: &impl Inbox) {
    for n in 1..=4 {
        append(inbox, n, None).await;
    }
    let claimed = claim(inbox, 3, LEASE).await;
    let outcomes: Vec<Completion> = claimed
        .iter()
        .zip([Outcome::Done, Outcome::Done, Outcome::Dead { error: "boom".into() }])
        .map(|(c, outcome)| Completion { claim: c.claim, kind: Kind::Fallback, outcome })
        .collect();
    inbox.complete(&outcomes).await.unwrap();
    assert_eq!(inbox.prune(Duration::from_secs(60)).await.unwrap(), 0, "handled just now");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(inbox.prune(Duration::ZERO).await.unwrap(), 2);
    let left: Vec<State> = inbox.list(Filter::All, None, 10).await.unwrap().iter().map(|r| r.state).collect();
    assert_eq!(left, [State::Dead, State::Pending]);
}

/// The counts say what is stored.
pub async fn stats_count_what_is_stored(inbox: &impl Inbox) {
    for n in 1..=5 {
        append(inbox, n, None).await;
    }
    let claimed = claim(inbox, 2, LEASE).await;
    let outcomes = [Outcome::Done, Outcome::Dead { error: "boom".into() }];
    let completions: Vec<Completion> = claimed
        .iter()
        .zip(outcomes)
        .map(|(c, outcome)| Completion { claim: c.claim, kind: c.delivery.kind, outcome })
        .collect();
    inbox.complete(&completions).await.unwrap();
    let stats = inbox.stats().await.unwrap();
    assert_eq!((stats.pending, stats.done, stats.dead), (3, 1, 1));
    assert_eq!(stats.fallback, 3, "deliveries 1, 3 and 5 went to the fallback");
    assert_eq!(inbox.depth().await.unwrap(), meet_webhooks_runtime::inbox::Depth { pending: 3, dead: 1 });
    // Claimed now: one by this inbox's owner.
    assert_eq!(claim(inbox, 1, LEASE).await.len(), 1);
    let counts = inbox.counts().await.unwrap();
    assert_eq!((counts.pending, counts.dead, counts.fallback), (3, 1, 3));
    assert_eq!(counts.claimed_by, [("contract".to_owned(), 1)]);
    assert_eq!(inbox.list(Filter::State(State::Pending), None, 10).await.unwrap().len(), 3);
    assert_eq!(inbox.list(Filter::Fallback, None, 10).await.unwrap().len(), 3);
}

/// A delivery of `room` (and `recording`) that the provider created at `created` (ms).
fn dated(n: u8, room: &str, recording: Option<&str>, created: i64) -> NewDelivery {
    NewDelivery {
        event: Some(format!("event{n}")),
        recording: recording.map(Into::into),
        created_us: Some(created * 1000),
        ..delivery(n, Some(room))
    }
}

async fn append_new(inbox: &impl Inbox, delivery: NewDelivery) -> i64 {
    match inbox.append(delivery).await.unwrap() {
        Appended::New(id) => id,
        other => panic!("{other:?}"),
    }
}

/// Claims one delivery (the only one claimable), handles it, and returns its claim.
async fn handle_next(inbox: &impl Inbox) -> Claimed {
    let mut claimed = claim(inbox, 10, LEASE).await;
    assert_eq!(claimed.len(), 1, "one claimable: {:?}", ids(&claimed));
    let claimed = claimed.remove(0);
    assert_eq!(complete(inbox, claimed.claim, Outcome::Done).await, Completed::Recorded);
    claimed
}

/// A room runs in the order the provider created its events (`creationDate`), whatever order
/// they arrived in: an arrival created before the room's unclaimed head takes its place. A
/// delivery without a `creationDate` is placed by its arrival.
pub async fn a_room_runs_in_creation_order_whatever_the_arrival(inbox: &impl Inbox) {
    let now = now_ms();
    let third = append_new(inbox, dated(1, "a", None, now - 1000)).await;
    let first = append_new(inbox, dated(2, "a", None, now - 3000)).await;
    let undated = append_new(inbox, delivery(3, Some("a"))).await; // arrived now: last
    let second = append_new(inbox, dated(4, "a", None, now - 2000)).await;
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(handle_next(inbox).await.claim.id);
    }
    assert_eq!(order, [first, second, third, undated]);
    let stored = inbox.get(first).await.unwrap().unwrap();
    assert_eq!(stored.created_us, Some((now - 3000) * 1000), "the creationDate is kept");
}

/// An earlier event that arrives while its room's head is claimed waits for it (one at a time);
/// when that head is released for a retry, the earlier one goes first.
pub async fn an_earlier_arrival_waits_for_a_claimed_head_and_goes_before_its_retry(inbox: &impl Inbox) {
    let now = now_ms();
    let later = append_new(inbox, dated(1, "a", None, now - 1000)).await;
    let [running] = &claim(inbox, 10, LEASE).await[..] else { panic!("the head") };
    let earlier = append_new(inbox, dated(2, "a", None, now - 2000)).await;
    assert!(claim(inbox, 10, LEASE).await.is_empty(), "the room's head is claimed: nothing else of it runs");
    let retry = Outcome::Retry { after: Duration::ZERO, error: "again".into() };
    assert_eq!(complete(inbox, running.claim, retry).await, Completed::Recorded);
    assert_eq!(handle_next(inbox).await.claim.id, earlier, "the retry gave its place");
    let again = handle_next(inbox).await;
    assert_eq!((again.claim.id, again.attempt), (later, 2));
}

/// A claim says which later event of its room, and of its recording, was handled already (by
/// `creationDate`), and the delivery keeps the room's for `inbox show`.
pub async fn a_claim_says_which_later_event_was_handled_already(inbox: &impl Inbox) {
    let now = now_ms();
    let ended = append_new(inbox, dated(1, "a", Some("rec1"), now - 1000)).await;
    handle_next(inbox).await;
    let other = append_new(inbox, dated(2, "a", Some("rec2"), now - 500)).await;
    handle_next(inbox).await;
    // Created before both, arriving after them.
    let updated = append_new(inbox, dated(3, "a", Some("rec1"), now - 2000)).await;
    let late = handle_next(inbox).await;
    assert_eq!(late.claim.id, updated);
    let room = late.lateness.room.as_ref().expect("a later event of the room was handled");
    assert_eq!((room.id, room.event.as_deref(), room.created_us), (other, Some("event2"), (now - 500) * 1000));
    let recording = late.lateness.recording.as_ref().expect("a later event of its recording was handled");
    assert_eq!((recording.id, recording.created_us), (ended, (now - 1000) * 1000));
    assert_eq!(inbox.get(updated).await.unwrap().unwrap().late.map(|l| l.id), Some(other));
    // Between the two: late for the room, not for its recording (none of rec3 was handled).
    append_new(inbox, dated(4, "a", Some("rec3"), now - 700)).await;
    let between = handle_next(inbox).await;
    assert_eq!((between.lateness.room.map(|l| l.id), between.lateness.recording), (Some(other), None));
    // After all of them, in another room, or without a creationDate: not late.
    append_new(inbox, dated(5, "a", Some("rec1"), now)).await;
    assert_eq!(handle_next(inbox).await.lateness, Default::default());
    append_new(inbox, dated(6, "b", Some("rec1"), now - 5000)).await;
    assert_eq!(handle_next(inbox).await.lateness, Default::default());
    append_new(inbox, delivery(7, Some("a"))).await;
    assert_eq!(handle_next(inbox).await.lateness, Default::default());
}

/// A delivery held by the reorder window is not claimed until it is due, and an earlier event
/// of its room that arrives meanwhile goes first.
pub async fn the_reorder_window_holds_a_room_s_delivery(inbox: &impl Inbox) {
    let now = now_ms();
    let held = NewDelivery { hold: Duration::from_secs(60), ..dated(1, "a", None, now - 1000) };
    let received = held.received_at_ms;
    let held = append_new(inbox, held).await;
    // Due when its window ends, from its arrival (or its commit, on the storage's clock).
    let due = inbox.get(held).await.unwrap().unwrap().due_at.unwrap();
    assert!((received + 60_000..=now_ms() + 60_000 + 1000).contains(&due), "{due} {received}");
    let roomless = append_new(inbox, delivery(2, None)).await;
    assert_eq!(ids(&claim(inbox, 10, LEASE).await), [roomless], "the room's one is held");
    let earlier = append_new(inbox, dated(3, "a", None, now - 2000)).await;
    assert_eq!(handle_next(inbox).await.claim.id, earlier, "the earlier one, not held, goes first");
    assert!(claim(inbox, 10, LEASE).await.is_empty(), "still held: {held}");
}

/// Claims through `inbox` each time its wake-ups say to look (and only then) until `id` is
/// claimed; fails if they fall silent for 5 s first (a dispatcher would wait for its poll).
pub async fn claimed_when_woken(inbox: &impl Inbox, id: i64) {
    for _ in 0..100 {
        let woken = tokio::time::timeout(Duration::from_secs(5), inbox.wakeups().wait()).await;
        assert!(woken.is_ok(), "delivery {id} was claimable and nothing woke the dispatcher");
        if claim(inbox, 10, LEASE).await.iter().any(|c| c.claim.id == id) {
            return;
        }
    }
    panic!("woken a hundred times and delivery {id} never claimed");
}

/// A commit that stores a delivery wakes the dispatcher, and one held by the reorder window
/// wakes it again when it comes due: neither waits for a poll.
pub async fn the_dispatcher_is_woken_when_a_delivery_can_be_claimed(inbox: &impl Inbox) {
    let now = append_new(inbox, delivery(1, None)).await;
    claimed_when_woken(inbox, now).await;
    let hold = Duration::from_millis(400);
    let appended = std::time::Instant::now();
    let held = append_new(inbox, NewDelivery { hold, ..dated(2, "a", None, now_ms()) }).await;
    claimed_when_woken(inbox, held).await;
    assert!(appended.elapsed() >= hold, "claimed after {:?}, within its hold", appended.elapsed());
}

/// One thing a test does to an inbox in [`any_order_of_arrivals_and_outcomes`].
#[derive(Debug, Clone)]
pub enum Step {
    /// A delivery to one of three rooms, created at one of eight times (or without a
    /// `creationDate`: placed by its arrival, after those).
    Append(u8, Option<u8>),
    Claim(usize),
    /// A claim whose lease runs out at once (its process stopped): its room stays held until
    /// the claim is taken over or its outcome comes.
    ClaimExpiring(usize),
    /// An outcome for one of the outstanding claims (by position): done, dead, a retry due at
    /// once, or an attempt given back.
    Complete(usize, u8),
    /// An outcome for a claim taken over since: fenced.
    Late(usize),
}

pub fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..3u8, proptest::option::weighted(0.85, 0..8u8)).prop_map(|(room, created)| Step::Append(room, created)),
        3 => (1..4usize).prop_map(Step::Claim),
        1 => (1..3usize).prop_map(Step::ClaimExpiring),
        4 => (0..32usize, 0..4u8).prop_map(|(i, kind)| Step::Complete(i, kind)),
        1 => (0..32usize).prop_map(Step::Late),
    ]
}

/// What [`any_order_of_arrivals_and_outcomes`] knows of a delivery.
struct Known {
    room: String,
    /// Its place in its room: `(order, arrival)`.
    place: (i64, usize),
    stored_at: usize,
    first_claimed_at: Option<usize>,
    pending: bool,
}

/// Any arrival order, any interleaving of claims, outcomes and claims whose process stopped:
/// each room runs one delivery at a time, and its runs are in `creationDate` order among the
/// deliveries stored before the earlier of two runs first started (the strongest order a
/// scheduler that cannot see the future can give); no delivery runs once it is done or dead,
/// and in the end each one is. `case` keeps the rooms of one case apart from another's in an
/// inbox shared by all of them.
pub async fn any_order_of_arrivals_and_outcomes(inbox: &impl Inbox, case: u64, steps: &[Step]) {
    use std::collections::HashMap;
    static SIGNATURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let base_ms = now_ms() - 100_000;
    let mut known: HashMap<i64, Known> = HashMap::new();
    // Claims whose outcome has not come, with whether their lease ran out; claims taken over.
    let mut outstanding: Vec<(Claim, bool)> = Vec::new();
    let mut taken_over: Vec<Claim> = Vec::new();
    // Every run in the order claimed: (delivery, step).
    let mut runs: Vec<(i64, usize)> = Vec::new();
    let claimed_now = |known: &mut HashMap<i64, Known>,
                       outstanding: &mut Vec<(Claim, bool)>,
                       taken_over: &mut Vec<Claim>,
                       runs: &mut Vec<(i64, usize)>,
                       claimed: Vec<Claimed>,
                       expiring: bool,
                       at: usize| {
        for c in claimed {
            let id = c.claim.id;
            let room = known[&id].room.clone();
            assert!(known[&id].pending, "{id} claimed once it was done or dead");
            if let Some(old) = outstanding.iter().position(|(o, _)| o.id == id) {
                let (old, expired) = outstanding.remove(old);
                assert!(expired && c.claim.fence > old.fence, "{id}: only a claim that ran out is taken over");
                taken_over.push(old);
            }
            let busy = outstanding.iter().find(|(o, _)| known[&o.id].room == room);
            assert!(busy.is_none(), "{room}: {id} claimed while {:?} holds the room", busy.map(|b| b.0.id));
            known.get_mut(&id).unwrap().first_claimed_at.get_or_insert(at);
            runs.push((id, at));
            outstanding.push((c.claim, expiring));
        }
    };
    for (at, step) in steps.iter().enumerate() {
        match step {
            Step::Append(room, created) => {
                let n = SIGNATURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let room = format!("case{case}-{room}");
                let mut d = delivery(0, Some(&room));
                d.signature[..8].copy_from_slice(&n.to_be_bytes());
                d.created_us = created.map(|c| (base_ms + i64::from(c)) * 1000);
                let order = d.order();
                let id = append_new(inbox, d).await;
                known.insert(
                    id,
                    Known { room, place: (order, at), stored_at: at, first_claimed_at: None, pending: true },
                );
            }
            Step::Claim(limit) | Step::ClaimExpiring(limit) => {
                let expiring = matches!(step, Step::ClaimExpiring(_));
                let lease = if expiring { Duration::ZERO } else { LEASE };
                let claimed = inbox.claim(ClaimRequest { limit: *limit, lease, max_attempts: 1000 }).await.unwrap();
                assert!(claimed.len() <= *limit);
                claimed_now(&mut known, &mut outstanding, &mut taken_over, &mut runs, claimed, expiring, at);
                if expiring {
                    tokio::time::sleep(Duration::from_millis(2)).await; // the lease is over
                }
            }
            Step::Complete(i, kind) => {
                if outstanding.is_empty() {
                    continue;
                }
                let (claim, _) = outstanding.remove(i % outstanding.len());
                let outcome = match kind {
                    0 => Outcome::Done,
                    1 => Outcome::Dead { error: "boom".into() },
                    2 => Outcome::Retry { after: Duration::ZERO, error: "again".into() },
                    _ => Outcome::Interrupted,
                };
                assert_eq!(complete(inbox, claim, outcome).await, Completed::Recorded);
                if *kind < 2 {
                    known.get_mut(&claim.id).unwrap().pending = false;
                }
            }
            Step::Late(i) => {
                if !taken_over.is_empty() {
                    let claim = taken_over[i % taken_over.len()];
                    assert_eq!(complete(inbox, claim, Outcome::Done).await, Completed::Fenced);
                }
            }
        }
    }
    // Everything left is handled, one room at a time.
    let mut at = steps.len();
    loop {
        for (claim, _) in std::mem::take(&mut outstanding) {
            assert_eq!(complete(inbox, claim, Outcome::Done).await, Completed::Recorded);
            known.get_mut(&claim.id).unwrap().pending = false;
        }
        // As many attempts as the steps' claims allow: none is buried for running out of them.
        let claimed = inbox.claim(ClaimRequest { limit: 100, lease: LEASE, max_attempts: 1000 }).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        claimed_now(&mut known, &mut outstanding, &mut taken_over, &mut runs, claimed, false, at);
        at += 1;
    }
    for (id, k) in &known {
        assert!(!k.pending, "{id} was never handled");
        assert_ne!(inbox.get(*id).await.unwrap().unwrap().state, State::Pending, "{id}");
    }
    // A run after another of its room is of a delivery placed after it, or stored after that
    // one first started.
    for (i, (earlier, _)) in runs.iter().enumerate() {
        for (later, _) in &runs[i + 1..] {
            let (e, l) = (&known[earlier], &known[later]);
            if e.room == l.room && earlier != later && l.place < e.place {
                let started = e.first_claimed_at.unwrap();
                assert!(
                    l.stored_at > started,
                    "{later} (stored at step {}) ran after {earlier} (started at step {started}), which is placed after it",
                    l.stored_at
                );
            }
        }
    }
}

/// Runs every rule on a backend: `$open` makes a fresh inbox for a test (and what must live as
/// long as it), or `None` when the backend is not there.
macro_rules! rules {
    ($backend:ident, $open:expr, [$($rule:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[test]
                fn $rule() {
                    let opened = $open;
                    let Some((inbox, _keep)) = opened else { return };
                    crate::common::block_on(async {
                        super::$rule(&inbox).await;
                        meet_webhooks_runtime::inbox::Inbox::close(&inbox).await;
                    });
                }
            )*
        }
    };
}

macro_rules! every_rule {
    ($backend:ident, $open:expr) => {
        rules!(
            $backend,
            $open,
            [
                a_retry_is_a_duplicate_of_what_is_stored,
                a_room_is_handled_one_at_a_time_in_order,
                a_claim_takes_at_most_its_limit_oldest_first,
                a_stale_claim_changes_nothing,
                a_claim_whose_lease_ran_out_is_taken_over,
                each_outcome_is_recorded_as_given,
                a_search_finds_deliveries_by_what_they_are_newest_first,
                every_attempt_is_kept_in_the_delivery_s_history,
                a_delivery_that_never_finished_its_last_attempt_is_buried,
                a_replay_starts_a_delivery_afresh,
                a_delivery_is_queued_by_the_commit_that_stores_or_replays_it,
                a_replayed_delivery_goes_behind_its_room_s_pending_ones,
                a_room_runs_in_creation_order_whatever_the_arrival,
                an_earlier_arrival_waits_for_a_claimed_head_and_goes_before_its_retry,
                a_claim_says_which_later_event_was_handled_already,
                the_reorder_window_holds_a_room_s_delivery,
                the_dispatcher_is_woken_when_a_delivery_can_be_claimed,
                pruning_deletes_handled_deliveries_only,
                stats_count_what_is_stored,
            ]
        );
    };
}

/// A fresh SQLite inbox in a directory of its own.
pub fn sqlite() -> Option<(meet_webhooks_runtime::inbox::SqliteInbox, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    Some((meet_webhooks_runtime::inbox::SqliteInbox::open(dir.path(), "contract").unwrap(), dir))
}

/// A fresh PostgreSQL inbox in a database of its own, when there is a server.
pub fn postgres() -> Option<(meet_webhooks_runtime::inbox::PgInbox, crate::postgres::TestDatabase)> {
    let db = crate::postgres::TestDatabase::create()?;
    Some((meet_webhooks_runtime::inbox::PgInbox::connect(&db.url, "contract").unwrap(), db))
}

/// A fresh in-memory inbox.
pub fn memory() -> Option<(meet_webhooks_runtime::inbox::MemoryInbox, ())> {
    Some((meet_webhooks_runtime::inbox::MemoryInbox::new("contract"), ()))
}

every_rule!(memory, super::memory());
every_rule!(sqlite, super::sqlite());
every_rule!(postgres, super::postgres());

/// [`any_order_of_arrivals_and_outcomes`] on each backend: one inbox for all the cases (closed,
/// and its database dropped, at the end).
mod scheduling {
    use super::{any_order_of_arrivals_and_outcomes, step};
    use meet_webhooks_runtime::inbox::Inbox;

    fn property(inbox: &impl Inbox) {
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config { cases: 32, ..Config::default() });
        let case = std::sync::atomic::AtomicU64::new(0);
        let result = runner.run(&proptest::collection::vec(step(), 1..60), |steps| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            crate::common::block_on(any_order_of_arrivals_and_outcomes(inbox, case, &steps));
            Ok(())
        });
        crate::common::block_on(inbox.close());
        if let Err(failure) = result {
            panic!("{failure}");
        }
    }

    #[test]
    fn memory() {
        property(&super::memory().unwrap().0);
    }

    #[test]
    fn sqlite() {
        let (inbox, _dir) = super::sqlite().unwrap();
        property(&inbox);
    }

    #[test]
    fn postgres() {
        let Some((inbox, _db)) = super::postgres() else { return };
        property(&inbox);
    }
}
