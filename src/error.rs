//! What a client is told when a delivery is not accepted.
//!
//! Every refusal is a short JSON body `{"error": "<code>", "message": "<what was wrong>"}`. The
//! code is stable (scripts and metrics use it); the message is for the person reading it. The
//! log gets the same code plus the peer address; neither ever holds a key, a full signature or
//! a body.

use std::borrow::Cow;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
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
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            close: false,
        }
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
        builder.json(Body {
            error: self.code,
            message: &self.message,
        })
    }
}

impl From<VerifyError> for Rejection {
    fn from(error: VerifyError) -> Self {
        let status = match error {
            VerifyError::MalformedTimestamp | VerifyError::MalformedSignature => {
                StatusCode::BAD_REQUEST
            }
            VerifyError::TimestampTooOld { .. }
            | VerifyError::TimestampInFuture { .. }
            | VerifyError::InvalidSignature => StatusCode::UNAUTHORIZED,
        };
        Self::new(status, error.code(), error.to_string())
    }
}
