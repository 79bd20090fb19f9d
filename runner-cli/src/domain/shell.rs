//! Substituting values into a command run by `sh -c` (`shell = true`) so that no value
//! can break out of where its placeholder sits.
//!
//! The command's text is read as the shell would read it, to know the quoting context of
//! each placeholder: outside quotes (or inside `$(...)`, which starts afresh), a value is
//! quoted whole (`'it'\''s'`); inside single quotes, each `'` of the value closes the
//! quotes, is escaped and reopens them; inside double quotes, `\`, `"`, `$` and `` ` `` are
//! escaped. Where no quoting is safe, or where this reading could disagree with the shell's,
//! a placeholder is refused: inside backticks, `${...}`, `$((...))`, a comment, after a
//! here-document operator (`<<`), inside a `$(...)` that holds a `case`, or right after a
//! backslash.

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
    /// `$((...))`, with its depth of parentheses.
    Arith(u32),
}

/// Characters after which a `#` starts a comment (the start of a token).
fn token_start(prev: Option<char>) -> bool {
    prev.is_none_or(|p| p.is_whitespace() || matches!(p, ';' | '|' | '&' | '(' | ')' | '<' | '>'))
}

/// The quoting of each placeholder of `t` (in order), or why a placeholder sits where no
/// value can be put safely.
pub fn shell_quoting(t: &Template) -> Result<Vec<ShellQuote>, String> {
    let mut stack = vec![Ctx::Top];
    let mut out = Vec::new();
    // A backslash whose next character is not seen yet (it escapes the value's first one).
    let mut escaped = false;
    // In a comment (`#` at the start of a token, outside quotes) until the end of the line.
    let mut comment = false;
    // A here-document operator was seen: its body is read by other rules.
    let mut heredoc = false;
    let mut prev: Option<char> = None;
    // The current unquoted word, to notice the keyword `case`.
    let mut word = String::new();
    let mut case_in_subst = false;
    for seg in &t.segments {
        match seg {
            Segment::Placeholder(name) => {
                let refuse = |place: &str| {
                    Err(format!(
                        "the placeholder `{{{name}}}` is {place}, where no value can be quoted safely: move it out, or pass the value in the environment (`$OPTX_PARAM_...`)"
                    ))
                };
                if escaped {
                    return refuse("right after a backslash");
                }
                if comment {
                    return refuse("in a comment");
                }
                if heredoc {
                    return refuse("after a here-document (`<<`)");
                }
                if case_in_subst {
                    return refuse("after a `case` inside `$(...)`");
                }
                for c in &stack {
                    match c {
                        Ctx::Backtick => return refuse("inside backticks"),
                        Ctx::Brace => return refuse("inside `${...}`"),
                        Ctx::Arith(_) => return refuse("inside `$((...))`"),
                        _ => {}
                    }
                }
                out.push(match stack.last() {
                    Some(Ctx::Single) => ShellQuote::Single,
                    Some(Ctx::Double) => ShellQuote::Double,
                    _ => ShellQuote::Bare,
                });
                prev = Some('x');
                word.push('x');
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
                    let top = stack.last().copied().unwrap_or(Ctx::Top);
                    let unquoted = matches!(top, Ctx::Top | Ctx::Subst(_));
                    if unquoted {
                        if c.is_alphanumeric() || c == '_' {
                            word.push(c);
                        } else {
                            if word == "case" && stack.iter().any(|c| matches!(c, Ctx::Subst(_))) {
                                // Where its `)`s end the `$(...)` is beyond this reading:
                                // no placeholder after it is trusted.
                                case_in_subst = true;
                            }
                            word.clear();
                        }
                    }
                    match (top, c) {
                        (Ctx::Single, '\'') => {
                            stack.pop();
                        }
                        (Ctx::Single, _) => {}
                        (Ctx::Double, '"') | (Ctx::Backtick, '`') | (Ctx::Brace, '}') => {
                            stack.pop();
                        }
                        (Ctx::Arith(0), ')') if chars.peek() == Some(&')') => {
                            chars.next();
                            stack.pop();
                        }
                        (Ctx::Arith(d), '(') => {
                            if let Some(last) = stack.last_mut() {
                                *last = Ctx::Arith(d + 1);
                            }
                        }
                        (Ctx::Arith(d), ')') if d > 0 => {
                            if let Some(last) = stack.last_mut() {
                                *last = Ctx::Arith(d - 1);
                            }
                        }
                        (Ctx::Arith(_), _) => {}
                        (_, '\\') => escaped = true,
                        (_, '$') if chars.peek() == Some(&'(') => {
                            chars.next();
                            if chars.peek() == Some(&'(') {
                                chars.next();
                                stack.push(Ctx::Arith(0));
                            } else {
                                stack.push(Ctx::Subst(0));
                            }
                        }
                        (_, '$') if chars.peek() == Some(&'{') => {
                            chars.next();
                            stack.push(Ctx::Brace);
                        }
                        (_, '`') => stack.push(Ctx::Backtick),
                        (Ctx::Top | Ctx::Subst(_) | Ctx::Brace, '\'') => stack.push(Ctx::Single),
                        (Ctx::Top | Ctx::Subst(_) | Ctx::Brace, '"') => stack.push(Ctx::Double),
                        (Ctx::Top | Ctx::Subst(_), '#') if token_start(prev) => comment = true,
                        (Ctx::Top | Ctx::Subst(_), '<') if chars.peek() == Some(&'<') => heredoc = true,
                        (Ctx::Subst(d), '(') => {
                            if let Some(last) = stack.last_mut() {
                                *last = Ctx::Subst(d + 1);
                            }
                        }
                        (Ctx::Subst(0), ')') => {
                            stack.pop();
                        }
                        (Ctx::Subst(d), ')') => {
                            if let Some(last) = stack.last_mut() {
                                *last = Ctx::Subst(d - 1);
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
        let cases: [(&[&str], Vec<ShellQuote>); 8] = [
            (&["echo ", "a", " > f"], vec![Bare]),
            (&["echo '--a=", "a", "'"], vec![Single]),
            (&["echo \"--a=", "a", "\""], vec![Double]),
            (&["echo \"$(printf %s ", "a", ")\""], vec![Bare]),
            (&["echo \"$(printf %s \"", "a", "\")\" '", "b", "'"], vec![Double, Single]),
            (&["echo 'it''s' ", "a", " \"x\\\"y\" ", "b"], vec![Bare, Bare]),
            (&["echo # a comment with 'it\necho ", "b"], vec![Bare]),
            (&["x |# it's\necho ", "b"], vec![Bare]),
        ];
        for (parts, want) in cases {
            assert_eq!(shell_quoting(&t(parts)).unwrap(), want, "{parts:?}");
        }
    }

    #[test]
    fn places_where_no_quoting_is_safe_are_refused() {
        for parts in [
            &["echo `echo ", "a", "`"][..],
            &["echo ${", "a", "}"],
            &["echo \\", "a"],
            &["echo hi # ", "a"],
            &["echo x|# ", "a"],
            &["cat > cfg <<EOF\nlr: ", "a", "\nEOF"],
            &["echo $((", "a", " * 100))"],
            &["echo \"$(case x in x) echo ", "a", ";; esac)\""],
            &["echo ${x:-'}' ", "a", "}"],
        ] {
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
