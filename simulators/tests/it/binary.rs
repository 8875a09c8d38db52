//! The `syncfleet-simulators` binary: every HTTP simulator and its control API
//! on one address, SMTP on another, a bad setting refused by name.

use std::{
    net::{SocketAddr, TcpListener},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test]
async fn the_binary_serves_every_simulator_on_its_addresses() {
    let (http, smtp) = (free_address(), free_address());
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncfleet-simulators"))
        .env("SYNCFLEET_SIMULATOR_LISTEN", http.to_string())
        .env("SYNCFLEET_SIMULATOR_SMTP_LISTEN", smtp.to_string())
        .env("SYNCFLEET_SIMULATOR_LATENCY", "0ms")
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
    let base = format!("http://{http}");
    syncfleet_common::telemetry::install_tls_provider();
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
    let output = Command::new(env!("CARGO_BIN_EXE_syncfleet-simulators"))
        .env("SYNCFLEET_SIMULATOR_LATENCY", "fast")
        .env("SYNCFLEET_LOG_FORMAT", "text")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SYNCFLEET_SIMULATOR_LATENCY"), "{stderr}");
}
