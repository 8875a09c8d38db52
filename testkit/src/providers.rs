//! The outside services of a test: the Graph and Salesforce simulators served
//! in-process on free ports, the settings that point a worker at them, and
//! users connected to them with real sealed credentials.

use secrecy::SecretString;
use sqlx::PgPool;
use syncfleet_common::secrets::{self, CredentialKind, KeyRing, Owner};
use syncfleet_simulators::{
    Server,
    graph::{GraphConfig, GraphSimulator},
    salesforce::{OrgId, SalesforceConfig, SalesforceSimulator},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The key ring every test seals credentials with (32 bytes of 0x11).
pub const TEST_ENCRYPTION_KEYS: &str = "1:ERERERERERERERERERERERERERERERERERERERERERE=";

/// The test key ring.
pub fn test_key_ring() -> KeyRing {
    KeyRing::parse(&SecretString::from(TEST_ENCRYPTION_KEYS.to_owned())).unwrap()
}

/// The simulators of one test; they stop when this is dropped.
pub struct Providers {
    /// The Graph simulator.
    pub graph: GraphSimulator,
    /// The Salesforce simulator.
    pub salesforce: SalesforceSimulator,
    /// The Salesforce org every connected user belongs to.
    pub org: OrgId,
    graph_server: Server,
    salesforce_server: Server,
    shutdown: CancellationToken,
}

impl Drop for Providers {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Providers {
    /// Starts the simulators with their default configurations.
    pub async fn start() -> Self {
        Self::with(GraphConfig::default(), SalesforceConfig::default()).await
    }

    /// Starts the simulators with these configurations.
    pub async fn with(graph: GraphConfig, salesforce: SalesforceConfig) -> Self {
        let shutdown = CancellationToken::new();
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let graph = GraphSimulator::new(graph);
        let graph_server = graph.serve(loopback, shutdown.clone()).await.unwrap();
        let salesforce = SalesforceSimulator::new(salesforce);
        let salesforce_server = salesforce.serve(loopback, shutdown.clone()).await.unwrap();
        let org = salesforce.create_org();
        Self {
            graph,
            salesforce,
            org,
            graph_server,
            salesforce_server,
            shutdown,
        }
    }

    /// Salesforce's base URL, each connected user's instance URL.
    pub fn salesforce_url(&self) -> String {
        self.salesforce_server.base_url()
    }

    /// The settings pointing a worker at the simulators.
    pub fn env(&self) -> Vec<(String, String)> {
        let graph = self.graph_server.base_url();
        [
            ("SYNCFLEET_GRAPH_URL", graph.clone()),
            (
                "SYNCFLEET_MICROSOFT_TOKEN_URL",
                format!("{graph}/organizations/oauth2/v2.0/token"),
            ),
            ("SYNCFLEET_MICROSOFT_CLIENT_ID", "syncfleet-test-app".to_owned()),
            ("SYNCFLEET_MICROSOFT_CLIENT_SECRET", "syncfleet-test-secret".to_owned()),
            (
                "SYNCFLEET_SALESFORCE_CLIENT_ID",
                "syncfleet-test-connected-app".to_owned(),
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// Connects an Office 365 user: a Graph mailbox at their address, an
    /// authorization of the Salesforce org, both refresh tokens sealed into
    /// their credentials, and the Salesforce instance URL set.
    pub async fn connect_office365(&self, pool: &PgPool, user_id: Uuid) {
        let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(pool)
            .await
            .unwrap();
        let mailbox_token = self.graph.create_mailbox(&email);
        let crm_token = self.salesforce.issue_refresh_token(&self.org);
        let ring = test_key_ring();
        let owner = Owner::User(user_id);
        for (kind, token) in [
            (CredentialKind::MailboxRefreshToken, mailbox_token),
            (CredentialKind::CrmRefreshToken, crm_token),
        ] {
            secrets::store(pool, &ring, owner, kind, &SecretString::from(token))
                .await
                .unwrap();
        }
        sqlx::query("UPDATE users SET salesforce_instance_url = $2 WHERE id = $1")
            .bind(user_id)
            .bind(self.salesforce_url())
            .execute(pool)
            .await
            .unwrap();
    }
}
