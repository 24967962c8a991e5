//! List parsing: turns the text of one list into rules, each with its 1-based line number, detecting the
//! format line by line (hosts, plain domains, AdGuard/ABP DNS syntax, `/regex/`).
//!
//! Semantics chosen (and documented for operators):
//! * hosts lines (`0.0.0.0 a b  # c`) and plain domain lines (`example.com`) block the name **and its
//!   subdomains**, like Blocky and dnsmasq `address=/x/`. `localhost`, `broadcasthost`, `local`, IP addresses
//!   and the like in hosts files are skipped silently.
//! * `||x^` = x and subdomains, `|x^` = exactly x, `||*.x^` and plain `*.x` = strict subdomains of x,
//!   `@@` = exception (allow). Other `*` patterns are wildcards: `*` matches any run of characters (dots
//!   included); without `|`/`||` the pattern may start anywhere in the name, without `^`/`|` at the end it may
//!   end anywhere (`ads*` matches any name containing `ads`).
//! * `/re/` is a regular expression matched against the whole name (compiled with the `regex` crate).
//! * Modifiers: `$important`, `$dnstype=A|AAAA` / `$dnstype=~A`, `$client=IP|CIDR|~IP` and `$denyallow=a|b`.
//!   Browser-only modifiers (`$third-party`, `$script`, ...), `$badfilter` and unknown ones make the line
//!   invalid. Client *names* in `$client` are not supported (invalid line).
//! * Comments (`#`, `!`), blank lines and `[Adblock Plus 2.0]` headers are skipped; cosmetic rules (`##`,
//!   `#@#`, ...) and URL rules (`/path`, `||x^/y`) are counted as invalid with a reason.
//!
//! Nothing here panics or aborts on bad input: every problem becomes an [`Parsed::Invalid`] item.

use std::borrow::Cow;
use std::net::IpAddr;
use std::str::SplitAsciiWhitespace;

use ipnet::IpNet;

use crate::name::{self, NameError};

/// Where a domain rule applies relative to its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The name and all its subdomains (`||x^`, `x`, hosts entries).
    WithSubdomains,
    /// Exactly the name (`|x^`).
    Exact,
    /// Strict subdomains only (`||*.x^`, `*.x`).
    SubdomainsOnly,
}

/// How a wildcard pattern is anchored at its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// `||`: the pattern starts at a label boundary (start of name or after a dot).
    Label,
    /// `|`: the pattern starts at the start of the name.
    Start,
    /// No anchor: the pattern may start anywhere.
    None,
}

/// What a rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern<'a> {
    /// A literal domain (normalised), with its scope.
    Domain {
        /// Normalised name (lower case, punycode, no trailing dot).
        name: Cow<'a, str>,
        /// Which names relative to `name` match.
        scope: Scope,
    },
    /// A `*` pattern (lower case ASCII, `*` = any run of characters).
    Wildcard {
        /// Start anchoring.
        anchor: Anchor,
        /// The pattern body without anchors/separators.
        glob: String,
        /// True if the pattern must reach the end of the name (`^` or `|` at the end).
        end_anchored: bool,
    },
    /// A regular expression (the text between the slashes), matched against the name.
    Regex(String),
    /// An IP address or CIDR line (`203.0.113.7`, `198.51.100.0/24`): not a name rule but an
    /// answer rule; answers containing such an address are blocked (IPv4-mapped IPv6 is
    /// stored as IPv4).
    Address(IpNet),
}

/// `$dnstype` filter: query types the rule applies to (or, if `exclude`, does not apply to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeFilter {
    /// Query type codes (A=1, AAAA=28, ...).
    pub types: Vec<u16>,
    /// `~` form: the rule applies to every type except these.
    pub exclude: bool,
}

impl TypeFilter {
    /// Whether the rule applies to `qtype`.
    pub fn applies(&self, qtype: u16) -> bool {
        self.types.contains(&qtype) != self.exclude
    }
}

/// `$client` filter: client addresses the rule applies to (or, if `exclude`, does not apply to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFilter {
    /// Addresses and networks (a single IP is a /32 or /128).
    pub nets: Vec<IpNet>,
    /// `~` form: the rule applies to every client except these.
    pub exclude: bool,
}

impl ClientFilter {
    /// Whether the rule applies to `client`.
    pub fn applies(&self, client: IpAddr) -> bool {
        let client = super::policy::canonical_ip(client);
        self.nets.iter().any(|n| n.contains(&client)) != self.exclude
    }
}

/// Modifiers that restrict where a rule applies; checked only when the rule's pattern already matched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Modifiers {
    /// `$dnstype=...`
    pub dnstype: Option<TypeFilter>,
    /// `$client=...`
    pub client: Option<ClientFilter>,
    /// `$denyallow=...`: the rule does not apply to these domains and their subdomains.
    pub denyallow: Vec<String>,
}

impl Modifiers {
    /// Whether a rule with these modifiers applies to this query.
    pub fn applies(&self, client: IpAddr, name: &str, qtype: u16) -> bool {
        if let Some(t) = &self.dnstype
            && !t.applies(qtype)
        {
            return false;
        }
        if let Some(c) = &self.client
            && !c.applies(client)
        {
            return false;
        }
        !self
            .denyallow
            .iter()
            .any(|d| crate::name::is_under(name, d))
    }
}

/// One parsed rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule<'a> {
    /// What names it matches.
    pub pattern: Pattern<'a>,
    /// `@@` exception (allow) rule.
    pub allow: bool,
    /// `$important`.
    pub important: bool,
    /// `$dnstype` / `$client` / `$denyallow`, if any.
    pub modifiers: Option<Box<Modifiers>>,
}

/// Why a line could not be used for DNS filtering.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    /// Element hiding / scriptlet rule (`##`, `#@#`, `#?#`, `#$#`, `#%#`, `$$`).
    #[error("cosmetic rule (not applicable to DNS)")]
    Cosmetic,
    /// A rule on URL paths or schemes (`/path`, `||x^/y`, `http://...`).
    #[error("URL rule (not applicable to DNS)")]
    UrlRule,
    /// The domain is malformed.
    #[error("invalid domain: {0}")]
    BadName(#[from] NameError),
    /// The wildcard pattern has characters a domain cannot contain, or a misplaced `^`.
    #[error("invalid pattern")]
    BadPattern,
    /// A pattern with no literal character would match every name.
    #[error("pattern matches everything")]
    TooBroad,
    /// The regular expression does not compile.
    #[error("invalid regex: {0}")]
    BadRegex(String),
    /// A modifier that only makes sense in a browser (`$third-party`, `$script`, ...).
    #[error("browser-only modifier ${0} (not applicable to DNS)")]
    BrowserModifier(String),
    /// A DNS modifier this filter does not implement (`$badfilter`, `$dnsrewrite`, `$ctag`, ...).
    #[error("unsupported modifier ${0}")]
    UnsupportedModifier(String),
    /// A modifier nobody knows.
    #[error("unknown modifier ${0}")]
    UnknownModifier(String),
    /// A modifier with a bad value (unknown DNS type, client name, bad CIDR, mixed `~`...).
    #[error("bad value for ${modifier}: {value}")]
    BadModifierValue {
        /// The modifier name.
        modifier: &'static str,
        /// The offending value.
        value: String,
    },
    /// A line in no known format (several words without a leading IP, ...).
    #[error("unrecognised line")]
    Unrecognised,
}

/// One item produced by [`parse_list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A usable rule on `line`.
    Rule {
        /// 1-based line number.
        line: u32,
        /// The rule.
        rule: Rule<'a>,
    },
    /// A line (or one name of a hosts line) that cannot be used.
    Invalid {
        /// 1-based line number.
        line: u32,
        /// Why.
        reason: InvalidReason,
    },
}

/// Parses the text of a list. Yields rules and invalid lines (with 1-based line numbers); comments, blank
/// lines, headers and skipped hosts entries yield nothing. A hosts line with several names yields one item per
/// name, all with the same line number.
pub fn parse_list(text: &str) -> ListParser<'_> {
    ListParser {
        lines: text.lines(),
        line_no: 0,
        pending: None,
    }
}

/// Iterator returned by [`parse_list`].
#[derive(Debug)]
pub struct ListParser<'a> {
    lines: std::str::Lines<'a>,
    line_no: u32,
    pending: Option<SplitAsciiWhitespace<'a>>,
}

impl<'a> Iterator for ListParser<'a> {
    type Item = Parsed<'a>;

    fn next(&mut self) -> Option<Parsed<'a>> {
        loop {
            if let Some(tokens) = &mut self.pending {
                match next_hosts_name(tokens) {
                    Some(item) => return Some(with_line(self.line_no, item)),
                    None => self.pending = None,
                }
            }
            let raw = self.lines.next()?;
            self.line_no = self.line_no.saturating_add(1);
            match classify(raw) {
                Line::Skip => {}
                Line::Hosts(tokens) => self.pending = Some(tokens),
                Line::One(item) => return Some(with_line(self.line_no, item)),
            }
        }
    }
}

fn with_line(line: u32, item: Result<Rule<'_>, InvalidReason>) -> Parsed<'_> {
    match item {
        Ok(rule) => Parsed::Rule { line, rule },
        Err(reason) => Parsed::Invalid { line, reason },
    }
}

/// Parses a single line (used for per-group allow/deny entries). `Ok(None)` = comment/blank/skipped. Hosts
/// lines with several names return only the first one.
pub fn parse_line(raw: &str) -> Result<Option<Rule<'_>>, InvalidReason> {
    match classify(raw) {
        Line::Skip => Ok(None),
        Line::One(r) => r.map(Some),
        Line::Hosts(mut tokens) => next_hosts_name(&mut tokens).transpose(),
    }
}

enum Line<'a> {
    Skip,
    Hosts(SplitAsciiWhitespace<'a>),
    One(Result<Rule<'a>, InvalidReason>),
}

const HOSTS_SKIP: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "broadcasthost",
    "local",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
];

fn next_hosts_name<'a>(
    tokens: &mut SplitAsciiWhitespace<'a>,
) -> Option<Result<Rule<'a>, InvalidReason>> {
    for tok in tokens.by_ref() {
        if tok.starts_with('#') {
            // Trailing comment: drop the rest of the line.
            for _ in tokens.by_ref() {}
            return None;
        }
        if HOSTS_SKIP.iter().any(|s| tok.eq_ignore_ascii_case(s)) || tok.parse::<IpAddr>().is_ok() {
            continue;
        }
        return Some(
            name::normalize(tok)
                .map_err(InvalidReason::from)
                .map(|n| simple(n, Scope::WithSubdomains)),
        );
    }
    None
}

fn simple(name: Cow<'_, str>, scope: Scope) -> Rule<'_> {
    Rule {
        pattern: Pattern::Domain { name, scope },
        allow: false,
        important: false,
        modifiers: None,
    }
}

fn classify(raw: &str) -> Line<'_> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('!') || line.starts_with('#') {
        return Line::Skip;
    }
    if line.starts_with('[') && line.ends_with(']') {
        return Line::Skip;
    }
    if ["##", "#@#", "#?#", "#$#", "#%#", "$$", "$@$"]
        .iter()
        .any(|m| line.contains(m))
    {
        return Line::One(Err(InvalidReason::Cosmetic));
    }
    if let Some(net) = address(line) {
        // A lone IP address or CIDR: blocks answers that contain it.
        return Line::One(Ok(Rule {
            pattern: Pattern::Address(net),
            allow: false,
            important: false,
            modifiers: None,
        }));
    }
    let first = line.split_ascii_whitespace().next().unwrap_or(line);
    if first.len() < line.len() && first.parse::<IpAddr>().is_ok() {
        let mut tokens = line.split_ascii_whitespace();
        tokens.next();
        return Line::Hosts(tokens);
    }
    let adblock = line.starts_with('|')
        || line.starts_with("@@")
        || line.starts_with('/')
        || line.contains(['^', '$', '*']);
    if adblock {
        return Line::One(parse_adblock(line));
    }
    // Plain domain, possibly with a trailing `# comment`.
    let body = match line.find('#') {
        Some(i) => line[..i].trim_end(),
        None => line,
    };
    if body.contains(|c: char| c.is_ascii_whitespace()) {
        return Line::One(Err(InvalidReason::Unrecognised));
    }
    if body.contains(['/', ':', '?', '=', '&']) {
        return Line::One(Err(InvalidReason::UrlRule));
    }
    Line::One(
        name::normalize(body)
            .map_err(InvalidReason::from)
            .map(|n| simple(n, Scope::WithSubdomains)),
    )
}

/// `line` as one IP address or CIDR (a trailing `# comment` allowed), canonical:
/// host bits cleared, IPv4-mapped IPv6 as IPv4.
fn address(line: &str) -> Option<IpNet> {
    let body = line.split('#').next().unwrap_or(line).trim();
    let net = match body.parse::<IpAddr>() {
        Ok(ip) => IpNet::from(super::policy::canonical_ip(ip)),
        Err(_) => body.parse::<IpNet>().ok()?.trunc(),
    };
    Some(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    })
}

fn parse_adblock(line: &str) -> Result<Rule<'_>, InvalidReason> {
    let (allow, rest) = match line.strip_prefix("@@") {
        Some(r) => (true, r),
        None => (false, line),
    };
    // Regex rule: /re/ or /re/$mods.
    if let Some(after_slash) = rest.strip_prefix('/') {
        let Some(last) = after_slash.rfind('/') else {
            return Err(InvalidReason::UrlRule);
        };
        let tail = &after_slash[last + 1..];
        let body = &after_slash[..last];
        if body.is_empty() || !(tail.is_empty() || tail.starts_with('$')) {
            return Err(InvalidReason::UrlRule);
        }
        let (important, modifiers) = parse_modifiers(tail.strip_prefix('$').unwrap_or(""))?;
        if let Err(e) = regex::Regex::new(body) {
            let msg = e.to_string();
            let short = msg.lines().last().unwrap_or("").trim().to_owned();
            return Err(InvalidReason::BadRegex(short));
        }
        return Ok(Rule {
            pattern: Pattern::Regex(body.to_owned()),
            allow,
            important,
            modifiers,
        });
    }
    let (body, mods) = match rest.find('$') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (anchor, body) = if let Some(b) = body.strip_prefix("||") {
        (Anchor::Label, b)
    } else if let Some(b) = body.strip_prefix('|') {
        (Anchor::Start, b)
    } else {
        (Anchor::None, body)
    };
    let (end_anchored, body) = if let Some(b) = body.strip_suffix("^|") {
        (true, b)
    } else if let Some(b) = body.strip_suffix('^') {
        (true, b)
    } else if let Some(b) = body.strip_suffix('|') {
        (true, b)
    } else {
        (false, body)
    };
    if body.contains(['/', ':', '?', '=', '&', '%', ',']) || body.contains(char::is_whitespace) {
        return Err(InvalidReason::UrlRule);
    }
    if body.contains(['^', '|']) {
        return Err(InvalidReason::BadPattern);
    }
    let (important, modifiers) = parse_modifiers(mods)?;
    let pattern = build_pattern(anchor, body, end_anchored, modifiers.is_some())?;
    Ok(Rule {
        pattern,
        allow,
        important,
        modifiers,
    })
}

/// `restricted`: the rule has `$dnstype`/`$client`/`$denyallow`, so a match-everything pattern (`*$dnstype=HTTPS`,
/// `*$denyallow=com`) is legitimate.
fn build_pattern(
    anchor: Anchor,
    body: &str,
    end_anchored: bool,
    restricted: bool,
) -> Result<Pattern<'_>, InvalidReason> {
    if !body.contains('*') {
        let scope = match (anchor, end_anchored) {
            (Anchor::Label, true) => Some(Scope::WithSubdomains),
            (Anchor::Start, true) => Some(Scope::Exact),
            // A bare name (`example.com$important`, `@@example.com`) is a domain rule like a plain line.
            (Anchor::None, false) => Some(Scope::WithSubdomains),
            _ => None,
        };
        if let Some(scope) = scope {
            return Ok(Pattern::Domain {
                name: name::normalize(body)?,
                scope,
            });
        }
    } else if let Some(rest) = body.strip_prefix("*.") {
        // `||*.x^` and bare `*.x`: strict subdomains of a literal name.
        let sub_only = matches!(
            (anchor, end_anchored),
            (Anchor::Label, true) | (Anchor::None, false)
        );
        if sub_only && !rest.contains('*') {
            return Ok(Pattern::Domain {
                name: name::normalize(rest)?,
                scope: Scope::SubdomainsOnly,
            });
        }
    }
    let glob = body.to_ascii_lowercase();
    let broad = !glob.bytes().any(|b| b != b'*' && b != b'.');
    if broad && !restricted {
        return Err(InvalidReason::TooBroad);
    }
    if !glob
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.*".contains(&b))
    {
        return Err(if glob.is_ascii() {
            InvalidReason::BadPattern
        } else {
            InvalidReason::BadName(NameError::BadIdn)
        });
    }
    if glob.len() > 512 {
        return Err(InvalidReason::BadName(NameError::TooLong));
    }
    // `a*b` without anchors on a bare line (e.g. `*.x` handled above) keeps its raw anchoring.
    Ok(Pattern::Wildcard {
        anchor,
        glob,
        end_anchored,
    })
}

const BROWSER_MODIFIERS: &[&str] = &[
    "third-party",
    "3p",
    "first-party",
    "1p",
    "script",
    "image",
    "stylesheet",
    "css",
    "xmlhttprequest",
    "xhr",
    "subdocument",
    "frame",
    "document",
    "doc",
    "popup",
    "popunder",
    "domain",
    "from",
    "to",
    "match-case",
    "websocket",
    "media",
    "font",
    "object",
    "object-subrequest",
    "other",
    "ping",
    "webrtc",
    "all",
    "redirect",
    "redirect-rule",
    "removeparam",
    "queryprune",
    "removeheader",
    "csp",
    "replace",
    "cookie",
    "header",
    "elemhide",
    "ehide",
    "generichide",
    "ghide",
    "specifichide",
    "shide",
    "genericblock",
    "content",
    "urlblock",
    "jsinject",
    "extension",
    "stealth",
    "app",
    "network",
    "method",
    "permissions",
    "referrerpolicy",
    "empty",
    "mp4",
    "inline-script",
    "inline-font",
    "strict1p",
    "strict3p",
    "hls",
    "jsonprune",
    "urltransform",
    "rewrite",
    "sitekey",
    "genericblock",
    "xml",
    "beacon",
    "mp4",
];

const UNSUPPORTED_MODIFIERS: &[&str] = &["badfilter", "dnsrewrite", "ctag"];

type Mods = (bool, Option<Box<Modifiers>>);

fn parse_modifiers(mods: &str) -> Result<Mods, InvalidReason> {
    let mut important = false;
    let mut m = Modifiers::default();
    let mut any = false;
    if mods.trim().is_empty() {
        return Ok((false, None));
    }
    for item in mods.split(',') {
        let item = item.trim();
        let (key, value) = match item.find('=') {
            Some(i) => (&item[..i], Some(&item[i + 1..])),
            None => (item, None),
        };
        let key_lc = key.to_ascii_lowercase();
        match (key_lc.as_str(), value) {
            ("important", None) => important = true,
            ("dnstype", Some(v)) => {
                m.dnstype = Some(parse_dnstype(v)?);
                any = true;
            }
            ("client", Some(v)) => {
                m.client = Some(parse_client(v)?);
                any = true;
            }
            ("denyallow", Some(v)) => {
                m.denyallow = parse_denyallow(v)?;
                any = true;
            }
            (k, _) => {
                let bare = k.trim_start_matches('~');
                if UNSUPPORTED_MODIFIERS.contains(&bare) {
                    return Err(InvalidReason::UnsupportedModifier(bare.to_owned()));
                }
                if BROWSER_MODIFIERS.contains(&bare) {
                    return Err(InvalidReason::BrowserModifier(bare.to_owned()));
                }
                let shown: String = k.chars().take(40).collect();
                return Err(InvalidReason::UnknownModifier(shown));
            }
        }
    }
    Ok((important, if any { Some(Box::new(m)) } else { None }))
}

fn bad(modifier: &'static str, value: &str) -> InvalidReason {
    InvalidReason::BadModifierValue {
        modifier,
        value: value.chars().take(60).collect(),
    }
}

/// Splits `a|~b|c` into (values, exclude), rejecting a mix of negated and plain values.
fn split_negatable<'v>(
    modifier: &'static str,
    v: &'v str,
) -> Result<(Vec<&'v str>, bool), InvalidReason> {
    let mut out = Vec::new();
    let mut neg = None;
    for part in v.split('|') {
        let part = part.trim();
        let (n, p) = match part.strip_prefix('~') {
            Some(p) => (true, p),
            None => (false, part),
        };
        if p.is_empty() || *neg.get_or_insert(n) != n {
            return Err(bad(modifier, v));
        }
        out.push(p);
    }
    Ok((out, neg.unwrap_or(false)))
}

fn parse_dnstype(v: &str) -> Result<TypeFilter, InvalidReason> {
    let (parts, exclude) = split_negatable("dnstype", v)?;
    let mut types = Vec::with_capacity(parts.len());
    for p in parts {
        types.push(qtype_from_name(p).ok_or_else(|| bad("dnstype", p))?);
    }
    Ok(TypeFilter { types, exclude })
}

/// DNS query type code for a type mnemonic (`A`, `AAAA`, `HTTPS`, `TYPE65`, ...), case-insensitive.
pub fn qtype_from_name(name: &str) -> Option<u16> {
    const TYPES: &[(&str, u16)] = &[
        ("A", 1),
        ("NS", 2),
        ("CNAME", 5),
        ("SOA", 6),
        ("PTR", 12),
        ("HINFO", 13),
        ("MX", 15),
        ("TXT", 16),
        ("RP", 17),
        ("AFSDB", 18),
        ("AAAA", 28),
        ("LOC", 29),
        ("SRV", 33),
        ("NAPTR", 35),
        ("KX", 36),
        ("CERT", 37),
        ("DNAME", 39),
        ("OPT", 41),
        ("APL", 42),
        ("DS", 43),
        ("SSHFP", 44),
        ("IPSECKEY", 45),
        ("RRSIG", 46),
        ("NSEC", 47),
        ("DNSKEY", 48),
        ("DHCID", 49),
        ("NSEC3", 50),
        ("NSEC3PARAM", 51),
        ("TLSA", 52),
        ("SMIMEA", 53),
        ("HIP", 55),
        ("CDS", 59),
        ("CDNSKEY", 60),
        ("OPENPGPKEY", 61),
        ("CSYNC", 62),
        ("ZONEMD", 63),
        ("SVCB", 64),
        ("HTTPS", 65),
        ("SPF", 99),
        ("EUI48", 108),
        ("EUI64", 109),
        ("TKEY", 249),
        ("TSIG", 250),
        ("IXFR", 251),
        ("AXFR", 252),
        ("ANY", 255),
        ("URI", 256),
        ("CAA", 257),
    ];
    if let Some(&(_, code)) = TYPES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        return Some(code);
    }
    let digits = name
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("type"))
        .and_then(|_| name.get(4..))?;
    digits.parse::<u16>().ok()
}

fn parse_client(v: &str) -> Result<ClientFilter, InvalidReason> {
    let (parts, exclude) = split_negatable("client", v)?;
    let mut nets = Vec::with_capacity(parts.len());
    for p in parts {
        let p = p.trim_matches(|c| c == '\'' || c == '"');
        let net = if let Ok(ip) = p.parse::<IpAddr>() {
            IpNet::from(super::policy::canonical_ip(ip))
        } else if let Ok(net) = p.parse::<IpNet>() {
            net.trunc()
        } else {
            return Err(bad("client", p));
        };
        nets.push(net);
    }
    Ok(ClientFilter { nets, exclude })
}

fn parse_denyallow(v: &str) -> Result<Vec<String>, InvalidReason> {
    let mut out = Vec::new();
    for p in v.split('|') {
        let p = p.trim();
        if p.starts_with('~') || p.contains('*') {
            return Err(bad("denyallow", p));
        }
        out.push(
            name::normalize(p)
                .map_err(|_| bad("denyallow", p))?
                .into_owned(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<Parsed<'_>> {
        parse_list(text).collect()
    }

    fn one(line: &str) -> Result<Rule<'_>, InvalidReason> {
        match parse_line(line) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => panic!("line skipped: {line}"),
            Err(e) => Err(e),
        }
    }

    fn dom(name: &str, scope: Scope) -> Pattern<'static> {
        Pattern::Domain {
            name: Cow::Owned(name.to_owned()),
            scope,
        }
    }

    #[test]
    fn hosts_lines() {
        let text = "# c\n0.0.0.0 a.com b.com  c.com # trailing\n127.0.0.1 localhost\n::1 localhost ip6-localhost\n\
                    :: d.com\n0.0.0.0 0.0.0.0\n127.0.0.1\tE.COM.\n255.255.255.255 broadcasthost\n0.0.0.0 local\n";
        let got = rules(text);
        let names: Vec<(u32, String)> = got
            .iter()
            .map(|p| match p {
                Parsed::Rule {
                    line,
                    rule:
                        Rule {
                            pattern: Pattern::Domain { name, scope },
                            ..
                        },
                } => {
                    assert_eq!(*scope, Scope::WithSubdomains);
                    (*line, name.to_string())
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            vec![
                (2, "a.com".into()),
                (2, "b.com".into()),
                (2, "c.com".into()),
                (5, "d.com".into()),
                (7, "e.com".into())
            ]
        );
    }

    #[test]
    fn address_lines_are_answer_rules() {
        let net = |s: &str| Pattern::Address(s.parse().unwrap());
        assert_eq!(one("203.0.113.7").unwrap().pattern, net("203.0.113.7/32"));
        assert_eq!(
            one("198.51.100.9/24").unwrap().pattern,
            net("198.51.100.0/24")
        );
        assert_eq!(
            one("2001:db8::/32 # doc").unwrap().pattern,
            net("2001:db8::/32")
        );
        assert_eq!(
            one("::ffff:192.0.2.1").unwrap().pattern,
            net("192.0.2.1/32")
        );
        assert_eq!(
            one("::ffff:192.0.2.0/120").unwrap().pattern,
            net("192.0.2.0/24")
        );
        // A hosts line is still a name rule; a bad prefix is still invalid.
        assert!(matches!(
            one("0.0.0.0 ads.example").unwrap().pattern,
            Pattern::Domain { .. }
        ));
        assert!(one("10.0.0.0/33").is_err());
    }

    #[test]
    fn plain_and_comments() {
        let got = rules(
            "[Adblock Plus 2.0]\n! title\n\n   \nexample.com\nfoo.example.org # why\n#x.com\n",
        );
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Parsed::Rule {
                line: 5,
                rule: simple(Cow::Borrowed("example.com"), Scope::WithSubdomains)
            }
        );
        assert!(
            matches!(&got[1], Parsed::Rule { line: 6, rule } if rule.pattern == dom("foo.example.org", Scope::WithSubdomains))
        );
    }

    #[test]
    fn adblock_forms() {
        let r = one("||ads.example.com^").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.pattern, dom("ads.example.com", Scope::WithSubdomains));
        assert!(!r.allow && !r.important && r.modifiers.is_none());
        assert_eq!(
            one("|exact.com^").map(|r| r.pattern),
            Ok(dom("exact.com", Scope::Exact))
        );
        let r = one("@@||good.com^").unwrap_or_else(|e| panic!("{e}"));
        assert!(r.allow);
        assert_eq!(r.pattern, dom("good.com", Scope::WithSubdomains));
        let r = one("@@|good.com^$important").unwrap_or_else(|e| panic!("{e}"));
        assert!(r.allow && r.important);
        assert_eq!(r.pattern, dom("good.com", Scope::Exact));
        assert_eq!(
            one("||*.tracker.net^").map(|r| r.pattern),
            Ok(dom("tracker.net", Scope::SubdomainsOnly))
        );
        assert_eq!(
            one("*.tracker.net").map(|r| r.pattern),
            Ok(dom("tracker.net", Scope::SubdomainsOnly))
        );
        assert_eq!(
            one("||ad*.example.com^").map(|r| r.pattern),
            Ok(Pattern::Wildcard {
                anchor: Anchor::Label,
                glob: "ad*.example.com".into(),
                end_anchored: true
            })
        );
        assert_eq!(
            one("ads*").map(|r| r.pattern),
            Ok(Pattern::Wildcard {
                anchor: Anchor::None,
                glob: "ads*".into(),
                end_anchored: false
            })
        );
        assert_eq!(
            one("||Bücher.DE^").map(|r| r.pattern),
            Ok(dom("xn--bcher-kva.de", Scope::WithSubdomains))
        );
    }

    #[test]
    fn modifiers() {
        let r = one("||x.com^$dnstype=A|AAAA,important").unwrap_or_else(|e| panic!("{e}"));
        assert!(r.important);
        let m = r.modifiers.unwrap_or_else(|| panic!("no modifiers"));
        assert_eq!(
            m.dnstype,
            Some(TypeFilter {
                types: vec![1, 28],
                exclude: false
            })
        );
        let r = one("||x.com^$dnstype=~A").unwrap_or_else(|e| panic!("{e}"));
        let t = r
            .modifiers
            .and_then(|m| m.dnstype)
            .unwrap_or_else(|| panic!("no dnstype"));
        assert!(t.exclude && !t.applies(1) && t.applies(28));
        let r =
            one("||x.com^$client=10.0.0.0/8|127.0.0.2|fd00::/8").unwrap_or_else(|e| panic!("{e}"));
        let c = r
            .modifiers
            .and_then(|m| m.client)
            .unwrap_or_else(|| panic!("no client"));
        assert!(c.applies("10.1.2.3".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        assert!(c.applies("fd00::5".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        assert!(!c.applies(IpAddr::from([127, 0, 0, 1])));
        let r = one("||x.com^$client=~127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
        let c = r
            .modifiers
            .and_then(|m| m.client)
            .unwrap_or_else(|| panic!("no client"));
        assert!(
            !c.applies(IpAddr::from([127, 0, 0, 1])) && c.applies(IpAddr::from([127, 0, 0, 2]))
        );
        let r = one("*$denyallow=a.com|B.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.pattern,
            Pattern::Wildcard {
                anchor: Anchor::None,
                glob: "*".into(),
                end_anchored: false
            }
        );
        let r = one("||com^$denyallow=a.com|B.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.modifiers.map(|m| m.denyallow),
            Some(vec!["a.com".to_string(), "b.com".to_string()])
        );
    }

    #[test]
    fn invalid_lines_have_reasons() {
        assert_eq!(one("example.com##.ad"), Err(InvalidReason::Cosmetic));
        assert_eq!(one("example.com#@#.ad"), Err(InvalidReason::Cosmetic));
        assert_eq!(one("/ads/banner"), Err(InvalidReason::UrlRule));
        assert_eq!(one("||x.com^/path"), Err(InvalidReason::UrlRule));
        assert_eq!(one("||x.com/path^"), Err(InvalidReason::UrlRule));
        assert_eq!(
            one("||x.com^$third-party"),
            Err(InvalidReason::BrowserModifier("third-party".into()))
        );
        assert_eq!(
            one("||x.com^$badfilter"),
            Err(InvalidReason::UnsupportedModifier("badfilter".into()))
        );
        assert_eq!(
            one("||x.com^$frobnicate"),
            Err(InvalidReason::UnknownModifier("frobnicate".into()))
        );
        assert!(matches!(
            one("||x.com^$dnstype=BOGUS"),
            Err(InvalidReason::BadModifierValue { .. })
        ));
        assert!(matches!(
            one("||x.com^$dnstype=A|~AAAA"),
            Err(InvalidReason::BadModifierValue { .. })
        ));
        assert!(matches!(
            one("||x.com^$client=laptop"),
            Err(InvalidReason::BadModifierValue { .. })
        ));
        assert!(matches!(one("/ab(c/"), Err(InvalidReason::BadRegex(_))));
        assert!(matches!(
            one("bad..name.com"),
            Err(InvalidReason::BadName(NameError::EmptyLabel))
        ));
        assert_eq!(one("two words"), Err(InvalidReason::Unrecognised));
        assert_eq!(one("*"), Err(InvalidReason::TooBroad));
        assert_eq!(one("||a^b^"), Err(InvalidReason::BadPattern));
    }

    #[test]
    fn regex_rules() {
        let r = one("/^ad[0-9]+\\.example\\.com$/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.pattern,
            Pattern::Regex("^ad[0-9]+\\.example\\.com$".into())
        );
        let r = one("@@/^good/$important").unwrap_or_else(|e| panic!("{e}"));
        assert!(r.allow && r.important);
        assert_eq!(r.pattern, Pattern::Regex("^good".into()));
    }

    #[test]
    fn invalid_lines_keep_numbers_and_do_not_stop_parsing() {
        let got =
            rules("a.com\nexample.com##.x\n||b.com^$script\nc.com\n0.0.0.0 d.com bad..e f.com\n");
        let summary: Vec<(u32, bool)> = got
            .iter()
            .map(|p| match p {
                Parsed::Rule { line, .. } => (*line, true),
                Parsed::Invalid { line, .. } => (*line, false),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, true),
                (2, false),
                (3, false),
                (4, true),
                (5, true),
                (5, false),
                (5, true)
            ]
        );
    }

    #[test]
    fn qtypes() {
        assert_eq!(qtype_from_name("https"), Some(65));
        assert_eq!(qtype_from_name("TYPE65"), Some(65));
        assert_eq!(qtype_from_name("type"), None);
        assert_eq!(qtype_from_name("Aa"), None);
    }

    #[test]
    fn random_lines_never_panic() {
        // Deterministic pseudo-random lines built from the characters list syntax cares about.
        const ALPHABET: &[&str] = &[
            "a",
            "Z",
            "0",
            ".",
            "-",
            "_",
            "*",
            "^",
            "|",
            "||",
            "@@",
            "$",
            ",",
            "=",
            "~",
            "/",
            "#",
            "!",
            " ",
            "\t",
            "[",
            "]",
            "(",
            ")",
            "\\",
            "ü",
            "я",
            "🙂",
            "0.0.0.0 ",
            "::1 ",
            "$dnstype=",
            "$client=",
            "$denyallow=",
            "$important",
            "A",
            "AAAA",
            "10.0.0.0/8",
            "{",
            "}",
            "?",
            "+",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut text = String::new();
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 12) as usize;
            for k in 0..len {
                let idx = ((state >> (k * 5)) % ALPHABET.len() as u64) as usize;
                text.push_str(ALPHABET[idx]);
            }
            text.push('\n');
        }
        let mut n = 0;
        for p in parse_list(&text) {
            if let Parsed::Rule { rule, .. } = p
                && let Pattern::Domain { name, .. } = &rule.pattern
            {
                assert!(name::validate(name).is_ok(), "{name:?}");
            }
            n += 1;
        }
        assert!(n > 0);
    }
}
