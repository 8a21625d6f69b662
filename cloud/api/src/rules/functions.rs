//! The built-in functions ("Functions" in the AWS IoT SQL reference). As documented, a
//! function given arguments of the wrong type or number returns Undefined; strings convert to
//! numbers and values to strings by the standard conversions of [`super::value`].
//!
//! Left out: the functions that call other services (`aws_lambda`, `get_dynamodb`,
//! `get_thing_shadow`, `get_secret`, `get_registry_data`, `machinelearning_predict`), the
//! hashes (`md2` … `sha512`), the regular-expression functions and `time_to_epoch`; naming one is
//! a parse error. `parse_time` writes UTC only (see [`super::time_format`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::eval::Context;
use super::value::{Num, Value};

/// Functions that call another AWS service: named in the parse error, never evaluated here.
pub(crate) const NEEDS_SERVICE: &[&str] =
    &["aws_lambda", "get_dynamodb", "get_thing_shadow", "get_secret", "get_registry_data", "machinelearning_predict"];

/// Every function this engine evaluates, by canonical name.
pub const FUNCTIONS: &[&str] = &[
    "abs",
    "accountid",
    "acos",
    "asin",
    "atan",
    "atan2",
    "bitand",
    "bitnot",
    "bitor",
    "bitxor",
    "cast",
    "ceil",
    "chr",
    "clientid",
    "concat",
    "cos",
    "cosh",
    "decode",
    "encode",
    "endswith",
    "exp",
    "floor",
    "get",
    "indexof",
    "isnull",
    "isundefined",
    "length",
    "ln",
    "log",
    "lower",
    "lpad",
    "ltrim",
    "mod",
    "nanvl",
    "newuuid",
    "numbytes",
    "parse_time",
    "power",
    "principal",
    "rand",
    "remainder",
    "replace",
    "round",
    "rpad",
    "rtrim",
    "sign",
    "sin",
    "sinh",
    "sql_version",
    "sqrt",
    "startswith",
    "substring",
    "tan",
    "tanh",
    "timestamp",
    "topic",
    "traceid",
    "transform",
    "trim",
    "trunc",
    "upper",
];

/// The longest string a function builds (the 128 KiB of an IoT Core message); longer results
/// are Undefined, so `replace` and friends cannot be made to exhaust memory.
pub const MAX_STRING_BYTES: usize = 128 * 1024;

/// The canonical name of a function, looked up ignoring case (`Round`, `isNull`).
pub(crate) fn lookup(name: &str) -> Option<&'static str> {
    FUNCTIONS.iter().copied().find(|f| f.eq_ignore_ascii_case(name))
}

/// The target type of `cast(value AS type)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastType {
    /// `String`, `Nvarchar`, `Text`, `Ntext`, `varchar`.
    String,
    /// `Int`, `Integer`.
    Int,
    /// `Double`, `Decimal`.
    Decimal,
    /// `Bool`, `Boolean`.
    Boolean,
}

impl CastType {
    /// The type a keyword names, ignoring case.
    pub(crate) fn parse(keyword: &str) -> Option<CastType> {
        let k = keyword.to_ascii_lowercase();
        Some(match k.as_str() {
            "string" | "nvarchar" | "text" | "ntext" | "varchar" => CastType::String,
            "int" | "integer" => CastType::Int,
            "double" | "decimal" => CastType::Decimal,
            "bool" | "boolean" => CastType::Boolean,
            _ => return None,
        })
    }
}

/// `cast(value AS ty)`: the standard conversions, plus numbers to and from Booleans.
pub(crate) fn cast(value: Value, ty: CastType) -> Value {
    match ty {
        CastType::Decimal => match value {
            Value::Bool(b) => Value::Int(i64::from(b)),
            v => v.to_number().map(Num::value).unwrap_or(Value::Undefined),
        },
        CastType::Int => match value {
            Value::Bool(b) => Value::Int(i64::from(b)),
            v => v.to_int_floor().map(Value::Int).unwrap_or(Value::Undefined),
        },
        CastType::Boolean => match value {
            Value::Int(i) => Value::Bool(i != 0),
            Value::Decimal(d) => Value::Bool(d != 0.0),
            v => v.to_bool().map(Value::Bool).unwrap_or(Value::Undefined),
        },
        CastType::String => string(value.to_sql_string()),
    }
}

fn string(s: Option<String>) -> Value {
    match s {
        Some(s) if s.len() <= MAX_STRING_BYTES => Value::String(s),
        _ => Value::Undefined,
    }
}

fn int(i: Option<i64>) -> Value {
    i.map(Value::Int).unwrap_or(Value::Undefined)
}

fn boolean(b: bool) -> Value {
    Value::Bool(b)
}

/// A one-argument function of a double (`sqrt`, `sin`, …).
fn double(args: &[Value], f: fn(f64) -> f64) -> Value {
    match args {
        [x] => x.to_number().map(|n| Value::decimal(f(n.f64()))).unwrap_or(Value::Undefined),
        _ => Value::Undefined,
    }
}

/// A two-argument function of doubles (`power`, `atan2`).
fn double2(args: &[Value], f: fn(f64, f64) -> f64) -> Value {
    match args {
        [x, y] => match (x.to_number(), y.to_number()) {
            (Some(a), Some(b)) => Value::decimal(f(a.f64(), b.f64())),
            _ => Value::Undefined,
        },
        _ => Value::Undefined,
    }
}

/// A two-argument bitwise function; arguments rounded down to Ints.
fn bits(args: &[Value], f: fn(i64, i64) -> i64) -> Value {
    match args {
        [x, y] => match (x.to_int_floor(), y.to_int_floor()) {
            (Some(a), Some(b)) => Value::Int(f(a, b)),
            _ => Value::Undefined,
        },
        _ => Value::Undefined,
    }
}

/// One argument converted to a string, then `f`.
fn text(args: &[Value], f: impl Fn(&str) -> Value) -> Value {
    match args {
        [x] => x.to_sql_string().map(|s| f(&s)).unwrap_or(Value::Undefined),
        _ => Value::Undefined,
    }
}

/// Two arguments converted to strings, then `f`.
fn text2(args: &[Value], f: impl Fn(&str, &str) -> Value) -> Value {
    match args {
        [x, y] => match (x.to_sql_string(), y.to_sql_string()) {
            (Some(a), Some(b)) => f(&a, &b),
            _ => Value::Undefined,
        },
        _ => Value::Undefined,
    }
}

/// `%`, `mod` and `remainder`: Int for two Ints (sign of the dividend), else a Decimal.
pub(crate) fn remainder(a: &Value, b: &Value) -> Value {
    match (a.to_number(), b.to_number()) {
        (Some(Num::Int(x)), Some(Num::Int(y))) => int(x.checked_rem(y)),
        (Some(x), Some(y)) => Value::decimal(x.f64() % y.f64()),
        _ => Value::Undefined,
    }
}

/// `lpad`/`rpad`: the count is rounded down and held to 0..=1000.
fn pad(args: &[Value], left: bool) -> Value {
    let [s, n] = args else { return Value::Undefined };
    let (Some(s), Some(n)) = (s.to_sql_string(), n.to_int_floor()) else { return Value::Undefined };
    let spaces = " ".repeat(n.clamp(0, 1000) as usize);
    string(Some(if left { spaces + &s } else { s + &spaces }))
}

fn substring(args: &[Value]) -> Value {
    let (s, from, to) = match args {
        [s, from] => (s, from, None),
        [s, from, to] => (s, from, Some(to)),
        _ => return Value::Undefined,
    };
    let Some(s) = s.to_sql_string() else { return Value::Undefined };
    let chars: Vec<char> = s.chars().collect();
    let len = chars.len() as i64;
    let Some(from) = from.to_int_floor() else { return Value::Undefined };
    let to = match to {
        Some(to) => match to.to_int_floor() {
            Some(to) => to,
            None => return Value::Undefined,
        },
        None => len,
    };
    let (from, to) = (from.clamp(0, len), to.clamp(0, len));
    if from >= to {
        return Value::String(String::new());
    }
    Value::String(chars[from as usize..to as usize].iter().collect())
}

fn trunc(args: &[Value]) -> Value {
    let [x, places] = args else { return Value::Undefined };
    let (Some(x), Some(places)) = (x.to_number(), places.to_int_floor()) else { return Value::Undefined };
    match x {
        Num::Int(i) => Value::Int(i),
        Num::Dec(d) => {
            // Beyond 17 places a double has nothing left to cut.
            let places = places.clamp(0, 34);
            if places > 17 {
                return Value::decimal(d);
            }
            let scale = 10f64.powi(places as i32);
            Value::decimal((d * scale).trunc() / scale)
        }
    }
}

fn concat(args: Vec<Value>) -> Value {
    match args.len() {
        0 => return Value::Undefined,
        1 => return args.into_iter().next().unwrap_or(Value::Undefined),
        _ => {}
    }
    if args.iter().any(Value::is_undefined) {
        return Value::Undefined;
    }
    if args.iter().any(|a| matches!(a, Value::Array(_))) {
        let mut out = Vec::new();
        for a in args {
            match a {
                Value::Array(items) => out.extend(items),
                other => out.push(other),
            }
        }
        return Value::Array(out);
    }
    if args.iter().any(|a| matches!(a, Value::String(_))) {
        let mut out = String::new();
        for a in &args {
            let Some(s) = a.to_sql_string() else { return Value::Undefined };
            out.push_str(&s);
            if out.len() > MAX_STRING_BYTES {
                return Value::Undefined;
            }
        }
        return Value::String(out);
    }
    Value::Undefined
}

fn get(args: &[Value]) -> Value {
    match args {
        [Value::Array(items), index] => match index.to_int_nearest() {
            Some(i) if i >= 0 => items.get(i as usize).cloned().unwrap_or(Value::Undefined),
            _ => Value::Undefined,
        },
        [Value::String(s), index] => match index.to_int_nearest() {
            Some(i) if i >= 0 => {
                s.chars().nth(i as usize).map(|c| Value::String(c.to_string())).unwrap_or(Value::Undefined)
            }
            _ => Value::Undefined,
        },
        [object @ Value::Object(_), Value::String(key)] => object.member(key),
        _ => Value::Undefined,
    }
}

fn transform(args: &[Value]) -> Value {
    let [Value::String(mode), Value::Object(extra), Value::Array(items)] = args else { return Value::Undefined };
    if mode != "enrichArray" {
        return Value::Undefined;
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(members) = item else { return Value::Undefined };
        let mut members = members.clone();
        for (k, v) in extra {
            match members.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.clone(),
                None => members.push((k.clone(), v.clone())),
            }
        }
        out.push(Value::Object(members));
    }
    Value::Array(out)
}

fn decode(args: &[Value]) -> Value {
    let [Value::String(encoded), Value::String(scheme)] = args else { return Value::Undefined };
    if !scheme.eq_ignore_ascii_case("base64") {
        return Value::Undefined;
    }
    let Ok(bytes) = BASE64.decode(encoded.trim()) else { return Value::Null };
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        return Value::from_json(&json);
    }
    match String::from_utf8(bytes) {
        Ok(s) => Value::String(s),
        Err(_) => Value::Null,
    }
}

/// `encode(value, 'base64')`; `raw` is the payload's bytes when the value was written `*`.
pub(crate) fn encode(value: &Value, raw: Option<&[u8]>, scheme: &Value) -> Value {
    let Value::String(scheme) = scheme else { return Value::Undefined };
    if !scheme.eq_ignore_ascii_case("base64") {
        return Value::Undefined;
    }
    match raw {
        Some(bytes) => string(Some(BASE64.encode(bytes))),
        None => match value.to_sql_string() {
            Some(s) => string(Some(BASE64.encode(s.as_bytes()))),
            None => Value::Undefined,
        },
    }
}

fn topic(args: &[Value], cx: &Context) -> Value {
    let topic = cx.topic();
    match args {
        [] => Value::String(topic.to_owned()),
        [n] => match n.to_int_floor() {
            Some(n) if n >= 1 => {
                topic.split('/').nth((n - 1) as usize).map(|s| Value::String(s.to_owned())).unwrap_or(Value::Undefined)
            }
            _ => Value::Undefined,
        },
        _ => Value::Undefined,
    }
}

fn optional(s: Option<&str>) -> Value {
    s.map(|s| Value::String(s.to_owned())).unwrap_or(Value::Undefined)
}

/// Calls function `name` (a canonical name from [`FUNCTIONS`]) on evaluated arguments.
pub(crate) fn call(name: &str, args: Vec<Value>, cx: &Context) -> Value {
    let a = args.as_slice();
    match (name, a) {
        ("abs", [x]) => match x.to_number() {
            Some(Num::Int(i)) => i.checked_abs().map(Value::Int).unwrap_or_else(|| Value::decimal((i as f64).abs())),
            Some(Num::Dec(d)) => Value::decimal(d.abs()),
            None => Value::Undefined,
        },
        ("accountid", []) => optional(cx.message.account_id),
        ("acos", _) => double(a, f64::acos),
        ("asin", _) => double(a, f64::asin),
        ("atan", _) => double(a, f64::atan),
        // atan2(y, x) as AWS's example shows: atan2(1, 0) = π/2.
        ("atan2", _) => double2(a, f64::atan2),
        ("bitand", _) => bits(a, |x, y| x & y),
        ("bitor", _) => bits(a, |x, y| x | y),
        ("bitxor", _) => bits(a, |x, y| x ^ y),
        ("bitnot", [x]) => int(x.to_int_floor().map(|i| !i)),
        ("ceil", [x]) => match x.to_number() {
            Some(Num::Int(i)) => Value::Int(i),
            Some(Num::Dec(d)) => Value::decimal(d.ceil()),
            None => Value::Undefined,
        },
        ("chr", [x]) => match x.to_int_floor() {
            Some(c @ 0..=127) => Value::String(char::from(c as u8).to_string()),
            _ => Value::Undefined,
        },
        ("clientid", []) => Value::String(cx.message.client_id.unwrap_or("n/a").to_owned()),
        ("concat", _) => concat(args),
        ("cos", _) => double(a, f64::cos),
        ("cosh", _) => double(a, f64::cosh),
        ("decode", _) => decode(a),
        ("encode", [value, scheme]) => encode(value, None, scheme),
        ("endswith", _) => text2(a, |s, suffix| boolean(s.ends_with(suffix))),
        ("exp", _) => double(a, f64::exp),
        ("floor", [x]) => match x.to_number() {
            Some(Num::Int(i)) => Value::Int(i),
            Some(Num::Dec(d)) => Value::decimal(d.floor()),
            None => Value::Undefined,
        },
        ("get", _) => get(a),
        ("indexof", _) => text2(a, |s, sub| match s.find(sub) {
            Some(byte) => Value::Int(s[..byte].chars().count() as i64),
            None => Value::Int(-1),
        }),
        ("isnull", [x]) => boolean(matches!(x, Value::Null)),
        ("isundefined", [x]) => boolean(x.is_undefined()),
        ("length", _) => text(a, |s| Value::Int(s.chars().count() as i64)),
        ("ln", _) => double(a, f64::ln),
        ("log", _) => double(a, f64::log10),
        ("lower", _) => text(a, |s| Value::String(s.to_lowercase())),
        ("lpad", _) => pad(a, true),
        ("ltrim", _) => text(a, |s| Value::String(s.trim_start_matches([' ', '\t']).to_owned())),
        ("mod" | "remainder", [x, y]) => remainder(x, y),
        ("nanvl", [x, y]) => match x {
            Value::Undefined | Value::Null => y.clone(),
            other => other.clone(),
        },
        ("newuuid", []) => Value::String(cx.uuid()),
        ("numbytes", _) => text(a, |s| Value::Int(s.len() as i64)),
        ("parse_time", [pattern, time, zone @ ..]) if zone.len() <= 1 => {
            let zone = match zone.first().map(Value::to_sql_string) {
                None => None,
                Some(Some(z)) => Some(z),
                Some(None) => return Value::Undefined,
            };
            match (pattern.to_sql_string(), time.to_int_floor()) {
                (Some(pattern), Some(ms)) => super::time_format::format(&pattern, ms, zone.as_deref())
                    .filter(|s| s.len() <= MAX_STRING_BYTES)
                    .map(Value::String)
                    .unwrap_or(Value::Undefined),
                _ => Value::Undefined,
            }
        }
        ("power", _) => double2(a, f64::powf),
        ("principal", []) => optional(cx.message.principal),
        ("rand", []) => Value::decimal(cx.random_unit()),
        ("replace", [s, from, to]) => match (s.to_sql_string(), from.to_sql_string(), to.to_sql_string()) {
            (Some(s), Some(from), Some(to)) => {
                // Bound the result before building it: every match may grow it by `to`.
                let matches = if from.is_empty() { s.chars().count() + 1 } else { s.matches(from.as_str()).count() };
                if s.len().saturating_add(matches.saturating_mul(to.len())) > MAX_STRING_BYTES {
                    return Value::Undefined;
                }
                Value::String(s.replace(from.as_str(), &to))
            }
            _ => Value::Undefined,
        },
        // Half away from zero, as AWS's examples show (round(-1.5) = -2).
        ("round", [x]) => match x.to_number() {
            Some(Num::Int(i)) => Value::Int(i),
            Some(Num::Dec(d)) => Value::decimal(d.round()),
            None => Value::Undefined,
        },
        ("rpad", _) => pad(a, false),
        ("rtrim", _) => text(a, |s| Value::String(s.trim_end_matches([' ', '\t']).to_owned())),
        ("sign", [x]) => match x.to_number() {
            Some(Num::Int(i)) => Value::Int(i.signum()),
            Some(Num::Dec(d)) => Value::Int(if d > 0.0 {
                1
            } else if d < 0.0 {
                -1
            } else {
                0
            }),
            None => Value::Undefined,
        },
        ("sin", _) => double(a, f64::sin),
        ("sinh", _) => double(a, f64::sinh),
        ("sql_version", []) => Value::String(super::SQL_VERSION.to_owned()),
        ("sqrt", _) => double(a, f64::sqrt),
        ("startswith", _) => text2(a, |s, p| boolean(s.starts_with(p))),
        ("substring", _) => substring(a),
        ("tan", _) => double(a, f64::tan),
        ("tanh", _) => double(a, f64::tanh),
        ("timestamp", []) => Value::Int(cx.message.timestamp_ms),
        ("topic", _) => topic(a, cx),
        ("traceid", []) => optional(cx.message.trace_id),
        ("transform", _) => transform(a),
        ("trim", _) => text(a, |s| Value::String(s.trim().to_owned())),
        ("trunc", _) => trunc(a),
        ("upper", _) => text(a, |s| Value::String(s.to_uppercase())),
        _ => Value::Undefined,
    }
}
