//! Streaming output for the CLI: `table`, `json` (JSON Lines, also called
//! `jsonl`) and `csv`.
//!
//! [`EntryWriter`] writes one entry at a time (for `--follow`);
//! [`write_entries`] drains an iterator. Nothing is buffered beyond the
//! `io::Write` itself, so an export of millions of rows starts at once.
//!
//! The table uses fixed column widths (it cannot look ahead); a value longer
//! than its column is printed whole and shifts the rest of that row. Times
//! are UTC.

use std::borrow::Cow;
use std::io::{self, Write};
use std::str::FromStr;

use serde::Serialize;

use super::QueryLogError;
use super::entry::Entry;
use super::parse::push_time;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON object per line, schema version [`JSONL_VERSION`]
    /// (`docs/querylog-jsonl.md`). `json` and `jsonl` name this one format.
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
}

impl FromStr for OutputFormat {
    type Err = QueryLogError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(OutputFormat::Table),
            "json" | "jsonl" => Ok(OutputFormat::Json),
            "csv" => Ok(OutputFormat::Csv),
            _ => Err(QueryLogError::Parse(format!(
                "unknown format {s:?} (expected table, json, jsonl or csv)"
            ))),
        }
    }
}

/// Mnemonic of a query type (`A`, `AAAA`, ...; `TYPE123` otherwise).
pub fn qtype_name(t: u16) -> Cow<'static, str> {
    Cow::Borrowed(match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        43 => "DS",
        46 => "RRSIG",
        48 => "DNSKEY",
        52 => "TLSA",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        257 => "CAA",
        _ => return Cow::Owned(format!("TYPE{t}")),
    })
}

/// Mnemonic of a response code (`NOERROR`, `NXDOMAIN`, ...; `RCODE12`
/// otherwise).
pub fn rcode_name(r: u16) -> Cow<'static, str> {
    Cow::Borrowed(match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => return Cow::Owned(format!("RCODE{r}")),
    })
}

/// Schema version of the JSON Lines output, the `v` of every line. Within a
/// version fields are only ever added, never renamed, retyped or removed;
/// anything else is a new version. `docs/querylog-jsonl.md` lists the fields
/// (a test compares that list with what is written).
pub const JSONL_VERSION: u8 = 1;

/// The JSON Lines object: `v` ([`JSONL_VERSION`]), every [`Entry`] field,
/// `time` (RFC 3339), `type`, `rcode_name` and `ede` ([`logged_ede`], when
/// there is one). Parses back into an [`Entry`] with serde_json.
#[derive(Serialize)]
struct JsonRow<'a> {
    v: u8,
    time: &'a str,
    #[serde(rename = "type")]
    qtype_name: &'a str,
    rcode_name: &'a str,
    #[serde(flatten)]
    entry: JsonEntry<'a>,
}

/// The Extended DNS Error (RFC 8914) a logged answer carried, as far as the
/// entry tells (the DNS path's `pipeline::ede` decides what is sent): the log stores
/// no EDE of its own, so its format does not change for it.
///
/// Derivable: 18 Prohibited (refused client, default-deny group, tunnel action),
/// 15 Blocked with the list and line, 17 Filtered for rebinding, 3 Stale Answer.
/// Not derivable: a CNAME-cloaking or answer-rule block (17 on the wire) reads as
/// 15 with the rule that matched; a SERVFAIL's kind (22, 23 or 6) is not stored,
/// so a failed answer has none here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedEde {
    /// The INFO-CODE.
    pub code: u16,
    /// Its name in the IANA registry.
    pub name: &'static str,
    /// The EXTRA-TEXT.
    pub text: String,
}

/// [`LoggedEde`] of `e`, if it had one.
pub fn logged_ede(e: &Entry) -> Option<LoggedEde> {
    use super::entry::Origin;
    let ede = |code, name, text: String| Some(LoggedEde { code, name, text });
    let (rule, list) = (&*e.rule, &*e.list);
    match e.source {
        Origin::Refused => ede(18, "Prohibited", "client not allowed".into()),
        Origin::Stale => ede(3, "Stale Answer", String::new()),
        Origin::Blocked if rule.starts_with("tunnel") => ede(18, "Prohibited", "tunnel".into()),
        Origin::Blocked if rule == "not-allowlisted" => ede(
            18,
            "Prohibited",
            format!("not-allowlisted (group {})", e.group),
        ),
        Origin::Blocked if rule.starts_with("rebinding") => ede(
            17,
            "Filtered",
            "rebinding: private address for a public name".into(),
        ),
        Origin::Blocked => {
            let text = match (list, rule) {
                ("", _) => String::new(),
                (l, r) if l.starts_with("group ") => [l, r].join(" ").trim_end().to_owned(),
                (l, r) => format!("list \"{l}\" {r}").trim_end().to_owned(),
            };
            ede(15, "Blocked", text)
        }
        _ => None,
    }
}

/// A JSON object of an entry as the API serves it: the entry's fields plus
/// `ede` when it had one (parses back into an [`Entry`]).
#[derive(Serialize)]
pub struct JsonEntry<'a> {
    #[serde(flatten)]
    entry: &'a Entry,
    #[serde(skip_serializing_if = "Option::is_none")]
    ede: Option<LoggedEde>,
}

impl<'a> JsonEntry<'a> {
    /// `e` with its EDE.
    pub fn new(entry: &'a Entry) -> Self {
        Self {
            entry,
            ede: logged_ede(entry),
        }
    }
}

const TABLE_COLS: [(&str, usize); 10] = [
    ("TIME", 23),
    ("CLIENT", 15),
    ("TYPE", 5),
    ("NAME", 40),
    ("VERDICT", 11),
    ("F", 1),
    ("RCODE", 8),
    ("SOURCE", 16),
    ("LATENCY", 9),
    ("ANSWER", 0),
];

const CSV_HEADER: &str = "time,time_ms,client,name,qtype,type,verdict,flagged,rule,list,rcode,rcode_name,answer,source,latency_us,tunnel_score,group,client_name\n";

/// Writes entries one at a time in a given format.
pub struct EntryWriter<W: Write> {
    out: W,
    format: OutputFormat,
    line: String,
    header_done: bool,
    rows: u64,
}

fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        out.push('"');
        for c in s.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(s);
    }
}

impl<W: Write> EntryWriter<W> {
    /// A writer; the header (table, CSV) is written with the first row or by
    /// [`finish`](Self::finish).
    pub fn new(format: OutputFormat, out: W) -> EntryWriter<W> {
        EntryWriter {
            out,
            format,
            line: String::with_capacity(256),
            header_done: false,
            rows: 0,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if self.header_done {
            return Ok(());
        }
        self.header_done = true;
        match self.format {
            OutputFormat::Json => Ok(()),
            OutputFormat::Csv => self.out.write_all(CSV_HEADER.as_bytes()),
            OutputFormat::Table => {
                self.line.clear();
                for (name, w) in TABLE_COLS {
                    pad(&mut self.line, name, w);
                }
                let l = self.line.trim_end();
                writeln!(self.out, "{l}")
            }
        }
    }

    /// Write one entry.
    pub fn write(&mut self, e: &Entry) -> io::Result<()> {
        use std::fmt::Write as _;
        self.header()?;
        let line = &mut self.line;
        line.clear();
        match self.format {
            OutputFormat::Json => {
                let mut time = String::with_capacity(24);
                push_time(&mut time, e.time_ms, 'T', "Z");
                let row = JsonRow {
                    v: JSONL_VERSION,
                    time: &time,
                    qtype_name: &qtype_name(e.qtype),
                    rcode_name: &rcode_name(e.rcode),
                    entry: JsonEntry::new(e),
                };
                serde_json::to_writer(&mut self.out, &row)?;
                self.out.write_all(b"\n")?;
            }
            OutputFormat::Csv => {
                push_time(line, e.time_ms, 'T', "Z");
                let _ = write!(line, ",{},{},", e.time_ms, e.client);
                csv_field(line, &e.name);
                let _ = write!(
                    line,
                    ",{},{},{},{},",
                    e.qtype,
                    qtype_name(e.qtype),
                    e.verdict,
                    e.flagged
                );
                csv_field(line, &e.rule);
                line.push(',');
                csv_field(line, &e.list);
                let _ = write!(line, ",{},{},", e.rcode, rcode_name(e.rcode));
                csv_field(line, &e.answer);
                line.push(',');
                csv_field(line, &e.source.to_string());
                let _ = write!(line, ",{},{},", e.latency_us, e.tunnel_score);
                csv_field(line, &e.group);
                line.push(',');
                csv_field(line, &e.client_name);
                line.push('\n');
                self.out.write_all(line.as_bytes())?;
            }
            OutputFormat::Table => {
                let mut t = String::with_capacity(24);
                push_time(&mut t, e.time_ms, ' ', "");
                pad(line, &t, 23);
                // A named client shows by its name (agents share addresses).
                match &*e.client_name {
                    "" => pad(line, &e.client.to_string(), 15),
                    n => pad(line, n, 15),
                }
                pad(line, &qtype_name(e.qtype), 5);
                pad(line, &e.name, 40);
                pad(line, e.verdict.as_str(), 11);
                pad(line, if e.flagged { "!" } else { "" }, 1);
                pad(line, &rcode_name(e.rcode), 8);
                pad(line, &e.source.to_string(), 16);
                let lat = if e.latency_us >= 1000 {
                    format!("{:.1}ms", f64::from(e.latency_us) / 1000.0)
                } else {
                    format!("{}us", e.latency_us)
                };
                pad(line, &lat, 9);
                line.push_str(&e.answer);
                let l = line.trim_end();
                writeln!(self.out, "{l}")?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Write the header if no row was written, flush, and return the number
    /// of rows and the inner writer.
    pub fn finish(mut self) -> io::Result<(u64, W)> {
        self.header()?;
        self.out.flush()?;
        Ok((self.rows, self.out))
    }

    /// Flush the inner writer (after each batch in `--follow`).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn pad(line: &mut String, s: &str, width: usize) {
    line.push_str(s);
    let n = s.chars().count();
    for _ in n..width {
        line.push(' ');
    }
    line.push(' ');
}

/// Write every entry of `entries` to `out` in `format`; returns the row
/// count. Stops at the first error (from the iterator or the writer).
pub fn write_entries<I, W>(format: OutputFormat, entries: I, out: W) -> Result<u64, QueryLogError>
where
    I: IntoIterator<Item = Result<Entry, QueryLogError>>,
    W: Write,
{
    let mut w = EntryWriter::new(format, out);
    for e in entries {
        w.write(&e?)?;
    }
    Ok(w.finish()?.0)
}
