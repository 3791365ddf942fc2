//! Request fields every service reads the same way: ids, page sizes, page tokens.

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
}
