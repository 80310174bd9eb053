//! What `/readyz` asks of the SQLite inbox: a real durable write.

use std::fs::File;
use std::io::Write;

use super::Store;
use crate::clock::now_ms;
use crate::inbox::StoreError;

/// `/readyz` writes this many bytes to a scratch file: a disk that cannot take them cannot take
/// a batch of deliveries either.
const PROBE_BYTES: usize = 64 * 1024;

impl Store {
    /// A real durable write: a row in the file (fsynced) and [`PROBE_BYTES`] in a scratch file
    /// beside it (SQLite reuses its log's space, so its write alone succeeds on a full disk).
    pub fn check(&mut self) -> Result<(), StoreError> {
        self.guard()?;
        self.set_sync_full(true)?;
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('ready_probe', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [now_ms()],
            )
            .map_err(|e| self.failed(e))?;
        let probe = self.path.with_file_name(".ready-probe");
        let written = File::create(&probe).and_then(|mut file| {
            file.write_all(&[0u8; PROBE_BYTES])?;
            file.sync_all()
        });
        let _ = std::fs::remove_file(&probe);
        written.map_err(|e| {
            StoreError::unavailable(format!("the data directory {} cannot take writes", probe.display())).caused_by(e)
        })
    }
}
