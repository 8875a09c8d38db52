//! The `syncfleet-simulators` binary: every HTTP simulator and its control API
//! on one address, SMTP on another, a bad setting refused by name.

use std::{
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The binary, started with `latency` and `jitter` on free addresses, once it
/// listens: the process, its HTTP address and its SMTP address.
async fn start(latency: &str, jitter: &str) -> (Child, SocketAddr, SocketAddr) {
    start_with(latency, jitter, &[]).await
}

/// [`start`] with more `settings` in its environment.
async fn start_with(latency: &str, jitter: &str, settings: &[(&str, &str)]) -> (Child, SocketAddr, SocketAddr) {
    let (http, smtp) = (free_address(), free_address());
    let child = Command::new(env!("CARGO_BIN_EXE_syncfleet-simulators"))
        .envs(settings.iter().copied())
        .env("SYNCFLEET_SIMULATOR_LISTEN", http.to_string())
        .env("SYNCFLEET_SIMULATOR_SMTP_LISTEN", smtp.to_string())
        .env("SYNCFLEET_SIMULATOR_LATENCY", latency)
        .env("SYNCFLEET_SIMULATOR_LATENCY_JITTER", jitter)
        .env("SYNCFLEET_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(http).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the simulators never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    syncfleet_common::telemetry::install_tls_provider();
    (child, http, smtp)
}

#[tokio::test]
async fn the_binary_serves_every_simulator_on_its_addresses() {
    let (mut child, http, smtp) = start("0ms", "0ms").await;
    let base = format!("http://{http}");
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(format!("{base}{path}")).json(&body).send();

    let graph = post("/_control/graph/mailboxes", json!({"upn": "ada@contoso.example"}))
        .await
        .unwrap();
    assert_eq!(graph.status(), 201);
    let salesforce = post("/_control/salesforce/orgs", json!({})).await.unwrap();
    assert_eq!(salesforce.status(), 201);
    let gmail = post("/_control/gmail/mailboxes", json!({"email": "bob@gmail.simulated"}))
        .await
        .unwrap();
    assert_eq!(gmail.status(), 201);
    let ews = post(
        "/_control/ews/accounts",
        json!({"account": "carol@contoso.example", "password": "pw"}),
    )
    .await
    .unwrap();
    assert_eq!(ews.status(), 201);
    // The providers' own endpoints answer as the providers do.
    let unauthenticated = client
        .post(format!("{base}/EWS/Exchange.asmx"))
        .body("<soap/>")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let refresh = client
        .post(format!("{base}/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "unknown")])
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 400);

    let mut connection = tokio::net::TcpStream::connect(smtp).await.unwrap();
    let mut greeting = [0u8; 3];
    connection.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220");

    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_bad_setting_stops_the_binary_with_its_name() {
    for name in ["SYNCFLEET_SIMULATOR_LATENCY", "SYNCFLEET_SIMULATOR_LATENCY_JITTER"] {
        let output = Command::new(env!("CARGO_BIN_EXE_syncfleet-simulators"))
            .env(name, "fast")
            .env("SYNCFLEET_LOG_FORMAT", "text")
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("{name} is invalid")), "{stderr}");
    }
}

#[tokio::test]
async fn the_binary_s_calls_wait_the_latency_plus_a_part_of_the_jitter() {
    let (mut child, http, _) = start("40ms", "80ms").await;
    let client = reqwest::Client::new();
    let base = format!("http://{http}");
    // Salesforce's and Graph's token endpoints, each refusing an unknown token
    // after the wait.
    let mut waits = Vec::new();
    for path in ["/services/oauth2/token", "/organizations/oauth2/v2.0/token"] {
        for _ in 0..8 {
            let started = Instant::now();
            let refused = client
                .post(format!("{base}{path}"))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", "unknown")])
                .send()
                .await
                .unwrap();
            assert_eq!(refused.status(), 400);
            waits.push(started.elapsed());
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (shortest, longest) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
    assert!(*shortest >= Duration::from_millis(40), "{waits:?}");
    // Sixteen uniform draws over 80 ms all within 5 ms of each other: never.
    assert!(*longest - *shortest > Duration::from_millis(5), "{waits:?}");
}

#[tokio::test]
async fn the_binary_applies_the_rotation_settings() {
    let (mut child, http, _) = start_with(
        "0ms",
        "0ms",
        &[
            ("SYNCFLEET_SIMULATOR_GRAPH_REVOKE_ROTATED_REFRESH_TOKENS", "true"),
            ("SYNCFLEET_SIMULATOR_SALESFORCE_ROTATE_REFRESH_TOKENS", "true"),
        ],
    )
    .await;
    let base = format!("http://{http}");
    let client = reqwest::Client::new();
    let answer =
        |request: reqwest::RequestBuilder| async move { request.send().await.unwrap().json::<Value>().await.unwrap() };
    let graph = answer(client.get(format!("{base}/_control/graph/refresh-token-rotation"))).await;
    assert_eq!(graph, json!({"revoke_rotated_refresh_tokens": true}));
    let org = answer(client.post(format!("{base}/_control/salesforce/orgs")).json(&json!({}))).await;
    let refresh = || {
        client.post(format!("{base}/services/oauth2/token")).form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "client"),
            ("refresh_token", org["refresh_token"].as_str().unwrap()),
        ])
    };
    let first = answer(refresh()).await;
    assert!(first["refresh_token"].is_string(), "{first}");
    assert_eq!(
        refresh().send().await.unwrap().status(),
        400,
        "the rotated-away token is invalid"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
