//! One runner for both backends' schema migrations: which steps a store at some version still
//! needs, the refusal of a store written by a newer build, and the upgrade's log line. Each
//! backend keeps its steps (its SQL) and how it reads and writes its version, in one
//! transaction with the steps.

use super::StoreError;

/// A backend's migrations: step `n` (1-based) brings a store from version `n - 1` to `n`.
pub(crate) struct Migrations(pub &'static [&'static str]);

impl Migrations {
    /// The version this build writes.
    pub const fn version(&self) -> i64 {
        self.0.len() as i64
    }

    /// The steps a store at version `current` still needs, in order (none when it is up to
    /// date); a store of a newer version is refused. `store` names it in the error.
    pub fn pending(&self, store: &str, current: i64) -> Result<&'static [&'static str], StoreError> {
        if current > self.version() {
            return Err(self.newer(store, current));
        }
        Ok(&self.0[usize::try_from(current).unwrap_or(0)..])
    }

    /// The refusal of a store at a version this build does not know.
    pub fn newer(&self, store: &str, current: i64) -> StoreError {
        StoreError::invalid(format!(
            "{store} has schema version {current}, written by a newer meet-webhooks; this one knows up to version {}: \
             run the newer version",
            self.version()
        ))
    }

    /// Says that a store was brought up from `from` (not when it was new or already current).
    pub fn upgraded(&self, store: &str, from: i64) {
        if from != 0 && from != self.version() {
            log::info!("{store}: schema upgraded from version {from} to {}", self.version());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Migrations;

    const THREE: Migrations = Migrations(&["one", "two", "three"]);

    #[test]
    fn a_store_gets_the_steps_after_its_version_and_a_newer_one_is_refused() {
        assert_eq!(THREE.version(), 3);
        assert_eq!(THREE.pending("s", 0).unwrap(), ["one", "two", "three"]);
        assert_eq!(THREE.pending("s", 2).unwrap(), ["three"]);
        assert!(THREE.pending("s", 3).unwrap().is_empty());
        let refused = THREE.pending("the inbox x", 4).unwrap_err().to_string();
        assert!(refused.contains("the inbox x has schema version 4"), "{refused}");
        assert!(refused.contains("knows up to version 3"), "{refused}");
    }
}
