//! Reaching the database, waiting for it at start-up, and saying in words why it failed.

use std::time::Duration;

use deadpool_postgres::{Client, Pool};

use super::CONNECTIONS;
use crate::inbox::StoreError;

pub(super) async fn connection(pool: &Pool, target: &str) -> Result<Client, StoreError> {
    pool.get().await.map_err(|e| StoreError::unreachable(format!("cannot reach the database {target}: {}", reason(&e))))
}

/// How long the first connection is waited for while the server is starting, unreachable or
/// full (a service started with its database, or beside a full one), before giving up.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// The first connection: retried with backoff, saying why, while the failure is one that can
/// pass ([`passes`]); any other (an unknown database or role, a refused password) at once.
pub(super) async fn patiently(pool: &Pool, target: &str) -> Result<Client, StoreError> {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match pool.get().await {
            Ok(client) => return Ok(client),
            Err(e) if passes(&e) && started.elapsed() + delay < START_PATIENCE => {
                log::warn!(
                    "cannot reach the database {target} yet: {}; trying again in {:.1} s (for up to {} s)",
                    reason(&e),
                    delay.as_secs_f64(),
                    START_PATIENCE.as_secs()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(StoreError::unavailable(format!("cannot reach the database {target}: {}", reason(&e))));
            }
        }
    }
}

/// Whether a failure to connect can pass by itself: the server is unreachable, starting,
/// stopping or out of connections; not a wrong database, role or password.
fn passes(e: &(dyn std::error::Error + 'static)) -> bool {
    use tokio_postgres::error::SqlState;
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(db) = e.downcast_ref::<tokio_postgres::Error>().and_then(tokio_postgres::Error::as_db_error) {
            let code = db.code();
            return [SqlState::TOO_MANY_CONNECTIONS, SqlState::CANNOT_CONNECT_NOW, SqlState::ADMIN_SHUTDOWN]
                .contains(code)
                || code.code().starts_with("08");
        }
        next = e.source();
    }
    true
}

/// An error as a person needs to read it: PostgreSQL's own message, SQLSTATE, detail and hint
/// (tokio-postgres says only "db error"), or else each cause in turn. A URL's password never
/// appears: neither the server nor the driver puts it in a message.
pub(crate) fn reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(db) = e.downcast_ref::<tokio_postgres::Error>().and_then(tokio_postgres::Error::as_db_error) {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            for more in [db.detail(), db.hint()].into_iter().flatten() {
                text.push_str(&format!("; {more}"));
            }
            if *db.code() == tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS {
                text.push_str(&format!(
                    "; the server's max_connections is reached: each replica opens up to {CONNECTIONS} connections"
                ));
            }
            parts.push(text);
            break;
        }
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// `host:port/database` as the URL names it, without user or password.
pub(super) fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("postgres://{host}:{port}/{}", config.get_dbname().unwrap_or_default())
}

pub(super) fn failed(e: tokio_postgres::Error) -> StoreError {
    let context = format!("the database: {}", reason(&e));
    if passes(&e) { StoreError::unreachable(context) } else { StoreError::unavailable(context) }
}
