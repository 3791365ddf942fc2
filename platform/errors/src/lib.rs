//! The error type every PopugJira service returns, its one mapping to `tonic::Status`, and
//! the input parsers every service shares. Field errors name the field; database and
//! unexpected errors are logged with their cause and leave as an opaque INTERNAL.

pub mod input;

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
    /// ALREADY_EXISTS naming the field that collides.
    #[error("{0} already taken")]
    AlreadyExists(&'static str),
    /// UNAUTHENTICATED with a message safe to show.
    #[error("{0}")]
    Unauthenticated(&'static str),
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

    /// The request field an INVALID_ARGUMENT names; `None` for any other error.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Error::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// The field a validation refused, for the validated types' own tests: panics when
/// `result` is a success or another error.
pub fn field_of<T: std::fmt::Debug>(result: Result<T, Error>) -> &'static str {
    match result {
        Err(error) => error
            .field()
            .unwrap_or_else(|| panic!("expected a field error, got {error:?}")),
        Ok(value) => panic!("expected a field error, got {value:?}"),
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Error {
        Error::Internal(error.into())
    }
}

/// The constraint a unique violation broke, if `error` is one (for services that map
/// their own constraints to ALREADY_EXISTS).
pub fn unique_violation(error: &sqlx::Error) -> Option<&str> {
    let db = error.as_database_error()?;
    if db.is_unique_violation() {
        db.constraint()
    } else {
        None
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::Invalid { .. } => Status::invalid_argument(error.to_string()),
            Error::NotFound(_) => Status::not_found(error.to_string()),
            Error::AlreadyExists(_) => Status::already_exists(error.to_string()),
            Error::Unauthenticated(message) => Status::unauthenticated(message),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                Status::internal("internal error")
            }
        }
    }
}
