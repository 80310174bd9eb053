//! The service's own handler: what `meet-webhooks serve` does with each webhook.
//!
//! This is the file to edit. Implement the `WebhookHandler` methods for the webhooks you care
//! about; the ones you leave out are acknowledged with a warning (see `crate::generated`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::generated::{WebhookHandler, types};
use crate::runtime::{DeliveryContext, HandlerResult};

/// Logs a one-line summary of every recording event.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServiceHandler;

impl WebhookHandler for ServiceHandler {
    async fn recording_started_webhook(
        &self,
        ctx: &DeliveryContext,
        body: types::RecordingStartedWebhookBody,
    ) -> HandlerResult {
        let recording = RecordingSummary::of(&body.data)?;
        log::info!(
            "recording started: recording {} room {} status {} (delivery {})",
            recording.recording_id,
            recording.room_id,
            recording.status,
            ctx.delivery_id
        );
        Ok(())
    }
}

/// The identifying fields of a recording event.
///
/// Read from the payload's wire form rather than its Rust fields: the spec has made `data` and
/// its fields required and `status` an enum over time, which changes their Rust types
/// (`Option<String>` → `String` → an enum) but not their JSON, so this builds against every
/// version of the spec unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    pub recording_id: String,
    pub room_id: String,
    pub status: String,
}

impl RecordingSummary {
    pub fn of(data: &impl Serialize) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Fields<'a> {
            #[serde(rename = "recordingId", borrow)]
            recording_id: Option<Cow<'a, str>>,
            #[serde(rename = "roomId", borrow)]
            room_id: Option<Cow<'a, str>>,
            #[serde(borrow)]
            status: Option<Cow<'a, str>>,
        }
        // One buffer, fields borrowed from it: cheaper than building a `serde_json::Value`.
        let json = serde_json::to_vec(data)?;
        let fields: Option<Fields<'_>> = serde_json::from_slice(&json)?;
        let text = |field: Option<Cow<'_, str>>| field.map_or_else(|| "-".to_owned(), Cow::into_owned);
        Ok(match fields {
            Some(f) => Self { recording_id: text(f.recording_id), room_id: text(f.room_id), status: text(f.status) },
            None => Self { recording_id: "-".into(), room_id: "-".into(), status: "-".into() },
        })
    }
}
