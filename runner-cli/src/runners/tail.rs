//! Following a trial's `stdout.log` as it grows, for the reports in it.
//!
//! A trial may rewrite its output file (reopening `/dev/stdout` truncates it): the tail
//! notices a file that shrank, or whose bytes before the read position changed, and reads
//! it again from the start, so that the values it reports last are the ones kept. The
//! points of a learning curve that the store already holds (a trial re-attached after a
//! restart of optx reads its output from the start again) are skipped, not sent twice.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use super::output::{MetricPoint, OutputParser};

/// Reads of the output are this big at most, whatever a trial prints.
pub(super) const TAIL_CHUNK: usize = 64 * 1024;
/// A line longer than this is not a report: it is skipped, not buffered.
pub(super) const MAX_LINE: usize = 1024 * 1024;
/// How many bytes before the read position are compared to notice a rewritten file.
const FINGERPRINT: usize = 64;

pub struct Tail {
    path: PathBuf,
    offset: u64,
    /// The last bytes read (up to FINGERPRINT), which must still be there at the next read.
    seen: Vec<u8>,
    /// The line being read (bytes after the last newline).
    partial: Vec<u8>,
    /// The current line is over MAX_LINE: skip to its end.
    skipping: bool,
    /// Points of learning curves already stored, not to be sent again.
    skip_points: usize,
    pub parser: OutputParser,
}

impl Tail {
    pub(super) fn new(path: PathBuf, parser: OutputParser, skip_points: usize) -> Tail {
        Tail { path, offset: 0, seen: Vec::new(), partial: Vec::new(), skipping: false, skip_points, parser }
    }

    /// Whether the file still holds what was read from it; if not, start again.
    fn check_rewritten(&mut self, f: &mut std::fs::File) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut rewritten = len < self.offset;
        if !rewritten && !self.seen.is_empty() {
            let mut now = vec![0u8; self.seen.len()];
            let at = self.offset - self.seen.len() as u64;
            rewritten = f.seek(SeekFrom::Start(at)).is_err() || f.read_exact(&mut now).is_err() || now != self.seen;
        }
        if rewritten {
            tracing::debug!(path = %self.path.display(), "the output was rewritten: reading it from the start");
            self.offset = 0;
            self.seen.clear();
            self.partial.clear();
            self.skipping = false;
        }
    }

    /// New points since the last read; at the end, also the unterminated last line.
    pub(super) fn read(&mut self, at_end: bool) -> Vec<MetricPoint> {
        let mut points = Vec::new();
        let Ok(mut f) = std::fs::File::open(&self.path) else { return points };
        self.check_rewritten(&mut f);
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return points;
        }
        let mut chunk = vec![0u8; TAIL_CHUNK];
        loop {
            let n = match f.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.offset += n as u64;
            let keep = self.seen.len().min(FINGERPRINT.saturating_sub(n));
            self.seen.drain(..self.seen.len() - keep);
            self.seen.extend_from_slice(&chunk[n.saturating_sub(FINGERPRINT)..n]);
            self.feed(&chunk[..n], &mut points);
        }
        if at_end && !self.partial.is_empty() && !self.skipping {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            points.extend(self.parser.line(&line));
        }
        if at_end {
            self.partial.clear();
        }
        points
    }

    /// The points of learning curves among `points` that are not stored yet.
    pub(super) fn curve(&mut self, points: Vec<MetricPoint>) -> Vec<MetricPoint> {
        let mut out = Vec::new();
        for p in points.into_iter().filter(|p| p.progression.is_some()) {
            // Only finite values are stored, so only they were counted.
            if self.skip_points > 0 && p.mean.is_finite() {
                self.skip_points -= 1;
                continue;
            }
            out.push(p);
        }
        out
    }

    fn feed(&mut self, mut bytes: &[u8], points: &mut Vec<MetricPoint>) {
        while let Some(nl) = bytes.iter().position(|b| *b == b'\n') {
            if !self.skipping {
                self.partial.extend_from_slice(&bytes[..nl]);
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                points.extend(self.parser.line(&line));
            }
            self.partial.clear();
            self.skipping = false;
            bytes = &bytes[nl + 1..];
        }
        if !self.skipping {
            self.partial.extend_from_slice(bytes);
            if self.partial.len() > MAX_LINE {
                self.partial.clear();
                self.skipping = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::domain::MetricRule;

    fn tail(dir: &Path, skip: usize) -> Tail {
        let mut m = BTreeMap::new();
        m.insert("f".to_string(), MetricRule::Default);
        Tail::new(dir.join("out"), OutputParser::new(&m, "step"), skip)
    }

    fn means(points: &[MetricPoint]) -> Vec<f64> {
        points.iter().map(|p| p.mean).collect()
    }

    #[test]
    fn the_tail_follows_growing_output_across_chunks_and_skips_monster_lines() {
        let d = tempfile::tempdir().unwrap();
        let mut t = tail(d.path(), 0);
        let mut text = String::from("f=1 step=1\n");
        text.push_str(&"x".repeat(3 * MAX_LINE));
        text.push_str(" f=99\nf=2 step=2\nf=3");
        std::fs::write(d.path().join("out"), &text[..TAIL_CHUNK + 10]).unwrap();
        let first = t.read(false);
        assert_eq!(first.len(), 1);
        std::fs::write(d.path().join("out"), &text).unwrap();
        let rest = t.read(false);
        assert_eq!(means(&rest), vec![2.0], "the monster line is skipped");
        assert!(t.partial.len() <= MAX_LINE);
        let end = t.read(true);
        assert_eq!(means(&end), vec![3.0], "the last line counts at the end");
    }

    #[test]
    fn a_rewritten_output_is_read_again_even_at_the_same_length() {
        let d = tempfile::tempdir().unwrap();
        let mut t = tail(d.path(), 0);
        std::fs::write(d.path().join("out"), "f=1\n").unwrap();
        assert_eq!(means(&t.read(false)), vec![1.0]);
        // Reopened with truncation, the same number of bytes written again.
        std::fs::write(d.path().join("out"), "f=4\n").unwrap();
        assert_eq!(means(&t.read(true)), vec![4.0]);
        assert_eq!(t.parser.last["f"].mean, 4.0);
        // Shorter than before.
        let mut t = tail(d.path(), 0);
        std::fs::write(d.path().join("out"), "f=10\nf=11\n").unwrap();
        assert_eq!(means(&t.read(false)), vec![10.0, 11.0]);
        std::fs::write(d.path().join("out"), "f=5\n").unwrap();
        assert_eq!(means(&t.read(false)), vec![5.0]);
        // Growth alone is not a rewrite.
        std::fs::write(d.path().join("out"), "f=5\nf=6\n").unwrap();
        assert_eq!(means(&t.read(false)), vec![6.0]);
    }

    #[test]
    fn points_already_stored_are_not_sent_again() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("out"), "f=1 step=1\nf=nan step=2\nf=3 step=3\nf=4 step=4\nf=9\n").unwrap();
        let mut t = tail(d.path(), 2);
        let points = t.read(true);
        assert_eq!(means(&t.curve(points))[1..], [4.0], "1 and 3 were stored; nan never is");
    }
}
