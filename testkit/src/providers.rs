//! The outside services of a test: the Graph, EWS, Gmail and Salesforce
//! simulators served in-process on free ports, the settings that point a
//! worker at them, and users connected to them with real sealed credentials.

use secrecy::SecretString;
use sqlx::PgPool;
use syncfleet_common::secrets::{self, CredentialKind, KeyRing, Owner};
use syncfleet_simulators::{
    Server,
    ews::{EWS_PATH, EwsConfig, EwsSimulator},
    gmail::{GmailConfig, GmailSimulator},
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

/// The configurations the simulators start with.
#[derive(Debug, Clone, Default)]
pub struct ProviderConfigs {
    pub graph: GraphConfig,
    pub ews: EwsConfig,
    pub gmail: GmailConfig,
    pub salesforce: SalesforceConfig,
}

/// The simulators of one test; they stop when this is dropped.
pub struct Providers {
    /// The Graph simulator.
    pub graph: GraphSimulator,
    /// The EWS simulator.
    pub ews: EwsSimulator,
    /// The Gmail simulator.
    pub gmail: GmailSimulator,
    /// The Salesforce simulator.
    pub salesforce: SalesforceSimulator,
    /// The Salesforce org every connected user belongs to.
    pub org: OrgId,
    graph_server: Server,
    ews_server: Server,
    gmail_server: Server,
    salesforce_server: Server,
    shutdown: CancellationToken,
}

impl Drop for Providers {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn email_of(pool: &PgPool, user_id: Uuid) -> String {
    sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn seal(pool: &PgPool, owner: Owner, kind: CredentialKind, secret: &str) {
    secrets::store(
        pool,
        &test_key_ring(),
        owner,
        kind,
        &SecretString::from(secret.to_owned()),
    )
    .await
    .unwrap();
}

impl Providers {
    /// Starts the simulators with their default configurations.
    pub async fn start() -> Self {
        Self::with(ProviderConfigs::default()).await
    }

    /// Starts the simulators with these configurations.
    pub async fn with(configs: ProviderConfigs) -> Self {
        let shutdown = CancellationToken::new();
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let graph = GraphSimulator::new(configs.graph);
        let graph_server = graph.serve(loopback, shutdown.clone()).await.unwrap();
        let ews = EwsSimulator::new(configs.ews);
        let ews_server = ews.serve(loopback, shutdown.clone()).await.unwrap();
        let gmail = GmailSimulator::new(configs.gmail);
        let gmail_server = gmail.serve(loopback, shutdown.clone()).await.unwrap();
        let salesforce = SalesforceSimulator::new(configs.salesforce);
        let salesforce_server = salesforce.serve(loopback, shutdown.clone()).await.unwrap();
        let org = salesforce.create_org();
        Self {
            graph,
            ews,
            gmail,
            salesforce,
            org,
            graph_server,
            ews_server,
            gmail_server,
            salesforce_server,
            shutdown,
        }
    }

    /// Salesforce's base URL, each connected user's instance URL.
    pub fn salesforce_url(&self) -> String {
        self.salesforce_server.base_url()
    }

    /// The EWS endpoint, an organization's EWS URL.
    pub fn ews_url(&self) -> String {
        format!("{}{EWS_PATH}", self.ews_server.base_url())
    }

    /// The settings pointing a worker at the simulators.
    pub fn env(&self) -> Vec<(String, String)> {
        let graph = self.graph_server.base_url();
        let gmail = self.gmail_server.base_url();
        [
            ("SYNCFLEET_GRAPH_URL", graph.clone()),
            (
                "SYNCFLEET_MICROSOFT_TOKEN_URL",
                format!("{graph}/organizations/oauth2/v2.0/token"),
            ),
            ("SYNCFLEET_MICROSOFT_CLIENT_ID", "syncfleet-test-app".to_owned()),
            ("SYNCFLEET_MICROSOFT_CLIENT_SECRET", "syncfleet-test-secret".to_owned()),
            ("SYNCFLEET_GMAIL_URL", gmail.clone()),
            ("SYNCFLEET_GOOGLE_TOKEN_URL", format!("{gmail}/token")),
            ("SYNCFLEET_GOOGLE_CLIENT_ID", "syncfleet-test-project".to_owned()),
            (
                "SYNCFLEET_GOOGLE_CLIENT_SECRET",
                "syncfleet-test-google-secret".to_owned(),
            ),
            (
                "SYNCFLEET_SALESFORCE_CLIENT_ID",
                "syncfleet-test-connected-app".to_owned(),
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// Authorizes the Salesforce org for the user: a refresh token sealed
    /// into their credentials and the instance URL set.
    pub async fn connect_crm(&self, pool: &PgPool, user_id: Uuid) {
        self.connect_crm_to(pool, user_id, &self.org).await;
    }

    /// Like [`Providers::connect_crm`], to another simulated org.
    pub async fn connect_crm_to(&self, pool: &PgPool, user_id: Uuid, org: &OrgId) {
        let token = self.salesforce.issue_refresh_token(org);
        seal(pool, Owner::User(user_id), CredentialKind::CrmRefreshToken, &token).await;
        sqlx::query("UPDATE users SET salesforce_instance_url = $2 WHERE id = $1")
            .bind(user_id)
            .bind(self.salesforce_url())
            .execute(pool)
            .await
            .unwrap();
    }

    /// Connects an Office 365 user: a Graph mailbox at their address, its
    /// refresh token sealed, and the CRM.
    pub async fn connect_office365(&self, pool: &PgPool, user_id: Uuid) {
        let token = self.graph.create_mailbox(&email_of(pool, user_id).await);
        seal(pool, Owner::User(user_id), CredentialKind::MailboxRefreshToken, &token).await;
        self.connect_crm(pool, user_id).await;
    }

    /// A new Office 365 organization with `count` enabled users, each
    /// connected to the simulators.
    pub async fn office365_users(&self, pool: &PgPool, count: usize) -> Vec<Uuid> {
        let organization = crate::organization(pool, syncfleet_common::domain::AccessType::Office365, true).await;
        let users = crate::users(
            pool,
            organization,
            count,
            syncfleet_common::domain::SyncStatus::Enabled,
            chrono::Utc::now(),
            false,
        )
        .await;
        for user in &users {
            self.connect_office365(pool, *user).await;
        }
        users
    }

    /// Connects a Gmail user: a Gmail mailbox, its refresh token sealed, and
    /// the CRM.
    pub async fn connect_gmail(&self, pool: &PgPool, user_id: Uuid) {
        let token = self.gmail.create_mailbox(&email_of(pool, user_id).await);
        seal(pool, Owner::User(user_id), CredentialKind::MailboxRefreshToken, &token).await;
        self.connect_crm(pool, user_id).await;
    }

    /// Connects an Exchange Direct Logon user: an account with `password`
    /// owning a mailbox at their address, the password sealed, the
    /// organization's EWS URL set, and the CRM.
    pub async fn connect_exchange_direct(&self, pool: &PgPool, user_id: Uuid, password: &str) {
        let email = email_of(pool, user_id).await;
        self.ews.create_account(&email, password).unwrap();
        self.ews.create_mailbox(&email, &email).unwrap();
        seal(pool, Owner::User(user_id), CredentialKind::MailboxPassword, password).await;
        sqlx::query(
            "UPDATE organizations SET ews_url = $2 WHERE id = (SELECT organization_id FROM users WHERE id = $1)",
        )
        .bind(user_id)
        .bind(self.ews_url())
        .execute(pool)
        .await
        .unwrap();
        self.connect_crm(pool, user_id).await;
    }

    /// An Exchange Impersonation organization whose service account (created
    /// in the simulator, with or without the ApplicationImpersonation role)
    /// has its password sealed.
    pub async fn impersonation_organization(
        &self,
        pool: &PgPool,
        service_account: &str,
        password: &str,
        impersonation_role: bool,
    ) -> Uuid {
        self.ews
            .create_service_account(service_account, password, impersonation_role)
            .unwrap();
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO organizations (id, external_id, name, access_type, ews_url, impersonation_account) \
             VALUES ($1, $2, 'Impersonation', 'exchange_impersonation', $3, $4)",
        )
        .bind(id)
        .bind(format!("ext-{}", id.simple()))
        .bind(self.ews_url())
        .bind(service_account)
        .execute(pool)
        .await
        .unwrap();
        seal(
            pool,
            Owner::Organization(id),
            CredentialKind::ImpersonationPassword,
            password,
        )
        .await;
        id
    }

    /// Connects a user of an impersonation organization: a mailbox at their
    /// address (its own account's password is never known to the fleet), and
    /// the CRM.
    pub async fn connect_impersonated(&self, pool: &PgPool, user_id: Uuid) {
        let email = email_of(pool, user_id).await;
        self.ews.create_account(&email, &Uuid::new_v4().to_string()).unwrap();
        self.ews.create_mailbox(&email, &email).unwrap();
        self.connect_crm(pool, user_id).await;
    }
}
