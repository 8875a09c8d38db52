//! What the fault test checks once the fleet is quiet, each check a figure of
//! the report with `passed`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use super::{Record, client::Call, fleet::Fleet, world::World};
use crate::demo::ControlApi;

/// Statuses of a session that did its work.
const SUCCEEDED: [&str; 2] = ["succeeded", "succeeded_with_issues"];

/// Waits until every seeded user had a successful session started after
/// `cleared_at`, every push completed, the outbox is empty and the ledger is
/// in Salesforce, or until a deadline; answers what it saw.
pub async fn quiesce(
    fleet: &mut Fleet,
    pool: &PgPool,
    control: &ControlApi,
    world: &World,
    cleared_at: DateTime<Utc>,
    interval: Duration,
) -> anyhow::Result<Value> {
    let began = Instant::now();
    let patience = interval * 4 + Duration::from_secs(180);
    let users: Vec<Uuid> = world.users.iter().map(|user| user.id).collect();
    let mut last_ledger = Instant::now() - Duration::from_secs(60);
    let mut ledger_missing = usize::MAX;
    loop {
        fleet.check()?;
        // Users whose sync was suspended never sync again: the checks count
        // them; the wait is for the others.
        let (unsynced, pushes_open, outbox_pending): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM users u WHERE u.id = ANY($1) AND u.sync_status = 'enabled' \
                         AND NOT EXISTS (SELECT 1 FROM sync_sessions s WHERE s.user_id = u.id \
                                         AND s.started_at > $2 AND s.status = ANY($3))), \
                    (SELECT count(*) FROM pushes WHERE status NOT IN ('completed', 'failed')), \
                    (SELECT count(*) FROM email_outbox WHERE status IN ('pending', 'sending'))",
        )
        .bind(&users)
        .bind(cleared_at)
        .bind(&SUCCEEDED[..])
        .fetch_one(pool)
        .await?;
        if unsynced == 0 && last_ledger.elapsed() > Duration::from_secs(10) {
            let enabled: HashSet<Uuid> =
                sqlx::query_scalar("SELECT id FROM users WHERE id = ANY($1) AND sync_status = 'enabled'")
                    .bind(&users)
                    .fetch_all(pool)
                    .await?
                    .into_iter()
                    .collect();
            ledger_missing = ledger(control, pool, world)
                .await?
                .missing_of
                .iter()
                .filter(|user| enabled.contains(user))
                .count();
            last_ledger = Instant::now();
        }
        let quiet = unsynced == 0 && pushes_open == 0 && outbox_pending == 0 && ledger_missing == 0;
        if quiet || began.elapsed() > patience {
            eprintln!(
                "faults: quiesce {} after {:.0}s (unsynced {unsynced}, pushes open {pushes_open}, \
                 outbox pending {outbox_pending}, ledger missing {ledger_missing})",
                if quiet { "reached" } else { "timed out" },
                began.elapsed().as_secs_f64()
            );
            return Ok(json!({
                "reached": quiet, "waited_s": began.elapsed().as_secs(), "patience_s": patience.as_secs(),
                "users_not_synced": unsynced, "pushes_open": pushes_open, "outbox_pending": outbox_pending,
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The ledger against Salesforce.
struct Ledger {
    logged: usize,
    missing: usize,
    /// The user of each missing message.
    missing_of: Vec<Uuid>,
    duplicated: usize,
    mislinked: usize,
    unexpected: usize,
    examples: Vec<Value>,
}

/// Reads every Task and Contact of the run's Salesforce orgs and the fleet's
/// Task mappings, and finds each ledger message's Task.
async fn ledger(control: &ControlApi, pool: &PgPool, world: &World) -> anyhow::Result<Ledger> {
    let mappings: HashSet<(Uuid, String)> =
        sqlx::query_as::<_, (Uuid, String)>("SELECT user_id, crm_id FROM item_mappings WHERE crm_object = 'Task'")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let mut tasks: Vec<HashMap<String, Vec<Value>>> = Vec::new();
    let mut contacts: Vec<HashMap<String, String>> = Vec::new();
    let mut unexpected = 0;
    for org in &world.salesforce_orgs {
        let mut by_subject: HashMap<String, Vec<Value>> = HashMap::new();
        for task in control
            .get(&["_control", "salesforce", "orgs", org, "records", "Task"])
            .await?
            .as_array()
            .into_iter()
            .flatten()
        {
            let subject = task["Subject"].as_str().unwrap_or_default().to_owned();
            if !subject.starts_with("Email: Ledger ") {
                unexpected += 1;
            }
            by_subject.entry(subject).or_default().push(task.clone());
        }
        tasks.push(by_subject);
        let ids = control
            .get(&["_control", "salesforce", "orgs", org, "records", "Contact"])
            .await?
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|contact| {
                Some((
                    contact["Email"].as_str()?.to_owned(),
                    contact["Id"].as_str()?.to_owned(),
                ))
            })
            .collect();
        contacts.push(ids);
    }
    let mut figures = Ledger {
        logged: 0,
        missing: 0,
        missing_of: Vec::new(),
        duplicated: 0,
        mislinked: 0,
        unexpected,
        examples: Vec::new(),
    };
    for entry in &world.ledger {
        let user = &world.users[entry.user];
        let found = tasks[user.salesforce_org]
            .get(&format!("Email: {}", entry.subject))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let problem = match found {
            [] => {
                figures.missing += 1;
                figures.missing_of.push(user.id);
                Some("missing")
            }
            [task] => {
                let who = task["WhoId"].as_str();
                let id = task["Id"].as_str().unwrap_or_default().to_owned();
                if who.is_none() || who != contacts[user.salesforce_org].get(&entry.contact).map(String::as_str) {
                    figures.mislinked += 1;
                    Some("WhoId is not the sender's Contact")
                } else if !mappings.contains(&(user.id, id)) {
                    figures.mislinked += 1;
                    Some("no mapping of the user to the Task")
                } else {
                    figures.logged += 1;
                    None
                }
            }
            _ => {
                figures.duplicated += 1;
                Some("duplicated")
            }
        };
        if let Some(problem) = problem
            && figures.examples.len() < 10
        {
            figures.examples.push(json!({
                "subject": entry.subject, "user": user.email, "access": user.access.access_type(),
                "added_at": entry.added_at, "tasks": found.len(), "problem": problem,
            }));
        }
    }
    Ok(figures)
}

/// What the checks read.
pub struct Inputs<'a> {
    pub pool: &'a PgPool,
    pub control: &'a ControlApi,
    pub world: &'a World,
    pub record: &'a Record,
    pub fleet: &'a Fleet,
    pub cleared_at: DateTime<Utc>,
    pub secrets: &'a [String],
}

/// Every check, by name.
pub async fn run(inputs: Inputs<'_>) -> anyhow::Result<Value> {
    let mut checks = serde_json::Map::new();
    let mut add = |name: &str, passed: bool, mut figures: Value| {
        figures["passed"] = json!(passed);
        checks.insert(name.to_owned(), figures);
    };

    let ledger = ledger(inputs.control, inputs.pool, inputs.world).await?;
    add(
        "ledger_logged_exactly_once",
        ledger.missing == 0 && ledger.duplicated == 0 && ledger.mislinked == 0 && ledger.unexpected == 0,
        json!({
            "messages": inputs.world.ledger.len(), "logged_once_and_linked": ledger.logged,
            "missing": ledger.missing, "duplicated": ledger.duplicated, "mislinked": ledger.mislinked,
            "tasks_not_from_the_ledger": ledger.unexpected, "examples": ledger.examples,
        }),
    );

    let (passed, figures) = authorizations(inputs.pool, inputs.world).await?;
    add("no_authorization_lost", passed, figures);

    let (passed, figures) = requests(&inputs.record.calls);
    add("no_5xx_took_effect", passed, figures);

    let (passed, figures) = effects(inputs.pool, &inputs.record.calls).await?;
    add("retries_did_nothing_twice", passed, figures);

    let (passed, figures) = emails(inputs.pool, inputs.control).await?;
    add("emails_exactly_once", passed, figures);

    let (passed, figures) = overlaps(inputs.pool, &inputs.fleet.worker_kills).await?;
    add("no_overlapping_sessions", passed, figures);

    let (running, leased): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM sync_sessions_all WHERE status = 'running'), \
                (SELECT count(*) FROM user_runs WHERE running_session_id IS NOT NULL)",
    )
    .fetch_one(inputs.pool)
    .await?;
    add(
        "no_session_running_after_quiesce",
        running == 0 && leased == 0,
        json!({ "sessions_running": running, "users_leased": leased }),
    );

    let users: Vec<Uuid> = inputs.world.users.iter().map(|user| user.id).collect();
    let unsynced: Vec<String> = sqlx::query_scalar(
        "SELECT u.email FROM users u WHERE u.id = ANY($1) AND NOT EXISTS ( \
             SELECT 1 FROM sync_sessions s WHERE s.user_id = u.id AND s.started_at > $2 AND s.status = ANY($3)) \
         ORDER BY u.email",
    )
    .bind(&users)
    .bind(inputs.cleared_at)
    .bind(&SUCCEEDED[..])
    .fetch_all(inputs.pool)
    .await?;
    add(
        "every_user_synced_after_faults",
        unsynced.is_empty(),
        json!({ "users": users.len(), "not_synced": unsynced.len(), "examples": unsynced.iter().take(10).collect::<Vec<_>>() }),
    );

    let (passed, figures) = logs(&inputs.fleet.logs, inputs.secrets)?;
    add("no_panic_no_secret_in_logs", passed, figures);

    add(
        "no_process_exited_on_its_own",
        inputs.fleet.exits.is_empty(),
        json!({ "exits": inputs.fleet.exits }),
    );
    add(
        "leader_gauge_on_one_scheduler",
        inputs.record.both_leading == 0,
        json!({
            "samples": inputs.record.gauge_samples,
            "samples_with_two_leaders": inputs.record.both_leading,
            "samples_too_slow_to_compare": inputs.record.gauge_samples_slow,
        }),
    );

    Ok(Value::Object(checks))
}

async fn authorizations(pool: &PgPool, world: &World) -> anyhow::Result<(bool, Value)> {
    let refused: Vec<(String, String)> = sqlx::query_as(
        "SELECT u.email, c.kind FROM credentials c JOIN users u ON u.id = c.user_id \
         WHERE c.refused_at IS NOT NULL ORDER BY u.email",
    )
    .fetch_all(pool)
    .await?;
    let (suspended, auth_failed, reconnect_emails, reconnect_notes): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users WHERE sync_status = 'disabled_auth_error'), \
                (SELECT count(*) FROM sync_sessions WHERE error_category = 'auth'), \
                (SELECT count(*) FROM email_outbox WHERE kind IN ('reconnect', 'sync_suspended')), \
                (SELECT count(*) FROM notifications WHERE kind = 'reconnect')",
    )
    .fetch_one(pool)
    .await?;
    // Where each user's authorization was first refused.
    let first_refusals: Vec<(String, DateTime<Utc>, String, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT ON (s.user_id) u.email, s.started_at, s.worker_id, s.error_message \
         FROM sync_sessions s JOIN users u ON u.id = s.user_id WHERE s.error_category = 'auth' \
         ORDER BY s.user_id, s.started_at LIMIT 10",
    )
    .fetch_all(pool)
    .await?;
    let access = |email: &str| {
        world
            .users
            .iter()
            .find(|user| user.email == email)
            .map_or("?", |user| user.access.access_type())
    };
    Ok((
        refused.is_empty() && suspended == 0 && reconnect_emails == 0,
        json!({
            "credentials_refused": refused.len(),
            "users_suspended_for_auth": suspended,
            "sessions_failed_on_auth": auth_failed,
            "reconnect_or_suspension_emails": reconnect_emails,
            "reconnect_notifications": reconnect_notes,
            "examples": refused.iter().take(10).map(|(email, kind)| json!({ "user": email, "access": access(email), "kind": kind })).collect::<Vec<_>>(),
            "first_refusals": first_refusals.iter().map(|(email, at, worker, error)| json!({
                "user": email, "session_started": at, "worker": worker, "error": error,
            })).collect::<Vec<_>>(),
        }),
    ))
}

/// The answers: 5xx other than 503, 503s without `Retry-After`, and 503s
/// that said nothing changed whose retry was answered as already done.
fn requests(calls: &[Call]) -> (bool, Value) {
    let attempts = calls
        .iter()
        .flat_map(|call| call.attempts.iter().chain(call.replays.iter()));
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let (mut not_503, mut without_retry_after) = (0, 0);
    for attempt in attempts {
        let label = match (attempt.status, &attempt.code) {
            (None, _) => "no answer".to_owned(),
            (Some(status), Some(code)) => format!("{status} {code}"),
            (Some(status), None) => status.to_string(),
        };
        *by_status.entry(label).or_default() += 1;
        match attempt.status {
            Some(503) if !attempt.retry_after => without_retry_after += 1,
            Some(status) if status >= 500 && status != 503 => not_503 += 1,
            _ => {}
        }
    }
    // A 503 `unavailable` says nothing was changed: the retry with its key
    // must run the request, not answer it as already done.
    let mut took_effect = Vec::new();
    for call in calls {
        let claimed_nothing = call.attempts.iter().position(|attempt| {
            attempt.status.is_some_and(|status| status >= 500) && attempt.code.as_deref() != Some("outcome_unknown")
        });
        if let Some(first) = claimed_nothing
            && call.attempts[first + 1..].iter().any(|attempt| attempt.replayed)
        {
            took_effect.push(json!({ "kind": call.kind, "key": call.key, "attempts": call.attempts }));
        }
    }
    let gave_up = calls
        .iter()
        .filter(|call| {
            call.last()
                .and_then(|attempt| attempt.status)
                .is_none_or(|status| status >= 500)
        })
        .count();
    (
        not_503 == 0 && without_retry_after == 0 && took_effect.is_empty() && gave_up == 0,
        json!({
            "requests": calls.len(),
            "answers": by_status,
            "answered_5xx_other_than_503": not_503,
            "answered_503_without_retry_after": without_retry_after,
            "answered_unavailable_yet_took_effect": took_effect.len(),
            "requests_never_answered": gave_up,
            "examples": took_effect.into_iter().take(5).collect::<Vec<_>>(),
        }),
    )
}

/// Each replay answered the first answer, and what is in the database is
/// exactly what the answers say was done: no effect twice, none unanswered.
async fn effects(pool: &PgPool, calls: &[Call]) -> anyhow::Result<(bool, Value)> {
    let replays: Vec<&Call> = calls.iter().filter(|call| call.replay().is_some()).collect();
    let mismatched: Vec<&&Call> = replays
        .iter()
        .filter(|call| {
            !matches!((call.last(), call.replay()), (Some(first), Some(replay))
                if replay.replayed && replay.status == first.status && replay.effect == first.effect)
        })
        .collect();
    let answered = |kind: &str| -> HashSet<String> {
        calls
            .iter()
            .filter(|call| call.kind == kind)
            .filter_map(|call| call.effect().map(str::to_owned))
            .collect()
    };
    let in_database = |query: &'static str| async move {
        anyhow::Ok(
            sqlx::query_scalar::<_, String>(query)
                .fetch_all(pool)
                .await?
                .into_iter()
                .collect::<HashSet<String>>(),
        )
    };
    let mut kinds = serde_json::Map::new();
    let mut extra_total = 0;
    for (kind, query) in [
        ("push", "SELECT id::text FROM pushes"),
        (
            "force_sync",
            "SELECT id::text FROM admin_jobs WHERE action = 'force-sync'",
        ),
        (
            "create_user",
            "SELECT id::text FROM users WHERE email LIKE 'faults-new-%'",
        ),
    ] {
        let answered = answered(kind);
        let stored = in_database(query).await?;
        let extra = stored.difference(&answered).count();
        let missing = answered.difference(&stored).count();
        extra_total += extra + missing;
        kinds.insert(
            kind.to_owned(),
            json!({ "answered_done": answered.len(), "in_database": stored.len(),
                    "done_without_a_success_answer": extra, "answered_done_but_absent": missing }),
        );
    }
    Ok((
        mismatched.is_empty() && extra_total == 0,
        json!({
            "replays": replays.len(),
            "replays_not_answering_the_first_answer": mismatched.len(),
            "effects": kinds,
            "examples": mismatched.iter().take(5).collect::<Vec<_>>(),
        }),
    ))
}

/// An email of the outbox.
#[derive(sqlx::FromRow)]
struct Outboxed {
    id: Uuid,
    status: String,
    kind: String,
    attempts: i32,
    sent_at: Option<DateTime<Utc>>,
}

/// Completion emails and notifications: one per push, each sent once.
async fn emails(pool: &PgPool, control: &ControlApi) -> anyhow::Result<(bool, Value)> {
    let (pushes, completed, without_email): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'completed'), \
                count(*) FILTER (WHERE status = 'completed' AND NOT EXISTS ( \
                    SELECT 1 FROM email_outbox o WHERE o.dedupe_key = 'push_completed:' || p.id)) \
         FROM pushes p",
    )
    .fetch_one(pool)
    .await?;
    let outbox: Vec<Outboxed> = sqlx::query_as("SELECT id, status, kind, attempts, sent_at FROM email_outbox")
        .fetch_all(pool)
        .await?;
    let messages = control.get(&["_control", "smtp", "messages"]).await?;
    let mut received: HashMap<String, Vec<String>> = HashMap::new();
    for message in messages.as_array().into_iter().flatten() {
        received
            .entry(message["message_id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(message["received_at"].as_str().unwrap_or_default().to_owned());
    }
    let (mut delivered_once, mut duplicated, mut undelivered) = (0, 0, 0);
    let mut examples = Vec::new();
    let mut known = HashSet::new();
    for Outboxed {
        id,
        status,
        kind,
        attempts,
        sent_at,
    } in &outbox
    {
        let message_id = format!("<{id}@outbox.syncfleet>");
        let copies = received.get(&message_id).map_or(&[][..], Vec::as_slice);
        let problem = match copies.len() {
            0 => Some("not delivered"),
            1 if status == "sent" => None,
            1 => Some("delivered but not marked sent"),
            _ => Some("delivered more than once"),
        };
        match problem {
            None => delivered_once += 1,
            Some("delivered more than once") => duplicated += 1,
            Some(_) => undelivered += 1,
        }
        if let Some(problem) = problem
            && examples.len() < 10
        {
            examples.push(json!({
                "email": id, "kind": kind, "status": status, "attempts": attempts, "marked_sent_at": sent_at,
                "received_at": copies, "problem": problem,
            }));
        }
        known.insert(message_id);
    }
    let unexpected = received.keys().filter(|id| !known.contains(*id)).count();
    let (notified_twice, applied_unnotified): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM notifications WHERE kind = 'customization_pushed' \
                 GROUP BY user_id, payload->>'push_id' HAVING count(*) > 1) AS twice), \
                (SELECT count(*) FROM push_recipients r WHERE r.status = 'applied' AND NOT EXISTS ( \
                 SELECT 1 FROM notifications n WHERE n.user_id = r.user_id AND n.kind = 'customization_pushed' \
                 AND n.payload->>'push_id' = r.push_id::text))",
    )
    .fetch_one(pool)
    .await?;
    Ok((
        completed == pushes
            && without_email == 0
            && duplicated == 0
            && undelivered == 0
            && unexpected == 0
            && notified_twice == 0
            && applied_unnotified == 0,
        json!({
            "pushes": pushes, "pushes_completed": completed, "completed_without_email": without_email,
            "emails_queued": outbox.len(), "delivered_once": delivered_once, "duplicated": duplicated,
            "not_delivered": undelivered, "received_but_not_queued": unexpected, "examples": examples,
            "notifications_duplicated": notified_twice, "recipients_without_notification": applied_unnotified,
        }),
    ))
}

/// Sessions of one user that overlapped; a killed worker's session ended at
/// its kill at the latest.
async fn overlaps(pool: &PgPool, kills: &[(String, DateTime<Utc>)]) -> anyhow::Result<(bool, Value)> {
    let (workers, times): (Vec<String>, Vec<DateTime<Utc>>) = kills.iter().cloned().unzip();
    let found: Vec<(Uuid, String, String, String, String)> = sqlx::query_as(
        "WITH kills AS (SELECT * FROM UNNEST($1::text[], $2::timestamptz[]) AS k(worker_id, killed_at)), \
         spans AS ( \
             SELECT s.id, s.user_id, s.status, s.worker_id, s.started_at, \
                    LEAST(coalesce(s.ended_at, 'infinity'), coalesce((SELECT min(k.killed_at) FROM kills k \
                          WHERE k.worker_id = s.worker_id AND k.killed_at >= s.started_at), 'infinity')) AS ended \
             FROM sync_sessions s) \
         SELECT a.user_id, a.worker_id || ' ' || a.status, b.worker_id || ' ' || b.status, \
                a.started_at::text || ' .. ' || a.ended::text, b.started_at::text || ' .. ' || b.ended::text \
         FROM spans a JOIN spans b ON a.user_id = b.user_id AND a.id < b.id \
              AND a.started_at < b.ended AND b.started_at < a.ended",
    )
    .bind(&workers)
    .bind(&times)
    .fetch_all(pool)
    .await?;
    Ok((
        found.is_empty(),
        json!({
            "overlapping_pairs": found.len(),
            "worker_kills": kills.len(),
            "examples": found.iter().take(5).map(|(user, a, b, span_a, span_b)| json!({
                "user": user, "first": format!("{a} {span_a}"), "second": format!("{b} {span_b}"),
            })).collect::<Vec<_>>(),
        }),
    ))
}

/// Panics in any log; seeded secrets in the fleet's logs (the simulators
/// stand for the providers, who know them).
fn logs(folder: &Path, secrets: &[String]) -> anyhow::Result<(bool, Value)> {
    let mut panics = Vec::new();
    let mut leaks = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&std::fs::read(&path)?).into_owned();
        files += 1;
        for line in text.lines().filter(|line| line.contains("panicked at")) {
            panics.push(format!("{name}: {}", line.chars().take(300).collect::<String>()));
        }
        if name.starts_with("simulators") || name.starts_with("redis") {
            continue;
        }
        let leaked = secrets
            .iter()
            .filter(|secret| secret.len() >= 8 && text.contains(secret.as_str()))
            .count();
        if leaked > 0 {
            leaks.push(json!({ "log": name, "secrets": leaked }));
        }
    }
    Ok((
        panics.is_empty() && leaks.is_empty(),
        json!({ "logs": files, "secrets_looked_for": secrets.len(), "panics": panics, "secrets_found": leaks }),
    ))
}

/// Sessions by status and error category, and Gmail's sessions while Redis
/// was down (the limiter's local share).
pub async fn sessions(
    pool: &PgPool,
    world: &World,
    redis_outages: &[(DateTime<Utc>, DateTime<Utc>)],
) -> anyhow::Result<Value> {
    let rows: Vec<(String, Option<String>, i64)> =
        sqlx::query_as("SELECT status, error_category, count(*) FROM sync_sessions GROUP BY 1, 2 ORDER BY 1, 2")
            .fetch_all(pool)
            .await?;
    let gmail: Vec<Uuid> = world
        .users
        .iter()
        .filter(|user| user.access == super::world::Access::Gmail)
        .map(|user| user.id)
        .collect();
    let (starts, ends): (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) = redis_outages.iter().copied().unzip();
    let during: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.status || coalesce(' ' || s.error_category, ''), count(*) FROM sync_sessions s \
         WHERE s.user_id = ANY($1) AND EXISTS (SELECT 1 FROM UNNEST($2::timestamptz[], $3::timestamptz[]) AS o(a, b) \
                                                 WHERE s.started_at BETWEEN o.a AND o.b) \
         GROUP BY 1 ORDER BY 1",
    )
    .bind(&gmail)
    .bind(&starts)
    .bind(&ends)
    .fetch_all(pool)
    .await?;
    Ok(json!({
        "by_status": rows.iter().map(|(status, category, count)| json!({
            "status": status, "error_category": category, "sessions": count,
        })).collect::<Vec<_>>(),
        "gmail_while_redis_down": during.into_iter().collect::<BTreeMap<_, _>>(),
    }))
}

/// Calls to the token endpoints (refreshes, each a rotation in the strict
/// modes), from the simulators' counters.
pub async fn refreshes(control: &ControlApi, world: &World) -> anyhow::Result<Value> {
    let mut by_side: BTreeMap<&str, u64> = BTreeMap::new();
    for user in &world.users {
        let segments = match user.access {
            super::world::Access::Graph => ["_control", "graph", "mailboxes", user.email.as_str(), "counters"],
            super::world::Access::Gmail => ["_control", "gmail", "mailboxes", user.email.as_str(), "counters"],
            super::world::Access::Ews => continue,
        };
        let counters = control.get(&segments).await?;
        *by_side.entry(user.access.access_type()).or_default() += counters["calls"]["token"].as_u64().unwrap_or(0);
    }
    for org in &world.salesforce_orgs {
        let counters = control
            .get(&["_control", "salesforce", "orgs", org.as_str(), "counters"])
            .await?;
        *by_side.entry("salesforce").or_default() += counters["calls"]["token"].as_u64().unwrap_or(0);
    }
    Ok(json!(by_side))
}

/// Writes `report.json` and `summary.txt` (one line per check), and prints
/// the summary.
pub fn write(out: &Path, report: &Value) -> anyhow::Result<()> {
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(report)?)?;
    let mut summary = format!(
        "Syncfleet fault test, seed {}, {} s, {} users, {} workers: {} faults\n",
        report["configuration"]["seed"],
        report["configuration"]["duration_s"],
        report["configuration"]["users"],
        report["configuration"]["workers"],
        report["faults"].as_array().map_or(0, Vec::len),
    );
    for (name, check) in report["checks"].as_object().into_iter().flatten() {
        let Some(passed) = check["passed"].as_bool() else {
            continue;
        };
        let mut figures = check.clone();
        if let Some(object) = figures.as_object_mut() {
            object.remove("passed");
            object.remove("examples");
        }
        summary.push_str(&format!("{} {name}: {figures}\n", if passed { "PASS" } else { "FAIL" }));
    }
    std::fs::write(out.join("summary.txt"), &summary)?;
    eprint!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::client::Attempt;

    fn attempt(status: Option<u16>, code: Option<&str>, retry_after: bool, replayed: bool) -> Attempt {
        Attempt {
            status,
            code: code.map(str::to_owned),
            retry_after,
            replayed,
            effect: status.filter(|status| *status < 300).map(|_| "push-1".to_owned()),
        }
    }

    fn call(attempts: Vec<Attempt>) -> Call {
        let replays = attempts
            .last()
            .filter(|last| last.status.is_some_and(|status| status < 300))
            .map(|last| Attempt {
                replayed: true,
                ..last.clone()
            })
            .into_iter()
            .collect();
        Call {
            kind: "push",
            key: "k".to_owned(),
            email: None,
            attempts,
            replays,
        }
    }

    #[test]
    fn a_503_that_said_nothing_changed_then_replayed_took_effect() {
        let calls = vec![call(vec![
            attempt(Some(503), Some("unavailable"), true, false),
            attempt(Some(202), None, false, true),
        ])];
        let (passed, figures) = requests(&calls);
        assert!(!passed);
        assert_eq!(figures["answered_unavailable_yet_took_effect"], 1);
    }

    #[test]
    fn an_unknown_outcome_or_a_lost_answer_may_be_replayed() {
        let calls = vec![
            call(vec![
                attempt(Some(503), Some("outcome_unknown"), true, false),
                attempt(Some(202), None, false, true),
            ]),
            call(vec![
                attempt(None, None, false, false),
                attempt(Some(202), None, false, true),
            ]),
            call(vec![attempt(Some(429), Some("too_many_requests"), true, false)]),
        ];
        let (passed, figures) = requests(&calls);
        assert!(passed, "{figures}");
        assert_eq!(figures["requests"], 3);
    }

    #[test]
    fn a_500_a_503_without_retry_after_and_a_request_never_answered_fail() {
        for attempts in [
            vec![
                attempt(Some(500), Some("internal"), false, false),
                attempt(Some(202), None, false, false),
            ],
            vec![
                attempt(Some(503), Some("unavailable"), false, false),
                attempt(Some(202), None, false, false),
            ],
            vec![attempt(None, None, false, false)],
        ] {
            let (passed, figures) = requests(&[call(attempts)]);
            assert!(!passed, "{figures}");
        }
    }
}
