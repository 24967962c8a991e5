//! Extended DNS Errors (RFC 8914): the reason dnsguard gives, inside the reply's
//! OPT record, for every answer it decides itself, so a client (or `dig`) sees why
//! a name was blocked or failed without opening the dashboard.
//!
//! | answer | INFO-CODE | EXTRA-TEXT |
//! |---|---|---|
//! | blocked by a list / group deny entry | 15 Blocked | `list "NAME" line N` / `group G deny line N` |
//! | default-deny group, not allowlisted | 18 Prohibited | `not-allowlisted (group G)` |
//! | CNAME target or answer address blocked (cloaking, answer rules) | 17 Filtered | `answer: list "NAME" line N` |
//! | rebinding | 17 Filtered | `rebinding: private address for a public name` |
//! | tunnel action | 18 Prohibited | `tunnel` |
//! | client outside `allow_clients` | 18 Prohibited | `client not allowed` |
//! | no upstream answered within `timeout_ms` | 22 No Reachable Authority | the error |
//! | upstreams failed (SERVFAIL, refused, garbage, unreachable) | 23 Network Error | the error |
//! | DNSSEC bogus | 6 DNSSEC Bogus | the error |
//! | stale answer after upstream failure (RFC 8767) | 3 Stale Answer | none |
//!
//! Only a client that sent EDNS gets one (an OPT record is never added to a reply
//! whose query had none); EXTRA-TEXT is left out when the reply would not fit the
//! client's UDP size with it, and the option itself when not even its code fits.
//! The text is kept in pieces borrowed from the policy, joined only on the wire:
//! the fast path writes it without allocating.

use hickory_proto::rr::rdata::opt::EdnsOption;

use super::{Policy, Source};
use crate::filter::{Action, BlockReason, RuleSource, Verdict};
use crate::resolve::ResolveError;

/// The EDNS option code of an Extended DNS Error.
pub const OPTION_CODE: u16 = 15;

/// INFO-CODEs dnsguard sends (RFC 8914 §4).
pub mod code {
    /// Stale Answer.
    pub const STALE_ANSWER: u16 = 3;
    /// DNSSEC Bogus.
    pub const DNSSEC_BOGUS: u16 = 6;
    /// Blocked (by the operator's lists).
    pub const BLOCKED: u16 = 15;
    /// Filtered (the answer was).
    pub const FILTERED: u16 = 17;
    /// Prohibited (by policy: access, default-deny, tunnel action).
    pub const PROHIBITED: u16 = 18;
    /// No Reachable Authority.
    pub const NO_REACHABLE_AUTHORITY: u16 = 22;
    /// Network Error.
    pub const NETWORK_ERROR: u16 = 23;
}

/// Why resolution failed, as far as the client's EDE says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing answered within the resolver timeout.
    NoAnswer,
    /// Upstreams answered badly or could not be reached.
    Network,
    /// DNSSEC validation failed.
    Bogus,
}

impl From<&ResolveError> for Failure {
    fn from(e: &ResolveError) -> Self {
        match e {
            ResolveError::Timeout(_) => Failure::NoAnswer,
            ResolveError::Upstream(_) => Failure::Network,
            ResolveError::Bogus => Failure::Bogus,
        }
    }
}

/// One Extended DNS Error: its INFO-CODE and EXTRA-TEXT, the text as pieces
/// followed by ` line N` when `line` is not 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ede<'a> {
    /// The INFO-CODE.
    pub code: u16,
    text: [&'a str; 4],
    line: u32,
}

impl<'a> Ede<'a> {
    fn new(code: u16, text: [&'a str; 4], line: u32) -> Self {
        Self { code, text, line }
    }

    /// An EDE with a plain text (`""` for none).
    pub fn bare(code: u16, text: &'a str) -> Self {
        Self::new(code, [text, "", "", ""], 0)
    }

    /// The EDE of a reply: `source` and the deciding `verdict` as the pipeline
    /// reports them; `screened_out` when the question itself was decided before
    /// resolution (so a block is the name's own, not its answer's). `None` for
    /// answers dnsguard did not decide (resolved, cached, local).
    pub fn of(
        policy: &'a Policy,
        source: &'a Source,
        verdict: Option<&Verdict>,
        screened_out: bool,
    ) -> Option<Self> {
        Some(match source {
            Source::Refused => Self::bare(code::PROHIBITED, "client not allowed"),
            Source::Tunnel => Self::bare(code::PROHIBITED, "tunnel"),
            Source::Rebinding(_) => Self::bare(
                code::FILTERED,
                "rebinding: private address for a public name",
            ),
            Source::Stale => Self::bare(code::STALE_ANSWER, ""),
            Source::Failed(failure, why) => {
                let code = match failure {
                    Failure::NoAnswer => code::NO_REACHABLE_AUTHORITY,
                    Failure::Network => code::NETWORK_ERROR,
                    Failure::Bogus => code::DNSSEC_BOGUS,
                };
                Self::bare(code, why)
            }
            Source::Blocked => {
                let v = verdict?;
                if v.action == Action::Block(BlockReason::NotAllowlisted) {
                    let group = policy.group_name(v.group);
                    return Some(Self::new(
                        code::PROHIBITED,
                        ["not-allowlisted (group ", group, ")", ""],
                        0,
                    ));
                }
                let (code, prefix) = if screened_out {
                    (code::BLOCKED, "")
                } else {
                    (code::FILTERED, "answer: ")
                };
                let Some(rule) = v.rule else {
                    return Some(Self::bare(code, prefix.trim_end_matches([':', ' '])));
                };
                let (kind, end) = match rule.source {
                    RuleSource::List(_) => ("list \"", "\""),
                    RuleSource::GroupDeny(_) => ("group ", " deny"),
                    RuleSource::GroupAllow(_) => ("group ", " allow"),
                };
                let text = [prefix, kind, policy.rule_source_name(rule.source), end];
                Self::new(code, text, rule.line)
            }
            Source::Local | Source::Cache | Source::Upstream(_) => return None,
        })
    }

    /// The EXTRA-TEXT's length in bytes.
    pub fn text_len(&self) -> usize {
        let line = if self.line > 0 {
            " line ".len() + itoa::Buffer::new().format(self.line).len()
        } else {
            0
        };
        self.text.iter().map(|t| t.len()).sum::<usize>() + line
    }

    /// The option's length on the wire (code, length, INFO-CODE, EXTRA-TEXT), with
    /// or without its text.
    pub fn wire_len(&self, with_text: bool) -> usize {
        6 + if with_text { self.text_len() } else { 0 }
    }

    /// Writes the option (with or without the text) into `out`, which must be
    /// [`Ede::wire_len`] long.
    pub fn write(&self, with_text: bool, out: &mut [u8]) {
        let body = (self.wire_len(with_text) - 4) as u16;
        out[0..2].copy_from_slice(&OPTION_CODE.to_be_bytes());
        out[2..4].copy_from_slice(&body.to_be_bytes());
        out[4..6].copy_from_slice(&self.code.to_be_bytes());
        if !with_text {
            return;
        }
        let mut at = 6;
        let mut put = |s: &[u8]| {
            out[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        };
        for t in self.text {
            put(t.as_bytes());
        }
        if self.line > 0 {
            put(b" line ");
            put(itoa::Buffer::new().format(self.line).as_bytes());
        }
    }

    /// The option for hickory's encoder (the slow path and TCP), with or without
    /// the text.
    pub fn option(&self, with_text: bool) -> EdnsOption {
        let mut bytes = vec![0; self.wire_len(with_text)];
        self.write(with_text, &mut bytes);
        EdnsOption::Unknown(OPTION_CODE, bytes.split_off(4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_code_and_text_pieces() {
        let e = Ede::new(code::BLOCKED, ["list \"", "ads", "\"", ""], 8);
        assert_eq!(e.text_len(), "list \"ads\" line 8".len());
        let mut out = vec![0; e.wire_len(true)];
        e.write(true, &mut out);
        assert_eq!(&out[..6], &[0, 15, 0, 2 + 17, 0, 15]);
        assert_eq!(&out[6..], b"list \"ads\" line 8");
        let mut out = vec![0; e.wire_len(false)];
        e.write(false, &mut out);
        assert_eq!(out, [0, 15, 0, 2, 0, 15]);
        let EdnsOption::Unknown(15, data) = e.option(true) else {
            panic!("an unknown option 15");
        };
        assert_eq!(&data[..2], &[0, 15]);
        assert_eq!(&data[2..], b"list \"ads\" line 8");
    }
}
