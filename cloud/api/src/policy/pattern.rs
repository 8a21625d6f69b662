//! Policy strings compiled once at parse time: `*`/`?` wildcards, policy
//! variables `${…}` and the literal escapes `${*}`, `${?}`, `${$}` ("IAM policy
//! elements: Variables and tags", special characters).

/// A policy variable or condition key IoT Core can fill from the connection
/// ("AWS IoT Core policy variables": basic, thing and X.509 certificate variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Variable {
    /// `iot:ClientId`.
    ClientId,
    /// `iot:Connection.Thing.ThingName`.
    ThingName,
    /// `iot:Connection.Thing.ThingTypeName`.
    ThingTypeName,
    /// `iot:Connection.Thing.Attributes[name]`.
    ThingAttribute(String),
    /// `iot:Connection.Thing.IsAttached`.
    IsAttached,
    /// `iot:Certificate.Subject.{attr}` or `….{attr}.{index}`.
    CertificateSubject {
        /// Attribute name as written (looked up ignoring ASCII case).
        attribute: String,
        /// Zero-based value index; the context holds one value per attribute.
        index: usize,
    },
    /// `iot:Certificate.Subject.{attr}.List`: every value, for `ForAllValues`/`ForAnyValue`.
    CertificateSubjectList(String),
    /// `credentials-iot:ThingName`: the thing named in a credentials-provider request
    /// (role policies of credentials issued by the AWS IoT credentials provider).
    CredentialsThingName,
    /// `credentials-iot:ThingTypeName`: that thing's type.
    CredentialsThingTypeName,
    /// `credentials-iot:AwsCertificateId`: the certificate the credentials were issued to.
    CredentialsCertificateId,
    /// Anything else (`aws:SourceIp`, `iot:Certificate.Issuer.*`, typos): never resolves here.
    Unknown(String),
}

impl Variable {
    /// Parses a variable or condition-key name; the fixed part ignores ASCII case
    /// as IAM key names do, attribute names are kept as written.
    pub(crate) fn parse(name: &str) -> Variable {
        const THING_ATTRIBUTES: &str = "iot:Connection.Thing.Attributes[";
        const SUBJECT: &str = "iot:Certificate.Subject.";
        let eq = |a: &str| name.eq_ignore_ascii_case(a);
        if eq("iot:ClientId") {
            return Variable::ClientId;
        }
        if eq("iot:Connection.Thing.ThingName") {
            return Variable::ThingName;
        }
        if eq("iot:Connection.Thing.ThingTypeName") {
            return Variable::ThingTypeName;
        }
        if eq("iot:Connection.Thing.IsAttached") {
            return Variable::IsAttached;
        }
        if eq("credentials-iot:ThingName") {
            return Variable::CredentialsThingName;
        }
        if eq("credentials-iot:ThingTypeName") {
            return Variable::CredentialsThingTypeName;
        }
        if eq("credentials-iot:AwsCertificateId") {
            return Variable::CredentialsCertificateId;
        }
        if let Some(rest) = strip_prefix_ci(name, THING_ATTRIBUTES)
            && let Some(attribute) = rest.strip_suffix(']')
            && !attribute.is_empty()
        {
            return Variable::ThingAttribute(attribute.to_owned());
        }
        if let Some(rest) = strip_prefix_ci(name, SUBJECT)
            && !rest.is_empty()
        {
            if let Some((attribute, suffix)) = rest.rsplit_once('.') {
                if suffix.eq_ignore_ascii_case("List") {
                    return Variable::CertificateSubjectList(attribute.to_owned());
                }
                if let Ok(index) = suffix.parse::<usize>() {
                    return Variable::CertificateSubject { attribute: attribute.to_owned(), index };
                }
                // `AlternativeName.DNSName` and friends are not in the context.
                return Variable::Unknown(name.to_owned());
            }
            return Variable::CertificateSubject { attribute: rest.to_owned(), index: 0 };
        }
        Variable::Unknown(name.to_owned())
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(String),
    /// `*`: any run of characters, including none.
    Star,
    /// `?`: exactly one character.
    One,
    Var(Variable),
}

/// How a compiled string compared with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Match {
    /// It matched.
    Yes,
    /// It did not match.
    No,
    /// A variable in it has no value for this request, so it cannot match.
    Unresolved,
}

/// A policy string compiled for matching: literals, wildcards and variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    raw: String,
    tokens: Vec<Token>,
    has_wildcards: bool,
    has_variables: bool,
}

impl Pattern {
    /// Compiles `raw`; `wildcards` makes `*`/`?` special, `variables` makes `${…}` special.
    pub(crate) fn compile(raw: &str, wildcards: bool, variables: bool) -> Pattern {
        let mut tokens: Vec<Token> = Vec::new();
        let push_lit = |tokens: &mut Vec<Token>, s: &str| {
            if s.is_empty() {
                return;
            }
            if let Some(Token::Lit(prev)) = tokens.last_mut() {
                prev.push_str(s);
            } else {
                tokens.push(Token::Lit(s.to_owned()));
            }
        };
        let mut rest = raw;
        while let Some(i) = rest.find(|c| (wildcards && (c == '*' || c == '?')) || (variables && c == '$')) {
            push_lit(&mut tokens, &rest[..i]);
            let tail = &rest[i..];
            if let Some(after) = tail.strip_prefix('*') {
                tokens.push(Token::Star);
                rest = after;
            } else if let Some(after) = tail.strip_prefix('?') {
                tokens.push(Token::One);
                rest = after;
            } else if let Some(body) = tail.strip_prefix("${")
                && let Some(end) = body.find('}')
            {
                match &body[..end] {
                    "*" => push_lit(&mut tokens, "*"),
                    "?" => push_lit(&mut tokens, "?"),
                    "$" => push_lit(&mut tokens, "$"),
                    name => tokens.push(Token::Var(Variable::parse(name))),
                }
                rest = &body[end + 1..];
            } else {
                // A `$` that does not open a complete `${…}` is an ordinary character.
                push_lit(&mut tokens, "$");
                rest = &tail[1..];
            }
        }
        push_lit(&mut tokens, rest);
        let has_wildcards = tokens.iter().any(|t| matches!(t, Token::Star | Token::One));
        let has_variables = tokens.iter().any(|t| matches!(t, Token::Var(_)));
        Pattern { raw: raw.to_owned(), tokens, has_wildcards, has_variables }
    }

    /// The string as written in the policy.
    pub(crate) fn raw(&self) -> &str {
        &self.raw
    }

    /// The variables the pattern uses.
    pub(crate) fn variables(&self) -> impl Iterator<Item = &Variable> {
        self.tokens.iter().filter_map(|t| match t {
            Token::Var(v) => Some(v),
            _ => None,
        })
    }

    /// Compares `text` with the pattern. Substituted variable values are
    /// literal text (a `*` in a client id is not a wildcard). `ignore_case`
    /// compares ASCII letters without case.
    pub(crate) fn matches<'a>(
        &self,
        text: &str,
        ignore_case: bool,
        resolve: impl Fn(&Variable) -> Option<&'a str>,
    ) -> Match {
        if self.has_variables && self.variables().any(|v| resolve(v).is_none()) {
            return Match::Unresolved;
        }
        let atom = |i: usize| -> Atom<'_> {
            match &self.tokens[i] {
                Token::Lit(s) => Atom::Lit(s),
                Token::Star => Atom::Star,
                Token::One => Atom::One,
                Token::Var(v) => Atom::Lit(resolve(v).unwrap_or_default()),
            }
        };
        let yes = if !self.has_wildcards && !self.has_variables {
            match self.tokens.as_slice() {
                [] => text.is_empty(),
                [Token::Lit(s)] => eq(s, text, ignore_case),
                _ => glob(self.tokens.len(), atom, text, ignore_case),
            }
        } else {
            glob(self.tokens.len(), atom, text, ignore_case)
        };
        if yes { Match::Yes } else { Match::No }
    }
}

#[derive(Clone, Copy)]
enum Atom<'a> {
    Lit(&'a str),
    Star,
    One,
}

fn eq(a: &str, b: &str, ignore_case: bool) -> bool {
    if ignore_case { a.eq_ignore_ascii_case(b) } else { a == b }
}

fn starts_with(text: &str, lit: &str, ignore_case: bool) -> bool {
    text.get(..lit.len()).is_some_and(|head| eq(head, lit, ignore_case))
}

/// Wildcard match with backtracking to the last `*` only, which is enough
/// because a later `*` can absorb whatever an earlier one would have.
fn glob<'a>(n: usize, atom: impl Fn(usize) -> Atom<'a>, text: &str, ignore_case: bool) -> bool {
    let (mut ai, mut ti) = (0usize, 0usize);
    let mut retry: Option<(usize, usize)> = None;
    loop {
        if ai < n {
            match atom(ai) {
                Atom::Star => {
                    retry = Some((ai + 1, ti));
                    ai += 1;
                    continue;
                }
                Atom::One => {
                    if let Some(c) = text[ti..].chars().next() {
                        ai += 1;
                        ti += c.len_utf8();
                        continue;
                    }
                }
                Atom::Lit(s) => {
                    if starts_with(&text[ti..], s, ignore_case) {
                        ai += 1;
                        ti += s.len();
                        continue;
                    }
                }
            }
        } else if ti == text.len() {
            return true;
        }
        let Some((after_star, from)) = retry else { return false };
        let Some(c) = text[from..].chars().next() else { return false };
        let next = from + c.len_utf8();
        retry = Some((after_star, next));
        ai = after_star;
        ti = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &Variable) -> Option<&'static str> {
        None
    }

    #[test]
    fn wildcards_match_any_run_and_one_character() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("a*", "a", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            ("*b*b*", "abab", true),
            ("*aab", "aaaab", true),
            ("topic/$aws/things/*/shadow/*", "topic/$aws/things/t1/shadow/update", true),
            ("topic/a/+", "topic/a/+", true),
            ("topic/a/+", "topic/a/b", false),
            ("topic/a/#", "topic/a/b", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ];
        for (pattern, text, want) in cases {
            let got = Pattern::compile(pattern, true, true).matches(text, false, none);
            assert_eq!(got == Match::Yes, *want, "{pattern:?} vs {text:?}");
        }
    }

    #[test]
    fn escapes_stand_for_literal_special_characters() {
        let p = Pattern::compile("a${*}b${?}c${$}d", true, true);
        assert_eq!(p.matches("a*b?c$d", false, none), Match::Yes);
        assert_eq!(p.matches("axb?c$d", false, none), Match::No);
        assert_eq!(p.variables().count(), 0);
    }

    #[test]
    fn dollar_without_a_complete_variable_is_literal() {
        for raw in ["$aws/things", "a${b", "$"] {
            assert_eq!(Pattern::compile(raw, true, true).matches(raw, false, none), Match::Yes, "{raw:?}");
        }
    }

    #[test]
    fn substituted_values_are_literal_not_wildcards() {
        let p = Pattern::compile("client/${iot:ClientId}", true, true);
        let star = |_: &Variable| Some("*");
        assert_eq!(p.matches("client/*", false, star), Match::Yes);
        assert_eq!(p.matches("client/other", false, star), Match::No);
    }

    #[test]
    fn unresolved_variable_never_matches() {
        let p = Pattern::compile("client/${iot:ClientId}*", true, true);
        assert_eq!(p.matches("client/x", false, none), Match::Unresolved);
    }

    #[test]
    fn without_wildcards_star_is_literal() {
        let p = Pattern::compile("a*", false, true);
        assert_eq!(p.matches("a*", false, none), Match::Yes);
        assert_eq!(p.matches("ab", false, none), Match::No);
    }

    #[test]
    fn ignore_case_compares_ascii_letters_without_case() {
        let p = Pattern::compile("iot:Publish*", true, false);
        assert_eq!(p.matches("IOT:publish", true, none), Match::Yes);
        assert_eq!(p.matches("IOT:publish", false, none), Match::No);
    }

    #[test]
    fn variable_names_parse_to_context_keys() {
        let cases: &[(&str, Variable)] = &[
            ("iot:ClientId", Variable::ClientId),
            ("iot:clientid", Variable::ClientId),
            ("iot:Connection.Thing.ThingName", Variable::ThingName),
            ("iot:Connection.Thing.ThingTypeName", Variable::ThingTypeName),
            ("iot:Connection.Thing.IsAttached", Variable::IsAttached),
            ("iot:Connection.Thing.Attributes[Floor]", Variable::ThingAttribute("Floor".into())),
            (
                "iot:Certificate.Subject.CommonName",
                Variable::CertificateSubject { attribute: "CommonName".into(), index: 0 },
            ),
            (
                "iot:Certificate.Subject.Country.1",
                Variable::CertificateSubject { attribute: "Country".into(), index: 1 },
            ),
            ("iot:Certificate.Subject.Organization.List", Variable::CertificateSubjectList("Organization".into())),
            ("iot:Connection.Thing.Attributes[]", Variable::Unknown("iot:Connection.Thing.Attributes[]".into())),
            ("aws:SourceIp", Variable::Unknown("aws:SourceIp".into())),
        ];
        for (name, want) in cases {
            assert_eq!(&Variable::parse(name), want, "{name:?}");
        }
    }
}
