//! A query-log request in text form: what `dnsguard query-log` / `stats` take on
//! the command line and what `/api/v1/querylog` / `/api/v1/stats` take as query
//! parameters. One type for both, so the CLI and the HTTP API cannot disagree.

use serde::{Deserialize, Serialize};

use super::{Criteria, Order, OutputFormat, QueryLogError, RulingFilter, parse_since};

/// Filters and output options for listing entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LogRequest {
    /// Start: a duration back from now (`30m`, `12h`, `7d`, `2w`) or an RFC 3339 time.
    pub since: Option<String>,
    /// End (exclusive), same forms as `since`; default now.
    pub until: Option<String>,
    /// Client IP or CIDR.
    pub client: Option<String>,
    /// Domain: `.example.com` for the name and everything below it, else a substring.
    pub domain: Option<String>,
    /// Only blocked queries.
    pub blocked: bool,
    /// Only allowed (and allowlisted) queries.
    pub allowed: bool,
    /// Only queries flagged by tunnel detection.
    pub flagged: bool,
    /// At most this many entries.
    pub limit: Option<usize>,
    /// `table`, `json` or `csv`.
    pub format: Option<String>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
}

impl LogRequest {
    /// The store filter, with times resolved against `now_ms`.
    pub fn filter(&self, now_ms: u64) -> Result<Criteria, QueryLogError> {
        if self.blocked && self.allowed {
            return Err(QueryLogError::Parse(
                "--blocked and --allowed exclude each other".into(),
            ));
        }
        let mut f = Criteria {
            since_ms: self
                .since
                .as_deref()
                .map(|s| parse_since(s, now_ms))
                .transpose()?,
            until_ms: self
                .until
                .as_deref()
                .map(|s| parse_since(s, now_ms))
                .transpose()?,
            domain: self.domain.as_deref().map(super::DomainPattern::new),
            verdict: match (self.blocked, self.allowed) {
                (true, _) => RulingFilter::Blocked,
                (_, true) => RulingFilter::Allowed,
                _ => RulingFilter::Any,
            },
            flagged_only: self.flagged,
            limit: self.limit,
            order: if self.oldest_first {
                Order::OldestFirst
            } else {
                Order::NewestFirst
            },
            ..Criteria::default()
        };
        if let Some(c) = &self.client {
            f = f.with_client(c)?;
        }
        if let (Some(s), Some(u)) = (f.since_ms, f.until_ms)
            && s >= u
        {
            return Err(QueryLogError::Parse(format!(
                "--since ({}) is not before --until ({})",
                super::format_time(s),
                super::format_time(u)
            )));
        }
        Ok(f)
    }

    /// The output format.
    pub fn format(&self) -> Result<OutputFormat, QueryLogError> {
        self.format.as_deref().unwrap_or("table").parse()
    }
}

/// The period and size of `dnsguard stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsRequest {
    /// Start, as in [`LogRequest::since`]; default 24 hours back.
    pub since: Option<String>,
    /// End, as in [`LogRequest::until`]; default now.
    pub until: Option<String>,
    /// Length of the top lists (default 10).
    pub top: Option<usize>,
}

impl StatsRequest {
    /// (since, until, top) resolved against `now_ms`.
    pub fn resolve(&self, now_ms: u64) -> Result<(u64, u64, usize), QueryLogError> {
        let since = parse_since(self.since.as_deref().unwrap_or("24h"), now_ms)?;
        let until = match &self.until {
            Some(u) => parse_since(u, now_ms)?,
            None => now_ms + 1,
        };
        if since >= until {
            return Err(QueryLogError::Parse("--since is not before --until".into()));
        }
        Ok((since, until, self.top.unwrap_or(10).clamp(1, 1000)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_filters_and_reports_bad_input() {
        let now = 1_800_000_000_000;
        let r = LogRequest {
            since: Some("7d".into()),
            client: Some("10.0.0.0/8".into()),
            blocked: true,
            limit: Some(5),
            ..LogRequest::default()
        };
        let f = r.filter(now).unwrap();
        assert_eq!(f.since_ms, Some(now - 7 * 86_400_000));
        assert_eq!(f.verdict, RulingFilter::Blocked);
        assert_eq!(f.limit, Some(5));
        for bad in [
            LogRequest {
                since: Some("7x".into()),
                ..LogRequest::default()
            },
            LogRequest {
                client: Some("10.0.0.0/99".into()),
                ..LogRequest::default()
            },
            LogRequest {
                blocked: true,
                allowed: true,
                ..LogRequest::default()
            },
            LogRequest {
                since: Some("1h".into()),
                until: Some("2h".into()),
                ..LogRequest::default()
            },
        ] {
            assert!(bad.filter(now).is_err(), "{bad:?}");
        }
        let e = LogRequest {
            since: Some("7x".into()),
            ..LogRequest::default()
        }
        .filter(now)
        .unwrap_err()
        .to_string();
        assert!(e.contains("7x"), "{e}");
        assert!(
            LogRequest {
                format: Some("xml".into()),
                ..LogRequest::default()
            }
            .format()
            .is_err()
        );
        let (s, u, top) = StatsRequest::default().resolve(now).unwrap();
        assert_eq!((now - s, u, top), (86_400_000, now + 1, 10));
    }
}
