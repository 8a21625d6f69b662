//! The values AWS IoT SQL computes with and the standard conversions between them ("Data
//! types" in the AWS IoT Core Developer Guide: Int, Decimal, Boolean, String, Array, Object,
//! Null, Undefined; the "Conversions" tables).
//!
//! Decimals are `f64` here (AWS keeps 34 digits; some of its functions also use doubles). As
//! the 2016-03-23 version does, a whole-number Decimal is processed as an Int: every Decimal
//! this module builds goes through [`Value::decimal`], which turns `10.0` into `10` and a
//! non-finite result (overflow, `0/0`) into Undefined.

use serde_json::Number;

/// A value of AWS IoT SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Not a value: a missing key, a function given bad arguments. Never serialized.
    Undefined,
    /// JSON `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A finite number that is not whole (see [`Value::decimal`]).
    Decimal(f64),
    /// A UTF-8 string.
    String(String),
    /// An array; it never holds Undefined.
    Array(Vec<Value>),
    /// An object, keys in insertion order, no duplicate keys, no Undefined values.
    Object(Vec<(String, Value)>),
}

/// Largest magnitude below which a whole `f64` is exactly an `i64` and is turned into an Int.
const WHOLE_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53

impl Value {
    /// A Decimal result: Int when whole (and exactly representable), Undefined when not finite.
    pub fn decimal(d: f64) -> Value {
        if !d.is_finite() {
            return Value::Undefined;
        }
        if d.fract() == 0.0 && d.abs() < WHOLE_LIMIT {
            // Exact: |d| < 2^53 and whole.
            return Value::Int(d as i64);
        }
        Value::Decimal(d)
    }

    /// Whether this is Undefined.
    pub fn is_undefined(&self) -> bool {
        matches!(self, Value::Undefined)
    }

    /// Reads a JSON value; numbers that are whole become Ints (SQL 2016-03-23).
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => number(n),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(items) => Value::Array(items.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect())
            }
        }
    }

    /// Writes this value as JSON; `None` for Undefined. Undefined members and items are left out.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        Some(match self {
            Value::Undefined => return None,
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::Number((*i).into()),
            Value::Decimal(d) => Number::from_f64(*d).map(serde_json::Value::Number)?,
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(items) => serde_json::Value::Array(items.iter().filter_map(Value::to_json).collect()),
            Value::Object(members) => {
                serde_json::Value::Object(members.iter().filter_map(|(k, v)| Some((k.clone(), v.to_json()?))).collect())
            }
        })
    }

    /// The member `key` of an object; Undefined for a missing key or a non-object.
    pub fn member(&self, key: &str) -> Value {
        match self {
            Value::Object(members) => {
                members.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or(Value::Undefined)
            }
            _ => Value::Undefined,
        }
    }

    /// Standard conversion to Decimal (as `f64`): numbers as they are, strings matching
    /// `-?\d+(\.\d+)?([eE]-?\d+)?`, Null stays Null (`Some(None)`), everything else fails (`None`).
    pub fn to_number(&self) -> Option<Num> {
        match self {
            Value::Int(i) => Some(Num::Int(*i)),
            Value::Decimal(d) => Some(Num::Dec(*d)),
            Value::String(s) => parse_decimal(s),
            _ => None,
        }
    }

    /// Standard conversion to Boolean: Booleans, and the strings "true"/"false" in any case.
    pub fn to_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    /// Standard conversion to String: numbers in plain notation, Booleans in lower case,
    /// arrays and objects as JSON; Null and Undefined have none.
    pub fn to_sql_string(&self) -> Option<String> {
        match self {
            Value::Undefined | Value::Null => None,
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Decimal(d) => Some(d.to_string()),
            Value::String(s) => Some(s.clone()),
            Value::Array(_) | Value::Object(_) => self.to_json().map(|j| j.to_string()),
        }
    }

    /// Standard conversion to Int: Decimals rounded to the nearest Int, strings parsed as a
    /// Decimal and truncated.
    pub fn to_int_nearest(&self) -> Option<i64> {
        match self {
            Value::String(_) => self.to_number().map(|n| n.trunc()),
            _ => self.to_number().map(|n| n.round()),
        }
    }

    /// Conversion to Int that rounds down, as most functions taking an Int document.
    pub fn to_int_floor(&self) -> Option<i64> {
        self.to_number().map(|n| n.floor())
    }
}

/// A number after the standard conversion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// An Int.
    Int(i64),
    /// A Decimal.
    Dec(f64),
}

impl Num {
    /// As a double.
    pub fn f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Dec(d) => d,
        }
    }

    /// Back to a value.
    pub fn value(self) -> Value {
        match self {
            Num::Int(i) => Value::Int(i),
            Num::Dec(d) => Value::decimal(d),
        }
    }

    // `as` saturates at the i64 bounds, which is what a value beyond them should become.
    fn floor(self) -> i64 {
        match self {
            Num::Int(i) => i,
            Num::Dec(d) => d.floor() as i64,
        }
    }

    fn round(self) -> i64 {
        match self {
            Num::Int(i) => i,
            Num::Dec(d) => d.round() as i64,
        }
    }

    fn trunc(self) -> i64 {
        match self {
            Num::Int(i) => i,
            Num::Dec(d) => d.trunc() as i64,
        }
    }
}

fn number(n: &Number) -> Value {
    if let Some(i) = n.as_i64() {
        return Value::Int(i);
    }
    match n.as_f64() {
        Some(d) => Value::decimal(d),
        None => Value::Undefined,
    }
}

/// Parses a string the way AWS converts strings to Decimals: `-?\d+(\.\d+)?([eE]-?\d+)?`.
pub fn parse_decimal(s: &str) -> Option<Num> {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if b.first() == Some(&b'-') {
        i += 1;
    }
    if !digits(&mut i) {
        return None;
    }
    let mut whole = true;
    if b.get(i) == Some(&b'.') {
        i += 1;
        whole = false;
        if !digits(&mut i) {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        whole = false;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    if whole && let Ok(int) = s.parse::<i64>() {
        return Some(Num::Int(int));
    }
    match Value::decimal(s.parse::<f64>().ok()?) {
        Value::Int(i) => Some(Num::Int(i)),
        Value::Decimal(d) => Some(Num::Dec(d)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_convert_to_numbers_only_in_the_documented_form() {
        let cases: &[(&str, Option<Num>)] = &[
            ("0", Some(Num::Int(0))),
            ("-1.2", Some(Num::Dec(-1.2))),
            ("5E-12", Some(Num::Dec(5e-12))),
            ("10.0", Some(Num::Int(10))),
            ("1e3", Some(Num::Int(1000))),
            ("+1", None),
            (".5", None),
            ("1.", None),
            ("", None),
            ("-", None),
            ("1e", None),
            (" 1", None),
            ("0x10", None),
            ("1E999", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_decimal(s), *want, "{s:?}");
        }
    }

    #[test]
    fn whole_decimals_are_ints_and_non_finite_ones_undefined() {
        assert_eq!(Value::decimal(10.0), Value::Int(10));
        assert_eq!(Value::decimal(2.5), Value::Decimal(2.5));
        assert_eq!(Value::decimal(f64::NAN), Value::Undefined);
        assert_eq!(Value::decimal(f64::INFINITY), Value::Undefined);
        assert_eq!(Value::decimal(1e300), Value::Decimal(1e300));
    }

    #[test]
    fn conversions_to_string_follow_the_table() {
        let arr = Value::Array(vec![Value::String("a".into()), Value::Int(1), Value::Null, Value::Bool(true)]);
        assert_eq!(arr.to_sql_string().as_deref(), Some(r#"["a",1,null,true]"#));
        assert_eq!(Value::Bool(false).to_sql_string().as_deref(), Some("false"));
        assert_eq!(Value::Null.to_sql_string(), None);
        assert_eq!(Value::Undefined.to_sql_string(), None);
        assert_eq!(Value::Decimal(-0.5).to_sql_string().as_deref(), Some("-0.5"));
    }

    #[test]
    fn undefined_members_and_items_are_left_out_of_json() {
        let v = Value::Object(vec![
            ("foo".into(), Value::Null),
            ("bar".into(), Value::Undefined),
            ("list".into(), Value::Array(vec![Value::Int(1), Value::Undefined])),
        ]);
        assert_eq!(v.to_json(), Some(serde_json::json!({"foo": null, "list": [1]})));
        assert_eq!(Value::Undefined.to_json(), None);
    }
}
