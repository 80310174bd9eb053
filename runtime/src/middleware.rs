//! The actix-web middleware that admits only authentic deliveries: a thin adapter over
//! [`crate::verify`].
//!
//! In order, each step cheaper than the next: content type (415), signing headers present
//! exactly once (400), declared length within the limit (413, without reading the body), the
//! body read under a size limit and a time limit (413 / 408, connection closed), then the
//! signature and timestamp window (400 / 401). Only then does the request reach the handler,
//! carrying the verified [`Delivery`] in its extensions; unauthenticated bytes never reach
//! serde. Refusals are returned as `Ok(response)` so the access log still sees them.

use std::time::{Duration, SystemTime};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{Error, HttpMessage};
use arc_swap::ArcSwap;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::Rejection;
use crate::metrics;
use crate::verify::{SIGNATURE_HEADER, TIMESTAMP_HEADER, Verified, Verifier};

/// What the middleware checks deliveries against (defaults: [`crate::defaults`]).
#[derive(Debug)]
pub struct Gate {
    /// Swapped whole when the keys are reloaded (SIGHUP); a delivery is checked against the
    /// keys of one moment.
    pub verifier: ArcSwap<Verifier>,
    pub body_limit: usize,
    pub body_timeout: Duration,
    pub body_memory: BodyMemory,
}

/// Memory set aside for request bodies while they are received and verified, shared by every
/// connection: a flood of large bodies (which anyone can send; none is verified yet) gets
/// 503 `overloaded` past it instead of growing the process.
#[derive(Debug)]
pub struct BodyMemory {
    bytes: Semaphore,
}

impl BodyMemory {
    pub fn new(bytes: usize) -> Self {
        Self { bytes: Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)) }
    }

    /// Sets `bytes` aside, adding them to `held`; `false` if they are not free.
    fn take<'m>(&'m self, bytes: usize, held: &mut Option<SemaphorePermit<'m>>) -> bool {
        let Ok(n) = u32::try_from(bytes) else { return false };
        match self.bytes.try_acquire_many(n) {
            Ok(permit) => {
                match held {
                    Some(held) => held.merge(permit),
                    None => *held = Some(permit),
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// An authentic delivery, as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub verified: Verified,
    /// The `X-Timestamp` header as sent (shares the request's buffer).
    pub timestamp: HeaderValue,
    /// The body as sent.
    pub body: Bytes,
    pub received_at: SystemTime,
}

/// `actix_web::middleware::from_fn(verify_delivery)`; needs `web::Data<Gate>` in app data.
pub async fn verify_delivery<B: MessageBody>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    let Some(gate) = req.app_data::<web::Data<Gate>>().cloned() else {
        log::error!("verify_delivery middleware used without web::Data<Gate>");
        return Ok(req.into_response(Rejection::Misconfigured.response()).map_into_right_body());
    };
    let mut payload = req.take_payload();
    match admit(&gate, &req, &mut payload).await {
        Ok(delivery) => {
            req.extensions_mut().insert(delivery);
            next.call(req).await.map(ServiceResponse::map_into_left_body)
        }
        Err(rejection) => {
            let peer = req.peer_addr().map_or_else(|| "unknown".to_owned(), |a| a.to_string());
            log::warn!(
                "rejected delivery from {peer}: {} {} ({rejection})",
                rejection.status().as_u16(),
                rejection.code()
            );
            metrics::rejected(rejection.code());
            let response = if rejection.closes() { rejection.response_holding(payload) } else { rejection.response() };
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

async fn admit(gate: &Gate, req: &ServiceRequest, payload: &mut Payload) -> Result<Delivery, Rejection> {
    if req.method() != actix_web::http::Method::POST {
        return Err(Rejection::MethodNotAllowed);
    }
    check_content_type(req.headers())?;
    let timestamp = single_header(req, &TIMESTAMP)?;
    let signature = single_header(req, &SIGNATURE)?;
    let declared = declared_length(req.headers(), gate.body_limit)?;
    // The memory set aside for the body is let go once it is verified (or refused).
    let (body, _held) = read_body(gate, payload, declared).await?;
    let received_at = SystemTime::now();
    let verified = gate.verifier.load().verify(timestamp.as_bytes(), signature.as_bytes(), &body, received_at)?;
    metrics::verified(verified.key_index);
    Ok(Delivery { verified, timestamp: timestamp.clone(), body, received_at })
}

/// 415 unless the body is declared JSON (shared with the `Expect: 100-continue` check).
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if is_json { Ok(()) } else { Err(Rejection::UnsupportedMediaType) }
}

static TIMESTAMP: HeaderName = HeaderName::from_static(TIMESTAMP_HEADER);
static SIGNATURE: HeaderName = HeaderName::from_static(SIGNATURE_HEADER);

/// The value of a header that must appear exactly once.
fn single_header<'r>(req: &'r ServiceRequest, name: &'static HeaderName) -> Result<&'r HeaderValue, Rejection> {
    let mut values = req.headers().get_all(name);
    let Some(value) = values.next() else {
        return Err(Rejection::MissingHeader(name.as_str()));
    };
    if values.next().is_some() {
        return Err(Rejection::DuplicateHeader(name.as_str()));
    }
    Ok(value)
}

/// The declared `Content-Length`, refused if it is not a number or over `limit` (shared with
/// the `Expect: 100-continue` check: the body is not even invited then).
pub(crate) fn declared_length(headers: &HeaderMap, limit: usize) -> Result<Option<usize>, Rejection> {
    let declared = match headers.get(CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(|s| s.parse().ok()).ok_or(Rejection::MalformedLength)?),
    };
    if declared.is_some_and(|n| n > limit) {
        return Err(Rejection::BodyTooLarge { limit });
    }
    Ok(declared)
}

async fn read_body<'g>(
    gate: &'g Gate,
    payload: &mut Payload,
    declared: Option<usize>,
) -> Result<(Bytes, Option<SemaphorePermit<'g>>), Rejection> {
    let mut body = Body::new(gate, declared);
    // A delivery of a few KB arrives with its headers, but actix calls the service as soon as
    // it has parsed them and feeds it the body just after: let it do that once, then take the
    // whole body without arming a timer (which costs more than the rest of this function).
    // Only a body that is still on its way is read under the time limit.
    if take_buffered(payload, &mut body)? {
        return Ok(body.finish());
    }
    tokio::task::yield_now().await;
    if take_buffered(payload, &mut body)? {
        return Ok(body.finish());
    }
    let read = async {
        while let Some(chunk) = payload.next().await {
            body.push(body_chunk(chunk)?)?;
        }
        Ok(body.finish())
    };
    tokio::time::timeout(gate.body_timeout, read)
        .await
        .unwrap_or_else(|_| Err(Rejection::BodyTimeout { ms: gate.body_timeout.as_millis() }))
}

/// Takes the chunks that are ready without waiting: whether that was the whole body.
fn take_buffered(payload: &mut Payload, body: &mut Body) -> Result<bool, Rejection> {
    while let Some(chunk) = payload.next().now_or_never() {
        match chunk {
            Some(chunk) => body.push(body_chunk(chunk)?)?,
            None => return Ok(true),
        }
    }
    Ok(false)
}

fn body_chunk(chunk: Result<Bytes, actix_web::error::PayloadError>) -> Result<Bytes, Rejection> {
    chunk.map_err(|e| {
        log::debug!("a body could not be read: {e}");
        Rejection::BodyUnreadable
    })
}

/// A body being read: a single chunk is kept as it is (no copy), several are joined. The
/// memory it takes is set aside from [`BodyMemory`] until the body is verified (dropped).
struct Body<'g> {
    gate: &'g Gate,
    declared: Option<usize>,
    len: usize,
    first: Option<Bytes>,
    joined: Option<BytesMut>,
    held: Option<SemaphorePermit<'g>>,
}

impl<'g> Body<'g> {
    fn new(gate: &'g Gate, declared: Option<usize>) -> Self {
        Self { gate, declared, len: 0, first: None, joined: None, held: None }
    }

    fn push(&mut self, chunk: Bytes) -> Result<(), Rejection> {
        self.len += chunk.len();
        if self.len > self.gate.body_limit {
            return Err(Rejection::BodyTooLarge { limit: self.gate.body_limit });
        }
        if !self.gate.body_memory.take(chunk.len(), &mut self.held) {
            return Err(Rejection::Overloaded);
        }
        if self.joined.is_none() && self.first.is_none() {
            self.first = Some(chunk);
            return Ok(());
        }
        let joined = self.joined.get_or_insert_with(|| {
            // Reserve what the client declared only up to 64 KiB: a declared length costs the
            // client nothing, so it must not make us allocate a megabyte up front.
            let mut joined = BytesMut::with_capacity(
                self.declared.unwrap_or(4096).min(self.gate.body_limit).min(64 * 1024).max(self.len),
            );
            joined.extend_from_slice(&self.first.take().unwrap_or_default());
            joined
        });
        joined.extend_from_slice(&chunk);
        Ok(())
    }

    /// The body, and the memory it holds (let go once it is verified).
    fn finish(self) -> (Bytes, Option<SemaphorePermit<'g>>) {
        let bytes = match self.joined {
            Some(joined) => joined.freeze(),
            None => self.first.unwrap_or_default(),
        };
        (bytes, self.held)
    }
}
