//! HTTP: the one EWS route and the gate every call passes, in Exchange's
//! order: Basic authentication, the account's concurrency and request budget,
//! an armed fault, latency (while the call counts as in flight), then the
//! mailbox the call opens (Direct Logon or Impersonation) and the operation.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};

use crate::shared::latency;

use super::{
    EWS_PATH, Fault, Operation,
    operations::{self, Answer, TYPES_NS},
    store::{State as Inner, Store},
    xml::{self, Element, esc},
};

const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const ERRORS_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/errors";

pub(crate) fn router(store: Arc<Store>) -> Router {
    Router::new().route(EWS_PATH, post(ews)).with_state(store)
}

fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP_NS}"><s:Header><h:ServerVersionInfo MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" MinorBuildNumber="6" Version="V2017_07_11" xmlns:h="{TYPES_NS}"/></s:Header><s:Body>{body}</s:Body></s:Envelope>"#
    )
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        envelope(&body),
    )
        .into_response()
}

/// HTTP 500 with a SOAP fault, `BackOffMilliseconds` in its detail when given.
fn fault(code: &str, message: &str, backoff_ms: Option<u64>) -> Response {
    let backoff = backoff_ms
        .map(|milliseconds| {
            format!(
                r#"<t:MessageXml xmlns:t="{TYPES_NS}"><t:Value Name="BackOffMilliseconds">{milliseconds}</t:Value></t:MessageXml>"#
            )
        })
        .unwrap_or_default();
    xml_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            r#"<s:Fault><faultcode xmlns:a="{TYPES_NS}">a:{code}</faultcode><faultstring xml:lang="en-US">{message}</faultstring><detail><e:ResponseCode xmlns:e="{ERRORS_NS}">{code}</e:ResponseCode><e:Message xmlns:e="{ERRORS_NS}">{message}</e:Message>{backoff}</detail></s:Fault>"#,
            message = esc(message)
        ),
    )
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"simulated-exchange\""),
        )],
    )
        .into_response()
}

fn server_busy(backoff_ms: u64) -> Response {
    fault(
        "ErrorServerBusy",
        "The server cannot service this request right now. Try again later.",
        (backoff_ms > 0).then_some(backoff_ms),
    )
}

fn connection_count() -> Response {
    fault(
        "ErrorExceededConnectionCount",
        "You have exceeded the available concurrent connections for your account.  Try again once your other requests have completed.",
        None,
    )
}

/// The account and password of a Basic `Authorization` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?.trim();
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (account, password) = decoded.split_once(':')?;
    Some((account.to_owned(), password.to_owned()))
}

/// The mailbox named by an `ExchangeImpersonation` header, if any.
fn impersonated(envelope: &Element) -> Option<String> {
    let sid = envelope.find(&["Header", "ExchangeImpersonation", "ConnectingSID"])?;
    ["PrimarySmtpAddress", "SmtpAddress"]
        .iter()
        .find_map(|name| sid.child_text(name))
        .map(|smtp| smtp.trim().to_lowercase())
}

/// Decrements the account's in-flight calls when the call ends, however it ends.
struct InFlight {
    store: Arc<Store>,
    account: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.store.with(|state| {
            if let Some(account) = state.accounts.get_mut(&self.account) {
                account.in_flight = account.in_flight.saturating_sub(1);
            }
        });
    }
}

/// Why the gate turned a call away, answered as Exchange does.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Unauthorized,
    Unavailable,
    ServerBusy(u64),
    ConnectionCount,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized => unauthorized(),
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            Refusal::ServerBusy(backoff_ms) => server_busy(backoff_ms),
            Refusal::ConnectionCount => connection_count(),
        }
    }
}

/// A call the gate let through, before the mailbox is opened.
struct Admitted {
    guard: InFlight,
    latency: std::time::Duration,
    fault: Option<Fault>,
}

/// The fault armed for `key` that this call answers with, if any.
fn take_fault(state: &mut Inner, key: &str, operation: Operation) -> Option<Fault> {
    let mut faults = state.faults.remove(key)?;
    let fault = faults.take(operation, || state.random.next_f64());
    state.faults.insert(key.to_owned(), faults);
    fault
}

fn admit(
    store: &Arc<Store>,
    credentials: Option<(String, String)>,
    target: Option<&str>,
    operation: Operation,
) -> Result<Admitted, Refusal> {
    let config = &store.config;
    store.with(|state| {
        let account_key = credentials
            .as_ref()
            .map(|(account, _)| account.to_lowercase())
            .filter(|key| state.accounts.contains_key(key));
        state.count(account_key.as_deref(), operation);
        let authenticated = match (&account_key, &credentials) {
            (Some(key), Some((_, password))) => state.accounts[key].password_matches(password),
            _ => false,
        };
        let Some(key) = account_key.filter(|_| authenticated) else {
            return Err(Refusal::Unauthorized);
        };
        let fault = take_fault(state, &key, operation).or_else(|| {
            let mailbox = target.map(str::to_owned).or_else(|| state.own_mailbox(&key))?;
            take_fault(state, &mailbox, operation)
        });
        let now = std::time::Instant::now();
        let account = state.accounts.get_mut(&key).ok_or(Refusal::Unauthorized)?;
        if fault.is_some() {
            account.counters.faults += 1;
        }
        match fault {
            Some(Fault::Unauthorized) => return Err(Refusal::Unauthorized),
            Some(Fault::Http503) => return Err(Refusal::Unavailable),
            Some(Fault::ServerBusy { backoff_ms }) => return Err(Refusal::ServerBusy(backoff_ms)),
            Some(Fault::ConnectionCount) => return Err(Refusal::ConnectionCount),
            Some(Fault::InvalidSyncState) | None => {}
        }
        if account.in_flight >= config.max_concurrency {
            account.counters.throttled += 1;
            return Err(Refusal::ConnectionCount);
        }
        while account
            .recent
            .front()
            .is_some_and(|admitted| now.saturating_duration_since(*admitted).as_secs() >= 60)
        {
            account.recent.pop_front();
        }
        if account.recent.len() >= config.requests_per_minute as usize {
            account.counters.throttled += 1;
            return Err(Refusal::ServerBusy(config.busy_backoff_ms));
        }
        account.recent.push_back(now);
        account.in_flight += 1;
        Ok(Admitted {
            guard: InFlight {
                store: store.clone(),
                account: key,
            },
            latency: state.latency.draw(&mut state.random),
            fault,
        })
    })
}

/// `POST /EWS/Exchange.asmx`: one SOAP request.
async fn ews(State(store): State<Arc<Store>>, headers: HeaderMap, body: Bytes) -> Response {
    let document = String::from_utf8_lossy(&body);
    let parsed = xml::parse(&document).ok().filter(|root| root.name == "Envelope");
    let request = parsed
        .as_ref()
        .and_then(|root| root.child("Body"))
        .and_then(|body| body.children.first());
    let operation = request.map_or(Operation::Unknown, |request| Operation::from_name(&request.name));
    let target = parsed.as_ref().and_then(impersonated);
    let admitted = match admit(&store, basic(&headers), target.as_deref(), operation) {
        Ok(admitted) => admitted,
        Err(refused) => return refused.into_response(),
    };
    latency::wait(admitted.latency).await;
    let Some(request) = request else {
        return fault(
            "ErrorSchemaValidation",
            "The request failed schema validation: the body is not a SOAP envelope.",
            None,
        );
    };
    let anchor = headers
        .get("x-anchormailbox")
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_lowercase());
    let config = &store.config;
    let account = admitted.guard.account.clone();
    let answer = store.with(|state| {
        let mailbox = match &target {
            Some(smtp) => {
                if !state
                    .accounts
                    .get(&account)
                    .is_some_and(|account| account.impersonation_role)
                {
                    return Answer::Fault {
                        code: "ErrorImpersonateUserDenied",
                        message: "The account does not have permission to impersonate the requested user.".to_owned(),
                    };
                }
                if anchor.as_deref() != Some(smtp.as_str()) {
                    return Answer::Fault {
                        code: "ErrorInvalidRequest",
                        message: "The request is invalid: X-AnchorMailbox must name the impersonated mailbox."
                            .to_owned(),
                    };
                }
                state.mailboxes.contains_key(smtp).then(|| smtp.clone())
            }
            None => state.own_mailbox(&account),
        };
        let Some(mailbox) = mailbox else {
            return Answer::Fault {
                code: "ErrorNonExistentMailbox",
                message: "The SMTP address has no mailbox associated with it.".to_owned(),
            };
        };
        if admitted.fault == Some(Fault::InvalidSyncState) {
            return operations::sync_state_refused();
        }
        operations::handle(state, config, &mailbox, operation, request)
    });
    drop(admitted.guard);
    match answer {
        Answer::Body(body) => xml_response(StatusCode::OK, body),
        Answer::Fault { code, message } => fault(code, &message, None),
    }
}
