//! The service's errors: the shared type, mapped to `tonic::Status` in one place.

pub use popug_errors::Error;
