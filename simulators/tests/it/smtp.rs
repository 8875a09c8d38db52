//! The SMTP simulator over real TCP, driven by a tiny client written here.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use syncfleet_simulators::{
    Server,
    smtp::{FaultStage, LocalSmtp, SmtpConfig, SmtpServer, SmtpSimulator},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};
use tokio_util::sync::CancellationToken;

const USER: &str = "mailer@example.test";
const PASSWORD: &str = "s3cret";

struct Harness {
    simulator: SmtpSimulator,
    server: Option<SmtpServer>,
    shutdown: CancellationToken,
}

impl Harness {
    async fn start(config: SmtpConfig) -> Self {
        let shutdown = CancellationToken::new();
        let LocalSmtp { simulator, server } = SmtpSimulator::start_local(config, shutdown.clone()).await.unwrap();
        Self {
            simulator,
            server: Some(server),
            shutdown,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().addr()
    }

    /// A client past the greeting and `EHLO`.
    async fn client(&self) -> Client {
        let (mut client, greeting) = Client::connect(self.addr()).await;
        assert_eq!(greeting.code, 220, "{greeting:?}");
        client.expect("EHLO client.example.test", 250).await;
        client
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        self.server.take().unwrap().stopped().await.unwrap();
    }
}

fn with_credentials() -> SmtpConfig {
    SmtpConfig {
        credentials: Some((USER.to_owned(), PASSWORD.to_owned())),
        ..SmtpConfig::default()
    }
}

#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> (Self, Reply) {
        let (reader, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut client = Self {
            reader: BufReader::new(reader),
            writer,
        };
        let greeting = client.reply().await.expect("a greeting");
        (client, greeting)
    }

    /// The next reply, all its lines; `None` when the server closed.
    async fn reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.unwrap() == 0 {
                assert!(lines.is_empty(), "closed in the middle of a reply: {lines:?}");
                return None;
            }
            let line = line.strip_suffix("\r\n").expect("replies end with CRLF");
            let code: u16 = line[..3].parse().unwrap();
            lines.push(line[4..].to_owned());
            if &line[3..4] == " " {
                return Some(Reply { code, lines });
            }
            assert_eq!(&line[3..4], "-", "{line}");
        }
    }

    async fn send(&mut self, line: &str) -> Reply {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        self.reply().await.expect("a reply")
    }

    async fn expect(&mut self, line: &str, code: u16) -> Reply {
        let reply = self.send(line).await;
        assert_eq!(reply.code, code, "{line} answered {reply:?}");
        reply
    }

    /// `DATA`, the content dot-stuffed as a client does, and the final dot.
    async fn data(&mut self, content: &str) -> Reply {
        self.expect("DATA", 354).await;
        let mut stuffed = String::new();
        for line in content.split_inclusive("\r\n") {
            if line.starts_with('.') {
                stuffed.push('.');
            }
            stuffed.push_str(line);
        }
        self.writer.write_all(stuffed.as_bytes()).await.unwrap();
        self.send(".").await
    }

    /// A whole transaction; the reply to the end of the data.
    async fn mail(&mut self, from: &str, to: &[&str], content: &str) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250).await;
        for recipient in to {
            self.expect(&format!("RCPT TO:<{recipient}>"), 250).await;
        }
        self.data(content).await
    }

    /// Whether the server closed the connection.
    async fn closed(&mut self) -> bool {
        let mut rest = String::new();
        matches!(self.reader.read_line(&mut rest).await, Ok(0) | Err(_))
    }
}

fn message(subject: &str, body: &str) -> String {
    format!(
        "From: Sender <sender@example.test>\r\nTo: someone@example.test\r\nSubject: {subject}\r\nMessage-ID: <m-1@example.test>\r\nMIME-Version: 1.0\r\n\r\n{body}\r\n"
    )
}

fn plain(username: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{username}\0{password}"))
}

fn base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn a_full_transaction_is_accepted_with_its_envelope_subject_and_message_id() {
    let harness = Harness::start(SmtpConfig {
        max_message_bytes: 1000,
        ..SmtpConfig::default()
    })
    .await;
    let (mut client, greeting) = Client::connect(harness.addr()).await;
    assert_eq!(greeting.code, 220);
    let ehlo = client.expect("EHLO client.example.test", 250).await;
    for extension in ["8BITMIME", "SIZE 1000", "ENHANCEDSTATUSCODES"] {
        assert!(ehlo.lines.iter().any(|line| line == extension), "{ehlo:?}");
    }
    assert!(
        !ehlo.lines.iter().any(|line| line.starts_with("AUTH")),
        "no AUTH without credentials"
    );

    client
        .expect("MAIL FROM:<sender@example.test> BODY=8BITMIME", 250)
        .await;
    client.expect("rcpt to:<someone@example.test>", 250).await;
    let reply = client
        .data(&message("=?utf-8?q?R=C3=A9sum=C3=A9?= attached", "Hello."))
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.expect("QUIT", 221).await;
    assert!(client.closed().await);

    let messages = harness.simulator.messages();
    assert_eq!(messages.len(), 1);
    let mail = &messages[0];
    assert_eq!(mail.from, "sender@example.test");
    assert_eq!(mail.recipients, ["someone@example.test"]);
    assert_eq!(mail.subject.as_deref(), Some("Résumé attached"));
    assert_eq!(mail.message_id.as_deref(), Some("<m-1@example.test>"));
    assert_eq!(mail.authenticated_as, None);
    assert!(mail.text().ends_with("\r\n\r\nHello.\r\n"), "{}", mail.text());
    let counters = harness.simulator.counters();
    assert_eq!(counters.connections, 1);
    assert_eq!(counters.messages_accepted, 1);
    assert_eq!(counters.commands_of("rcpt"), 1);

    harness.simulator.clear();
    assert!(harness.simulator.messages().is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn dot_stuffed_lines_are_unstuffed_and_only_a_lone_dot_line_ends_the_data() {
    let harness = Harness::start(SmtpConfig::default()).await;
    let mut client = harness.client().await;
    client.expect("MAIL FROM:<>", 250).await;
    client.expect("RCPT TO:<someone@example.test>", 250).await;
    client.expect("DATA", 354).await;
    // Sent as a client sends it: leading dots doubled; ". " and "x." are no end.
    let raw = "Subject: Dots\r\n\r\n..leading dot\r\n...\r\n. not the end\r\nx.\r\n.\r\n";
    client.writer.write_all(raw.as_bytes()).await.unwrap();
    let reply = client.reply().await.unwrap();
    assert_eq!(reply.code, 250, "{reply:?}");

    let mail = &harness.simulator.messages()[0];
    assert_eq!(mail.from, "");
    assert_eq!(
        mail.text(),
        "Subject: Dots\r\n\r\n.leading dot\r\n..\r\n not the end\r\nx.\r\n"
    );
    // The connection is ready for the next transaction.
    let reply = client
        .mail("a@example.test", &["b@example.test"], "Subject: Next\r\n\r\n.\r\n")
        .await;
    assert_eq!(reply.code, 250);
    assert_eq!(harness.simulator.messages()[1].text(), "Subject: Next\r\n\r\n.\r\n");
    harness.stop().await;
}

#[tokio::test]
async fn auth_plain_and_login_take_the_configured_credentials_and_refuse_others() {
    let harness = Harness::start(with_credentials()).await;
    let mut client = harness.client().await;
    let ehlo = client.expect("EHLO again.example.test", 250).await;
    assert!(ehlo.lines.iter().any(|line| line == "AUTH PLAIN LOGIN"), "{ehlo:?}");
    client.expect("MAIL FROM:<sender@example.test>", 530).await;
    client
        .expect(&format!("AUTH PLAIN {}", plain(USER, "wrong")), 535)
        .await;
    client.expect("AUTH CRAM-MD5", 504).await;
    client
        .expect(&format!("AUTH PLAIN {}", plain(USER, PASSWORD)), 235)
        .await;
    client.expect("AUTH PLAIN", 503).await;
    let reply = client
        .mail(USER, &["someone@example.test"], &message("Signed in", "Hi"))
        .await;
    assert_eq!(reply.code, 250);

    // LOGIN, prompted for both, on a new connection.
    let mut other = harness.client().await;
    let prompt = other.expect("AUTH LOGIN", 334).await;
    assert_eq!(prompt.lines, ["VXNlcm5hbWU6"]);
    let prompt = other.expect(&base64(USER), 334).await;
    assert_eq!(prompt.lines, ["UGFzc3dvcmQ6"]);
    other.expect(&base64("nope"), 535).await;
    other.expect("AUTH LOGIN", 334).await;
    other.expect(&base64(USER), 334).await;
    other.expect(&base64(PASSWORD), 235).await;
    // PLAIN without an initial response is prompted with an empty challenge.
    let mut third = harness.client().await;
    third.expect("AUTH PLAIN", 334).await;
    third.expect("*", 501).await;
    third.expect("AUTH PLAIN", 334).await;
    third.expect(&plain(USER, PASSWORD), 235).await;

    assert_eq!(harness.simulator.messages()[0].authenticated_as.as_deref(), Some(USER));
    assert_eq!(harness.simulator.counters().auth_failures, 2);
    assert!(!format!("{:?}", harness.simulator.config()).contains(PASSWORD));
    harness.stop().await;
}

#[tokio::test]
async fn a_one_shot_451_fails_one_transaction_then_mail_goes_through() {
    let harness = Harness::start(SmtpConfig::default()).await;
    harness.simulator.fail_next(1, 451).unwrap();
    let mut client = harness.client().await;
    let refused = client.expect("MAIL FROM:<sender@example.test>", 451).await;
    assert!(refused.lines[0].starts_with("4."), "{refused:?}");
    client.expect("RCPT TO:<someone@example.test>", 503).await;
    let reply = client
        .mail(
            "sender@example.test",
            &["someone@example.test"],
            &message("Retried", "x"),
        )
        .await;
    assert_eq!(reply.code, 250);

    // At the end of DATA the message is read and dropped.
    harness.simulator.fail_next_at(FaultStage::DataEnd, 1, 554).unwrap();
    let reply = client
        .mail("sender@example.test", &["someone@example.test"], &message("Lost", "x"))
        .await;
    assert_eq!(reply.code, 554);
    let reply = client
        .mail("sender@example.test", &["someone@example.test"], &message("Kept", "x"))
        .await;
    assert_eq!(reply.code, 250);

    let subjects: Vec<_> = harness
        .simulator
        .messages()
        .into_iter()
        .map(|mail| mail.subject.unwrap())
        .collect();
    assert_eq!(subjects, ["Retried", "Kept"]);
    assert_eq!(harness.simulator.counters().faults, 2);
    assert!(harness.simulator.fail_next(1, 250).is_err());
    harness.stop().await;
}

#[tokio::test]
async fn a_421_fault_closes_the_connection() {
    let harness = Harness::start(SmtpConfig::default()).await;
    harness.simulator.fail_next(1, 421).unwrap();
    let mut client = harness.client().await;
    client.expect("MAIL FROM:<sender@example.test>", 421).await;
    assert!(client.closed().await);
    harness.stop().await;
}

#[tokio::test]
async fn many_recipients_are_kept_in_order_up_to_the_limit() {
    let harness = Harness::start(SmtpConfig {
        max_recipients: 40,
        ..SmtpConfig::default()
    })
    .await;
    let recipients: Vec<String> = (0..40).map(|index| format!("user{index}@example.test")).collect();
    let borrowed: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let mut client = harness.client().await;
    client.expect("MAIL FROM:<sender@example.test>", 250).await;
    for recipient in &borrowed {
        client.expect(&format!("RCPT TO:<{recipient}>"), 250).await;
    }
    client.expect("RCPT TO:<one-too-many@example.test>", 452).await;
    let reply = client.data(&message("Everyone", "Hello all")).await;
    assert_eq!(reply.code, 250);

    assert_eq!(harness.simulator.messages()[0].recipients, recipients);
    assert_eq!(harness.simulator.messages_to("USER7@example.test").len(), 1);
    assert!(harness.simulator.messages_to("nobody@example.test").is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused_552_whether_announced_or_not() {
    let harness = Harness::start(SmtpConfig {
        max_message_bytes: 100,
        ..SmtpConfig::default()
    })
    .await;
    let mut client = harness.client().await;
    client.expect("MAIL FROM:<sender@example.test> SIZE=101", 552).await;
    let reply = client
        .mail(
            "sender@example.test",
            &["someone@example.test"],
            &message("Big", &"x".repeat(200)),
        )
        .await;
    assert_eq!(reply.code, 552);
    let reply = client
        .mail(
            "sender@example.test",
            &["someone@example.test"],
            "Subject: Small\r\n\r\nok\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);
    assert_eq!(harness.simulator.messages().len(), 1);
    assert_eq!(harness.simulator.counters().messages_too_large, 1);
    harness.stop().await;
}

#[tokio::test]
async fn commands_out_of_sequence_unknown_or_not_implemented_are_refused() {
    let harness = Harness::start(SmtpConfig::default()).await;
    let (mut client, _) = Client::connect(harness.addr()).await;
    client.expect("MAIL FROM:<sender@example.test>", 503).await;
    client.expect("EHLO", 501).await;
    client.expect("HELO client.example.test", 250).await;
    client.expect("XYZZY", 500).await;
    client.expect("VRFY someone", 502).await;
    client.expect("STARTTLS", 502).await;
    client.expect("DATA", 503).await;
    client.expect("MAIL FROM:sender@example.test", 501).await;
    client.expect("MAIL FROM:<sender@example.test> SMTPUTF8", 555).await;
    client.expect("MAIL FROM:<sender@example.test>", 250).await;
    client.expect("MAIL FROM:<sender@example.test>", 503).await;
    client.expect("RCPT TO:<not an address>", 501).await;
    client.expect("DATA", 503).await;
    client.expect("NOOP", 250).await;
    client.expect("RSET", 250).await;
    client.expect("RCPT TO:<someone@example.test>", 503).await;
    client.expect(&format!("NOOP {}", "x".repeat(20_000)), 500).await;
    client.expect("NOOP", 250).await;
    assert_eq!(harness.simulator.counters().commands_of("UNKNOWN"), 1);
    harness.stop().await;
}

#[tokio::test]
async fn a_down_server_answers_421_and_closes_until_it_is_up_again() {
    let harness = Harness::start(SmtpConfig::default()).await;
    harness.simulator.set_down(true);
    let (mut client, greeting) = Client::connect(harness.addr()).await;
    assert_eq!(greeting.code, 421);
    assert!(client.closed().await);
    harness.simulator.set_down(false);
    let (_, greeting) = Client::connect(harness.addr()).await;
    assert_eq!(greeting.code, 220);
    let counters = harness.simulator.counters();
    assert_eq!((counters.refused_connections, counters.connections), (1, 1));
    harness.stop().await;
}

#[tokio::test]
async fn latency_delays_every_reply() {
    let harness = Harness::start(SmtpConfig::default()).await;
    harness
        .simulator
        .set_latency(Duration::from_millis(40), Duration::from_millis(10));
    let started = Instant::now();
    let mut client = harness.client().await;
    // The greeting and the EHLO reply.
    assert!(
        started.elapsed() >= Duration::from_millis(80),
        "{:?}",
        started.elapsed()
    );
    client.expect("NOOP", 250).await;
    harness.stop().await;
}

#[tokio::test]
async fn a_waiter_sees_messages_accepted_on_other_connections() {
    let harness = Harness::start(SmtpConfig::default()).await;
    let simulator = harness.simulator.clone();
    let waiter = tokio::spawn(async move { simulator.wait_for_messages(2, Duration::from_secs(10)).await });
    for index in 0..2 {
        let mut client = harness.client().await;
        let reply = client
            .mail(
                "a@example.test",
                &["b@example.test"],
                &message(&format!("n{index}"), "x"),
            )
            .await;
        assert_eq!(reply.code, 250);
    }
    assert_eq!(waiter.await.unwrap().unwrap().len(), 2);
    assert!(
        harness
            .simulator
            .wait_for_messages(3, Duration::from_millis(20))
            .await
            .is_none()
    );
    harness.stop().await;
}

#[tokio::test]
async fn stopping_the_server_closes_open_connections() {
    let harness = Harness::start(SmtpConfig::default()).await;
    let mut client = harness.client().await;
    harness.stop().await;
    assert!(client.closed().await);
}

#[tokio::test]
async fn the_control_api_lists_and_clears_messages_and_arms_faults_and_downtime() {
    let harness = Harness::start(SmtpConfig::default()).await;
    let shutdown = CancellationToken::new();
    let control = Server::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        harness.simulator.router(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let url = |path: &str| format!("{}/_control/smtp{path}", control.base_url());
    syncfleet_common::telemetry::install_tls_provider();
    let http = reqwest::Client::new();

    let mut client = harness.client().await;
    let reply = client
        .mail(
            "sender@example.test",
            &["someone@example.test"],
            &message("Over HTTP", "Body"),
        )
        .await;
    assert_eq!(reply.code, 250);
    let messages: Value = http.get(url("/messages")).send().await.unwrap().json().await.unwrap();
    assert_eq!(messages[0]["subject"], "Over HTTP");
    assert_eq!(messages[0]["recipients"], json!(["someone@example.test"]));
    assert_eq!(messages[0]["message_id"], "<m-1@example.test>");
    assert!(messages[0]["data"].as_str().unwrap().ends_with("Body\r\n"));

    let response = http
        .post(url("/faults"))
        .json(&json!({"code": 451, "stage": "data_end", "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let refused = http
        .post(url("/faults"))
        .json(&json!({"code": 200}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let reply = client
        .mail(
            "sender@example.test",
            &["someone@example.test"],
            &message("Dropped", "x"),
        )
        .await;
    assert_eq!(reply.code, 451);

    let response = http.delete(url("/messages")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(harness.simulator.messages().is_empty());

    let response = http
        .put(url("/down"))
        .json(&json!({"down": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (_, greeting) = Client::connect(harness.addr()).await;
    assert_eq!(greeting.code, 421);

    let counters: Value = http.get(url("/counters")).send().await.unwrap().json().await.unwrap();
    assert_eq!(counters["messages_accepted"], 1);
    assert_eq!(counters["faults"], 1);
    assert_eq!(counters["refused_connections"], 1);
    shutdown.cancel();
    control.stopped().await.unwrap();
    harness.stop().await;
}
