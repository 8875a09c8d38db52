//! Message delta of one folder: the first request's URL (with `$select` and
//! the `receivedDateTime ge` baseline filter, which the tokens carry from
//! then on), the links Graph answers (followed only on the configured host),
//! and a page read into the provider-neutral shape.

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;
use tracing::warn;

use crate::{
    error::{ConnectorError, Provider},
    mailbox::{Continuation, EmailAddress, MailFolder, MailMessage, MessageChange, MessagePage},
};

const GRAPH: Provider = Provider::Graph;

/// The message properties the sync reads.
pub(crate) const SELECT: &str =
    "id,internetMessageId,subject,from,toRecipients,ccRecipients,sentDateTime,receivedDateTime,bodyPreview";

/// The well-known folder name of a stream.
pub(crate) fn folder_name(folder: MailFolder) -> Result<&'static str, ConnectorError> {
    match folder {
        MailFolder::Inbox => Ok("inbox"),
        MailFolder::SentItems => Ok("sentitems"),
        MailFolder::AllMail => Err(ConnectorError::permanent(
            GRAPH,
            "Graph follows Inbox and Sent Items as separate streams, not the whole mailbox",
        )),
    }
}

/// `{base}/v1.0/users/{mailbox}/{segments...}`.
pub(crate) fn users_url(base: &Url, mailbox: &str, segments: &[&str]) -> Result<Url, ConnectorError> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| ConnectorError::permanent(GRAPH, "the Graph base URL cannot take a path"))?;
        path.pop_if_empty().extend(["v1.0", "users", mailbox]).extend(segments);
    }
    Ok(url)
}

/// The first request of a full sync of `folder` from `since` on.
pub(crate) fn first_url(
    base: &Url,
    mailbox: &str,
    folder: MailFolder,
    since: DateTime<Utc>,
) -> Result<Url, ConnectorError> {
    let mut url = users_url(
        base,
        mailbox,
        &["mailFolders", folder_name(folder)?, "messages", "delta"],
    )?;
    // Spelled out rather than form-encoded: OData reads `%20`, and `$` and
    // `:` are fine in a query.
    let since = since.to_rfc3339_opts(SecondsFormat::Secs, true);
    url.set_query(Some(&format!(
        "$select={SELECT}&$filter=receivedDateTime%20ge%20{since}"
    )));
    Ok(url)
}

/// The URL of a stored cursor (a `@odata.nextLink` or `@odata.deltaLink`),
/// which must stay on the configured Graph host and under its API.
pub(crate) fn cursor_url(base: &Url, cursor: &str) -> Result<Url, ConnectorError> {
    let refused = || ConnectorError::permanent(GRAPH, "the delta link does not point to the configured Graph host");
    let url = Url::parse(cursor).map_err(|_| refused())?;
    let api_root = format!("{}/v1.0/", base.path().trim_end_matches('/'));
    if url.origin() != base.origin() || !url.path().starts_with(&api_root) || url.fragment().is_some() {
        return Err(refused());
    }
    Ok(url)
}

#[derive(Deserialize)]
struct DeltaAnswer {
    #[serde(default)]
    value: Vec<Value>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    delta_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphMessage {
    id: String,
    #[serde(default)]
    internet_message_id: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    from: Option<Recipient>,
    #[serde(default)]
    to_recipients: Option<Vec<Recipient>>,
    #[serde(default)]
    cc_recipients: Option<Vec<Recipient>>,
    #[serde(default)]
    sent_date_time: Option<DateTime<Utc>>,
    #[serde(default)]
    received_date_time: Option<DateTime<Utc>>,
    #[serde(default)]
    body_preview: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipient {
    #[serde(default)]
    email_address: Option<Address>,
}

#[derive(Deserialize)]
struct Address {
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

fn unexpected(error: &serde_json::Error) -> ConnectorError {
    // Only the position: a serde error's text may quote the answer.
    ConnectorError::permanent(
        GRAPH,
        format!(
            "unexpected delta answer (line {}, column {})",
            error.line(),
            error.column()
        ),
    )
}

fn address(recipient: Recipient) -> Option<EmailAddress> {
    let Address { address, name } = recipient.email_address?;
    let address = address.filter(|address| !address.is_empty())?;
    // Graph repeats the address as the name when there is none.
    let name = name.filter(|name| !name.is_empty() && !name.eq_ignore_ascii_case(&address));
    Some(EmailAddress { address, name })
}

fn addresses(recipients: Option<Vec<Recipient>>) -> Vec<EmailAddress> {
    recipients.unwrap_or_default().into_iter().filter_map(address).collect()
}

fn change(
    entry: Value,
    folder: MailFolder,
    body_preview_chars: usize,
) -> Result<Option<MessageChange>, ConnectorError> {
    if entry.get("@removed").is_some() {
        let Some(id) = entry.get("id").and_then(Value::as_str) else {
            return Err(ConnectorError::permanent(GRAPH, "a removed entry has no id"));
        };
        return Ok(Some(MessageChange::Removed { id: id.to_owned() }));
    }
    let message: GraphMessage = serde_json::from_value(entry).map_err(|error| unexpected(&error))?;
    let Some(sent_at) = message.sent_date_time.or(message.received_date_time) else {
        warn!(message_id = %message.id, "A Graph message without a date is skipped.");
        return Ok(None);
    };
    let body_preview = message
        .body_preview
        .unwrap_or_default()
        .chars()
        .take(body_preview_chars)
        .collect();
    Ok(Some(MessageChange::Upsert(MailMessage {
        id: message.id,
        internet_message_id: message.internet_message_id.filter(|id| !id.is_empty()),
        sent_by_owner: folder == MailFolder::SentItems,
        subject: message.subject.unwrap_or_default(),
        from: message.from.and_then(address),
        to: addresses(message.to_recipients),
        cc: addresses(message.cc_recipients),
        sent_at,
        body_preview,
    })))
}

/// Reads one delta page of `folder`.
pub(crate) fn parse_page(
    body: &[u8],
    folder: MailFolder,
    body_preview_chars: usize,
) -> Result<MessagePage, ConnectorError> {
    let answer: DeltaAnswer = serde_json::from_slice(body).map_err(|error| unexpected(&error))?;
    let continuation = match (answer.next_link, answer.delta_link) {
        (Some(next), _) => Continuation::More(next),
        (None, Some(delta)) => Continuation::Complete(delta),
        (None, None) => {
            return Err(ConnectorError::permanent(
                GRAPH,
                "a delta page has neither a next link nor a delta link",
            ));
        }
    };
    let mut changes = Vec::with_capacity(answer.value.len());
    for entry in answer.value {
        if let Some(change) = change(entry, folder, body_preview_chars)? {
            changes.push(change);
        }
    }
    Ok(MessagePage { changes, continuation })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn base() -> Url {
        Url::parse("https://graph.microsoft.com").unwrap()
    }

    #[test]
    fn the_first_request_selects_and_filters_and_encodes_the_mailbox() {
        let since = Utc.with_ymd_and_hms(2024, 3, 5, 0, 0, 0).unwrap();
        let url = first_url(&base(), "adele vance@contoso.example", MailFolder::SentItems, since).unwrap();
        assert_eq!(
            url.as_str(),
            format!(
                "https://graph.microsoft.com/v1.0/users/adele%20vance@contoso.example/mailFolders/sentitems/messages/delta?$select={SELECT}&$filter=receivedDateTime%20ge%202024-03-05T00:00:00Z"
            )
        );
        assert!(first_url(&base(), "x", MailFolder::AllMail, since).is_err());
    }

    #[test]
    fn a_cursor_is_followed_only_on_the_configured_host() {
        let good = "https://graph.microsoft.com/v1.0/users/x/mailFolders/inbox/messages/delta?$deltatoken=abc";
        assert_eq!(cursor_url(&base(), good).unwrap().as_str(), good);
        for bad in [
            "https://evil.example/v1.0/users/x/mailFolders/inbox/messages/delta",
            "http://graph.microsoft.com/v1.0/users/x",
            "https://graph.microsoft.com:8443/v1.0/users/x",
            "https://graph.microsoft.com/beta/users/x",
            "/v1.0/users/x",
        ] {
            assert!(cursor_url(&base(), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_page_reads_messages_removals_and_the_link() {
        let body = serde_json::json!({
            "value": [
                {
                    "id": "AAk1",
                    "internetMessageId": "<m1@example.test>",
                    "subject": null,
                    "from": {"emailAddress": {"name": "megan@contoso.example", "address": "megan@contoso.example"}},
                    "toRecipients": [{"emailAddress": {"name": "Adele Vance", "address": "adele@contoso.example"}}],
                    "ccRecipients": null,
                    "receivedDateTime": "2024-03-05T10:00:00Z",
                    "bodyPreview": "Hello there",
                },
                {"id": "AAk2", "@removed": {"reason": "deleted"}},
            ],
            "@odata.nextLink": "https://graph.microsoft.com/v1.0/next",
        });
        let page = parse_page(body.to_string().as_bytes(), MailFolder::Inbox, 5).unwrap();
        assert_eq!(
            page.continuation,
            Continuation::More("https://graph.microsoft.com/v1.0/next".to_owned())
        );
        let MessageChange::Upsert(message) = &page.changes[0] else {
            panic!("{page:?}");
        };
        assert_eq!(message.subject, "");
        assert_eq!(message.body_preview, "Hello");
        assert_eq!(message.from.as_ref().unwrap().name, None);
        assert_eq!(message.to[0].name.as_deref(), Some("Adele Vance"));
        assert!(!message.sent_by_owner);
        assert_eq!(message.sent_at, Utc.with_ymd_and_hms(2024, 3, 5, 10, 0, 0).unwrap());
        assert_eq!(page.changes[1], MessageChange::Removed { id: "AAk2".to_owned() });
        assert!(parse_page(br#"{"value":[]}"#, MailFolder::Inbox, 5).is_err());
    }
}
