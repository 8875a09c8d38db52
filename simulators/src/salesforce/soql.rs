//! A small, strict SOQL parser for exactly the shapes the connector sends:
//! `SELECT Id, Field FROM Object WHERE Field IN ('a', 'b')`, and the changes
//! of one owner since a moment,
//! `SELECT Id, Field FROM Object WHERE OwnerId = '005...' AND LastModifiedDate > 2026-11-22T10:00:00Z`
//! (`>` or `>=`, on `LastModifiedDate`, `SystemModstamp` or `CreatedDate`, the
//! two conditions in either order) with an optional `ORDER BY field [ASC|DESC]`
//! and `LIMIT n`. Keywords are case-insensitive, as in SOQL; anything else is
//! refused with the error code Salesforce would answer.

use chrono::{DateTime, Utc};

use super::store::{DATETIME_FIELDS, ObjectSchema, schema_of};

/// A parsed query, field and object names in their canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Select {
    /// The selected fields, in the order asked.
    pub fields: Vec<String>,
    /// The queried sObject.
    pub object: &'static ObjectSchema,
    /// Which records it wants.
    pub filter: Filter,
    /// `ORDER BY`: the field and whether descending; creation order without.
    pub order_by: Option<(String, bool)>,
    /// `LIMIT`: the most records it answers.
    pub limit: Option<usize>,
}

/// The `WHERE` of a supported query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    /// `field IN ('a', 'b')`: the literals unescaped.
    In { field: String, values: Vec<String> },
    /// `OwnerId = 'owner' AND field > since` (or `>=` when `inclusive`).
    Changed {
        owner: String,
        field: String,
        since: DateTime<Utc>,
        inclusive: bool,
    },
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
    /// A quoted string literal, unescaped.
    Literal(String),
    /// An unquoted value starting with a digit: a number or a dateTime.
    Value(String),
    /// `=`, `!=`, `<`, `<=`, `>` or `>=`.
    Operator(String),
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
            '=' | '<' | '>' | '!' => {
                chars.next();
                let mut operator = next.to_string();
                if next != '=' && chars.peek() == Some(&'=') {
                    chars.next();
                    operator.push('=');
                }
                if operator == "!" {
                    return Err(QueryError::malformed("unexpected token: '!'"));
                }
                tokens.push(Token::Operator(operator));
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
            c if c.is_ascii_digit() => {
                let mut value = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '+' | '-') {
                        value.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Value(value));
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
    tokens: std::iter::Peekable<std::vec::IntoIter<Token>>,
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

    /// Consumes `keyword` if it comes next.
    fn optional_keyword(&mut self, keyword: &str) -> bool {
        let found = matches!(self.tokens.peek(), Some(Token::Word(word)) if word.eq_ignore_ascii_case(keyword));
        if found {
            self.tokens.next();
        }
        found
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

    /// `field IN (...)` or `field <operator> value`.
    fn condition(&mut self) -> Result<Condition, QueryError> {
        let field = self.word("a field name")?;
        match self.next("an operator")? {
            Token::Word(word) if word.eq_ignore_ascii_case("IN") => {
                self.token(Token::Open)?;
                let mut values = Vec::new();
                loop {
                    match self.next("a string literal")? {
                        Token::Literal(value) => values.push(value),
                        other => return Err(QueryError::malformed(format!("unexpected token: {other:?}"))),
                    }
                    match self.next("',' or ')'")? {
                        Token::Comma => continue,
                        Token::Close => break,
                        other => return Err(QueryError::malformed(format!("unexpected token: {other:?}"))),
                    }
                }
                Ok(Condition::In { field, values })
            }
            Token::Operator(operator) => {
                let value = self.next("a value")?;
                if !matches!(value, Token::Literal(_) | Token::Value(_)) {
                    return Err(QueryError::malformed(format!("unexpected token: {value:?}")));
                }
                Ok(Condition::Compare { field, operator, value })
            }
            other => Err(QueryError::malformed(format!(
                "unexpected token: {other:?}, expecting an operator"
            ))),
        }
    }
}

/// A condition as written, before its shape is checked.
#[derive(Debug)]
enum Condition {
    In {
        field: String,
        values: Vec<String>,
    },
    Compare {
        field: String,
        operator: String,
        value: Token,
    },
}

/// Parses `query`, or says why Salesforce would refuse it.
pub(crate) fn parse(query: &str) -> Result<Select, QueryError> {
    let mut parser = Parser {
        tokens: tokenize(query)?.into_iter().peekable(),
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
    let mut conditions = vec![parser.condition()?];
    while parser.optional_keyword("AND") {
        conditions.push(parser.condition()?);
    }
    let mut raw_order = None;
    if parser.optional_keyword("ORDER") {
        parser.keyword("BY")?;
        let field = parser.word("a field name")?;
        let descending = if parser.optional_keyword("DESC") {
            true
        } else {
            parser.optional_keyword("ASC");
            false
        };
        raw_order = Some((field, descending));
    }
    let mut limit = None;
    if parser.optional_keyword("LIMIT") {
        match parser.next("a number")? {
            Token::Value(value) => {
                let parsed = value
                    .parse::<usize>()
                    .map_err(|_| QueryError::malformed(format!("unexpected token: '{value}'")))?;
                limit = Some(parsed);
            }
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
    let order_by = match raw_order {
        Some((raw, descending)) => Some((field(&raw)?, descending)),
        None => None,
    };
    let filter = match conditions.as_slice() {
        [Condition::In { field: raw, values }] if order_by.is_none() && limit.is_none() => Filter::In {
            field: field(raw)?,
            values: values.clone(),
        },
        [first, second] => {
            let is_owner = |condition: &Condition| matches!(condition, Condition::Compare { field, .. } if field.eq_ignore_ascii_case("OwnerId"));
            match (is_owner(first), is_owner(second)) {
                (true, false) => changed(first, second, &field)?,
                (false, true) => changed(second, first, &field)?,
                _ => return Err(unsupported()),
            }
        }
        _ => return Err(unsupported()),
    };
    Ok(Select {
        fields,
        object,
        filter,
        order_by,
        limit,
    })
}

fn unsupported() -> QueryError {
    QueryError::malformed("unsupported query shape")
}

/// `OwnerId = 'owner'` then `dateTime field >|>= value`, or the error.
fn changed(
    owner: &Condition,
    since: &Condition,
    field: &impl Fn(&str) -> Result<String, QueryError>,
) -> Result<Filter, QueryError> {
    let Condition::Compare {
        field: owner_field,
        operator: owner_operator,
        value: owner_value,
    } = owner
    else {
        return Err(unsupported());
    };
    let Condition::Compare {
        field: since_field,
        operator: since_operator,
        value: since_value,
    } = since
    else {
        return Err(unsupported());
    };
    let (Token::Literal(owner), "=") = (owner_value, owner_operator.as_str()) else {
        return Err(unsupported());
    };
    field(owner_field)?;
    let since_field = field(since_field)?;
    let inclusive = match since_operator.as_str() {
        ">" => false,
        ">=" => true,
        _ => return Err(unsupported()),
    };
    if !DATETIME_FIELDS.contains(&since_field.as_str()) {
        return Err(unsupported());
    }
    let since = match since_value {
        Token::Value(value) => DateTime::parse_from_rfc3339(value)
            .map_err(|_| QueryError::malformed(format!("invalid dateTime: {value}")))?
            .with_timezone(&Utc),
        _ => {
            return Err(QueryError {
                code: "INVALID_FIELD",
                message: format!(
                    "value of filter criterion for field '{since_field}' must be of type dateTime and should not be enclosed in quotes"
                ),
            });
        }
    };
    Ok(Filter::Changed {
        owner: owner.clone(),
        field: since_field,
        since,
        inclusive,
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
        assert_eq!(
            query.filter,
            Filter::In {
                field: "Email".to_owned(),
                values: vec!["a@x.test".to_owned(), "o'neil@x.test".to_owned()]
            }
        );
    }

    #[test]
    fn custom_fields_are_known_on_every_object() {
        let query = parse("SELECT Id, Syncfleet_Id__c FROM Task WHERE Syncfleet_Id__c IN ('k')").unwrap();
        assert!(matches!(query.filter, Filter::In { field, .. } if field == "Syncfleet_Id__c"));
    }

    #[test]
    fn the_changes_of_one_owner_parse_with_order_and_limit_in_either_condition_order() {
        let query = parse(
            "SELECT Id, Subject, LastModifiedDate FROM Event WHERE OwnerId = '005000000000001' \
             AND LastModifiedDate > 2026-11-22T10:00:00Z ORDER BY LastModifiedDate ASC LIMIT 50",
        )
        .unwrap();
        assert_eq!(query.object.name, "Event");
        assert_eq!(query.fields, ["Id", "Subject", "LastModifiedDate"]);
        assert_eq!(
            query.filter,
            Filter::Changed {
                owner: "005000000000001".to_owned(),
                field: "LastModifiedDate".to_owned(),
                since: "2026-11-22T10:00:00Z".parse().unwrap(),
                inclusive: false,
            }
        );
        assert_eq!(query.order_by, Some(("LastModifiedDate".to_owned(), false)));
        assert_eq!(query.limit, Some(50));

        let query = parse(
            "select Id from contact where systemmodstamp >= 2026-11-22T11:30:00.250+01:00 and ownerid = '005x' \
             order by SystemModstamp desc",
        )
        .unwrap();
        let Filter::Changed {
            since,
            inclusive,
            field,
            ..
        } = query.filter
        else {
            panic!("{:?}", query.filter)
        };
        assert_eq!(since, "2026-11-22T10:30:00.250Z".parse::<DateTime<Utc>>().unwrap());
        assert!(inclusive);
        assert_eq!(field, "SystemModstamp");
        assert_eq!(query.order_by, Some(("SystemModstamp".to_owned(), true)));
        assert_eq!(query.limit, None);
    }

    #[test]
    fn a_quoted_datetime_is_an_invalid_field_and_a_bad_one_malformed() {
        let quoted = parse("SELECT Id FROM Event WHERE OwnerId = '005x' AND LastModifiedDate > '2026-11-22T10:00:00Z'");
        assert_eq!(quoted.unwrap_err().code, "INVALID_FIELD");
        let bad = parse("SELECT Id FROM Event WHERE OwnerId = '005x' AND LastModifiedDate > 2026-11-22");
        assert_eq!(bad.unwrap_err().code, "MALFORMED_QUERY");
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
            "SELECT Id FROM Event WHERE OwnerId = '005x'",
            "SELECT Id FROM Event WHERE OwnerId = 005 AND LastModifiedDate > 2026-11-22T10:00:00Z",
            "SELECT Id FROM Event WHERE OwnerId != '005x' AND LastModifiedDate > 2026-11-22T10:00:00Z",
            "SELECT Id FROM Event WHERE OwnerId = '005x' AND LastModifiedDate < 2026-11-22T10:00:00Z",
            "SELECT Id FROM Event WHERE OwnerId = '005x' AND Subject > 2026-11-22T10:00:00Z",
            "SELECT Id FROM Event WHERE OwnerId = '005x' AND LastModifiedDate > 2026-11-22T10:00:00Z LIMIT x",
            "SELECT Id FROM Event WHERE OwnerId = '005x' AND LastModifiedDate > 2026-11-22T10:00:00Z ORDER Subject",
            "SELECT Id FROM Event WHERE OwnerId = '005x' AND LastModifiedDate > 2026-11-22T10:00:00Z AND Id = 'a'",
            "SELECT Id FROM Event WHERE OwnerId = '005x' OR LastModifiedDate > 2026-11-22T10:00:00Z",
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
