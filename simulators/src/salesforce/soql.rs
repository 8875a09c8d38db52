//! A small, strict SOQL parser for exactly the shape the connector sends:
//! `SELECT Id, Field FROM Object WHERE Field IN ('a', 'b')`. Keywords are
//! case-insensitive, as in SOQL; anything else is refused with the error code
//! Salesforce would answer.

use super::store::{ObjectSchema, schema_of};

/// A parsed `SELECT ... FROM ... WHERE field IN (...)` query, field and object
/// names in their canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InQuery {
    /// The selected fields, in the order asked.
    pub fields: Vec<String>,
    /// The queried sObject.
    pub object: &'static ObjectSchema,
    /// The field the `IN` list filters on.
    pub filter_field: String,
    /// The literal values of the `IN` list, unescaped.
    pub values: Vec<String>,
}

/// Why a query was refused: the Salesforce error code and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryError {
    pub code: &'static str,
    pub message: String,
}

impl QueryError {
    fn malformed(message: impl Into<String>) -> Self {
        Self {
            code: "MALFORMED_QUERY",
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Literal(String),
    Comma,
    Open,
    Close,
}

fn tokenize(query: &str) -> Result<Vec<Token>, QueryError> {
    let mut tokens = Vec::new();
    let mut chars = query.chars().peekable();
    while let Some(&next) = chars.peek() {
        match next {
            c if c.is_whitespace() => {
                chars.next();
            }
            ',' => {
                chars.next();
                tokens.push(Token::Comma);
            }
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '\'' => {
                chars.next();
                let mut literal = String::new();
                loop {
                    match chars.next() {
                        None => return Err(QueryError::malformed("unterminated string literal")),
                        Some('\'') => break,
                        Some('\\') => match chars.next() {
                            Some(escaped @ ('\'' | '"' | '\\')) => literal.push(escaped),
                            Some('n') => literal.push('\n'),
                            Some('r') => literal.push('\r'),
                            Some('t') => literal.push('\t'),
                            _ => return Err(QueryError::malformed("invalid escape sequence in string literal")),
                        },
                        Some(c) => literal.push(c),
                    }
                }
                tokens.push(Token::Literal(literal));
            }
            c if c.is_ascii_alphabetic() => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        word.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(word));
            }
            other => return Err(QueryError::malformed(format!("unexpected token: '{other}'"))),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: std::vec::IntoIter<Token>,
}

impl Parser {
    fn next(&mut self, expected: &str) -> Result<Token, QueryError> {
        self.tokens
            .next()
            .ok_or_else(|| QueryError::malformed(format!("unexpected end of query, expecting {expected}")))
    }

    fn keyword(&mut self, keyword: &str) -> Result<(), QueryError> {
        match self.next(keyword)? {
            Token::Word(word) if word.eq_ignore_ascii_case(keyword) => Ok(()),
            other => Err(QueryError::malformed(format!(
                "unexpected token: {other:?}, expecting {keyword}"
            ))),
        }
    }

    fn word(&mut self, what: &str) -> Result<String, QueryError> {
        match self.next(what)? {
            Token::Word(word) => Ok(word),
            other => Err(QueryError::malformed(format!(
                "unexpected token: {other:?}, expecting {what}"
            ))),
        }
    }

    fn token(&mut self, expected: Token) -> Result<(), QueryError> {
        let found = self.next(&format!("{expected:?}"))?;
        if found == expected {
            Ok(())
        } else {
            Err(QueryError::malformed(format!(
                "unexpected token: {found:?}, expecting {expected:?}"
            )))
        }
    }
}

/// Parses `query`, or says why Salesforce would refuse it.
pub(crate) fn parse(query: &str) -> Result<InQuery, QueryError> {
    let mut parser = Parser {
        tokens: tokenize(query)?.into_iter(),
    };
    parser.keyword("SELECT")?;
    let mut raw_fields = vec![parser.word("a field name")?];
    loop {
        match parser.next("FROM")? {
            Token::Comma => raw_fields.push(parser.word("a field name")?),
            Token::Word(word) if word.eq_ignore_ascii_case("FROM") => break,
            other => return Err(QueryError::malformed(format!("unexpected token: {other:?}"))),
        }
    }
    let raw_object = parser.word("an sObject name")?;
    parser.keyword("WHERE")?;
    let raw_filter = parser.word("a field name")?;
    parser.keyword("IN")?;
    parser.token(Token::Open)?;
    let mut values = Vec::new();
    loop {
        match parser.next("a string literal")? {
            Token::Literal(value) => values.push(value),
            other => return Err(QueryError::malformed(format!("unexpected token: {other:?}"))),
        }
        match parser.next("',' or ')'")? {
            Token::Comma => continue,
            Token::Close => break,
            other => return Err(QueryError::malformed(format!("unexpected token: {other:?}"))),
        }
    }
    if let Some(extra) = parser.tokens.next() {
        return Err(QueryError::malformed(format!("unexpected token: {extra:?}")));
    }

    let object = schema_of(&raw_object).ok_or_else(|| QueryError {
        code: "INVALID_TYPE",
        message: format!("sObject type '{raw_object}' is not supported."),
    })?;
    let field = |raw: &str| {
        object.canonical_field(raw).ok_or_else(|| QueryError {
            code: "INVALID_FIELD",
            message: format!("No such column '{raw}' on entity '{}'.", object.name),
        })
    };
    let fields = raw_fields.iter().map(|raw| field(raw)).collect::<Result<Vec<_>, _>>()?;
    let filter_field = field(&raw_filter)?;
    Ok(InQuery {
        fields,
        object,
        filter_field,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connector_shape_parses_with_escapes_and_any_keyword_case() {
        let query = parse(r"select Id, email FROM Contact where Email in ('a@x.test', 'o\'neil@x.test')").unwrap();
        assert_eq!(query.fields, ["Id", "Email"]);
        assert_eq!(query.object.name, "Contact");
        assert_eq!(query.filter_field, "Email");
        assert_eq!(query.values, ["a@x.test", "o'neil@x.test"]);
    }

    #[test]
    fn custom_fields_are_known_on_every_object() {
        let query = parse("SELECT Id, Syncfleet_Id__c FROM Task WHERE Syncfleet_Id__c IN ('k')").unwrap();
        assert_eq!(query.filter_field, "Syncfleet_Id__c");
    }

    #[test]
    fn other_shapes_are_malformed() {
        for query in [
            "SELECT Id FROM Contact",
            "SELECT Id, Email FROM Contact WHERE Email = 'a'",
            "SELECT Id, Email FROM Contact WHERE Email IN ('a') LIMIT 1",
            "SELECT Id, Email FROM Contact WHERE Email IN ()",
            "SELECT Id, Email FROM Contact WHERE Email IN ('a'",
            "SELECT Id, Email FROM Contact WHERE Email IN ('a\\x')",
            "SELECT Id; DROP",
        ] {
            assert_eq!(parse(query).unwrap_err().code, "MALFORMED_QUERY", "{query}");
        }
    }

    #[test]
    fn unknown_objects_and_fields_answer_their_own_codes() {
        assert_eq!(
            parse("SELECT Id FROM Account WHERE Name IN ('a')").unwrap_err().code,
            "INVALID_TYPE"
        );
        assert_eq!(
            parse("SELECT Id, Nope FROM Lead WHERE Email IN ('a')")
                .unwrap_err()
                .code,
            "INVALID_FIELD"
        );
    }
}
