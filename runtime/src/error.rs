//! What a client is told when a delivery is not accepted.
//!
//! Every refusal is a [`Rejection`], answered as a short JSON body
//! `{"error": "<code>", "message": "<what was wrong>"}`. The code is stable (scripts and metrics
//! use it); the message is for the person reading it. The log gets the same code plus the peer
//! address and any cause; neither ever holds a key, a full signature or a body, and the client
//! never sees a cause (a path, a storage error).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::HttpResponse;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::web::Bytes;
use serde::Serialize;

use crate::verify::VerifyError;

/// Every way a request to the webhook path is refused: its status, its stable code (what
/// scripts and metrics use) and what the client is told. Whatever else is worth knowing (a
/// cause, a peer) goes to the log, never to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A path that is not the webhook's (a misconfigured webhook URL, a scanner).
    #[error("there is nothing at this path; OpenVidu Meet posts deliveries to the receiver's webhook path")]
    NotFound,
    #[error("deliveries are sent with POST")]
    MethodNotAllowed,
    #[error("deliveries must be sent with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("the {0} header appears more than once")]
    DuplicateHeader(&'static str),
    #[error("the Content-Length header is not a number")]
    MalformedLength,
    #[error("the body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the body did not arrive within {ms} ms")]
    BodyTimeout { ms: u128 },
    /// A request head that did not arrive within the time allowed from its first byte.
    #[error("the request head did not arrive within {ms} ms")]
    HeadTimeout { ms: u128 },
    #[error("the request head is larger than the limit of {limit} bytes")]
    HeadTooLarge { limit: usize },
    /// Bodies being received at once take all the memory set aside for them.
    #[error("too many deliveries are being received at once; retry later")]
    Overloaded,
    #[error("the body could not be read")]
    BodyUnreadable,
    #[error("{0}")]
    Verify(#[from] VerifyError),
    #[error("the body is signed but is not a JSON object")]
    InvalidJson,
    /// Strict mode: a delivery that matches no typed webhook.
    #[error("{0}")]
    UnmatchedEvent(crate::webhooks::Unmatched),
    /// Without the inbox: an earlier attempt of the delivery is being handled.
    #[error("an earlier attempt of this delivery is still being handled; retry later")]
    InProgress,
    /// Without the inbox: the duplicate memory is full.
    #[error("the receiver remembers as many recent deliveries as its --replay-capacity allows; retry later")]
    Busy,
    #[error("the delivery could not be stored; retry later")]
    StorageUnavailable,
    /// Without the inbox: the handler returned an error.
    #[error("the delivery was not handled; the provider will retry it")]
    HandlerFailed,
    /// The route was assembled without its verification (a bug in the embedding code).
    #[error("the receiver is misconfigured")]
    Misconfigured,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MissingHeader(_)
            | Self::DuplicateHeader(_)
            | Self::MalformedLength
            | Self::BodyUnreadable
            | Self::InvalidJson => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyTimeout { .. } | Self::HeadTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Verify(VerifyError::MalformedTimestamp | VerifyError::MalformedSignature) => StatusCode::BAD_REQUEST,
            Self::Verify(_) => StatusCode::UNAUTHORIZED,
            Self::UnmatchedEvent(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InProgress => StatusCode::CONFLICT,
            Self::Busy | Self::StorageUnavailable | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::HandlerFailed | Self::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code: the `error` field of the answer, and the `outcome` label of the
    /// deliveries metric.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::MissingHeader(_) => "missing_header",
            Self::DuplicateHeader(_) => "duplicate_header",
            Self::MalformedLength => "malformed_header",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::HeadTimeout { .. } => "head_timeout",
            Self::HeadTooLarge { .. } => "head_too_large",
            Self::Overloaded => "overloaded",
            Self::BodyUnreadable => "body_unreadable",
            Self::Verify(e) => e.code(),
            Self::InvalidJson => "invalid_json",
            Self::UnmatchedEvent(_) => "unmatched_event",
            Self::InProgress => "in_progress",
            Self::Busy => "busy",
            Self::StorageUnavailable => "storage_unavailable",
            Self::HandlerFailed => "handler_failed",
            Self::Misconfigured => "misconfigured",
        }
    }

    /// Whether the connection is closed after the answer: the rest of the request was not read.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            Self::BodyTooLarge { .. }
                | Self::BodyTimeout { .. }
                | Self::HeadTimeout { .. }
                | Self::HeadTooLarge { .. }
                | Self::BodyUnreadable
                | Self::Overloaded
        )
    }

    /// One of each kind, for the test that holds the README's table of answers to them.
    #[cfg(test)]
    fn examples() -> Vec<Self> {
        vec![
            Self::NotFound,
            Self::MethodNotAllowed,
            Self::UnsupportedMediaType,
            Self::MissingHeader("x-signature"),
            Self::DuplicateHeader("x-signature"),
            Self::MalformedLength,
            Self::BodyTooLarge { limit: 1 },
            Self::BodyTimeout { ms: 1 },
            Self::HeadTimeout { ms: 1 },
            Self::HeadTooLarge { limit: 1 },
            Self::Overloaded,
            Self::BodyUnreadable,
            Self::Verify(VerifyError::MalformedTimestamp),
            Self::Verify(VerifyError::MalformedSignature),
            Self::Verify(VerifyError::TimestampTooOld { age_ms: 1, limit_ms: 1 }),
            Self::Verify(VerifyError::TimestampInFuture { ahead_ms: 1, limit_ms: 1 }),
            Self::Verify(VerifyError::InvalidSignature),
            Self::InvalidJson,
            Self::UnmatchedEvent(crate::webhooks::Unmatched::UnknownEvent),
            Self::InProgress,
            Self::Busy,
            Self::StorageUnavailable,
            Self::HandlerFailed,
            Self::Misconfigured,
        ]
    }

    /// The JSON body of the answer.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&Body { error: self.code(), message: &self.to_string() }).unwrap_or_default()
    }

    /// Seconds after which a retry may succeed, for the answers that invite one.
    fn retry_after(&self) -> Option<&'static str> {
        matches!(self, Self::Overloaded | Self::Busy).then_some("1")
    }

    pub fn response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status());
        if self.closes() {
            builder.force_close();
        }
        if let Some(seconds) = self.retry_after() {
            builder.insert_header((actix_web::http::header::RETRY_AFTER, seconds));
        }
        if *self == Self::MethodNotAllowed {
            builder.insert_header((actix_web::http::header::ALLOW, "POST"));
        }
        builder.content_type(ContentType::json()).body(self.body())
    }

    /// The response, carrying the request's unread `payload` until it has been sent.
    ///
    /// actix drains the rest of a chunked request whose payload was dropped, to keep the
    /// connection: a client could then make us read an endless body. A payload still alive
    /// when the response ends makes actix close the connection instead.
    pub fn response_holding(&self, payload: Payload) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status());
        if let Some(seconds) = self.retry_after() {
            builder.insert_header((actix_web::http::header::RETRY_AFTER, seconds));
        }
        builder
            .force_close()
            .content_type(ContentType::json())
            .body(HoldingPayload { body: Some(Bytes::from(self.body())), _payload: payload })
    }
}

/// A fixed response body that keeps the request payload alive until the body is sent.
struct HoldingPayload {
    body: Option<Bytes>,
    _payload: Payload,
}

impl MessageBody for HoldingPayload {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.body.as_ref().map_or(0, |b| b.len() as u64))
    }

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(self.get_mut().body.take().map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The README's table of answers names every refusal with its status and code, and nothing
    /// else: each status in the answer column, with the `snake_case` codes after it.
    #[test]
    fn the_readme_table_of_answers_is_the_enum() {
        let readme = include_str!("../../README.md");
        let table = readme.split("| case | answer | then |").nth(1).expect("the table of answers").split("\n\n").next();
        let mut documented = BTreeSet::new();
        for row in table.unwrap().lines().skip(2) {
            let answer = row.split('|').nth(2).unwrap_or_default();
            let mut status = None;
            for word in answer.split_whitespace() {
                if let Ok(n) = word.trim_start_matches('(').parse::<u16>() {
                    status = Some(n);
                } else if let (Some(status), Some(code)) =
                    (status, word.trim_end_matches([',', ')']).strip_prefix('`').and_then(|w| w.strip_suffix('`')))
                    && code.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                {
                    documented.insert((status, code.to_owned()));
                }
            }
        }
        let actual: BTreeSet<(u16, String)> =
            Rejection::examples().iter().map(|r| (r.status().as_u16(), r.code().to_owned())).collect();
        assert_eq!(documented, actual);
    }

    #[test]
    fn a_refusal_tells_the_client_its_code_and_message_only() {
        let response = Rejection::StorageUnavailable.response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = actix_web::body::to_bytes(response.into_body());
        let body = futures_util::FutureExt::now_or_never(body).unwrap().unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"error": "storage_unavailable", "message": "the delivery could not be stored; retry later"})
        );
    }
}
