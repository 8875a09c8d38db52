//! Concurrent clients: requests racing for one unique value, or racing the
//! delete of their parent, answer only documented statuses (never a 5xx)
//! and leave a consistent state.

use std::{collections::BTreeMap, time::Duration};

use chrono::Utc;
use futures_util::future::join_all;
use serde_json::{Value, json};
use syncfleet_api::auth::create_token;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, http, organization, users};
use uuid::Uuid;

use crate::{Api, send};

/// How many requests race in each test.
const RACERS: usize = 8;

/// Each status with how many answers had it.
fn tally(answers: &[(u16, Value)]) -> BTreeMap<u16, usize> {
    let mut tally = BTreeMap::new();
    for (status, _) in answers {
        *tally.entry(*status).or_default() += 1;
    }
    tally
}

/// Fires `requests` at once; every answer's status and body.
async fn race(api: &Api, token: &str, requests: Vec<(&str, String, Value)>) -> Vec<(u16, Value)> {
    join_all(requests.iter().map(|(method, path, payload)| async move {
        let response = match payload {
            Value::Null => http(api.address, method, path, Some(token)).await,
            payload => send(api, method, path, token, payload).await,
        };
        let body = if response.body.is_empty() {
            Value::Null
        } else {
            response.json()
        };
        (response.status, body)
    }))
    .await
}

/// The count a `SELECT count(*) ...` finds.
async fn count(env: &TestEnv, query: &str) -> i64 {
    sqlx::query_scalar(query).fetch_one(&env.pool).await.unwrap()
}

/// One answer succeeded with `success`, every other is a 409 naming `field`.
fn one_winner(answers: &[(u16, Value)], success: u16, code: &str, field: &str) {
    assert_eq!(
        tally(answers),
        BTreeMap::from([(success, 1), (409, answers.len() - 1)]),
        "{answers:?}"
    );
    for (status, body) in answers {
        if *status == 409 {
            assert_eq!(body["error"]["code"], code, "{body}");
            assert_eq!(body["error"]["field"], field, "{body}");
        }
    }
}

#[tokio::test]
async fn concurrent_creations_of_one_email_make_one_user_and_the_others_answer_409_on_email() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let admin = create_token(&env.pool, "admin", None, None, "root").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let requests = (0..RACERS)
        .map(|index| {
            let payload = json!({"name": format!("Racer {index}"), "email": "Same@Race.test", "organization_id": org});
            ("POST", "/v1/users".to_owned(), payload)
        })
        .collect();
    let answers = race(&api, &admin, requests).await;
    one_winner(&answers, 201, "email_taken", "email");
    let stored = count(&env, "SELECT count(*) FROM users WHERE lower(email) = 'same@race.test'").await;
    assert_eq!(stored, 1);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn concurrent_organizations_with_one_external_id_make_one_and_the_others_answer_409_on_external_id() {
    let env = TestEnv::new().await;
    let admin = create_token(&env.pool, "admin", None, None, "root").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let requests = (0..RACERS)
        .map(|index| {
            let payload = json!({"name": format!("Org {index}"), "external_id": "ext-race", "access_type": "gmail"});
            ("POST", "/v1/organizations".to_owned(), payload)
        })
        .collect();
    let answers = race(&api, &admin, requests).await;
    one_winner(&answers, 201, "external_id_taken", "external_id");
    let stored = count(
        &env,
        "SELECT count(*) FROM organizations WHERE external_id = 'ext-race'",
    )
    .await;
    assert_eq!(stored, 1);
    api.stop().await;
    env.cleanup().await;
}

/// Eight users each ask for one new address at once, through `path`'s
/// route: one gets it, the others answer 409 on `email`, and exactly one
/// user has it.
async fn eight_users_race_for_one_address(method: &str, path: fn(Uuid) -> String) {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let people = users(&env.pool, org, RACERS, SyncStatus::Enabled, Utc::now(), false).await;
    let admin = create_token(&env.pool, "admin", None, None, "root").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let requests = people
        .iter()
        .map(|user| (method, path(*user), json!({"email": "wanted@race.test"})))
        .collect();
    let answers = race(&api, &admin, requests).await;
    one_winner(&answers, 200, "email_taken", "email");
    let holders = count(&env, "SELECT count(*) FROM users WHERE email = 'wanted@race.test'").await;
    assert_eq!(holders, 1);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn concurrent_patches_to_one_email_give_it_to_one_user_and_answer_409_on_email_to_the_others() {
    eight_users_race_for_one_address("PATCH", |user| format!("/v1/users/{user}")).await;
}

#[tokio::test]
async fn concurrent_email_configurations_with_one_email_give_it_to_one_user_and_answer_409_to_the_others() {
    eight_users_race_for_one_address("PUT", |user| format!("/v1/users/{user}/email-configuration")).await;
}

#[tokio::test]
async fn concurrent_moves_of_one_user_all_answer_200_and_move_them_once() {
    let env = TestEnv::new().await;
    let source = organization(&env.pool, AccessType::Office365, true).await;
    let target = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, source, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let admin = create_token(&env.pool, "admin", None, None, "root").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let path = format!("/v1/users/{user}/actions/change-organization");
    let requests = (0..RACERS)
        .map(|_| ("POST", path.clone(), json!({"organization_id": target})))
        .collect();
    let answers = race(&api, &admin, requests).await;
    assert_eq!(tally(&answers), BTreeMap::from([(200, RACERS)]), "{answers:?}");
    let moved = answers.iter().filter(|(_, body)| body["changed"] == true).count();
    assert_eq!(moved, 1, "{answers:?}");
    let (now_in, moves): (Uuid, i64) = sqlx::query_as(
        "SELECT u.organization_id, (SELECT count(*) FROM activities a WHERE a.user_id = u.id \
             AND a.kind = 'organization_changed') FROM users u WHERE u.id = $1",
    )
    .bind(user)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!((now_in, moves), (target, 2), "one move, recorded in both organizations");

    // Back and forth at once: every answer is a 200, and the user ends in
    // one of the two.
    let requests = (0..RACERS)
        .map(|index| {
            let to = if index % 2 == 0 { source } else { target };
            ("POST", path.clone(), json!({"organization_id": to}))
        })
        .collect();
    let answers = race(&api, &admin, requests).await;
    assert_eq!(tally(&answers), BTreeMap::from([(200, RACERS)]), "{answers:?}");
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn writes_racing_the_delete_of_their_organization_answer_only_documented_statuses() {
    let env = TestEnv::new().await;
    let admin = create_token(&env.pool, "admin", None, None, "root").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    for round in 0..4 {
        let org = organization(&env.pool, AccessType::Office365, true).await;
        let mut requests = vec![("DELETE", format!("/v1/organizations/{org}"), Value::Null)];
        for index in 0..RACERS {
            requests.push((
                "POST",
                "/v1/users".to_owned(),
                json!({"name": "Late", "email": format!("late-{round}-{index}@race.test"), "organization_id": org}),
            ));
            requests.push((
                "PUT",
                format!("/v1/organizations/{org}/sync-settings/groups/team-{index}"),
                json!({"settings": {"baseline_days": 3}}),
            ));
            requests.push((
                "PUT",
                format!("/v1/organizations/{org}/default-customization"),
                json!({"document": {"theme": index}}),
            ));
        }
        let answers = race(&api, &admin, requests.clone()).await;
        for ((method, path, _), (status, body)) in requests.iter().zip(&answers) {
            let documented: &[u16] = match *method {
                "DELETE" => &[204],
                "POST" => &[201, 404],
                _ => &[200, 201, 404],
            };
            assert!(documented.contains(status), "{method} {path}: {status} {body}");
            if *status == 404 {
                assert_eq!(body["error"]["code"], "not_found", "{body}");
            }
        }
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM users WHERE organization_id = $1) \
                  + (SELECT count(*) FROM sync_settings_presets WHERE organization_id = $1) \
                  + (SELECT count(*) FROM organization_default_customizations WHERE organization_id = $1)",
        )
        .bind(org)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        assert_eq!(left, 0, "nothing outlives its deleted organization");
    }
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn concurrent_plans_with_one_code_make_one_and_the_others_answer_409_on_code() {
    let env = TestEnv::new().await;
    let admin = create_token(&env.pool, "admin", None, None, "root").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let requests = (0..RACERS)
        .map(|index| {
            let payload = json!({"code": "gold", "name": format!("Gold {index}")});
            ("POST", "/v1/plans".to_owned(), payload)
        })
        .collect();
    let answers = race(&api, &admin, requests).await;
    one_winner(&answers, 201, "plan_code_taken", "code");
    assert_eq!(count(&env, "SELECT count(*) FROM plans WHERE code = 'gold'").await, 1);
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn configuring_a_user_while_they_move_between_organizations_never_answers_404() {
    let env = TestEnv::new().await;
    let first = organization(&env.pool, AccessType::Office365, true).await;
    let second = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, first, 1, SyncStatus::Enabled, Utc::now(), false).await[0];
    let admin = create_token(&env.pool, "admin", None, None, "root").await.unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;

    let requests = (0..RACERS * 2)
        .map(|index| match index % 4 {
            0 => (
                "POST",
                format!("/v1/users/{user}/actions/change-organization"),
                json!({"organization_id": second}),
            ),
            2 => (
                "POST",
                format!("/v1/users/{user}/actions/change-organization"),
                json!({"organization_id": first}),
            ),
            1 => (
                "PUT",
                format!("/v1/users/{user}/email-configuration"),
                json!({"salesforce_instance_url": null}),
            ),
            _ => (
                "PATCH",
                format!("/v1/users/{user}"),
                json!({"description": format!("take {index}")}),
            ),
        })
        .collect();
    let answers = race(&api, &admin, requests).await;
    assert_eq!(tally(&answers), BTreeMap::from([(200, RACERS * 2)]), "{answers:?}");
    api.stop().await;
    env.cleanup().await;
}
