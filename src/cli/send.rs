//! `meet-webhooks send`: sign and deliver one event as the provider does.

use std::process::ExitCode;
use std::time::SystemTime;

use super::SendArgs;
use crate::WEBHOOKS;
use crate::clock::millis_since_epoch;

pub(super) fn send(args: SendArgs) -> Result<ExitCode, String> {
    use meet_webhooks_client::{Client, Signing, deliver};

    let webhook = WEBHOOKS.iter().find(|w| [w.event, w.operation_id, w.method].contains(&args.webhook.as_str()));
    let event = webhook.map_or(args.webhook.as_str(), |w| w.event);
    let data = match &args.data {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("--data {}: {e}", file.display()))?;
            Some(
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|e| format!("--data {}: not JSON: {e}", file.display()))?,
            )
        }
        None => None,
    };
    let mut body = match (webhook, event) {
        (Some(w), _) => {
            serde_json::from_str(w.example).map_err(|e| format!("the spec's example for {event} is not JSON: {e}"))?
        }
        (None, "testEvent") => {
            serde_json::json!({ "data": { "message": "Test webhook from meet-webhooks send" } })
        }
        (None, _) if data.is_some() => serde_json::json!({}),
        (None, other) => {
            let known: Vec<&str> = WEBHOOKS.iter().map(|w| w.event).collect();
            return Err(format!(
                "the spec has no webhook {other:?} (it has: {}, and testEvent); give its --data to send it anyway",
                known.join(", ")
            ));
        }
    };
    body["event"] = event.into();
    let creation_ms = millis_since_epoch(SystemTime::now());
    body["creationDate"] = creation_ms.into();
    if let Some(data) = data {
        body["data"] = data;
    }
    // As the provider does: X-Timestamp is the event's creationDate.
    let timestamp = args.timestamp_unit.from_millis(creation_ms);
    let client = Client::new(&args.url, Signing::new(&args.key).fixed_timestamp(timestamp));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let delivered = runtime.block_on(async {
        match deliver(&client, event, body.clone()).await {
            Ok(Some(delivered)) => Ok(delivered),
            Ok(None) => client.deliver_raw(body.to_string()).await,
            Err(e) => Err(e),
        }
    });
    let delivered = delivered.map_err(|e| e.to_string())?;
    match delivered.body.as_str() {
        "" => println!("{}", delivered.status),
        body => println!("{} {body}", delivered.status),
    }
    Ok(if delivered.status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
