//! The SMTP simulator: a mail submission server on a plain TCP port speaking
//! the subset of RFC 5321 that an SMTP client without TLS uses (lettre's
//! transport among them): the `220` greeting, `EHLO`/`HELO` with `8BITMIME`,
//! `SIZE`, `ENHANCEDSTATUSCODES` and `AUTH PLAIN LOGIN` (when credentials are
//! configured), `AUTH PLAIN` and `AUTH LOGIN`, `MAIL FROM`, any number of
//! `RCPT TO`, `DATA` with dot-unstuffing, `RSET`, `NOOP` and `QUIT`.
//!
//! Every accepted message is kept in memory, its `Subject` and `Message-ID`
//! read from its header. A test drives it through [`SmtpSimulator`]: it reads
//! and clears the messages, arms one-shot or random failures (any 4xx/5xx
//! code, at `MAIL FROM` or at the end of `DATA`), takes the server down (every
//! connection answered `421` and closed) and sets latency. The same controls
//! are served over HTTP under `/_control/smtp` by [`SmtpSimulator::router`].

mod control;
mod faults;
mod message;
mod session;

use std::{
    collections::BTreeMap,
    fmt, io,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use faults::{FaultStage, InvalidReplyCode};
pub use message::ReceivedMail;

use faults::Faults;

/// How the simulated SMTP server behaves.
#[derive(Clone)]
pub struct SmtpConfig {
    /// The username and password `AUTH` accepts; with them, `MAIL FROM` is
    /// refused (`530`) until the client authenticated. Without them the
    /// server advertises no `AUTH` and takes mail from anyone.
    pub credentials: Option<(String, String)>,
    /// The largest message `DATA` takes, in octets after dot-unstuffing
    /// (advertised as `SIZE`); a larger one is answered `552`.
    pub max_message_bytes: usize,
    /// The most `RCPT TO` of one transaction; the next is answered `452`.
    pub max_recipients: usize,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            credentials: None,
            max_message_bytes: 10 * 1024 * 1024,
            max_recipients: 100,
        }
    }
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password never reaches a log.
        formatter
            .debug_struct("SmtpConfig")
            .field("username", &self.credentials.as_ref().map(|(username, _)| username))
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_recipients", &self.max_recipients)
            .finish()
    }
}

/// What the server saw since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SmtpCounters {
    /// Connections greeted with `220`.
    pub connections: u64,
    /// Connections answered `421` and closed because the server was down.
    pub refused_connections: u64,
    /// Commands received, by verb in upper case (`MAIL`, `RCPT`, `DATA`, ...;
    /// an unknown verb counts as `UNKNOWN`).
    pub commands: BTreeMap<String, u64>,
    /// Messages accepted (`250` after `DATA`).
    pub messages_accepted: u64,
    /// Messages refused for their size (`552`).
    pub messages_too_large: u64,
    /// Replies given by an armed or random fault.
    pub faults: u64,
    /// `AUTH` attempts answered `535`.
    pub auth_failures: u64,
}

impl SmtpCounters {
    /// How many `verb` commands were received.
    pub fn commands_of(&self, verb: &str) -> u64 {
        self.commands
            .get(&verb.to_ascii_uppercase())
            .copied()
            .unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct State {
    messages: Vec<ReceivedMail>,
    faults: Faults,
    down: bool,
    latency: Duration,
    jitter: Duration,
    counters: SmtpCounters,
}

/// The state every connection and the handle share.
#[derive(Debug)]
struct Shared {
    config: SmtpConfig,
    state: Mutex<State>,
    /// Woken whenever a message is accepted.
    received: Notify,
}

impl Shared {
    /// Runs `f` on the state. The lock is never held across an await.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }
}

/// A handle on one simulated SMTP server: serve it, then shape and observe its
/// state. Clones share the state.
#[derive(Debug, Clone)]
pub struct SmtpSimulator {
    shared: Arc<Shared>,
}

/// An SMTP simulator being served.
#[derive(Debug)]
pub struct SmtpServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SmtpServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server has stopped: its shutdown token was cancelled
    /// and every connection is closed.
    pub async fn stopped(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)
    }
}

/// What [`SmtpSimulator::start_local`] starts.
#[derive(Debug)]
pub struct LocalSmtp {
    /// The simulator, for messages, faults and counters.
    pub simulator: SmtpSimulator,
    /// Where it listens.
    pub server: SmtpServer,
}

impl SmtpSimulator {
    /// A simulator with no message yet.
    pub fn new(config: SmtpConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State::default()),
                received: Notify::new(),
            }),
        }
    }

    /// The control API under `/_control/smtp`, to serve over HTTP or to merge
    /// into a larger router (SMTP itself is served by [`SmtpSimulator::serve`]).
    pub fn router(&self) -> axum::Router {
        control::router(self.clone())
    }

    /// Serves SMTP on `listen` (port 0 picks a free port) until `shutdown` is
    /// cancelled, which also closes the open connections.
    pub async fn serve(&self, listen: SocketAddr, shutdown: CancellationToken) -> io::Result<SmtpServer> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            let sessions = TaskTracker::new();
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        sessions.spawn(session::run(shared.clone(), stream, peer, shutdown.clone()));
                    }
                    Err(error) => {
                        // Out of descriptors and the like: the next accept may work.
                        tracing::warn!(%error, "The SMTP simulator could not accept a connection.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            sessions.close();
            sessions.wait().await;
        });
        Ok(SmtpServer { addr, task })
    }

    /// A simulator on a free loopback port, what a test starts with; it stops
    /// when `shutdown` is cancelled.
    pub async fn start_local(config: SmtpConfig, shutdown: CancellationToken) -> io::Result<LocalSmtp> {
        let simulator = Self::new(config);
        let server = simulator.serve(crate::LOOPBACK, shutdown).await?;
        Ok(LocalSmtp { simulator, server })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SmtpConfig {
        &self.shared.config
    }

    /// The messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared.with(|state| state.messages.clone())
    }

    /// The messages accepted so far with `recipient` (compared
    /// case-insensitively) among their envelope recipients.
    pub fn messages_to(&self, recipient: &str) -> Vec<ReceivedMail> {
        self.shared.with(|state| {
            state
                .messages
                .iter()
                .filter(|mail| mail.recipients.iter().any(|to| to.eq_ignore_ascii_case(recipient)))
                .cloned()
                .collect()
        })
    }

    /// Waits until at least `count` messages were accepted and returns them
    /// all, or `None` if `timeout` passes first.
    pub async fn wait_for_messages(&self, count: usize, timeout: Duration) -> Option<Vec<ReceivedMail>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.received.notified();
            tokio::pin!(notified);
            // Registered before the check, so an acceptance in between still wakes it.
            notified.as_mut().enable();
            let messages = self.messages();
            if messages.len() >= count {
                return Some(messages);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Forgets every accepted message.
    pub fn clear(&self) {
        self.shared.with(|state| state.messages.clear());
    }

    /// The next `times` transactions are answered `code` (a 4xx or 5xx reply
    /// code, e.g. `451` or `554`) at `MAIL FROM`. A `421` also closes the
    /// connection, as servers do.
    pub fn fail_next(&self, times: u32, code: u16) -> Result<(), InvalidReplyCode> {
        self.fail_next_at(FaultStage::MailFrom, times, code)
    }

    /// The next `times` transactions reaching `stage` are answered `code`
    /// there; at [`FaultStage::DataEnd`] the message is read and discarded.
    pub fn fail_next_at(&self, stage: FaultStage, times: u32, code: u16) -> Result<(), InvalidReplyCode> {
        let code = faults::checked_code(code)?;
        self.shared.with(|state| state.faults.arm(stage, code, times));
        Ok(())
    }

    /// Each transaction reaching `stage` is answered `code` there with
    /// `probability` (0 to 1; 0 turns it off), on top of the armed failures.
    pub fn set_fault_rate(&self, stage: FaultStage, code: u16, probability: f64) -> Result<(), InvalidReplyCode> {
        let code = faults::checked_code(code)?;
        self.shared
            .with(|state| state.faults.set_rate(stage, code, probability));
        Ok(())
    }

    /// Disarms every armed failure and every fault rate.
    pub fn clear_faults(&self) {
        self.shared.with(|state| state.faults.clear());
    }

    /// While `down`, every new connection is answered `421` and closed at once;
    /// open connections go on.
    pub fn set_down(&self, down: bool) {
        self.shared.with(|state| state.down = down);
    }

    /// Every reply waits `base` plus a uniformly random part of `jitter`.
    pub fn set_latency(&self, base: Duration, jitter: Duration) {
        self.shared.with(|state| {
            state.latency = base;
            state.jitter = jitter;
        });
    }

    /// What the server saw so far.
    pub fn counters(&self) -> SmtpCounters {
        self.shared.with(|state| state.counters.clone())
    }
}
