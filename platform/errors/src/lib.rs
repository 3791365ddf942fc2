//! The error type of a PopugJira service and its one mapping to `tonic::Status`.
//! Database and unexpected errors are logged with their cause and leave as an opaque
//! INTERNAL. (Account keeps its own, which also maps unique-constraint violations.)

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// INVALID_ARGUMENT naming the field.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// NOT_FOUND.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// PERMISSION_DENIED.
    #[error("{0}")]
    PermissionDenied(String),
    /// FAILED_PRECONDITION.
    #[error("{0}")]
    FailedPrecondition(String),
    /// INTERNAL; the cause is logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Error {
        Error::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Error {
        Error::Internal(error.into())
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::Invalid { .. } => Status::invalid_argument(error.to_string()),
            Error::NotFound(_) => Status::not_found(error.to_string()),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                Status::internal("internal error")
            }
        }
    }
}
