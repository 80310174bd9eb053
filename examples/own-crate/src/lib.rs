//! A team's webhook handler, in a crate of its own: `build.rs` generates the code for the spec in
//! `openapi/`, this file implements the methods the team cares about, `main.rs` serves it.

use std::sync::Mutex;

use meet_webhooks_runtime::{DeliveryContext, HandlerResult, UnmatchedEvent};

/// The code generated from `openapi/`: `types`, `WebhookHandler`, `Receiver`, `WEBHOOKS`.
pub mod generated {
    meet_webhooks_runtime::include_webhooks!();
}

pub use generated::{Receiver, WebhookHandler, types};

/// Keeps the recordings that started and ended, and the events that fell back; the other
/// webhooks get the generated defaults.
#[derive(Debug, Default)]
pub struct RecordingCounter {
    /// `(recordingId, what happened)`, in the order handled.
    pub seen: Mutex<Vec<(String, &'static str)>>,
    /// The `event` of every delivery that went to the fallback.
    pub fell_back: Mutex<Vec<Option<String>>>,
}

impl WebhookHandler for RecordingCounter {
    async fn recording_started_webhook(
        &self,
        _ctx: &DeliveryContext,
        body: types::RecordingStartedWebhookBody,
    ) -> HandlerResult {
        self.seen.lock().unwrap().push((body.data.recording_id, "started"));
        Ok(())
    }

    async fn recording_ended_webhook(
        &self,
        _ctx: &DeliveryContext,
        body: types::RecordingEndedWebhookBody,
    ) -> HandlerResult {
        self.seen.lock().unwrap().push((body.data.recording_id, "ended"));
        Ok(())
    }

    async fn fallback(&self, _ctx: &DeliveryContext, event: UnmatchedEvent) -> HandlerResult {
        self.fell_back.lock().unwrap().push(event.event);
        Ok(())
    }
}
