//! CLI parsing helpers: durations (`90s`, `30m`, `12h`, `7d`, `2w`, and
//! sums like `1h30m`) and RFC 3339 times, to unix milliseconds.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::QueryLogError;

/// Parse a duration like `90s`, `30m`, `12h`, `7d`, `2w` or `1h30m` into
/// milliseconds. Units: `ms`, `s`, `m`, `h`, `d`, `w`.
pub fn parse_duration(input: &str) -> Result<u64, QueryLogError> {
    let err = |why: &str| {
        QueryLogError::Parse(format!(
            "invalid duration {input:?}: {why} (expected e.g. 90s, 30m, 12h, 7d, 2w)"
        ))
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        let ulen = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..ulen] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[ulen..];
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| err("too large"))?;
    }
    Ok(total)
}

/// Parse an RFC 3339 time (`2026-11-25T10:00:00Z`,
/// `2026-11-25T10:00:00.5+01:00`) into unix milliseconds.
pub fn parse_time(input: &str) -> Result<u64, QueryLogError> {
    let t = OffsetDateTime::parse(input.trim(), &Rfc3339).map_err(|e| {
        QueryLogError::Parse(format!(
            "invalid time {input:?}: {e} (expected RFC 3339 like 2026-11-25T10:00:00Z)"
        ))
    })?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms)
        .map_err(|_| QueryLogError::Parse(format!("invalid time {input:?}: before 1970")))
}

/// Parse a `--since` / `--until` value: a duration means that long before
/// `now_ms`, otherwise an RFC 3339 time.
pub fn parse_since(input: &str, now_ms: u64) -> Result<u64, QueryLogError> {
    let s = input.trim();
    if s.starts_with(|c: char| c.is_ascii_digit()) && !s.contains('-') {
        return parse_duration(s).map(|d| now_ms.saturating_sub(d));
    }
    parse_time(s).map_err(|_| {
        QueryLogError::Parse(format!(
            "invalid time {input:?}: expected a duration like 30m, 12h, 7d, 2w or an RFC 3339 time like 2026-11-25T10:00:00Z"
        ))
    })
}

/// Format unix ms as RFC 3339 UTC with milliseconds
/// (`2026-11-25T10:00:00.123Z`).
pub fn format_time(ms: u64) -> String {
    let mut s = String::with_capacity(24);
    push_time(&mut s, ms, 'T', "Z");
    s
}

/// Append `YYYY-MM-DD<sep>HH:MM:SS.mmm<suffix>` (UTC) to `out`.
pub(crate) fn push_time(out: &mut String, ms: u64, sep: char, suffix: &str) {
    use std::fmt::Write;
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}.{:03}{suffix}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    );
}
