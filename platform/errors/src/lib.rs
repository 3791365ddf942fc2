//! The error type every PopugJira service returns, its one mapping to `tonic::Status`, and
//! the input parsers every service shares.
//!
//! Status codes follow the cause, so a client can act on them: a dependency that is down
//! or overloaded (the database unreachable, the pool exhausted, a connection reset) is
//! UNAVAILABLE — retry later; a transaction that lost a serialization or deadlock race is
//! retried here ([`retry`]) and only then ABORTED; a field the caller got wrong is
//! INVALID_ARGUMENT with a `google.rpc.BadRequest` naming it (its JSON name, as grpcurl
//! and the web client show it); everything unexpected is INTERNAL, logged with its cause
//! and never sent.

pub mod input;

use std::future::Future;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// INVALID_ARGUMENT naming the field (as written in the `.proto`, snake_case).
    #[error("{}: {message}", json_name(field))]
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
    /// UNAVAILABLE: a dependency is down or overloaded; the call may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// ABORTED: a concurrent change won ([`retry`] tried again already); the cause is
    /// logged.
    #[error("concurrent update: {0}")]
    Conflict(String),
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

    /// A conflict another attempt may not meet (serialization failure, deadlock).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict(_))
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

/// The JSON name of a proto field: `jira_id` → `jiraId` (what grpcurl, the web client
/// and every JSON mapping show).
pub fn json_name(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The constraint a unique violation broke, if `error` is one (for services that name
/// the field of their own constraints in ALREADY_EXISTS).
pub fn unique_violation(error: &sqlx::Error) -> Option<&str> {
    let db = error.as_database_error()?;
    if db.is_unique_violation() {
        db.constraint()
    } else {
        None
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Error {
        use sqlx::Error as E;
        match &error {
            E::PoolTimedOut => Error::Unavailable("the database is busy or unreachable".into()),
            E::PoolClosed | E::Io(_) | E::Tls(_) | E::Protocol(_) | E::WorkerCrashed => {
                tracing::warn!(%error, "database unreachable");
                Error::Unavailable("the database is unreachable".into())
            }
            E::Database(db) => {
                let code = db.code().unwrap_or_default();
                match code.as_ref() {
                    // Connection exceptions, shutdowns, too many connections, out of
                    // resources: the server, not the request.
                    c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => {
                        tracing::warn!(%error, code = c, "database unavailable");
                        Error::Unavailable("the database is unavailable".into())
                    }
                    "40001" | "40P01" => Error::Conflict(db.message().to_owned()),
                    "23505" => Error::AlreadyExists("a record with these values"),
                    c if c.starts_with("23") => {
                        tracing::warn!(%error, code = c, "integrity constraint refused a write");
                        Error::FailedPrecondition("the change conflicts with stored data".into())
                    }
                    // Data exceptions (a value the validation let through): the caller's.
                    c if c.starts_with("22") => {
                        tracing::warn!(%error, code = c, "a value reached the database unvalidated");
                        Error::invalid("request", "holds a value out of range or malformed")
                    }
                    _ => Error::Internal(error.into()),
                }
            }
            _ => Error::Internal(error.into()),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::Invalid { field, .. } => {
                let message = error.to_string();
                let details = ErrorDetails::with_bad_request_violation(
                    json_name(field),
                    message
                        .split_once(": ")
                        .map_or(message.as_str(), |(_, m)| m),
                );
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound(_) => Status::not_found(error.to_string()),
            Error::AlreadyExists(_) => Status::already_exists(error.to_string()),
            Error::Unauthenticated(message) => Status::unauthenticated(message),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::Unavailable(message) => Status::unavailable(message),
            Error::Conflict(cause) => {
                tracing::warn!(%cause, "gave up on a conflicting transaction");
                Status::aborted("a concurrent change won; try again")
            }
            Error::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// Attempts of an operation that meets conflicts (the first and the retries).
const ATTEMPTS: u32 = 4;

/// Runs `operation` (one whole transaction) again when it lost a serialization or
/// deadlock race, up to [`ATTEMPTS`] times with a short, growing pause; then returns the
/// conflict (ABORTED). Any other outcome returns at once.
pub async fn retry<T, F, Fut>(mut operation: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut attempt = 1;
    loop {
        match operation().await {
            Err(error) if error.is_conflict() && attempt < ATTEMPTS => {
                tracing::debug!(%error, attempt, "conflict; trying the transaction again");
                tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names() {
        assert_eq!(json_name("jira_id"), "jiraId");
        assert_eq!(json_name("from_day"), "fromDay");
        assert_eq!(json_name("ids"), "ids");
        assert_eq!(json_name("extra_permissions"), "extraPermissions");
    }

    #[test]
    fn invalid_carries_a_bad_request_naming_the_json_field() {
        let status = Status::from(Error::invalid("jira_id", "must look like UBERPOP-42"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "jiraId: must look like UBERPOP-42");
        let bad = status
            .get_details_bad_request()
            .expect("a BadRequest detail");
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "jiraId");
        assert_eq!(
            bad.field_violations[0].description,
            "must look like UBERPOP-42"
        );
    }

    #[test]
    fn causes_map_to_codes() {
        let unavailable = Status::from(Error::from(sqlx::Error::PoolTimedOut));
        assert_eq!(unavailable.code(), Code::Unavailable);
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(Status::from(Error::from(io)).code(), Code::Unavailable);
        assert_eq!(
            Status::from(Error::Conflict("x".into())).code(),
            Code::Aborted
        );
    }

    #[tokio::test]
    async fn conflicts_are_retried_then_aborted() {
        let mut calls = 0;
        let outcome: Result<(), Error> = retry(|| {
            calls += 1;
            async { Err(Error::Conflict("serialization failure".into())) }
        })
        .await;
        assert!(matches!(outcome, Err(Error::Conflict(_))));
        assert_eq!(calls, ATTEMPTS);
        let mut calls = 0;
        let outcome = retry(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 2 {
                    Err(Error::Conflict("deadlock".into()))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(outcome.ok(), Some(2));
    }
}
