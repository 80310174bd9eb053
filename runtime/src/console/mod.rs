//! The operator's console: the inbox on a web page, on a listener of its own (`--admin-bind`),
//! never on the webhook's port, which faces the provider.
//!
//! - **A token for everything with data.** Every `/api/` request carries the token as
//!   `Authorization: Bearer <token>`, compared in constant time; without it the answer is 401
//!   and nothing else. The page and its assets hold no data: without the token the page is a
//!   login prompt. The browser keeps the token in the tab's `sessionStorage`.
//! - **Cross-site requests** cannot send that header (a browser would ask first, and nothing
//!   here allows it), and the one action, replay, takes only JSON: a form posted from another
//!   site is refused before the token is even looked at.
//! - **Hostile content.** Room names, recording ids and every body field are provider data that
//!   people typed: the page writes them as text, never as HTML, and its Content-Security-Policy
//!   allows no inline script and no other origin. Its assets are in the binary: it works offline.
//! - **Light.** A page of the list is read newest first by id, and stops once it is full (a
//!   filter by room, recording or event reads back until it finds a page: at once for what
//!   happened lately, the whole inbox for what is not there; states have indexes). Its counts
//!   are read through the indexes of what waits; the count of handled deliveries reads the
//!   whole inbox, so it is taken in the background, less often the longer it takes
//!   ([`DONE_EVERY`]). The page polls every 2 s while it shows the newest deliveries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::web::{self, ServiceConfig};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::inbox::{Attempt, Filter, Inbox, Kind, Later, Query, Selection, State, Stored};

/// Most deliveries on one page of the list.
pub const PAGE_LIMIT: usize = 200;
/// Most deliveries replayed by one request.
pub const REPLAY_LIMIT: usize = 1000;

/// Why a delivery went to the fallback (classified again from its body by this build), or
/// `None` when a typed webhook takes it now.
pub type Classifier = fn(Option<&str>, &[u8]) -> Option<String>;

/// How old the count of handled deliveries may be before the next refresh of the list counts
/// it again (in the background: the list does not wait for it): at least this, and 50 times
/// what the last count took, so that counting a large inbox takes at most 2% of a core.
pub const DONE_EVERY: Duration = Duration::from_secs(1);

/// What the console serves from.
#[derive(Clone)]
pub struct Console {
    token: Arc<[u8]>,
    inbox: Arc<dyn Inbox>,
    classify: Classifier,
    done: Arc<Mutex<DoneCount>>,
}

/// The count of handled deliveries: exact, but it reads the whole inbox, so it is kept, and
/// counted again while the console is in use, at most as often as [`DONE_EVERY`] allows.
#[derive(Default)]
struct DoneCount {
    /// The count, and when it was taken (ms since the epoch).
    value: Option<(u64, i64)>,
    /// When the last count started, and how long it took.
    counted: Option<(Instant, Duration)>,
    counting: bool,
}

impl Console {
    pub fn new(token: &str, inbox: Arc<dyn Inbox>, classify: Classifier) -> Self {
        Self { token: token.as_bytes().into(), inbox, classify, done: Arc::default() }
    }

    /// The last count of handled deliveries, and when it was taken; starts counting again in
    /// the background when it is stale (see [`DONE_EVERY`]).
    fn done(&self) -> Option<(u64, i64)> {
        let mut done = self.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stale = done.counted.is_none_or(|(at, took)| at.elapsed() >= DONE_EVERY.max(took * 50));
        if !done.counting && stale {
            done.counting = true;
            let (inbox, count) = (self.inbox.clone(), self.done.clone());
            actix_web::rt::spawn(async move {
                let started = Instant::now();
                let at = crate::clock::now_ms();
                let counted = inbox.stats().await;
                let mut done = count.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match counted {
                    Ok(stats) => done.value = Some((stats.done, at)),
                    Err(e) => log::warn!("console: cannot count the handled deliveries: {e}"),
                }
                (done.counted, done.counting) = (Some((started, started.elapsed())), false);
            });
        }
        done.value
    }

    /// The console's routes, for `App::configure`.
    pub fn routes(&self) -> impl Fn(&mut ServiceConfig) + Clone + Send + 'static {
        let console = web::Data::new(self.clone());
        move |config: &mut ServiceConfig| {
            config
                .app_data(console.clone())
                .app_data(web::QueryConfig::default().error_handler(|e, _| refused(400, &e.to_string())))
                .app_data(web::JsonConfig::default().limit(64 * 1024).error_handler(|e, _| match e {
                    actix_web::error::JsonPayloadError::ContentType => {
                        refused(415, "send JSON (Content-Type: application/json)")
                    }
                    other => refused(400, &other.to_string()),
                }))
                .app_data(web::PathConfig::default().error_handler(|e, _| refused(400, &e.to_string())))
                .route("/", web::get().to(page))
                .route("/assets/console.js", web::get().to(|| asset("text/javascript", SCRIPT)))
                .route("/assets/console.css", web::get().to(|| asset("text/css", STYLE)))
                .route("/api/deliveries", web::get().to(list))
                .route("/api/deliveries/{id}", web::get().to(show))
                .route("/api/replay", web::post().to(replay))
                .default_service(web::to(|| async { Err::<HttpResponse, _>(refused(404, "no such page")) }));
        }
    }
}

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// No inline script or style, nothing from another origin, not in a frame.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                      base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The headers every answer of the console carries.
fn guarded(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    response
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    response
}

async fn page() -> HttpResponse {
    guarded(HttpResponse::Ok()).content_type("text/html; charset=utf-8").body(PAGE)
}

async fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    guarded(HttpResponse::Ok()).content_type(format!("{content_type}; charset=utf-8")).body(body)
}

/// A refusal: its status and a short JSON reason.
fn refused(status: u16, reason: &str) -> actix_web::Error {
    let status = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    actix_web::error::InternalError::from_response(
        reason.to_owned(),
        guarded(HttpResponse::build(status)).json(serde_json::json!({ "error": reason })),
    )
    .into()
}

/// A request that carried the token.
struct Operator;

impl FromRequest for Operator {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let Some(console) = req.app_data::<web::Data<Console>>() else {
            return std::future::ready(Err(refused(500, "the console is not set up")));
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let valid: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), &console.token[..]).into();
        std::future::ready(if valid { Ok(Operator) } else { Err(refused(401, "a valid token is needed")) })
    }
}

fn unavailable(e: crate::inbox::StoreError) -> actix_web::Error {
    log::warn!("console: {e}");
    refused(503, "the inbox cannot be read right now")
}

/// The list's filters, as the page sends them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    /// pending, done, dead, fallback or all (the default).
    state: Option<String>,
    event: Option<String>,
    room: Option<String>,
    /// A recording id, or a delivery's id.
    q: Option<String>,
    /// The page after the one that ended at this id.
    before: Option<i64>,
    limit: Option<usize>,
}

/// A delivery in the list.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    id: i64,
    event: Option<&'a str>,
    state: State,
    kind: Kind,
    attempts: u32,
    received_at: i64,
    /// The body's `creationDate`, in ms.
    created_at: Option<i64>,
    room: Option<&'a str>,
    recording: Option<&'a str>,
    claimed_by: Option<&'a str>,
    claimed_until: Option<i64>,
    done_at: Option<i64>,
    last_error: Option<&'a str>,
}

impl<'a> From<&'a Stored> for Summary<'a> {
    fn from(d: &'a Stored) -> Self {
        Self {
            id: d.id,
            event: d.event.as_deref(),
            state: d.state,
            kind: d.kind,
            attempts: d.attempts,
            received_at: d.received_at,
            created_at: d.created_us.map(|us| us.div_euclid(1000)),
            room: d.room.as_deref(),
            recording: d.recording.as_deref(),
            claimed_by: d.claimed_by.as_deref(),
            claimed_until: d.claimed_until,
            done_at: d.done_at,
            last_error: d.last_error.as_deref(),
        }
    }
}

/// Blank means not given.
fn given(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

async fn list(
    _: Operator,
    console: web::Data<Console>,
    params: web::Query<ListParams>,
) -> actix_web::Result<HttpResponse> {
    let params = params.into_inner();
    let filter = match params.state.as_deref().map(str::trim).unwrap_or("all") {
        "" | "all" => Filter::All,
        "fallback" => Filter::Fallback,
        other => Filter::State(
            State::parse(other).ok_or_else(|| refused(400, "state: one of pending, done, dead, fallback, all"))?,
        ),
    };
    let limit = params.limit.unwrap_or(50);
    if !(1..=PAGE_LIMIT).contains(&limit) {
        return Err(refused(400, &format!("limit: 1 to {PAGE_LIMIT}")));
    }
    let query = Query {
        filter,
        event: given(params.event),
        room: given(params.room),
        text: given(params.q),
        before: params.before,
        limit,
    };
    let (deliveries, counts) = futures_util::future::try_join(console.inbox.search(&query), console.inbox.counts())
        .await
        .map_err(unavailable)?;
    let next = (deliveries.len() == limit).then(|| deliveries.last().map(|d| d.id)).flatten();
    let done = console.done();
    let body = serde_json::json!({
        "deliveries": deliveries.iter().map(Summary::from).collect::<Vec<_>>(),
        "next": next,
        "counts": {
            "pending": counts.pending,
            "done": done.map(|(n, _)| n),
            "dead": counts.dead,
            "fallback": counts.fallback,
        },
        // The handled count is taken apart, at most every few seconds: when it was.
        "done_counted_at": done.map(|(_, at)| at),
        "claims": counts.claimed_by.iter().map(|(replica, n)| serde_json::json!({"replica": replica, "claims": n}))
            .collect::<Vec<_>>(),
    });
    Ok(guarded(HttpResponse::Ok()).json(body))
}

/// One delivery, whole.
#[derive(Debug, Serialize)]
struct Detail<'a> {
    #[serde(flatten)]
    summary: Summary<'a>,
    /// The headers the inbox keeps, as they were received.
    headers: serde_json::Value,
    /// The body as JSON, when it is JSON (the page pretty-prints it).
    body: Option<serde_json::Value>,
    /// The body's bytes, in hex.
    body_hex: String,
    /// The body as text (invalid UTF-8 replaced).
    body_text: String,
    history: &'a [Attempt],
    /// A later event of its room that was handled before it.
    late: Option<&'a Later>,
    /// Why it went to the fallback, as this build classifies it.
    fallback_reason: Option<String>,
}

async fn show(_: Operator, console: web::Data<Console>, id: web::Path<i64>) -> actix_web::Result<HttpResponse> {
    let id = id.into_inner();
    let Some(d) = console.inbox.get(id).await.map_err(unavailable)? else {
        return Err(refused(404, &format!("no delivery {id}")));
    };
    let detail = Detail {
        summary: Summary::from(&d),
        headers: serde_json::json!({ "X-Timestamp": d.timestamp, "X-Signature": hex::encode(d.signature) }),
        body: serde_json::from_slice(&d.body).ok(),
        body_hex: hex::encode(&d.body),
        body_text: String::from_utf8_lossy(&d.body).into_owned(),
        history: &d.history,
        late: d.late.as_ref(),
        fallback_reason: (d.kind == Kind::Fallback).then(|| (console.classify)(d.event.as_deref(), &d.body)).flatten(),
    };
    Ok(guarded(HttpResponse::Ok()).json(detail))
}

/// What to replay: these deliveries, or every dead one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayParams {
    #[serde(default)]
    ids: Vec<i64>,
    #[serde(default)]
    dead: bool,
}

async fn replay(
    _: Operator,
    console: web::Data<Console>,
    params: web::Json<ReplayParams>,
) -> actix_web::Result<HttpResponse> {
    let params = params.into_inner();
    let replayed = match (params.dead, params.ids.len()) {
        (true, 0) => console.inbox.replay(Selection::Dead).await.map_err(unavailable)?,
        (false, 1..=REPLAY_LIMIT) => {
            let mut replayed = 0;
            for id in params.ids {
                replayed += console.inbox.replay(Selection::One(id)).await.map_err(unavailable)?;
            }
            replayed
        }
        (false, 0) | (true, _) => return Err(refused(400, "give either ids or dead: true")),
        _ => return Err(refused(400, &format!("at most {REPLAY_LIMIT} ids at once"))),
    };
    log::info!("console: {replayed} delivery(ies) replayed");
    Ok(guarded(HttpResponse::Ok()).json(serde_json::json!({ "replayed": replayed })))
}
