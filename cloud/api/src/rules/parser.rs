//! A recursive-descent parser for AWS IoT SQL 2016-03-23 ("AWS IoT SQL reference": SELECT,
//! FROM and WHERE clauses, operators, literals, case statements, JSON extensions, nested object
//! queries).
//!
//! Precedence, loosest first: `OR`, `AND`, `NOT`, comparisons (`= <> < <= > >=`), `+ -`,
//! `* / %`, unary `-`, then member access (`a.b`) and calls. Keywords ignore case; JSON keys
//! and string contents do not.

use super::SqlError;
use super::functions::{self, CastType};
use super::lexer::{Tok, Token, tokenize};
use super::value::{Value, parse_decimal};

/// Deepest nesting of expressions and nested queries a statement may have: deeper statements
/// are refused rather than risking the stack.
pub const MAX_DEPTH: usize = 64;

/// A parsed rule statement: `SELECT … [FROM 'filter'] [WHERE …]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// What the rule sends to its actions.
    pub select: Projection,
    /// The topic filter of the FROM clause; `None` for a rule reached only through Basic Ingest.
    pub from: Option<String>,
    /// The condition, if any.
    pub condition: Option<Expr>,
}

/// The SELECT list.
#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    /// `SELECT VALUE expr`: the value itself, not an object.
    Value(Expr),
    /// `SELECT item, item, …`: an object.
    Items(Vec<Item>),
}

/// One item of a SELECT list.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `*`: every member of the payload (or the payload itself when it is not an object).
    Star,
    /// `expr [AS a.b]`: the value under the key path `name` (one or more keys).
    Expr {
        /// The value.
        expr: Expr,
        /// The output key path: the `AS` name split at dots, or a name derived from `expr`.
        name: Vec<String>,
    },
}

/// A nested object query, `(SELECT … FROM expr [WHERE …])`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// What each element gives.
    pub select: Projection,
    /// The array (each element in turn) or object the query reads.
    pub from: Expr,
    /// The condition each element must meet.
    pub condition: Option<Expr>,
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `AND`.
    And,
    /// `OR`.
    Or,
    /// `=`.
    Eq,
    /// `<>`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/`.
    Div,
    /// `%`.
    Rem,
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal number, string, Boolean or `NULL`.
    Literal(Value),
    /// `*` as a value: the whole payload (or, inside a nested query, the current element).
    Star,
    /// A key of the payload (or of the current element).
    Field(String),
    /// `expr.key`.
    Member(Box<Expr>, String),
    /// `NOT expr`.
    Not(Box<Expr>),
    /// `-expr`.
    Neg(Box<Expr>),
    /// `left op right`.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// A function call; the name is the function's canonical (lower-case) name.
    Call(&'static str, Vec<Expr>),
    /// `cast(expr AS type)`.
    Cast(Box<Expr>, CastType),
    /// `CASE subject WHEN t THEN r … [ELSE e] END`.
    Case {
        /// The value compared with each `WHEN`.
        subject: Box<Expr>,
        /// `(WHEN, THEN)` pairs, at least one.
        arms: Vec<(Expr, Expr)>,
        /// The `ELSE` value.
        otherwise: Option<Box<Expr>>,
    },
    /// `[a, b, …]`.
    Array(Vec<Expr>),
    /// `{'key': expr, …}`.
    Object(Vec<(String, Expr)>),
    /// A nested object query.
    Query(Box<Query>),
}

const KEYWORDS: &[&str] = &[
    "SELECT", "FROM", "WHERE", "AS", "AND", "OR", "NOT", "CASE", "WHEN", "THEN", "ELSE", "END", "TRUE", "FALSE", "NULL",
];

/// Parses a whole rule statement.
pub fn parse(sql: &str) -> Result<Statement, SqlError> {
    let mut p = Parser { tokens: tokenize(sql)?, at: 0, depth: 0 };
    p.expect_keyword("SELECT")?;
    let select = p.projection()?;
    let from = if p.eat_keyword("FROM") {
        let token = p.next();
        match token.kind {
            Tok::Str(filter) => {
                crate::topic::validate_topic_filter(&filter)
                    .map_err(|e| SqlError::new(token.pos, format!("FROM: {e}")))?;
                Some(filter)
            }
            _ => {
                return Err(SqlError::new(token.pos, "FROM takes a topic filter in single quotes, as in FROM 'a/+/b'"));
            }
        }
    } else {
        None
    };
    let condition = if p.eat_keyword("WHERE") { Some(p.expr()?) } else { None };
    let end = p.peek();
    if end.kind != Tok::End {
        let what = match (&from, &condition) {
            (None, None) => "FROM, WHERE or the end (a missing comma between items?)",
            (Some(_), None) => "WHERE or the end",
            _ => "the end",
        };
        return Err(SqlError::new(end.pos, format!("expected {what}, found {}", describe(&end.kind))));
    }
    Ok(Statement { select, from, condition })
}

/// Parses one expression on its own (the `${expression}` of a substitution template).
pub fn parse_expression(text: &str) -> Result<Expr, SqlError> {
    let mut p = Parser { tokens: tokenize(text)?, at: 0, depth: 0 };
    let expr = p.expr()?;
    let end = p.peek();
    if end.kind != Tok::End {
        return Err(SqlError::new(
            end.pos,
            format!("expected the end of the expression, found {}", describe(&end.kind)),
        ));
    }
    Ok(expr)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(s) => format!("{s:?}"),
        Tok::Number(n) => format!("the number {n}"),
        Tok::Str(s) => format!("the string {s:?}"),
        Tok::Sym(s) => format!("{s:?}"),
        Tok::End => "the end of the statement".to_owned(),
    }
}

fn is_keyword(name: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(name))
}

impl Parser {
    fn peek(&self) -> Token {
        self.peek_at(0)
    }

    fn peek_at(&self, ahead: usize) -> Token {
        match self.tokens.get(self.at + ahead).or(self.tokens.last()) {
            Some(t) => t.clone(),
            None => Token { kind: Tok::End, pos: 1 },
        }
    }

    fn next(&mut self) -> Token {
        let t = self.peek();
        if self.at < self.tokens.len() {
            self.at += 1;
        }
        t
    }

    fn is_keyword_at(&self, ahead: usize, keyword: &str) -> bool {
        matches!(&self.peek_at(ahead).kind, Tok::Ident(s) if s.eq_ignore_ascii_case(keyword))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let yes = self.is_keyword_at(0, keyword);
        if yes {
            self.at += 1;
        }
        yes
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), SqlError> {
        if self.eat_keyword(keyword) {
            return Ok(());
        }
        let t = self.peek();
        Err(SqlError::new(t.pos, format!("expected {keyword}, found {}", describe(&t.kind))))
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        let yes = matches!(self.peek().kind, Tok::Sym(s) if s == sym);
        if yes {
            self.at += 1;
        }
        yes
    }

    fn expect_sym(&mut self, sym: &str) -> Result<(), SqlError> {
        if self.eat_sym(sym) {
            return Ok(());
        }
        let t = self.peek();
        Err(SqlError::new(t.pos, format!("expected {sym:?}, found {}", describe(&t.kind))))
    }

    fn enter(&mut self) -> Result<(), SqlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SqlError::new(self.peek().pos, format!("expression nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn projection(&mut self) -> Result<Projection, SqlError> {
        if self.is_keyword_at(0, "VALUE") && !self.looks_like_item_end(1) {
            self.at += 1;
            return Ok(Projection::Value(self.expr()?));
        }
        let mut items = Vec::new();
        loop {
            let index = items.len() + 1;
            if self.peek().kind == Tok::Sym("*")
                && matches!(self.peek_at(1).kind, Tok::Sym(",") | Tok::Ident(_) | Tok::End | Tok::Sym(")"))
            {
                self.at += 1;
                items.push(Item::Star);
            } else {
                let pos = self.peek().pos;
                let expr = self.expr()?;
                let name = if self.eat_keyword("AS") { self.output_name()? } else { default_name(&expr, index) };
                if name.is_empty() {
                    return Err(SqlError::new(pos, "this item needs a name: add AS name"));
                }
                items.push(Item::Expr { expr, name });
            }
            if !self.eat_sym(",") {
                break;
            }
        }
        Ok(Projection::Items(items))
    }

    /// Whether the token `ahead` ends a SELECT item, so that a preceding `VALUE` is a key.
    fn looks_like_item_end(&self, ahead: usize) -> bool {
        match self.peek_at(ahead).kind {
            Tok::Sym(",") | Tok::Sym(".") | Tok::End => true,
            Tok::Ident(s) => s.eq_ignore_ascii_case("FROM") || s.eq_ignore_ascii_case("AS"),
            _ => false,
        }
    }

    /// `AS a` or `AS a.b.c`: a key path (names or quoted strings).
    fn output_name(&mut self) -> Result<Vec<String>, SqlError> {
        let mut path = Vec::new();
        loop {
            let t = self.next();
            match t.kind {
                Tok::Ident(s) if !is_keyword(&s) => path.push(s),
                Tok::Str(s) => path.push(s),
                other => {
                    return Err(SqlError::new(t.pos, format!("expected a name after AS, found {}", describe(&other))));
                }
            }
            if !self.eat_sym(".") {
                return Ok(path);
            }
        }
    }

    fn expr(&mut self) -> Result<Expr, SqlError> {
        self.enter()?;
        let result = self.or();
        self.depth -= 1;
        result
    }

    fn or(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.and()?;
        while self.eat_keyword("OR") {
            let right = self.and()?;
            left = Expr::Binary(BinOp::Or, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.not()?;
        while self.eat_keyword("AND") {
            let right = self.not()?;
            left = Expr::Binary(BinOp::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, SqlError> {
        if self.eat_keyword("NOT") {
            self.enter()?;
            let inner = self.not();
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, SqlError> {
        let left = self.additive()?;
        let op = match self.peek().kind {
            Tok::Sym("=") => BinOp::Eq,
            Tok::Sym("<>") => BinOp::Ne,
            Tok::Sym("<") => BinOp::Lt,
            Tok::Sym("<=") => BinOp::Le,
            Tok::Sym(">") => BinOp::Gt,
            Tok::Sym(">=") => BinOp::Ge,
            _ => return Ok(left),
        };
        self.at += 1;
        let right = self.additive()?;
        Ok(Expr::Binary(op, Box::new(left), Box::new(right)))
    }

    fn additive(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek().kind {
                Tok::Sym("+") => BinOp::Add,
                Tok::Sym("-") => BinOp::Sub,
                _ => return Ok(left),
            };
            self.at += 1;
            let right = self.multiplicative()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek().kind {
                Tok::Sym("*") => BinOp::Mul,
                Tok::Sym("/") => BinOp::Div,
                Tok::Sym("%") => BinOp::Rem,
                _ => return Ok(left),
            };
            self.at += 1;
            let right = self.unary()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, SqlError> {
        if self.eat_sym("-") {
            // A literal number keeps its sign (so that -9223372036854775808 is an Int).
            if let Tok::Number(n) = self.peek().kind {
                self.at += 1;
                let literal = number_literal(&format!("-{n}"));
                return self.postfix(literal);
            }
            self.enter()?;
            let inner = self.unary();
            self.depth -= 1;
            return Ok(Expr::Neg(Box::new(inner?)));
        }
        let primary = self.primary()?;
        self.postfix(primary)
    }

    fn postfix(&mut self, mut expr: Expr) -> Result<Expr, SqlError> {
        while self.eat_sym(".") {
            let t = self.next();
            match t.kind {
                Tok::Ident(key) => expr = Expr::Member(Box::new(expr), key),
                other => {
                    return Err(SqlError::new(
                        t.pos,
                        format!(
                            "expected a key after '.', found {}; use get(value, \"key\") for other keys",
                            describe(&other)
                        ),
                    ));
                }
            }
        }
        if self.peek().kind == Tok::Sym("[") {
            return Err(SqlError::new(self.peek().pos, "indexing with [ ] is not supported: use get(array, index)"));
        }
        Ok(expr)
    }

    fn primary(&mut self) -> Result<Expr, SqlError> {
        let t = self.next();
        match t.kind {
            Tok::Number(n) => Ok(number_literal(&n)),
            Tok::Str(s) => Ok(Expr::Literal(Value::String(s))),
            Tok::Sym("*") => Ok(Expr::Star),
            Tok::Sym("(") => {
                if self.is_keyword_at(0, "SELECT") {
                    self.at += 1;
                    let query = self.nested_query()?;
                    self.expect_sym(")")?;
                    return Ok(Expr::Query(Box::new(query)));
                }
                let inner = self.expr()?;
                self.expect_sym(")")?;
                Ok(inner)
            }
            Tok::Sym("[") => {
                let items = self.list("]")?;
                Ok(Expr::Array(items))
            }
            Tok::Sym("{") => self.object_literal(),
            Tok::Ident(name) => {
                if self.peek().kind == Tok::Sym("(") {
                    return self.call(&name, t.pos);
                }
                match name.to_ascii_uppercase().as_str() {
                    "TRUE" => Ok(Expr::Literal(Value::Bool(true))),
                    "FALSE" => Ok(Expr::Literal(Value::Bool(false))),
                    "NULL" => Ok(Expr::Literal(Value::Null)),
                    "CASE" => self.case(),
                    _ if is_keyword(&name) => Err(SqlError::new(
                        t.pos,
                        format!(
                            "expected a value, found the keyword {}; a key named so is read with get(*, \"{name}\")",
                            name.to_ascii_uppercase()
                        ),
                    )),
                    _ => Ok(Expr::Field(name)),
                }
            }
            other => Err(SqlError::new(t.pos, format!("expected a value, found {}", describe(&other)))),
        }
    }

    fn nested_query(&mut self) -> Result<Query, SqlError> {
        self.enter()?;
        let select = self.projection()?;
        self.expect_keyword("FROM")?;
        let from = self.expr()?;
        let condition = if self.eat_keyword("WHERE") { Some(self.expr()?) } else { None };
        self.depth -= 1;
        Ok(Query { select, from, condition })
    }

    fn list(&mut self, close: &str) -> Result<Vec<Expr>, SqlError> {
        let mut items = Vec::new();
        if self.eat_sym(close) {
            return Ok(items);
        }
        loop {
            items.push(self.expr()?);
            if self.eat_sym(close) {
                return Ok(items);
            }
            self.expect_sym(",").map_err(|e| SqlError { message: format!("{} (or {close:?})", e.message), ..e })?;
        }
    }

    fn object_literal(&mut self) -> Result<Expr, SqlError> {
        let mut members = Vec::new();
        if self.eat_sym("}") {
            return Ok(Expr::Object(members));
        }
        loop {
            let t = self.next();
            let key = match t.kind {
                Tok::Str(s) | Tok::Ident(s) => s,
                other => {
                    return Err(SqlError::new(t.pos, format!("expected an object key, found {}", describe(&other))));
                }
            };
            self.expect_sym(":")?;
            members.push((key, self.expr()?));
            if self.eat_sym("}") {
                return Ok(Expr::Object(members));
            }
            self.expect_sym(",")?;
        }
    }

    fn case(&mut self) -> Result<Expr, SqlError> {
        if self.is_keyword_at(0, "WHEN") {
            return Err(SqlError::new(
                self.peek().pos,
                "CASE needs a value to compare before WHEN: CASE v WHEN t THEN r … END",
            ));
        }
        let subject = self.expr()?;
        let mut arms = Vec::new();
        while self.eat_keyword("WHEN") {
            let test = self.expr()?;
            self.expect_keyword("THEN")?;
            arms.push((test, self.expr()?));
        }
        if arms.is_empty() {
            let t = self.peek();
            return Err(SqlError::new(t.pos, format!("CASE needs at least one WHEN, found {}", describe(&t.kind))));
        }
        let otherwise = if self.eat_keyword("ELSE") { Some(Box::new(self.expr()?)) } else { None };
        self.expect_keyword("END")?;
        Ok(Expr::Case { subject: Box::new(subject), arms, otherwise })
    }

    fn call(&mut self, name: &str, pos: usize) -> Result<Expr, SqlError> {
        let Some(canonical) = functions::lookup(name) else {
            let why = if functions::NEEDS_SERVICE.iter().any(|f| f.eq_ignore_ascii_case(name)) {
                "calls another AWS service, which this engine does not do"
            } else {
                "is not a function of AWS IoT SQL 2016-03-23 that this engine knows"
            };
            return Err(SqlError::new(pos, format!("{name}() {why}")));
        };
        self.expect_sym("(")?;
        if canonical == "cast" {
            let value = self.expr()?;
            self.expect_keyword("AS")?;
            let t = self.next();
            let ty = match &t.kind {
                Tok::Ident(s) => CastType::parse(s),
                _ => None,
            };
            let Some(ty) = ty else {
                return Err(SqlError::new(
                    t.pos,
                    format!("cast needs a type (String, Int, Decimal, Boolean, …), found {}", describe(&t.kind)),
                ));
            };
            self.expect_sym(")")?;
            return Ok(Expr::Cast(Box::new(value), ty));
        }
        let args = self.list(")")?;
        Ok(Expr::Call(canonical, args))
    }
}

fn number_literal(text: &str) -> Expr {
    Expr::Literal(match parse_decimal(text) {
        Some(n) => n.value(),
        // Only a number too large for a double lands here.
        None => Value::Undefined,
    })
}

/// The key of an item without `AS`: a key's own name (the last one of a path), a function's
/// name, or `_N` for the N-th item otherwise.
fn default_name(expr: &Expr, index: usize) -> Vec<String> {
    match expr {
        Expr::Field(name) | Expr::Member(_, name) => vec![name.clone()],
        Expr::Call(name, _) => vec![(*name).to_owned()],
        _ => vec![format!("_{index}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_ignore_case_and_keys_keep_it() {
        let a = parse("select Color as C from 'a/b' where Temp > 1").unwrap();
        let b = parse("SELECT Color AS C FROM 'a/b' WHERE Temp > 1").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.from.as_deref(), Some("a/b"));
        assert_eq!(
            a.select,
            Projection::Items(vec![Item::Expr { expr: Expr::Field("Color".into()), name: vec!["C".into()] }])
        );
    }

    #[test]
    fn arithmetic_binds_tighter_than_comparison_and_and_tighter_than_or() {
        let s = parse("SELECT * FROM 'a' WHERE a = 1 OR b + 2 * 3 > 4 AND NOT c").unwrap();
        let Some(Expr::Binary(BinOp::Or, _, right)) = s.condition else { panic!("{s:?}") };
        let Expr::Binary(BinOp::And, cmp, not) = *right else { panic!() };
        assert!(matches!(*not, Expr::Not(_)));
        let Expr::Binary(BinOp::Gt, sum, _) = *cmp else { panic!() };
        let Expr::Binary(BinOp::Add, _, product) = *sum else { panic!() };
        assert!(matches!(*product, Expr::Binary(BinOp::Mul, _, _)));
    }

    #[test]
    fn bad_statements_are_refused_with_position_and_reason() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "expected SELECT"),
            ("SELECT", 7, "expected a value"),
            ("SELECT * FROM a/b", 15, "single quotes"),
            ("SELECT * FROM 'a/#/b'", 15, "invalid wildcard"),
            ("SELECT a FROM 'x' WHERE", 24, "expected a value"),
            ("SELECT a b c FROM 'x'", 10, "expected FROM, WHERE or the end"),
            ("SELECT nosuch(1) FROM 'x'", 8, "nosuch() is not a function"),
            ("SELECT aws_lambda('arn', *) FROM 'x'", 8, "another AWS service"),
            ("SELECT cast(a AS blob) FROM 'x'", 18, "cast needs a type"),
            ("SELECT CASE WHEN a THEN 1 END FROM 'x'", 13, "CASE needs a value"),
            ("SELECT CASE a ELSE 1 END FROM 'x'", 15, "at least one WHEN"),
            ("SELECT a[0] FROM 'x'", 9, "use get(array, index)"),
            ("SELECT a.0 FROM 'x'", 10, "use get(value"),
            ("SELECT (1 FROM 'x'", 11, "expected \")\""),
            ("SELECT from FROM 'x'", 8, "get(*, \"from\")"),
            ("SELECT 1 + FROM 'x'", 12, "found the keyword FROM"),
            ("SELECT {'a' 1} FROM 'x'", 13, "expected \":\""),
        ];
        for (sql, pos, text) in cases {
            let err = parse(sql).unwrap_err();
            assert_eq!(err.position, *pos, "{sql:?}: {err}");
            assert!(err.message.contains(text), "{sql:?}: {err}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("SELECT {}1{} FROM 'x'", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
        let negations = format!("SELECT {}1 FROM 'x'", "- ".repeat(10_000));
        assert!(parse(&negations).is_err());
        let nots = format!("SELECT * FROM 'x' WHERE {} true", "NOT ".repeat(10_000));
        assert!(parse(&nots).is_err());
        let arrays = format!("SELECT {}{} FROM 'x'", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(&arrays).is_err());
        let ok = format!("SELECT {}1{} AS x FROM 'x'", "(".repeat(30), ")".repeat(30));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn value_is_a_keyword_only_before_an_expression() {
        assert!(matches!(parse("SELECT VALUE color FROM 'a'").unwrap().select, Projection::Value(_)));
        let s = parse("SELECT value, other FROM 'a'").unwrap();
        let Projection::Items(items) = s.select else { panic!() };
        assert_eq!(items[0], Item::Expr { expr: Expr::Field("value".into()), name: vec!["value".into()] });
    }

    #[test]
    fn from_is_optional_for_basic_ingest_rules() {
        assert_eq!(parse("SELECT * WHERE a > 1").unwrap().from, None);
    }
}
