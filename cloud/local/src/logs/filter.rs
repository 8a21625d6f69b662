//! CloudWatch Logs filter patterns, the forms for unstructured log events ("Filter pattern
//! syntax for metric filters, subscription filters, filter log events and Live Tail", in the
//! CloudWatch Logs User Guide): terms matched case-sensitively anywhere in the message.
//!
//! - `ERROR`: the message contains `ERROR`; `ERROR timeout`: it contains both terms.
//! - `"connection reset"`: the quoted phrase (with `\"` and `\\` escapes) appears as written;
//!   a term with anything but letters, digits and `_` must be quoted.
//! - `ERROR -Exiting`: `ERROR` appears and `Exiting` does not.
//! - `?ERROR ?WARN`: at least one of the terms appears.
//!
//! What is not evaluated is refused ([`PatternError`]) rather than guessed: JSON patterns
//! (`{ $.level = "error" }`), space-delimited patterns (`[ip, user, ...]`), regular
//! expressions (`%…%`), `?` terms mixed with plain or `-` terms, and a pattern of `-` terms only.

/// A filter pattern the local cloud cannot evaluate, with the reason (the caller's input to fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(pub String);

/// A parsed filter pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Matches every event (an empty pattern).
    All,
    /// Every `required` term appears and no `excluded` one does.
    Terms {
        /// Terms that must all appear.
        required: Vec<String>,
        /// Terms that must not appear.
        excluded: Vec<String>,
    },
    /// At least one of the terms appears.
    Any(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    None,
    Optional,
    Excluded,
}

impl Pattern {
    /// Parses `text`; an error says which form is not supported or what is malformed.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(Pattern::All);
        }
        match trimmed.chars().next() {
            Some('{') => return Err(unsupported("JSON filter patterns ({ $.field … })")),
            Some('[') => return Err(unsupported("space-delimited filter patterns ([field, …])")),
            Some('%') => return Err(unsupported("regular-expression filter patterns (%…%)")),
            _ => {}
        }
        let mut terms: Vec<(Prefix, String)> = Vec::new();
        let mut chars = trimmed.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let Some(&first) = chars.peek() else { break };
            let prefix = match first {
                '?' => Prefix::Optional,
                '-' => Prefix::Excluded,
                _ => Prefix::None,
            };
            if prefix != Prefix::None {
                chars.next();
            }
            let term = match chars.peek() {
                Some('"') => {
                    chars.next();
                    let mut phrase = String::new();
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some(c @ ('"' | '\\')) => phrase.push(c),
                                Some(c) => {
                                    phrase.push('\\');
                                    phrase.push(c);
                                }
                                None => return Err(malformed("a quoted term is not closed")),
                            },
                            Some(c) => phrase.push(c),
                            None => return Err(malformed("a quoted term is not closed")),
                        }
                    }
                    if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                        return Err(malformed("a quoted term must be followed by a space or the end"));
                    }
                    phrase
                }
                _ => {
                    let mut word = String::new();
                    while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                        word.push(c);
                    }
                    if word.is_empty() {
                        return Err(malformed("a ? or - must be followed by a term"));
                    }
                    if let Some(bad) = word.chars().find(|c| !(c.is_alphanumeric() || *c == '_')) {
                        return Err(PatternError(format!(
                            "the term {word:?} holds {bad:?}: put terms with characters other than letters, \
                             digits and _ in double quotes (or the local cloud does not support this pattern form)"
                        )));
                    }
                    word
                }
            };
            if term.is_empty() {
                return Err(malformed("a quoted term is empty"));
            }
            terms.push((prefix, term));
        }
        let optional = terms.iter().filter(|(p, _)| *p == Prefix::Optional).count();
        if optional > 0 {
            if optional != terms.len() {
                return Err(unsupported("? terms mixed with other terms"));
            }
            return Ok(Pattern::Any(terms.into_iter().map(|(_, t)| t).collect()));
        }
        let (excluded, required): (Vec<_>, Vec<_>) = terms.into_iter().partition(|(p, _)| *p == Prefix::Excluded);
        if required.is_empty() {
            return Err(unsupported("a pattern of - terms only"));
        }
        Ok(Pattern::Terms {
            required: required.into_iter().map(|(_, t)| t).collect(),
            excluded: excluded.into_iter().map(|(_, t)| t).collect(),
        })
    }

    /// Whether an event's message matches.
    pub fn matches(&self, message: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Terms { required, excluded } => {
                required.iter().all(|t| message.contains(t.as_str()))
                    && !excluded.iter().any(|t| message.contains(t.as_str()))
            }
            Pattern::Any(terms) => terms.iter().any(|t| message.contains(t.as_str())),
        }
    }
}

fn unsupported(form: &str) -> PatternError {
    PatternError(format!(
        "the local cloud's CloudWatch Logs does not evaluate {form}; it supports plain terms, quoted phrases, \
         -term exclusions and ?term alternatives"
    ))
}

fn malformed(what: &str) -> PatternError {
    PatternError(format!("invalid filter pattern: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, message: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(message)
    }

    #[test]
    fn an_empty_pattern_matches_every_event() {
        assert!(matches("", "anything"));
        assert!(matches("   ", "anything"));
    }

    #[test]
    fn every_plain_term_must_appear_case_sensitively() {
        assert!(matches("ERROR", "[ERROR] pump stalled"));
        assert!(matches("ERROR", "Exiting with ERRORCODE: -1"), "terms match inside words, as on AWS");
        assert!(!matches("ERROR", "error: lower case"));
        assert!(matches("ERROR pump", "[ERROR] pump stalled"));
        assert!(!matches("ERROR valve", "[ERROR] pump stalled"));
    }

    #[test]
    fn quoted_phrases_match_as_written() {
        assert!(matches(r#""pump stalled""#, "[ERROR] pump stalled at 3"));
        assert!(!matches(r#""stalled pump""#, "[ERROR] pump stalled"));
        assert!(matches(r#""rpm=1500" ERROR"#, "ERROR rpm=1500"));
        assert!(matches(r#""say \"hi\"""#, r#"they say "hi""#));
    }

    #[test]
    fn exclusions_and_alternatives() {
        assert!(matches("ERROR -Exiting", "ERROR stalled"));
        assert!(!matches("ERROR -Exiting", "ERROR Exiting now"));
        assert!(matches("?ERROR ?WARN", "WARN low pressure"));
        assert!(matches("?ERROR ?\"low pressure\"", "INFO low pressure"));
        assert!(!matches("?ERROR ?WARN", "INFO all good"));
    }

    #[test]
    fn forms_it_cannot_evaluate_are_refused_not_guessed() {
        for pattern in [
            r#"{ $.level = "error" }"#,
            "[ip, user, status = 500]",
            "%ERR.*%",
            "?ERROR WARN",
            "-Exiting",
            "rpm=1500",
            r#""not closed"#,
            r#""a"b"#,
            "? ERROR",
            r#""""#,
        ] {
            assert!(Pattern::parse(pattern).is_err(), "{pattern}");
        }
    }
}
