//! `meet-webhooks send`: sign and deliver one event as the provider does.

use std::process::ExitCode;
use std::time::SystemTime;

use super::SendArgs;
use crate::clock::millis_since_epoch;
use crate::webhooks::Webhooks;

pub(super) fn send<W: Webhooks>(args: SendArgs) -> Result<ExitCode, String> {
    use meet_webhooks_sender::{Sender, Signing, provider_bytes};

    let webhooks = W::SPEC.webhooks;

    let webhook = webhooks.iter().find(|w| [w.event, w.operation_id, w.method].contains(&args.webhook.as_str()));
    let event = webhook.map_or(args.webhook.as_str(), |w| w.event);
    let data = match &args.data {
        // Sent as written: a body that does not fit the typed schema is how the fallback is
        // tried out.
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("--data {}: {e}", file.display()))?;
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| format!("--data {}: not JSON: {e}", file.display()))?
        }
        None => match (webhook, event) {
            (Some(w), _) => {
                let example: serde_json::Value = serde_json::from_str(w.example)
                    .map_err(|e| format!("the spec's example for {event} is not JSON: {e}"))?;
                example.get("data").cloned().unwrap_or_else(|| serde_json::json!({}))
            }
            (None, "testEvent") => serde_json::json!({ "message": "Test webhook from meet-webhooks send" }),
            (None, other) => {
                let known: Vec<&str> = webhooks.iter().map(|w| w.event).collect();
                return Err(format!(
                    "the spec has no webhook {other:?} (it has: {}, and testEvent); give its --data to send it anyway",
                    known.join(", ")
                ));
            }
        },
    };
    // As the provider does: X-Timestamp is the event's creationDate.
    let creation_ms = millis_since_epoch(SystemTime::now());
    let body = provider_bytes(&serde_json::json!({ "event": event, "creationDate": creation_ms, "data": data }));
    // What the receiver will make of it, said before it is sent.
    if let Err(reason) = W::classify(Some(event), &body) {
        eprintln!("note: {event} will go to the receiver's fallback: {reason}");
    }
    let timestamp = args.timestamp_unit.from_millis(creation_ms);
    let sender =
        Sender::new(&args.url, Signing::new(&args.key).fixed_timestamp(timestamp)).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let delivered = runtime.block_on(sender.send(body)).map_err(|e| e.to_string())?;
    match delivered.body.as_str() {
        "" => println!("{}", delivered.status),
        body => println!("{} {body}", delivered.status),
    }
    Ok(if delivered.status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
