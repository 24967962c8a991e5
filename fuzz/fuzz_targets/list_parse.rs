//! Block/allow list text → rules → compiled filter.
//!
//! The parser detects the format line by line, so one target covers hosts files,
//! plain-domain lists, AdGuard/ABP syntax and `/regex/` lines (the seed corpus has
//! slices of each). Checks: no panic; line numbers stay within the text; the
//! compiled filter's counts agree with the parser's; every line can be queried as
//! a name and explained.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use dnsguard::filter::{Filter, ListConfig, ListText, Parsed, parse::parse_line, parse_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count() as u32;

    let (mut rules, mut invalid) = (0usize, 0usize);
    for item in parse_list(&text) {
        let line = match item {
            Parsed::Rule { line, .. } => {
                rules += 1;
                line
            }
            Parsed::Invalid { line, .. } => {
                invalid += 1;
                line
            }
        };
        assert!(line >= 1 && line <= lines, "line {line} of {lines}");
    }
    for raw in text.lines() {
        let _ = parse_line(raw);
    }

    let list = ListConfig {
        name: "fuzz".into(),
        source: "fuzz".into(),
        ..ListConfig::default()
    };
    let texts = [ListText {
        name: "fuzz",
        text: &text,
    }];
    // Compiling can fail legitimately (a regex set over the size limit); it must not panic.
    let Ok(filter) = Filter::build(std::slice::from_ref(&list), &[], &texts) else {
        return;
    };
    let stats = &filter.list_stats()[0];
    assert_eq!(stats.entries, rules, "rules loaded vs parsed");
    assert_eq!(stats.invalid, invalid, "invalid lines counted vs parsed");

    let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for raw in text.lines().take(64) {
        let name = raw.trim().to_ascii_lowercase();
        let verdict = filter.check(client, &name, 1);
        let _ = filter.explain(&verdict, &texts);
    }
});
