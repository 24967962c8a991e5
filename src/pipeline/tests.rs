//! The pipeline's decisions without sockets: a scripted resolver behind the
//! [`Resolve`] seam, a real cache, filter, detector and rebinding check.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use parking_lot::Mutex;

use super::block::Plan;
use super::ede::{Failure, code};
use super::*;
use crate::filter::{Action, Filter};
use crate::resolve::ResolveError;

/// What the scripted resolver answers for a name.
#[derive(Clone)]
enum Script {
    /// These A records (address, TTL), or a CNAME to the name then its A record.
    A(Vec<(Ipv4Addr, u32)>),
    Cname(&'static str, Ipv4Addr),
    Timeout,
    Bogus,
}

/// A resolver answering from a script, counting the questions it got.
#[derive(Default)]
struct Scripted {
    script: Mutex<HashMap<String, Script>>,
    asked: AtomicUsize,
}

impl Scripted {
    fn set(&self, name: &str, s: Script) {
        self.script.lock().insert(name.to_owned(), s);
    }
}

impl Resolve for Arc<Scripted> {
    async fn resolve(
        &self,
        query: &Query,
        _name: &LowerName,
        _dnssec_ok: bool,
        _checking_disabled: bool,
    ) -> (Result<Answer, ResolveError>, Arc<str>) {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let qname = query.name().clone();
        let text = qname.to_lowercase().to_ascii();
        let text = text.trim_end_matches('.');
        let script = self.script.lock().get(text).cloned();
        let mut answer = Answer::empty(ResponseCode::NoError);
        let record =
            |n: &Name, ip: Ipv4Addr, ttl| Record::from_rdata(n.clone(), ttl, RData::A(A(ip)));
        let result = match script {
            Some(Script::A(addrs)) => {
                answer.answers = addrs.iter().map(|&(ip, t)| record(&qname, ip, t)).collect();
                Ok(answer)
            }
            Some(Script::Cname(target, ip)) => {
                let target = Name::from_ascii(target).unwrap();
                let cname = RData::CNAME(CNAME(target.clone()));
                answer.answers = vec![
                    Record::from_rdata(qname.clone(), 300, cname),
                    record(&target, ip, 300),
                ];
                Ok(answer)
            }
            Some(Script::Timeout) | None => Err(ResolveError::Timeout(5)),
            Some(Script::Bogus) => Err(ResolveError::Bogus),
        };
        (result, Arc::from("scripted"))
    }
}

const CONFIG: &str = r#"
[server]
allow_clients = ["192.168.0.0/16", "10.0.0.0/8"]
[cache]
min_ttl = 0
serve_stale = true
stale_answer_ttl = 17
[detect]
watch = ["tunnel.example"]
quarantine_after = 2
[[groups]]
name = "default"
deny = ["ads.example", "198.51.100.66"]
allow = ["allowed.example"]
[[groups]]
name = "nx"
clients = ["10.0.0.1"]
deny = ["ads.example"]
block_mode = "nxdomain"
block_ttl = 30
[[groups]]
name = "nodata"
clients = ["10.0.0.2"]
deny = ["ads.example"]
block_mode = "nodata"
[[groups]]
name = "refused"
clients = ["10.0.0.3"]
deny = ["ads.example"]
block_mode = "refused"
[[groups]]
name = "custom"
clients = ["10.0.0.4"]
deny = ["ads.example"]
block_mode = "custom"
block_ips = ["192.0.2.53"]
[[groups]]
name = "blocking"
clients = ["10.0.1.1"]
tunnel_action = "block"
[[groups]]
name = "quarantining"
clients = ["10.0.2.1", "10.0.2.2"]
tunnel_action = "quarantine"
"#;

const LAN: &str = "192.168.1.20:40000";

/// The sections of a configuration file these tests write, read into the
/// pipeline's own settings (it sits below `config`, which builds them in the
/// server).
#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Sections {
    server: Server,
    cache: crate::resolve::cache::CacheConfig,
    detect: crate::detect::DetectConfig,
    groups: Vec<crate::filter::GroupConfig>,
    clients: Vec<crate::identity::ClientConfig>,
}

/// The `[server]` keys the pipeline reads.
#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Server {
    allow_clients: Vec<ipnet::IpNet>,
    allow_authenticated_anywhere: bool,
}

/// A pipeline configured by `text`, asking `resolver`, without a query log.
fn built<R: Resolve>(text: &str, resolver: R) -> Pipeline<R> {
    let f: Sections = toml::from_str(text).unwrap();
    let filter = Filter::build(&[], &f.groups, &[]).unwrap();
    let policy = PolicySettings {
        tunnel_actions: (f.groups.iter())
            .map(|g| (g.name.clone(), g.tunnel_actions(&f.detect)))
            .collect(),
        default_tunnel_actions: f.detect.actions(),
        groups: f.groups,
        clients: f.clients,
        ..PolicySettings::default()
    };
    let settings = Settings {
        allow_clients: f.server.allow_clients,
        allow_authenticated_anywhere: f.server.allow_authenticated_anywhere,
        detect: f.detect,
        cache: f.cache,
        ..Settings::default()
    };
    let log = Arc::new(QueryLog::disabled(Default::default()));
    let policy = Policy::new(filter, &policy).unwrap();
    Pipeline::with_resolver(&settings, policy, log, resolver).unwrap()
}

fn pipeline() -> (Pipeline<Arc<Scripted>>, Arc<Scripted>) {
    let resolver = Arc::new(Scripted::default());
    (built(CONFIG, resolver.clone()), resolver)
}

fn asked<'a>(client: &str, name: &'a str, qtype: RecordType) -> Asked<'a> {
    Asked {
        client: client.parse::<SocketAddr>().unwrap(),
        name,
        qtype: u16::from(qtype),
        dnssec_ok: false,
        checking_disabled: false,
        query: None,
        arrived: Arrived::now(),
        presented: None,
        forwarded: None,
    }
}

/// Runs `asked` through decide, fetch and finish as a front end does; whether
/// the resolver was asked.
fn run<R: Resolve>(p: &Pipeline<R>, asked: &Asked<'_>) -> (Says, bool) {
    let policy = p.policy();
    match p.decide(&policy, asked) {
        Step::Final(says) => (says, false),
        Step::Fetch(pending) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let got = rt.block_on(p.fetch(&pending));
            (p.finish(&policy, asked, pending, got), true)
        }
    }
}

fn records(says: &Says, name: &str, qtype: RecordType) -> Answer {
    says.answer(&Name::from_ascii(name).unwrap(), qtype)
        .into_owned()
}

fn ede(p: &Pipeline<Arc<Scripted>>, says: &Says) -> Option<u16> {
    let policy = p.policy();
    says.ede(&policy).map(|e| e.code)
}

#[test]
fn refused_clients_get_refused_before_any_step() {
    let (p, resolver) = pipeline();
    resolver.set(
        "example.org",
        Script::A(vec![([93, 184, 215, 14].into(), 300)]),
    );
    let (says, fetched) = run(&p, &asked("203.0.113.9:5000", "example.org", RecordType::A));
    assert!(!fetched, "an outside client never reaches the resolver");
    assert_eq!(says.source, Source::Refused);
    assert_eq!(says.rcode(), ResponseCode::Refused);
    assert!(says.verdict.is_none() && says.score.is_none() && says.early);
    assert_eq!(ede(&p, &says), Some(code::PROHIBITED));
    assert_eq!(resolver.asked.load(Ordering::Relaxed), 0);
}

#[test]
fn each_block_mode_answers_its_plan() {
    let (p, resolver) = pipeline();
    let cases = [
        (
            LAN,
            RecordType::A,
            Plan::Addresses {
                v4: Some(Ipv4Addr::UNSPECIFIED),
                v6: None,
                ttl: 60,
            },
        ),
        (
            LAN,
            RecordType::MX,
            Plan::Negative {
                nxdomain: false,
                ttl: 60,
            },
        ),
        (
            "10.0.0.1:53",
            RecordType::A,
            Plan::Negative {
                nxdomain: true,
                ttl: 30,
            },
        ),
        (
            "10.0.0.2:53",
            RecordType::A,
            Plan::Negative {
                nxdomain: false,
                ttl: 60,
            },
        ),
        ("10.0.0.3:53", RecordType::A, Plan::Refused),
        (
            "10.0.0.4:53",
            RecordType::A,
            Plan::Addresses {
                v4: Some(Ipv4Addr::new(192, 0, 2, 53)),
                v6: None,
                ttl: 60,
            },
        ),
        (
            "10.0.0.4:53",
            RecordType::AAAA,
            Plan::Negative {
                nxdomain: false,
                ttl: 60,
            },
        ),
    ];
    for (client, qtype, want) in cases {
        let (says, fetched) = run(&p, &asked(client, "www.ads.example", qtype));
        assert!(!fetched);
        let Content::Blocked(plan) = says.content else {
            panic!("{client} {qtype}: not blocked");
        };
        assert_eq!(plan, want, "{client} {qtype}");
        assert_eq!((says.source.clone(), says.early), (Source::Blocked, true));
        assert_eq!(says.rcode(), want.rcode());
        assert_eq!(ede(&p, &says), Some(code::BLOCKED));
        let answer = records(&says, "www.ads.example.", qtype);
        assert_eq!(answer.rcode, want.rcode(), "both encoders read one plan");
    }
    assert_eq!(resolver.asked.load(Ordering::Relaxed), 0);
}

#[test]
fn cname_cloaking_blocks_a_tracker_behind_a_first_party_name() {
    let (p, resolver) = pipeline();
    resolver.set(
        "metrics.shop.example",
        Script::Cname("t.ads.example.", [198, 51, 100, 7].into()),
    );
    let (says, fetched) = run(&p, &asked(LAN, "metrics.shop.example", RecordType::A));
    assert!(fetched);
    assert_eq!(says.source, Source::Blocked);
    assert!(!says.early, "the answer's block, not the name's");
    assert!(matches!(
        says.content,
        Content::Blocked(Plan::Addresses { .. })
    ));
    assert_eq!(ede(&p, &says), Some(code::FILTERED));
    // Cached now: the hit goes through the same check without the resolver.
    let (says, fetched) = run(&p, &asked(LAN, "metrics.shop.example", RecordType::A));
    assert!(!fetched);
    assert_eq!(says.source, Source::Blocked);
    // An explicitly allowed name keeps its CNAME target.
    resolver.set(
        "allowed.example",
        Script::Cname("t.ads.example.", [198, 51, 100, 7].into()),
    );
    let (says, _) = run(&p, &asked(LAN, "allowed.example", RecordType::A));
    assert_eq!(says.source, Source::Upstream(Arc::from("scripted")));
    assert_eq!(says.verdict.map(|v| v.action), Some(Action::Allow));
}

#[test]
fn rebinding_blocks_a_private_address_for_a_public_name() {
    let (p, resolver) = pipeline();
    resolver.set(
        "evil.example",
        Script::A(vec![([192, 168, 1, 1].into(), 300)]),
    );
    let (says, fetched) = run(&p, &asked(LAN, "evil.example", RecordType::A));
    assert!(fetched);
    assert_eq!(
        says.source,
        Source::Rebinding(IpAddr::from([192, 168, 1, 1]))
    );
    assert!(matches!(says.content, Content::Blocked(_)));
    assert_eq!(ede(&p, &says), Some(code::FILTERED));
    // From the cache too.
    let (says, fetched) = run(&p, &asked(LAN, "evil.example", RecordType::A));
    assert!(!fetched);
    assert!(matches!(says.source, Source::Rebinding(_)));
}

#[test]
fn upstream_answers_are_cached_then_served_with_their_ttl_counting_down() {
    let (p, resolver) = pipeline();
    resolver.set(
        "www.example.org",
        Script::A(vec![([93, 184, 215, 14].into(), 300)]),
    );
    let (says, fetched) = run(&p, &asked(LAN, "www.example.org", RecordType::A));
    assert!(fetched);
    assert_eq!(says.source, Source::Upstream(Arc::from("scripted")));
    assert_eq!(ede(&p, &says), None);
    let (says, fetched) = run(&p, &asked(LAN, "www.example.org", RecordType::A));
    assert!(!fetched, "the second one is a hit");
    assert_eq!(says.source, Source::Cache);
    let answer = records(&says, "www.example.org.", RecordType::A);
    assert_eq!(answer.answers[0].data, RData::A(A::new(93, 184, 215, 14)));
    assert!((299..=300).contains(&answer.answers[0].ttl));
    assert_eq!(resolver.asked.load(Ordering::Relaxed), 1);
}

/// Waits (bounded) until the cache no longer has a fresh answer for `name`.
fn until_expired<R: Resolve>(p: &Pipeline<R>, name: &str) {
    let key = crate::resolve::cache::Key::new(name, 1, false, false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.cache().get(&key, std::time::Instant::now()).is_some() {
        assert!(Instant::now() < deadline, "{name} never expired");
        std::thread::yield_now();
    }
}

#[test]
fn stale_answers_stand_in_for_a_failed_upstream_but_not_for_bogus_data() {
    let (p, resolver) = pipeline();
    resolver.set(
        "old.example.org",
        Script::A(vec![([93, 184, 215, 15].into(), 1)]),
    );
    resolver.set(
        "signed.example.org",
        Script::A(vec![([93, 184, 215, 16].into(), 1)]),
    );
    for name in ["old.example.org", "signed.example.org"] {
        let (says, fetched) = run(&p, &asked(LAN, name, RecordType::A));
        assert!(fetched && matches!(says.source, Source::Upstream(_)));
    }
    until_expired(&p, "old.example.org");
    until_expired(&p, "signed.example.org");
    resolver.set("old.example.org", Script::Timeout);
    resolver.set("signed.example.org", Script::Bogus);

    let (says, fetched) = run(&p, &asked(LAN, "old.example.org", RecordType::A));
    assert!(fetched);
    assert_eq!(says.source, Source::Stale);
    let answer = records(&says, "old.example.org.", RecordType::A);
    assert_eq!(answer.answers[0].data, RData::A(A::new(93, 184, 215, 15)));
    assert_eq!(
        answer.answers[0].ttl, 17,
        "RFC 8767: the stale TTL on every record"
    );
    assert_eq!(ede(&p, &says), Some(code::STALE_ANSWER));

    let (says, fetched) = run(&p, &asked(LAN, "signed.example.org", RecordType::A));
    assert!(fetched);
    assert!(
        matches!(says.source, Source::Failed(Failure::Bogus, _)),
        "no stale answer for bogus data"
    );
    assert_eq!(says.rcode(), ResponseCode::ServFail);
    assert_eq!(ede(&p, &says), Some(code::DNSSEC_BOGUS));

    let (says, _) = run(&p, &asked(LAN, "never.example.org", RecordType::A));
    assert!(matches!(says.source, Source::Failed(Failure::NoAnswer, _)));
    assert_eq!(says.rcode(), ResponseCode::ServFail);
}

#[test]
fn tunnel_action_log_answers_and_flags() {
    let (p, resolver) = pipeline();
    resolver.set(
        "x1.tunnel.example",
        Script::A(vec![([198, 51, 100, 1].into(), 300)]),
    );
    let (says, fetched) = run(&p, &asked(LAN, "x1.tunnel.example", RecordType::A));
    assert!(fetched, "log: the query is answered");
    assert!(says.score.is_some_and(|s| s.flagged));
    assert!(matches!(says.source, Source::Upstream(_)));
}

#[test]
fn tunnel_action_block_refuses_each_flagged_query() {
    let (p, resolver) = pipeline();
    resolver.set(
        "tunnel.example",
        Script::A(vec![([198, 51, 100, 1].into(), 300)]),
    );
    let client = "10.0.1.1:5000";
    let (says, fetched) = run(&p, &asked(client, "x1.tunnel.example", RecordType::TXT));
    assert!(!fetched);
    assert_eq!(
        (says.source.clone(), says.rcode()),
        (Source::Tunnel, ResponseCode::Refused)
    );
    assert!(says.score.is_some_and(|s| s.flagged));
    assert_eq!(ede(&p, &says), Some(code::PROHIBITED));
    // The domain itself is not flagged: answered.
    let (says, fetched) = run(&p, &asked(client, "tunnel.example", RecordType::A));
    assert!(fetched && matches!(says.source, Source::Upstream(_)));
}

#[test]
fn tunnel_action_quarantine_refuses_the_domain_for_that_client_only() {
    let (p, resolver) = pipeline();
    resolver.set(
        "tunnel.example",
        Script::A(vec![([198, 51, 100, 1].into(), 300)]),
    );
    let (flagged, other) = ("10.0.2.1:5000", "10.0.2.2:5000");
    for n in ["x1.tunnel.example", "x2.tunnel.example"] {
        let (says, _) = run(&p, &asked(flagged, n, RecordType::TXT));
        assert_eq!(says.source, Source::Tunnel);
    }
    let (says, fetched) = run(&p, &asked(flagged, "tunnel.example", RecordType::A));
    assert!(!fetched, "quarantined: refused without the resolver");
    assert_eq!(says.source, Source::Tunnel);
    assert!(says.score.is_some_and(|s| s.quarantined));
    let (says, fetched) = run(&p, &asked(other, "tunnel.example", RecordType::A));
    assert!(
        fetched && matches!(says.source, Source::Upstream(_)),
        "another client keeps it"
    );
}

#[test]
fn canaries_local_names_and_any_never_reach_the_resolver() {
    let (p, resolver) = pipeline();
    let (says, fetched) = run(&p, &asked(LAN, "use-application-dns.net", RecordType::A));
    assert!(!fetched && says.early);
    assert_eq!(
        (says.source.clone(), says.rcode()),
        (Source::Local, ResponseCode::NXDomain)
    );
    let (says, fetched) = run(&p, &asked(LAN, "localhost", RecordType::A));
    assert!(!fetched);
    assert!(matches!(says.content, Content::Records(_)));
    let (says, fetched) = run(&p, &asked(LAN, "example.org", RecordType::ANY));
    assert!(!fetched);
    let answer = records(&says, "example.org.", RecordType::ANY);
    assert_eq!(answer.answers[0].record_type(), RecordType::HINFO);
    assert_eq!(resolver.asked.load(Ordering::Relaxed), 0);
}

#[test]
fn the_ad_bit_needs_validated_data_and_a_client_that_asked() {
    let (p, _) = pipeline();
    let mut answer = Answer::empty(ResponseCode::NoError);
    answer.authentic = true;
    let says = Says::later(Content::Records(answer), Source::Local, None, None, None);
    assert!(says.authentic(true, false) && says.authentic(false, true));
    assert!(!says.authentic(false, false));
    let blocked = Says::early(&p.policy(), Stop::Refused, 1, None);
    assert!(!blocked.authentic(true, true));
}

/// `dnsguard check` screens with the query's own code: for every early step it
/// decides as a query would, and a proven client keeps its access from anywhere
/// when `allow_authenticated_anywhere` says so.
#[tokio::test]
async fn check_decides_every_early_step_as_a_query_does() {
    let (p, _) = pipeline();
    let cases = [
        (
            "203.0.113.9",
            "example.org",
            Decision::Refused,
            Source::Refused,
        ),
        (
            "192.168.1.20",
            "use-application-dns.net",
            Decision::Canary,
            Source::Local,
        ),
        (
            "10.0.0.1",
            "ads.example",
            Decision::Blocked,
            Source::Blocked,
        ),
        ("192.168.1.20", "localhost", Decision::Local, Source::Local),
    ];
    for (ip, name, decision, source) in cases {
        let client: IpAddr = ip.parse().unwrap();
        let checked = p.check(client, name, RecordType::A, false).await;
        let (says, _) = run(&p, &asked(&format!("{ip}:5000"), name, RecordType::A));
        assert_eq!(
            (checked.decision, &says.source),
            (decision, &source),
            "{name} from {ip}"
        );
        assert_eq!(checked.rcode, says.rcode(), "{name} from {ip}");
    }

    let p = built(
        r#"
[server]
allow_clients = ["192.168.0.0/16"]
allow_authenticated_anywhere = true
[[clients]]
name = "laptop"
ids = ["laptop"]
"#,
        Arc::new(Scripted::default()),
    );
    let hotel: IpAddr = "203.0.113.9".parse().unwrap();
    let anonymous = p.check(hotel, "example.org", RecordType::A, false).await;
    assert_eq!(anonymous.decision, Decision::Refused);
    let proven = p.policy().identities().as_client("laptop");
    assert!(proven.is_some_and(|i| i.proven));
    let laptop = p
        .check_as(hotel, proven, "example.org", RecordType::A, false)
        .await;
    assert_eq!(laptop.decision, Decision::Pass, "{:?}", laptop.note);
}

/// `dnsguard check --resolve` names the check on the answer that replaced it,
/// the one a query's answer went through (`vet::answer`), and caches nothing.
#[test]
fn check_with_resolve_names_the_answer_check_that_decided_as_a_query_does() {
    let (p, resolver) = pipeline();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let cases = [
        (
            "metrics.shop.example",
            Script::Cname("t.ads.example.", [198, 51, 100, 7].into()),
            Decision::CnameBlocked,
            Some("CNAME target t.ads.example"),
            Source::Blocked,
        ),
        (
            "evil.example",
            Script::A(vec![([192, 168, 1, 1].into(), 300)]),
            Decision::Rebinding,
            Some("answer 192.168.1.1 is private"),
            Source::Rebinding(IpAddr::from([192, 168, 1, 1])),
        ),
        (
            "ruled.example",
            Script::A(vec![([198, 51, 100, 66].into(), 300)]),
            Decision::AnswerBlocked,
            None,
            Source::Blocked,
        ),
        (
            "www.example.org",
            Script::A(vec![([93, 184, 215, 14].into(), 300)]),
            Decision::Resolved,
            Some("from scripted"),
            Source::Upstream(Arc::from("scripted")),
        ),
    ];
    let lan: IpAddr = "192.168.1.20".parse().unwrap();
    for (name, script, decision, note, source) in cases {
        resolver.set(name, script);
        let checked = rt.block_on(p.check(lan, name, RecordType::A, true));
        assert_eq!(
            (checked.decision, checked.note.as_deref()),
            (decision, note),
            "{name}"
        );
        let (says, fetched) = run(&p, &asked(LAN, name, RecordType::A));
        assert!(fetched, "{name}: the check cached nothing");
        assert_eq!(says.source, source, "{name}");
        assert_eq!(checked.rcode, says.rcode(), "{name}");
    }
}
