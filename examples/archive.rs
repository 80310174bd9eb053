//! A handler that acts: when a recording ends complete, it downloads the media into a directory
//! and then deletes the recording from OpenVidu Meet. Its second run on the same delivery (a
//! retry, a restart after a crash) is harmless: a download resumes where it stopped or, once the
//! file is in place, asks for nothing, and a recording already deleted is not an error.
//!
//! ```sh
//! cargo run --example archive -- --key <API key> --meet-url https://meet.example.com/meet/api/v1
//! ```
//!
//! (`MEET_WEBHOOKS_ARCHIVE_DIR` chooses the directory, `./recordings` by default.) Every flag of
//! `meet-webhooks serve` applies.

use std::path::PathBuf;

use meet_webhooks::{Receiver, WebhookHandler, client, types};
use meet_webhooks_runtime::meet::{self, Settings};
use meet_webhooks_runtime::{DeliveryContext, HandlerError, HandlerResult};

/// Archives complete recordings into `dir`.
pub struct Archiver {
    meet: Option<client::Client>,
    dir: PathBuf,
}

impl Archiver {
    pub fn new(meet: Option<Settings>, dir: PathBuf) -> Self {
        Self { meet: meet.map(|settings| client::Client::from_settings(&settings)), dir }
    }
}

impl WebhookHandler for Archiver {
    async fn recording_ended_webhook(
        &self,
        _ctx: &DeliveryContext,
        body: types::RecordingEndedWebhookBody,
    ) -> HandlerResult {
        let recording = body.data;
        if recording.status.to_string() != "complete" {
            return Ok(());
        }
        let meet = self.meet.as_ref().ok_or("no Meet REST client: start with --meet-url")?;
        let id = recording.recording_id.as_str();
        let file = self.dir.join(file_name(id)?);
        meet::download(&file, |range| meet.get_recording_media().recording_id(id).range(range).send()).await?;
        match meet.delete_recording().recording_id(id).call().await {
            // A 404: an earlier run deleted it, after its download.
            Err(e) if e.status().is_some_and(|s| s.as_u16() == 404) => Ok(()),
            answer => answer.map(drop).map_err(Into::into),
        }
    }
}

/// `<recordingId>.mp4`: the id is the provider's, so it must not name a path of its own.
pub fn file_name(id: &str) -> Result<String, HandlerError> {
    if id.is_empty() || id.starts_with('.') || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("recording id {id:?} cannot name a file").into());
    }
    Ok(format!("{id}.mp4"))
}

fn main() -> std::process::ExitCode {
    let dir = std::env::var_os("MEET_WEBHOOKS_ARCHIVE_DIR").map_or_else(|| PathBuf::from("recordings"), PathBuf::from);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: {}: {e}", dir.display());
        return std::process::ExitCode::from(2);
    }
    meet_webhooks_runtime::cli::main(|meet| Receiver::new(Archiver::new(meet, dir)))
}
