//! Where the verifier's keys come from, and their reload on SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::web;

use crate::middleware::Gate;
use crate::verify::{Policy, Verifier};

use super::counted;

/// Where the keys come from: given, and a file read again on SIGHUP.
pub(super) struct Keys {
    pub(super) given: Vec<Vec<u8>>,
    pub(super) file: Option<PathBuf>,
    pub(super) policy: Policy,
}

impl Keys {
    pub(super) fn verifier(&self) -> Result<Verifier, String> {
        let mut keys = self.given.clone();
        if let Some(file) = &self.file {
            keys.extend(read_key_file(file)?);
        }
        Verifier::new(&keys, self.policy).map_err(|e| e.to_string())
    }
}

/// The keys in `file`: one per line; blank lines and lines starting with `#` are skipped.
pub fn read_key_file(file: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.as_bytes().to_vec())
        .collect())
}

/// On SIGHUP, the key file is read again and the keys replaced at once; if it cannot be read
/// (or holds no key) the keys in use stay, and the log says why. Without a key file there is
/// nothing to reload, and the log says that.
pub(super) async fn reload_on_hangup(keys: Arc<Keys>, gate: web::Data<Gate>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        log::warn!("cannot listen for SIGHUP: the key file is read at start only");
        return;
    };
    while hangups.recv().await.is_some() {
        if keys.file.is_none() {
            log::info!(
                "SIGHUP: nothing reloaded: the keys come from --key or MEET_WEBHOOKS_KEY, read at start only \
                 (--key-file keys are read again on SIGHUP)"
            );
            continue;
        }
        match keys.verifier() {
            Ok(verifier) => {
                let count = verifier.key_count();
                gate.verifier.store(Arc::new(verifier));
                crate::metrics::keys_loaded(count);
                log::info!("SIGHUP: keys reloaded ({})", counted(count, "key"));
            }
            Err(e) => log::error!("SIGHUP: the keys were not reloaded, the ones in use stay: {e}"),
        }
    }
}
