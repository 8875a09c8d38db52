//! The store: one module per aggregate owning its SQL, its row types and the
//! meaning of the database's refusals. A handler calls a store function and
//! gets a [`StoreError`] it can answer, never an `sqlx::Error`:
//!
//! - a unique violation is a 409 naming the field that must be unique
//!   (`email`, `external_id`, ...), so two clients racing for one value get
//!   one success and one 409, never a 500;
//! - a foreign-key violation is the parent vanishing under the write (an
//!   organization deleted while a user is added to it): 404 naming it;
//! - a serialization failure or a deadlock is [`StoreError::Retry`]: the
//!   request is run again from the start (see `crate::retry`).

pub mod activities;
pub mod customizations;
pub mod idempotency;
pub mod jobs;
pub mod notifications;
pub mod ops;
pub mod organizations;
pub mod plans;
pub mod presets;
pub mod pushes;
pub mod sessions;
pub mod statistics;
pub mod tokens;
pub mod users;

use crate::error::ApiError;

/// Why a store function failed, in the api's terms.
#[derive(Debug)]
pub enum StoreError {
    /// The row, or the parent it needs, does not exist (any more).
    NotFound {
        /// What is missing (`organization`, `user`).
        what: &'static str,
        /// The input that named it, when one did.
        field: Option<&'static str>,
    },
    /// A value that must be unique is already taken.
    Taken {
        /// The stable code (`email_taken`).
        code: &'static str,
        /// The input holding the value.
        field: &'static str,
        /// What is taken, for the message.
        message: &'static str,
    },
    /// A concurrent transaction got in the way (serialization failure,
    /// deadlock): the whole request may run again.
    Retry,
    /// Anything else (unreachable database, a bug): logged, answered 503 or 500.
    Database(sqlx::Error),
}

/// A store function's result.
pub type StoreResult<T> = Result<T, StoreError>;

/// The unique indexes a client's input can collide with: the constraint,
/// the input field, the code and the message of the 409.
const UNIQUE: [(&str, &str, &str, &str); 5] = [
    (
        "users_email",
        "email",
        "email_taken",
        "another user already has this address",
    ),
    (
        "organizations_external_id_key",
        "external_id",
        "external_id_taken",
        "an organization already has this external id",
    ),
    (
        "plans_code_key",
        "code",
        "plan_code_taken",
        "a plan already has this code",
    ),
    (
        "sync_settings_presets_group",
        "name",
        "group_taken",
        "the organization already has a group of this name",
    ),
    (
        "organizations_one_default",
        "is_default",
        "default_taken",
        "there is already a default organization",
    ),
];

/// The parents a row points to, by the column naming them: a foreign-key
/// violation on one means the parent was deleted meanwhile.
const PARENTS: [(&str, &str); 6] = [
    ("pusher_user_id", "user"),
    ("organization_id", "organization"),
    ("user_id", "user"),
    ("plan_id", "plan"),
    ("preset_id", "preset"),
    ("push_id", "push"),
];

/// PostgreSQL's `serialization_failure` and `deadlock_detected`.
const RETRY_CODES: [&str; 2] = ["40001", "40P01"];

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let Some(database) = error.as_database_error() else {
            return Self::Database(error);
        };
        let code = database.code().unwrap_or_default();
        let constraint = database.constraint().unwrap_or_default();
        if RETRY_CODES.contains(&code.as_ref()) {
            tracing::info!(code = %code, "A concurrent transaction got in the way; the request runs again.");
            return Self::Retry;
        }
        if database.is_unique_violation()
            && let Some((_, field, code, message)) = UNIQUE.iter().find(|(name, ..)| *name == constraint)
        {
            return Self::Taken { code, field, message };
        }
        if database.is_foreign_key_violation()
            && let Some((column, what)) = PARENTS
                .iter()
                .find(|(column, _)| constraint.ends_with(&format!("_{column}_fkey")))
        {
            return Self::NotFound {
                what,
                field: Some(column),
            };
        }
        Self::Database(error)
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound { what, .. } => write!(formatter, "the {what} does not exist (any more)"),
            Self::Taken { message, .. } => formatter.write_str(message),
            Self::Retry => formatter.write_str("a concurrent transaction got in the way"),
            Self::Database(error) => error.fmt(formatter),
        }
    }
}

impl StoreError {
    /// A row that is not there.
    pub fn not_found(what: &'static str) -> Self {
        Self::NotFound { what, field: None }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { what, field } => {
                let answer = ApiError::not_found(what);
                match field {
                    Some(field) => answer.on_field(field),
                    None => answer,
                }
            }
            StoreError::Taken { code, field, message } => ApiError::conflict(code, message).on_field(field),
            StoreError::Retry => ApiError::concurrent_update(),
            StoreError::Database(error) => ApiError::from_database(error),
        }
    }
}

/// A page of a keyset list: how many rows of `from` match the `WHERE` that
/// `filter` pushes, and the rows of `page` among them, `columns` with the
/// page's keys (for `Page::finish`).
async fn counted_page(
    pool: &sqlx::PgPool,
    columns: &str,
    from: &str,
    filter: impl Fn(&mut sqlx::QueryBuilder<'_, sqlx::Postgres>),
    page: &crate::routes::list::Page,
) -> StoreResult<(i64, Vec<sqlx::postgres::PgRow>)> {
    let mut counting = sqlx::QueryBuilder::new(format!("SELECT count(*) FROM {from}"));
    filter(&mut counting);
    let total: i64 = counting.build_query_scalar().fetch_one(pool).await?;
    let mut listing = sqlx::QueryBuilder::new(format!("SELECT {columns}{} FROM {from}", page.keys()));
    filter(&mut listing);
    page.push_seek(&mut listing);
    page.push_order(&mut listing);
    let rows = listing.build().fetch_all(pool).await?;
    Ok((total, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parent_column_is_found_before_a_shorter_one_it_ends_with() {
        // `pusher_user_id` ends with `user_id`: the longer name comes first.
        for (index, (column, _)) in PARENTS.iter().enumerate() {
            for (earlier, _) in &PARENTS[..index] {
                assert!(!column.ends_with(earlier), "{earlier} hides {column}");
            }
        }
    }
}
