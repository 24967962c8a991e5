//! Domain names as dnsguard's modules share them: the text form the filter,
//! detector, resolver and query log use, the "is this name in that zone" test,
//! and parsing a name from the configuration.

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
}
