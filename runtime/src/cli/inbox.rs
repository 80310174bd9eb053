//! `meet-webhooks inbox`: look into the inbox and replay deliveries, beside a running service.

use std::process::ExitCode;

use super::{DataDirArg, InboxAction, InboxCommand, StateFilter};
use crate::inbox::{Filter, Inbox, PgInbox, SqliteInbox, State};
use crate::logging::escaped;
use crate::webhooks::Webhooks;

pub(super) fn inbox<W: Webhooks>(command: InboxCommand, data: &DataDirArg) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(|e| e.to_string())?;
    let inbox = open(data)?;
    runtime.block_on(run::<W>(&*inbox, command.action))
}

/// The delivery `id` as stored (for `verify --inbox`).
pub(super) fn stored(data: &DataDirArg, id: i64) -> Result<crate::inbox::Stored, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(|e| e.to_string())?;
    let inbox = open(data)?;
    runtime.block_on(inbox.get(id)).map_err(|e| e.to_string())?.ok_or_else(|| format!("no delivery {id}"))
}

/// The inbox `data` names, beside a running service (an SQLite inbox must exist already).
fn open(data: &DataDirArg) -> Result<Box<dyn Inbox>, String> {
    Ok(match &data.database_url {
        Some(url) => Box::new(PgInbox::connect(url, "cli").map_err(|e| format!("--database-url: {e}"))?),
        None => Box::new(SqliteInbox::open_existing(&data.data_dir).map_err(|e| format!("--data-dir: {e}"))?),
    })
}

async fn run<W: Webhooks>(inbox: &dyn Inbox, action: InboxAction) -> Result<ExitCode, String> {
    match action {
        InboxAction::List { state, event, json, limit } => {
            let filter = match state {
                StateFilter::Pending => Filter::State(State::Pending),
                StateFilter::Done => Filter::State(State::Done),
                StateFilter::Dead => Filter::State(State::Dead),
                StateFilter::Fallback => Filter::Fallback,
                StateFilter::All => Filter::All,
            };
            let rows = inbox.list(filter, event.as_deref(), limit).await.map_err(|e| e.to_string())?;
            if json {
                for row in &rows {
                    println!("{}", serde_json::to_string(&with_reason::<W>(row)).map_err(|e| e.to_string())?);
                }
            } else if !rows.is_empty() {
                let header = [
                    "ID",
                    "RECEIVED (UTC)",
                    "CREATED (UTC)",
                    "STATE",
                    "KIND",
                    "ATTEMPTS",
                    "NEXT (UTC)",
                    "EVENT",
                    "NOTE",
                ];
                let now = jiff::Timestamp::now().as_millisecond();
                let cells: Vec<[String; 9]> = rows
                    .iter()
                    .map(|row| {
                        [
                            row.id.to_string(),
                            time(row.received_at),
                            row.created_us.map_or_else(|| "-".to_owned(), created),
                            row.state.to_string(),
                            row.kind.to_string(),
                            row.attempts.to_string(),
                            next(row, now),
                            // What came with a request stays on its row.
                            escaped(row.event.as_deref().unwrap_or("-")).into_owned(),
                            escaped(&note::<W>(row)).into_owned(),
                        ]
                    })
                    .collect();
                print!("{}", table(header, &cells));
            }
        }
        InboxAction::Show { id, body } => {
            let row = inbox.get(id).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("no delivery {id}"))?;
            if body {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                out.write_all(&row.body).and_then(|()| out.flush()).map_err(|e| e.to_string())?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("id: {}\nstate: {} ({}), attempts: {}", row.id, row.state, row.kind, row.attempts);
            if let Some(event) = &row.event {
                println!("event: {}", escaped(event));
            }
            println!("received_at: {}", precise(row.received_at));
            match row.created_us {
                Some(us) => println!("created: {} (creationDate)", created(us)),
                None => println!("created: - (no creationDate: its room takes it in arrival order)"),
            }
            if let Some(later) = &row.late {
                println!("late: {}", escaped(&late(later)));
            }
            if let (Some(owner), Some(until)) = (&row.claimed_by, row.claimed_until) {
                println!("claimed_by: {} (lease until {})", escaped(owner), precise(until));
            } else if let Some(due) = row.due_at {
                println!("next_attempt: {}", precise(due));
            }
            if let Some(reason) = fallback_reason::<W>(&row) {
                println!("fallback_reason: {}", escaped(&reason));
            }
            if let Some(error) = &row.last_error {
                println!("last_error: {}", escaped(error));
            }
            if let Some(at) = row.done_at {
                println!("{}: {}", if row.state == State::Dead { "dead_at" } else { "handled_at" }, precise(at));
            }
            for attempt in &row.history {
                println!("{}", escaped(&attempt_line(attempt)));
            }
            println!("X-Timestamp: {}\nX-Signature: {}\n", row.timestamp, hex::encode(row.signature));
            println!("{}", String::from_utf8_lossy(&row.body));
        }
        // (clap's `requires` counts a flag's default as given.)
        InboxAction::Replay { dry_run: true, fallback: false, .. } => {
            return Err("--dry-run goes with --fallback (it says which fallback deliveries fit now)".into());
        }
        InboxAction::Replay { dry_run: true, .. } => {
            let fit = fallback_fit::<W>(inbox).await?;
            print!("{}", fit.report(true));
        }
        InboxAction::Replay { id, dead, fallback, dry_run: false } => {
            let selection = match (id, dead, fallback) {
                (Some(id), _, _) => crate::inbox::Selection::One(id),
                (None, true, _) => crate::inbox::Selection::Dead,
                _ => crate::inbox::Selection::Fallback,
            };
            // Read before the replay: those it replays are pending until handled.
            let fit = if fallback { Some(fallback_fit::<W>(inbox).await?) } else { None };
            let n = inbox.replay(selection).await.map_err(|e| e.to_string())?;
            if let (0, Some(id)) = (n, id) {
                return Err(match inbox.get(id).await.map_err(|e| e.to_string())? {
                    None => format!("no delivery {id}"),
                    Some(_) => format!("delivery {id} is pending: it is handled (or being handled) already"),
                });
            }
            println!("{n} delivery(ies) pending again; the running service hands them to the handlers");
            if let Some(fit) = fit {
                print!("{}", fit.report(false));
            }
        }
        InboxAction::Stats { json } => {
            let stats = inbox.stats().await.map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string(&stats).map_err(|e| e.to_string())?);
            } else {
                println!("deliveries by state: {} pending, {} done, {} dead", stats.pending, stats.done, stats.dead);
                println!("  of which matched no typed webhook (fallback): {}", stats.fallback);
                if let Some(oldest) = stats.oldest_pending_received_at {
                    println!("oldest pending: received {}", time(oldest));
                }
                for (holder, claims) in &stats.claimed_by {
                    println!("claimed by {}: {claims}", escaped(holder));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Milliseconds since the epoch as `2026-11-30T18:53:00Z`.
fn time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| format!("{t:.0}"))
}

/// Milliseconds since the epoch as `2026-11-30T18:53:00.123Z`.
fn precise(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| format!("{t:.3}"))
}

/// One attempt of a delivery's history, as `inbox show` prints it:
/// `attempt 1: retry, on replica-a at 2026-11-30T18:53:00.123Z, 12 ms: the error`.
fn attempt_line(attempt: &crate::inbox::Attempt) -> String {
    let mut line = format!("attempt {}: {}", attempt.attempt, attempt.outcome);
    if let Some(replica) = &attempt.replica {
        line += &format!(", on {replica}");
    }
    if let Some(at) = attempt.started_at {
        line += &format!(" at {}", precise(at));
    }
    if let Some(ms) = attempt.duration_ms {
        line += &format!(", {ms} ms");
    }
    if let Some(error) = &attempt.error {
        line += &format!(": {error}");
    }
    line
}

/// Microseconds since the epoch as `2026-11-30T18:53:00.123Z`.
fn created(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us).map_or_else(|_| us.to_string(), |t| format!("{t:.3}"))
}

/// When a pending delivery's next attempt is, as `inbox list` shows it (`now_ms`: the time of
/// the listing): its time, or who runs it while a claim holds it; `-` once done or dead.
fn next(row: &crate::inbox::Stored, now_ms: i64) -> String {
    match (&row.claimed_by, row.claimed_until, row.due_at) {
        (Some(owner), Some(until), _) if until > now_ms => format!("running on {}", escaped(owner)),
        (_, _, Some(due)) => time(due),
        _ => "-".to_owned(),
    }
}

/// Why a delivery was handled late: the later event of its room handled before it.
fn late(later: &crate::inbox::Later) -> String {
    format!(
        "handled after {} (delivery {}, created {}), a later event of its room",
        later.event.as_deref().unwrap_or("an event"),
        later.id,
        created(later.created_us)
    )
}

/// Columns padded to their widest cell (IDs and attempts to the right), two spaces apart, the
/// last one as it is.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0);
    let widths: Vec<usize> = (0..N).map(width).collect();
    let right = |i: usize| header[i] == "ID" || header[i] == "ATTEMPTS";
    let line = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i + 1 == N {
                line += cell;
            } else if right(i) {
                line += &format!("{}{cell}  ", " ".repeat(pad));
            } else {
                line += &format!("{cell}{}  ", " ".repeat(pad));
            }
        }
        line.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Why a delivery that went to the fallback still does, classified again from its stored body
/// by this build: `None` for a typed one, or one this build would type (`inbox replay
/// --fallback` hands it to its method).
fn fallback_reason<W: Webhooks>(row: &crate::inbox::Stored) -> Option<String> {
    if row.kind != crate::inbox::Kind::Fallback {
        return None;
    }
    W::classify(row.event.as_deref(), &row.body).err().map(|reason| reason.to_string())
}

/// A row as `list --json` prints it: its fields and, for a fallback delivery, `fallback_reason`
/// (`null` when this build would type it).
fn with_reason<W: Webhooks>(row: &crate::inbox::Stored) -> serde_json::Value {
    let mut value = serde_json::to_value(row).unwrap_or_default();
    if row.kind == crate::inbox::Kind::Fallback
        && let Some(object) = value.as_object_mut()
    {
        object.insert("fallback_reason".into(), fallback_reason::<W>(row).into());
    }
    value
}

/// What a row's last column says: the last handler error, why it went to the fallback
/// (classified again from the stored body by this build, as the dispatcher does), or that it
/// was handled late.
fn note<W: Webhooks>(row: &crate::inbox::Stored) -> String {
    if let Some(error) = &row.last_error {
        return error.clone();
    }
    if let Some(later) = &row.late {
        return late(later);
    }
    if row.kind == crate::inbox::Kind::Fallback {
        return fallback_reason::<W>(row)
            .unwrap_or_else(|| "typed by this build: `inbox replay --fallback` hands it to its method".into());
    }
    String::new()
}

/// The stored fallback deliveries (not pending) classified again by this build: how many fit
/// a typed webhook now, and the others by why not.
struct FallbackFit {
    total: usize,
    typed: usize,
    /// `(where, why)` → how many, most first.
    reasons: Vec<((String, String), usize)>,
}

/// Where and why a stored body does not fit, as the dry run groups them: `recordingEnded
/// data.status = "COMPLETE"` and serde's reason without its position in the body (which differs
/// from body to body).
fn why_not(event: String, reason: &crate::webhooks::Unmatched, body: &[u8]) -> (String, String) {
    let crate::webhooks::Unmatched::Mismatch { path, message } = reason else { return (event, reason.to_string()) };
    let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(why, _)| why).to_owned();
    let pointer: String = path.split('.').filter(|p| !p.is_empty()).map(|p| format!("/{p}")).collect();
    let value = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|body| {
        // A short scalar says which value it was; anything longer is left out.
        body.pointer(&pointer).filter(|v| !v.is_object() && !v.is_array()).map(ToString::to_string)
    });
    match value.filter(|v| v.len() <= 40) {
        Some(value) => (format!("{event} {path} = {value}"), message),
        None if path.is_empty() || path == "." => (event, message),
        None => (format!("{event} {path}"), message),
    }
}

async fn fallback_fit<W: Webhooks>(inbox: &dyn Inbox) -> Result<FallbackFit, String> {
    let mut reasons: std::collections::HashMap<(String, String), usize> = std::collections::HashMap::new();
    let (mut total, mut typed) = (0, 0);
    let mut query = crate::inbox::Query { filter: Filter::Fallback, ..crate::inbox::Query::newest(1000) };
    loop {
        let page = inbox.search(&query).await.map_err(|e| e.to_string())?;
        for row in page.iter().filter(|row| row.state != State::Pending) {
            total += 1;
            match W::classify(row.event.as_deref(), &row.body) {
                Ok(_) => typed += 1,
                Err(reason) => {
                    let event = row.event.clone().unwrap_or_else(|| "(no event)".into());
                    *reasons.entry(why_not(event, &reason, &row.body)).or_default() += 1;
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == query.limit => query.before = Some(last.id),
            _ => break,
        }
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(FallbackFit { total, typed, reasons })
}

impl FallbackFit {
    /// What `replay --fallback` says (of what it did), or `--dry-run` (of what it would do).
    fn report(&self, dry_run: bool) -> String {
        let still = self.total - self.typed;
        let mut text = if dry_run {
            format!(
                "{} stored fallback delivery(ies): {} fit a typed webhook of this build now (`inbox replay --fallback` \
                 hands them to their methods); {still} do not",
                self.total, self.typed
            )
        } else {
            format!(
                "of the {} fallback delivery(ies) replayed, {} fit a typed webhook of this build now; {still} go to \
                 the fallback again",
                self.total, self.typed
            )
        };
        text += if still > 0 { ":\n" } else { "\n" };
        for ((event, reason), count) in &self.reasons {
            text += &format!("  {count} × {}: {}\n", escaped(event), escaped(reason));
        }
        text
    }
}
