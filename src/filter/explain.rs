//! Slow-path explanation of a verdict: which group, which list (or group entry) and which line decided, with
//! the rule's text re-read from the list text the caller passes again (rule text is never kept in memory).
//! When a name is in several lists the table records the line for one of them only; the line in the deciding
//! list is then found by re-parsing that list and comparing fingerprints.

use std::fmt;

use super::matcher::domain_key;
use super::parse::{Parsed, parse_list};
use super::{Action, BlockReason, Filter, ListKind, ListText, RuleSource, Verdict};

/// Human-readable account of a verdict (see [`Filter::explain`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The client's group.
    pub group: String,
    /// The action taken.
    pub action: Action,
    /// Where the deciding rule comes from (`None` when no rule decided).
    pub source: Option<RuleSource>,
    /// List name, or `group NAME allow` / `group NAME deny`.
    pub source_name: Option<String>,
    /// 1-based line in the list (entry index + 1 for group entries).
    pub line: Option<u32>,
    /// The rule as written (trimmed).
    pub rule_text: Option<String>,
    /// Extra remark (e.g. the list text was not supplied).
    pub note: Option<String>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.action {
            Action::Pass => "pass (no rule)",
            Action::Allow => "allowed",
            Action::Block(BlockReason::Rule) => "blocked",
            Action::Block(BlockReason::NotAllowlisted) => {
                "blocked (not-allowlisted: group is default-deny)"
            }
        };
        write!(f, "{what}; group {}", self.group)?;
        if let Some(s) = &self.source_name {
            write!(f, "; {s}")?;
        }
        if let Some(l) = self.line {
            write!(f, " line {l}")?;
        }
        if let Some(t) = &self.rule_text {
            write!(f, ": {t}")?;
        }
        if let Some(n) = &self.note {
            write!(f, " ({n})")?;
        }
        Ok(())
    }
}

pub(super) fn explain(filter: &Filter, verdict: &Verdict, texts: &[ListText<'_>]) -> Explanation {
    let mut out = Explanation {
        group: filter.group_name(verdict.group).to_owned(),
        action: verdict.action,
        source: None,
        source_name: None,
        line: None,
        rule_text: None,
        note: None,
    };
    let Some(r) = verdict.rule else { return out };
    out.source = Some(r.source);
    match r.source {
        RuleSource::GroupAllow(g) | RuleSource::GroupDeny(g) => {
            let allow = matches!(r.source, RuleSource::GroupAllow(_));
            let gi = filter.groups.get(g.0 as usize);
            out.source_name = Some(format!(
                "group {} {}",
                filter.group_name(g),
                if allow { "allow" } else { "deny" }
            ));
            out.line = Some(r.line);
            out.rule_text = gi.and_then(|gi| {
                let entries = if allow { &gi.allow } else { &gi.deny };
                entries
                    .get((r.line as usize).wrapping_sub(1))
                    .map(|s| s.trim().to_owned())
            });
        }
        RuleSource::List(i) => {
            let Some(st) = filter.stats.get(i as usize) else {
                return out;
            };
            out.source_name = Some(st.name.clone());
            let Some(text) = texts.iter().find(|t| t.name == st.name).map(|t| t.text) else {
                out.line = (r.line != 0).then_some(r.line);
                out.note = Some("list text not supplied".into());
                return out;
            };
            let line = if r.line != 0 {
                Some(r.line)
            } else {
                let allow_list = st.kind == ListKind::Allow;
                parse_list(text).find_map(|p| match p {
                    Parsed::Rule { line, rule } => (domain_key(&rule, allow_list, false)
                        == Some((r.fp, r.kind)))
                    .then_some(line),
                    Parsed::Invalid { .. } => None,
                })
            };
            out.line = line;
            match line.and_then(|l| text.lines().nth((l as usize).wrapping_sub(1))) {
                Some(t) => out.rule_text = Some(t.trim().to_owned()),
                None => {
                    out.note = Some(
                        "rule not found in the supplied text (list changed since load?)".into(),
                    )
                }
            }
        }
    }
    out
}
