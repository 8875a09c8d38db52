//! Which participants of a message may be logged to the CRM (S5): not the
//! mailbox's owner, not a free-mail address, not a blocklisted domain or
//! address; and the external id a message is upserted under, so that a replay
//! (a redelivered job, a full resync, the same message in two folders) writes
//! the same record again instead of a second one.

use std::collections::BTreeSet;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use syncfleet_connectors::mailbox::MailMessage;
use uuid::Uuid;

/// Domains of free mail services: their addresses are people's private
/// mailboxes, never logged (the organization may switch this off).
pub const FREE_MAIL_DOMAINS: &[&str] = &[
    "aol.com",
    "gmail.com",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "googlemail.com",
    "hotmail.com",
    "hotmail.co.uk",
    "icloud.com",
    "live.com",
    "mac.com",
    "mail.com",
    "mail.ru",
    "me.com",
    "msn.com",
    "outlook.com",
    "proton.me",
    "protonmail.com",
    "web.de",
    "yahoo.co.uk",
    "yahoo.com",
    "yahoo.fr",
    "yandex.ru",
    "zoho.com",
];

/// The filtering settings: the organization's, plus the user's own blocklist.
/// Unknown keys of the stored JSON are ignored; a missing key keeps its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FilterSettings {
    /// Whether free-mail addresses are skipped (default true).
    pub skip_free_mail: bool,
    /// Domains never logged (`example.com` also covers `sub.example.com`).
    pub blocked_domains: Vec<String>,
    /// Addresses never logged.
    pub blocked_addresses: Vec<String>,
    /// Days of mail taken on a first sync or a full resync.
    pub baseline_days: Option<u32>,
}

impl Default for FilterSettings {
    fn default() -> Self {
        Self {
            skip_free_mail: true,
            blocked_domains: Vec::new(),
            blocked_addresses: Vec::new(),
            baseline_days: None,
        }
    }
}

/// Decides which addresses are candidates for matching.
#[derive(Debug, Clone)]
pub struct ParticipantFilter {
    owner: String,
    skip_free_mail: bool,
    blocked_domains: BTreeSet<String>,
    blocked_addresses: BTreeSet<String>,
}

/// Why an address is not matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// The mailbox's owner.
    Owner,
    /// Not an address.
    Malformed,
    /// A free-mail domain.
    FreeMail,
    /// A blocklisted domain or address.
    Blocked,
}

fn normalized(text: &str) -> String {
    text.trim().trim_start_matches('@').to_lowercase()
}

impl ParticipantFilter {
    /// The filter for `owner`'s mailbox with the organization's settings and
    /// the user's own blocklist.
    pub fn new(owner: &str, organization: &FilterSettings, user: &FilterSettings) -> Self {
        let list = |pick: fn(&FilterSettings) -> &Vec<String>| {
            pick(organization)
                .iter()
                .chain(pick(user))
                .map(|entry| normalized(entry))
                .filter(|entry| !entry.is_empty())
                .collect::<BTreeSet<_>>()
        };
        Self {
            owner: normalized(owner),
            skip_free_mail: organization.skip_free_mail,
            blocked_domains: list(|settings| &settings.blocked_domains),
            blocked_addresses: list(|settings| &settings.blocked_addresses),
        }
    }

    /// Whether `address` may be matched, or why not.
    pub fn check(&self, address: &str) -> Result<String, Skipped> {
        let address = normalized(address);
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Err(Skipped::Malformed);
        };
        if local.is_empty() || domain.is_empty() || !domain.contains('.') {
            return Err(Skipped::Malformed);
        }
        if address == self.owner {
            return Err(Skipped::Owner);
        }
        if self.blocked_addresses.contains(&address) || self.domain_blocked(domain) {
            return Err(Skipped::Blocked);
        }
        if self.skip_free_mail && FREE_MAIL_DOMAINS.contains(&domain) {
            return Err(Skipped::FreeMail);
        }
        Ok(address)
    }

    fn domain_blocked(&self, domain: &str) -> bool {
        let mut candidate = domain;
        loop {
            if self.blocked_domains.contains(candidate) {
                return true;
            }
            match candidate.split_once('.') {
                Some((_, parent)) if parent.contains('.') => candidate = parent,
                _ => return false,
            }
        }
    }

    /// The message's participants that may be matched, lower-cased, without
    /// duplicates, sender first.
    pub fn candidates(&self, message: &MailMessage) -> Vec<String> {
        let mut seen = BTreeSet::new();
        message
            .from
            .iter()
            .chain(&message.to)
            .chain(&message.cc)
            .filter_map(|participant| self.check(&participant.address).ok())
            .filter(|address| seen.insert(address.clone()))
            .collect()
    }
}

/// The external id a message is upserted under: the user and the message's
/// `Message-ID` (the same in every folder and after a resync), or the
/// provider's stable id when the message has none.
pub fn external_id(user_id: Uuid, message: &MailMessage) -> String {
    let key = match &message.internet_message_id {
        Some(id) if !id.trim().is_empty() => format!("mid:{}", id.trim()),
        _ => format!("item:{}", message.id),
    };
    let digest = Sha256::digest(format!("{user_id}|{key}").as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sf1-{}", &hex[..40])
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use syncfleet_connectors::mailbox::EmailAddress;

    use super::*;

    fn address(text: &str) -> EmailAddress {
        EmailAddress {
            address: text.to_owned(),
            name: None,
        }
    }

    fn message(from: &str, to: &[&str], message_id: Option<&str>) -> MailMessage {
        MailMessage {
            id: "AAMk-1".to_owned(),
            internet_message_id: message_id.map(str::to_owned),
            sent_by_owner: false,
            subject: "Hello".to_owned(),
            from: Some(address(from)),
            to: to.iter().map(|text| address(text)).collect(),
            cc: Vec::new(),
            sent_at: Utc::now(),
            body_preview: String::new(),
        }
    }

    #[test]
    fn owner_free_mail_and_blocklists_are_skipped() {
        let organization = FilterSettings {
            blocked_domains: vec!["Competitor.com".to_owned()],
            ..FilterSettings::default()
        };
        let user = FilterSettings {
            blocked_addresses: vec!["boss@customer.com".to_owned()],
            ..FilterSettings::default()
        };
        let filter = ParticipantFilter::new("Me@Corp.com", &organization, &user);
        assert_eq!(filter.check("me@corp.com"), Err(Skipped::Owner));
        assert_eq!(filter.check("friend@gmail.com"), Err(Skipped::FreeMail));
        assert_eq!(filter.check("x@sales.competitor.com"), Err(Skipped::Blocked));
        assert_eq!(filter.check("boss@customer.com"), Err(Skipped::Blocked));
        assert_eq!(filter.check("not an address"), Err(Skipped::Malformed));
        assert_eq!(
            filter.check(" Buyer@Customer.com "),
            Ok("buyer@customer.com".to_owned())
        );
        let message = message(
            "me@corp.com",
            &[
                "Buyer@customer.com",
                "buyer@customer.com",
                "friend@gmail.com",
                "ceo@other.org",
            ],
            None,
        );
        assert_eq!(filter.candidates(&message), vec!["buyer@customer.com", "ceo@other.org"]);

        let allow_free_mail = FilterSettings {
            skip_free_mail: false,
            ..FilterSettings::default()
        };
        let filter = ParticipantFilter::new("me@corp.com", &allow_free_mail, &FilterSettings::default());
        assert!(filter.check("friend@gmail.com").is_ok());
    }

    #[test]
    fn the_external_id_follows_the_message_id_and_the_user() {
        let user = Uuid::new_v4();
        let inbox = message("a@b.com", &[], Some("<abc@b.com>"));
        let mut moved = inbox.clone();
        moved.id = "AAMk-2".to_owned();
        assert_eq!(external_id(user, &inbox), external_id(user, &moved));
        assert_ne!(external_id(user, &inbox), external_id(Uuid::new_v4(), &inbox));
        let without = message("a@b.com", &[], None);
        assert_ne!(external_id(user, &without), external_id(user, &inbox));
        assert!(external_id(user, &inbox).len() <= 255);
    }
}
