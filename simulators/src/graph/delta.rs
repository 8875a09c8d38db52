//! Message delta of one folder: the first request (with `$select` and a
//! `receivedDateTime ge` `$filter`) snapshots the folder's messages; pages
//! follow through `$skiptoken` links; the last page gives a `$deltatoken`
//! link that later answers only what changed since it was issued (new and
//! changed messages, deleted ones as `@removed`). The tokens carry the query
//! options; they expire after the configured lifetime or when a test expires
//! the mailbox's tokens, answering `410 Gone` with a `Location` to restart.

use std::{sync::Arc, time::Instant};

use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{
    Folder, GraphConfig,
    api::{ApiResponse, ME, Prefer, Target, encode_segment, is_me, select},
    store::{Mailbox, Message, State},
};

/// The properties a message has (what `$select` may name).
const MESSAGE_PROPERTIES: &[&str] = &[
    "id",
    "internetMessageId",
    "subject",
    "from",
    "sender",
    "toRecipients",
    "ccRecipients",
    "sentDateTime",
    "receivedDateTime",
    "bodyPreview",
    "body",
    "parentFolderId",
    "conversationId",
    "isRead",
    "isDraft",
    "hasAttachments",
    "importance",
    "createdDateTime",
    "lastModifiedDateTime",
];

/// The longest `bodyPreview` Graph gives.
const BODY_PREVIEW_CHARS: usize = 255;

/// One entry of a delta answer.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    Message(Box<Message>),
    Removed(String),
}

/// The options a round runs with, carried by its tokens.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    filter: Option<DateTime<Utc>>,
    select: Option<String>,
}

/// What a `$deltatoken` stands for: the changes after `since`.
#[derive(Debug)]
pub(crate) struct DeltaToken {
    mailbox: String,
    folder: Folder,
    since: u64,
    options: Options,
    issued: Instant,
    generation: u64,
}

/// What a `$skiptoken` stands for: the rest of a round's snapshot.
#[derive(Debug)]
pub(crate) struct SkipToken {
    mailbox: String,
    folder: Folder,
    entries: Arc<Vec<Entry>>,
    offset: usize,
    /// The change sequence the round's delta token starts after.
    end: u64,
    options: Options,
    issued: Instant,
    generation: u64,
}

/// A delta request, as the dispatcher parsed it.
pub(crate) struct DeltaRequest<'a> {
    pub mailbox: &'a str,
    pub user: &'a str,
    pub folder: &'a str,
    pub target: &'a Target,
    pub prefer: Prefer,
    pub base: &'a str,
}

/// The URL that restarts a folder's sync, under `/me` when the request was
/// (its links keep the form the client used, as Graph's do).
pub(crate) fn restart_url(base: &str, user: &str, folder: &str) -> String {
    let owner = if is_me(user) {
        ME.to_owned()
    } else {
        format!("users/{}", encode_segment(user))
    };
    format!(
        "{base}/v1.0/{owner}/mailFolders/{}/messages/delta",
        encode_segment(folder)
    )
}

/// `410 Gone` `syncStateNotFound`, with the restart URL in `Location`.
pub(crate) fn gone(location: Option<&str>) -> ApiResponse {
    let answer = ApiResponse::error(
        StatusCode::GONE,
        "syncStateNotFound",
        "The sync state is not found or has expired. Restart the synchronization.",
    );
    match location {
        Some(location) => answer.with_header("location", location),
        None => answer,
    }
}

fn bad_request(code: &str, message: &str) -> ApiResponse {
    ApiResponse::error(StatusCode::BAD_REQUEST, code, message)
}

/// `receivedDateTime ge|gt <ISO 8601>`, the one filter message delta takes.
fn parse_filter(filter: &str) -> Option<DateTime<Utc>> {
    let mut words = filter.split_whitespace();
    let (property, operator, value) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some()
        || !property.eq_ignore_ascii_case("receivedDateTime")
        || !(operator.eq_ignore_ascii_case("ge") || operator.eq_ignore_ascii_case("gt"))
    {
        return None;
    }
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|value| value.with_timezone(&Utc))
}

fn first_options(target: &Target) -> Result<Options, ApiResponse> {
    let filter = match target.option("$filter") {
        Some(filter) => Some(parse_filter(filter).ok_or_else(|| {
            bad_request(
                "ErrorInvalidUrlQueryFilter",
                "The query filter contains one or more invalid nodes: message delta takes only receivedDateTime ge <date>.",
            )
        })?),
        None => None,
    };
    let select = target.option("$select").map(str::to_owned);
    if let Some(select) = &select
        && let Some(unknown) = select
            .split(',')
            .map(str::trim)
            .find(|name| !MESSAGE_PROPERTIES.iter().any(|known| known.eq_ignore_ascii_case(name)))
    {
        return Err(bad_request(
            "RequestBroker--ParseUri",
            &format!("Could not find a property named '{unknown}' on type 'microsoft.graph.message'."),
        ));
    }
    Ok(Options { filter, select })
}

fn passes(message: &Message, options: &Options) -> bool {
    options.filter.is_none_or(|since| message.received_at >= since)
}

/// A message's id: the immutable one, or one that names its folder too (and
/// so changes when the message moves) without `Prefer: IdType="ImmutableId"`.
fn answered_id(id: &str, folder: Folder, immutable: bool) -> String {
    if immutable {
        return id.to_owned();
    }
    let tag = match folder {
        Folder::Inbox => "AQ",
        Folder::SentItems => "AS",
    };
    format!("AAMkAD{tag}{}", id.trim_start_matches("AAkALg"))
}

fn recipient_json(recipient: &super::Recipient) -> Value {
    let name = recipient.name.clone().unwrap_or_else(|| recipient.address.clone());
    json!({"emailAddress": {"name": name, "address": recipient.address}})
}

fn message_json(message: &Message, mailbox: &Mailbox, immutable: bool) -> Value {
    let time = |at: &DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let preview: String = message.body.chars().take(BODY_PREVIEW_CHARS).collect();
    json!({
        "@odata.type": "#microsoft.graph.message",
        "@odata.etag": format!("W/\"CQAAABYAAAA{}\"", message.changed),
        "id": answered_id(&message.id, message.folder, immutable),
        "createdDateTime": time(&message.received_at),
        "lastModifiedDateTime": time(&message.received_at),
        "receivedDateTime": time(&message.received_at),
        "sentDateTime": time(&message.sent_at),
        "hasAttachments": false,
        "internetMessageId": message.internet_message_id,
        "subject": message.subject,
        "bodyPreview": preview,
        "importance": "normal",
        "parentFolderId": mailbox.folder_id(message.folder),
        "conversationId": format!("AAQkAD{}", message.id.trim_start_matches("AAkALg")),
        "isRead": false,
        "isDraft": false,
        "body": {"contentType": "text", "content": message.body},
        "sender": recipient_json(&message.from),
        "from": recipient_json(&message.from),
        "toRecipients": message.to.iter().map(recipient_json).collect::<Vec<_>>(),
        "ccRecipients": message.cc.iter().map(recipient_json).collect::<Vec<_>>(),
    })
}

/// The folder's messages a first round returns, newest first; messages
/// received at the same instant in the order they arrived in the mailbox
/// (Exchange's order is stable too; the random ids are no order at all).
fn snapshot(mailbox: &Mailbox, folder: Folder, options: &Options) -> Vec<Entry> {
    let mut messages: Vec<&Message> = mailbox
        .messages
        .values()
        .filter(|message| message.folder == folder && passes(message, options))
        .collect();
    messages.sort_by(|a, b| {
        b.received_at
            .cmp(&a.received_at)
            .then_with(|| a.arrived.cmp(&b.arrived))
    });
    messages
        .into_iter()
        .map(|message| Entry::Message(Box::new(message.clone())))
        .collect()
}

/// What changed in the folder after `since`, in the order it changed.
fn changes(mailbox: &Mailbox, folder: Folder, since: u64, options: &Options) -> Vec<Entry> {
    let mut changed: Vec<(u64, Entry)> = mailbox
        .messages
        .values()
        .filter(|message| message.folder == folder && message.changed > since && passes(message, options))
        .map(|message| (message.changed, Entry::Message(Box::new(message.clone()))))
        .collect();
    changed.extend(
        mailbox
            .removals
            .iter()
            .filter(|removal| removal.folder == folder && removal.seq > since)
            .map(|removal| (removal.seq, Entry::Removed(removal.id.clone()))),
    );
    changed.sort_by_key(|(seq, _)| *seq);
    changed.into_iter().map(|(_, entry)| entry).collect()
}

fn token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Keeps `delta` (dropping the tokens past their lifetime) and answers its token.
fn issue_delta_token(state: &mut State, config: &GraphConfig, delta: DeltaToken) -> String {
    let token = token();
    state.delta_tokens.prune(delta.issued, config.delta_token_lifetime);
    state.delta_tokens.insert(token.clone(), delta.issued, delta);
    token
}

/// The options of a client's first delta request, read from its query
/// (`$select=...&$filter=receivedDateTime ge ...`), or why Graph would refuse it.
pub(crate) fn first_request_options(query: &str) -> Result<Options, String> {
    first_options(&Target::parse(&format!("/messages/delta?{query}"))).map_err(|refused| {
        refused
            .body
            .as_ref()
            .and_then(|body| body["error"]["message"].as_str())
            .unwrap_or("Graph refuses this delta query")
            .to_owned()
    })
}

/// The delta link a first round of `folder` with `options` ends with once
/// the client has read every page: everything in the folder now is behind it.
/// `user` is how the client names the mailbox in its path, `base` the
/// simulator's base URL as the client reaches it.
pub(crate) fn delta_link_after_first_round(
    state: &mut State,
    config: &GraphConfig,
    mailbox: &str,
    user: &str,
    folder: Folder,
    options: Options,
    base: &str,
) -> Option<String> {
    let (since, generation) = state
        .mailboxes
        .get(mailbox)
        .map(|kept| (kept.seq, kept.delta_generation))?;
    let token = issue_delta_token(
        state,
        config,
        DeltaToken {
            mailbox: mailbox.to_owned(),
            folder,
            since,
            options,
            issued: Instant::now(),
            generation,
        },
    );
    let location = restart_url(base, user, folder.well_known_name());
    Some(format!("{location}?$deltatoken={token}"))
}

/// Answers `GET .../mailFolders/{folder}/messages/delta`.
pub(crate) fn messages_delta(state: &mut State, config: &GraphConfig, request: DeltaRequest<'_>) -> ApiResponse {
    let now = Instant::now();
    let location = restart_url(request.base, request.user, request.folder);
    let Some(mailbox) = state.mailboxes.get(request.mailbox) else {
        return gone(Some(&location));
    };
    let Some(folder) = mailbox.well_known(request.folder) else {
        return ApiResponse::error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    let generation = mailbox.delta_generation;
    let live = |token_mailbox: &str, token_folder: Folder, issued: Instant, token_generation: u64| {
        token_mailbox == request.mailbox
            && token_folder == folder
            && token_generation == generation
            && now.saturating_duration_since(issued) < config.delta_token_lifetime
    };
    let (entries, offset, end, options) = if let Some(skip) = request.target.option("$skiptoken") {
        match state.skip_tokens.get(skip) {
            Some(token) if live(&token.mailbox, token.folder, token.issued, token.generation) => {
                (token.entries.clone(), token.offset, token.end, token.options.clone())
            }
            _ => return gone(Some(&location)),
        }
    } else if let Some(delta) = request.target.option("$deltatoken") {
        match state.delta_tokens.get(delta) {
            Some(token) if live(&token.mailbox, token.folder, token.issued, token.generation) => {
                let entries = changes(mailbox, folder, token.since, &token.options);
                (Arc::new(entries), 0, mailbox.seq, token.options.clone())
            }
            _ => return gone(Some(&location)),
        }
    } else {
        let options = match first_options(request.target) {
            Ok(options) => options,
            Err(refused) => return refused,
        };
        (Arc::new(snapshot(mailbox, folder, &options)), 0, mailbox.seq, options)
    };

    let requested = request
        .prefer
        .max_page_size
        .or_else(|| request.target.option("$top").and_then(|top| top.parse().ok()));
    let page_size = requested
        .unwrap_or(config.page_size)
        .clamp(1, config.max_page_size.max(1));
    let stop = entries.len().min(offset + page_size);
    let immutable = request.prefer.immutable_ids;
    let page: Vec<Value> = entries[offset.min(stop)..stop]
        .iter()
        .map(|entry| match entry {
            Entry::Message(message) => select(message_json(message, mailbox, immutable), options.select.as_deref()),
            Entry::Removed(id) => json!({
                "@odata.type": "#microsoft.graph.message",
                "id": answered_id(id, folder, immutable),
                "@removed": {"reason": "deleted"},
            }),
        })
        .collect();

    let mut answer = json!({
        "@odata.context": format!("{}/v1.0/$metadata#Collection(message)", request.base),
        "value": page,
    });
    if stop < entries.len() {
        let token = token();
        state.skip_tokens.prune(now, config.delta_token_lifetime);
        state.skip_tokens.insert(
            token.clone(),
            now,
            SkipToken {
                mailbox: request.mailbox.to_owned(),
                folder,
                entries,
                offset: stop,
                end,
                options,
                issued: now,
                generation,
            },
        );
        answer["@odata.nextLink"] = json!(format!("{location}?$skiptoken={token}"));
    } else {
        let token = issue_delta_token(
            state,
            config,
            DeltaToken {
                mailbox: request.mailbox.to_owned(),
                folder,
                since: end,
                options,
                issued: now,
                generation,
            },
        );
        answer["@odata.deltaLink"] = json!(format!("{location}?$deltatoken={token}"));
    }
    let response = ApiResponse::json(StatusCode::OK, answer);
    match request.prefer.max_page_size {
        Some(_) => response.with_header("preference-applied", format!("odata.maxpagesize={page_size}")),
        None => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_received_date_filter_is_taken() {
        let since = parse_filter("receivedDateTime ge 2024-03-01T00:00:00Z").unwrap();
        assert_eq!(since.to_rfc3339(), "2024-03-01T00:00:00+00:00");
        assert!(parse_filter("ReceivedDateTime GT 2024-03-01T00:00:00+01:00").is_some());
        assert_eq!(parse_filter("subject eq 'x'"), None);
        assert_eq!(parse_filter("receivedDateTime ge yesterday"), None);
        assert_eq!(
            parse_filter("receivedDateTime ge 2024-03-01T00:00:00Z and isRead eq false"),
            None
        );
    }

    #[test]
    fn without_immutable_ids_a_message_id_names_its_folder() {
        let id = "AAkALgabc";
        assert_eq!(answered_id(id, Folder::Inbox, true), id);
        assert_ne!(
            answered_id(id, Folder::Inbox, false),
            answered_id(id, Folder::SentItems, false)
        );
    }
}
