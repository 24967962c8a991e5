//! Names dnsguard answers itself: `[local] records`, hosts files and the
//! special-use names that must never leave the box (`special.rs`).
//!
//! A name known here is answered authoritatively (records of the asked type, a CNAME
//! chain within local data, or NODATA); an unknown name goes on down the chain.
//! A and AAAA records also answer their reverse (PTR) names, as dnsmasq does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde::Deserialize;

use super::Answer;
use super::special::SpecialUse;

/// `[local]`: names dnsguard answers itself, like a hosts file for the network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Records as `"NAME TYPE VALUE"`, TYPE one of A, AAAA, CNAME, PTR.
    /// A and AAAA records also answer the matching reverse (PTR) query.
    pub records: Vec<String>,
    /// Hosts files (`/etc/hosts` format) whose entries are served like `records`.
    pub hosts_files: Vec<PathBuf>,
    /// TTL of local answers (seconds).
    pub ttl: u32,
    /// Answer NXDOMAIN to the DNS-bypass canaries (`use-application-dns.net`,
    /// `mask.icloud.com`, `mask-h2.icloud.com`) for every client, so browsers keep
    /// their lookups on dnsguard instead of their own encrypted DNS.
    pub bypass_canaries: bool,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            hosts_files: Vec::new(),
            ttl: 300,
            bypass_canaries: true,
        }
    }
}

/// One local record as written in the config: `NAME TYPE VALUE`.
#[derive(Debug, Clone)]
pub struct LocalRecord {
    name: Name,
    data: RData,
}

/// A local record or hosts line that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A `records` entry is malformed.
    #[error("{0}")]
    Record(String),
    /// A hosts file could not be read.
    #[error("cannot read hosts file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A hosts file line is malformed.
    #[error("{path}:{line}: {message}")]
    HostsLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl FromStr for LocalRecord {
    type Err = LocalError;

    fn from_str(s: &str) -> Result<Self, LocalError> {
        let err = |m: &str| LocalError::Record(format!("{s:?}: {m}"));
        let mut parts = s.split_whitespace();
        let (Some(name), Some(rtype), Some(value), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err("expected \"NAME TYPE VALUE\""));
        };
        let name = crate::name::parse_name(name).map_err(|e| err(&e))?;
        let data = match rtype.to_ascii_uppercase().as_str() {
            "A" => RData::A(A(value
                .parse()
                .map_err(|_| err("A needs an IPv4 address"))?)),
            "AAAA" => RData::AAAA(AAAA(
                value
                    .parse()
                    .map_err(|_| err("AAAA needs an IPv6 address"))?,
            )),
            "CNAME" => RData::CNAME(CNAME(crate::name::parse_name(value).map_err(|e| err(&e))?)),
            "PTR" => RData::PTR(PTR(crate::name::parse_name(value).map_err(|e| err(&e))?)),
            _ => return Err(err("TYPE must be A, AAAA, CNAME or PTR")),
        };
        Ok(Self { name, data })
    }
}

/// The compiled local data, looked up by name text (lower case, no trailing dot).
#[derive(Debug, Default)]
pub struct LocalRecords {
    by_name: HashMap<String, Vec<Record>>,
    nxdomain: Vec<String>,
    special: SpecialUse,
    ttl: u32,
}

impl LocalRecords {
    /// Builds the table from config records and hosts files; names under
    /// `forwarded` zones go to their conditional forwarder even when special-use.
    pub fn build<I, S>(cfg: &LocalConfig, forwarded: I) -> Result<Self, LocalError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut me = Self {
            special: SpecialUse::new(forwarded),
            ttl: cfg.ttl,
            ..Self::default()
        };
        for line in &cfg.records {
            let rec: LocalRecord = line.parse()?;
            me.add(rec.name, rec.data, cfg.ttl);
        }
        for path in &cfg.hosts_files {
            me.add_hosts_file(path, cfg.ttl)?;
        }
        if cfg.bypass_canaries {
            for line in crate::lists::BYPASS_CANARIES.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let name = crate::name::parse_name(line).map_err(LocalError::Record)?;
                me.nxdomain.push(crate::name::name_text(&name));
            }
        }
        Ok(me)
    }

    /// True for a bypass canary (the name or anything below it), answered NXDOMAIN.
    /// Checked before the filter: a group's block mode must not turn the signal into
    /// a null address.
    pub fn is_canary(&self, name: &str) -> bool {
        self.nxdomain.iter().any(|c| crate::name::is_under(name, c))
    }

    fn add_hosts_file(&mut self, path: &Path, ttl: u32) -> Result<(), LocalError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LocalError::Read {
            path: shown.clone(),
            source,
        })?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            let Some(first) = words.next() else { continue };
            let bad = |message: String| LocalError::HostsLine {
                path: shown.clone(),
                line: i + 1,
                message,
            };
            let ip: IpAddr = first
                .parse()
                .map_err(|_| bad(format!("{first:?} is not an IP address")))?;
            for host in words {
                let name = crate::name::parse_name(host).map_err(bad)?;
                let data = match ip {
                    IpAddr::V4(v4) => RData::A(A(v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                };
                self.add(name, data, ttl);
            }
        }
        Ok(())
    }

    fn add(&mut self, name: Name, data: RData, ttl: u32) {
        let reverse = match &data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        };
        if let Some(ip) = reverse {
            let ptr = Name::from(ip);
            let rec = Record::from_rdata(ptr.clone(), ttl, RData::PTR(PTR(name.clone())));
            let entry = self
                .by_name
                .entry(crate::name::name_text(&ptr))
                .or_default();
            if !entry.iter().any(|r| r.data == rec.data) {
                entry.push(rec);
            }
        }
        let rec = Record::from_rdata(name.clone(), ttl, data);
        self.by_name
            .entry(crate::name::name_text(&name))
            .or_default()
            .push(rec);
    }

    /// Number of names known.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when there is no local data.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The answer for `name`/`qtype` if the name is local, following CNAMEs within
    /// local data; `None` if the name is not local.
    pub fn answer(&self, name: &str, qtype: RecordType) -> Option<Answer> {
        let Some(mut records) = self.by_name.get(name) else {
            return self.special.answer(name, qtype, self.ttl);
        };
        let mut answer = Answer::empty(ResponseCode::NoError);
        for _ in 0..8 {
            let matching: Vec<&Record> = records
                .iter()
                .filter(|r| r.record_type() == qtype || qtype == RecordType::ANY)
                .collect();
            if !matching.is_empty() {
                answer.answers.extend(matching.into_iter().cloned());
                return Some(answer);
            }
            let cname = records
                .iter()
                .find(|r| r.record_type() == RecordType::CNAME);
            let Some(cname) = cname else {
                return Some(answer); // NODATA (or the end of a local CNAME chain)
            };
            answer.answers.push(cname.clone());
            let RData::CNAME(target) = &cname.data else {
                return Some(answer);
            };
            match self.by_name.get(&crate::name::name_text(&target.0)) {
                Some(next) => records = next,
                None => return Some(answer),
            }
        }
        Some(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(s: &str) -> String {
        crate::name::name_text(&Name::from_ascii(s).unwrap())
    }

    #[test]
    fn answers_records_reverse_and_chains() {
        let cfg = LocalConfig {
            records: vec![
                "nas.lan A 192.168.1.10".into(),
                "nas.lan AAAA fd00::10".into(),
                "files.lan CNAME nas.lan".into(),
            ],
            ..LocalConfig::default()
        };
        let local = LocalRecords::build(&cfg, [""; 0]).unwrap();
        let a = local.answer(&lower("NAS.lan."), RecordType::A).unwrap();
        assert_eq!(a.answers.len(), 1);
        assert_eq!(
            a.answers[0].data,
            RData::A(A("192.168.1.10".parse().unwrap()))
        );
        let chain = local
            .answer(&lower("files.lan."), RecordType::AAAA)
            .unwrap();
        assert_eq!(chain.answers.len(), 2);
        assert_eq!(chain.answers[0].record_type(), RecordType::CNAME);
        let ptr = local
            .answer(&lower("10.1.168.192.in-addr.arpa."), RecordType::PTR)
            .unwrap();
        assert_eq!(
            ptr.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("nas.lan.").unwrap()))
        );
        let nodata = local.answer(&lower("nas.lan."), RecordType::MX).unwrap();
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.rcode, ResponseCode::NoError);
        assert!(local.answer(&lower("other.lan."), RecordType::A).is_none());
    }

    #[test]
    fn bad_records_and_hosts_lines_are_clear_errors() {
        for bad in [
            "nas.lan A",
            "nas.lan A 1.2.3",
            "nas.lan MX 1.2.3.4",
            "nas.lan A 1.2.3.4 x",
        ] {
            assert!(bad.parse::<LocalRecord>().is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "# c\n10.0.0.1 a.lan b.lan\nnot-an-ip x\n").unwrap();
        let cfg = LocalConfig {
            hosts_files: vec![hosts],
            ..LocalConfig::default()
        };
        let e = LocalRecords::build(&cfg, [""; 0]).unwrap_err().to_string();
        assert!(e.ends_with(":3: \"not-an-ip\" is not an IP address"), "{e}");
    }
}
