//! The webhook route: behind the verification middleware, the endpoint that turns a verified
//! delivery into a stored one (or, without the inbox, a handler call).
//!
//! ```text
//! POST <path> ─▶ verify_delivery (middleware) ─▶ receive ─ classify: typed event or fallback
//!                  415/400/413/408/401              │      (strict mode: fallback → 422)
//!                                                   ├─ inbox: append, await the commit → 200
//!                                                   │    duplicate → 200; storage down → 503
//!                                                   └─ no inbox: replay cache, handler inline
//!                                                        → 200, or 500 so the provider retries
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::middleware::from_fn;
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use serde_json::json;

use crate::clock::millis_since_epoch;
use crate::error::Rejection;
use crate::inbox::{Appended, Inbox, Kind, NewDelivery};
use crate::metrics::{self, Outcome};
use crate::middleware::{Delivery, Gate, verify_delivery};
use crate::replay::{Begin, ReplayCache};
use crate::webhooks::{DeliveryContext, Envelope, Unmatched, Webhooks, envelope, hand_over, leading_event};

/// Everything the receiving endpoint needs (assembled by [`crate::service::ServiceBuilder`]).
pub(crate) struct Endpoint<W> {
    pub(crate) webhooks: Arc<W>,
    /// Unmatched deliveries are refused with 422 instead of going to the fallback.
    pub(crate) strict: bool,
    mode: Mode,
}

/// The inbox's part of the endpoint.
pub(crate) struct Stored {
    inbox: Arc<dyn Inbox>,
    /// How long a delivery of a room waits once stored ([`NewDelivery::hold`]).
    reorder_window: Duration,
}

enum Mode {
    /// Stored, then handled by the inbox's dispatcher.
    Inbox(Stored),
    /// Handled before answering; retries are recognised in memory.
    Inline {
        replay: ReplayCache,
        /// How long after its timestamp verification accepts a delivery.
        max_age: Duration,
    },
}

impl<W: Webhooks> Endpoint<W> {
    /// Deliveries are stored in `inbox` and answered once committed; its dispatcher calls
    /// `webhooks`.
    pub(crate) fn with_inbox(webhooks: Arc<W>, inbox: Arc<dyn Inbox>, strict: bool, reorder_window: Duration) -> Self {
        Self { webhooks, strict, mode: Mode::Inbox(Stored { inbox, reorder_window }) }
    }

    /// Deliveries are handled before they are answered (no storage); a retry is recognised
    /// for `max_age` (verification refuses it after that), `replay_capacity` at once.
    pub(crate) fn inline(webhooks: Arc<W>, max_age: Duration, strict: bool, replay_capacity: usize) -> Self {
        Self { webhooks, strict, mode: Mode::Inline { replay: ReplayCache::new(replay_capacity), max_age } }
    }
}

/// Registers the webhook route at `path`. The gate and endpoint are shared with the caller
/// (tests look into them).
pub(crate) fn configure<W: Webhooks>(
    path: &str,
    gate: web::Data<Gate>,
    receiver: web::Data<Endpoint<W>>,
) -> impl FnOnce(&mut ServiceConfig) {
    let path = path.to_owned();
    move |config| {
        config
            .app_data(gate)
            .app_data(receiver)
            .service(web::resource(path).route(web::post().to(receive::<W>)).wrap(from_fn(verify_delivery)));
    }
}

async fn receive<W: Webhooks>(req: HttpRequest, receiver: web::Data<Endpoint<W>>) -> HttpResponse {
    let started = Instant::now();
    let Some(delivery) = req.extensions_mut().remove::<Delivery>() else {
        log::error!("receive called without a verified delivery: the route lacks verify_delivery");
        return Rejection::Misconfigured.response();
    };
    let receiver = receiver.into_inner();
    let id = delivery_id(&delivery);
    // Until its line below is logged, its handler (on the dispatcher's thread) waits.
    let _accepting =
        matches!(receiver.mode, Mode::Inbox(_)).then(|| crate::logging::Accepting::begin(delivery.verified.signature));
    let Handled { event, outcome, response, stored, reason } = handle(&receiver, &delivery, &id).await;
    let latency = started.elapsed();
    let event = event.as_deref().unwrap_or("");
    let shown = if event.is_empty() { "-" } else { event };
    let status = response.status().as_u16();
    // One line per delivery: info when it is taken, a warning with the peer when refused.
    let name = DeliveryName { stored, signature: &id };
    if response.status().is_success() {
        match &reason {
            Some(reason) => log::info!(
                "delivery {name} event={shown} outcome={outcome} status={status} latency={}us reason: {reason}",
                latency.as_micros()
            ),
            None => log::info!(
                "delivery {name} event={shown} outcome={outcome} status={status} latency={}us",
                latency.as_micros()
            ),
        }
    } else {
        let peer = req.peer_addr().map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        log::warn!(
            "delivery {name} from {peer} event={shown} refused: {status} {outcome}{}",
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    metrics::delivered(&W::SPEC, event, outcome, latency);
    response
}

/// How a delivery is named in the log: its inbox id (what `inbox show` takes) once stored,
/// else the start of its signature (the same for every retry). Formatted only if logged.
struct DeliveryName<'a> {
    stored: Option<i64>,
    signature: &'a str,
}

impl std::fmt::Display for DeliveryName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.stored {
            Some(id) => write!(f, "{id}"),
            None => write!(f, "sig:{}", self.signature),
        }
    }
}

/// What became of one delivery: for the answer, the log line and the metrics.
struct Handled {
    event: Option<String>,
    outcome: Outcome,
    response: HttpResponse,
    /// The inbox id, when it is stored.
    stored: Option<i64>,
    /// Why it went to the fallback, or was refused.
    reason: Option<Reason>,
}

impl Handled {
    fn new(event: Option<String>, outcome: Outcome, response: HttpResponse) -> Self {
        Self { event, outcome, response, stored: None, reason: None }
    }

    /// Refused: the outcome is the rejection's code.
    fn refused(event: Option<String>, rejection: Rejection) -> Self {
        let response = rejection.response();
        Self::new(event, Outcome::Refused(rejection.code()), response).because(Reason::Refused(rejection))
    }

    fn stored(mut self, id: i64) -> Self {
        self.stored = Some(id);
        self
    }

    fn because(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }
}

/// Why a delivery went to the fallback or was refused: kept as it is, formatted only if the
/// line is logged (most deliveries of the provider's mix go to the fallback).
enum Reason {
    Unmatched(Unmatched),
    Refused(Rejection),
    Text(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unmatched(reason) => reason.fmt(f),
            Self::Refused(rejection) => rejection.fmt(f),
            Self::Text(text) => f.write_str(text),
        }
    }
}

/// Handles one verified delivery: what became of it, and its answer ([`Handled`]). `id` names
/// the delivery in logs (a prefix of its signature, the same for every retry).
async fn handle<W: Webhooks>(receiver: &Arc<Endpoint<W>>, delivery: &Delivery, id: &str) -> Handled {
    let body = &delivery.body;
    if let Mode::Inline { replay, max_age } = &receiver.mode
        && let Some(name) = leading_event(body)
        && let Ok(typed) = W::classify(Some(name), body)
    {
        // The provider's bodies start with their event: the typed parse read the rest.
        return handle_inline(receiver, replay, *max_age, delivery, id, Some(name.to_owned()), Ok(typed)).await;
    }
    let envelope = match envelope(body) {
        Ok(envelope) => envelope,
        Err(e) => {
            let why = format!("{}: {e}", Rejection::InvalidJson);
            return Handled::refused(None, Rejection::InvalidJson).because(Reason::Text(why));
        }
    };
    match &receiver.mode {
        Mode::Inbox(stored) => store::<W>(receiver.strict, stored, delivery, id, envelope).await,
        Mode::Inline { replay, max_age } => {
            let event = envelope.event;
            let classified = W::classify(event.as_deref(), body);
            handle_inline(receiver, replay, *max_age, delivery, id, event, classified).await
        }
    }
}

fn refuse_unmatched(event: Option<String>, reason: &Unmatched) -> Handled {
    Handled::refused(event, Rejection::UnmatchedEvent(reason.clone()))
}

/// The first delivery of each event name that matches no typed webhook gets a warning (the
/// admin screen's test button, a webhook newer than the build, a body that changed shape);
/// the rest say why on their own delivery line, and are counted by the deliveries metric
/// (`outcome="fallback"`).
fn warn_unmatched(event: Option<&str>, reason: &Unmatched) {
    if crate::logging::first_time("unmatched", event.unwrap_or("")) {
        log::warn!(
            "event {} matches no typed webhook ({reason}): such deliveries go to WebhookHandler::fallback (said once \
             per event name)",
            event.unwrap_or("<none>")
        );
    }
}

/// Inbox mode: answered 200 only once the delivery is committed.
async fn store<W: Webhooks>(
    strict: bool,
    stored: &Stored,
    delivery: &Delivery,
    id: &str,
    envelope: Envelope,
) -> Handled {
    let Envelope { event, room, recording, created_us } = envelope;
    if room.is_some() && created_us.is_none() && crate::logging::first_time("undated", event.as_deref().unwrap_or("")) {
        log::info!(
            "event {} has no usable creationDate: its room takes it in the order it arrived (said once per event name)",
            event.as_deref().unwrap_or("<none>")
        );
    }
    // Classified now although the dispatcher classifies again from the stored bytes (it may
    // run a newer build): strict mode must refuse before storing, the warning should come
    // while the provider is still connected, and the answer's outcome is counted by kind.
    let reason = W::classify(event.as_deref(), &delivery.body).err();
    if let Some(reason) = &reason {
        warn_unmatched(event.as_deref(), reason);
        if strict {
            return refuse_unmatched(event, reason);
        }
    }
    let new = NewDelivery {
        signature: delivery.verified.signature,
        timestamp: String::from_utf8_lossy(delivery.timestamp.as_bytes()).into_owned(),
        timestamp_ms: delivery.verified.timestamp_ms,
        event: event.clone(),
        kind: if reason.is_none() { Kind::Typed } else { Kind::Fallback },
        // Only a room's deliveries have an order to wait for.
        hold: if room.is_some() { stored.reorder_window } else { Duration::ZERO },
        room,
        recording,
        created_us,
        body: delivery.body.clone(),
        received_at_ms: millis_since_epoch(delivery.received_at),
    };
    match stored.inbox.append(new).await {
        Ok(Appended::New(id)) => {
            let outcome = if reason.is_none() { Outcome::Accepted } else { Outcome::Fallback };
            let handled = Handled::new(event, outcome, ok_stored("accepted", id)).stored(id);
            match reason {
                Some(reason) => handled.because(Reason::Unmatched(reason)),
                None => handled,
            }
        }
        Ok(Appended::Duplicate(id)) => Handled::new(event, Outcome::Duplicate, ok_stored("duplicate", id)).stored(id),
        Err(error) => {
            log::error!("delivery sig:{id} not stored, answered 503 (the provider will retry): {error}");
            Handled::refused(event, Rejection::StorageUnavailable)
        }
    }
}

/// No inbox: the handler runs before the answer.
async fn handle_inline<W: Webhooks>(
    receiver: &Arc<Endpoint<W>>,
    replay: &ReplayCache,
    max_age: Duration,
    delivery: &Delivery,
    id: &str,
    event: Option<String>,
    classified: Result<W::Event, Unmatched>,
) -> Handled {
    let body = &delivery.body;

    let key = &delivery.verified.signature;
    // Verification accepts this delivery (and its retries, which carry the same timestamp)
    // until then; the cache remembers it that long.
    let expires_ms =
        delivery.verified.timestamp_ms.saturating_add(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX));
    match replay.begin(key, expires_ms, millis_since_epoch(delivery.received_at)) {
        Begin::New => {}
        Begin::Duplicate => {
            return Handled::new(event, Outcome::Duplicate, ok_status("duplicate"));
        }
        Begin::InFlight => return Handled::refused(event, Rejection::InProgress),
        Begin::Full => return Handled::refused(event, Rejection::Busy),
    }

    let ctx = DeliveryContext {
        delivery_id: id.to_owned(),
        attempt: 1,
        timestamp_ms: delivery.verified.timestamp_ms,
        received_at: delivery.received_at,
        queued_at: delivery.received_at,
        event: event.clone(),
        body: body.clone(),
        // Without the inbox deliveries are handled as they arrive: nothing is ordered.
        creation_date: None,
        later_in_room: None,
        later_in_recording: None,
    };
    let reason = classified.as_ref().err().cloned();
    if let Err(unmatched) = &classified {
        warn_unmatched(event.as_deref(), unmatched);
        if receiver.strict {
            replay.abort(key, expires_ms);
            return refuse_unmatched(event, unmatched);
        }
    }
    let outcome = if classified.is_ok() { Outcome::Handled } else { Outcome::Fallback };
    let result = hand_over(&*receiver.webhooks, &ctx, classified).await;
    match result {
        Ok(()) => {
            replay.complete(key, expires_ms);
            let handled = Handled::new(event, outcome, ok_status(outcome.label()));
            match reason {
                Some(reason) => handled.because(Reason::Unmatched(reason)),
                None => handled,
            }
        }
        Err(error) => {
            replay.abort(key, expires_ms);
            metrics::handler_failed(&W::SPEC, event.as_deref().unwrap_or(""));
            Handled::refused(event, Rejection::HandlerFailed)
                .because(Reason::Text(format!("the handler failed: {error}")))
        }
    }
}

/// `200 {"status": "<status>"}`, without building a JSON value per delivery.
fn ok_status(status: &'static str) -> HttpResponse {
    let body = match status {
        "handled" => r#"{"status":"handled"}"#,
        "fallback" => r#"{"status":"fallback"}"#,
        "duplicate" => r#"{"status":"duplicate"}"#,
        _ => return HttpResponse::Ok().json(json!({ "status": status })),
    };
    json_ok(body)
}

/// `200 {"status": "<status>", "id": <id>}` (a stored delivery), written as text, not built as
/// a `json!` value and serialized (`bench/results/figures-in-code.md`, answer-as-text).
fn ok_stored(status: &'static str, id: i64) -> HttpResponse {
    json_ok(format!(r#"{{"status":"{status}","id":{id}}}"#))
}

/// 200 with a JSON body.
fn json_ok(body: impl actix_web::body::MessageBody + 'static) -> HttpResponse {
    // A static header value: `ContentType::json()` formats and re-validates the MIME type.
    HttpResponse::Ok().insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json"))).body(body)
}

/// The first 8 bytes of the signature in hex: the same for every retry of a delivery.
fn delivery_id(delivery: &Delivery) -> String {
    let mut id = [0u8; 16];
    hex::encode_to_slice(&delivery.verified.signature[..8], &mut id).expect("16 hex digits for 8 bytes");
    // `hex::encode` collects `char`s one at a time; this is one allocation and a copy.
    String::from_utf8_lossy(&id).into_owned()
}
