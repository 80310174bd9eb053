//! `meet-webhooks verify` and `meet-webhooks spec`: look at a captured delivery, and at what the
//! binary was generated from.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::SystemTime;

use super::{DataDirArg, DiffArgs, VerifyArgs};
use crate::verify::Verifier;
use crate::webhooks::Spec;

pub(super) fn verify(args: VerifyArgs, before: &DataDirArg) -> Result<ExitCode, String> {
    let keys = args.keys.collect()?;
    let verifier = Verifier::new(&keys, args.policy.policy()).map_err(|e| format!("--key: {e}"))?;
    // The window is checked at the time of receipt for a stored delivery, else now.
    let (timestamp, signature, body, received) = match (args.inbox, args.timestamp, args.signature) {
        // Its headers and body as the receiver stored them.
        (Some(id), _, _) => {
            let row = super::inbox::stored(&args.data.over(before), id)?;
            (row.timestamp, hex::encode(row.signature), row.body, Some(row.received_at))
        }
        (None, Some(timestamp), Some(signature)) => {
            if std::io::stdin().is_terminal() {
                eprintln!(
                    "reading the body from standard input (end it with Ctrl-D), e.g. \
                     `meet-webhooks inbox show --body ID | meet-webhooks verify ...`, or use --inbox ID"
                );
            }
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(|e| format!("cannot read the body from standard input: {e}"))?;
            (timestamp, signature, body, None)
        }
        _ => unreachable!("clap requires --timestamp and --signature without --inbox"),
    };
    let (timestamp, signature) = (timestamp.as_bytes(), signature.as_bytes());
    match verifier.verify_signature(timestamp, signature, &body) {
        Err(e) => {
            println!("invalid: {} ({e})", e.code());
            if let (crate::verify::VerifyError::InvalidSignature, Some(hint)) =
                (&e, hint(&verifier, timestamp, signature, &body))
            {
                println!("hint: {hint}");
            }
            return Ok(ExitCode::FAILURE);
        }
        // Keys are numbered from 1, in the order they were given.
        Ok(key) => println!("signature: valid (key {} of {}, {} body bytes)", key + 1, keys.len(), body.len()),
    }
    let timestamp_ms = verifier.timestamp_ms(timestamp).map_err(|e| e.to_string())?;
    let at = received.map_or_else(SystemTime::now, crate::clock::system_time);
    let when = if received.is_some() { "when it was received" } else { "now" };
    match verifier.check_window(timestamp_ms, at) {
        Ok(()) if received.is_some() => {
            println!("timestamp: within the window when it was received");
            Ok(ExitCode::SUCCESS)
        }
        Ok(()) => {
            println!("timestamp: within the window; the receiver would accept this delivery");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("timestamp: {} ({e}); the receiver would refuse it {when}", e.code());
            let digits = String::from_utf8_lossy(timestamp).trim().len();
            match args.policy.timestamp_unit {
                crate::verify::TimestampUnit::Seconds if digits >= 12 => {
                    println!("hint: {digits} digits look like milliseconds, but --timestamp-unit is s")
                }
                crate::verify::TimestampUnit::Milliseconds if digits <= 10 => {
                    println!("hint: {digits} digits look like seconds, but --timestamp-unit is ms")
                }
                _ => {}
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Why a signature that does not verify might have been meant to: the body as saved with a
/// newline at its end (or without one), which changes every byte of the MAC.
fn hint(verifier: &Verifier, timestamp: &[u8], signature: &[u8], body: &[u8]) -> Option<&'static str> {
    if let Some(trimmed) = body.strip_suffix(b"\n")
        && verifier.verify_signature(timestamp, signature, trimmed.strip_suffix(b"\r").unwrap_or(trimmed)).is_ok()
    {
        return Some(
            "it verifies without the newline at the end of the body: the body was saved with one added \
             (use `inbox show --body ID`, which prints the exact bytes)",
        );
    }
    if verifier.verify_signature(timestamp, signature, &[body, b"\n"].concat()).is_ok() {
        return Some("it verifies with a newline added at the end of the body: the saved body lost one");
    }
    None
}

pub(super) fn spec(spec: &Spec) {
    let webhooks = spec.webhooks;
    let count = if webhooks.len() == 1 { "1 webhook".to_owned() } else { format!("{} webhooks", webhooks.len()) };
    println!("{} {} ({count})", spec.title, spec.version);
    let handled = |method: &str| match spec.implemented {
        Some((type_name, methods)) if methods.contains(&method) => format!("handled by {type_name}"),
        Some(_) => "default: acknowledged with a warning".to_owned(),
        None => "unknown".to_owned(),
    };
    for webhook in webhooks {
        println!(
            "  {:<20} {:<28} {:<32} {}",
            webhook.event,
            webhook.operation_id,
            webhook.method,
            handled(webhook.method)
        );
    }
    println!("  {:<20} {:<28} {:<32} {}", "(anything else)", "-", "fallback", handled("fallback"));
    if spec.operations.is_empty() {
        println!("no REST client: the spec has no paths");
        return;
    }
    let count = if spec.operations.len() == 1 {
        "1 operation".to_owned()
    } else {
        format!("{} operations", spec.operations.len())
    };
    println!("REST client ({count}; handlers reach it with --meet-url):");
    for operation in spec.operations {
        println!(
            "  {:<28} {:<7} {:<40} {}",
            operation.operation_id, operation.method, operation.path, operation.summary
        );
    }
}

/// `spec diff [OLD] NEW`: what changes for handler code from OLD (or the spec built in) to NEW.
pub(super) fn diff(spec: &Spec, args: DiffArgs) -> Result<ExitCode, String> {
    use meet_webhooks_codegen::{Shape, diff};
    let (old, new) = match args.specs.as_slice() {
        [new] => {
            let built: Shape = serde_json::from_str(spec.shape)
                .map_err(|e| format!("this binary's spec shape does not read ({e}): name both specs"))?;
            (built, new)
        }
        [old, new] => (read_shape(old)?, new),
        _ => unreachable!("clap takes one or two specs"),
    };
    let new = read_shape(new)?;
    let changes = diff::diff(&old, &new);
    let mut out = if args.json {
        let report = serde_json::json!({
            "old": old.name(),
            "new": new.name(),
            "summary": diff::summary(&changes),
            "changes": changes,
        });
        report.to_string()
    } else {
        let mut text = format!("{} → {}: {}", old.name(), new.name(), diff::summary(&changes));
        for change in &changes {
            text += &format!("\n{change}");
        }
        text
    };
    out.push('\n');
    // Written whole; a reader that stops early (`| head`) is no error.
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(ExitCode::SUCCESS)
}

/// The shape of the spec at `path` (a folder, or its root document).
fn read_shape(path: &std::path::Path) -> Result<meet_webhooks_codegen::Shape, String> {
    let here = std::env::current_dir().map_err(|e| format!("cannot read the working directory: {e}"))?;
    let bundle = meet_webhooks_codegen::Config::new()
        .spec(path)
        .spec_env(None)
        .base_dir(here)
        .bundle()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(meet_webhooks_codegen::Shape::of(&bundle))
}
