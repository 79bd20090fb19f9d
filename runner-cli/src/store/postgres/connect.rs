//! Connections: the password (the URL, `PGPASSWORD`, `~/.pgpass`), what a broken
//! connection is, and errors as the user reads them.

use super::*;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

/// A break of the connection (the server went away, restarted, or shuts down): worth a
/// new connection, unlike an error of the statement.
pub(super) fn broken(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // 08: connection exception; 57P01-03: the server shuts down or starts.
        Some(c) => c.code().starts_with("08") || matches!(c.code(), "57P01" | "57P02" | "57P03"),
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

pub(super) fn is_broken(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(p) if broken(p))
}

/// The password for a connection that has none in its URL: `PGPASSWORD`, else the first
/// matching line of `~/.pgpass` (or `PGPASSFILE`), as libpq reads them.
pub(super) fn password_for(host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    if let Ok(p) = std::env::var("PGPASSWORD") {
        return Some(p);
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
    let meta = std::fs::metadata(&file).ok()?;
    {
        use std::os::unix::fs::PermissionsExt;
        // libpq ignores a password file that others can read.
        if meta.permissions().mode() & 0o077 != 0 {
            return None;
        }
    }
    let text = std::fs::read_to_string(&file).ok()?;
    pgpass_lookup(&text, host, port, db, user)
}

/// The password of the first line of a password file that matches.
pub(super) fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => cur.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let port = port.to_string();
        let want = [host, port.as_str(), db, user];
        if fields[..4].iter().zip(want).all(|(f, w)| f == "*" || f == w) {
            return Some(fields[4].clone());
        }
    }
    None
}

pub(super) fn lock_error(e: postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if c.code() == "55P03" => StoreError::Other(format!(
            "the experiment stayed locked by another worker for {LOCK_TIMEOUT}: is an optx frozen (stopped) while it writes?"
        )),
        _ => e.into(),
    }
}

pub(super) fn connect_error(shown: &str, e: &postgres::Error) -> StoreError {
    let why = match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(x) = src {
                s = x.to_string();
                src = x.source();
            }
            s
        }
    };
    let hint =
        if why.contains("password missing") { " (give it in the URL, in PGPASSWORD or in ~/.pgpass)" } else { "" };
    StoreError::Unusable(format!("cannot connect to {shown}: {why}{hint}"))
}
