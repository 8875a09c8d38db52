//! SOQL text: the two query shapes the connector sends
//! (`SELECT a, b FROM Object WHERE field IN ('x', 'y')`, and the changes of one
//! owner since a moment), their literals escaped, and the batching of long
//! value lists; and the shape of a query's pages.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

/// One page of a query's answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueryPage {
    pub done: bool,
    #[serde(default)]
    pub next_records_url: Option<String>,
    pub records: Vec<Map<String, Value>>,
}

/// Whether `name` is a plain SOQL identifier (field or object name), so it can
/// be put in a query as it is.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.ends_with('_')
}

/// `value` as a SOQL string literal: quotes, backslashes and line breaks
/// escaped, so a value can never end the literal.
pub(crate) fn literal(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        match c {
            '\'' => quoted.push_str("\\'"),
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

/// `SELECT fields FROM object WHERE filter IN (values)`; the names must be
/// identifiers (checked by the caller), the values are escaped here.
pub(crate) fn select_in(fields: &[&str], object: &str, filter: &str, values: &[String]) -> String {
    let literals: Vec<String> = values.iter().map(|value| literal(value)).collect();
    format!(
        "SELECT {} FROM {object} WHERE {filter} IN ({})",
        fields.join(", "),
        literals.join(", ")
    )
}

/// `at` as a SOQL dateTime literal (unquoted), to the second, rounded down.
pub(crate) fn datetime(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `SELECT fields FROM object WHERE OwnerId = 'owner' AND LastModifiedDate >= since
/// ORDER BY LastModifiedDate ASC`; the names must be identifiers (checked by
/// the caller), the owner is escaped here.
pub(crate) fn changed_owned(fields: &[&str], object: &str, owner: &str, since: DateTime<Utc>) -> String {
    format!(
        "SELECT {} FROM {object} WHERE OwnerId = {} AND LastModifiedDate >= {} ORDER BY LastModifiedDate ASC",
        fields.join(", "),
        literal(owner),
        datetime(since)
    )
}

/// Splits `values` into batches of at most `max_values` values and about
/// `max_chars` characters of literals each, so a query stays well within the
/// URL length Salesforce accepts. A single over-long value gets a batch alone.
pub(crate) fn batches(values: &[String], max_values: usize, max_chars: usize) -> Vec<Vec<String>> {
    let mut batches = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut chars = 0;
    for value in values {
        let cost = literal(value).len() + 2;
        if !current.is_empty() && (current.len() >= max_values.max(1) || chars + cost > max_chars) {
            batches.push(std::mem::take(&mut current));
            chars = 0;
        }
        chars += cost;
        current.push(value.clone());
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_cannot_escape_its_literal() {
        assert_eq!(literal(r"o'neil\x@example.test"), r"'o\'neil\\x@example.test'");
        assert_eq!(
            select_in(
                &["Id", "Email"],
                "Lead",
                "Email",
                &["a@x.test".to_owned(), "b'@x.test".to_owned()]
            ),
            r"SELECT Id, Email FROM Lead WHERE Email IN ('a@x.test', 'b\'@x.test')"
        );
    }

    #[test]
    fn the_changes_query_has_an_unquoted_datetime_rounded_down_to_the_second() {
        let since: DateTime<Utc> = "2026-11-22T10:00:05.999Z".parse().unwrap();
        assert_eq!(
            changed_owned(&["Id", "Subject"], "Event", "005'x", since),
            r"SELECT Id, Subject FROM Event WHERE OwnerId = '005\'x' AND LastModifiedDate >= 2026-11-22T10:00:05Z ORDER BY LastModifiedDate ASC"
        );
    }

    #[test]
    fn identifiers_are_plain_names_only() {
        assert!(is_identifier("Syncfleet_Id__c"));
        assert!(is_identifier("Email"));
        for bad in ["", "1a", "Email)", "a b", "Id,Name", "x_"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn batches_respect_both_the_count_and_the_length() {
        let values: Vec<String> = (0..7).map(|index| format!("v{index}")).collect();
        let sizes: Vec<usize> = batches(&values, 3, 1000).iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 3, 1]);
        let sizes: Vec<usize> = batches(&values, 100, 12).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 2, 1]);
        assert!(batches(&[], 3, 10).is_empty());
    }
}
