//! Validated input. Every `parse` names the field at fault, so the API answers
//! INVALID_ARGUMENT with it.

use crate::error::Error;

/// At most this many characters in a title.
pub const TITLE_MAX: usize = 200;
/// At most this many characters in a description.
pub const DESCRIPTION_MAX: usize = 10_000;

/// A task title: trimmed, 1..=200 characters, no brackets (the Jira id has its own
/// field now) and no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub fn parse(raw: &str) -> Result<Title, Error> {
        let title = raw.trim();
        if title.is_empty() {
            return Err(Error::invalid("title", "is required"));
        }
        if title.chars().count() > TITLE_MAX {
            return Err(Error::invalid(
                "title",
                format!("must be at most {TITLE_MAX} characters"),
            ));
        }
        if title.contains(['[', ']']) {
            return Err(Error::invalid(
                "title",
                "must not contain '[' or ']'; put the Jira id in jiraId",
            ));
        }
        if title.chars().any(char::is_control) {
            return Err(Error::invalid(
                "title",
                "must not contain control characters",
            ));
        }
        Ok(Title(title.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Jira id like `UBERPOP-42`: `^[A-Z][A-Z0-9]+-[0-9]+$`, at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JiraId(String);

impl JiraId {
    /// `None` for an empty (absent) id.
    pub fn parse(raw: &str) -> Result<Option<JiraId>, Error> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.len() <= 64 && popug_proto::jira::is_jira_id(raw) {
            Ok(Some(JiraId(raw.to_owned())))
        } else {
            Err(Error::invalid(
                "jira_id",
                "must look like UBERPOP-42 (^[A-Z][A-Z0-9]+-[0-9]+$)",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A description: at most 10 000 characters of free text (lines and tabs, no other
/// control character), may be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(raw: &str) -> Result<Description, Error> {
        if raw.chars().count() > DESCRIPTION_MAX {
            return Err(Error::invalid(
                "description",
                format!("must be at most {DESCRIPTION_MAX} characters"),
            ));
        }
        popug_errors::input::free_text("description", raw)?;
        Ok(Description(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated CreateTask.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub title: Title,
    pub jira_id: Option<JiraId>,
    pub description: Description,
}

impl NewTask {
    pub fn parse(title: &str, jira_id: &str, description: &str) -> Result<NewTask, Error> {
        Ok(NewTask {
            title: Title::parse(title)?,
            jira_id: JiraId::parse(jira_id)?,
            description: Description::parse(description)?,
        })
    }
}

/// A task's status, stored by name (`open`, `done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Status {
    Open,
    Done,
}

impl Status {
    /// The name events carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Done => "done",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use popug_errors::field_of;

    #[test]
    fn titles() {
        assert_eq!(
            Title::parse("  Feed the popugs ").map(|t| t.0).ok(),
            Some("Feed the popugs".to_owned())
        );
        assert_eq!(field_of(Title::parse("   ")), "title");
        assert_eq!(field_of(Title::parse("[POP-1] - x")), "title");
        assert_eq!(field_of(Title::parse("x]")), "title");
        assert_eq!(field_of(Title::parse("a\u{7}b")), "title");
        assert!(Title::parse(&"é".repeat(200)).is_ok());
        assert_eq!(field_of(Title::parse(&"a".repeat(201))), "title");
    }

    #[test]
    fn jira_ids() {
        assert!(matches!(JiraId::parse(""), Ok(None)));
        assert!(matches!(JiraId::parse("UBERPOP-42"), Ok(Some(_))));
        assert!(matches!(JiraId::parse("A1-0"), Ok(Some(_))));
        for bad in [
            "A-1", "ab-1", "1A-1", "AB-", "AB-1x", "AB_1", "AB-1-2", "AB",
        ] {
            assert_eq!(field_of(JiraId::parse(bad)), "jira_id", "{bad}");
        }
    }

    #[test]
    fn descriptions() {
        assert!(Description::parse("").is_ok());
        assert!(Description::parse(&"x".repeat(10_000)).is_ok());
        assert_eq!(
            field_of(Description::parse(&"x".repeat(10_001))),
            "description"
        );
        assert!(Description::parse("line one\nline two\ttabbed").is_ok());
        assert_eq!(
            field_of(Description::parse("nul \u{0} here")),
            "description"
        );
    }
}
