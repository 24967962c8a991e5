//! End-to-end behaviour of `Filter`: formats, normalisation, precedence, modifiers, wildcards, regexes,
//! groups, default-deny, client lookup, explain, stats and config validation.

use std::net::IpAddr;

use dnsguard::filter::*;

const A: u16 = 1;
const AAAA: u16 = 28;
const HTTPS: u16 = 65;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn list(name: &str) -> ListConfig {
    ListConfig {
        name: name.into(),
        source: format!("builtin:{name}"),
        ..ListConfig::default()
    }
}

fn group(name: &str, clients: &[&str]) -> GroupConfig {
    GroupConfig {
        name: name.into(),
        clients: clients.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn build(lists: &[ListConfig], groups: &[GroupConfig], texts: &[ListText<'_>]) -> Filter {
    Filter::build(lists, groups, texts).unwrap_or_else(|e| panic!("build failed: {e}"))
}

/// One block list with `text`, default group only.
fn single(text: &str) -> Filter {
    build(&[list("l")], &[], &[ListText { name: "l", text }])
}

const ME: &str = "192.0.2.1";

fn act(f: &Filter, name: &str) -> Action {
    f.check(ip(ME), name, A).action
}

const BLOCK: Action = Action::Block(BlockReason::Rule);

#[test]
fn every_list_format() {
    let f = single(
        "[Adblock Plus 2.0]\n! comment\n# comment\n\n0.0.0.0 h1.com h2.com # c\n127.0.0.1 h3.com\n:: h4.com\n\
         ::1 h5.com\n0.0.0.0 localhost\nplain.com\n||adb.com^\n|exact.com^\n||*.sub.com^\n*.star.com\n",
    );
    for n in [
        "h1.com",
        "h2.com",
        "h3.com",
        "h4.com",
        "h5.com",
        "plain.com",
        "adb.com",
        "exact.com",
    ] {
        assert_eq!(act(&f, n), BLOCK, "{n}");
    }
    // Hosts, plain and `||` rules cover subdomains; `|x^` does not.
    for n in ["x.h1.com", "a.b.plain.com", "x.adb.com"] {
        assert_eq!(act(&f, n), BLOCK, "{n}");
    }
    assert_eq!(act(&f, "x.exact.com"), Action::Pass);
    // `||*.x^` and `*.x`: strict subdomains only.
    assert_eq!(act(&f, "sub.com"), Action::Pass);
    assert_eq!(act(&f, "a.sub.com"), BLOCK);
    assert_eq!(act(&f, "star.com"), Action::Pass);
    assert_eq!(act(&f, "a.b.star.com"), BLOCK);
    // No suffix confusion.
    for n in ["localhost", "notplain.com", "com", "h1.co", "adb.com.evil"] {
        assert_eq!(act(&f, n), Action::Pass, "{n}");
    }
    assert_eq!(f.list_stats()[0].entries, 10);
    assert_eq!(f.list_stats()[0].invalid, 0);
}

#[test]
fn normalisation_of_list_entries() {
    let f = single("Example.COM.\n||Bücher.DE^\n0.0.0.0 MiXeD.Org\n");
    assert_eq!(act(&f, "example.com"), BLOCK);
    assert_eq!(act(&f, "www.example.com"), BLOCK);
    assert_eq!(act(&f, "xn--bcher-kva.de"), BLOCK);
    assert_eq!(act(&f, "shop.xn--bcher-kva.de"), BLOCK);
    assert_eq!(act(&f, "mixed.org"), BLOCK);
}

#[test]
fn invalid_lines_are_counted_with_line_numbers_and_never_abort() {
    let text = "good1.com\nexample.com##.banner\n/ads/script.js\n||x.com^$third-party\n||y.com^$bogus\n\
                bad..name\n/unclosed(/\n||z.com^$client=my-laptop\ngood2.com\n";
    let f = single(text);
    let st = &f.list_stats()[0];
    assert_eq!(st.entries, 2);
    assert_eq!(st.invalid, 7);
    let lines: Vec<u32> = st.invalid_samples.iter().map(|s| s.0).collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8]);
    assert!(
        st.invalid_samples[0].1.contains("cosmetic"),
        "{:?}",
        st.invalid_samples
    );
    assert!(st.invalid_samples[2].1.contains("third-party"));
    assert!(st.invalid_samples[3].1.contains("unknown modifier"));
    assert_eq!(act(&f, "good1.com"), BLOCK);
    assert_eq!(act(&f, "good2.com"), BLOCK);
    assert_eq!(act(&f, "x.com"), Action::Pass);
}

#[test]
fn invalid_samples_are_bounded() {
    let text: String = (0..100).map(|i| format!("bad{i}..com\n")).collect();
    let f = single(&text);
    assert_eq!(f.list_stats()[0].invalid, 100);
    assert_eq!(f.list_stats()[0].invalid_samples.len(), MAX_INVALID_SAMPLES);
}

#[test]
fn precedence_allow_block_important() {
    let f = single(
        "||ads.com^\n@@||ok.ads.com^\n||imp.com^$important\n@@||imp.com^\n||both.com^$important\n\
         @@||both.com^$important\n@@good.org\n||good.org^\n",
    );
    assert_eq!(act(&f, "x.ads.com"), BLOCK);
    assert_eq!(act(&f, "ok.ads.com"), Action::Allow);
    assert_eq!(act(&f, "x.ok.ads.com"), Action::Allow);
    assert_eq!(act(&f, "imp.com"), BLOCK, "$important block beats @@");
    assert_eq!(
        act(&f, "both.com"),
        Action::Allow,
        "@@…$important beats $important block"
    );
    assert_eq!(
        act(&f, "good.org"),
        Action::Allow,
        "allow beats block in any order"
    );
}

#[test]
fn group_entries_beat_lists() {
    let lists = [
        list("block"),
        ListConfig {
            kind: ListKind::Allow,
            ..list("allow")
        },
    ];
    let mut g = group("default", &[]);
    g.allow = vec!["||ads.com^".into(), "/^re[0-9]\\.imp\\.com$/".into()];
    g.deny = vec!["fine.org".into(), "||deny-imp.net^$important".into()];
    let f = build(
        &lists,
        &[g],
        &[
            ListText {
                name: "block",
                text: "||ads.com^\n||imp.com^$important\n",
            },
            ListText {
                name: "allow",
                text: "fine.org\n@@||deny-imp.net^$important\n",
            },
        ],
    );
    assert_eq!(
        act(&f, "x.ads.com"),
        Action::Allow,
        "group allow beats list block"
    );
    assert_eq!(act(&f, "fine.org"), BLOCK, "group deny beats list allow");
    assert_eq!(
        act(&f, "re1.imp.com"),
        BLOCK,
        "list $important beats a non-important group allow"
    );
    assert_eq!(
        act(&f, "deny-imp.net"),
        Action::Allow,
        "@@…$important beats even an important group deny"
    );
}

#[test]
fn dnstype_modifier() {
    let f =
        single("||v6.com^$dnstype=AAAA\n||nota.com^$dnstype=~A\n||multi.com^$dnstype=A|HTTPS\n");
    let q = |n: &str, t: u16| f.check(ip(ME), n, t).action;
    assert_eq!(q("v6.com", AAAA), BLOCK);
    assert_eq!(q("x.v6.com", AAAA), BLOCK);
    assert_eq!(q("v6.com", A), Action::Pass);
    assert_eq!(q("nota.com", A), Action::Pass);
    assert_eq!(q("nota.com", AAAA), BLOCK);
    assert_eq!(q("multi.com", HTTPS), BLOCK);
    assert_eq!(q("multi.com", AAAA), Action::Pass);
}

#[test]
fn client_modifier() {
    let f = single(
        "||c1.com^$client=127.0.0.2\n||c2.com^$client=10.0.0.0/8|fd00::/8\n||c3.com^$client=~10.1.1.1\n",
    );
    let q = |c: &str, n: &str| f.check(ip(c), n, A).action;
    assert_eq!(q("127.0.0.2", "c1.com"), BLOCK);
    assert_eq!(q("127.0.0.1", "c1.com"), Action::Pass);
    assert_eq!(q("10.9.9.9", "c2.com"), BLOCK);
    assert_eq!(q("fd00::1", "www.c2.com"), BLOCK);
    assert_eq!(q("11.0.0.1", "c2.com"), Action::Pass);
    assert_eq!(q("10.1.1.1", "c3.com"), Action::Pass);
    assert_eq!(q("10.1.1.2", "c3.com"), BLOCK);
}

#[test]
fn denyallow_modifier() {
    let f = single(
        "||example.com^$denyallow=ok.example.com|fine.example.com\n*$denyallow=com|net,dnstype=TXT\n",
    );
    assert_eq!(act(&f, "example.com"), BLOCK);
    assert_eq!(act(&f, "a.example.com"), BLOCK);
    assert_eq!(act(&f, "ok.example.com"), Action::Pass);
    assert_eq!(act(&f, "x.ok.example.com"), Action::Pass);
    assert_eq!(act(&f, "fine.example.com"), Action::Pass);
    // `*` + denyallow: every TXT query outside .com/.net is blocked.
    assert_eq!(f.check(ip(ME), "a.org", 16).action, BLOCK);
    assert_eq!(f.check(ip(ME), "a.net", 16).action, Action::Pass);
    assert_eq!(f.check(ip(ME), "a.org", A).action, Action::Pass);
}

#[test]
fn wildcard_rules() {
    let f =
        single("||ad*.example.com^\nads*\n||*.tracker.net^\n|metrics*^\n@@||adok.example.com^\n");
    assert_eq!(act(&f, "ad1.example.com"), BLOCK);
    assert_eq!(act(&f, "x.adserver.example.com"), BLOCK);
    assert_eq!(act(&f, "bad.example.com"), Action::Pass);
    assert_eq!(
        act(&f, "adok.example.com"),
        Action::Allow,
        "exception beats wildcard"
    );
    assert_eq!(act(&f, "myads.org"), BLOCK);
    assert_eq!(act(&f, "a.tracker.net"), BLOCK);
    assert_eq!(act(&f, "tracker.net"), Action::Pass);
    assert_eq!(act(&f, "metrics.x.io"), BLOCK);
    assert_eq!(act(&f, "a.metrics.x.io"), Action::Pass);
    assert_eq!(act(&f, "example.com"), Action::Pass);
}

#[test]
fn regex_rules() {
    let f = single("/^ad[0-9]+\\./\n@@/^ad7\\./\n/tracking/$dnstype=A\n");
    assert_eq!(act(&f, "ad12.example.com"), BLOCK);
    assert_eq!(act(&f, "ad7.example.com"), Action::Allow);
    assert_eq!(act(&f, "adx.example.com"), Action::Pass);
    assert_eq!(act(&f, "my-tracking.io"), BLOCK);
    assert_eq!(f.check(ip(ME), "my-tracking.io", AAAA).action, Action::Pass);
}

#[test]
fn per_group_lists_allow_deny_and_default_deny() {
    let lists = [
        list("common"),
        ListConfig {
            groups: vec!["kids".into()],
            ..list("kids-only")
        },
        ListConfig {
            groups: vec!["agents".into()],
            kind: ListKind::Allow,
            ..list("agent-allow")
        },
    ];
    let mut kids = group("kids", &["10.0.1.0/24"]);
    kids.deny = vec!["||games.com^".into()];
    let mut agents = group("agents", &["127.0.0.2", "fd00::/8"]);
    agents.default_deny = true;
    agents.allow = vec!["api.openai.com".into(), "||github.com^".into()];
    agents.block_mode = BlockModeKind::NxDomain;
    let texts = [
        ListText {
            name: "common",
            text: "ads.com\n",
        },
        ListText {
            name: "kids-only",
            text: "adult.com\n",
        },
        ListText {
            name: "agent-allow",
            text: "pypi.org\n",
        },
    ];
    let f = build(&lists, &[kids, agents], &texts);
    let q = |c: &str, n: &str| f.check(ip(c), n, A);
    // default group
    assert_eq!(q("192.168.0.9", "ads.com").action, BLOCK);
    assert_eq!(q("192.168.0.9", "adult.com").action, Action::Pass);
    assert_eq!(q("192.168.0.9", "games.com").action, Action::Pass);
    assert_eq!(q("192.168.0.9", "anything.org").action, Action::Pass);
    // kids
    let v = q("10.0.1.7", "adult.com");
    assert_eq!((f.group_name(v.group), v.action), ("kids", BLOCK));
    assert_eq!(q("10.0.1.7", "www.games.com").action, BLOCK);
    assert_eq!(q("10.0.1.7", "ads.com").action, BLOCK);
    // agents: default deny
    let v = q("127.0.0.2", "example.org");
    assert_eq!(
        (f.group_name(v.group), v.action),
        ("agents", Action::Block(BlockReason::NotAllowlisted))
    );
    assert!(v.rule.is_none());
    assert_eq!(q("127.0.0.2", "api.openai.com").action, Action::Allow);
    assert_eq!(
        q("127.0.0.2", "chat.openai.com").action,
        Action::Block(BlockReason::NotAllowlisted)
    );
    assert_eq!(q("fd00::2", "codeload.github.com").action, Action::Allow);
    assert_eq!(q("127.0.0.2", "files.pypi.org").action, Action::Allow);
    assert_eq!(
        q("127.0.0.2", "ads.com").action,
        BLOCK,
        "a block rule still reports the rule"
    );
    assert_eq!(f.group_block(v.group), (&BlockMode::NxDomain, 60));
    assert_eq!(f.group_block(GroupId(0)), (&BlockMode::Null, 60));
}

#[test]
fn client_to_group_lookup() {
    let groups = [
        group("a", &["10.0.0.0/8", "2001:db8::/32"]),
        group("b", &["10.0.5.0/24", "2001:db8:1::/48"]),
        group("c", &["10.0.5.5", "::1"]),
    ];
    let f = build(&[], &groups, &[]);
    let g = |s: &str| f.group_name(f.group_of(ip(s))).to_owned();
    assert_eq!(g("10.1.1.1"), "a");
    assert_eq!(g("10.0.5.1"), "b");
    assert_eq!(g("10.0.5.5"), "c");
    assert_eq!(g("::ffff:10.0.5.5"), "c");
    assert_eq!(g("2001:db8:2::1"), "a");
    assert_eq!(g("2001:db8:1::1"), "b");
    assert_eq!(g("::1"), "c");
    assert_eq!(g("192.168.1.1"), "default");
    assert_eq!(g("2001:db9::1"), "default");
    assert_eq!(
        f.check(ip("10.0.5.1"), "x.com", A).group,
        f.group_of(ip("10.0.5.1"))
    );
}

#[test]
fn many_lists_beyond_64() {
    let lists: Vec<ListConfig> = (0..100)
        .map(|i| ListConfig {
            groups: vec![if i == 99 {
                "g".into()
            } else {
                "default".into()
            }],
            ..list(&format!("l{i}"))
        })
        .collect();
    let texts_owned: Vec<String> = (0..100)
        .map(|i| format!("shared.com\nonly{i}.com\n"))
        .collect();
    let texts: Vec<ListText<'_>> = lists
        .iter()
        .zip(&texts_owned)
        .map(|(l, t)| ListText {
            name: &l.name,
            text: t,
        })
        .collect();
    let f = build(&lists, &[group("g", &["10.9.9.9"])], &texts);
    assert_eq!(f.check(ip("10.9.9.9"), "only99.com", A).action, BLOCK);
    assert_eq!(f.check(ip("10.9.9.9"), "only5.com", A).action, Action::Pass);
    assert_eq!(f.check(ip(ME), "only99.com", A).action, Action::Pass);
    assert_eq!(f.check(ip(ME), "only98.com", A).action, BLOCK);
    let v = f.check(ip("10.9.9.9"), "shared.com", A);
    assert_eq!(v.rule.map(|r| r.source), Some(RuleSource::List(99)));
    let e = f.explain(&v, &texts);
    assert_eq!(
        (e.source_name.as_deref(), e.line, e.rule_text.as_deref()),
        (Some("l99"), Some(1), Some("shared.com"))
    );
    assert_eq!(f.memory().domains, 101);
}

#[test]
fn explain_reports_list_line_and_text() {
    let lists = [
        list("first"),
        list("second"),
        ListConfig {
            groups: vec!["g".into()],
            ..list("third")
        },
    ];
    let mut g = group("g", &["10.0.0.1"]);
    g.allow = vec!["x.org".into(), "||allowed.net^".into()];
    let texts = [
        ListText {
            name: "first",
            text: "# header\nfoo.com\n||ads.example.com^\n",
        },
        ListText {
            name: "second",
            text: "! c\n\n/^track[0-9]+\\./\n0.0.0.0 a.io b.io\n",
        },
        ListText {
            name: "third",
            text: "one.com\ntwo.com\n  dup.net  \n",
        },
    ];
    let mut texts2 = texts;
    texts2[0].text = "# header\nfoo.com\n||ads.example.com^\ndup.net\n";
    let f = build(&lists, &[g], &texts2);
    let ex = |c: &str, n: &str| f.explain(&f.check(ip(c), n, A), &texts2);

    let e = ex(ME, "x.ads.example.com");
    assert_eq!(e.action, BLOCK);
    assert_eq!(e.source, Some(RuleSource::List(0)));
    assert_eq!(
        (e.source_name.as_deref(), e.line, e.rule_text.as_deref()),
        (Some("first"), Some(3), Some("||ads.example.com^"))
    );
    let e = ex(ME, "track12.x.com");
    assert_eq!(
        (e.source_name.as_deref(), e.line, e.rule_text.as_deref()),
        (Some("second"), Some(3), Some("/^track[0-9]+\\./"))
    );
    let e = ex(ME, "b.io");
    assert_eq!(
        (e.line, e.rule_text.as_deref()),
        (Some(4), Some("0.0.0.0 a.io b.io"))
    );
    // dup.net is in "first" (line 4) and "third" (line 3); group g gets it from both, the default group from
    // "first" only; a group using only "third" must be explained by a re-scan.
    let e = ex(ME, "dup.net");
    assert_eq!((e.source_name.as_deref(), e.line), (Some("first"), Some(4)));
    let allowed = ex("10.0.0.1", "www.allowed.net");
    assert_eq!(allowed.action, Action::Allow);
    assert_eq!(allowed.source_name.as_deref(), Some("group g allow"));
    assert_eq!(
        (allowed.line, allowed.rule_text.as_deref()),
        (Some(2), Some("||allowed.net^"))
    );
    let e = ex(ME, "nothing.com");
    assert_eq!((e.action, e.source), (Action::Pass, None));
    assert!(e.to_string().starts_with("pass"));

    // A group using only "third": the table recorded the line of "first"; explain finds line 3 in "third".
    let lists_b = [
        ListConfig {
            groups: vec!["default".into()],
            ..list("first")
        },
        ListConfig {
            groups: vec!["g".into()],
            ..list("third")
        },
    ];
    let fb = build(&lists_b, &[group("g", &["10.0.0.1"])], &texts2);
    let v = fb.check(ip("10.0.0.1"), "dup.net", A);
    assert_eq!(
        v.rule.map(|r| (r.source, r.line)),
        Some((RuleSource::List(1), 0))
    );
    let e = fb.explain(&v, &texts2);
    assert_eq!(
        (e.source_name.as_deref(), e.line, e.rule_text.as_deref()),
        (Some("third"), Some(3), Some("dup.net"))
    );
    // Without the text: still names the list.
    let e = fb.explain(&v, &[]);
    assert_eq!(e.source_name.as_deref(), Some("third"));
    assert!(e.note.is_some());
}

#[test]
fn missing_text_and_disabled_lists() {
    let lists = [
        list("present"),
        list("absent"),
        ListConfig {
            enabled: false,
            ..list("off")
        },
    ];
    let f = build(
        &lists,
        &[],
        &[
            ListText {
                name: "present",
                text: "a.com\n",
            },
            ListText {
                name: "off",
                text: "b.com\n",
            },
        ],
    );
    let st = f.list_stats();
    assert_eq!((st[0].missing, st[0].entries), (false, 1));
    assert!(st[1].missing);
    assert_eq!(
        (st[2].enabled, st[2].missing, st[2].entries),
        (false, false, 0)
    );
    assert_eq!(act(&f, "a.com"), BLOCK);
    assert_eq!(act(&f, "b.com"), Action::Pass);
}

#[test]
fn config_validation_names_the_item() {
    let t: [ListText<'_>; 0] = [];
    let err = |lists: &[ListConfig], groups: &[GroupConfig]| match Filter::build(lists, groups, &t)
    {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    };
    assert_eq!(
        err(&[list("a"), list("a")], &[]),
        FilterError::DuplicateList("a".into())
    );
    assert_eq!(
        err(&[], &[group("g", &[]), group("g", &[])]),
        FilterError::DuplicateGroup("g".into())
    );
    assert_eq!(
        err(
            &[ListConfig {
                groups: vec!["nope".into()],
                ..list("a")
            }],
            &[]
        ),
        FilterError::UnknownGroup {
            list: "a".into(),
            group: "nope".into()
        }
    );
    assert!(
        matches!(err(&[], &[group("g", &["10.0.0.0/99"])]), FilterError::BadClient { group, value } if group == "g" && value == "10.0.0.0/99")
    );
    assert!(matches!(
        err(&[], &[group("g", &["not-an-ip"])]),
        FilterError::BadClient { .. }
    ));
    let custom = GroupConfig {
        block_mode: BlockModeKind::Custom,
        ..group("g", &[])
    };
    assert!(matches!(err(&[], &[custom]), FilterError::BadBlockIps { group, .. } if group == "g"));
    assert!(matches!(
        err(&[], &[group("a", &["10.0.0.1"]), group("b", &["10.0.0.1"])]),
        FilterError::ClientInTwoGroups { first, second, .. } if first == "a" && second == "b"
    ));
    let bad = GroupConfig {
        deny: vec!["||x.com^$script".into()],
        ..group("g", &[])
    };
    assert!(
        matches!(err(&[], &[bad]), FilterError::BadEntry { group, field: "deny", .. } if group == "g")
    );
    let e = err(&[], &[group("a", &["10.0.0.1"]), group("b", &["10.0.0.1"])]).to_string();
    assert!(
        e.contains("10.0.0.1") && e.contains("\"a\"") && e.contains("\"b\""),
        "{e}"
    );
}

#[test]
fn config_from_toml_builds() {
    #[derive(serde::Deserialize)]
    struct File {
        lists: Vec<ListConfig>,
        groups: Vec<GroupConfig>,
    }
    let cfg: File = toml::from_str(
        r#"
        [[lists]]
        name = "dnsguard-default"
        source = "builtin:default"
        [[groups]]
        name = "agents"
        clients = ["127.0.0.2", "10.0.5.0/24", "fd00::/8"]
        allow = ["api.openai.com", "||github.com^"]
        deny = ["||example.org^"]
        default_deny = true
        block_mode = "custom"
        block_ips = ["192.0.2.55"]
        block_ttl = 5
        "#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let f = build(
        &cfg.lists,
        &cfg.groups,
        &[ListText {
            name: "dnsguard-default",
            text: "ads.com\n",
        }],
    );
    let v = f.check(ip("10.0.5.3"), "x.example.org", A);
    assert_eq!((f.group_name(v.group), v.action), ("agents", BLOCK));
    assert_eq!(
        f.group_block(v.group),
        (
            &BlockMode::Custom {
                v4: Some(
                    "192.0.2.55"
                        .parse()
                        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)
                ),
                v6: None
            },
            5
        )
    );
}

#[test]
fn odd_query_names_never_panic() {
    let f = single("||ads.com^\nads*\n/x+/\n||*.t.net^\n|e.com^\n");
    let long = "a.".repeat(200) + "com";
    let odd = [
        "", ".", "..", "a..b", ".ads.com", "ads.com.", "ü.com", "\0", &long, "*", "||", "^",
    ];
    for n in odd {
        for c in ["127.0.0.1", "::1", "::ffff:1.2.3.4"] {
            let v = f.check(ip(c), n, 0);
            let _ = f.explain(
                &v,
                &[ListText {
                    name: "l",
                    text: "",
                }],
            );
        }
    }
    assert_eq!(act(&f, ".ads.com"), BLOCK);
}

#[test]
fn wildcards_and_regexes_respect_groups_and_modifiers() {
    let lists = [
        ListConfig {
            groups: vec!["kids".into()],
            ..list("kids")
        },
        list("all"),
    ];
    let texts = [
        ListText {
            name: "kids",
            text: "||game*.example.com^\n/^casino[0-9]*\\./\n*poker*\n",
        },
        ListText {
            name: "all",
            text: "||ad*.cdn.net^$dnstype=AAAA\n||*-trk.cdn.net^$client=10.0.0.0/8\n",
        },
    ];
    let f = build(&lists, &[group("kids", &["10.1.0.0/16"])], &texts);
    let q = |c: &str, n: &str, t: u16| f.check(ip(c), n, t).action;
    // kids-only rules (suffix-indexed wildcard, regex with literal, fragment wildcard)
    for n in ["game1.example.com", "casino7.io", "www.pokerstars.net"] {
        assert_eq!(q("10.1.2.3", n, A), BLOCK, "{n}");
        assert_eq!(q("192.168.1.1", n, A), Action::Pass, "{n}");
    }
    // suffix-indexed wildcard with $dnstype
    assert_eq!(q("192.168.1.1", "ads1.cdn.net", AAAA), BLOCK);
    assert_eq!(q("192.168.1.1", "ads1.cdn.net", A), Action::Pass);
    // suffix-indexed wildcard with $client
    assert_eq!(q("10.1.2.3", "x-trk.cdn.net", A), BLOCK);
    assert_eq!(q("192.168.1.1", "x-trk.cdn.net", A), Action::Pass);
    // explain a suffix-indexed wildcard
    let v = f.check(ip("10.1.2.3"), "game1.example.com", A);
    let e = f.explain(&v, &texts);
    assert_eq!(
        (e.source_name.as_deref(), e.line, e.rule_text.as_deref()),
        (Some("kids"), Some(1), Some("||game*.example.com^"))
    );
}

#[test]
fn allow_wildcard_beats_block_hit_in_the_table() {
    // The scan must still run when the group has allow wildcards stronger than the table's block hit.
    let f = single("||tracker.io^\n@@||ok*.tracker.io^\n@@/^fine[0-9]\\.tracker\\.io$/\n");
    assert_eq!(act(&f, "a.tracker.io"), BLOCK);
    assert_eq!(act(&f, "ok1.tracker.io"), Action::Allow);
    assert_eq!(act(&f, "fine3.tracker.io"), Action::Allow);
}
