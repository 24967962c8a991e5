//! Estimate the per-name false-positive rate on a list of real host names,
//! skipping the names the bigram model was trained on.
//!
//! `cargo run --release --example fpr_hostlist -- HOSTS.txt [TRAINED.txt] [--show N]`
//!
//! The project uses `shared/blocklists/big-1.6m.domains.txt` minus
//! `small-140k.domains.txt` (the training list): ad/tracker host names that
//! the model never saw, including many hash-named tracker hosts, so it is a
//! pessimistic estimate for ordinary traffic.

use std::collections::HashSet;
use std::io::BufRead;

use dnsguard::detect::{DetectConfig, Detector};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut files = Vec::new();
    let mut show = 20usize;
    while let Some(a) = args.next() {
        if a == "--show" {
            show = args.next().ok_or("--show needs a number")?.parse()?;
        } else {
            files.push(a);
        }
    }
    let hosts = files
        .first()
        .ok_or("usage: fpr_hostlist HOSTS.txt [TRAINED.txt]")?;
    let skip: HashSet<String> = match files.get(1) {
        Some(f) => std::io::BufReader::new(std::fs::File::open(f)?)
            .lines()
            .collect::<Result<_, _>>()?,
        None => HashSet::new(),
    };
    let det = Detector::new(&DetectConfig::default())?;
    let (mut n, mut flagged) = (0u64, 0u64);
    for line in std::io::BufReader::new(std::fs::File::open(hosts)?).lines() {
        let line = line?;
        let name = line.trim();
        if name.is_empty() || skip.contains(name) {
            continue;
        }
        n += 1;
        let s = det.score_name(name, 1);
        if s.flagged {
            flagged += 1;
            if flagged as usize <= show {
                println!("{:5.2}  {name}  [{}]", s.value, s.reasons.display_for(name));
            }
        }
    }
    println!(
        "flagged {flagged} of {n} names: FPR {:.4}%",
        flagged as f64 * 100.0 / n.max(1) as f64
    );
    Ok(())
}
