//! The one error type of the generator.
//!
//! Every error says where in the user's spec it happened (file and JSON pointer), because the
//! person reading it is editing YAML, not our code.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in the spec: a file and a JSON pointer inside it (`""` is the whole file).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The file, as it was found (relative to the working directory when given relative).
    pub file: PathBuf,
    /// RFC 6901 pointer into the file's document.
    pub pointer: String,
}

impl Location {
    pub(crate) fn new(file: &Path, pointer: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), pointer: pointer.into() }
    }

    /// The location of a child: `key` is escaped as RFC 6901 requires.
    pub(crate) fn child(&self, key: impl fmt::Display) -> Self {
        let key = key.to_string().replace('~', "~0").replace('/', "~1");
        Self { file: self.file.clone(), pointer: format!("{}/{}", self.pointer, key) }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.file.display(), self.pointer)
    }
}

/// Something the generator had to do differently from what the spec says, for the build to
/// succeed: a construct it degraded (to `serde_json::Value`, or by dropping a constraint), or a
/// name it had to make up. Printed by `compile` as a cargo warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub at: Location,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Why the spec could not be turned into code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: cannot read: {source}")]
    Read { file: PathBuf, source: std::io::Error },

    #[error("{file}: invalid YAML: {message}")]
    Yaml { file: PathBuf, message: String },

    #[error("{at}: $ref {reference:?} points to nothing ({why})")]
    DanglingRef { at: Location, reference: String, why: String },

    #[error("{at}: $ref {reference:?} is part of a cycle of references: {cycle}")]
    CyclicRef { at: Location, reference: String, cycle: String },

    #[error("{at}: operationId {operation_id:?} names the same handler method as the operationId at {first}")]
    DuplicateOperationId { at: Location, operation_id: String, first: Location },

    #[error("{at}: {message}")]
    Unsupported { at: Location, message: String },

    #[error("{at}: the down-leveled document is not valid OpenAPI 3.0: {message}")]
    Invalid { at: Location, message: String },

    #[error("{spec}: progenitor could not generate code: {message}")]
    Progenitor { spec: PathBuf, message: String },

    #[error("cannot write {file}: {source}")]
    Write { file: PathBuf, source: std::io::Error },

    #[error("{0}")]
    Config(String),
}

impl Error {
    pub(crate) fn unsupported(at: &Location, message: impl Into<String>) -> Self {
        Self::Unsupported { at: at.clone(), message: message.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
