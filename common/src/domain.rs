//! The domain's vocabulary, spelled once. Each enum maps to the text the
//! database stores (see the CHECK constraints in `migrations/`).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the database and shown by the API.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue { kind: stringify!($name), value: text.to_owned() }),
                }
            }
        }
    };
}

/// A stored or received text that names no value of an enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} value {value:?}")]
pub struct UnknownValue {
    /// The enum's name.
    pub kind: &'static str,
    /// The text that was not recognized.
    pub value: String,
}

text_enum! {
    /// How the fleet reaches an organization's mailboxes.
    AccessType {
        ExchangeDirect => "exchange_direct",
        ExchangeImpersonation => "exchange_impersonation",
        Office365 => "office365",
        Gmail => "gmail",
    }
}

text_enum! {
    /// A user's own synchronization status.
    SyncStatus {
        Enabled => "enabled",
        Disabled => "disabled",
        /// Paused by the user.
        Paused => "paused",
        DisabledAuthError => "disabled_auth_error",
        DisabledThrottlingError => "disabled_throttling_error",
        DisabledOtherError => "disabled_other_error",
    }
}

text_enum! {
    /// What caused a job.
    Trigger {
        /// The scheduler's 30-minute cadence.
        Cadence => "cadence",
        /// A force sync requested by an admin or the user.
        Force => "force",
        /// Another admin action.
        Admin => "admin",
    }
}

text_enum! {
    /// What a session covered.
    Scope {
        /// Settings were checked, nothing was synchronized.
        Check => "check",
        Initial => "initial",
        Incremental => "incremental",
        FullResync => "full_resync",
    }
}

text_enum! {
    /// Where a session ended.
    SessionStatus {
        Running => "running",
        Succeeded => "succeeded",
        SucceededWithIssues => "succeeded_with_issues",
        Failed => "failed",
        Skipped => "skipped",
        /// Its worker died or gave the job back; the job runs again.
        Abandoned => "abandoned",
    }
}

text_enum! {
    /// Which side caused a sync issue.
    IssueSource {
        Mailbox => "mailbox",
        Crm => "crm",
        Engine => "engine",
    }
}

text_enum! {
    /// What kind of problem a sync issue is.
    IssueCategory {
        /// Missing or inconsistent configuration.
        Settings => "settings",
        Auth => "auth",
        Permission => "permission",
        Throttled => "throttled",
        Quota => "quota",
        SyncStateReset => "sync_state_reset",
        Validation => "validation",
        LockContention => "lock_contention",
        Duplicate => "duplicate",
        Transient => "transient",
        /// A fault of the engine itself (a crash, a dead-lettered job).
        Internal => "internal",
    }
}

text_enum! {
    /// A user's effective synchronization status: their own, unless their
    /// organization is disabled (then nobody in it syncs).
    EffectiveSyncStatus {
        Enabled => "enabled",
        OrganizationDisabled => "organization_disabled",
        Disabled => "disabled",
        Paused => "paused",
        DisabledAuthError => "disabled_auth_error",
        DisabledThrottlingError => "disabled_throttling_error",
        DisabledOtherError => "disabled_other_error",
    }
}

text_enum! {
    /// A user's role within their organization: an `org_admin` is the
    /// add-in's "Admin" and may push customizations to colleagues.
    UserRole {
        User => "user",
        OrgAdmin => "org_admin",
    }
}

impl EffectiveSyncStatus {
    /// Derives it from the user's status and their organization's switch.
    pub fn of(status: SyncStatus, organization_enabled: bool) -> Self {
        if !organization_enabled {
            return Self::OrganizationDisabled;
        }
        match status {
            SyncStatus::Enabled => Self::Enabled,
            SyncStatus::Disabled => Self::Disabled,
            SyncStatus::Paused => Self::Paused,
            SyncStatus::DisabledAuthError => Self::DisabledAuthError,
            SyncStatus::DisabledThrottlingError => Self::DisabledThrottlingError,
            SyncStatus::DisabledOtherError => Self::DisabledOtherError,
        }
    }
}

/// The id of the organization that always exists.
pub const DEFAULT_ORGANIZATION_ID: uuid::Uuid = uuid::Uuid::from_u128(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_text() {
        for status in SessionStatus::ALL {
            assert_eq!(status.as_str().parse::<SessionStatus>(), Ok(*status));
        }
        for category in IssueCategory::ALL {
            assert_eq!(category.as_str().parse::<IssueCategory>(), Ok(*category));
        }
    }

    #[test]
    fn an_unknown_text_is_named_in_the_error() {
        let error = "sometimes".parse::<Trigger>().unwrap_err();
        assert_eq!(error.to_string(), "unknown Trigger value \"sometimes\"");
    }

    #[test]
    fn a_disabled_organization_overrides_every_user_status() {
        for status in SyncStatus::ALL {
            assert_eq!(
                EffectiveSyncStatus::of(*status, false),
                EffectiveSyncStatus::OrganizationDisabled
            );
        }
        assert_eq!(
            EffectiveSyncStatus::of(SyncStatus::Paused, true),
            EffectiveSyncStatus::Paused
        );
        assert_eq!(
            EffectiveSyncStatus::of(SyncStatus::Enabled, true),
            EffectiveSyncStatus::Enabled
        );
    }

    #[test]
    fn serde_uses_the_stored_text() {
        let json = serde_json::to_string(&SyncStatus::DisabledAuthError).expect("serializes");
        assert_eq!(json, "\"disabled_auth_error\"");
    }
}
