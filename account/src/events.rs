//! What Account publishes: every create, change and deactivation of an account, as the
//! whole account (a snapshot with its `version`) on the account bus, written to the
//! outbox in the transaction of the change.

use popug_proto::popug::account::v1 as pb;

use crate::store::accounts::AccountRow;

/// Producer name on every envelope.
pub const PRODUCER: &str = "account";

/// The account as events carry it.
pub fn snapshot(row: &AccountRow) -> pb::AccountSnapshot {
    pb::AccountSnapshot {
        id: row.id.to_string(),
        username: row.username.clone(),
        name: row.name.clone(),
        surname: row.surname.clone(),
        email: row.email.clone(),
        role: row.role.as_str().to_owned(),
        permissions: row.permissions(),
        active: row.active,
        version: row.version,
        updated_at: Some(popug_grpc::timestamp(row.updated_at)),
    }
}

pub fn created(row: &AccountRow) -> pb::AccountCreated {
    pb::AccountCreated {
        account: Some(snapshot(row)),
    }
}

/// `changed` names the fields that changed (`password` among them, never its value).
pub fn updated(row: &AccountRow, changed: Vec<String>) -> pb::AccountUpdated {
    pb::AccountUpdated {
        account: Some(snapshot(row)),
        changed_fields: changed,
    }
}

pub fn deleted(row: &AccountRow) -> pb::AccountDeleted {
    pb::AccountDeleted {
        account: Some(snapshot(row)),
    }
}
