//! Offline evaluation over a labelled CSV: the library side of
//! `dnsguard detect-eval FILE.csv`.
//!
//! Columns (header row, any order, extra columns ignored): `qname`, `qtype`
//! (mnemonic such as `TXT`, `TYPE65399`, or a number), `label`
//! (`benign`|`tunnel`); optional `difficulty` (TPR/FPR per difficulty),
//! `family` (per-family rates), `ts` (unix seconds: rows are replayed in `ts`
//! order through the stateful detector, otherwise every name is scored on
//! its own), `client` (IP address) and `session` (per-session summary).
//! Fields may be double-quoted (`""` escapes a quote; quoted newlines work).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};

use super::{Action, DetectConfig, DetectError, Detector};

/// Flagged out of total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Rows seen.
    pub total: u64,
    /// Rows flagged.
    pub flagged: u64,
}

impl Tally {
    fn add(&mut self, flagged: bool) {
        self.total += 1;
        self.flagged += u64::from(flagged);
    }

    /// `flagged / total` (0 when empty).
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.flagged as f64 / self.total as f64
        }
    }
}

/// Per-session replay summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSummary {
    /// Tunnel rows seen in the session.
    pub tunnel: u64,
    /// Benign rows flagged (alarms) in the session.
    pub benign_flagged: u64,
    /// 1-based index, among the session's tunnel rows, of the first flagged one.
    pub first_tunnel_flag: Option<u64>,
}

/// Result of [`eval`].
#[derive(Debug, Clone, Default)]
pub struct EvalReport {
    /// Whether rows were replayed through the stateful detector (`ts` given).
    pub replayed: bool,
    /// Tunnel rows: true-positive rate.
    pub tunnel: Tally,
    /// Benign rows: false-positive rate.
    pub benign: Tally,
    /// Per difficulty: (tunnel, benign).
    pub by_difficulty: BTreeMap<String, (Tally, Tally)>,
    /// Per (label, family).
    pub by_family: BTreeMap<(String, String), Tally>,
    /// Per session (when a `session` column exists).
    pub sessions: BTreeMap<String, SessionSummary>,
    /// Highest-scoring benign rows that were flagged: (score, qname, reasons).
    pub worst_false_positives: Vec<(f32, String, String)>,
    /// Lowest-scoring tunnel rows that were missed: (score, qname, reasons).
    pub worst_misses: Vec<(f32, String, String)>,
}

impl EvalReport {
    /// True-positive rate over all tunnel rows.
    pub fn tpr(&self) -> f64 {
        self.tunnel.rate()
    }
    /// False-positive rate over all benign rows.
    pub fn fpr(&self) -> f64 {
        self.benign.rate()
    }
    /// TPR of tunnel rows with the given difficulty (None if absent).
    pub fn tpr_for(&self, difficulty: &str) -> Option<f64> {
        self.by_difficulty
            .get(difficulty)
            .filter(|(t, _)| t.total > 0)
            .map(|(t, _)| t.rate())
    }
}

/// Map a record-type mnemonic or number to its code (0 if unknown).
pub fn parse_qtype(s: &str) -> u16 {
    let s = s.trim();
    if let Ok(n) = s.parse::<u16>() {
        return n;
    }
    let up = s.to_ascii_uppercase();
    if let Some(n) = up.strip_prefix("TYPE").and_then(|n| n.parse().ok()) {
        return n;
    }
    match up.as_str() {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "NULL" => 10,
        "PTR" => 12,
        "HINFO" => 13,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        "SRV" => 33,
        "NAPTR" => 35,
        "DS" => 43,
        "RRSIG" => 46,
        "DNSKEY" => 48,
        "SVCB" => 64,
        "HTTPS" => 65,
        "CAA" => 257,
        "ANY" => 255,
        // iodine's private query type (0xFF77).
        "PRIVATE" => 65399,
        _ => 0,
    }
}

/// Split CSV text into records of fields (RFC 4180 quoting).
fn parse_csv(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut records = Vec::new();
    let mut field = String::new();
    let mut fields = Vec::new();
    let mut in_quotes = false;
    let mut line = 1usize;
    let mut start_line = 1usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            ',' => fields.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                if !(fields.len() == 1 && fields[0].is_empty()) {
                    records.push((start_line, std::mem::take(&mut fields)));
                }
                fields.clear();
                line += 1;
                start_line = line;
            }
            _ => field.push(c),
        }
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        records.push((start_line, fields));
    }
    records
}

struct Row {
    line: usize,
    qname: String,
    qtype: u16,
    tunnel: bool,
    difficulty: Option<String>,
    family: Option<String>,
    session: Option<String>,
    client: IpAddr,
    ts_ms: Option<u64>,
}

/// Evaluate the default configuration on `csv`, printing a report to `out`.
pub fn eval(csv: impl Read, out: impl Write) -> Result<EvalReport, DetectError> {
    eval_with(&DetectConfig::default(), csv, out)
}

/// Evaluate `cfg` on `csv`, printing a report to `out`.
pub fn eval_with(
    cfg: &DetectConfig,
    mut csv: impl Read,
    mut out: impl Write,
) -> Result<EvalReport, DetectError> {
    let mut text = String::new();
    csv.read_to_string(&mut text)?;
    let mut records = parse_csv(&text).into_iter();
    let (_, header) = records.next().ok_or(DetectError::Csv {
        line: 1,
        msg: "empty file".into(),
    })?;
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let need = |name: &str| {
        col(name).ok_or(DetectError::Csv {
            line: 1,
            msg: format!("missing column {name:?}"),
        })
    };
    let (c_q, c_t, c_l) = (need("qname")?, need("qtype")?, need("label")?);
    let (c_d, c_f, c_s, c_c, c_ts) = (
        col("difficulty"),
        col("family"),
        col("session"),
        col("client"),
        col("ts"),
    );

    let mut rows = Vec::new();
    for (line, rec) in records {
        let get = |c: usize| {
            rec.get(c).map(|s| s.trim()).ok_or(DetectError::Csv {
                line,
                msg: format!("expected at least {} fields", c + 1),
            })
        };
        let opt = |c: Option<usize>| c.and_then(|c| rec.get(c)).map(|s| s.trim().to_string());
        let tunnel = match get(c_l)? {
            "tunnel" => true,
            "benign" => false,
            other => {
                return Err(DetectError::Csv {
                    line,
                    msg: format!("label must be benign or tunnel, got {other:?}"),
                });
            }
        };
        let ts_ms = match opt(c_ts) {
            Some(s) => Some(
                s.parse::<f64>()
                    .map(|t| (t * 1000.0).max(0.0) as u64)
                    .map_err(|_| DetectError::Csv {
                        line,
                        msg: format!("bad ts {s:?}"),
                    })?,
            ),
            None => None,
        };
        rows.push(Row {
            line,
            qname: get(c_q)?.to_string(),
            qtype: parse_qtype(get(c_t)?),
            tunnel,
            difficulty: opt(c_d).filter(|s| !s.is_empty()),
            family: opt(c_f).filter(|s| !s.is_empty()),
            session: opt(c_s).filter(|s| !s.is_empty()),
            client: opt(c_c)
                .and_then(|s| s.parse().ok())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ts_ms,
        });
    }

    let replayed = c_ts.is_some();
    if replayed {
        rows.sort_by_key(|r| (r.ts_ms, r.line));
    }
    let det = Detector::new(cfg)?;
    let mut rep = EvalReport {
        replayed,
        ..EvalReport::default()
    };
    let mut fps = Vec::new();
    let mut misses = Vec::new();
    for r in &rows {
        let s = match r.ts_ms {
            Some(ts) if replayed => det.observe(ts, r.client, &r.qname, r.qtype),
            _ => det.score_name(&r.qname, r.qtype),
        };
        // A quarantined domain is an alarm only where quarantine is the action.
        let flagged = s.flagged || (cfg.action == Action::Quarantine && s.quarantined);
        if r.tunnel {
            rep.tunnel.add(flagged);
            if !flagged {
                misses.push((s.value, r, s.reasons));
            }
        } else {
            rep.benign.add(flagged);
            if flagged {
                fps.push((s.value, r, s.reasons));
            }
        }
        if let Some(d) = &r.difficulty {
            let e = rep.by_difficulty.entry(d.clone()).or_default();
            if r.tunnel { &mut e.0 } else { &mut e.1 }.add(flagged);
        }
        if let Some(f) = &r.family {
            let label = if r.tunnel { "tunnel" } else { "benign" };
            rep.by_family
                .entry((label.to_string(), f.clone()))
                .or_default()
                .add(flagged);
        }
        if let Some(sess) = &r.session {
            let e = rep.sessions.entry(sess.clone()).or_default();
            if r.tunnel {
                e.tunnel += 1;
                if flagged && e.first_tunnel_flag.is_none() {
                    e.first_tunnel_flag = Some(e.tunnel);
                }
            } else if flagged {
                e.benign_flagged += 1;
            }
        }
    }
    fps.sort_by(|a, b| b.0.total_cmp(&a.0));
    misses.sort_by(|a, b| a.0.total_cmp(&b.0));
    let show = |v: Vec<(f32, &Row, super::Reasons)>| {
        v.into_iter()
            .take(15)
            .map(|(s, r, why)| (s, r.qname.clone(), why.display_for(&r.qname).to_string()))
            .collect::<Vec<_>>()
    };
    rep.worst_false_positives = show(fps);
    rep.worst_misses = show(misses);
    print_report(&rep, &mut out)?;
    Ok(rep)
}

fn pct(t: &Tally) -> String {
    format!("{:.2}% ({}/{})", t.rate() * 100.0, t.flagged, t.total)
}

fn print_report(rep: &EvalReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "mode: {}",
        if rep.replayed {
            "replay in ts order (stateful)"
        } else {
            "per query name (stateless)"
        }
    )?;
    writeln!(out, "TPR {}   FPR {}", pct(&rep.tunnel), pct(&rep.benign))?;
    for (d, (t, b)) in &rep.by_difficulty {
        write!(out, "  difficulty {d:<12}")?;
        if t.total > 0 {
            write!(out, " TPR {}", pct(t))?;
        }
        if b.total > 0 {
            write!(out, " FPR {}", pct(b))?;
        }
        writeln!(out)?;
    }
    if !rep.by_family.is_empty() {
        writeln!(out, "per family (flagged share):")?;
        for ((label, fam), t) in &rep.by_family {
            writeln!(out, "  {label:<7} {fam:<32} {}", pct(t))?;
        }
    }
    for (s, sum) in &rep.sessions {
        writeln!(
            out,
            "session {s}: {} tunnel rows, first flagged at tunnel row {}, {} benign alarms",
            sum.tunnel,
            sum.first_tunnel_flag
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
            sum.benign_flagged
        )?;
    }
    writeln!(out, "worst false positives:")?;
    for (s, q, why) in &rep.worst_false_positives {
        writeln!(out, "  {s:6.2}  {q}  [{why}]")?;
    }
    writeln!(out, "lowest-scoring missed tunnel rows:")?;
    for (s, q, why) in &rep.worst_misses {
        writeln!(out, "  {s:6.2}  {q}  [{why}]")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        let r = parse_csv("a,b\n\"x,1\",\"say \"\"hi\"\"\"\n\"multi\nline\",z");
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].1, vec!["x,1".to_string(), "say \"hi\"".to_string()]);
        assert_eq!(r[2].1[0], "multi\nline");
    }

    #[test]
    fn qtypes() {
        assert_eq!(parse_qtype("TXT"), 16);
        assert_eq!(parse_qtype("TYPE65399"), 65399);
        assert_eq!(parse_qtype("28"), 28);
    }

    #[test]
    fn small_eval() {
        let csv = "qname,qtype,label,difficulty\n\
                   www.example.com,A,benign,normal\n\
                   mzxw6ytboi2gk43umvzxi5dpmvzwg2lbmvzw42dpnvqxi.x.evil.example,TXT,tunnel,normal\n";
        let mut out = Vec::new();
        let rep = eval(csv.as_bytes(), &mut out).unwrap();
        assert_eq!(rep.tunnel.total, 1);
        assert_eq!(rep.benign.flagged, 0);
        assert_eq!(rep.tpr_for("normal"), Some(1.0));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("TPR 100.00%"), "{text}");
        assert!(eval("qname,label\nx,benign\n".as_bytes(), Vec::new()).is_err());
    }
}
