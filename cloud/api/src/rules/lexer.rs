//! Splits AWS IoT SQL text into tokens. Strings are quoted with `'` or `"` (AWS's examples use
//! both, for instance `decode(encoded_temp, "base64")`); inside them a backslash escapes the
//! next character (`\n`, `\t`, `\r` are the control characters, any other character stands for
//! itself).

use super::SqlError;

/// One token and the character position (1-based) where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub kind: Tok,
    pub pos: usize,
}

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A name: a keyword, a function or a JSON key, told apart by the parser.
    Ident(String),
    /// A number as written.
    Number(String),
    /// A quoted string, unescaped.
    Str(String),
    /// Punctuation or an operator: `* , ( ) [ ] { } . : = <> < > <= >= + - / %`.
    Sym(&'static str),
    /// The end of the text.
    End,
}

const SYMBOLS: &[&str] =
    &["<>", "<=", ">=", "*", ",", "(", ")", "[", "]", "{", "}", ".", ":", "=", "<", ">", "+", "-", "/", "%"];

/// Tokenizes `sql`; the last token is [`Tok::End`].
pub(crate) fn tokenize(sql: &str) -> Result<Vec<Token>, SqlError> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token { kind: Tok::Ident(chars[start..i].iter().collect()), pos });
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            let digits = |i: &mut usize| {
                while *i < chars.len() && chars[*i].is_ascii_digit() {
                    *i += 1;
                }
            };
            digits(&mut i);
            if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                i += 1;
                digits(&mut i);
            }
            if matches!(chars.get(i), Some('e' | 'E')) {
                let sign = usize::from(matches!(chars.get(i + 1), Some('-' | '+')));
                if chars.get(i + 1 + sign).is_some_and(char::is_ascii_digit) {
                    i += 1 + sign;
                    digits(&mut i);
                }
            }
            if chars.get(i).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
                return Err(SqlError::new(i + 1, "a number must not run into a name"));
            }
            tokens.push(Token { kind: Tok::Number(chars[start..i].iter().collect()), pos });
            continue;
        }
        if c == '\'' || c == '"' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(SqlError::new(pos, "unterminated string: add the closing quote")),
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let Some(&escaped) = chars.get(i + 1) else {
                            return Err(SqlError::new(pos, "unterminated string: add the closing quote"));
                        };
                        text.push(match escaped {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                        i += 2;
                    }
                    Some(&other) => {
                        text.push(other);
                        i += 1;
                    }
                }
            }
            tokens.push(Token { kind: Tok::Str(text), pos });
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        match SYMBOLS.iter().find(|s| rest.starts_with(**s)) {
            Some(sym) => {
                i += sym.chars().count();
                tokens.push(Token { kind: Tok::Sym(sym), pos });
            }
            None => return Err(SqlError::new(pos, format!("unexpected character {c:?}"))),
        }
    }
    tokens.push(Token { kind: Tok::End, pos: chars.len() + 1 });
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<Tok> {
        tokenize(sql).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn tokens_of_a_statement() {
        assert_eq!(
            kinds("SELECT a.b AS c FROM 'x/#' WHERE t >= -1.5e2"),
            vec![
                Tok::Ident("SELECT".into()),
                Tok::Ident("a".into()),
                Tok::Sym("."),
                Tok::Ident("b".into()),
                Tok::Ident("AS".into()),
                Tok::Ident("c".into()),
                Tok::Ident("FROM".into()),
                Tok::Str("x/#".into()),
                Tok::Ident("WHERE".into()),
                Tok::Ident("t".into()),
                Tok::Sym(">="),
                Tok::Sym("-"),
                Tok::Number("1.5e2".into()),
                Tok::End,
            ]
        );
    }

    #[test]
    fn strings_take_either_quote_and_backslash_escapes() {
        assert_eq!(
            kinds(r#"'it\'s' "a\"b" 'x"y'"#)[..3],
            [Tok::Str("it's".into()), Tok::Str("a\"b".into()), Tok::Str("x\"y".into())]
        );
    }

    #[test]
    fn lexical_errors_carry_the_position() {
        assert_eq!(tokenize("SELECT 'abc").unwrap_err().position, 8);
        assert_eq!(tokenize("SELECT a ; b").unwrap_err().position, 10);
        assert_eq!(tokenize("SELECT 12ab").unwrap_err().position, 10);
        assert_eq!(tokenize("'\\").unwrap_err().position, 1);
    }
}
