//! The service's own handler: what `meet-webhooks serve` does with each webhook.
//!
//! This is the file to edit. Implement the `WebhookHandler` methods for the webhooks you care
//! about; the ones you leave out are acknowledged with a warning (see `crate::generated`).

use crate::generated::{WebhookHandler, client, types};
use meet_webhooks_runtime::meet::Settings;
use meet_webhooks_runtime::{DeliveryContext, HandlerError, HandlerResult, Presence};

/// Acknowledges every recording event, and at debug level (`RUST_LOG=debug` or
/// `RUST_LOG=meet_webhooks::handler=debug`) logs a line with its recording, room and status.
#[derive(Debug, Default, Clone)]
pub struct ServiceHandler {
    /// The OpenVidu Meet REST API (`--meet-url`), for methods that act on an event.
    meet: Option<client::Client>,
}

impl ServiceHandler {
    /// A handler that reaches the Meet REST API with `meet`, when given.
    pub fn new(meet: Option<Settings>) -> Self {
        Self { meet: meet.map(|settings| client::Client::from_settings(&settings)) }
    }

    /// The Meet REST client: `self.meet()?.get_room(&room_id).await?`. An error (the delivery is
    /// tried again later) when the service was started without `--meet-url`.
    pub fn meet(&self) -> Result<&client::Client, HandlerError> {
        self.meet.as_ref().ok_or_else(|| "no Meet REST client: start the service with --meet-url".into())
    }
}

impl WebhookHandler for ServiceHandler {
    async fn recording_started_webhook(
        &self,
        ctx: &DeliveryContext,
        body: types::RecordingStartedWebhookBody,
    ) -> HandlerResult {
        // Every delivery already has its info line (event, outcome, status, latency); this one
        // only when asked for (`bench/results/figures-in-code.md`, debug-line).
        if log::log_enabled!(log::Level::Debug) {
            let recording = RecordingSummary::of(body);
            log::debug!(
                "recording started: recording {} room {} status {} (delivery {})",
                recording.recording_id,
                recording.room_id,
                recording.status,
                ctx.delivery_id
            );
        }
        Ok(())
    }
}

/// The identifying fields of a recording event, read from its typed body.
///
/// The pattern that builds against every version of the provider's spec: the spec has made
/// `data` and its fields required over time and `status` an enum, which changes their Rust
/// types (`Option<String>` → `String` → an enum) but not their names. `.present()`
/// ([`Presence`]) reads a field whether it is optional or required, and `to_string()` reads a
/// status whether it is a string or an enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    pub recording_id: String,
    pub room_id: String,
    pub status: String,
}

impl RecordingSummary {
    /// `data.recordingId`, `data.roomId` and `data.status` (`-` where absent).
    pub fn of(body: types::RecordingStartedWebhookBody) -> Self {
        let text = |field: Option<String>| field.unwrap_or_else(|| "-".to_owned());
        match body.data.present() {
            Some(data) => Self {
                recording_id: text(data.recording_id.present()),
                room_id: text(data.room_id.present()),
                status: text(data.status.present().map(|status| status.to_string())),
            },
            None => Self { recording_id: "-".into(), room_id: "-".into(), status: "-".into() },
        }
    }
}
