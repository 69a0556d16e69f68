//! GitLab's CI expressions, as `rules: if:`, `workflow: rules: if:` and `only/except:
//! variables:` write them: variables (`$NAME`), strings, `null`, regular expressions
//! (`/pattern/i`), compared with `==`, `!=`, `=~`, `!~`, joined with `&&` (first) and
//! `||`, grouped with parentheses. A variable alone is true when it is set and not
//! empty; one that is not set is `null`. Parsed once when the file is read (so a bad
//! expression is refused at its line), evaluated when a pipeline is made.

use std::collections::HashMap;

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expression {
    Or(Box<Expression>, Box<Expression>),
    And(Box<Expression>, Box<Expression>),
    Compare(Operand, Op, Operand),
    /// An operand alone: true when it is a non-empty string (or a pattern).
    Truthy(Operand),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Variable(String),
    Text(String),
    Null,
    Pattern { pattern: String, flags: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    Matches,
    NotMatches,
}

/// What a variable holds when an expression is evaluated.
enum Value<'a> {
    Null,
    Text(&'a str),
    Pattern(regex::Regex),
}

impl Expression {
    /// Parses `text`; the error says what is wrong in GitLab's words.
    pub fn parse(text: &str) -> Result<Expression, String> {
        let tokens = tokenize(text)?;
        let mut parser = Parser { tokens, at: 0 };
        let expression = parser.or()?;
        if parser.at < parser.tokens.len() {
            return Err(format!(
                "`{text}`: unexpected {} after a complete expression",
                parser.tokens[parser.at].describe()
            ));
        }
        Ok(expression)
    }

    /// Evaluates with `variables` (a name not there is `null`).
    pub fn evaluate(&self, variables: &HashMap<String, String>) -> bool {
        match self {
            Expression::Or(a, b) => a.evaluate(variables) || b.evaluate(variables),
            Expression::And(a, b) => a.evaluate(variables) && b.evaluate(variables),
            Expression::Truthy(operand) => match value(operand, variables) {
                Value::Null => false,
                Value::Text(t) => !t.is_empty(),
                Value::Pattern(_) => true,
            },
            Expression::Compare(left, op, right) => {
                let (l, r) = (value(left, variables), value(right, variables));
                match op {
                    Op::Equal => equal(&l, &r),
                    Op::NotEqual => !equal(&l, &r),
                    Op::Matches => matches(&l, &r),
                    Op::NotMatches => !matches(&l, &r),
                }
            }
        }
    }
}

fn value<'a>(operand: &'a Operand, variables: &'a HashMap<String, String>) -> Value<'a> {
    match operand {
        Operand::Null => Value::Null,
        Operand::Text(t) => Value::Text(t),
        Operand::Pattern { pattern, flags } => compiled(pattern, flags).map_or(Value::Null, Value::Pattern),
        Operand::Variable(name) => match variables.get(name) {
            None => Value::Null,
            Some(v) => Value::Text(v),
        },
    }
}

/// `pattern` with its flags (`i`, `m`, `s`, `x`).
fn compiled(pattern: &str, flags: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(flags.contains('i'))
        .multi_line(flags.contains('m'))
        .dot_matches_new_line(flags.contains('s'))
        .ignore_whitespace(flags.contains('x'))
        .size_limit(1 << 20)
        .build()
        .ok()
}

fn equal(l: &Value, r: &Value) -> bool {
    match (l, r) {
        (Value::Null, Value::Null) => true,
        (Value::Text(a), Value::Text(b)) => a == b,
        (Value::Pattern(a), Value::Pattern(b)) => a.as_str() == b.as_str(),
        _ => false,
    }
}

/// `=~`: the left side's text against the right side's pattern — a `/…/` literal, or a
/// variable holding one (GitLab reads `/…/` in a variable's value as a pattern).
fn matches(l: &Value, r: &Value) -> bool {
    let Value::Text(text) = l else { return false };
    match r {
        Value::Pattern(p) => p.is_match(text),
        Value::Text(t) => match pattern_literal(t) {
            Some((pattern, flags)) => compiled(&pattern, &flags).is_some_and(|p| p.is_match(text)),
            None => false,
        },
        Value::Null => false,
    }
}

/// `/pattern/flags` → (pattern, flags).
fn pattern_literal(text: &str) -> Option<(String, String)> {
    let rest = text.strip_prefix('/')?;
    let end = rest.rfind('/')?;
    let flags = &rest[end + 1..];
    if !flags.chars().all(|c| "imsx".contains(c)) {
        return None;
    }
    Some((rest[..end].to_string(), flags.to_string()))
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Operand(Operand),
    Op(Op),
    And,
    Or,
    Open,
    Close,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Operand(Operand::Variable(v)) => format!("`${v}`"),
            Token::Operand(Operand::Text(t)) => format!("\"{t}\""),
            Token::Operand(Operand::Null) => "`null`".into(),
            Token::Operand(Operand::Pattern { pattern, .. }) => format!("/{pattern}/"),
            Token::Op(_) => "a comparison".into(),
            Token::And => "`&&`".into(),
            Token::Or => "`||`".into(),
            Token::Open => "`(`".into(),
            Token::Close => "`)`".into(),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let bad = |what: &str| Err(format!("`{text}`: {what}"));
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '&' if next == Some('&') => {
                tokens.push(Token::And);
                i += 2;
            }
            '|' if next == Some('|') => {
                tokens.push(Token::Or);
                i += 2;
            }
            '=' if next == Some('=') => {
                tokens.push(Token::Op(Op::Equal));
                i += 2;
            }
            '!' if next == Some('=') => {
                tokens.push(Token::Op(Op::NotEqual));
                i += 2;
            }
            '=' if next == Some('~') => {
                tokens.push(Token::Op(Op::Matches));
                i += 2;
            }
            '!' if next == Some('~') => {
                tokens.push(Token::Op(Op::NotMatches));
                i += 2;
            }
            '$' => {
                let braced = next == Some('{');
                let start = i + 1 + usize::from(braced);
                let mut end = start;
                while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_') {
                    end += 1;
                }
                if end == start {
                    return bad("`$` without a variable name after it");
                }
                if braced && chars.get(end) != Some(&'}') {
                    return bad("`${` without its `}`");
                }
                tokens.push(Token::Operand(Operand::Variable(chars[start..end].iter().collect())));
                i = end + usize::from(braced);
            }
            '"' | '\'' => {
                let mut end = i + 1;
                while end < chars.len() && chars[end] != c {
                    end += 1;
                }
                if end == chars.len() {
                    return bad("a string without its closing quote");
                }
                tokens.push(Token::Operand(Operand::Text(chars[i + 1..end].iter().collect())));
                i = end + 1;
            }
            '/' => {
                // Up to the next `/` not escaped by a backslash.
                let mut end = i + 1;
                while end < chars.len() && !(chars[end] == '/' && chars[end - 1] != '\\') {
                    end += 1;
                }
                if end == chars.len() {
                    return bad("a regular expression without its closing `/`");
                }
                let pattern: String = chars[i + 1..end].iter().collect();
                let mut flags = end + 1;
                while flags < chars.len() && chars[flags].is_ascii_alphabetic() {
                    flags += 1;
                }
                let flag_text: String = chars[end + 1..flags].iter().collect();
                if !flag_text.chars().all(|f| "imsx".contains(f)) {
                    return bad(&format!("`{flag_text}` are not flags of a regular expression"));
                }
                if compiled(&pattern, &flag_text).is_none() {
                    return bad(&format!("/{pattern}/ is not a regular expression"));
                }
                tokens.push(Token::Operand(Operand::Pattern { pattern, flags: flag_text }));
                i = flags;
            }
            _ if text[char_offset(text, i)..].starts_with("null") => {
                tokens.push(Token::Operand(Operand::Null));
                i += 4;
            }
            _ => return bad(&format!("`{c}` cannot start a part of an expression")),
        }
    }
    Ok(tokens)
}

fn char_offset(text: &str, chars: usize) -> usize {
    text.char_indices().nth(chars).map_or(text.len(), |(b, _)| b)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn or(&mut self) -> Result<Expression, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            left = Expression::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expression, String> {
        let mut left = self.comparison()?;
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            left = Expression::And(Box::new(left), Box::new(self.comparison()?));
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Expression, String> {
        if self.peek() == Some(&Token::Open) {
            self.at += 1;
            let inner = self.or()?;
            if self.peek() != Some(&Token::Close) {
                return Err("a `(` without its `)`".into());
            }
            self.at += 1;
            return Ok(inner);
        }
        let left = self.operand()?;
        if let Some(Token::Op(op)) = self.peek().cloned() {
            self.at += 1;
            let right = self.operand()?;
            return Ok(Expression::Compare(left, op, right));
        }
        Ok(Expression::Truthy(left))
    }

    fn operand(&mut self) -> Result<Operand, String> {
        match self.tokens.get(self.at).cloned() {
            Some(Token::Operand(o)) => {
                self.at += 1;
                Ok(o)
            }
            Some(other) => Err(format!(
                "expected a variable, a string, null or /pattern/, found {}",
                other.describe()
            )),
            None => Err("the expression ends too early".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, vars: &[(&str, &str)]) -> bool {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Expression::parse(text).unwrap_or_else(|e| panic!("{e}")).evaluate(&vars)
    }

    #[test]
    fn gitlab_expressions_evaluate_as_gitlab_documents_them() {
        let push_main = [("CI_PIPELINE_SOURCE", "push"), ("CI_COMMIT_BRANCH", "main"), ("EMPTY", "")];
        assert!(eval(r#"$CI_COMMIT_BRANCH == "main""#, &push_main));
        assert!(eval(r#"$CI_COMMIT_BRANCH != 'dev'"#, &push_main));
        assert!(eval("$CI_COMMIT_TAG == null", &push_main));
        assert!(!eval("$CI_COMMIT_TAG", &push_main), "unset is false");
        assert!(!eval("$EMPTY", &push_main), "empty is false");
        assert!(eval("$CI_COMMIT_BRANCH", &push_main));
        assert!(eval("$CI_COMMIT_BRANCH =~ /^ma/", &push_main));
        assert!(eval("$CI_COMMIT_BRANCH =~ /^MA/i", &push_main));
        assert!(eval("$CI_COMMIT_BRANCH !~ /^release/", &push_main));
        assert!(!eval("$CI_COMMIT_TAG =~ /.*/", &push_main), "null matches nothing");
        assert!(eval(
            r#"$CI_PIPELINE_SOURCE == "merge_request_event" || ($CI_COMMIT_BRANCH == "main" && $CI_PIPELINE_SOURCE == "push")"#,
            &push_main
        ));
        assert!(!eval(
            r#"$CI_PIPELINE_SOURCE == "web" || $CI_COMMIT_BRANCH == "x" && $CI_COMMIT_BRANCH"#,
            &push_main
        ));
        // && binds first.
        assert!(eval(r#"$CI_COMMIT_BRANCH || $NONE && $NONE"#, &push_main));
        // A pattern held in a variable.
        assert!(eval(
            "$CI_COMMIT_BRANCH =~ $PATTERN",
            &[("CI_COMMIT_BRANCH", "main"), ("PATTERN", "/^m/")]
        ));
        assert!(eval("${CI_COMMIT_BRANCH} == \"main\"", &push_main));
    }

    #[test]
    fn bad_expressions_are_refused_with_what_is_wrong() {
        for (text, says) in [
            ("$A ==", "ends too early"),
            ("$A == \"x", "closing quote"),
            ("($A", "without its `)`"),
            ("$A = 'x'", "cannot start"),
            ("$A =~ /[/", "not a regular expression"),
            ("$A $B", "unexpected"),
        ] {
            let e = Expression::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
