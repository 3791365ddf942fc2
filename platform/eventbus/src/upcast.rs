//! Reading events whatever their version: the consumer-side half of the schema registry.
//! Every consumer of `task.created` and of the account bus reads them through here, so
//! an old version is understood the same way everywhere.

use popug_proto::popug::account::v1 as account;
use popug_proto::popug::tasks::v1 as tasks;

use crate::catalog::{is, open};
use crate::{Envelope, HandleError};

/// `task.created` in either version, as v2. A v1 title like `"[UBERPOP-42] - Title"` is
/// split into jira_id `UBERPOP-42` and title `Title`; any other v1 title is kept whole.
pub fn task_created(envelope: &Envelope) -> Result<tasks::TaskCreated, HandleError> {
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
    Err(HandleError::Permanent(format!(
        "not a task.created event: {} v{}",
        envelope.name, envelope.version
    )))
}

/// The account snapshot of any account event (created, updated, deleted; v1).
pub fn account_snapshot(envelope: &Envelope) -> Result<account::AccountSnapshot, HandleError> {
    let snapshot = if is::<account::AccountCreated>(envelope) {
        open::<account::AccountCreated>(envelope)?.account
    } else if is::<account::AccountUpdated>(envelope) {
        open::<account::AccountUpdated>(envelope)?.account
    } else if is::<account::AccountDeleted>(envelope) {
        open::<account::AccountDeleted>(envelope)?.account
    } else {
        return Err(HandleError::Permanent(format!(
            "unknown event {} v{}",
            envelope.name, envelope.version
        )));
    };
    snapshot.ok_or_else(|| HandleError::Permanent(format!("{} without an account", envelope.name)))
}

/// `"[UBERPOP-42] - Title"` → (`"UBERPOP-42"`, `"Title"`); anything else → (`""`, whole).
pub fn split_v1_title(mixed: &str) -> (String, String) {
    let trimmed = mixed.trim();
    if let Some(rest) = trimmed.strip_prefix('[')
        && let Some((id, title)) = rest.split_once(']')
    {
        let id = id.trim();
        if is_jira_id(id) {
            let title = title.trim_start();
            let title = title.strip_prefix('-').unwrap_or(title).trim();
            return (id.to_owned(), title.to_owned());
        }
    }
    (String::new(), trimmed.to_owned())
}

/// A Jira key: `^[A-Z][A-Z0-9]+-[0-9]+$`.
pub fn is_jira_id(s: &str) -> bool {
    let Some((project, number)) = s.split_once('-') else {
        return false;
    };
    let project = project.as_bytes();
    project.len() >= 2
        && project[0].is_ascii_uppercase()
        && project[1..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_titles_split() {
        assert_eq!(
            split_v1_title("[UBERPOP-42] - Feed the popugs"),
            ("UBERPOP-42".to_owned(), "Feed the popugs".to_owned())
        );
        assert_eq!(
            split_v1_title("[UBERPOP-7]Title"),
            ("UBERPOP-7".to_owned(), "Title".to_owned())
        );
        assert_eq!(
            split_v1_title("Plain title"),
            (String::new(), "Plain title".to_owned())
        );
        assert_eq!(
            split_v1_title("[not an id] x"),
            (String::new(), "[not an id] x".to_owned())
        );
    }

    #[test]
    fn jira_ids() {
        for ok in ["UBERPOP-42", "AB-1", "X2-10"] {
            assert!(is_jira_id(ok), "{ok}");
        }
        for bad in [
            "",
            "A-1",
            "ab-1",
            "UBERPOP-",
            "UBERPOP42",
            "UBER POP-1",
            "UBERPOP-4a",
        ] {
            assert!(!is_jira_id(bad), "{bad}");
        }
    }
}
