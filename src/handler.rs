//! The service's own handler: what `meet-webhooks serve` does with each webhook.
//!
//! This is the file to edit. Implement the `WebhookHandler` methods for the webhooks you care
//! about; the ones you leave out are acknowledged with a warning (see `crate::generated`).

use serde::Serialize;
use serde_json::Value;

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
        let data = serde_json::to_value(data)?;
        let field = |name: &str| data.get(name).and_then(Value::as_str).unwrap_or("-").to_owned();
        Ok(Self { recording_id: field("recordingId"), room_id: field("roomId"), status: field("status") })
    }
}
