//! `meet-webhooks verify` and `meet-webhooks spec`: look at a captured delivery, and at what the
//! binary was generated from.

use std::io::Read;
use std::process::ExitCode;
use std::time::SystemTime;

use super::VerifyArgs;
use crate::verify::Verifier;
use crate::{WEBHOOKS, generated};

pub(super) fn verify(args: VerifyArgs) -> Result<ExitCode, String> {
    let keys = args.keys.collect()?;
    let verifier = Verifier::new(&keys, args.policy.policy()).map_err(|e| format!("--key: {e}"))?;
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).map_err(|e| format!("cannot read the body from standard input: {e}"))?;
    let (timestamp, signature) = (args.timestamp.as_bytes(), args.signature.as_bytes());
    match verifier.verify_signature(timestamp, signature, &body) {
        Err(e) => {
            println!("invalid: {} ({e})", e.code());
            return Ok(ExitCode::FAILURE);
        }
        Ok(key) => println!("signature: valid (key #{key}, {} body bytes)", body.len()),
    }
    let timestamp_ms = verifier.timestamp_ms(timestamp).map_err(|e| e.to_string())?;
    match verifier.check_window(timestamp_ms, SystemTime::now()) {
        Ok(()) => {
            println!("timestamp: within the window; the receiver would accept this delivery");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("timestamp: {} ({e}); the receiver would refuse it now", e.code());
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(super) fn spec() {
    println!("{} {} ({} webhooks)", generated::SPEC_TITLE, generated::SPEC_VERSION, WEBHOOKS.len());
    let handled = |method: &str| match generated::IMPLEMENTED {
        Some((type_name, methods)) if methods.contains(&method) => format!("handled by {type_name}"),
        Some(_) => "default: acknowledged with a warning".to_owned(),
        None => "unknown".to_owned(),
    };
    for webhook in WEBHOOKS {
        println!(
            "  {:<20} {:<28} {:<32} {}",
            webhook.event,
            webhook.operation_id,
            webhook.method,
            handled(webhook.method)
        );
    }
    println!("  {:<20} {:<28} {:<32} {}", "(anything else)", "-", "fallback", handled("fallback"));
}
