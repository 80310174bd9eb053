//! The seam between the runtime and the code the generator writes for a spec: [`Webhooks`],
//! which the generated adapter implements, and what the generated code stands on (delivery
//! metadata, handler results, the typed parse with its reasons for falling back).
//!
//! The generated code names these as `::meet_webhooks_runtime::...`, from whichever crate runs
//! the generator in its `build.rs`.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::time::SystemTime;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// One webhook of the spec, as the generator saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookInfo {
    /// The key under `webhooks:`: the `event` field of its deliveries.
    pub event: &'static str,
    /// The spec's operationId.
    pub operation_id: &'static str,
    /// The handler method: the snake_case operationId.
    pub method: &'static str,
    /// The spec's summary.
    pub summary: &'static str,
    /// The generated body type (`types::...`).
    pub body_type: &'static str,
    /// A body built from the spec's examples (JSON), for `send` and tests.
    pub example: &'static str,
}

/// What the generator knows of the spec it generated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// `info.title`.
    pub title: &'static str,
    /// `info.version`.
    pub version: &'static str,
    /// Every webhook, in spec order.
    pub webhooks: &'static [WebhookInfo],
    /// Every operation of the REST API's client, in spec order (none without `paths:`).
    pub operations: &'static [OperationInfo],
    /// The handler type the build looked at and the methods it implements (the others run
    /// their defaults); `None` if the build did not look.
    pub implemented: Option<(&'static str, &'static [&'static str])>,
    /// What handler code sees of each webhook (JSON, `meet_webhooks_codegen::Shape`): what
    /// `spec diff` compares a newer spec with.
    pub shape: &'static str,
}

impl Spec {
    /// The webhook whose deliveries carry `event`.
    pub fn webhook(&self, event: &str) -> Option<&'static WebhookInfo> {
        self.webhooks.iter().find(|w| w.event == event)
    }
}

/// One operation of the spec's REST API: a method of the generated client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationInfo {
    /// The spec's operationId (the client method is its snake_case).
    pub operation_id: &'static str,
    /// `GET`, `POST`, ...
    pub method: &'static str,
    /// The path under the API's base URL.
    pub path: &'static str,
    /// The spec's summary.
    pub summary: &'static str,
}

/// A spec's webhooks served by a handler: what the runtime needs from generated code, and all
/// it knows of it. The generator writes the implementation (`Receiver<H>`, around any
/// `WebhookHandler` of that spec); the runtime never names a generated type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not served to the runtime as it is",
    label = "give `Receiver::new(...)` of this instead",
    note = "the code generated from the spec serves a `WebhookHandler` through its `Receiver`: `ServiceBuilder::new(Receiver::new(handler), keys)`"
)]
pub trait Webhooks: Send + Sync + 'static {
    /// A delivery parsed into the typed body of its webhook.
    type Event: Send + 'static;

    /// The spec the implementation was generated from.
    const SPEC: Spec;

    /// Classifies a body by its `event` field (`None` when it has none): the typed event, or
    /// why it goes to the fallback.
    fn classify(event: Option<&str>, body: &[u8]) -> Result<Self::Event, Unmatched>;

    /// Runs the handler method of a typed event.
    fn handle(&self, ctx: &DeliveryContext, event: Self::Event) -> impl Future<Output = HandlerResult> + Send;

    /// Runs the handler's fallback for a delivery that matched no typed webhook.
    fn fallback(&self, ctx: &DeliveryContext, event: UnmatchedEvent) -> impl Future<Output = HandlerResult> + Send;
}

/// Hands a classified delivery to the handler method it belongs to: its typed method, or the
/// fallback. One function for the receiver without the inbox (before the answer) and for the
/// inbox's dispatcher (after it).
pub(crate) async fn hand_over<W: Webhooks>(
    webhooks: &W,
    ctx: &DeliveryContext,
    classified: Result<W::Event, Unmatched>,
) -> HandlerResult {
    match classified {
        Ok(event) => webhooks.handle(ctx, event).await,
        Err(reason) => {
            // Checked to be a JSON object before it was classified or stored; parsed only if the
            // fallback reads it.
            let body = JsonBody::new(ctx.body.clone());
            webhooks.fallback(ctx, UnmatchedEvent { event: ctx.event.clone(), reason, body }).await
        }
    }
}

/// What a handler knows about the delivery it handles.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryContext {
    /// Identifies the delivery, so a handler can make its side effects idempotent: its inbox id
    /// (what `meet-webhooks inbox show` takes), or without the inbox a prefix of its signature.
    /// Either way it is the same for every retry of the delivery by the provider.
    pub delivery_id: String,
    /// 1 on the first attempt to handle this delivery.
    pub attempt: u32,
    /// The `X-Timestamp` the provider sent, in milliseconds since the Unix epoch (normalized
    /// when it was sent in seconds).
    pub timestamp_ms: i64,
    /// When this receiver accepted the delivery.
    pub received_at: SystemTime,
    /// When the inbox stored the delivery, in the transaction whose commit acknowledged it (or
    /// when it was replayed): from here it waited for this handler
    /// (`meet_webhooks_handler_lag_seconds`, on its first attempt). `received_at` without the inbox.
    pub queued_at: SystemTime,
    /// The event name the body carries (`None` if it has none).
    pub event: Option<String>,
    /// The body exactly as the provider signed it (to archive or forward it, or to read a
    /// field in its wire form).
    pub body: actix_web::web::Bytes,
    /// The body's `creationDate` (milliseconds since the epoch, the provider's clock), when it
    /// has a usable one: the order the provider created its events in.
    pub creation_date: Option<f64>,
    /// The latest event of this delivery's room that was handled already although the provider
    /// created it after this one: this delivery arrived late. Always `None` without the inbox.
    pub later_in_room: Option<LaterEvent>,
    /// For a recording event, the same within its recording (`data.recordingId`): a
    /// `recordingUpdated` whose `recordingEnded` was handled before it.
    ///
    /// ```
    /// # use meet_webhooks_runtime::{DeliveryContext, HandlerResult};
    /// async fn recording_updated(ctx: &DeliveryContext) -> HandlerResult {
    ///     if ctx.later_in_recording.is_some() { return Ok(()); } // its recording was handled further already
    ///     // ... keep the recording's new state
    ///     Ok(())
    /// }
    /// ```
    pub later_in_recording: Option<LaterEvent>,
}

/// An event handled before the one being handled, although the provider created it after.
#[derive(Debug, Clone, PartialEq)]
pub struct LaterEvent {
    /// Its inbox id (what `meet-webhooks inbox show` takes).
    pub delivery_id: String,
    pub event: Option<String>,
    /// Its `creationDate`, in milliseconds since the epoch.
    pub creation_date: f64,
}

impl LaterEvent {
    /// From what the inbox recorded.
    pub fn from_inbox(later: &crate::inbox::Later) -> Self {
        Self {
            delivery_id: later.id.to_string(),
            event: later.event.clone(),
            creation_date: later.created_us as f64 / 1000.0,
        }
    }
}

/// A handler's error. With the inbox (the default) the attempt is recorded as failed and the
/// delivery tried again after a backoff, up to `--max-attempts`, then it is dead (kept for
/// `inbox replay`); with `--no-inbox` the delivery is answered 500 and the provider retries it.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What every handler method returns.
pub type HandlerResult = Result<(), HandlerError>;

/// Why a signed delivery did not become a typed event ([`Webhooks::Event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmatched {
    /// The body has no string `event` field.
    NoEventName,
    /// The spec has no webhook of that name (`testEvent`, or one added since the last build).
    UnknownEvent,
    /// The body does not fit the webhook's type.
    Mismatch {
        /// Where in the body (`data.status`); empty for the whole body.
        path: String,
        /// What serde said.
        message: String,
    },
}

impl fmt::Display for Unmatched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoEventName => f.write_str("the body has no string `event` field"),
            Self::UnknownEvent => f.write_str("the spec has no webhook of this name"),
            Self::Mismatch { path, message } if path.is_empty() || path == "." => {
                write!(f, "the body does not fit the spec: {message}")
            }
            Self::Mismatch { path, message } => {
                write!(f, "the body does not fit the spec at `{path}`: {message}")
            }
        }
    }
}

/// A signed delivery that matched no typed webhook, handed to the fallback method whole.
#[derive(Debug, Clone)]
pub struct UnmatchedEvent {
    /// The body's `event` field, if it has one.
    pub event: Option<String>,
    /// Why it did not match.
    pub reason: Unmatched,
    /// The body as JSON (`event.body["data"]["roomId"]`), parsed when it is first read.
    pub body: JsonBody,
}

/// A body as a [`serde_json::Value`], parsed the first time it is read: a fallback that does
/// not read it (the default one acknowledges and drops) does not pay for building it
/// (`bench/results/figures-in-code.md`, lazy-json-body). Reads as a `&Value`
/// (`body["data"]`, `body.get("data")`); [`JsonBody::into_value`] takes it.
///
/// The receiver checked that the bytes are a JSON object before the delivery got here; bytes
/// that are not JSON (a body stored by an older build and replayed) read as `Value::Null`.
#[derive(Clone)]
pub struct JsonBody {
    bytes: actix_web::web::Bytes,
    parsed: std::sync::OnceLock<serde_json::Value>,
}

impl JsonBody {
    /// The JSON in `bytes`, parsed when first read.
    pub fn new(bytes: actix_web::web::Bytes) -> Self {
        Self { bytes, parsed: std::sync::OnceLock::new() }
    }

    /// The parsed value.
    pub fn value(&self) -> &serde_json::Value {
        self.parsed.get_or_init(|| Self::parse(&self.bytes))
    }

    /// The parsed value, owned.
    pub fn into_value(self) -> serde_json::Value {
        self.parsed.into_inner().unwrap_or_else(|| Self::parse(&self.bytes))
    }

    fn parse(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
    }
}

impl std::ops::Deref for JsonBody {
    type Target = serde_json::Value;

    fn deref(&self) -> &serde_json::Value {
        self.value()
    }
}

impl fmt::Debug for JsonBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value().fmt(f)
    }
}

impl PartialEq<serde_json::Value> for JsonBody {
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.value() == other
    }
}

/// Parses a body into its generated type; a failure says which field.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Unmatched> {
    // Most bodies fit: only a failure pays for tracking the field path, by parsing again.
    serde_json::from_slice(body).or_else(|_| {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| Unmatched::Mismatch {
            path: e.path().to_string(),
            message: without_values(&e.inner().to_string()),
        })
    })
}

/// serde's message without the value it quotes: why a value did not fit is worth logging,
/// the value itself (an e-mail address, a name) is the provider's data and stays out of the
/// log. `invalid type: string "a@b.example", expected f64` → `invalid type: a string, expected
/// f64`; `unknown variant `fail`, expected `force`` → `an unknown variant, expected `force``.
fn without_values(message: &str) -> String {
    // (what serde writes before the value, how the value ends, what replaces both)
    const QUOTED: [(&str, char, &str); 7] = [
        ("string \"", '"', "a string"),
        ("integer `", '`', "an integer"),
        ("floating point `", '`', "a number"),
        ("boolean `", '`', "a boolean"),
        ("character `", '`', "a character"),
        ("unknown variant `", '`', "an unknown variant"),
        ("unknown field `", '`', "an unknown field"),
    ];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    'scan: while !rest.is_empty() {
        for (opening, closing, replacement) in QUOTED {
            if let Some(after) = rest.strip_prefix(opening) {
                // The value ends at its first unescaped closing character.
                let mut escaped = false;
                for (i, c) in after.char_indices() {
                    if c == closing && !escaped {
                        out.push_str(replacement);
                        rest = &after[i + c.len_utf8()..];
                        continue 'scan;
                    }
                    escaped = c == '\\' && !escaped;
                }
                out.push_str(replacement);
                return out;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// What the receiver needs from a body before the typed parse: its `event` name and, for
/// ordering, `creationDate`, `data.roomId` and `data.recordingId`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub event: Option<String>,
    pub room: Option<String>,
    pub recording: Option<String>,
    /// `creationDate` (milliseconds since the epoch, as a JSON number that may carry a
    /// fraction), in whole microseconds; `None` when it is absent, not a number, or not a
    /// date between 1970 and 9999.
    pub created_us: Option<i64>,
}

/// Reads the [`Envelope`] of a body, skipping everything else without building it. `Err` if
/// the body is not a JSON object at all. A non-string `event`, `roomId` or `recordingId`, a
/// `creationDate` that is not a number, or a `data` that is not an object, count as absent:
/// such a body is an event that matches no webhook (or keeps arrival order), not an
/// unreadable one.
pub fn envelope(body: &[u8]) -> Result<Envelope, serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        #[serde(default)]
        event: Lenient,
        #[serde(default)]
        creation_date: Date,
        #[serde(default)]
        data: Data,
    }
    // A derived struct also accepts a JSON array (fields by position); an event is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(serde::de::Error::custom("expected a JSON object"));
    }
    let raw: Raw = serde_json::from_slice(body)?;
    Ok(Envelope {
        event: raw.event.0,
        room: raw.data.room,
        recording: raw.data.recording,
        created_us: raw.creation_date.0,
    })
}

/// The `event` of a body whose first member it is (the provider's order:
/// `{"event":"...","creationDate":...,"data":{...}}`), read without reading the rest; `None`
/// when the body does not start that way (or the name has escapes), so that the caller reads
/// the whole [`envelope`] instead.
///
/// A shortcut for the receiver without the inbox, which needs no `roomId`: a typed parse that
/// succeeds for this name has read and checked the whole body anyway, so the envelope's own
/// pass over it is saved (`bench/results/figures-in-code.md`, leading-event).
pub fn leading_event(body: &[u8]) -> Option<&str> {
    fn skip_whitespace(bytes: &[u8]) -> &[u8] {
        let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
        &bytes[start..]
    }
    /// One JSON string at the start of `bytes` (no escapes), and what follows it.
    fn string(bytes: &[u8]) -> Option<(&str, &[u8])> {
        let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<&str>();
        let value = values.next()?.ok()?;
        Some((value, &bytes[values.byte_offset()..]))
    }
    let rest = skip_whitespace(body).strip_prefix(b"{")?;
    let (key, rest) = string(skip_whitespace(rest))?;
    if key != "event" {
        return None;
    }
    let rest = skip_whitespace(rest).strip_prefix(b":")?;
    let (event, rest) = string(skip_whitespace(rest))?;
    // A complete member: `,` or `}` follows.
    matches!(skip_whitespace(rest).first(), Some(b',' | b'}')).then_some(event)
}

/// A JSON string; `None` for any other value.
#[derive(Default)]
struct Lenient(Option<String>);

/// `roomId` and `recordingId` of a JSON object; nothing for anything else.
#[derive(Default)]
struct Data {
    room: Option<String>,
    recording: Option<String>,
}

/// A JSON number of milliseconds, in whole microseconds; `None` for anything else.
#[derive(Default)]
struct Date(Option<i64>);

/// The latest `creationDate` taken (the year 9999), in milliseconds.
const LAST_DATE_MS: f64 = 253_402_300_800_000.0;

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Pick::Str).map(|p| Lenient(p.text))
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Pick::Data).map(|p| Data { room: p.text, recording: p.recording })
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ms = d.deserialize_any(Pick::Number)?.number;
        // `as` saturates; the range check keeps out what no clock wrote.
        Ok(Date(ms.filter(|ms| (0.0..LAST_DATE_MS).contains(ms)).map(|ms| (ms * 1000.0).round() as i64)))
    }
}

/// Takes one value out of any JSON value and skips the rest (`IgnoredAny`: nothing is built).
#[derive(Clone, Copy)]
enum Pick {
    /// The value itself, if it is a string.
    Str,
    /// The value itself, if it is a number.
    Number,
    /// The string `roomId` and `recordingId` of an object.
    Data,
}

/// What a [`Pick`] took.
#[derive(Default)]
struct Picked {
    text: Option<String>,
    recording: Option<String>,
    number: Option<f64>,
}

impl<'de> serde::de::Visitor<'de> for Pick {
    type Value = Picked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Picked { text: matches!(self, Pick::Str).then(|| v.to_owned()), ..Picked::default() })
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Picked::default())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_f64(v as f64)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Picked { number: matches!(self, Pick::Number).then_some(v), ..Picked::default() })
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Picked::default())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Picked::default())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Picked::default();
        while let Some(key) = map.next_key::<Key>()? {
            match (self, key) {
                (Pick::Data, Key::RoomId) => found.text = map.next_value::<Lenient>()?.0,
                (Pick::Data, Key::RecordingId) => found.recording = map.next_value::<Lenient>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// Object keys, compared without allocating.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Key {
    RoomId,
    RecordingId,
    #[serde(other)]
    Other,
}

/// Every payload type the generator writes (it marks each one), so that [`Presence`] can tell
/// them from `Option`s.
pub trait Payload {}

/// A field that one version of the provider's spec makes optional and another requires: the
/// provider made `data`, `recordingId` and others required over time, which turns the
/// generated `Option<T>` into `T`. Reading such a field with `.present()` (`Some` for a required
/// value, the `Option` itself for an optional one) keeps a handler building across both:
///
/// ```
/// use meet_webhooks_runtime::Presence;
/// let required: String = "room-1".into();
/// let optional: Option<String> = None;
/// assert_eq!(required.present().as_deref(), Some("room-1"));
/// assert_eq!(optional.present(), None);
/// ```
///
/// What stays the same across spec versions is each field's JSON name and meaning; its Rust
/// type may change (`Option<String>` → `String` → an enum). `.present()` covers the first
/// step; `to_string()` covers a string that became an enum (generated enums are `Display`).
pub trait Presence {
    type Value;
    fn present(self) -> Option<Self::Value>;
}

impl<T: Payload> Presence for T {
    type Value = T;
    fn present(self) -> Option<T> {
        Some(self)
    }
}

impl<T: Payload> Presence for Option<T> {
    type Value = T;
    fn present(self) -> Option<T> {
        self
    }
}

/// `Presence` for the JSON scalars: the value itself, and its `Option`.
macro_rules! presence {
    ($($scalar:ty),*) => {$(
        impl Presence for $scalar {
            type Value = $scalar;
            fn present(self) -> Option<$scalar> {
                Some(self)
            }
        }

        impl Presence for Option<$scalar> {
            type Value = $scalar;
            fn present(self) -> Option<$scalar> {
                self
            }
        }
    )*};
}

presence!(String, bool, f64, i64, u64, serde_json::Value, serde_json::Map<String, serde_json::Value>);

/// The default body of every unimplemented typed method.
pub fn unimplemented_webhook(_ctx: &DeliveryContext, webhook: &'static WebhookInfo) -> Ready<HandlerResult> {
    crate::metrics::unhandled(webhook.event);
    if crate::logging::first_time("unimplemented", webhook.event) {
        log::warn!(
            "webhook {} is not handled yet: its deliveries are acknowledged and dropped until \
             WebhookHandler::{} is implemented (said once; counted in meet_webhooks_unhandled_total)",
            webhook.event,
            webhook.method
        );
    }
    ready(Ok(()))
}

/// The default fallback: acknowledges, says so once per event name, and counts.
pub fn unhandled_fallback(spec: &Spec, _ctx: &DeliveryContext, event: UnmatchedEvent) -> Ready<HandlerResult> {
    let name = event.event.as_deref().unwrap_or("");
    crate::metrics::unhandled(crate::metrics::event_label(spec, name));
    if crate::logging::first_time("fallback", name) {
        log::warn!(
            "event {} went to the default fallback: acknowledged and dropped until WebhookHandler::fallback is \
             implemented (said once per event name; counted in meet_webhooks_unhandled_total)",
            if name.is_empty() { "<none>" } else { name }
        );
    }
    ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unmatched_body_is_parsed_when_first_read_and_only_then() {
        let body = JsonBody::new(r#"{"event":"x","data":{"roomId":"r"}}"#.into());
        assert!(body.parsed.get().is_none(), "not parsed before it is read");
        assert_eq!(body["data"]["roomId"], "r");
        assert!(body.parsed.get().is_some());
        assert_eq!(body.clone().into_value(), serde_json::json!({"event": "x", "data": {"roomId": "r"}}));
        assert_eq!(JsonBody::new("not json".into()).into_value(), serde_json::Value::Null);
    }

    #[test]
    fn a_leading_event_is_read_alone() {
        fn event(body: &str) -> Option<&str> {
            leading_event(body.as_bytes())
        }
        assert_eq!(event(r#"{"event":"recordingStarted","data":{"event":"x"}}"#), Some("recordingStarted"));
        assert_eq!(event(" {\n \"event\" : \"a\" }"), Some("a"));
        // Anything else is left to the envelope.
        assert_eq!(event(r#"{"data":{},"event":"a"}"#), None, "not the first member");
        assert_eq!(event(r#"{"event":5}"#), None, "not a string");
        assert_eq!(event(r#"{"event":"caf\u00e9"}"#), None, "escaped");
        assert_eq!(event(r#"["event","a"]"#), None, "not an object");
        assert_eq!(event(r#"{"event":"a" "#), None, "incomplete");
        assert_eq!(event(r#"{"event":"a"x"#), None, "a member must end with a comma or a brace");
        assert_eq!(event(""), None);
    }

    #[test]
    fn the_envelope_is_read_without_the_rest() {
        let e = envelope(br#"{"data":{"x":[1,2],"roomId":"r1"},"event":"recordingStarted"}"#).unwrap();
        assert_eq!((e.event.as_deref(), e.room.as_deref()), (Some("recordingStarted"), Some("r1")));
        assert_eq!(envelope(br#"{"event":5,"data":"x"}"#).unwrap(), Envelope::default());
        let e = envelope(br#"{"event":"recordingUpdated","creationDate":1796403297846.3926,"data":{"roomId":"r","recordingId":"r--EG_1"}}"#)
            .unwrap();
        assert_eq!((e.created_us, e.recording.as_deref()), (Some(1_796_403_297_846_393), Some("r--EG_1")));
        assert_eq!(envelope(br#"{"creationDate":1796403297846}"#).unwrap().created_us, Some(1_796_403_297_846_000));
        for unusable in [r#""1796403297846""#, "-1", "1e300", "null", "{}", "[1]"] {
            let body = format!(r#"{{"creationDate":{unusable},"data":{{"roomId":"r"}}}}"#);
            let e = envelope(body.as_bytes()).unwrap();
            assert_eq!((e.created_us, e.room.as_deref()), (None, Some("r")), "{unusable}");
        }
        assert_eq!(envelope(br#"{}"#).unwrap(), Envelope::default());
        assert_eq!(envelope(br#"{"event":"caf\u00e9"}"#).unwrap().event.as_deref(), Some("café"));
        assert!(envelope(b"[1]").is_err());
        assert!(envelope(b"not json").is_err());
    }

    #[test]
    fn mismatch_names_the_field() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            data: Data,
        }
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Data {
            status: Status,
        }
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        enum Status {
            #[serde(rename = "active")]
            Active,
        }
        let err = parse_body::<Body>(br#"{"data":{"status":"paused"}}"#).unwrap_err();
        let Unmatched::Mismatch { path, message } = &err else { panic!("{err:?}") };
        assert_eq!(path, "data.status");
        // Why, without the value (the provider's data stays out of the log).
        assert!(message.starts_with("an unknown variant, expected `active`"), "{message}");
        assert!(err.to_string().contains("`data.status`"));
    }

    #[test]
    fn values_are_left_out_of_mismatch_messages() {
        for (message, expected) in [
            (r#"invalid type: string "alice@example.com", expected f64"#, "invalid type: a string, expected f64"),
            (r#"invalid value: string "a \"quoted\" `x`", expected u64"#, "invalid value: a string, expected u64"),
            ("invalid type: integer `5`, expected a string", "invalid type: an integer, expected a string"),
            ("invalid type: floating point `1.5`, expected u64", "invalid type: a number, expected u64"),
            (
                "unknown variant `fail`, expected `force` or `when_meeting_ends`",
                "an unknown variant, expected `force` or `when_meeting_ends`",
            ),
            ("missing field `data`", "missing field `data`"),
        ] {
            assert_eq!(super::without_values(message), expected);
        }
    }
}
