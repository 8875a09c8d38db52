//! The domain's vocabulary, spelled once. Each enum maps to the text the
//! database stores (see the CHECK constraints in `migrations/`).

use std::{fmt, marker::PhantomData, str::FromStr};

/// Declares an enum whose values are texts: the database stores them (TEXT
/// columns with a CHECK), the API and the wire carry them. The literal after
/// each variant is its one spelling: `as_str`, `FromStr`, `Display`, serde,
/// sqlx's encoding and decoding and, with the `openapi` feature, the OpenAPI
/// schema (utoipa) are all implemented here from it, rather than derived
/// with attributes (`#[serde(rename_all)]`, `#[sqlx(rename_all)]`, ...) that
/// would spell every value a second time.
macro_rules! text_enum {
    ($(#[doc = $doc:literal])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the database and shown by the API.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl $crate::domain::TextEnum for $name {
            const NAME: &'static str = stringify!($name);
            const DOC: &'static str = concat!($($doc, "\n"),*);
            const TEXTS: &'static [&'static str] = &[$($text),+];
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, formatter: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                formatter.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::domain::UnknownValue;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::domain::UnknownValue {
                        kind: <$name as $crate::domain::TextEnum>::NAME,
                        value: text.to_owned(),
                    }),
                }
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str($crate::domain::TextVisitor::<$name>::new())
            }
        }

        impl ::sqlx::Type<::sqlx::Postgres> for $name {
            fn type_info() -> ::sqlx::postgres::PgTypeInfo {
                <&str as ::sqlx::Type<::sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &::sqlx::postgres::PgTypeInfo) -> bool {
                <&str as ::sqlx::Type<::sqlx::Postgres>>::compatible(ty)
            }
        }

        impl ::sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> ::sqlx::postgres::PgTypeInfo {
                <&str as ::sqlx::postgres::PgHasArrayType>::array_type_info()
            }

            fn array_compatible(ty: &::sqlx::postgres::PgTypeInfo) -> bool {
                <&str as ::sqlx::postgres::PgHasArrayType>::array_compatible(ty)
            }
        }

        impl<'q> ::sqlx::Encode<'q, ::sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buffer: &mut ::sqlx::postgres::PgArgumentBuffer,
            ) -> Result<::sqlx::encode::IsNull, ::sqlx::error::BoxDynError> {
                <&str as ::sqlx::Encode<'q, ::sqlx::Postgres>>::encode(self.as_str(), buffer)
            }

            fn size_hint(&self) -> usize {
                self.as_str().len()
            }
        }

        impl<'r> ::sqlx::Decode<'r, ::sqlx::Postgres> for $name {
            fn decode(value: ::sqlx::postgres::PgValueRef<'r>) -> Result<Self, ::sqlx::error::BoxDynError> {
                let text = <&str as ::sqlx::Decode<'r, ::sqlx::Postgres>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }

        #[cfg(feature = "openapi")]
        impl ::utoipa::PartialSchema for $name {
            fn schema() -> ::utoipa::openapi::RefOr<::utoipa::openapi::schema::Schema> {
                $crate::domain::text_schema::<$name>()
            }
        }

        #[cfg(feature = "openapi")]
        impl ::utoipa::ToSchema for $name {
            fn name() -> ::std::borrow::Cow<'static, str> {
                ::std::borrow::Cow::Borrowed(<$name as $crate::domain::TextEnum>::NAME)
            }
        }
    };
}
pub(crate) use text_enum;

/// What [`text_enum!`] tells the code it shares between the enums.
pub trait TextEnum: FromStr + Sized {
    /// The enum's name.
    const NAME: &'static str;
    /// Its documentation, line by line.
    const DOC: &'static str;
    /// Every value's text, in declaration order.
    const TEXTS: &'static [&'static str];
}

/// Reads a [`TextEnum`] from a string (serde's side of `FromStr`).
#[doc(hidden)]
pub struct TextVisitor<T>(PhantomData<T>);

impl<T> TextVisitor<T> {
    /// The visitor of a `T`.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for TextVisitor<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: TextEnum> serde::de::Visitor<'_> for TextVisitor<T> {
    type Value = T;

    /// The values as serde lists them for an unknown one.
    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match T::TEXTS {
            [one] => write!(formatter, "`{one}`"),
            [one, other] => write!(formatter, "`{one}` or `{other}`"),
            texts => {
                formatter.write_str("one of ")?;
                for (index, text) in texts.iter().enumerate() {
                    if index > 0 {
                        formatter.write_str(", ")?;
                    }
                    write!(formatter, "`{text}`")?;
                }
                Ok(())
            }
        }
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        // serde's own wording for an enum's unknown value.
        text.parse().map_err(|_| E::unknown_variant(text, T::TEXTS))
    }
}

/// The OpenAPI schema of a [`TextEnum`]: a string, one of its texts,
/// described by its documentation.
#[cfg(feature = "openapi")]
#[doc(hidden)]
pub fn text_schema<T: TextEnum>() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let description = T::DOC.lines().map(str::trim).collect::<Vec<_>>().join("\n");
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(T::TEXTS.iter().copied()))
        .description((!description.is_empty()).then_some(description))
        .into()
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

text_enum! {
    /// Where a dead job stands: waiting for an operator, or what one did
    /// with it.
    DeadJobStatus {
        /// Waiting for an operator.
        Dead => "dead",
        /// Published again as a new job.
        Replayed => "replayed",
        /// Marked handled without running it.
        Discarded => "discarded",
    }
}

text_enum! {
    /// What an operator does with a dead job.
    DeadJobAction {
        /// Publish it again as a new job.
        Replay => "replay",
        /// Mark it handled without running it.
        Discard => "discard",
    }
}

impl AccessType {
    /// Whether the mailboxes are on an Exchange server, reached at the
    /// organization's EWS URL.
    pub fn is_exchange(self) -> bool {
        matches!(self, Self::ExchangeDirect | Self::ExchangeImpersonation)
    }
}

impl DeadJobAction {
    /// Where it leads a dead job.
    pub fn leads_to(self) -> DeadJobStatus {
        match self {
            Self::Replay => DeadJobStatus::Replayed,
            Self::Discard => DeadJobStatus::Discarded,
        }
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

    /// The user's own status it stands for; `None` for
    /// `OrganizationDisabled`, which is their organization's.
    pub fn own(self) -> Option<SyncStatus> {
        match self {
            Self::OrganizationDisabled => None,
            Self::Enabled => Some(SyncStatus::Enabled),
            Self::Disabled => Some(SyncStatus::Disabled),
            Self::Paused => Some(SyncStatus::Paused),
            Self::DisabledAuthError => Some(SyncStatus::DisabledAuthError),
            Self::DisabledThrottlingError => Some(SyncStatus::DisabledThrottlingError),
            Self::DisabledOtherError => Some(SyncStatus::DisabledOtherError),
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
    fn an_effective_status_in_an_enabled_organization_is_the_users_own() {
        for status in SyncStatus::ALL {
            assert_eq!(EffectiveSyncStatus::of(*status, true).own(), Some(*status));
        }
        assert_eq!(EffectiveSyncStatus::OrganizationDisabled.own(), None);
    }

    #[test]
    fn serde_uses_the_stored_text() {
        let json = serde_json::to_string(&SyncStatus::DisabledAuthError).expect("serializes");
        assert_eq!(json, "\"disabled_auth_error\"");
        for status in EffectiveSyncStatus::ALL {
            let json = serde_json::to_value(status).expect("serializes");
            assert_eq!(json, status.as_str());
            assert_eq!(serde_json::from_value::<EffectiveSyncStatus>(json).ok(), Some(*status));
        }
    }

    #[test]
    fn serde_refuses_an_unknown_text_naming_the_values() {
        let error = serde_json::from_str::<UserRole>("\"admin\"").unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown variant `admin`, expected `user` or `org_admin` at line 1 column 7"
        );
        let error = serde_json::from_str::<Trigger>("3").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("expected one of `cadence`, `force`, `admin`"),
            "{error}"
        );
    }

    #[cfg(feature = "openapi")]
    #[test]
    fn the_schema_lists_every_text_with_the_enums_doc() {
        use utoipa::{PartialSchema, ToSchema};
        let schema = serde_json::to_value(Scope::schema()).expect("serializes");
        assert_eq!(Scope::name(), "Scope");
        assert_eq!(schema["type"], "string");
        assert_eq!(
            schema["enum"],
            serde_json::json!(["check", "initial", "incremental", "full_resync"])
        );
        assert_eq!(schema["description"], "What a session covered.");
    }
}
