//! A parameter value: what a trial receives and what the store keeps.

use std::fmt;

/// One value of a parameter. Choices hold values of one kind; ranges hold numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
}

impl Value {
    /// The value as a number, for linear constraints and models.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// A short word for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Bool(_) => "boolean",
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => {
                serde_json::Number::from_f64(*f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
            }
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Bool(b) => serde_json::Value::Bool(*b),
        }
    }

    pub fn from_json(v: &serde_json::Value) -> Option<Value> {
        match v {
            serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
            serde_json::Value::String(s) => Some(Value::Str(s.clone())),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) if !n.is_f64() => Some(Value::Int(i)),
                _ => n.as_f64().map(Value::Float),
            },
            _ => None,
        }
    }
}

/// The text substituted into commands: numbers as JSON writes them (the shortest form
/// that round-trips), strings as they are, booleans as `true`/`false`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) if x.is_finite() => {
                f.write_str(&serde_json::to_string(x).unwrap_or_else(|_| x.to_string()))
            }
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_in_the_shortest_form_that_round_trips() {
        assert_eq!(Value::Float(0.15).to_string(), "0.15");
        assert_eq!(Value::Float(1.0).to_string(), "1.0");
        for x in [1e-5, 1e-12, 123456.789, 1e300] {
            assert_eq!(Value::Float(x).to_string().parse::<f64>().unwrap(), x);
        }
        assert_eq!(Value::Int(-3).to_string(), "-3");
        assert_eq!(Value::Str("a b".into()).to_string(), "a b");
    }

    #[test]
    fn json_round_trip_keeps_the_kind() {
        for v in [Value::Int(3), Value::Float(3.5), Value::Str("x".into()), Value::Bool(true)] {
            assert_eq!(Value::from_json(&v.to_json()), Some(v));
        }
    }
}
