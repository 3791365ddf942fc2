//! Request fields every service reads the same way: ids, page sizes, page tokens, free
//! text.

use uuid::Uuid;

use crate::Error;

/// A UUID from the request field `field`.
pub fn id(field: &'static str, raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| Error::invalid(field, "must be a UUID"))
}

/// Rows per page: 0 means 50, otherwise 1..=500.
pub fn page_size(raw: i32) -> Result<i64, Error> {
    match raw {
        0 => Ok(50),
        1..=500 => Ok(i64::from(raw)),
        _ => Err(Error::invalid("page_size", "must be between 1 and 500")),
    }
}

/// The position a page token carries (a positive number the service issued); empty is
/// the first page.
pub fn page_token(raw: &str) -> Result<Option<i64>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(Some)
        .ok_or_else(|| Error::invalid("page_token", "is not a token this service issued"))
}

/// Free text (a description): anything but NUL and the other control characters, except
/// newline, carriage return and tab. PostgreSQL refuses NUL in text; the rest have no
/// place in what people read.
pub fn free_text(field: &'static str, raw: &str) -> Result<(), Error> {
    match raw
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        Some(c) => Err(Error::invalid(
            field,
            format!(
                "must not contain the control character U+{:04X}",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_of;

    #[test]
    fn ids_pages_and_tokens() {
        assert!(id("id", "01a23336-6fe1-76aa-a24e-bc3db5d41a42").is_ok());
        assert_eq!(field_of(id("user_id", "nope")), "user_id");
        assert_eq!(page_size(0).ok(), Some(50));
        assert_eq!(page_size(500).ok(), Some(500));
        assert_eq!(field_of(page_size(501)), "page_size");
        assert_eq!(field_of(page_size(-1)), "page_size");
        assert_eq!(page_token("").ok(), Some(None));
        assert_eq!(page_token("42").ok(), Some(Some(42)));
        assert_eq!(field_of(page_token("zz")), "page_token");
        assert_eq!(field_of(page_token("0")), "page_token");
    }

    #[test]
    fn free_text_keeps_lines_and_tabs_only() {
        assert!(free_text("description", "twice a day\n\tthen rest\r\n").is_ok());
        assert!(free_text("description", "попугай 🦜").is_ok());
        assert_eq!(field_of(free_text("description", "a\u{0}b")), "description");
        assert_eq!(
            field_of(free_text("description", "bell\u{7}")),
            "description"
        );
        assert_eq!(
            field_of(free_text("description", "del\u{7f}")),
            "description"
        );
    }
}
