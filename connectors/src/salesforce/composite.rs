//! Several SOQL queries in one call: the Composite resource
//! (`POST /services/data/vXX.X/composite`), which the org's daily allocation
//! counts once whatever it carries. Salesforce takes at most 25 subrequests
//! per composite, of which at most 5 queries: [`SalesforceClient::query_many`]
//! sends its queries five at a time, each composite through the client's one
//! call path (gate, reserve, a `401` refreshed once and retried, errors
//! classified), and maps each subrequest's error answer to the same taxonomy
//! as a direct query's.

use reqwest::{Method, StatusCode, Url, header::HeaderMap};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::instrument;

use super::{
    client::{SalesforceClient, join, next_page, unexpected},
    errors,
    query::QueryPage,
};
use crate::error::{ConnectorError, Provider};

const SALESFORCE: Provider = Provider::Salesforce;

/// The most queries one Composite call carries: Salesforce allows 25
/// subrequests per composite, of which at most 5 queries or sObject
/// Collections calls.
pub const COMPOSITE_QUERY_LIMIT: usize = 5;

/// One query's outcome in [`SalesforceClient::query_many`]: its records, or
/// the error its subrequest answered.
pub type QueryOutcome = Result<Vec<Map<String, Value>>, ConnectorError>;

/// A Composite answer: one entry per subrequest.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompositeAnswer {
    composite_response: Vec<SubrequestAnswer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubrequestAnswer {
    #[serde(default)]
    body: Value,
    http_status_code: u16,
    #[serde(default)]
    reference_id: Option<String>,
}

/// The reference id of the `index`th query of a composite.
fn reference_id(index: usize) -> String {
    format!("query{index}")
}

/// The path of `GET query?q=soql` as a subrequest names it (a full path
/// under `/services/data/`, the SOQL form-encoded).
fn query_url(query_path: &str, soql: &str) -> Result<String, ConnectorError> {
    let mut url = Url::parse("https://composite.invalid")
        .and_then(|base| base.join(query_path))
        .map_err(|error| ConnectorError::permanent(SALESFORCE, format!("query path: {error}")))?;
    url.query_pairs_mut().append_pair("q", soql);
    Ok(format!("{}?{}", url.path(), url.query().unwrap_or_default()))
}

/// A subrequest's answer: its first page, or its error in the taxonomy (as
/// the same answer to a direct call would be classified).
fn first_page(answer: SubrequestAnswer) -> Result<QueryPage, ConnectorError> {
    let status = StatusCode::from_u16(answer.http_status_code).map_err(|_| {
        ConnectorError::permanent(
            SALESFORCE,
            format!("a subrequest answered HTTP {}", answer.http_status_code),
        )
    })?;
    if !status.is_success() {
        let body = serde_json::to_vec(&answer.body).unwrap_or_default();
        return Err(errors::from_response(status, &HeaderMap::new(), &body));
    }
    serde_json::from_value(answer.body).map_err(|error| unexpected(&error))
}

impl SalesforceClient {
    /// Runs every SOQL query of `queries` and answers, in input order, each
    /// query's records (every page followed) or the error its subrequest
    /// answered (classified as a direct query's would be: a malformed query
    /// is permanent, `UNABLE_TO_LOCK_ROW` lock contention, ...). The first
    /// pages come from Composite calls of up to [`COMPOSITE_QUERY_LIMIT`]
    /// queries, each one call of the org's allocation; a query with more
    /// pages follows its `nextRecordsUrl` with direct calls. A failure of a
    /// whole call (session, quota, outage) is the outer error.
    ///
    /// The queries go as they are: build them from trusted parts (names and
    /// escaped literals), as [`SalesforceClient::select_in`] does.
    #[instrument(skip_all, fields(queries = queries.len()))]
    pub async fn query_many(&self, queries: &[String]) -> Result<Vec<QueryOutcome>, ConnectorError> {
        let query_path = self.api_path("query");
        let composite_path = self.api_path("composite");
        let mut outcomes = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(COMPOSITE_QUERY_LIMIT) {
            let subrequests = chunk
                .iter()
                .enumerate()
                .map(|(index, soql)| {
                    Ok(json!({
                        "method": "GET",
                        "url": query_url(&query_path, soql)?,
                        "referenceId": reference_id(index),
                    }))
                })
                .collect::<Result<Vec<Value>, ConnectorError>>()?;
            let body = json!({"allOrNone": false, "compositeRequest": subrequests});
            let answer: CompositeAnswer = self
                .call(Method::POST, |base| join(base, &composite_path), Some(&body))
                .await?;
            let mut answers: Vec<Option<SubrequestAnswer>> = chunk.iter().map(|_| None).collect();
            for entry in answer.composite_response {
                let position = entry
                    .reference_id
                    .as_deref()
                    .and_then(|id| (0..chunk.len()).find(|index| reference_id(*index) == id));
                if let Some(position) = position {
                    answers[position] = Some(entry);
                }
            }
            for answer in answers {
                let Some(answer) = answer else {
                    return Err(ConnectorError::permanent(
                        SALESFORCE,
                        "the composite answer lacks a subrequest's entry",
                    ));
                };
                outcomes.push(match first_page(answer) {
                    Ok(page) => self.follow(page).await,
                    Err(error) => Err(error),
                });
            }
        }
        Ok(outcomes)
    }

    /// The records of `page` and of every page after it.
    async fn follow(&self, mut page: QueryPage) -> Result<Vec<Map<String, Value>>, ConnectorError> {
        let mut records = Vec::new();
        loop {
            records.append(&mut page.records);
            let Some(next) = page.next_records_url.take().filter(|_| !page.done) else {
                return Ok(records);
            };
            page = self.call(Method::GET, |base| next_page(base, &next), None).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subrequest_url_is_the_query_path_with_the_soql_form_encoded() {
        assert_eq!(
            query_url(
                "/services/data/v62.0/query",
                "SELECT Id FROM Contact WHERE Email IN ('a+b@x.test')"
            )
            .unwrap(),
            "/services/data/v62.0/query?q=SELECT+Id+FROM+Contact+WHERE+Email+IN+%28%27a%2Bb%40x.test%27%29"
        );
    }

    #[test]
    fn a_subrequest_error_is_classified_as_the_direct_answer_would_be() {
        let answer = |status: u16, code: &str| SubrequestAnswer {
            body: json!([{"errorCode": code, "message": "m"}]),
            http_status_code: status,
            reference_id: Some(reference_id(0)),
        };
        let kind = |status, code| first_page(answer(status, code)).unwrap_err().kind();
        use crate::error::ErrorKind;
        assert_eq!(kind(400, "MALFORMED_QUERY"), ErrorKind::Permanent);
        assert_eq!(kind(400, "UNABLE_TO_LOCK_ROW"), ErrorKind::LockContention);
        assert_eq!(kind(503, "SERVER_UNAVAILABLE"), ErrorKind::Transient);
        assert_eq!(kind(401, "INVALID_SESSION_ID"), ErrorKind::Authorization);
    }
}
