//! The values of statements, owned (so that a transaction can be replayed), and written
//! into a statement's text for the writes sent with the commit.

use super::*;

/// A parameter of a statement, owned, so that a transaction can be replayed.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum V {
    I(Option<i64>),
    F(Option<f64>),
    T(Option<String>),
    B(Option<bool>),
}

impl ToSql for V {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            V::I(x) => x.to_sql(ty, out),
            V::F(x) => x.to_sql(ty, out),
            V::T(x) => x.to_sql(ty, out),
            V::B(x) => x.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            V::I(x) => x.to_sql_checked(ty, out),
            V::F(x) => x.to_sql_checked(ty, out),
            V::T(x) => x.to_sql_checked(ty, out),
            V::B(x) => x.to_sql_checked(ty, out),
        }
    }
}

impl From<i64> for V {
    fn from(x: i64) -> V {
        V::I(Some(x))
    }
}
impl From<u64> for V {
    fn from(x: u64) -> V {
        V::I(Some(x as i64))
    }
}
impl From<Option<i64>> for V {
    fn from(x: Option<i64>) -> V {
        V::I(x)
    }
}
impl From<Option<u64>> for V {
    fn from(x: Option<u64>) -> V {
        V::I(x.map(|x| x as i64))
    }
}
impl From<f64> for V {
    fn from(x: f64) -> V {
        V::F(Some(x))
    }
}
impl From<Option<f64>> for V {
    fn from(x: Option<f64>) -> V {
        V::F(x)
    }
}
impl From<bool> for V {
    fn from(x: bool) -> V {
        V::B(Some(x))
    }
}
impl From<Option<bool>> for V {
    fn from(x: Option<bool>) -> V {
        V::B(x)
    }
}
impl From<&str> for V {
    fn from(x: &str) -> V {
        V::T(Some(x.to_string()))
    }
}
impl From<String> for V {
    fn from(x: String) -> V {
        V::T(Some(x))
    }
}
impl From<Option<&str>> for V {
    fn from(x: Option<&str>) -> V {
        V::T(x.map(str::to_string))
    }
}
impl From<Option<String>> for V {
    fn from(x: Option<String>) -> V {
        V::T(x)
    }
}

macro_rules! p {
    ($($x:expr),* $(,)?) => { vec![$(V::from($x)),*] };
}

pub(super) fn refs(ps: &[V]) -> Vec<&(dyn ToSql + Sync)> {
    ps.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// A value written into a statement's text (for writes sent together at the commit).
pub(super) fn literal(v: &V) -> String {
    match v {
        V::I(Some(x)) => x.to_string(),
        V::F(Some(x)) if x.is_finite() => format!("'{x:?}'::float8"),
        V::F(Some(x)) if x.is_nan() => "'NaN'::float8".into(),
        V::F(Some(x)) => {
            if *x > 0.0 {
                "'Infinity'::float8".into()
            } else {
                "'-Infinity'::float8".into()
            }
        }
        V::T(Some(t)) => format!("'{}'", t.replace('\'', "''")),
        V::B(Some(b)) => b.to_string(),
        V::I(None) | V::F(None) | V::T(None) | V::B(None) => "NULL".into(),
    }
}

/// `sql` with its parameters (`$1`, `$2`...) written in, in one pass over our own text (a
/// value is never read again as text of the statement).
pub(super) fn inline(sql: &str, ps: &[V]) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
        match rest[at + 1..at + 1 + digits].parse::<usize>().ok().and_then(|n| ps.get(n.wrapping_sub(1))) {
            Some(p) => out.push_str(&literal(p)),
            None => out.push_str(&rest[at..at + 1 + digits]),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}
