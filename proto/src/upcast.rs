//! Reading events whatever their version: the consumer-side half of the schema registry.
//! Every consumer of `task.created` and of the account bus (TaskKeeper's and
//! Accounting's user copies, the gateway's cache invalidation) reads through here, so an
//! old version is understood the same way everywhere.
//!
//! Beside the upcasts compiled in ([`task_created`], [`account_change`]), upcasters can be
//! registered at run time with [`register`]: event name + version → a function turning
//! the payload into the current message of that name. Every consumer passes each
//! envelope through [`current`] before its handler sees it (`popug_eventbus::consumer`),
//! so a registered version reads exactly as the current one, in every handler, with no
//! handler changed. The registry is per process and holds until the process ends: what a
//! test (or a plugin) registers is seen by every consumer running in that process, from
//! the next batch on. A version that once was dead-lettered is then read by replaying its
//! dead letters (`<service> dead-letters replay`).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use uuid::Uuid;

use crate::catalog::{Event, Unreadable, is, open};
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

/// A registered upcaster: a payload of the version it is registered for → the current
/// version and its payload.
type Upcaster = Arc<dyn Fn(&[u8]) -> Result<(i32, Vec<u8>), Unreadable> + Send + Sync>;

/// Registered upcasters by (event name, version).
static REGISTRY: RwLock<BTreeMap<(String, i32), Upcaster>> = RwLock::new(BTreeMap::new());

/// From now on, in this process, an `E::NAME` event of `version` reads as an `E` made by
/// `upcast` from its payload (replacing whatever was registered for that version before).
/// A version the catalog knows can be registered too: the registered upcaster wins.
///
/// ```ignore
/// upcast::register::<tasks::TaskAssigned>(9, |payload| {
///     let v9 = TaskAssignedV9::decode(payload).map_err(|e| Unreadable(e.to_string()))?;
///     Ok(tasks::TaskAssigned { task_id: v9.task, ..Default::default() })
/// });
/// ```
pub fn register<E: Event>(
    version: i32,
    upcast: impl Fn(&[u8]) -> Result<E, Unreadable> + Send + Sync + 'static,
) {
    let upcaster: Upcaster =
        Arc::new(move |payload| Ok((E::VERSION, upcast(payload)?.encode_to_vec())));
    REGISTRY
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((E::NAME.to_owned(), version), upcaster);
}

/// Forgets the upcaster of `name` at `version`; whether there was one.
pub fn unregister(name: &str, version: i32) -> bool {
    REGISTRY
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&(name.to_owned(), version))
        .is_some()
}

/// Whether an upcaster is registered for `name` at `version`.
pub fn registered(name: &str, version: i32) -> bool {
    REGISTRY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .contains_key(&(name.to_owned(), version))
}

/// `envelope` as the current version of its event when an upcaster is registered for its
/// (name, version) — same event id, name and everything else, the payload and version
/// replaced — and unchanged otherwise. An upcaster that fails makes the event unreadable.
pub fn current(mut envelope: Envelope) -> Result<Envelope, Unreadable> {
    let upcaster = REGISTRY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&(envelope.name.clone(), envelope.version))
        .cloned();
    let Some(upcaster) = upcaster else {
        return Ok(envelope);
    };
    let (version, payload) = upcaster(envelope.payload.as_ref()).map_err(|e| {
        Unreadable(format!(
            "{} v{} upcaster failed: {e}",
            envelope.name, envelope.version
        ))
    })?;
    envelope.version = version;
    envelope.payload = payload.into();
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_version_reads_as_the_current_one() {
        // A version no other test uses: the registry is per process.
        let mut envelope = Envelope {
            event_id: Uuid::now_v7().to_string(),
            name: "task.completed".into(),
            version: 41,
            payload: b"task-7".to_vec().into(),
            ..Default::default()
        };
        assert_eq!(current(envelope.clone()), Ok(envelope.clone()));
        register::<tasks::TaskCompleted>(41, |payload| {
            let task_id = std::str::from_utf8(payload).map_err(|e| Unreadable(e.to_string()))?;
            Ok(tasks::TaskCompleted {
                task_id: task_id.to_owned(),
                ..Default::default()
            })
        });
        assert!(registered("task.completed", 41));
        let read = current(envelope.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (read.event_id.as_str(), read.version),
            (envelope.event_id.as_str(), 1)
        );
        let completed = open::<tasks::TaskCompleted>(&read).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(completed.task_id, "task-7");

        envelope.payload = vec![0xff].into();
        let refused = current(envelope.clone()).map(drop);
        assert!(matches!(refused, Err(Unreadable(ref r)) if r.contains("upcaster failed")));
        assert!(unregister("task.completed", 41));
        assert_eq!(current(envelope.clone()), Ok(envelope));
    }
}
