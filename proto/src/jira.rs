//! Jira ids, a part of the task contract: `task.created` v1 carried them inside the title
//! (`"[UBERPOP-42] - Title"`), v2 has a field of its own.

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
