//! Substituting values into a command run by `sh -c` (`shell = true`) so that no value
//! can break out of where its placeholder sits.
//!
//! The command's text is read as the shell would read it, to know the quoting context of
//! each placeholder: outside quotes (or inside `$(...)`, which starts afresh), a value is
//! quoted whole (`'it'\''s'`); inside single quotes, each `'` of the value closes the
//! quotes, is escaped and reopens them; inside double quotes, `\`, `"`, `$` and `` ` `` are
//! escaped. Inside backticks or `${...}` no quoting is safe: such a command is refused.

use super::{Segment, Template};

/// How a value is quoted at its placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellQuote {
    /// Outside quotes: the value becomes one quoted word.
    Bare,
    /// Between `'...'`.
    Single,
    /// Between `"..."`.
    Double,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ctx {
    Top,
    Single,
    Double,
    /// `$(...)`, with its depth of unquoted parentheses.
    Subst(u32),
    Backtick,
    Brace,
}

/// The quoting of each placeholder of `t` (in order), or why a placeholder sits where no
/// value can be put safely.
pub fn shell_quoting(t: &Template) -> Result<Vec<ShellQuote>, String> {
    let mut stack = vec![Ctx::Top];
    let mut out = Vec::new();
    // A backslash whose next character is not seen yet (it escapes the value's first one).
    let mut escaped = false;
    // In a comment (`#` at the start of a word, outside quotes) until the end of the line.
    let mut comment = false;
    let mut prev: Option<char> = None;
    for seg in &t.segments {
        match seg {
            Segment::Placeholder(name) => {
                if escaped {
                    return Err(format!(
                        "the placeholder `{{{name}}}` follows a backslash: remove it, optx quotes each value itself"
                    ));
                }
                let top = *stack.last().unwrap_or(&Ctx::Top);
                out.push(match (comment, top) {
                    (true, _) | (_, Ctx::Top | Ctx::Subst(_)) => ShellQuote::Bare,
                    (_, Ctx::Single) => ShellQuote::Single,
                    (_, Ctx::Double) => ShellQuote::Double,
                    (_, Ctx::Backtick) => {
                        return Err(format!(
                            "the placeholder `{{{name}}}` is inside backticks, where no value can be quoted safely: write $(...) instead"
                        ))
                    }
                    (_, Ctx::Brace) => {
                        return Err(format!(
                            "the placeholder `{{{name}}}` is inside `${{...}}`, where no value can be quoted safely"
                        ))
                    }
                });
                prev = Some('x');
            }
            Segment::Literal(text) => {
                let mut chars = text.chars().peekable();
                while let Some(c) = chars.next() {
                    if escaped {
                        escaped = false;
                        prev = Some('x');
                        continue;
                    }
                    if comment {
                        if c == '\n' {
                            comment = false;
                        }
                        prev = Some(c);
                        continue;
                    }
                    let top = stack.last_mut().map(|c| *c).unwrap_or(Ctx::Top);
                    match (top, c) {
                        (Ctx::Single, '\'') => {
                            stack.pop();
                        }
                        (Ctx::Single, _) => {}
                        (Ctx::Double, '"') | (Ctx::Backtick, '`') | (Ctx::Brace, '}') => {
                            stack.pop();
                        }
                        (Ctx::Double | Ctx::Top | Ctx::Subst(_) | Ctx::Backtick, '\\') => escaped = true,
                        (Ctx::Double | Ctx::Top | Ctx::Subst(_), '$') if chars.peek() == Some(&'(') => {
                            chars.next();
                            stack.push(Ctx::Subst(0));
                        }
                        (Ctx::Double | Ctx::Top | Ctx::Subst(_), '$') if chars.peek() == Some(&'{') => {
                            chars.next();
                            stack.push(Ctx::Brace);
                        }
                        (Ctx::Double | Ctx::Top | Ctx::Subst(_), '`') => stack.push(Ctx::Backtick),
                        (Ctx::Top | Ctx::Subst(_), '\'') => stack.push(Ctx::Single),
                        (Ctx::Top | Ctx::Subst(_), '"') => stack.push(Ctx::Double),
                        (Ctx::Top | Ctx::Subst(_), '#') if prev.is_none_or(|p| p.is_whitespace() || p == ';') => {
                            comment = true
                        }
                        (Ctx::Subst(d), '(') => {
                            if let Some(top) = stack.last_mut() {
                                *top = Ctx::Subst(d + 1);
                            }
                        }
                        (Ctx::Subst(0), ')') => {
                            stack.pop();
                        }
                        (Ctx::Subst(d), ')') => {
                            if let Some(top) = stack.last_mut() {
                                *top = Ctx::Subst(d - 1);
                            }
                        }
                        _ => {}
                    }
                    prev = Some(c);
                }
            }
        }
    }
    Ok(out)
}

/// `value` quoted for its place.
pub fn shell_quote(value: &str, q: ShellQuote) -> String {
    match q {
        ShellQuote::Bare => {
            if !value.is_empty()
                && value.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+' | ',' | ':' | '=' | '@' | '%')
                })
            {
                value.to_string()
            } else {
                format!("'{}'", value.replace('\'', "'\\''"))
            }
        }
        ShellQuote::Single => value.replace('\'', "'\\''"),
        ShellQuote::Double => {
            let mut s = String::with_capacity(value.len());
            for c in value.chars() {
                if matches!(c, '\\' | '"' | '$' | '`') {
                    s.push('\\');
                }
                s.push(c);
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(parts: &[&str]) -> Template {
        // Odd parts are placeholders.
        let segments = parts
            .iter()
            .enumerate()
            .map(
                |(i, p)| if i % 2 == 1 { Segment::Placeholder(p.to_string()) } else { Segment::Literal(p.to_string()) },
            )
            .collect();
        Template { segments }
    }

    #[test]
    fn each_placeholder_gets_the_quoting_of_its_place() {
        use ShellQuote::*;
        let cases: [(&[&str], Vec<ShellQuote>); 7] = [
            (&["echo ", "a", " > f"], vec![Bare]),
            (&["echo '--a=", "a", "'"], vec![Single]),
            (&["echo \"--a=", "a", "\""], vec![Double]),
            (&["echo \"$(printf %s ", "a", ")\""], vec![Bare]),
            (&["echo \"$(printf %s \"", "a", "\")\" '", "b", "'"], vec![Double, Single]),
            (&["echo 'it''s' ", "a", " \"x\\\"y\" ", "b"], vec![Bare, Bare]),
            (&["echo # a comment with '", "a", "\necho ", "b"], vec![Bare, Bare]),
        ];
        for (parts, want) in cases {
            assert_eq!(shell_quoting(&t(parts)).unwrap(), want, "{parts:?}");
        }
    }

    #[test]
    fn places_where_no_quoting_is_safe_are_refused() {
        for parts in [&["echo `echo ", "a", "`"][..], &["echo ${", "a", "}"], &["echo \\", "a"]] {
            assert!(shell_quoting(&t(parts)).is_err(), "{parts:?}");
        }
    }

    #[test]
    fn quoting_keeps_every_byte() {
        assert_eq!(shell_quote("it's", ShellQuote::Bare), "'it'\\''s'");
        assert_eq!(shell_quote("", ShellQuote::Bare), "''");
        assert_eq!(shell_quote("0.15", ShellQuote::Bare), "0.15");
        assert_eq!(shell_quote("a'b", ShellQuote::Single), "a'\\''b");
        assert_eq!(shell_quote("$x \"`\\", ShellQuote::Double), "\\$x \\\"\\`\\\\");
    }
}
