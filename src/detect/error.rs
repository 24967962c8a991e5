//! Error type of the detector.

/// Errors from building a detector or running an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A malformed exemption line (built-in list or config).
    #[error("exemption line {line}: {msg}")]
    Exemption {
        /// 1-based line number within its source.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The evaluation CSV is malformed.
    #[error("csv line {line}: {msg}")]
    Csv {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
}
