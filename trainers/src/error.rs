//! The trainers' error type: every message names the file or setting at fault and what to do.

use std::path::{Path, PathBuf};

/// What went wrong while opening, loading or saving a model, a tokenizer or data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A file was read but its content is not what it should be.
    #[error("{}: {message}", path.display())]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A model folder holds a model this crate does not implement.
    #[error("{}: {message}", path.display())]
    Unsupported {
        /// The file that says so (usually `config.json`).
        path: PathBuf,
        /// What is unsupported and what is.
        message: String,
    },
    /// The checkpoint's tensors do not match the model that `config.json` describes.
    #[error("{}: {message}", path.display())]
    Weights {
        /// The model folder.
        path: PathBuf,
        /// The tensors that are missing, unexpected or mis-shaped.
        message: String,
    },
    /// Text could not be tokenized or a chat template not rendered.
    #[error("{0}")]
    Tokenizer(String),
    /// A loss, weight or margin of the library refused its inputs.
    #[error(transparent)]
    Otpref(#[from] otpref::OtprefError),
    /// Training diverged or could not go on.
    #[error("{0}")]
    Training(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Self {
        Self::InvalidFile {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
