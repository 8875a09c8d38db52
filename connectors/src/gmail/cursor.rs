//! The message stream's cursor, opaque to the sync:
//! - `full:{historyId}:{after}:{pageToken}`: a full sync in progress, listing
//!   the messages received from `after` (epoch seconds) on; `historyId` was the
//!   mailbox's before the listing began, so history from there catches what
//!   changed meanwhile;
//! - `history:{startHistoryId}`: caught up, history from that id on;
//! - `history:{startHistoryId}:{pageToken}`: history pages in progress.

use crate::error::{ConnectorError, Provider};

/// Where the stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cursor {
    /// A full sync between two `messages.list` pages.
    Full {
        history_id: u64,
        after: i64,
        page_token: String,
    },
    /// Following history.
    History { start: u64, page_token: Option<String> },
}

impl Cursor {
    /// Reads a cursor this connector wrote. One it cannot read asks for a
    /// full sync (the stream restarts rather than stalls).
    pub(crate) fn parse(text: &str) -> Result<Self, ConnectorError> {
        let unreadable = || ConnectorError::SyncStateExpired {
            provider: Provider::Gmail,
            message: "the stored cursor is not one this connector writes".to_owned(),
        };
        if let Some(rest) = text.strip_prefix("full:") {
            let mut fields = rest.splitn(3, ':');
            let (Some(history_id), Some(after), Some(page_token)) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(unreadable());
            };
            if page_token.is_empty() {
                return Err(unreadable());
            }
            return Ok(Cursor::Full {
                history_id: history_id.parse().map_err(|_| unreadable())?,
                after: after.parse().map_err(|_| unreadable())?,
                page_token: page_token.to_owned(),
            });
        }
        if let Some(rest) = text.strip_prefix("history:") {
            let (start, page_token) = match rest.split_once(':') {
                Some((start, token)) if !token.is_empty() => (start, Some(token.to_owned())),
                Some(_) => return Err(unreadable()),
                None => (rest, None),
            };
            return Ok(Cursor::History {
                start: start.parse().map_err(|_| unreadable())?,
                page_token,
            });
        }
        Err(unreadable())
    }

    /// The cursor as stored.
    pub(crate) fn format(&self) -> String {
        match self {
            Cursor::Full {
                history_id,
                after,
                page_token,
            } => format!("full:{history_id}:{after}:{page_token}"),
            Cursor::History {
                start,
                page_token: None,
            } => format!("history:{start}"),
            Cursor::History {
                start,
                page_token: Some(token),
            } => format!("history:{start}:{token}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn cursors_read_back_as_written() {
        for cursor in [
            Cursor::Full {
                history_id: 42,
                after: 1_700_000_000,
                page_token: "tok:en".to_owned(),
            },
            Cursor::History {
                start: 7,
                page_token: None,
            },
            Cursor::History {
                start: 7,
                page_token: Some("next".to_owned()),
            },
        ] {
            assert_eq!(Cursor::parse(&cursor.format()).unwrap(), cursor);
        }
    }

    #[test]
    fn an_unreadable_cursor_asks_for_a_full_sync() {
        for text in ["", "delta:1", "history:x", "history:1:", "full:1:2:", "full:1"] {
            assert_eq!(
                Cursor::parse(text).unwrap_err().kind(),
                ErrorKind::SyncStateExpired,
                "{text}"
            );
        }
    }
}
