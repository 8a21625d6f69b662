//! Substitution templates in rule action parameters, `${expression}` ("Substitution templates"
//! in the AWS IoT Core Developer Guide). The expression is any SELECT/WHERE expression and is
//! evaluated on the original message, separately from the rule's SELECT: an `AS` alias of the
//! SELECT cannot be referenced, as AWS documents.
//!
//! The value is written as text: a string as it is, other values by the standard conversion to
//! String (arrays and objects as JSON), and Undefined (or Null) as the empty string. A `$` not
//! followed by `{` is kept as it is.

use super::eval::{Context, eval, payload_document};
use super::parser::{Expr, parse_expression};
use super::{EvalError, Message, SqlError};

/// A parsed action parameter: literal text and expressions.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Expr(Expr),
}

/// Why a template could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template's text is wrong (an unterminated `${`, a bad expression).
    #[error("substitution template: {0}")]
    Parse(#[from] SqlError),
    /// An expression could not be evaluated on this message.
    #[error("substitution template: {0}")]
    Eval(#[from] EvalError),
}

impl Template {
    /// Parses a parameter; positions in errors count characters of the whole parameter.
    pub fn parse(text: &str) -> Result<Template, SqlError> {
        let chars: Vec<char> = text.chars().collect();
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < chars.len() {
            if chars[i] == '$' && chars.get(i + 1) == Some(&'{') {
                let start = i + 2;
                let end = closing_brace(&chars, start)
                    .ok_or_else(|| SqlError::new(i + 1, "unterminated ${…}: add the closing }"))?;
                let inner: String = chars[start..end].iter().collect();
                let expr = parse_expression(&inner)
                    .map_err(|e| SqlError::new(start + e.position, format!("in ${{{inner}}}: {}", e.message)))?;
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Expr(expr));
                i = end + 1;
            } else {
                literal.push(chars[i]);
                i += 1;
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Whether the parameter has no `${…}` at all.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The parameter with every `${expression}` replaced by its value on `message`.
    pub fn render(&self, message: &Message) -> Result<String, EvalError> {
        let cx = Context::new(message);
        let document = if self.is_literal() { None } else { payload_document(message.payload) };
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr(e) => {
                    if let Some(s) = eval(e, document.as_ref(), &cx)?.to_sql_string() {
                        out.push_str(&s);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Parses and renders `template` for `message` in one step.
pub fn substitute(template: &str, message: &Message) -> Result<String, TemplateError> {
    Ok(Template::parse(template)?.render(message)?)
}

/// The index of the `}` that closes a `${` whose expression starts at `start`: braces of object
/// literals nest, and braces inside quoted strings do not count.
fn closing_brace(chars: &[char], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) => {
                if c == '\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                '{' => depth += 1,
                '}' if depth == 0 => return Some(i),
                '}' => depth -= 1,
                _ => {}
            },
        }
        i += 1;
    }
    None
}
