//! Evaluates parsed statements against one message, with the semantics of the AWS IoT SQL
//! reference: missing keys are Undefined; Undefined leaves its key out of the result; an
//! operator or comparison with an Undefined operand is Undefined; the WHERE clause is evaluated
//! first and anything but true means no match; a payload that is not JSON can only be selected
//! whole (`SELECT *`) or through functions that do not read it (`encode(*, 'base64')`,
//! `timestamp()`, …).

use std::cell::Cell;

use super::functions;
use super::parser::{BinOp, Expr, Item, Projection, Query, Statement};
use super::value::{Num, Value};
use super::{EvalError, Message, Output};

/// The most work one evaluation may do, in steps: one per expression evaluated, plus the
/// number of members or items of every value read from the payload. Nested queries multiply
/// (each level runs once per element of the level above), so without a bound a short statement
/// could run for hours; a real rule over a large array stays far below it.
pub const MAX_EVAL_STEPS: u64 = 200_000;

/// What one evaluation reads: the message, a generator for `newuuid()` and `rand()`, and the
/// work done so far.
pub(crate) struct Context<'a> {
    pub message: &'a Message<'a>,
    rng: Cell<u64>,
    steps: Cell<u64>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(message: &'a Message<'a>) -> Self {
        Context { message, rng: Cell::new(message.random_seed), steps: Cell::new(0) }
    }

    /// Counts `n` steps of work; an error once the budget is spent.
    fn spend(&self, n: usize) -> Result<(), EvalError> {
        let steps = self.steps.get().saturating_add(n as u64);
        self.steps.set(steps);
        if steps > MAX_EVAL_STEPS {
            return Err(EvalError::TooComplex);
        }
        Ok(())
    }

    /// Counts a value read from the payload: one step per member or item at its top level.
    fn read(&self, value: Value) -> Result<Value, EvalError> {
        match &value {
            Value::Array(items) => self.spend(items.len())?,
            Value::Object(members) => self.spend(members.len())?,
            _ => {}
        }
        Ok(value)
    }

    /// The topic as `topic()` sees it: without a Basic Ingest prefix `$aws/rules/{rule}/`.
    pub(crate) fn topic(&self) -> &'a str {
        let topic = self.message.topic;
        match crate::topic::basic_ingest_rule(topic) {
            // The prefix is ASCII, so these byte offsets fall on character boundaries.
            Some(rule) => topic.get(crate::topic::BASIC_INGEST_PREFIX.len() + rule.len() + 1..).unwrap_or(""),
            None => topic,
        }
    }

    /// splitmix64: a small, well-mixed generator, seeded by the message.
    fn next_random(&self) -> u64 {
        let mut z = self.rng.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.rng.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random number in [0, 1).
    pub(crate) fn random_unit(&self) -> f64 {
        (self.next_random() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A random (version 4) UUID in its usual text form.
    pub(crate) fn uuid(&self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_random().to_be_bytes());
        bytes[8..].copy_from_slice(&self.next_random().to_be_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
    }
}

/// The payload a statement reads: JSON, or bytes that are not (`None` as the document).
pub(crate) fn payload_document(payload: &[u8]) -> Option<Value> {
    serde_json::from_slice::<serde_json::Value>(payload).ok().map(|json| Value::from_json(&json))
}

/// Evaluates a whole statement (see [`super::evaluate`]).
pub(crate) fn statement(statement: &Statement, message: &Message) -> Result<Option<Output>, EvalError> {
    let cx = Context::new(message);
    let document = payload_document(message.payload);
    let doc = document.as_ref();
    if let Some(condition) = &statement.condition
        && eval(condition, doc, &cx)?.to_bool() != Some(true)
    {
        return Ok(None);
    }
    if doc.is_none()
        && let Projection::Items(items) = &statement.select
        && items.iter().any(|i| matches!(i, Item::Star))
    {
        if items.len() == 1 {
            return Ok(Some(Output::Bytes(message.payload.to_vec())));
        }
        return Err(EvalError::StarWithOtherItems);
    }
    let value = project(&statement.select, doc, &cx)?;
    Ok(Some(match value.to_json() {
        Some(json) => Output::Json(json),
        // Undefined on its own serializes as the empty string.
        None => Output::Bytes(Vec::new()),
    }))
}

/// Evaluates a SELECT list against a document.
fn project(select: &Projection, doc: Option<&Value>, cx: &Context) -> Result<Value, EvalError> {
    let items = match select {
        Projection::Value(expr) => return eval(expr, doc, cx),
        Projection::Items(items) => items,
    };
    let mut out: Vec<(String, Value)> = Vec::new();
    for item in items {
        match item {
            Item::Star => match doc {
                Some(Value::Object(members)) => {
                    cx.spend(members.len())?;
                    for (k, v) in members {
                        insert(&mut out, std::slice::from_ref(k), v.clone());
                    }
                }
                // `SELECT *` of a JSON payload that is not an object is that payload.
                Some(other) if items.len() == 1 => return Ok(other.clone()),
                Some(_) => return Err(EvalError::StarWithOtherItems),
                None => return Err(EvalError::PayloadNotJson { reference: "*".to_owned() }),
            },
            Item::Expr { expr, name } => {
                let value = eval(expr, doc, cx)?;
                if !value.is_undefined() {
                    insert(&mut out, name, value);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Puts `value` at the key path `path` of an object, creating (or replacing non-object)
/// intermediate members; a later item with the same key replaces an earlier one.
fn insert(members: &mut Vec<(String, Value)>, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else { return };
    let index = match members.iter().position(|(k, _)| k == first) {
        Some(i) => i,
        None => {
            members.push((first.clone(), Value::Undefined));
            members.len() - 1
        }
    };
    let Some(slot) = members.get_mut(index) else { return };
    if rest.is_empty() {
        slot.1 = value;
        return;
    }
    if !matches!(slot.1, Value::Object(_)) {
        slot.1 = Value::Object(Vec::new());
    }
    if let Value::Object(inner) = &mut slot.1 {
        insert(inner, rest, value);
    }
}

fn query(q: &Query, doc: Option<&Value>, cx: &Context) -> Result<Value, EvalError> {
    let one = |element: &Value| -> Result<Value, EvalError> {
        if let Some(condition) = &q.condition
            && eval(condition, Some(element), cx)?.to_bool() != Some(true)
        {
            return Ok(Value::Undefined);
        }
        project(&q.select, Some(element), cx)
    };
    match eval(&q.from, doc, cx)? {
        Value::Array(elements) => {
            let mut out = Vec::new();
            for element in &elements {
                cx.spend(1)?;
                let v = one(element)?;
                if !v.is_undefined() {
                    out.push(v);
                }
            }
            Ok(Value::Array(out))
        }
        object @ Value::Object(_) => one(&object),
        _ => Ok(Value::Undefined),
    }
}

/// Evaluates an expression; `doc` is the JSON document keys are read from (`None`: the payload
/// is not JSON).
pub(crate) fn eval(expr: &Expr, doc: Option<&Value>, cx: &Context) -> Result<Value, EvalError> {
    cx.spend(1)?;
    Ok(match expr {
        Expr::Literal(v) => v.clone(),
        Expr::Star => match doc {
            Some(d) => cx.read(d.clone())?,
            None => return Err(EvalError::PayloadNotJson { reference: "*".to_owned() }),
        },
        Expr::Field(key) => match doc {
            Some(d) => cx.read(d.member(key))?,
            None => return Err(EvalError::PayloadNotJson { reference: key.clone() }),
        },
        Expr::Member(base, key) => cx.read(eval(base, doc, cx)?.member(key))?,
        Expr::Not(inner) => match eval(inner, doc, cx)?.to_bool() {
            Some(b) => Value::Bool(!b),
            None => Value::Undefined,
        },
        Expr::Neg(inner) => match eval(inner, doc, cx)?.to_number() {
            Some(Num::Int(i)) => i.checked_neg().map(Value::Int).unwrap_or_else(|| Value::decimal(-(i as f64))),
            Some(Num::Dec(d)) => Value::decimal(-d),
            None => Value::Undefined,
        },
        Expr::Binary(op, left, right) => {
            let l = eval(left, doc, cx)?;
            let r = eval(right, doc, cx)?;
            binary(*op, &l, &r)
        }
        Expr::Call("encode", args) => match args.as_slice() {
            [Expr::Star, scheme] => {
                let scheme = eval(scheme, doc, cx)?;
                functions::encode(&Value::Undefined, Some(cx.message.payload), &scheme)
            }
            _ => functions::call("encode", eval_all(args, doc, cx)?, cx),
        },
        Expr::Call(name, args) => functions::call(name, eval_all(args, doc, cx)?, cx),
        Expr::Cast(inner, ty) => functions::cast(eval(inner, doc, cx)?, *ty),
        Expr::Case { subject, arms, otherwise } => {
            let subject = eval(subject, doc, cx)?;
            if subject.is_undefined() {
                return Ok(Value::Undefined);
            }
            for (test, result) in arms {
                if equal(&subject, &eval(test, doc, cx)?) == Some(true) {
                    return eval(result, doc, cx);
                }
            }
            match otherwise {
                Some(e) => eval(e, doc, cx)?,
                None => Value::Undefined,
            }
        }
        Expr::Array(items) => {
            Value::Array(eval_all(items, doc, cx)?.into_iter().filter(|v| !v.is_undefined()).collect())
        }
        Expr::Object(members) => {
            let mut out = Vec::new();
            for (key, e) in members {
                let v = eval(e, doc, cx)?;
                if !v.is_undefined() {
                    insert(&mut out, std::slice::from_ref(key), v);
                }
            }
            Value::Object(out)
        }
        Expr::Query(q) => query(q, doc, cx)?,
    })
}

fn eval_all(exprs: &[Expr], doc: Option<&Value>, cx: &Context) -> Result<Vec<Value>, EvalError> {
    exprs.iter().map(|e| eval(e, doc, cx)).collect()
}

/// The `=` of the operator table: `None` (Undefined) when either side is Undefined; numbers
/// compare by value across Int and Decimal; arrays in order; objects ignoring key order;
/// values of different types are not equal.
pub(crate) fn equal(a: &Value, b: &Value) -> Option<bool> {
    Some(match (a, b) {
        (Value::Undefined, _) | (_, Value::Undefined) => return None,
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Int(_) | Value::Decimal(_), Value::Int(_) | Value::Decimal(_)) => {
            a.to_number().map(Num::f64) == b.to_number().map(Num::f64)
        }
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q) == Some(true))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.iter().any(|(k2, v2)| k == k2 && equal(v, v2) == Some(true)))
        }
        _ => false,
    })
}

fn binary(op: BinOp, l: &Value, r: &Value) -> Value {
    match op {
        BinOp::And | BinOp::Or => match (l.to_bool(), r.to_bool()) {
            (Some(x), Some(y)) => Value::Bool(if op == BinOp::And { x && y } else { x || y }),
            _ => Value::Undefined,
        },
        BinOp::Eq => equal(l, r).map(Value::Bool).unwrap_or(Value::Undefined),
        BinOp::Ne => equal(l, r).map(|e| Value::Bool(!e)).unwrap_or(Value::Undefined),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ordering = match (l.to_number(), r.to_number()) {
                (Some(Num::Int(x)), Some(Num::Int(y))) => x.partial_cmp(&y),
                (Some(x), Some(y)) => x.f64().partial_cmp(&y.f64()),
                _ => None,
            };
            match ordering {
                Some(o) => Value::Bool(match op {
                    BinOp::Lt => o.is_lt(),
                    BinOp::Le => o.is_le(),
                    BinOp::Gt => o.is_gt(),
                    _ => o.is_ge(),
                }),
                None => Value::Undefined,
            }
        }
        BinOp::Add if matches!(l, Value::String(_)) || matches!(r, Value::String(_)) => {
            match (l.to_sql_string(), r.to_sql_string()) {
                (Some(x), Some(y)) if x.len() + y.len() <= functions::MAX_STRING_BYTES => Value::String(x + &y),
                _ => Value::Undefined,
            }
        }
        BinOp::Add => arithmetic(l, r, i64::checked_add, |x, y| x + y),
        BinOp::Sub => arithmetic(l, r, i64::checked_sub, |x, y| x - y),
        BinOp::Mul => arithmetic(l, r, i64::checked_mul, |x, y| x * y),
        BinOp::Div => match (l.to_number(), r.to_number()) {
            (Some(_), Some(Num::Int(0))) => Value::Undefined,
            (Some(Num::Int(x)), Some(Num::Int(y))) if both_ints(l, r) => match x.checked_div(y) {
                Some(q) => Value::Int(q),
                None => Value::decimal(x as f64 / y as f64),
            },
            (Some(x), Some(y)) => Value::decimal(x.f64() / y.f64()),
            _ => Value::Undefined,
        },
        BinOp::Rem => functions::remainder(l, r),
    }
}

/// `+ - *` on numbers (strings converted): Int when both are Ints and the result fits, else a
/// Decimal.
fn arithmetic(l: &Value, r: &Value, int: fn(i64, i64) -> Option<i64>, dec: fn(f64, f64) -> f64) -> Value {
    match (l.to_number(), r.to_number()) {
        (Some(Num::Int(x)), Some(Num::Int(y))) if both_ints(l, r) => match int(x, y) {
            Some(v) => Value::Int(v),
            None => Value::decimal(dec(x as f64, y as f64)),
        },
        (Some(x), Some(y)) => Value::decimal(dec(x.f64(), y.f64())),
        _ => Value::Undefined,
    }
}

/// Int arithmetic applies to two Ints; strings that read as numbers give Decimals.
fn both_ints(l: &Value, r: &Value) -> bool {
    matches!((l, r), (Value::Int(_), Value::Int(_)))
}
