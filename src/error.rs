//! What a client is told when a delivery is not accepted.
//!
//! Every refusal is a short JSON body `{"error": "<code>", "message": "<what was wrong>"}`. The
//! code is stable (scripts and metrics use it); the message is for the person reading it. The
//! log gets the same code plus the peer address; neither ever holds a key, a full signature or
//! a body.

use std::borrow::Cow;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// Close the connection after answering (the rest of the request was not read).
    pub close: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl Rejection {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self { status, code, message: message.into(), close: false }
    }

    /// Ask for the connection to be closed after the answer.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status);
        if self.close {
            builder.force_close();
        }
        builder.json(self.body())
    }

    /// The response, carrying the request's unread `payload` until it has been sent.
    ///
    /// actix drains the rest of a chunked request whose payload was dropped, to keep the
    /// connection: a client could then make us read an endless body. A payload still alive
    /// when the response ends makes actix close the connection instead.
    pub fn response_holding(&self, payload: Payload) -> HttpResponse {
        let body = serde_json::to_vec(&self.body()).map(Bytes::from).unwrap_or_default();
        HttpResponse::build(self.status)
            .force_close()
            .content_type(ContentType::json())
            .body(HoldingPayload { body: Some(body), _payload: payload })
    }

    fn body(&self) -> Body<'_> {
        Body { error: self.code, message: &self.message }
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

impl From<VerifyError> for Rejection {
    fn from(error: VerifyError) -> Self {
        let status = match error {
            VerifyError::MalformedTimestamp | VerifyError::MalformedSignature => StatusCode::BAD_REQUEST,
            VerifyError::TimestampTooOld { .. }
            | VerifyError::TimestampInFuture { .. }
            | VerifyError::InvalidSignature => StatusCode::UNAUTHORIZED,
        };
        Self::new(status, error.code(), error.to_string())
    }
}
