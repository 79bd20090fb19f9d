//! What a trial printed, for the reason of a trial whose metric was not reported: the
//! names it did report, a line that looks like the metric in another format, and its last
//! lines, so that the fix is plain from the reason alone.

use std::path::Path;

/// Bytes of the end of stdout read for the hint.
const TAIL: u64 = 64 * 1024;

fn tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL)));
    let mut b = Vec::new();
    let _ = f.read_to_end(&mut b);
    String::from_utf8_lossy(&b).into_owned()
}

/// The hint for `missing` metrics from the trial's stdout (empty when it printed nothing).
pub fn missing_metrics(stdout: &Path, missing: &[&String]) -> String {
    let text = tail(stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "; stdout is empty".into();
    }
    let mut out = String::new();
    // The names of name=value pairs it printed.
    let pair = regex::Regex::new(r"(?:^|[\s,;{(])([A-Za-z_][A-Za-z0-9_./-]*)=[-+]?(?:[0-9]|\.[0-9]|inf|nan)").unwrap();
    let mut seen: Vec<String> = Vec::new();
    for l in &lines {
        for c in pair.captures_iter(l) {
            let name = c[1].to_string();
            if !seen.contains(&name) && seen.len() < 12 {
                seen.push(name);
            }
        }
    }
    if !seen.is_empty() {
        out += &format!("; stdout reported {}", seen.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "));
    }
    // The metric in a format that is not a report: `loss: 0.5`, `loss = 0.5`, `Loss 0.5`.
    for m in missing {
        let near = regex::Regex::new(&format!(
            r"(?i)(?:^|[^A-Za-z0-9_]){}\s*(:|=\s|\s=|\s)\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)",
            regex::escape(m)
        ))
        .unwrap();
        if let Some((line, c)) = lines.iter().rev().find_map(|l| near.captures(l).map(|c| (*l, c))) {
            let sep = c[1].trim();
            let regex =
                if sep.is_empty() { format!(r"{m}\s+([-+0-9.eE]+)") } else { format!(r"{m}\s*{sep}\s*([-+0-9.eE]+)") };
            out += &format!(
                "; a line `{}` looks like `{m}` but is not a report: print `{m}={}`, or read it with [metrics.{m}] regex = '{regex}'",
                line.trim(),
                &c[2]
            );
        }
    }
    let last = &lines[lines.len().saturating_sub(3)..];
    out += &format!("; stdout ends with:\n{}", last.join("\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(stdout: &str, missing: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stdout.log");
        std::fs::write(&p, stdout).unwrap();
        missing_metrics(&p, &[&missing.to_string()])
    }

    #[test]
    fn a_missing_metric_says_what_the_trial_printed_and_how_to_read_it() {
        let h = hint("starting\nepoch=1 acc=0.5\nloss: 0.5\ndone\n", "loss");
        assert!(h.contains("stdout reported `epoch`, `acc`"), "{h}");
        assert!(h.contains("a line `loss: 0.5` looks like `loss`"), "{h}");
        assert!(h.contains("print `loss=0.5`"), "{h}");
        assert!(h.contains(r"regex = 'loss\s*:\s*([-+0-9.eE]+)'"), "{h}");
        assert!(h.ends_with("stdout ends with:\nepoch=1 acc=0.5\nloss: 0.5\ndone"), "{h}");
        let h = hint("Final loss = 0.7\n", "loss");
        assert!(h.contains("print `loss=0.7`"), "{h}");
        assert!(h.contains(r"regex = 'loss\s*=\s*([-+0-9.eE]+)'"), "{h}");
        // The regex it suggests reads the line.
        let re = regex::Regex::new(r"loss\s*=\s*([-+0-9.eE]+)").unwrap();
        assert_eq!(&re.captures("Final loss = 0.7").unwrap()[1], "0.7");
        assert_eq!(hint("", "loss"), "; stdout is empty");
        assert!(!hint("accuracy=0.9\n", "loss").contains("looks like"));
    }
}
