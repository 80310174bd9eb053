//! `meet-webhooks inbox`: look into the inbox and replay deliveries, beside a running service.

use std::process::ExitCode;

use super::{InboxAction, InboxCommand};
use crate::inbox::{Filter, Selection, SqliteStore, State};

pub(super) fn inbox(command: InboxCommand) -> Result<ExitCode, String> {
    let dir = &command.data.data_dir;
    if !dir.join(crate::inbox::FILE_NAME).exists() {
        return Err(format!(
            "--data-dir {}: no inbox there (has the service run with this data directory?)",
            dir.display()
        ));
    }
    let store = SqliteStore::open(dir).map_err(|e| format!("--data-dir: {e}"))?;
    match command.action {
        InboxAction::List { state, event, json, limit } => {
            let filter = match state.as_str() {
                "pending" => Filter::State(State::Pending),
                "done" => Filter::State(State::Done),
                "dead" => Filter::State(State::Dead),
                "fallback" => Filter::Fallback,
                _ => Filter::All,
            };
            for row in store.list(filter, event.as_deref(), limit).map_err(|e| e.to_string())? {
                if json {
                    println!("{}", serde_json::to_string(&row).map_err(|e| e.to_string())?);
                } else {
                    println!(
                        "{:>8}  {:<8} {:<8} {:>2}  {:<24} {}",
                        row.id,
                        row.state.as_str(),
                        row.kind,
                        row.attempts,
                        row.event.as_deref().unwrap_or("-"),
                        row.last_error.as_deref().unwrap_or("")
                    );
                }
            }
        }
        InboxAction::Show { id } => {
            let row = store.get(id).map_err(|e| e.to_string())?.ok_or_else(|| format!("no delivery {id}"))?;
            println!("id: {}\nstate: {} ({}), attempts: {}", row.id, row.state.as_str(), row.kind, row.attempts);
            println!("received_at: {}", row.received_at);
            if let Some(error) = &row.last_error {
                println!("last_error: {error}");
            }
            println!("X-Timestamp: {}\nX-Signature: {}\n", row.timestamp, hex::encode(row.signature));
            println!("{}", String::from_utf8_lossy(&row.body));
        }
        InboxAction::Replay { id, dead, fallback } => {
            let selection = match (id, dead, fallback) {
                (Some(id), _, _) => Selection::One(id),
                (None, true, _) => Selection::Dead,
                _ => Selection::Fallback,
            };
            let n = store.replay(selection).map_err(|e| e.to_string())?;
            if let (0, Selection::One(id)) = (n, selection) {
                return Err(format!("no delivery {id}"));
            }
            println!("{n} delivery(ies) pending again; the running service hands them to the handlers");
        }
        InboxAction::Stats => {
            let stats = store.stats().map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string(&stats).map_err(|e| e.to_string())?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
