//! Domain names as dnsguard's modules share them: the text form the filter,
//! detector, resolver and query log use, the "is this name in that zone" test,
//! parsing a name from the configuration, and the normalisation and validation of
//! list entries.
//!
//! List entries: lower case, trailing dot removed, IDN converted to punycode (with
//! the `idna` crate), then checked (labels 1–63 bytes, total ≤ 253, characters
//! `a-z0-9-_`). `_` is accepted because real block lists contain names such as
//! `_dmarc.example.com` or `ad_server.net`. An entry already in normal form is
//! borrowed (`Cow::Borrowed`), so loading a million-line list does not allocate per
//! line.

use std::borrow::Cow;

use hickory_proto::rr::Name;

/// A name in the form the filter, detector and query log use: ASCII, lower case,
/// no trailing dot (the root is the empty string), odd bytes escaped as `\DDD`.
pub fn name_text(name: &Name) -> String {
    let mut s = name.to_ascii();
    s.make_ascii_lowercase();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// True when `name` is `zone` or below it (both name text, as [`name_text`]
/// gives it): `a.b.example.com` is under `example.com`, `badexample.com` is not.
#[inline]
pub fn is_under(name: &str, zone: &str) -> bool {
    match name.strip_suffix(zone) {
        Some("") => true,
        Some(rest) => rest.ends_with('.'),
        None => false,
    }
}

/// Parses a domain name from config or a list, making it fully qualified.
pub fn parse_name(s: &str) -> Result<Name, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty name".into());
    }
    let mut name = Name::from_utf8(s).map_err(|e| format!("{s:?} is not a domain name: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

/// Why a name was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty (or only a dot).
    #[error("empty name")]
    Empty,
    /// Longer than 253 bytes after conversion.
    #[error("name longer than 253 bytes")]
    TooLong,
    /// A label is empty (`a..b`, leading dot).
    #[error("empty label")]
    EmptyLabel,
    /// A label is longer than 63 bytes.
    #[error("label longer than 63 bytes")]
    LabelTooLong,
    /// A character outside `a-z0-9-_` (after lower-casing and IDN conversion).
    #[error("invalid character in name")]
    BadChar,
    /// The IDN (non-ASCII) name could not be converted to punycode.
    #[error("invalid internationalised name")]
    BadIdn,
}

#[inline]
fn name_byte_ok(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

/// Validates an already lower-case ASCII name (no trailing dot).
pub fn validate(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(NameError::Empty);
    }
    if bytes.len() > 253 {
        return Err(NameError::TooLong);
    }
    for label in bytes.split(|&b| b == b'.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(NameError::LabelTooLong);
        }
        if !label.iter().all(|&b| name_byte_ok(b)) {
            return Err(NameError::BadChar);
        }
    }
    Ok(())
}

/// Normalises a list entry's name: strips one trailing dot, lower-cases, converts IDN to punycode, validates.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, NameError> {
    let s = raw.strip_suffix('.').unwrap_or(raw);
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            let lower = s.to_ascii_lowercase();
            validate(&lower)?;
            Ok(Cow::Owned(lower))
        } else {
            validate(s)?;
            Ok(Cow::Borrowed(s))
        }
    } else {
        let ascii = idna::domain_to_ascii(s).map_err(|_| NameError::BadIdn)?;
        let ascii = ascii.strip_suffix('.').map(str::to_owned).unwrap_or(ascii);
        validate(&ascii)?;
        Ok(Cow::Owned(ascii))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_means_equal_or_below_a_label_boundary() {
        assert!(is_under("example.com", "example.com"));
        assert!(is_under("a.example.com", "example.com"));
        assert!(!is_under("badexample.com", "example.com"));
        assert!(!is_under("example.com", "a.example.com"));
    }

    #[test]
    fn names_are_lower_case_without_the_root_dot() {
        let n = parse_name(" WWW.Example.COM ").unwrap();
        assert!(n.is_fqdn());
        assert_eq!(name_text(&n), "www.example.com");
        assert_eq!(name_text(&Name::root()), "");
        assert!(parse_name("  ").is_err());
    }

    #[test]
    fn normalises_case_dot_and_idn() {
        assert_eq!(normalize("Example.COM.").as_deref(), Ok("example.com"));
        assert!(matches!(
            normalize("example.com"),
            Ok(Cow::Borrowed("example.com"))
        ));
        assert_eq!(normalize("bücher.de").as_deref(), Ok("xn--bcher-kva.de"));
        assert_eq!(
            normalize("ПРИМЕР.рф").as_deref(),
            Ok("xn--e1afmkfd.xn--p1ai")
        );
        assert_eq!(
            normalize("_dmarc.ad_server.net").as_deref(),
            Ok("_dmarc.ad_server.net")
        );
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(normalize(""), Err(NameError::Empty));
        assert_eq!(normalize("."), Err(NameError::Empty));
        assert_eq!(normalize("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(normalize(".a"), Err(NameError::EmptyLabel));
        assert_eq!(normalize(&"a".repeat(64)), Err(NameError::LabelTooLong));
        assert!(normalize(&"a".repeat(63)).is_ok());
        let long = vec!["abcdefghi"; 26].join(".");
        assert_eq!(long.len(), 259);
        assert_eq!(normalize(&long), Err(NameError::TooLong));
        assert_eq!(normalize("exa mple.com"), Err(NameError::BadChar));
        assert_eq!(normalize("a/b.com"), Err(NameError::BadChar));
    }
}
