//! Small parsers: linear constraints (`"a + 2*b - c <= 3.5"`), outcome constraints
//! (`"latency_ms <= 250"`) and command templates with placeholders (`"--lr={lr}"`).

use crate::domain::{Relation, Segment, Template};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Plus,
    Minus,
    Star,
    Le,
    Ge,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
        } else if c == '+' {
            out.push(Tok::Plus);
            i += 1;
        } else if c == '-' {
            out.push(Tok::Minus);
            i += 1;
        } else if c == '*' {
            out.push(Tok::Star);
            i += 1;
        } else if s[i..].starts_with("<=") {
            out.push(Tok::Le);
            i += 2;
        } else if s[i..].starts_with(">=") {
            out.push(Tok::Ge);
            i += 2;
        } else if c == '<' || c == '>' || c == '=' {
            return Err(format!("`{c}` is not allowed: use `<=` or `>=`"));
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < b.len() && ((b[i] as char).is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                let save = i;
                i += 1;
                if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                    i += 1;
                }
                if i < b.len() && (b[i] as char).is_ascii_digit() {
                    while i < b.len() && (b[i] as char).is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    i = save;
                }
            }
            let n: f64 = s[start..i].parse().map_err(|_| format!("`{}` is not a number", &s[start..i]))?;
            out.push(Tok::Num(n));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            out.push(Tok::Ident(s[start..i].to_string()));
        } else {
            return Err(format!("unexpected `{c}`"));
        }
    }
    Ok(out)
}

/// `coefficients . x + constant`, names in order of first appearance.
#[derive(Debug, Default, PartialEq)]
struct Linear {
    terms: Vec<(String, f64)>,
    constant: f64,
}

impl Linear {
    fn add(&mut self, name: Option<String>, coef: f64) {
        match name {
            None => self.constant += coef,
            Some(n) => match self.terms.iter_mut().find(|(m, _)| *m == n) {
                Some((_, c)) => *c += coef,
                None => self.terms.push((n, coef)),
            },
        }
    }
}

fn parse_linear(toks: &[Tok]) -> Result<Linear, String> {
    let mut lin = Linear::default();
    let mut i = 0;
    if toks.is_empty() {
        return Err("a side of the inequality is empty".into());
    }
    loop {
        let mut sign = 1.0;
        while let Some(t @ (Tok::Plus | Tok::Minus)) = toks.get(i) {
            if *t == Tok::Minus {
                sign = -sign;
            }
            i += 1;
        }
        let (name, coef) = match (toks.get(i), toks.get(i + 1), toks.get(i + 2)) {
            (Some(Tok::Num(n)), Some(Tok::Star), Some(Tok::Ident(x))) => {
                i += 3;
                (Some(x.clone()), *n)
            }
            (Some(Tok::Ident(x)), Some(Tok::Star), Some(Tok::Num(n))) => {
                i += 3;
                (Some(x.clone()), *n)
            }
            (Some(Tok::Num(n)), Some(Tok::Ident(x)), _) => {
                i += 2;
                (Some(x.clone()), *n)
            }
            (Some(Tok::Num(n)), _, _) => {
                i += 1;
                (None, *n)
            }
            (Some(Tok::Ident(x)), _, _) => {
                i += 1;
                (Some(x.clone()), 1.0)
            }
            _ => return Err("expected a number or a name".into()),
        };
        lin.add(name, sign * coef);
        match toks.get(i) {
            None => return Ok(lin),
            Some(Tok::Plus | Tok::Minus) => {}
            Some(Tok::Star) => return Err("only a number times a name is linear".into()),
            Some(_) => return Err("expected `+` or `-` between terms".into()),
        }
    }
}

/// Split at the one `<=`/`>=` of an inequality.
fn split_inequality(toks: &[Tok]) -> Result<(&[Tok], bool, &[Tok]), String> {
    let ops: Vec<usize> =
        toks.iter().enumerate().filter(|(_, t)| matches!(t, Tok::Le | Tok::Ge)).map(|(i, _)| i).collect();
    match ops.as_slice() {
        [i] => Ok((&toks[..*i], toks[*i] == Tok::Le, &toks[*i + 1..])),
        [] => Err("expected an inequality with `<=` or `>=`".into()),
        _ => Err("expected exactly one `<=` or `>=`".into()),
    }
}

/// Parse a linear inequality into `terms . x <= bound`.
pub fn linear_constraint(s: &str) -> Result<(Vec<(String, f64)>, f64), String> {
    let toks = tokenize(s)?;
    let (l, le, r) = split_inequality(&toks)?;
    let (l, r) = (parse_linear(l)?, parse_linear(r)?);
    // l <= r  <=>  l - r <= 0
    let mut lin = Linear::default();
    for (n, c) in l.terms {
        lin.add(Some(n), c);
    }
    for (n, c) in r.terms {
        lin.add(Some(n), -c);
    }
    let mut bound = r.constant - l.constant;
    let mut terms: Vec<(String, f64)> = lin.terms.into_iter().filter(|(_, c)| *c != 0.0).collect();
    if !le {
        terms.iter_mut().for_each(|(_, c)| *c = -*c);
        bound = -bound;
    }
    if terms.is_empty() {
        return Err("the inequality names no parameter".into());
    }
    Ok((terms, bound))
}

/// Parse a weighted sum of names (`"val_loss + 0.01*latency_ms"`) into its terms, each
/// name once; a constant term is refused (it does not move the optimum).
pub fn weighted_sum(s: &str) -> Result<Vec<(String, f64)>, String> {
    let toks = tokenize(s)?;
    if toks.iter().any(|t| matches!(t, Tok::Le | Tok::Ge)) {
        return Err("an objective is an expression, not an inequality".into());
    }
    let lin = parse_linear(&toks)?;
    if lin.constant != 0.0 {
        return Err("a constant term does not change the optimum: remove it".into());
    }
    if let Some((n, _)) = lin.terms.iter().find(|(_, c)| *c == 0.0) {
        return Err(format!("`{n}` has a weight of 0"));
    }
    if lin.terms.is_empty() {
        return Err("the expression names no metric".into());
    }
    Ok(lin.terms)
}

/// Parse `metric <= bound` or `metric >= bound`.
pub fn outcome_constraint(s: &str) -> Result<(String, Relation, f64), String> {
    let toks = tokenize(s)?;
    let (l, le, r) = split_inequality(&toks)?;
    let neg = |t: &[Tok]| match t {
        [Tok::Num(n)] => Some(*n),
        [Tok::Minus, Tok::Num(n)] => Some(-n),
        [Tok::Plus, Tok::Num(n)] => Some(*n),
        _ => None,
    };
    match (l, r) {
        ([Tok::Ident(m)], r) if neg(r).is_some() => {
            Ok((m.clone(), if le { Relation::AtMost } else { Relation::AtLeast }, neg(r).unwrap_or(0.0)))
        }
        (l, [Tok::Ident(m)]) if neg(l).is_some() => {
            Ok((m.clone(), if le { Relation::AtLeast } else { Relation::AtMost }, neg(l).unwrap_or(0.0)))
        }
        _ => Err("expected `metric <= number` or `metric >= number`".into()),
    }
}

/// Parse placeholders: `{name}`; `{{` and `}}` are literal braces.
pub fn template(s: &str) -> Result<Template, String> {
    let mut segments = Vec::new();
    let mut lit = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("`{{{name}` is not closed: write `{{{{` for a literal brace")),
                    }
                }
                if !lit.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut lit)));
                }
                segments.push(Segment::Placeholder(name.trim().to_string()));
            }
            '}' => return Err("a lone `}`: write `}}` for a literal brace".into()),
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        segments.push(Segment::Literal(lit));
    }
    Ok(Template { segments })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_constraints_move_everything_left() {
        assert_eq!(
            linear_constraint("x1 + 2*dropout <= 1.2").unwrap(),
            (vec![("x1".into(), 1.0), ("dropout".into(), 2.0)], 1.2)
        );
        assert_eq!(linear_constraint("a <= b").unwrap(), (vec![("a".into(), 1.0), ("b".into(), -1.0)], 0.0));
        assert_eq!(linear_constraint("2.5*x >= 1").unwrap(), (vec![("x".into(), -2.5)], -1.0));
        assert_eq!(linear_constraint("a - c*3 + 1 <= 4").unwrap(), (vec![("a".into(), 1.0), ("c".into(), -3.0)], 3.0));
    }

    #[test]
    fn weighted_sums_collect_their_terms() {
        assert_eq!(
            weighted_sum("val_loss + 0.01*latency_ms").unwrap(),
            vec![("val_loss".into(), 1.0), ("latency_ms".into(), 0.01)]
        );
        assert_eq!(weighted_sum("-a + 2 b - a").unwrap(), vec![("a".into(), -2.0), ("b".into(), 2.0)]);
        assert!(weighted_sum("a + 1").unwrap_err().contains("constant"));
        assert!(weighted_sum("a - a + b").unwrap_err().contains("weight of 0"));
        assert!(weighted_sum("a * b").is_err());
        assert!(weighted_sum("a <= 2").is_err());
    }

    #[test]
    fn nonlinear_or_malformed_constraints_are_refused() {
        assert!(linear_constraint("a * b <= 1").is_err());
        assert!(linear_constraint("a < 1").is_err());
        assert!(linear_constraint("a + 1").is_err());
        assert!(linear_constraint("1 <= 2").is_err());
    }

    #[test]
    fn outcome_constraints_read_either_way_round() {
        assert_eq!(outcome_constraint("latency_ms <= 250").unwrap(), ("latency_ms".into(), Relation::AtMost, 250.0));
        assert_eq!(outcome_constraint("0.5 <= acc").unwrap(), ("acc".into(), Relation::AtLeast, 0.5));
        assert_eq!(outcome_constraint("loss >= -1e-3").unwrap(), ("loss".into(), Relation::AtLeast, -1e-3));
        assert!(outcome_constraint("a + b <= 1").is_err());
    }

    #[test]
    fn templates_split_placeholders_and_escapes() {
        let t = template("--lr={lr} {{x}}").unwrap();
        assert_eq!(
            t.segments,
            vec![Segment::Literal("--lr=".into()), Segment::Placeholder("lr".into()), Segment::Literal(" {x}".into()),]
        );
        assert!(template("{open").is_err());
        assert!(template("a}b").is_err());
    }
}
