//! The service's errors: the shared type, mapped to `tonic::Status` in one place
//! (unique violations become ALREADY_EXISTS in `store::accounts::conflict`).

pub use popug_errors::Error;
