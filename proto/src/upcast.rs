//! Reading events whatever their version: the consumer-side half of the schema registry.
//! Every consumer of `task.created` and of the account bus (TaskKeeper's and
//! Accounting's user copies, the gateway's cache invalidation) reads through here, so an
//! old version is understood the same way everywhere.

use uuid::Uuid;

use crate::catalog::{Unreadable, is, open};
use crate::jira::split_v1_title;
use crate::popug::account::v1 as account;
use crate::popug::events::v1::Envelope;
use crate::popug::tasks::v1 as tasks;

/// `task.created` in either version, as v2. A v1 title like `"[UBERPOP-42] - Title"` is
/// split into jira_id `UBERPOP-42` and title `Title`; any other v1 title is kept whole.
pub fn task_created(envelope: &Envelope) -> Result<tasks::TaskCreated, Unreadable> {
    if is::<tasks::TaskCreated>(envelope) {
        return open::<tasks::TaskCreated>(envelope);
    }
    if is::<tasks::TaskCreatedV1>(envelope) {
        let v1 = open::<tasks::TaskCreatedV1>(envelope)?;
        let (jira_id, title) = split_v1_title(&v1.title);
        return Ok(tasks::TaskCreated {
            task_id: v1.task_id,
            public_id: v1.public_id,
            title,
            jira_id,
            description: v1.description,
            assignee_id: v1.assignee_id,
            status: v1.status,
            sequence: v1.sequence,
        });
    }
    Err(Unreadable::unknown(envelope))
}

/// What any account event says about its account.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountChange {
    /// The account's id.
    pub id: Uuid,
    /// The whole account after the change.
    pub account: account::AccountSnapshot,
    /// An `account.deleted`: the account is gone for good, whatever its snapshot says.
    pub deleted: bool,
}

impl AccountChange {
    /// Active, and not deleted.
    pub fn active(&self) -> bool {
        self.account.active && !self.deleted
    }
}

/// The account change of any account event (created, updated, deleted; v1).
pub fn account_change(envelope: &Envelope) -> Result<AccountChange, Unreadable> {
    let (snapshot, deleted) = if is::<account::AccountCreated>(envelope) {
        (open::<account::AccountCreated>(envelope)?.account, false)
    } else if is::<account::AccountUpdated>(envelope) {
        (open::<account::AccountUpdated>(envelope)?.account, false)
    } else if is::<account::AccountDeleted>(envelope) {
        (open::<account::AccountDeleted>(envelope)?.account, true)
    } else {
        return Err(Unreadable::unknown(envelope));
    };
    let account =
        snapshot.ok_or_else(|| Unreadable(format!("{} without an account", envelope.name)))?;
    let id = Uuid::parse_str(&account.id).map_err(|_| {
        Unreadable(format!(
            "{}: bad account id {:?}",
            envelope.name, account.id
        ))
    })?;
    Ok(AccountChange {
        id,
        account,
        deleted,
    })
}
