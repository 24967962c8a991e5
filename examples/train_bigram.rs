//! Generate `src/detect/data/bigram.bin`, the benign character-bigram model.
//!
//! Usage:
//! `cargo run --release --example train_bigram -- HOSTS.txt [--exclude FILE.csv]... [--out PATH]`
//!
//! `HOSTS.txt` holds one real host name per line (the project uses
//! `shared/blocklists/small-140k.domains.txt`: ad/tracker host names are
//! real, human-made names). Every label below the public suffix is counted
//! once per distinct name. Names listed in `--exclude` CSV files (first column
//! named `qname`) are skipped, so evaluation rows never leak into the model.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};

use dnsguard::detect::bigram::{SYMS, count_label, table_from_counts};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut input = None;
    let mut excludes = Vec::new();
    let mut out = String::from("src/detect/data/bigram.bin");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--exclude" => excludes.push(args.next().ok_or("--exclude needs a file")?),
            "--out" => out = args.next().ok_or("--out needs a path")?,
            _ => input = Some(a),
        }
    }
    let input = input.ok_or("usage: train_bigram HOSTS.txt [--exclude F.csv] [--out P]")?;

    let mut excluded = HashSet::new();
    for f in &excludes {
        let rd = BufReader::new(std::fs::File::open(f)?);
        let mut lines = rd.lines();
        let header = lines.next().transpose()?.unwrap_or_default();
        let col = header
            .split(',')
            .position(|h| h == "qname")
            .ok_or("exclude file has no qname column")?;
        for line in lines {
            let line = line?;
            if let Some(q) = line.split(',').nth(col) {
                excluded.insert(q.to_ascii_lowercase());
            }
        }
    }

    let mut seen = HashSet::new();
    let mut counts = [[0u64; SYMS]; SYMS];
    let (mut names, mut labels) = (0u64, 0u64);
    for line in BufReader::new(std::fs::File::open(&input)?).lines() {
        let line = line?;
        let name = line.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.starts_with('#') || excluded.contains(&name) {
            continue;
        }
        if !seen.insert(name.clone()) {
            continue;
        }
        let suffix_len = psl::suffix(name.as_bytes()).map_or(0, |s| s.as_bytes().len());
        let below = name[..name.len().saturating_sub(suffix_len)].trim_end_matches('.');
        for label in below.split('.').filter(|l| !l.is_empty()) {
            count_label(&mut counts, label.as_bytes());
            labels += 1;
        }
        names += 1;
    }
    let table = table_from_counts(&counts, 0.5);
    std::fs::write(&out, &table)?;
    eprintln!(
        "trained on {names} names, {labels} labels ({} excluded); wrote {} bytes to {out}",
        excluded.len(),
        table.len()
    );
    Ok(())
}
