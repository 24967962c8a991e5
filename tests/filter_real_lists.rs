//! Loads the real block lists shipped in `shared/blocklists/` (hosts, plain-domain and adblock formats) and
//! checks entry counts, reported invalid lines, lookups of known entries and fingerprint uniqueness.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use dnsguard::filter::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/blocklists/");

fn read(rel: &str) -> String {
    let path = format!("{DIR}{rel}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// (file, min entries, max entries, max invalid, a name the list blocks)
const FILES: &[(&str, usize, usize, usize, &str)] = &[
    ("small-140k.domains.txt", 140_000, 141_000, 10, "000free.us"),
    (
        "raw/hagezi/3p_stevenblack.domains.txt",
        140_000,
        141_000,
        10,
        "000free.us",
    ),
    (
        "raw/hagezi/3p_adguarddns.hosts.txt",
        123_000,
        124_500,
        50,
        "000123456789.online",
    ),
    (
        "raw/hagezi/adblock_light.txt",
        122_000,
        123_000,
        50,
        "0001.best",
    ),
    (
        "raw/1hosts/Pro_domains.txt",
        173_000,
        174_000,
        50,
        "smetrics.abbott",
    ),
    (
        "raw/1hosts/Pro_adblock.txt",
        99_000,
        100_000,
        50,
        "adservice.google.ac",
    ),
];

#[test]
fn real_lists_load_with_expected_counts() {
    let texts: Vec<(String, String)> = FILES.iter().map(|f| (f.0.to_string(), read(f.0))).collect();
    let lists: Vec<ListConfig> = FILES
        .iter()
        .map(|f| ListConfig {
            name: f.0.into(),
            source: format!("{DIR}{}", f.0),
            ..ListConfig::default()
        })
        .collect();
    let lt: Vec<ListText<'_>> = texts
        .iter()
        .map(|(n, t)| ListText { name: n, text: t })
        .collect();
    let filter = Filter::build(&lists, &[], &lt).unwrap_or_else(|e| panic!("{e}"));
    for (st, &(file, min, max, max_invalid, known)) in filter.list_stats().iter().zip(FILES) {
        println!(
            "{file}: {} entries, {} invalid, samples {:?}",
            st.entries,
            st.invalid,
            st.invalid_samples.iter().take(5).collect::<Vec<_>>()
        );
        assert!(!st.missing);
        assert!(
            (min..=max).contains(&st.entries),
            "{file}: {} entries",
            st.entries
        );
        assert!(st.invalid <= max_invalid, "{file}: {} invalid", st.invalid);
        assert_eq!(
            st.invalid_samples.len(),
            st.invalid.min(MAX_INVALID_SAMPLES)
        );
        let v = filter.check(CLIENT, known, 1);
        assert_eq!(
            v.action,
            Action::Block(BlockReason::Rule),
            "{file}: {known}"
        );
        assert_eq!(
            filter.check(CLIENT, &format!("sub.{known}"), 1).action,
            Action::Block(BlockReason::Rule)
        );
    }
    assert_eq!(
        filter
            .check(CLIENT, "dnsguard-not-listed.example", 1)
            .action,
        Action::Pass
    );

    // Fingerprints: every distinct normalised name of the 140k list got its own slot (no collision), and the
    // union of all lists has as many slots as distinct names.
    let mut names = HashSet::new();
    for (_, text) in &texts {
        for p in parse_list(text) {
            if let Parsed::Rule {
                rule:
                    Rule {
                        pattern: parse::Pattern::Domain { name, .. },
                        ..
                    },
                ..
            } = p
            {
                names.insert(name.into_owned());
            }
        }
    }
    let mem = filter.memory();
    println!(
        "union: {} distinct names, {:.1} bytes/name, {} sets",
        names.len(),
        mem.bytes_per_domain,
        mem.source_sets
    );
    assert_eq!(mem.domains, names.len());
    assert!(mem.bytes_per_domain <= 24.0);

    // Explain works on a real list (line numbers are 1-based and point at the rule).
    let v = filter.check(CLIENT, "adservice.google.ac", 1);
    let e = filter.explain(&v, &lt);
    println!("{e}");
    let text = e.rule_text.unwrap_or_default();
    assert!(text.contains("adservice.google.ac"), "{text}");
}

#[test]
fn hosts_file_counts_match_its_header() {
    // The hagezi hosts file states "Domains: 123962" in its header.
    let text = read("raw/hagezi/3p_adguarddns.hosts.txt");
    let rules = parse_list(&text)
        .filter(|p| matches!(p, Parsed::Rule { .. }))
        .count();
    let invalid = parse_list(&text)
        .filter(|p| matches!(p, Parsed::Invalid { .. }))
        .count();
    println!("3p_adguarddns.hosts.txt: {rules} rules, {invalid} invalid");
    assert_eq!(rules + invalid, 123_962);
}
