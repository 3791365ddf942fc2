//! Validated input. Each newtype's `parse` is the only way in, and its error names the
//! field (documented in `proto/popug/account/v1/account.proto` and the README).

use popug_auth::{Permission, Role};

use crate::error::Error;

/// 3..=32 of `[a-z0-9_.-]`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Username, Error> {
        let ok_len = (3..=32).contains(&raw.len());
        let ok_first = raw.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
        let ok_chars = raw.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
        if ok_len && ok_first && ok_chars {
            Ok(Username(raw.to_owned()))
        } else {
            Err(Error::invalid(
                "username",
                "must be 3 to 32 characters of a-z, 0-9, '_', '.', '-', starting with a letter",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A person's name or surname: 1..=100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(field: &'static str, raw: &str) -> Result<PersonName, Error> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        if trimmed.chars().count() > 100 {
            return Err(Error::invalid(field, "must be at most 100 characters"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(Error::invalid(field, "must not contain control characters"));
        }
        Ok(PersonName(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `local@domain.tld`, at most 254 characters, stored lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, Error> {
        let email = raw.trim().to_lowercase();
        let valid = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.split('.').count() >= 2
                    && domain.split('.').all(|label| !label.is_empty())
            });
        if valid {
            Ok(Email(email))
        } else {
            Err(Error::invalid(
                "email",
                "must be an address like name@example.com",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// 8..=128 characters.
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Password, Error> {
        match raw.chars().count() {
            0..8 => Err(Error::invalid("password", "must be at least 8 characters")),
            129.. => Err(Error::invalid("password", "must be at most 128 characters")),
            _ => Ok(Password(raw.to_owned())),
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The proto role, which must be set.
pub fn parse_role(raw: i32) -> Result<Role, Error> {
    use popug_proto::popug::account::v1::Role as P;
    match P::try_from(raw) {
        Ok(P::Admin) => Ok(Role::Admin),
        Ok(P::Manager) => Ok(Role::Manager),
        Ok(P::Accountant) => Ok(Role::Accountant),
        Ok(P::Worker) => Ok(Role::Worker),
        Ok(P::Unspecified) | Err(_) => Err(Error::invalid(
            "role",
            "must be one of ROLE_ADMIN, ROLE_MANAGER, ROLE_ACCOUNTANT, ROLE_WORKER",
        )),
    }
}

pub fn role_to_proto(role: Role) -> i32 {
    use popug_proto::popug::account::v1::Role as P;
    let proto = match role {
        Role::Admin => P::Admin,
        Role::Manager => P::Manager,
        Role::Accountant => P::Accountant,
        Role::Worker => P::Worker,
    };
    proto as i32
}

/// Extra permission grants: known names, deduplicated and sorted.
pub fn parse_permissions(raw: &[String]) -> Result<Vec<Permission>, Error> {
    let mut out = Vec::with_capacity(raw.len());
    for name in raw {
        let permission = name.parse::<Permission>().map_err(|_| {
            Error::invalid("extra_permissions", format!("unknown permission {name:?}"))
        })?;
        out.push(permission);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use popug_errors::field_of;

    #[test]
    fn usernames() {
        for ok in [
            "bob",
            "worker1",
            "a.b-c_d",
            "x23456789012345678901234567890ab",
        ] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ab",
            "1abc",
            "Bob",
            "bob smith",
            "bob!",
            "x234567890123456789012345678901ab",
        ] {
            assert_eq!(
                field_of(Username::parse(bad).map(|_| ())),
                "username",
                "{bad}"
            );
        }
    }

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" Bob@Popug.Example ").map(|e| e.0).ok(),
            Some("bob@popug.example".into())
        );
        for bad in [
            "",
            "bob",
            "bob@",
            "@x.y",
            "bob@localhost",
            "a b@x.y",
            "a@b@c.d",
            "a@x..y",
        ] {
            assert_eq!(field_of(Email::parse(bad).map(|_| ())), "email", "{bad}");
        }
    }

    #[test]
    fn names_passwords_roles_permissions() {
        assert_eq!(
            PersonName::parse("name", "  Kesha ").map(|n| n.0).ok(),
            Some("Kesha".into())
        );
        assert_eq!(
            field_of(PersonName::parse("surname", "   ").map(|_| ())),
            "surname"
        );
        assert_eq!(
            field_of(PersonName::parse("name", &"x".repeat(101)).map(|_| ())),
            "name"
        );
        assert_eq!(field_of(Password::parse("short").map(|_| ())), "password");
        assert!(Password::parse("long enough").is_ok());
        assert_eq!(
            field_of(Password::parse(&"p".repeat(129)).map(|_| ())),
            "password"
        );
        assert_eq!(field_of(parse_role(0).map(|_| ())), "role");
        assert_eq!(field_of(parse_role(42).map(|_| ())), "role");
        assert_eq!(parse_role(4).ok(), Some(Role::Worker));
        assert_eq!(
            parse_permissions(&["analytics.read".into(), "analytics.read".into()]).ok(),
            Some(vec![Permission::AnalyticsRead])
        );
        assert_eq!(
            field_of(parse_permissions(&["root".into()])),
            "extra_permissions"
        );
    }
}
