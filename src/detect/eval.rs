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
//!
//! With a `session` column the report also says what a tunnel got out before
//! it was caught and what benign traffic costs in alarms ([`Exposure`]; the
//! definitions are in `docs/DETECTION.md`): payload bytes are the bytes of
//! labels below the registrable domain that the client had not sent under
//! that domain before ([`PayloadMeter`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use super::split::Name;
use super::{DetectConfig, DetectError, Detector, Level};

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

/// A set of labels (decoded bytes).
type Labels = HashSet<Box<[u8]>>;

/// Counts new payload text per client and registrable domain.
///
/// A query's payload bytes are the decoded bytes (a `\DDD` escape is one
/// byte; dots are not counted) of each label below the query's registrable
/// domain that this client has not sent below that registrable domain
/// before, compared byte for byte (case kept: case carries data in base64
/// tunnels). A repeated label (`cdn`, `hooks`, a re-sent chunk) is not new
/// text. When the name has no known public suffix, the last two labels are
/// taken as the registrable domain, as the detector keys its state.
#[derive(Debug, Default)]
pub struct PayloadMeter {
    /// Labels already sent, per (client, registrable domain).
    seen: HashMap<(IpAddr, Box<[u8]>), Labels>,
}

impl PayloadMeter {
    /// Payload bytes of `qname` sent by `client`, remembering its labels.
    pub fn observe(&mut self, client: IpAddr, qname: &str) -> u64 {
        let n = Name::parse(qname);
        let below = (n.lower().len() - n.registrable().len()).saturating_sub(1);
        let raw = &n.sub_raw()[..below.min(n.sub_raw().len())];
        let sent = self
            .seen
            .entry((client, n.registrable().into()))
            .or_default();
        raw.split(|&b| b == b'.')
            .filter(|l| !l.is_empty())
            .filter(|l| sent.insert((*l).into()))
            .map(|l| l.len() as u64)
            .sum()
    }
}

/// What a group of rows (a session, or a family across sessions) cost:
/// tunnel payload that got out before and despite detection, and alarms on
/// benign traffic per client-hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Exposure {
    /// Tunnel streams in the group: a session's tunnel rows (per family in
    /// family totals).
    pub tunnel_streams: u64,
    /// Streams with at least one flagged tunnel row.
    pub tunnel_streams_flagged: u64,
    /// Tunnel rows.
    pub tunnel: u64,
    /// Tunnel rows flagged.
    pub tunnel_flagged: u64,
    /// Flags on tunnel rows per confidence level (`low`, `medium`, `high`;
    /// every level present, 0 included).
    pub tunnel_flagged_by_confidence: BTreeMap<String, u64>,
    /// Alarms on benign rows per confidence level.
    pub benign_flagged_by_confidence: BTreeMap<String, u64>,
    /// 1-based index, among the stream's tunnel rows, of the first flagged
    /// one (per session only; `None` in family totals or when never flagged).
    pub first_tunnel_flag: Option<u64>,
    /// Tunnel rows before the first flagged one (all of them if none was).
    pub queries_before_first_flag: u64,
    /// Payload bytes of the tunnel rows before the first flagged one (all
    /// of them if none was); the flagged query itself is not counted.
    pub bytes_before_first_flag: u64,
    /// Payload bytes of all tunnel rows.
    pub payload_bytes: u64,
    /// Payload bytes of tunnel rows that were not flagged: what got out
    /// where the action refuses flagged queries.
    pub unflagged_bytes: u64,
    /// Benign rows.
    pub benign: u64,
    /// Benign rows flagged (alarms).
    pub benign_flagged: u64,
    /// Client-hours the benign rows span: per (session, client), the time
    /// from its first to its last benign row of the group, summed.
    pub benign_client_hours: f64,
    #[serde(skip)]
    spans: HashMap<IpAddr, (u64, u64)>,
}

impl Exposure {
    fn add(&mut self, r: &Row, level: Option<Level>, bytes: u64) {
        let flagged = level.is_some();
        if self.tunnel_flagged_by_confidence.is_empty() {
            for l in Level::ALL {
                self.tunnel_flagged_by_confidence.insert(l.to_string(), 0);
                self.benign_flagged_by_confidence.insert(l.to_string(), 0);
            }
        }
        if let Some(l) = level {
            let by = if r.tunnel {
                &mut self.tunnel_flagged_by_confidence
            } else {
                &mut self.benign_flagged_by_confidence
            };
            *by.entry(l.to_string()).or_default() += 1;
        }
        if r.tunnel {
            if self.tunnel == 0 {
                self.tunnel_streams = 1;
            }
            self.tunnel += 1;
            self.payload_bytes += bytes;
            if flagged {
                self.tunnel_flagged += 1;
                self.tunnel_streams_flagged = 1;
                self.first_tunnel_flag.get_or_insert(self.tunnel);
            } else {
                self.unflagged_bytes += bytes;
            }
            if self.first_tunnel_flag.is_none() {
                self.queries_before_first_flag += 1;
                self.bytes_before_first_flag += bytes;
            }
        } else {
            self.benign += 1;
            self.benign_flagged += u64::from(flagged);
            if let Some(ts) = r.ts_ms {
                let e = self.spans.entry(r.client).or_insert((ts, ts));
                e.0 = e.0.min(ts);
                e.1 = e.1.max(ts);
            }
        }
    }

    fn finish(&mut self) {
        let ms: u64 = self.spans.drain().map(|(_, (a, b))| b - a).sum();
        self.benign_client_hours = ms as f64 / 3_600_000.0;
    }

    /// Adds a finished group's totals (first-flag position is not additive).
    fn merge(&mut self, o: &Exposure) {
        for (mine, theirs) in [
            (
                &mut self.tunnel_flagged_by_confidence,
                &o.tunnel_flagged_by_confidence,
            ),
            (
                &mut self.benign_flagged_by_confidence,
                &o.benign_flagged_by_confidence,
            ),
        ] {
            for (l, n) in theirs {
                *mine.entry(l.clone()).or_default() += n;
            }
        }
        self.tunnel_streams += o.tunnel_streams;
        self.tunnel_streams_flagged += o.tunnel_streams_flagged;
        self.tunnel += o.tunnel;
        self.tunnel_flagged += o.tunnel_flagged;
        self.queries_before_first_flag += o.queries_before_first_flag;
        self.bytes_before_first_flag += o.bytes_before_first_flag;
        self.payload_bytes += o.payload_bytes;
        self.unflagged_bytes += o.unflagged_bytes;
        self.benign += o.benign;
        self.benign_flagged += o.benign_flagged;
        self.benign_client_hours += o.benign_client_hours;
    }

    /// Alarms on benign rows per client-hour (`None` when the rows span no time).
    pub fn alarms_per_client_hour(&self) -> Option<f64> {
        (self.benign_client_hours > 0.0)
            .then(|| self.benign_flagged as f64 / self.benign_client_hours)
    }
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
    /// Flagged rows per (label, family, confidence level).
    pub by_level: BTreeMap<(String, String, Level), u64>,
    /// Per session (when a `session` column exists).
    pub sessions: BTreeMap<String, Exposure>,
    /// Per (label, family), summed over sessions (when a `session` column
    /// exists): tunnel streams are counted per session.
    pub family_exposure: BTreeMap<(String, String), Exposure>,
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
    let mut meter = PayloadMeter::default();
    let mut units: BTreeMap<(String, String, String), Exposure> = BTreeMap::new();
    for r in &rows {
        let s = match r.ts_ms {
            Some(ts) if replayed => det.observe(ts, r.client, &r.qname, r.qtype),
            _ => det.score_name(&r.qname, r.qtype),
        };
        // A quarantined domain is an alarm only where quarantines are
        // enforced; a quarantine alone is a high-confidence refusal.
        let level = match s.level() {
            Some(l) if s.flagged => Some(l),
            _ if s.quarantined && cfg.actions().quarantines() => Some(Level::High),
            _ => None,
        };
        let flagged = level.is_some();
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
        if let (Some(f), Some(l)) = (&r.family, level) {
            let label = if r.tunnel { "tunnel" } else { "benign" };
            *rep.by_level
                .entry((label.to_string(), f.clone(), l))
                .or_default() += 1;
        }
        if let Some(f) = &r.family {
            let label = if r.tunnel { "tunnel" } else { "benign" };
            rep.by_family
                .entry((label.to_string(), f.clone()))
                .or_default()
                .add(flagged);
        }
        if let Some(sess) = &r.session {
            let bytes = meter.observe(r.client, &r.qname);
            let label = if r.tunnel { "tunnel" } else { "benign" };
            let fam = r.family.clone().unwrap_or_default();
            rep.sessions
                .entry(sess.clone())
                .or_default()
                .add(r, level, bytes);
            units
                .entry((label.to_string(), fam, sess.clone()))
                .or_default()
                .add(r, level, bytes);
        }
    }
    rep.sessions.values_mut().for_each(Exposure::finish);
    for ((label, fam, _), mut e) in units {
        e.finish();
        rep.family_exposure
            .entry((label, fam))
            .or_default()
            .merge(&e);
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

/// Flags per level as `low/medium/high`.
fn levels(by: &BTreeMap<String, u64>) -> String {
    let n = |l: Level| by.get(l.as_str()).copied().unwrap_or(0);
    format!("{}/{}/{}", n(Level::Low), n(Level::Medium), n(Level::High))
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
            let at = |l: Level| {
                rep.by_level
                    .get(&(label.clone(), fam.clone(), l))
                    .copied()
                    .unwrap_or(0)
            };
            writeln!(
                out,
                "  {label:<7} {fam:<32} {:<22} low {} medium {} high {}",
                pct(t),
                at(Level::Low),
                at(Level::Medium),
                at(Level::High)
            )?;
        }
    }
    if !rep.sessions.is_empty() {
        print_exposure(rep, out)?;
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

fn print_exposure(rep: &EvalReport, out: &mut impl Write) -> std::io::Result<()> {
    let sessions = rep.sessions.iter().map(|(s, e)| (s.clone(), e));
    let families = rep
        .family_exposure
        .iter()
        .map(|((l, f), e)| (format!("{l} {f}"), e));
    writeln!(
        out,
        "tunnel leakage (payload bytes: new label bytes below the registrable domain, \
         see docs/DETECTION.md):"
    )?;
    writeln!(
        out,
        "  {:<36} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "session / label family",
        "flagged",
        "streams",
        "1st at",
        "q before",
        "B before",
        "B total",
        "B unflag",
        "low/med/high"
    )?;
    for (name, e) in sessions.clone().chain(families.clone()) {
        if e.tunnel == 0 {
            continue;
        }
        writeln!(
            out,
            "  {name:<36} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10}",
            format!("{}/{}", e.tunnel_flagged, e.tunnel),
            format!("{}/{}", e.tunnel_streams_flagged, e.tunnel_streams),
            e.first_tunnel_flag
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
            e.queries_before_first_flag,
            e.bytes_before_first_flag,
            e.payload_bytes,
            e.unflagged_bytes,
            levels(&e.tunnel_flagged_by_confidence),
        )?;
    }
    writeln!(out, "benign alarms per client-hour:")?;
    writeln!(
        out,
        "  {:<36} {:>8} {:>8} {:>10} {:>12} {:>12}",
        "session / label family", "rows", "alarms", "client-h", "alarms/c-h", "low/med/high"
    )?;
    for (name, e) in sessions.chain(families) {
        if e.benign == 0 {
            continue;
        }
        writeln!(
            out,
            "  {name:<36} {:>8} {:>8} {:>10.2} {:>12} {:>12}",
            e.benign,
            e.benign_flagged,
            e.benign_client_hours,
            e.alarms_per_client_hour()
                .map_or_else(|| "-".to_string(), |r| format!("{r:.4}")),
            levels(&e.benign_flagged_by_confidence),
        )?;
    }
    Ok(())
}

impl EvalReport {
    /// The report as JSON (what `dnsguard detect-eval --format json` prints).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let tally = |t: &Tally| json!({"total": t.total, "flagged": t.flagged, "rate": t.rate()});
        let exposure = |e: &Exposure| {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            v["ever_flagged"] = json!(e.tunnel_flagged > 0);
            v["alarms_per_client_hour"] = json!(e.alarms_per_client_hour());
            v
        };
        let listed = |v: &[(f32, String, String)]| {
            v.iter()
                .map(|(s, q, why)| json!({"score": s, "qname": q, "reasons": why}))
                .collect::<Vec<_>>()
        };
        json!({
            "mode": if self.replayed { "replay" } else { "stateless" },
            "tunnel": tally(&self.tunnel),
            "benign": tally(&self.benign),
            "by_difficulty": self.by_difficulty.iter().map(|(d, (t, b))| {
                (d.clone(), json!({"tunnel": tally(t), "benign": tally(b)}))
            }).collect::<serde_json::Map<_, _>>(),
            "by_family": self.by_family.iter().map(|((l, f), t)| {
                let by_level = Level::ALL.iter().map(|&lv| {
                    let n = self.by_level.get(&(l.clone(), f.clone(), lv)).copied().unwrap_or(0);
                    (lv.to_string(), json!(n))
                }).collect::<serde_json::Map<_, _>>();
                json!({"label": l, "family": f, "rows": tally(t), "by_level": by_level})
            }).collect::<Vec<_>>(),
            "sessions": self.sessions.iter().map(|(s, e)| {
                let mut v = exposure(e);
                v["session"] = json!(s);
                v
            }).collect::<Vec<_>>(),
            "families": self.family_exposure.iter().map(|((l, f), e)| {
                let mut v = exposure(e);
                v["label"] = json!(l);
                v["family"] = json!(f);
                v
            }).collect::<Vec<_>>(),
            "worst_false_positives": listed(&self.worst_false_positives),
            "worst_misses": listed(&self.worst_misses),
        })
    }
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

    #[test]
    fn payload_bytes_count_new_labels_per_client_and_domain() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut m = PayloadMeter::default();
        // "ab" + "cd" + "x"; the registrable domain is not payload.
        assert_eq!(m.observe(a, "ab.cd.x.evil.com"), 5);
        // Only "ef" is new.
        assert_eq!(m.observe(a, "ab.ef.x.evil.com"), 2);
        // `\066` is one byte ("B"); case is kept, so "AB" is new.
        assert_eq!(m.observe(a, r"A\066.x.evil.com"), 2);
        // Same labels from another client, or under another domain, are new.
        assert_eq!(m.observe(b, "ab.cd.x.evil.com"), 5);
        assert_eq!(m.observe(a, "ab.evil.org"), 2);
        // The registrable domain alone, and a repeat, carry nothing.
        assert_eq!(m.observe(a, "evil.com"), 0);
        assert_eq!(m.observe(a, "ab.cd.x.evil.com."), 0);
        // No known public suffix: the last two labels are the domain.
        assert_eq!(m.observe(a, "dnscat.abcd.c2.notatld"), 10);
    }

    /// A hand-made session set whose answer is worked out by hand.
    #[test]
    fn exposure_of_hand_made_sessions() {
        let long = "mzxw6ytboi2gk43umvzxi5dpmvzwg2lbmvzw42dpnvqxi";
        let csv = format!(
            "ts,session,client,qname,qtype,label,family\n\
             0,T,10.0.0.1,ab.cd.x.evil.com,A,tunnel,f\n\
             10,T,10.0.0.1,ab.ef.x.evil.com,A,tunnel,f\n\
             20,T,10.0.0.1,A\\066.x.evil.com,A,tunnel,f\n\
             30,T,10.0.0.1,{long}.x.evil.com,TXT,tunnel,f\n\
             0,S,10.0.0.2,hello.w.other.org,A,tunnel,f\n\
             60,S,10.0.0.2,world.w.other.org,A,tunnel,f\n\
             0,B,10.0.0.3,www.example.com,A,benign,web\n\
             1800,B,10.0.0.3,www.example.com,A,benign,web\n\
             0,B,10.0.0.4,www.example.net,A,benign,web\n\
             1800,B,10.0.0.4,{long}.files.example.net,TXT,benign,odd\n\
             3600,B,10.0.0.4,www.example.net,A,benign,web\n\
             5,B,10.0.0.5,www.example.org,A,benign,web\n"
        );
        let mut out = Vec::new();
        let rep = eval(csv.as_bytes(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();

        // T: 5 + 2 + 2 bytes before the long base32 label is flagged at row 4.
        let t = &rep.sessions["T"];
        assert_eq!(t.first_tunnel_flag, Some(4), "{text}");
        assert_eq!(t.queries_before_first_flag, 3);
        assert_eq!(t.bytes_before_first_flag, 9);
        assert_eq!(t.payload_bytes, 9 + long.len() as u64);
        assert_eq!(t.unflagged_bytes, 9);
        assert_eq!((t.tunnel, t.tunnel_flagged), (4, 1));
        // The base32 label is one name scoring over twice the threshold.
        assert_eq!(t.tunnel_flagged_by_confidence["high"], 1, "{text}");
        let levels: u64 = t.tunnel_flagged_by_confidence.values().sum();
        assert_eq!(levels, t.tunnel_flagged);

        // S: never flagged, so everything it sent counts: 5 + 1 + 5.
        let s = &rep.sessions["S"];
        assert_eq!(s.first_tunnel_flag, None);
        assert_eq!(
            (s.queries_before_first_flag, s.bytes_before_first_flag),
            (2, 11)
        );
        assert_eq!(s.unflagged_bytes, 11);

        // Family f: two streams, one caught; leaked bytes add up.
        let f = &rep.family_exposure[&("tunnel".to_string(), "f".to_string())];
        assert_eq!((f.tunnel_streams, f.tunnel_streams_flagged), (2, 1));
        assert_eq!((f.bytes_before_first_flag, f.tunnel), (20, 6));
        assert_eq!(f.first_tunnel_flag, None);

        // B: 0.5 h (10.0.0.3) + 1 h (10.0.0.4) + 0 h (one row), one alarm.
        let b = &rep.sessions["B"];
        assert_eq!((b.benign, b.benign_flagged), (6, 1));
        assert!((b.benign_client_hours - 1.5).abs() < 1e-9);
        assert!((b.alarms_per_client_hour().unwrap() - 1.0 / 1.5).abs() < 1e-9);
        assert_eq!(b.tunnel_streams, 0);
        // Family "odd" is one row: it spans no time, so no rate.
        let odd = &rep.family_exposure[&("benign".to_string(), "odd".to_string())];
        assert_eq!(
            (odd.benign_flagged, odd.alarms_per_client_hour()),
            (1, None)
        );
        let web = &rep.family_exposure[&("benign".to_string(), "web".to_string())];
        assert_eq!(web.alarms_per_client_hour(), Some(0.0));

        assert!(text.contains("tunnel leakage"), "{text}");
        let json = rep.to_json();
        let t_json = json["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["session"] == "T")
            .unwrap();
        assert_eq!(t_json["bytes_before_first_flag"], 9);
        assert_eq!(t_json["ever_flagged"], true);
        assert_eq!(t_json["tunnel_flagged_by_confidence"]["high"], 1);
    }
}
