//! One SMTP connection: the command loop, `AUTH`, the mail transaction and
//! `DATA`, with the replies (and enhanced status codes) a real server gives.

use std::{io, net::SocketAddr, sync::Arc};

use base64::Engine;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::shared::latency;

use super::{
    Shared,
    faults::{FaultStage, failure_text},
    message::ReceivedMail,
};

/// The name the server greets with.
const HOSTNAME: &str = "smtp.simulator.test";
/// The longest command line taken, CRLF included: RFC 5321 asks for 512, an
/// `AUTH` response may be up to 12,288 (RFC 4954).
const MAX_COMMAND_LINE: usize = 12_288;
/// `DATA` is read this many octets at most at a time, so a line without end
/// cannot take the memory.
const DATA_CHUNK: usize = 64 * 1024;
/// The verbs counted by name; others count as `UNKNOWN`.
const VERBS: [&str; 17] = [
    "EHLO", "HELO", "AUTH", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "TURN", "STARTTLS",
    "BDAT", "ETRN", "SEND",
];

/// Serves one connection until the client quits, the connection drops or
/// `shutdown` is cancelled.
pub(super) async fn run(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, shutdown: CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        result = converse(&shared, stream) => {
            if let Err(error) = result {
                debug!(%peer, %error, "An SMTP connection ended with an error.");
            }
        }
    }
}

enum Line {
    Text(String),
    TooLong,
    Closed,
}

struct Connection<'a> {
    shared: &'a Shared,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    buffer: Vec<u8>,
}

impl Connection<'_> {
    async fn send(&mut self, text: &str) -> io::Result<()> {
        let delay = self.shared.with(|state| {
            let (base, jitter) = (state.latency, state.jitter);
            state.faults.delay(base, jitter)
        });
        latency::wait(delay).await;
        self.writer.write_all(text.as_bytes()).await
    }

    async fn reply(&mut self, code: u16, text: &str) -> io::Result<()> {
        self.send(&format!("{code} {text}\r\n")).await
    }

    /// A multiline reply: `code-` on every line but the last.
    async fn reply_lines(&mut self, code: u16, lines: &[String]) -> io::Result<()> {
        let mut text = String::new();
        for (index, line) in lines.iter().enumerate() {
            let separator = if index + 1 == lines.len() { ' ' } else { '-' };
            text.push_str(&format!("{code}{separator}{line}\r\n"));
        }
        self.send(&text).await
    }

    /// Reads into the buffer up to a line break or `limit` bytes, whichever
    /// comes first: how many were read (0 once the connection has ended).
    async fn read_chunk(&mut self, limit: usize) -> io::Result<usize> {
        self.buffer.clear();
        (&mut self.reader)
            .take(limit as u64)
            .read_until(b'\n', &mut self.buffer)
            .await
    }

    /// The next line without its line break; an over-long line is read to
    /// its end and discarded.
    async fn read_line(&mut self) -> io::Result<Line> {
        let read = self.read_chunk(MAX_COMMAND_LINE).await?;
        if read == 0 {
            return Ok(Line::Closed);
        }
        if !self.buffer.ends_with(b"\n") {
            if read < MAX_COMMAND_LINE {
                // The connection ended in the middle of a line.
                return Ok(Line::Closed);
            }
            loop {
                if self.read_chunk(MAX_COMMAND_LINE).await? == 0 {
                    return Ok(Line::Closed);
                }
                if self.buffer.ends_with(b"\n") {
                    return Ok(Line::TooLong);
                }
            }
        }
        let line = self.buffer.strip_suffix(b"\n").unwrap_or(&self.buffer);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Ok(Line::Text(String::from_utf8_lossy(line).into_owned()))
    }

    /// The message after `354`, dot-unstuffed, up to the line `.`; `None`
    /// when the connection ends first. Past `max_bytes` the rest is read and
    /// dropped, and `too_large` is set.
    async fn read_data(&mut self, max_bytes: usize) -> io::Result<Option<Data>> {
        let mut data = Data::default();
        let mut at_line_start = true;
        loop {
            if self.read_chunk(DATA_CHUNK).await? == 0 {
                return Ok(None);
            }
            if at_line_start && self.buffer == b".\r\n" {
                return Ok(Some(data));
            }
            let mut content = self.buffer.as_slice();
            if at_line_start && content.first() == Some(&b'.') {
                // Dot-stuffing (RFC 5321 4.5.2): the client doubled it.
                content = &content[1..];
            }
            at_line_start = content.ends_with(b"\n");
            data.size += content.len();
            if data.size > max_bytes {
                data.too_large = true;
                data.bytes = Vec::new();
            } else {
                data.bytes.extend_from_slice(content);
            }
        }
    }
}

#[derive(Default)]
struct Data {
    bytes: Vec<u8>,
    size: usize,
    too_large: bool,
}

struct Transaction {
    from: String,
    recipients: Vec<String>,
}

#[derive(Default)]
struct Session {
    greeted: bool,
    authenticated: Option<String>,
    transaction: Option<Transaction>,
}

/// Whether the connection goes on after a command.
enum Next {
    Continue,
    Close,
}

async fn converse(shared: &Shared, stream: TcpStream) -> io::Result<()> {
    let (reader, writer) = stream.into_split();
    let mut connection = Connection {
        shared,
        reader: BufReader::new(reader),
        writer,
        buffer: Vec::new(),
    };
    let down = shared.with(|state| {
        if state.down {
            state.counters.refused_connections += 1;
        } else {
            state.counters.connections += 1;
        }
        state.down
    });
    if down {
        connection
            .writer
            .write_all(
                format!("421 4.3.2 {HOSTNAME} Service not available, closing transmission channel\r\n").as_bytes(),
            )
            .await?;
        return connection.writer.shutdown().await;
    }
    connection
        .reply(220, &format!("{HOSTNAME} ESMTP Syncfleet simulator ready"))
        .await?;
    let mut session = Session::default();
    loop {
        let line = match connection.read_line().await? {
            Line::Closed => return Ok(()),
            Line::TooLong => {
                connection.reply(500, "5.5.2 Line too long").await?;
                continue;
            }
            Line::Text(line) => line,
        };
        let (verb, argument) = match line.split_once(' ') {
            Some((verb, argument)) => (verb.to_ascii_uppercase(), argument.trim()),
            None => (line.trim().to_ascii_uppercase(), ""),
        };
        let counted = if VERBS.contains(&verb.as_str()) {
            verb.clone()
        } else {
            "UNKNOWN".to_owned()
        };
        shared.with(|state| *state.counters.commands.entry(counted).or_default() += 1);
        let next = command(&mut connection, &mut session, &verb, argument).await?;
        if let Next::Close = next {
            return connection.writer.shutdown().await;
        }
    }
}

async fn command(
    connection: &mut Connection<'_>,
    session: &mut Session,
    verb: &str,
    argument: &str,
) -> io::Result<Next> {
    match verb {
        "EHLO" | "HELO" => {
            if argument.is_empty() {
                connection.reply(501, &format!("5.5.4 Syntax: {verb} hostname")).await?;
                return Ok(Next::Continue);
            }
            session.greeted = true;
            session.transaction = None;
            let greeting = format!("{HOSTNAME} greets {argument}");
            if verb == "HELO" {
                connection.reply(250, &greeting).await?;
            } else {
                let config = &connection.shared.config;
                let mut lines = vec![
                    greeting,
                    "8BITMIME".to_owned(),
                    "ENHANCEDSTATUSCODES".to_owned(),
                    format!("SIZE {}", config.max_message_bytes),
                ];
                if config.credentials.is_some() {
                    lines.push("AUTH PLAIN LOGIN".to_owned());
                }
                connection.reply_lines(250, &lines).await?;
            }
        }
        "AUTH" => return authenticate(connection, session, argument).await,
        "MAIL" => return mail(connection, session, argument).await,
        "RCPT" => rcpt(connection, session, argument).await?,
        "DATA" => return data(connection, session, argument).await,
        "RSET" => {
            session.transaction = None;
            connection.reply(250, "2.0.0 OK").await?;
        }
        "NOOP" => connection.reply(250, "2.0.0 OK").await?,
        "QUIT" => {
            connection
                .reply(221, &format!("2.0.0 {HOSTNAME} closing connection"))
                .await?;
            return Ok(Next::Close);
        }
        "VRFY" | "EXPN" | "HELP" | "TURN" | "STARTTLS" | "BDAT" | "ETRN" | "SEND" => {
            connection.reply(502, "5.5.1 Command not implemented").await?;
        }
        _ => connection.reply(500, "5.5.2 Command unrecognized").await?,
    }
    Ok(Next::Continue)
}

/// A client response to a `334` challenge, base64-decoded; `None` when the
/// client cancelled (`*`), closed or sent something else than base64 (the
/// reply is given here).
async fn challenge(connection: &mut Connection<'_>, prompt: &str) -> io::Result<Option<Vec<u8>>> {
    connection.reply(334, prompt).await?;
    let line = match connection.read_line().await? {
        Line::Text(line) => line,
        Line::TooLong => {
            connection.reply(500, "5.5.2 Line too long").await?;
            return Ok(None);
        }
        Line::Closed => return Ok(None),
    };
    decoded(connection, &line).await
}

async fn decoded(connection: &mut Connection<'_>, response: &str) -> io::Result<Option<Vec<u8>>> {
    if response == "*" {
        connection.reply(501, "5.7.0 Authentication cancelled").await?;
        return Ok(None);
    }
    if response == "=" {
        return Ok(Some(Vec::new()));
    }
    match base64::engine::general_purpose::STANDARD.decode(response.trim()) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(_) => {
            connection.reply(501, "5.5.2 Cannot decode response").await?;
            Ok(None)
        }
    }
}

async fn authenticate(connection: &mut Connection<'_>, session: &mut Session, argument: &str) -> io::Result<Next> {
    let Some((username, password)) = connection.shared.config.credentials.clone() else {
        connection.reply(502, "5.5.1 Command not implemented").await?;
        return Ok(Next::Continue);
    };
    let refusal = if !session.greeted {
        Some("5.5.1 Send EHLO first")
    } else if session.authenticated.is_some() {
        Some("5.5.1 Already authenticated")
    } else if session.transaction.is_some() {
        Some("5.5.1 AUTH not permitted during a mail transaction")
    } else {
        None
    };
    if let Some(refusal) = refusal {
        connection.reply(503, refusal).await?;
        return Ok(Next::Continue);
    }
    let (mechanism, initial) = match argument.split_once(' ') {
        Some((mechanism, initial)) => (mechanism.to_ascii_uppercase(), Some(initial.trim())),
        None => (argument.to_ascii_uppercase(), None),
    };
    let given = match mechanism.as_str() {
        "PLAIN" => {
            let response = match initial {
                Some(initial) => decoded(connection, initial).await?,
                None => challenge(connection, "").await?,
            };
            let Some(response) = response else {
                return Ok(Next::Continue);
            };
            // authzid NUL authcid NUL passwd (RFC 4616)
            let parts: Vec<&[u8]> = response.split(|byte| *byte == 0).collect();
            match parts.as_slice() {
                [authzid, authcid, passwd] if authzid.is_empty() || authzid == authcid => {
                    Some((authcid.to_vec(), passwd.to_vec()))
                }
                _ => None,
            }
        }
        "LOGIN" => {
            let user = match initial {
                Some(initial) => decoded(connection, initial).await?,
                // "Username:" and "Password:", base64.
                None => challenge(connection, "VXNlcm5hbWU6").await?,
            };
            let Some(user) = user else {
                return Ok(Next::Continue);
            };
            let Some(pass) = challenge(connection, "UGFzc3dvcmQ6").await? else {
                return Ok(Next::Continue);
            };
            Some((user, pass))
        }
        _ => {
            connection.reply(504, "5.5.4 Unrecognized authentication type").await?;
            return Ok(Next::Continue);
        }
    };
    match given {
        Some((user, pass)) if user == username.as_bytes() && pass == password.as_bytes() => {
            session.authenticated = Some(username);
            connection.reply(235, "2.7.0 Authentication successful").await?;
        }
        _ => {
            connection.shared.with(|state| state.counters.auth_failures += 1);
            connection
                .reply(535, "5.7.8 Authentication credentials invalid")
                .await?;
        }
    }
    Ok(Next::Continue)
}

/// `FROM:<path> params` or `TO:<path> params` after the verb: the address
/// (source route dropped) and the parameters; `None` if it is not that.
fn path_argument<'a>(argument: &'a str, keyword: &str) -> Option<(String, Vec<&'a str>)> {
    let head = argument.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = argument[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let path = &rest[..end];
    // `@relay1,@relay2:user@host`: only the mailbox counts.
    let mailbox = path.rsplit_once(':').map_or(path, |(_, mailbox)| mailbox);
    let parameters = rest[end + 1..].split_whitespace().collect();
    Some((mailbox.to_owned(), parameters))
}

fn is_mailbox(address: &str) -> bool {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !address.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// Answers a fault armed for `stage`, if any; `Some` tells what follows.
async fn fault(connection: &mut Connection<'_>, stage: FaultStage) -> io::Result<Option<Next>> {
    let code = connection.shared.with(|state| {
        let code = state.faults.take(stage);
        if code.is_some() {
            state.counters.faults += 1;
        }
        code
    });
    let Some(code) = code else {
        return Ok(None);
    };
    connection.reply(code, failure_text(code)).await?;
    // 421: the server closes the channel (RFC 5321 3.8).
    Ok(Some(if code == 421 { Next::Close } else { Next::Continue }))
}

async fn mail(connection: &mut Connection<'_>, session: &mut Session, argument: &str) -> io::Result<Next> {
    let config = &connection.shared.config;
    let max_message_bytes = config.max_message_bytes;
    let refusal = if !session.greeted {
        Some((503, "5.5.1 Send EHLO/HELO first".to_owned()))
    } else if config.credentials.is_some() && session.authenticated.is_none() {
        Some((530, "5.7.0 Authentication required".to_owned()))
    } else if session.transaction.is_some() {
        Some((503, "5.5.1 Nested MAIL command".to_owned()))
    } else {
        match path_argument(argument, "FROM:") {
            None => Some((501, "5.5.4 Syntax: MAIL FROM:<address>".to_owned())),
            Some((from, _)) if !from.is_empty() && !is_mailbox(&from) => {
                Some((501, "5.1.7 Bad sender address syntax".to_owned()))
            }
            Some((from, parameters)) => match mail_parameters(&parameters, max_message_bytes) {
                Err(refusal) => Some(refusal),
                Ok(()) => {
                    if let Some(next) = fault(connection, FaultStage::MailFrom).await? {
                        return Ok(next);
                    }
                    session.transaction = Some(Transaction {
                        from,
                        recipients: Vec::new(),
                    });
                    None
                }
            },
        }
    };
    match refusal {
        Some((code, text)) => connection.reply(code, &text).await?,
        None => connection.reply(250, "2.1.0 Sender OK").await?,
    }
    Ok(Next::Continue)
}

/// Checks `MAIL FROM` parameters: `SIZE` (RFC 1870), `BODY` (RFC 6152) and
/// `AUTH` (RFC 4954) are known.
fn mail_parameters(parameters: &[&str], max_message_bytes: usize) -> Result<(), (u16, String)> {
    for parameter in parameters {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => match value.parse::<u64>() {
                Ok(size) if size > max_message_bytes as u64 => {
                    return Err((552, "5.3.4 Message size exceeds fixed maximum message size".to_owned()));
                }
                Ok(_) => {}
                Err(_) => return Err((501, "5.5.4 Bad SIZE parameter".to_owned())),
            },
            "BODY" if value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME") => {}
            "AUTH" => {}
            _ => return Err((555, format!("5.5.4 Unsupported parameter {key}"))),
        }
    }
    Ok(())
}

async fn rcpt(connection: &mut Connection<'_>, session: &mut Session, argument: &str) -> io::Result<()> {
    let max_recipients = connection.shared.config.max_recipients;
    let Some(transaction) = session.transaction.as_mut() else {
        return connection.reply(503, "5.5.1 Need MAIL command").await;
    };
    let Some((recipient, parameters)) = path_argument(argument, "TO:") else {
        return connection.reply(501, "5.5.4 Syntax: RCPT TO:<address>").await;
    };
    if !is_mailbox(&recipient) && !recipient.eq_ignore_ascii_case("postmaster") {
        return connection.reply(501, "5.1.3 Bad recipient address syntax").await;
    }
    if let Some(parameter) = parameters.first() {
        return connection
            .reply(555, &format!("5.5.4 Unsupported parameter {parameter}"))
            .await;
    }
    if transaction.recipients.len() >= max_recipients {
        return connection.reply(452, "4.5.3 Too many recipients").await;
    }
    transaction.recipients.push(recipient);
    connection.reply(250, "2.1.5 Recipient OK").await
}

async fn data(connection: &mut Connection<'_>, session: &mut Session, argument: &str) -> io::Result<Next> {
    if !argument.is_empty() {
        connection.reply(501, "5.5.4 Syntax: DATA").await?;
        return Ok(Next::Continue);
    }
    let Some(transaction) = session
        .transaction
        .take_if(|transaction| !transaction.recipients.is_empty())
    else {
        let text = if session.transaction.is_some() {
            "5.5.1 No valid recipients"
        } else {
            "5.5.1 Need MAIL command"
        };
        connection.reply(503, text).await?;
        return Ok(Next::Continue);
    };
    connection.reply(354, "End data with <CR><LF>.<CR><LF>").await?;
    let max_message_bytes = connection.shared.config.max_message_bytes;
    let Some(data) = connection.read_data(max_message_bytes).await? else {
        return Ok(Next::Close);
    };
    if data.too_large {
        connection.shared.with(|state| state.counters.messages_too_large += 1);
        connection
            .reply(552, "5.3.4 Message size exceeds fixed maximum message size")
            .await?;
        return Ok(Next::Continue);
    }
    if let Some(next) = fault(connection, FaultStage::DataEnd).await? {
        return Ok(next);
    }
    let mail = ReceivedMail::new(
        transaction.from,
        transaction.recipients,
        data.bytes,
        session.authenticated.clone(),
    );
    let shared = connection.shared;
    shared.with(|state| {
        state.messages.push(mail);
        state.counters.messages_accepted += 1;
    });
    shared.received.notify_waiters();
    let queued = uuid::Uuid::new_v4().simple().to_string();
    connection
        .reply(250, &format!("2.0.0 OK: queued as {}", &queued[..12]))
        .await?;
    Ok(Next::Continue)
}
