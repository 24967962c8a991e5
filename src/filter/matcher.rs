//! The compiled matcher: every rule of every list and every group entry, in one immutable structure.
//!
//! * Plain domain rules (`x`, `||x^`, `|x^`, `||*.x^`, hosts lines) live in one [`FingerprintTable`] keyed by
//!   the 64-bit fingerprint of the name. A name that several sources contain is stored once: its slot points
//!   at an interned **set** of `(source, kind)` pairs. Each group has a dense row of [`SetRank`] (one entry per
//!   distinct set, typically a few hundred), so "does any rule of this group's sources match, and how strong
//!   is it" is one array read per probe, with no per-group copy of the table and no cap on the number of lists.
//! * Domain rules with `$dnstype` / `$client` / `$denyallow` are also in the table (flagged), but their details
//!   sit in a side map consulted only when such a name is hit.
//! * Wildcards ending in a literal domain (`||ad*.example.com^`) are indexed in the table under that domain
//!   (flagged like modifier rules); other wildcards and regexes are found through the shared Aho-Corasick
//!   [`LiteralIndex`] or, without any literal, checked for every name (regexes through one `RegexSet`).
//! * The scan for wildcard/regex rules is skipped when the table already found a rule at least as strong as
//!   the strongest scanned rule the group has (typically: any block hit, since scanned rules are list blocks).
//!
//! Precedence, as a rank (highest wins; ties keep the most specific name):
//! 6 `@@…$important` allow, 5 `$important` block, 4 group `allow` entry, 3 group `deny` entry,
//! 2 list allow (`@@` or an allow list), 1 list block.

use std::net::IpAddr;

use super::FilterError;
use super::hash::{FastMap, for_each_suffix, name_fingerprint};
use super::literal::{Cand, GramCounts, LiteralIndex};
use super::parse::{Modifiers, Pattern, Rule, Scope};
use super::regexes::{RegexRule, RegexRules};
use super::table::FingerprintTable;
use super::wildcard::WildRule;

/// Kind bit: the rule allows.
pub const ALLOW: u8 = 1;
/// Kind bit: `$important`.
pub const IMPORTANT: u8 = 2;
/// Kind bit: matches only the exact name (`|x^`).
pub const EXACT: u8 = 4;
/// Kind bit: matches only strict subdomains (`||*.x^`).
pub const SUBONLY: u8 = 8;
/// Kind bit: has modifiers; details in the side map.
pub const COMPLEX: u8 = 16;
/// Kind bit: the entry indexes wildcard rules ending in this domain (side map).
pub const WILDIDX: u8 = 32;

/// Highest rank ([`rank`]).
pub const MAX_RANK: u8 = 6;

/// Strength of a matching rule; see the module doc for the order.
#[inline]
pub fn rank(group_entry: bool, kind: u8) -> u8 {
    let allow = kind & ALLOW != 0;
    match (kind & IMPORTANT != 0, group_entry, allow) {
        (true, _, true) => 6,
        (true, _, false) => 5,
        (false, true, true) => 4,
        (false, true, false) => 3,
        (false, false, true) => 2,
        (false, false, false) => 1,
    }
}

/// Whether a rank means "allow".
#[inline]
pub fn rank_allows(r: u8) -> bool {
    r.is_multiple_of(2)
}

/// Per (group, set) summary: the best rank when the set's name is a proper suffix of the query (`sub`) or the
/// whole query (`full`), and whether modifier rules need checking.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetRank {
    sub: u8,
    full: u8,
    complex: bool,
}

/// A domain rule with modifiers.
#[derive(Debug)]
struct ComplexRule {
    source: u32,
    kind: u8,
    line: u32,
    modifiers: Box<Modifiers>,
}

impl ComplexRule {
    fn position_ok(&self, full: bool) -> bool {
        if full {
            self.kind & SUBONLY == 0
        } else {
            self.kind & EXACT == 0
        }
    }
}

/// Which structure produced the deciding match (internal; turned into a public `RuleRef`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    /// Nothing matched.
    None,
    /// Table slot, whether it matched as the full name, and the fingerprint.
    Table {
        /// Slot index.
        slot: u32,
        /// Matched the whole query name.
        full: bool,
        /// Fingerprint of the matched name.
        fp: u64,
    },
    /// Complex (modifier) domain rule index.
    Complex(u32, u64),
    /// Wildcard rule index.
    Wild(u32),
    /// Regex rule index.
    Regex(u32),
}

/// Best match so far.
#[derive(Clone, Copy, Debug)]
pub struct Best {
    /// Rank (0 = nothing).
    pub rank: u8,
    /// What matched.
    pub hit: Hit,
}

/// Resolved deciding rule: source id, line (0 = not recorded), fingerprint (domain rules), kind bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Source id.
    pub source: u32,
    /// 1-based line, 0 when only the fingerprint is known.
    pub line: u32,
    /// Fingerprint of the matched name (0 for wildcard/regex rules).
    pub fp: u64,
    /// Kind bits of the rule.
    pub kind: u8,
}

/// Fixed-size bitset over source ids.
#[derive(Clone, Debug, Default)]
pub struct Bits(Vec<u64>);

impl Bits {
    /// All-zero set able to hold `n` bits.
    pub fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    /// Sets bit `i`.
    pub fn set(&mut self, i: u32) {
        if let Some(w) = self.0.get_mut((i / 64) as usize) {
            *w |= 1 << (i % 64);
        }
    }
    /// Tests bit `i`.
    #[inline]
    pub fn get(&self, i: u32) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

fn base_kind(rule: &Rule<'_>, force_allow: bool, force_block: bool) -> u8 {
    let mut kind = 0u8;
    if (rule.allow || force_allow) && !force_block {
        kind |= ALLOW;
    }
    if rule.important {
        kind |= IMPORTANT;
    }
    kind
}

/// For a domain rule: its fingerprint and full kind bits as stored in the table (used to build the table and,
/// by `explain`, to find a rule again in the list text). `None` for wildcard and regex rules.
pub fn domain_key(rule: &Rule<'_>, force_allow: bool, force_block: bool) -> Option<(u64, u8)> {
    let Pattern::Domain { name, scope } = &rule.pattern else {
        return None;
    };
    let mut kind = base_kind(rule, force_allow, force_block);
    kind |= match scope {
        Scope::WithSubdomains => 0,
        Scope::Exact => EXACT,
        Scope::SubdomainsOnly => SUBONLY,
    };
    if rule.modifiers.is_some() {
        kind |= COMPLEX;
    }
    Some((name_fingerprint(name), kind))
}

/// Collects rules; [`Builder::finish`] compiles them.
#[derive(Default)]
pub struct Builder {
    raw: Vec<(u64, u32, u8, u32)>,
    complex: Vec<(u64, ComplexRule)>,
    wild: Vec<WildRule>,
    wild_by_suffix: Vec<(u64, u32)>,
    regex_pats: Vec<String>,
    regex: Vec<RegexRule>,
    /// 4-gram counts over every 16th domain name (for the literal prefilter).
    grams: GramCounts,
    domain_tick: u32,
}

impl Builder {
    /// Expected number of domain rules (pre-allocation).
    pub fn with_capacity(n: usize) -> Self {
        Builder {
            raw: Vec::with_capacity(n),
            ..Default::default()
        }
    }

    /// Adds one rule of `source` found on `line`. `force_allow` turns it into an allow rule (allow lists and
    /// group allow entries); `force_block` into a block rule (group deny entries).
    pub fn add(
        &mut self,
        source: u32,
        line: u32,
        rule: Rule<'_>,
        force_allow: bool,
        force_block: bool,
    ) {
        let kind = base_kind(&rule, force_allow, force_block);
        if let Pattern::Domain { name, .. } = &rule.pattern {
            self.domain_tick = self.domain_tick.wrapping_add(1);
            if self.domain_tick % 16 == 1 {
                self.grams.add(name.as_bytes());
            }
        }
        if let Some((fp, kind)) = domain_key(&rule, force_allow, force_block) {
            if let Some(modifiers) = rule.modifiers {
                self.complex.push((
                    fp,
                    ComplexRule {
                        source,
                        kind,
                        line,
                        modifiers,
                    },
                ));
            }
            self.raw.push((fp, source, kind, line));
            return;
        }
        match rule.pattern {
            // Address rules are answer rules, kept by `answers::AnswerNets`.
            Pattern::Domain { .. } | Pattern::Address(_) => {}
            Pattern::Wildcard {
                anchor,
                glob,
                end_anchored,
            } => {
                let w = WildRule::new(
                    source,
                    kind,
                    line,
                    anchor,
                    &glob,
                    end_anchored,
                    rule.modifiers,
                );
                if let Some(key) = w.suffix_key() {
                    let fp = name_fingerprint(key);
                    self.wild_by_suffix.push((fp, self.wild.len() as u32));
                    self.raw.push((fp, source, kind | WILDIDX, line));
                }
                self.wild.push(w);
            }
            Pattern::Regex(re) => {
                self.regex_pats.push(re);
                self.regex.push(RegexRule {
                    source,
                    kind,
                    line,
                    modifiers: rule.modifiers,
                });
            }
        }
    }

    /// Compiles everything. `members[g]` is the set of sources group `g` uses; `group_source(s)` tells whether
    /// source `s` is a group entry source.
    pub fn finish(
        mut self,
        members: &[Bits],
        first_group_source: u32,
    ) -> Result<Matcher, FilterError> {
        let raw = &mut self.raw;
        raw.sort_unstable_by_key(|e| e.0);
        let mut entries: Vec<(u64, u32, u32)> = Vec::with_capacity(raw.len());
        let mut single: FastMap<(u32, u8), u32> = FastMap::default();
        let mut multi: FastMap<Box<[(u32, u8)]>, u32> = FastMap::default();
        let mut sets: Vec<Box<[(u32, u8)]>> = Vec::new();
        let mut scratch: Vec<(u32, u8, u32)> = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            let fp = raw[i].0;
            let mut j = i + 1;
            while j < raw.len() && raw[j].0 == fp {
                j += 1;
            }
            let (set, line) = if j == i + 1 {
                let (_, src, kind, line) = raw[i];
                let id = *single.entry((src, kind)).or_insert_with(|| {
                    sets.push(Box::new([(src, kind)]));
                    (sets.len() - 1) as u32
                });
                (id, line)
            } else {
                scratch.clear();
                scratch.extend(raw[i..j].iter().map(|&(_, s, k, l)| (s, k, l)));
                scratch.sort_unstable();
                let line = scratch[0].2;
                scratch.dedup_by_key(|e| (e.0, e.1));
                let key: Vec<(u32, u8)> = scratch.iter().map(|&(s, k, _)| (s, k)).collect();
                let id = match multi.get(key.as_slice()) {
                    Some(&id) => id,
                    None => {
                        let boxed: Box<[(u32, u8)]> = key.into();
                        sets.push(boxed.clone());
                        let id = (sets.len() - 1) as u32;
                        multi.insert(boxed, id);
                        id
                    }
                };
                (id, line)
            };
            entries.push((fp, set, line));
            i = j;
        }
        self.raw = Vec::new();
        let table = FingerprintTable::build(&entries);
        drop(entries);

        let nsets = sets.len();
        let mut ranks = vec![SetRank::default(); nsets * members.len()];
        for (g, m) in members.iter().enumerate() {
            let row = &mut ranks[g * nsets..(g + 1) * nsets];
            for (s, elems) in sets.iter().enumerate() {
                let r = &mut row[s];
                for &(src, kind) in elems.iter() {
                    if !m.get(src) {
                        continue;
                    }
                    if kind & (COMPLEX | WILDIDX) != 0 {
                        r.complex = true;
                        continue;
                    }
                    let rk = rank(src >= first_group_source, kind);
                    if kind & SUBONLY == 0 {
                        r.full = r.full.max(rk);
                    }
                    if kind & EXACT == 0 {
                        r.sub = r.sub.max(rk);
                    }
                }
            }
        }

        let mut complex: FastMap<u64, Vec<Side>> = FastMap::default();
        let mut complex_rules = Vec::with_capacity(self.complex.len());
        for (fp, rule) in self.complex {
            complex
                .entry(fp)
                .or_default()
                .push(Side::Complex(complex_rules.len() as u32));
            complex_rules.push(rule);
        }
        let mut indexed = vec![false; self.wild.len()];
        for &(fp, i) in &self.wild_by_suffix {
            complex.entry(fp).or_default().push(Side::Wild(i));
            if let Some(x) = indexed.get_mut(i as usize) {
                *x = true;
            }
        }

        let regex = if self.regex.is_empty() {
            None
        } else {
            Some(
                RegexRules::build(&self.regex_pats, self.regex).map_err(|e| {
                    FilterError::Compile {
                        what: "regex rules",
                        why: e.to_string(),
                    }
                })?,
            )
        };
        // Scanned rules: wildcards not indexed by suffix, all regexes.
        let mut fragments: Vec<(&[u8], Cand)> = Vec::new();
        let mut wild_always = Vec::new();
        let mut scan_max = vec![0u8; members.len()];
        let mut note = |src: u32, kind: u8| {
            let rk = rank(src >= first_group_source, kind);
            for (g, m) in members.iter().enumerate() {
                if m.get(src) {
                    scan_max[g] = scan_max[g].max(rk);
                }
            }
        };
        for (i, w) in self.wild.iter().enumerate() {
            if indexed.get(i).copied().unwrap_or(false) {
                continue;
            }
            note(w.source, w.kind);
            let frag = w.fragment();
            if frag.is_empty() {
                wild_always.push(i as u32);
            } else {
                fragments.push((frag, Cand::Wild(i as u32)));
            }
        }
        if let Some(re) = &regex {
            for (i, r) in re.rules.iter().enumerate() {
                note(r.source, r.kind);
                if let Some(Some(lit)) = re.literals.get(i) {
                    fragments.push((lit.as_bytes(), Cand::Regex(i as u32)));
                }
            }
        }
        let literal =
            LiteralIndex::build(fragments, &self.grams).map_err(|e| FilterError::Compile {
                what: "wildcard rules",
                why: e.to_string(),
            })?;
        Ok(Matcher {
            table,
            sets,
            ranks,
            nsets,
            complex,
            complex_rules,
            wild: self.wild,
            wild_always,
            literal,
            regex,
            scan_max,
            first_group_source,
        })
    }
}

/// The compiled, immutable matcher (see the module doc).
#[derive(Debug)]
pub struct Matcher {
    table: FingerprintTable,
    sets: Vec<Box<[(u32, u8)]>>,
    ranks: Vec<SetRank>,
    nsets: usize,
    complex: FastMap<u64, Vec<Side>>,
    complex_rules: Vec<ComplexRule>,
    wild: Vec<WildRule>,
    wild_always: Vec<u32>,
    literal: LiteralIndex,
    regex: Option<RegexRules>,
    /// Per group: the highest rank among its scanned (wildcard-by-fragment and regex) rules; 0 = none.
    scan_max: Vec<u8>,
    first_group_source: u32,
}

/// The query being matched, passed to the verification helpers.
struct Query<'a> {
    member: &'a Bits,
    client: IpAddr,
    name: &'a str,
    qtype: u16,
}

/// Entry of the side map keyed by fingerprint.
#[derive(Clone, Copy, Debug)]
enum Side {
    /// A domain rule with modifiers.
    Complex(u32),
    /// A wildcard rule indexed under this suffix.
    Wild(u32),
}

impl Matcher {
    /// Best match for `name` in group `g` (whose source set is `member`). Allocation-free.
    #[inline]
    pub fn best(&self, g: usize, member: &Bits, client: IpAddr, name: &str, qtype: u16) -> Best {
        let q = Query {
            member,
            client,
            name,
            qtype,
        };
        let mut best = Best {
            rank: 0,
            hit: Hit::None,
        };
        let row = self
            .ranks
            .get(g * self.nsets..(g + 1) * self.nsets)
            .unwrap_or(&[]);
        let probe = |fp: u64, full: bool, best: &mut Best| {
            if let Some((slot, set)) = self.table.find(fp)
                && let Some(r) = row.get(set as usize)
            {
                let rk = if full { r.full } else { r.sub };
                if rk != 0 && rk >= best.rank {
                    *best = Best {
                        rank: rk,
                        hit: Hit::Table {
                            slot: slot as u32,
                            full,
                            fp,
                        },
                    };
                }
                if r.complex {
                    self.check_side(fp, full, &q, best);
                }
            }
        };
        // Hash all suffixes first, touch their home slots (independent loads, so cache misses overlap), then
        // probe. Names with more than MAX_FAST labels take the streaming path.
        const MAX_FAST: usize = 24;
        let mut fps = [0u64; MAX_FAST];
        let mut n = 0usize;
        let mut overflow = false;
        for_each_suffix(name.as_bytes(), |fp, _, _| {
            match fps.get_mut(n) {
                Some(x) => *x = fp,
                None => overflow = true,
            }
            n += 1;
            !overflow
        });
        // The Bloom filter rejects most absent suffixes without touching the table.
        if overflow {
            for_each_suffix(name.as_bytes(), |fp, _, full| {
                if self.table.may_contain(fp) {
                    probe(fp, full, &mut best);
                }
                true
            });
        } else {
            let fps = &fps[..n.min(MAX_FAST)];
            let last = fps.len().saturating_sub(1);
            let mut present = 0u32; // bit k: suffix k may be in the table
            let mut touched = 0u64;
            for (k, &fp) in fps.iter().enumerate() {
                if self.table.may_contain(fp) {
                    present |= 1 << k;
                    touched ^= self.table.touch(fp);
                }
            }
            std::hint::black_box(touched);
            for (k, &fp) in fps.iter().enumerate() {
                if present & (1 << k) != 0 {
                    probe(fp, k == last, &mut best);
                }
            }
        }
        if best.rank < self.scan_max.get(g).copied().unwrap_or(0) {
            self.scan(&q, &mut best);
        }
        best
    }

    #[inline]
    fn try_wild(&self, i: u32, q: &Query<'_>, best: &mut Best) {
        let Some(r) = self.wild.get(i as usize) else {
            return;
        };
        let rk = rank(r.source >= self.first_group_source, r.kind);
        if rk > best.rank
            && q.member.get(r.source)
            && r.matches(q.name.as_bytes())
            && r.modifiers
                .as_ref()
                .is_none_or(|m| m.applies(q.client, q.name, q.qtype))
        {
            *best = Best {
                rank: rk,
                hit: Hit::Wild(i),
            };
        }
    }

    #[inline]
    fn try_regex(&self, re: &RegexRules, i: u32, q: &Query<'_>, best: &mut Best) {
        let Some(r) = re.rules.get(i as usize) else {
            return;
        };
        let rk = rank(r.source >= self.first_group_source, r.kind);
        if rk > best.rank
            && q.member.get(r.source)
            && re.matches(i as usize, q.name)
            && r.modifiers
                .as_ref()
                .is_none_or(|m| m.applies(q.client, q.name, q.qtype))
        {
            *best = Best {
                rank: rk,
                hit: Hit::Regex(i),
            };
        }
    }

    /// Wildcard rules found by fragment, fragment-less wildcards, and regexes.
    fn scan(&self, q: &Query<'_>, best: &mut Best) {
        for &i in &self.wild_always {
            self.try_wild(i, q, best);
        }
        self.literal.candidates(q.name.as_bytes(), |c| match c {
            Cand::Wild(i) => self.try_wild(i, q, best),
            Cand::Regex(i) => {
                if let Some(re) = &self.regex {
                    self.try_regex(re, i, q, best);
                }
            }
        });
        if let Some(re) = &self.regex
            && re.any_always(q.name)
        {
            for &i in &re.always {
                self.try_regex(re, i, q, best);
            }
        }
    }

    #[cold]
    fn check_side(&self, fp: u64, full: bool, q: &Query<'_>, best: &mut Best) {
        let Some(list) = self.complex.get(&fp) else {
            return;
        };
        for &side in list {
            match side {
                Side::Wild(i) => self.try_wild(i, q, best),
                Side::Complex(i) => {
                    let Some(r) = self.complex_rules.get(i as usize) else {
                        continue;
                    };
                    let rk = rank(r.source >= self.first_group_source, r.kind);
                    if rk >= best.rank
                        && q.member.get(r.source)
                        && r.position_ok(full)
                        && r.modifiers.applies(q.client, q.name, q.qtype)
                    {
                        *best = Best {
                            rank: rk,
                            hit: Hit::Complex(i, fp),
                        };
                    }
                }
            }
        }
    }

    /// Turns the deciding hit into (source, line, fingerprint, kind). Cheap; done once per query with a match.
    pub fn resolve(&self, best: &Best, member: &Bits) -> Option<Resolved> {
        match best.hit {
            Hit::None => None,
            Hit::Table { slot, full, fp } => {
                let slot = slot as usize;
                let set = self.sets.get(self.table.set(slot) as usize)?;
                set.iter().enumerate().find_map(|(idx, &(src, kind))| {
                    let pos_ok = if full {
                        kind & SUBONLY == 0
                    } else {
                        kind & EXACT == 0
                    };
                    let ok = member.get(src)
                        && kind & (COMPLEX | WILDIDX) == 0
                        && pos_ok
                        && rank(src >= self.first_group_source, kind) == best.rank;
                    ok.then(|| Resolved {
                        source: src,
                        line: if idx == 0 { self.table.line(slot) } else { 0 },
                        fp,
                        kind,
                    })
                })
            }
            Hit::Complex(i, fp) => {
                let r = self.complex_rules.get(i as usize)?;
                Some(Resolved {
                    source: r.source,
                    line: r.line,
                    fp,
                    kind: r.kind,
                })
            }
            Hit::Wild(i) => {
                let r = self.wild.get(i as usize)?;
                Some(Resolved {
                    source: r.source,
                    line: r.line,
                    fp: 0,
                    kind: r.kind,
                })
            }
            Hit::Regex(i) => {
                let r = self.regex.as_ref()?.rules.get(i as usize)?;
                Some(Resolved {
                    source: r.source,
                    line: r.line,
                    fp: 0,
                    kind: r.kind,
                })
            }
        }
    }

    /// Distinct names in the fingerprint table.
    pub fn domains(&self) -> usize {
        self.table.len()
    }

    /// Bytes allocated by the fingerprint table.
    pub fn table_bytes(&self) -> usize {
        self.table.allocated_bytes()
    }

    /// Number of interned source sets.
    pub fn set_count(&self) -> usize {
        self.nsets
    }

    /// Number of wildcard rules.
    pub fn wildcard_count(&self) -> usize {
        self.wild.len()
    }

    /// Number of wildcard rules indexed by a domain suffix (not scanned).
    pub fn wildcard_indexed_count(&self) -> usize {
        self.complex
            .values()
            .flatten()
            .filter(|s| matches!(s, Side::Wild(_)))
            .count()
    }

    /// Number of regex rules.
    pub fn regex_count(&self) -> usize {
        self.regex.as_ref().map_or(0, RegexRules::len)
    }

    /// Number of domain rules with modifiers.
    pub fn complex_count(&self) -> usize {
        self.complex_rules.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_order_matches_documented_precedence() {
        let allow_imp = rank(false, ALLOW | IMPORTANT);
        let block_imp = rank(false, IMPORTANT);
        let group_allow = rank(true, ALLOW);
        let group_deny = rank(true, 0);
        let list_allow = rank(false, ALLOW);
        let list_block = rank(false, 0);
        let order = [
            allow_imp,
            block_imp,
            group_allow,
            group_deny,
            list_allow,
            list_block,
        ];
        assert!(order.windows(2).all(|w| w[0] > w[1]), "{order:?}");
        assert_eq!(allow_imp, MAX_RANK);
        assert_eq!(
            rank(true, ALLOW | IMPORTANT),
            MAX_RANK,
            "important group allow"
        );
        for (r, allows) in [
            (allow_imp, true),
            (block_imp, false),
            (group_allow, true),
            (group_deny, false),
        ] {
            assert_eq!(rank_allows(r), allows);
        }
        assert!(rank_allows(list_allow) && !rank_allows(list_block));
        // Scope bits do not change the rank.
        assert_eq!(rank(false, EXACT | SUBONLY), list_block);
    }

    #[test]
    fn bits_beyond_one_word() {
        let mut b = Bits::new(200);
        b.set(0);
        b.set(130);
        b.set(199);
        assert!(b.get(0) && b.get(130) && b.get(199));
        assert!(!b.get(1) && !b.get(129) && !b.get(64));
        b.set(10_000);
        assert!(!b.get(10_000), "out of range is ignored, never panics");
    }
}
