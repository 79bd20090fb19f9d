//! Where an experiment's store is: a file (the embedded SQLite store) or a server database
//! (PostgreSQL), named by a URL. Pure: parsing and showing, no I/O.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// One SQLite file per experiment.
    File(PathBuf),
    /// A PostgreSQL database: `url` as given (it may hold a password, so it is never shown
    /// as it is), and the experiment, whose tables are a schema of that name in it (none:
    /// the database's only experiment, for commands that read one).
    Server { url: String, experiment: Option<String> },
}

/// The URL schemes of a server store.
const SCHEMES: [&str; 2] = ["postgresql://", "postgres://"];

/// Whether `s` names a server store (a `postgresql://` URL) rather than a file.
pub fn is_server_url(s: &str) -> bool {
    SCHEMES.iter().any(|p| s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p))
}

impl StoreLocation {
    /// A store named on the command line or in a file: a URL, or a path (relative to `base`).
    pub fn parse(s: &str, base: &Path) -> StoreLocation {
        if is_server_url(s) {
            let (url, experiment) = split_experiment(s);
            StoreLocation::Server { url, experiment }
        } else {
            StoreLocation::File(base.join(s))
        }
    }

    /// The file of a file store.
    pub fn file(&self) -> Option<&Path> {
        match self {
            StoreLocation::File(p) => Some(p),
            StoreLocation::Server { .. } => None,
        }
    }

    /// A server store names `name` as its experiment unless its URL named one.
    pub fn for_experiment(self, name: &str) -> StoreLocation {
        match self {
            StoreLocation::Server { url, experiment: None } => {
                StoreLocation::Server { url, experiment: Some(name.to_string()) }
            }
            other => other,
        }
    }
}

/// Split our own `experiment=NAME` query parameter off a URL (the database client does not
/// know it).
fn split_experiment(s: &str) -> (String, Option<String>) {
    let Some((base, query)) = s.split_once('?') else { return (s.to_string(), None) };
    let mut experiment = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("experiment=") {
            Some(v) => {
                experiment = Some(percent_decode(v));
                false
            }
            None => !kv.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    (url, experiment)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL with its password, if any, replaced by `***`: the form every message shows.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    // As the client reads a URL: the credentials run to the first `@`, wherever it is (a
    // password may hold `/` or `?`).
    let Some(at) = rest.find('@') else {
        return redact_query(url);
    };
    let userinfo = &rest[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => userinfo.to_string(),
    };
    redact_query(&format!("{}{shown}{}", &url[..scheme_end], &rest[at..]))
}

/// A `password=` query parameter, hidden too.
fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_string() };
    let q: Vec<String> = query
        .split('&')
        .map(|kv| if kv.starts_with("password=") { "password=***".to_string() } else { kv.to_string() })
        .collect();
    format!("{base}?{}", q.join("&"))
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::File(p) => write!(f, "{}", p.display()),
            StoreLocation::Server { url, experiment: None } => f.write_str(&redact_url(url)),
            StoreLocation::Server { url, experiment: Some(e) } => {
                let sep = if url.contains('?') { '&' } else { '?' };
                write!(f, "{}{sep}experiment={e}", redact_url(url))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_a_server_store_and_its_password_is_never_shown() {
        let l =
            StoreLocation::parse("postgresql://ann:s3cret@db:5432/lab?experiment=hm6&sslmode=disable", Path::new("/x"));
        assert_eq!(
            l,
            StoreLocation::Server {
                url: "postgresql://ann:s3cret@db:5432/lab?sslmode=disable".into(),
                experiment: Some("hm6".into())
            }
        );
        let shown = l.to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(shown, "postgresql://ann:***@db:5432/lab?sslmode=disable&experiment=hm6");
        assert_eq!(redact_url("postgres://db/lab?password=x&user=a"), "postgres://db/lab?password=***&user=a");
        assert_eq!(redact_url("postgresql://a@db/lab"), "postgresql://a@db/lab");
        assert_eq!(redact_url("postgresql://ann:pa/s?s@db/lab"), "postgresql://ann:***@db/lab");
        assert_eq!(StoreLocation::parse("x.db", Path::new("/base")), StoreLocation::File("/base/x.db".into()));
        assert!(is_server_url("POSTGRES://h/d") && !is_server_url("postgres.db"));
    }
}
