//! Hands a delivery to the handler method it belongs to: its typed webhook method when it
//! was classified as one, the fallback otherwise. One function for the receiver without the
//! inbox (before the answer) and for the inbox's dispatcher (after it).

use crate::generated::{Event, WebhookHandler, dispatch};
use crate::runtime::{DeliveryContext, HandlerResult, JsonBody, Unmatched, UnmatchedEvent};

/// Runs the method `classified` names for the delivery `ctx`.
pub async fn hand_over<H: WebhookHandler>(
    handler: &H,
    ctx: &DeliveryContext,
    classified: Result<Event, Unmatched>,
) -> HandlerResult {
    match classified {
        Ok(event) => dispatch(handler, ctx, event).await,
        Err(reason) => {
            // Checked to be a JSON object before it was classified or stored; parsed only if the
            // fallback reads it.
            let body = JsonBody::new(ctx.body.clone());
            handler.fallback(ctx, UnmatchedEvent { event: ctx.event.clone(), reason, body }).await
        }
    }
}
