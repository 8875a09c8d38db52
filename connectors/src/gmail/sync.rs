//! The mailbox-wide message stream. Without a cursor, a full sync: the
//! profile's history id first (so nothing changing meanwhile is missed),
//! then `messages.list` with `q=after:{since}` page by page, each page's
//! metadata fetched through the batch endpoint. After it, `history.list` from
//! that history id: `messagesAdded` become upserts (metadata fetched in
//! batches), `messagesDeleted` removals. A start id Gmail no longer keeps
//! answers 404: [`ConnectorError::SyncStateExpired`], and the sync starts over.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde::Deserialize;
use tracing::debug;

use super::{
    client::GmailClient,
    cursor::Cursor,
    errors,
    messages::{GmailMessage, is_mail},
};
use crate::{
    error::{ConnectorError, Provider},
    mailbox::{Continuation, MessageChange, MessagePage},
};

const GMAIL: Provider = Provider::Gmail;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageList {
    #[serde(default)]
    messages: Vec<MessageRef>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageRef {
    id: String,
    #[serde(default)]
    label_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryList {
    #[serde(default)]
    history: Vec<HistoryRecord>,
    #[serde(default)]
    next_page_token: Option<String>,
    history_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryRecord {
    #[serde(default)]
    messages_added: Vec<Changed>,
    #[serde(default)]
    messages_deleted: Vec<Changed>,
}

#[derive(Deserialize)]
struct Changed {
    message: MessageRef,
}

fn upsert(message: GmailMessage) -> Result<Option<MessageChange>, ConnectorError> {
    if !message.is_mail() {
        return Ok(None);
    }
    message
        .into_mail_message()
        .map(|mail| Some(MessageChange::Upsert(mail)))
}

impl GmailClient {
    /// One page of the stream from `cursor` (none: a full sync from `since`).
    pub(crate) async fn changes(
        &self,
        cursor: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<MessagePage, ConnectorError> {
        match cursor.map(Cursor::parse).transpose()? {
            None => {
                let history_id = self.current_history_id().await?;
                self.full_sync_page(history_id, since.timestamp(), None).await
            }
            Some(Cursor::Full {
                history_id,
                after,
                page_token,
            }) => self.full_sync_page(history_id, after, Some(page_token)).await,
            Some(Cursor::History { start, page_token }) => self.history_page(start, page_token).await,
        }
    }

    async fn full_sync_page(
        &self,
        history_id: u64,
        after: i64,
        page_token: Option<String>,
    ) -> Result<MessagePage, ConnectorError> {
        let q = format!("after:{after}");
        let max = self.page_size().to_string();
        let mut query = vec![("q", q.as_str()), ("maxResults", max.as_str())];
        if let Some(token) = &page_token {
            query.push(("pageToken", token.as_str()));
        }
        let url = self.url("/gmail/v1/users/me/messages", &query)?;
        let reply = self.get(url, self.costs().messages_list).await?;
        if !reply.status.is_success() {
            return Err(errors::from_response(reply.status, &reply.headers, &reply.body));
        }
        let list: MessageList =
            serde_json::from_slice(&reply.body).map_err(|error| errors::unexpected("messages.list", &error))?;
        let mut seen = HashSet::new();
        let ids: Vec<String> = list
            .messages
            .iter()
            .filter(|message| seen.insert(message.id.clone()))
            .map(|message| message.id.clone())
            .collect();
        let mut fetched = self.fetch_metadata(&ids).await?;
        let mut changes = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(message) = fetched.remove(id)
                && let Some(change) = upsert(message)?
            {
                changes.push(change);
            }
        }
        let continuation = match list.next_page_token {
            Some(page_token) if !page_token.is_empty() => Continuation::More(
                Cursor::Full {
                    history_id,
                    after,
                    page_token,
                }
                .format(),
            ),
            _ => Continuation::Complete(
                Cursor::History {
                    start: history_id,
                    page_token: None,
                }
                .format(),
            ),
        };
        debug!(
            listed = ids.len(),
            changes = changes.len(),
            "Gmail full sync page read."
        );
        Ok(MessagePage { changes, continuation })
    }

    async fn history_page(&self, start: u64, page_token: Option<String>) -> Result<MessagePage, ConnectorError> {
        let start_text = start.to_string();
        let max = self.page_size().to_string();
        let mut query = vec![
            ("startHistoryId", start_text.as_str()),
            ("historyTypes", "messageAdded"),
            ("historyTypes", "messageDeleted"),
            ("maxResults", max.as_str()),
        ];
        if let Some(token) = &page_token {
            query.push(("pageToken", token.as_str()));
        }
        let url = self.url("/gmail/v1/users/me/history", &query)?;
        let reply = self.get(url, self.costs().history_list).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(ConnectorError::SyncStateExpired {
                provider: GMAIL,
                message: format!("Gmail no longer keeps the history from id {start}"),
            });
        }
        if !reply.status.is_success() {
            return Err(errors::from_response(reply.status, &reply.headers, &reply.body));
        }
        let list: HistoryList =
            serde_json::from_slice(&reply.body).map_err(|error| errors::unexpected("history.list", &error))?;

        // In record order: (id, added?). A message added and deleted within
        // the page is not fetched; its removal is enough.
        let mut events: Vec<(String, bool)> = Vec::new();
        for record in list.history {
            for added in record.messages_added {
                if is_mail(&added.message.label_ids) {
                    events.push((added.message.id, true));
                }
            }
            for deleted in record.messages_deleted {
                events.push((deleted.message.id, false));
            }
        }
        let last: HashMap<&str, bool> = events.iter().map(|(id, added)| (id.as_str(), *added)).collect();
        let mut to_fetch: Vec<String> = Vec::new();
        let mut queued = HashSet::new();
        for (id, added) in &events {
            if *added && last.get(id.as_str()) == Some(&true) && queued.insert(id.as_str()) {
                to_fetch.push(id.clone());
            }
        }
        let mut fetched = self.fetch_metadata(&to_fetch).await?;
        let mut changes = Vec::with_capacity(events.len());
        for (id, added) in events {
            if !added {
                changes.push(MessageChange::Removed { id });
            } else if let Some(message) = fetched.remove(&id)
                && let Some(change) = upsert(message)?
            {
                changes.push(change);
            }
        }

        let continuation = match list.next_page_token {
            Some(token) if !token.is_empty() => Continuation::More(
                Cursor::History {
                    start,
                    page_token: Some(token),
                }
                .format(),
            ),
            _ => {
                let newest: u64 = list
                    .history_id
                    .parse()
                    .map_err(|_| ConnectorError::permanent(GMAIL, "the history answer's historyId is not a number"))?;
                Continuation::Complete(
                    Cursor::History {
                        start: newest.max(start),
                        page_token: None,
                    }
                    .format(),
                )
            }
        };
        debug!(changes = changes.len(), "Gmail history page read.");
        Ok(MessagePage { changes, continuation })
    }
}
