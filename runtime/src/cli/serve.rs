//! `meet-webhooks serve`: the arguments, handed to the library's [`ServiceBuilder`].

use std::process::ExitCode;

use super::{DataDirArg, ServeArgs};
use crate::dispatch::RetryPolicy;
use crate::service::{ServiceBuilder, ServiceError, Storage};
use crate::webhooks::Webhooks;

pub(super) fn serve<W: Webhooks>(
    webhooks: impl FnOnce(Option<crate::meet::Settings>) -> W,
    args: ServeArgs,
    data: &DataDirArg,
) -> Result<ExitCode, String> {
    let metrics = crate::metrics::install().map_err(|e| format!("cannot set up metrics: {e}"))?;
    let storage = match (&data.database_url, args.inbox.no_inbox) {
        (_, true) => Storage::Inline { replay_capacity: args.replay_capacity },
        (Some(url), false) => Storage::Postgres(url.clone()),
        (None, false) => Storage::Sqlite(data.data_dir.clone()),
    };
    // Checked now for a clear message; the service reads the key file itself (and again on
    // SIGHUP).
    let keys = args.keys.collect()?;
    let meet = meet_settings(&args.meet, &keys)?;
    let meet_missing = meet.is_none();
    let mut builder = ServiceBuilder::new(webhooks(meet), args.keys.given());
    if let Some(file) = &args.keys.key_file {
        builder = builder.key_file(file);
    }
    if let Some(id) = &args.inbox.replica_id {
        builder = builder.replica_id(id);
    }
    if let Some((bind, token)) = args.console.settings().map_err(|(flag, problem)| setting(flag, &problem))? {
        builder = builder.console(bind, token);
    }
    let service = builder
        .policy(args.policy.policy())
        .path(&args.path)
        .body_limit(args.body_limit)
        .body_memory(args.body_memory)
        .request_timeout(args.request_timeout.0)
        .keep_alive(args.keep_alive.0)
        .max_connections(args.max_connections)
        .strict(args.strict)
        .storage(storage)
        .concurrency(args.inbox.concurrency)
        .retry(RetryPolicy {
            max_attempts: args.inbox.max_attempts,
            base: args.inbox.retry_delay.0,
            max: args.inbox.retry_max_delay.0,
        })
        .retention(args.inbox.retention_hours.0)
        .reorder_window(args.inbox.reorder_window.0)
        .shutdown_grace(args.inbox.shutdown_grace.0)
        .lease(args.inbox.lease.0)
        .metrics(metrics)
        .build()
        .map_err(|e| match e {
            ServiceError::Setting { setting: flag, problem } => setting(flag, &problem),
            other => other.to_string(),
        })?;
    if meet_missing && !W::SPEC.operations.is_empty() {
        // Once the service is up (a database it waits for is news first).
        log::info!(
            "no --meet-url: handlers get no Meet REST client (the spec has {} operations)",
            W::SPEC.operations.len()
        );
    }
    let bound = service.bind(args.bind, args.workers).map_err(|e| format!("--bind {}: {e}", args.bind))?;
    bound.run().map_err(|e| format!("server failed: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// A setting's problem, naming its flag and the variable that sets it too.
fn setting(flag: &str, problem: &str) -> String {
    match super::variable_of(flag) {
        Some(variable) => format!("{flag} ({variable}): {problem}"),
        None => format!("{flag}: {problem}"),
    }
}

/// The Meet API's settings from `--meet-url`, `--meet-api-key` (else the first signing key) and
/// `--meet-timeout`; `None` without a URL.
fn meet_settings(args: &super::MeetArgs, keys: &[Vec<u8>]) -> Result<Option<crate::meet::Settings>, String> {
    let Some(url) = &args.meet_url else {
        return Ok(None);
    };
    let key = match &args.meet_api_key {
        Some(key) => key.clone(),
        None => {
            String::from_utf8(keys[0].clone()).map_err(|_| "--meet-api-key: the first --key is not text".to_owned())?
        }
    };
    let settings = crate::meet::Settings::new(url, &key)
        .and_then(|settings| settings.timeout(args.meet_timeout.0))
        .map_err(|e| match e {
            crate::meet::SettingsError::Url { .. } => format!("--meet-url {e}"),
            crate::meet::SettingsError::Key => format!("--meet-api-key: {e}"),
            other => other.to_string(),
        })?;
    Ok(Some(settings))
}
