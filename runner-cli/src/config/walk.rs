//! A walker over the spanned TOML tree that collects every error with its position.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::ConfigError;

pub type SV<'i> = Spanned<DeValue<'i>>;

/// Collects errors against one source text.
pub struct Ctx<'s> {
    pub src: &'s str,
    pub file: String,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
    /// Where each line starts, found once: positions cost a search, not a scan of the file.
    lines: Vec<usize>,
}

impl<'s> Ctx<'s> {
    pub fn new(src: &'s str, file: String) -> Self {
        let lines = std::iter::once(0).chain(src.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Ctx { src, file, errors: Vec::new(), warnings: Vec::new(), lines }
    }

    pub fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = self.line_col(span.start);
        self.errors.push(ConfigError { file: self.file.clone(), line, col, message: message.into() });
    }

    /// Something allowed that is likely a mistake.
    pub fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = self.line_col(span.start);
        self.warnings.push(ConfigError { file: self.file.clone(), line, col, message: message.into() });
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.src.len());
        while !self.src.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.lines.partition_point(|&start| start <= offset);
        let start = self.lines[line - 1];
        (line, self.src[start..offset].chars().count() + 1)
    }
}

/// 1-based line and column (in characters) of a byte offset.
#[cfg(test)]
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    Ctx::new(src, String::new()).line_col(offset)
}

/// The closest of `known` to `key`, if close enough to be a likely typo.
pub fn suggest<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::levenshtein(key, k), k))
        .filter(|(d, k)| {
            *d <= (k.len().max(key.len()) / 3).max(1)
                || (k.starts_with(key) && key.len() >= 3)
                || (key.starts_with(k) && k.len() >= 3)
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

pub fn did_you_mean<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    match suggest(key, known) {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

/// One TOML table being read: its dotted name and entries.
pub struct Table<'a, 'i> {
    pub name: String,
    pub span: Range<usize>,
    pub entries: Vec<(&'a str, Range<usize>, &'a SV<'i>)>,
}

impl<'a, 'i> Table<'a, 'i> {
    pub fn from_de(name: &str, span: Range<usize>, t: &'a DeTable<'i>) -> Self {
        let entries = t.iter().map(|(k, v)| (k.get_ref().as_ref(), k.span(), v)).collect();
        Table { name: name.to_string(), span, entries }
    }

    /// Read `v` as a table, or report that it must be one.
    pub fn of(ctx: &mut Ctx, name: &str, v: &'a SV<'i>) -> Option<Self> {
        match v.get_ref() {
            DeValue::Table(t) => Some(Table::from_de(name, v.span(), t)),
            other => {
                ctx.err(v.span(), format!("`{name}` must be a table, not {}", kind(other)));
                None
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a SV<'i>> {
        self.entries.iter().find(|(k, _, _)| *k == key).map(|(_, _, v)| *v)
    }

    pub fn key_span(&self, key: &str) -> Range<usize> {
        self.entries.iter().find(|(k, _, _)| *k == key).map(|(_, s, _)| s.clone()).unwrap_or_else(|| self.span.clone())
    }

    /// The dotted path of a key, for messages: `orchestration.parallelism`.
    pub fn path(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    /// Report unknown keys (with a suggestion) and keys of a later version.
    pub fn check_keys(&self, ctx: &mut Ctx, known: &[&str], later: &[(&str, &str)]) {
        for (k, span, _) in &self.entries {
            if known.contains(k) {
                continue;
            }
            if let Some((_, why)) = later.iter().find(|(l, _)| l == k) {
                ctx.err(span.clone(), format!("`{}` is not supported yet: {why}", self.path(k)));
                continue;
            }
            let all = known.iter().copied().chain(later.iter().map(|(l, _)| *l));
            let where_ =
                if self.name.is_empty() { "at the top level".to_string() } else { format!("in `[{}]`", self.name) };
            ctx.err(span.clone(), format!("unknown key `{k}` {where_}{}", did_you_mean(k, all)));
        }
    }

    pub fn require(&self, ctx: &mut Ctx, key: &str) -> Option<&'a SV<'i>> {
        let v = self.get(key);
        if v.is_none() {
            let at = if self.name.is_empty() { String::new() } else { format!(" in `[{}]`", self.name) };
            ctx.err(self.span.clone(), format!("missing key `{key}`{at}"));
        }
        v
    }

    pub fn str(&self, ctx: &mut Ctx, key: &str) -> Option<&'a str> {
        self.get(key).and_then(|v| as_str(ctx, v, &self.path(key)))
    }

    pub fn bool(&self, ctx: &mut Ctx, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| as_bool(ctx, v, &self.path(key)))
    }

    /// A number that must satisfy `ok`, described by `what` ("a positive integer").
    pub fn f64_where(&self, ctx: &mut Ctx, key: &str, what: &str, ok: impl Fn(f64) -> bool) -> Option<f64> {
        let v = self.get(key)?;
        let x = as_f64(ctx, v, &self.path(key))?;
        if ok(x) {
            Some(x)
        } else {
            ctx.err(v.span(), format!("`{}` must be {what}, not {x}", self.path(key)));
            None
        }
    }

    pub fn i64_where(&self, ctx: &mut Ctx, key: &str, what: &str, ok: impl Fn(i64) -> bool) -> Option<i64> {
        let v = self.get(key)?;
        let x = as_i64(ctx, v, &self.path(key))?;
        if ok(x) {
            Some(x)
        } else {
            ctx.err(v.span(), format!("`{}` must be {what}, not {x}", self.path(key)));
            None
        }
    }

    /// A string that must be one of `options`.
    pub fn one_of(&self, ctx: &mut Ctx, key: &str, options: &[&str]) -> Option<&'a str> {
        let v = self.get(key)?;
        let s = as_str(ctx, v, &self.path(key))?;
        if options.contains(&s) {
            Some(s)
        } else {
            let list = options.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(", ");
            ctx.err(
                v.span(),
                format!(
                    "`{}` must be one of {list}, not \"{s}\"{}",
                    self.path(key),
                    did_you_mean(s, options.iter().copied())
                ),
            );
            None
        }
    }
}

pub fn kind(v: &DeValue) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

pub fn parse_int(v: &DeValue) -> Option<i64> {
    match v {
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok(),
        _ => None,
    }
}

pub fn parse_float(v: &DeValue) -> Option<f64> {
    match v {
        DeValue::Float(f) => f.as_str().replace('_', "").parse().ok(),
        other => parse_int(other).map(|i| i as f64),
    }
}

pub fn as_str<'a>(ctx: &mut Ctx, v: &'a SV, what: &str) -> Option<&'a str> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        other => {
            ctx.err(v.span(), format!("`{what}` must be a string, not {}", kind(other)));
            None
        }
    }
}

pub fn as_f64(ctx: &mut Ctx, v: &SV, what: &str) -> Option<f64> {
    match parse_float(v.get_ref()) {
        Some(x) => Some(x),
        None => {
            ctx.err(v.span(), format!("`{what}` must be a number, not {}", kind(v.get_ref())));
            None
        }
    }
}

pub fn as_i64(ctx: &mut Ctx, v: &SV, what: &str) -> Option<i64> {
    match parse_int(v.get_ref()) {
        Some(x) => Some(x),
        None => {
            ctx.err(v.span(), not_an_integer(v.get_ref(), what));
            None
        }
    }
}

/// Why a value is not a usable integer: another kind, or an integer too large for 64 bits.
pub fn not_an_integer(v: &DeValue, what: &str) -> String {
    match v {
        DeValue::Integer(i) => format!(
            "`{what}` is out of range: {} does not fit in a 64-bit integer (from -9223372036854775808 to 9223372036854775807)",
            i.as_str()
        ),
        other => format!("`{what}` must be an integer, not {}", kind(other)),
    }
}

/// A duration that must be longer than zero.
pub fn as_positive_duration(ctx: &mut Ctx, v: &SV, what: &str) -> Option<std::time::Duration> {
    let d = as_duration(ctx, v, what)?;
    if d.is_zero() {
        ctx.err(v.span(), format!("`{what}` must be longer than 0s"));
        return None;
    }
    Some(d)
}

pub fn as_bool(ctx: &mut Ctx, v: &SV, what: &str) -> Option<bool> {
    match v.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        other => {
            ctx.err(v.span(), format!("`{what}` must be true or false, not {}", kind(other)));
            None
        }
    }
}

pub fn as_array<'a, 'i>(ctx: &mut Ctx, v: &'a SV<'i>, what: &str) -> Option<&'a [SV<'i>]> {
    match v.get_ref() {
        DeValue::Array(a) => Some(a.as_ref()),
        other => {
            ctx.err(v.span(), format!("`{what}` must be an array, not {}", kind(other)));
            None
        }
    }
}

/// A duration: a number of seconds, or a string with a unit (`"90s"`, `"2h"`, `"1d"`).
pub fn as_duration(ctx: &mut Ctx, v: &SV, what: &str) -> Option<std::time::Duration> {
    let d = match v.get_ref() {
        DeValue::String(s) => humantime::parse_duration(s.trim()).ok(),
        other => parse_float(other).filter(|x| x.is_finite() && *x >= 0.0).map(std::time::Duration::from_secs_f64),
    };
    if d.is_none() {
        ctx.err(v.span(), format!("`{what}` must be a duration such as \"90s\", \"30m\", \"2h\" or \"1d\""));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_in_characters() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, src.find('=').unwrap()), (1, 3));
        assert_eq!(line_col(src, src.rfind('=').unwrap()), (2, 4));
    }

    #[test]
    fn suggestions_catch_typos_but_not_strangers() {
        let known = ["parallelism", "max_trials", "seed"];
        assert_eq!(suggest("paralelism", known), Some("parallelism"));
        assert_eq!(suggest("max_trial", known), Some("max_trials"));
        assert_eq!(suggest("colour", known), None);
    }
}
