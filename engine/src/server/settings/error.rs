//! What can be wrong with settings, said so that an operator can fix it: the file and line,
//! or the environment variable, the key, and the form the value should take.

use std::io;
use std::path::{Path, PathBuf};

/// Why settings could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}: invalid TOML: {message}", at(path.as_deref(), *line))]
    Syntax {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// The line (from 1) where parsing stopped.
        line: usize,
        /// What the parser expected.
        message: String,
    },
    /// A key of the file is unknown, or its value is not of the expected form.
    #[error("{}: key `{key}`: {message}", at(path.as_deref(), *line))]
    Key {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// The key's line (from 1).
        line: usize,
        /// The key.
        key: String,
        /// What is wrong, with the expected form.
        message: String,
    },
    /// An environment variable's value is not of the expected form.
    #[error("{var} (key `{key}`): {message}")]
    Env {
        /// The variable, e.g. `RINGCAST_MAX_MESSAGE`.
        var: String,
        /// The key it sets.
        key: String,
        /// What is wrong, with the expected form.
        message: String,
    },
    /// Values that are each well formed but do not fit (e.g. a demo symbol longer than
    /// `max-topic-len`).
    #[error("key `{key}`: {message}")]
    Invalid {
        /// The key whose value does not fit.
        key: String,
        /// Why.
        message: String,
    },
}

impl SettingsError {
    /// The key concerned, if one is.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Key { key, .. } | Self::Env { key, .. } | Self::Invalid { key, .. } => Some(key),
            Self::Read { .. } | Self::Syntax { .. } => None,
        }
    }

    /// The line of the file concerned (from 1), if the error is in a file.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Key { line, .. } | Self::Syntax { line, .. } => Some(*line),
            Self::Read { .. } | Self::Env { .. } | Self::Invalid { .. } => None,
        }
    }
}

/// `ringcast.toml:3`, or `line 3` for text that came from no file.
fn at(path: Option<&Path>, line: usize) -> String {
    match path {
        Some(p) => format!("{}:{line}", p.display()),
        None => format!("line {line}"),
    }
}
