//! Keyset (seek) pagination, shared by every list: `sort` (a column of the
//! list's allowed set; `-column` is shorthand for `order=desc`), `order`
//! (`asc` or `desc`), `page_size` (1-500, default 50) and `cursor` (where the
//! previous page ended, as that page's `next_cursor` gave it).
//!
//! Rows are ordered by `(column, id)`, both in the same direction, with NULLs
//! above every value (PostgreSQL's own rule: last ascending, first
//! descending). Every row therefore has exactly one place, and a page starts
//! strictly after the last row of the previous one: ties and NULLs are walked
//! exactly once, and rows added or removed between pages shift nothing.
//!
//! A cursor is base64url (no padding) of a small JSON document (the last
//! row's sort value and id, and a digest of the list, sort, order and filters
//! it was made for) followed by a check digest. A cursor that does not
//! decode, fails its check, or was made for another list, sort, order or set
//! of filters answers 400 naming `cursor`. The check is not a secret and
//! need not be: the caller's role and the filters apply to every page, so a
//! forged cursor can only move where a page starts among rows the caller may
//! see anyway.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{FromRow, Postgres, QueryBuilder, Row, postgres::PgRow};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// The default and the largest `page_size`.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// The largest `page_size`.
pub const MAX_PAGE_SIZE: i64 = 500;

/// How a sort column's values are read back from a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Time,
    Bool,
    Int,
}

/// A column a list may be sorted by.
#[derive(Debug)]
pub struct Column {
    /// What `sort` names it.
    pub name: &'static str,
    /// The SQL expression it sorts by (never the caller's text).
    pub sql: &'static str,
    pub kind: Kind,
    /// Whether the expression can be NULL.
    pub nullable: bool,
}

/// A column, for a spec's `columns`.
pub const fn column(name: &'static str, sql: &'static str, kind: Kind, nullable: bool) -> Column {
    Column {
        name,
        sql,
        kind,
        nullable,
    }
}

/// A list's sortable columns and defaults.
#[derive(Debug)]
pub struct Spec {
    /// The list's name, part of its cursors.
    pub list: &'static str,
    pub columns: &'static [Column],
    /// The SQL expression of the row's unique id, the tie-breaker.
    pub id_sql: &'static str,
    /// The column sorted by when `sort` is absent.
    pub default_sort: &'static str,
    /// The order when `order` is absent.
    pub default_order: Order,
}

/// A sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
    fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// The paging parameters as the caller sent them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Params<'a> {
    pub sort: Option<&'a str>,
    pub order: Option<&'a str>,
    pub page_size: Option<&'a str>,
    pub cursor: Option<&'a str>,
}

/// A value bound to the seek condition.
#[derive(Debug, Clone)]
enum Bound {
    Text(String),
    Time(DateTime<Utc>),
    Bool(bool),
    Int(i64),
}

/// One page's request, checked: its column, order, size and where it starts.
#[derive(Debug)]
pub struct Page {
    spec: &'static Spec,
    column: &'static Column,
    order: Order,
    size: i64,
    after: Option<(Option<Bound>, Uuid)>,
    context: String,
}

/// What a cursor holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Token {
    /// The digest of the list, sort, order and filters.
    c: String,
    /// The last row's sort value.
    v: Value,
    /// The last row's id.
    i: Uuid,
}

const CHECK_LEN: usize = 8;

fn check(payload: &[u8]) -> [u8; CHECK_LEN] {
    let digest = Sha256::new()
        .chain_update(b"syncfleet list cursor v1\0")
        .chain_update(payload)
        .finalize();
    let mut check = [0; CHECK_LEN];
    check.copy_from_slice(&digest[..CHECK_LEN]);
    check
}

fn bad_cursor(message: &str) -> ApiError {
    ApiError::invalid("cursor", format!("{message}: start again without a cursor"))
}

/// Parses a list's integer parameter (`page_size`, `rows`) within `range`,
/// naming it when it is not one.
pub fn integer(field: &'static str, raw: &str, range: std::ops::RangeInclusive<i64>) -> Result<i64, ApiError> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|value| range.contains(value))
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                format!(
                    "{field} must be an integer from {} to {}, got {raw:?}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// Parses a boolean filter (`true` or `false`), naming it otherwise.
pub fn boolean(field: &'static str, raw: &str) -> Result<bool, ApiError> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::invalid(
            field,
            format!("{field} is true or false, got {raw:?}"),
        )),
    }
}

/// Parses a point in time (RFC 3339, e.g. `2026-11-22T08:30:00Z`), naming
/// the field; years outside 1-9999 are refused rather than sent to the
/// database.
pub fn time(field: &'static str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    use chrono::Datelike;
    DateTime::parse_from_rfc3339(raw.trim())
        .ok()
        .map(|time| time.with_timezone(&Utc))
        .filter(|time| (1..=9999).contains(&time.year()))
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                format!("{field} must be an RFC 3339 date and time such as 2026-11-22T08:30:00Z, got {raw:?}"),
            )
        })
}

/// Parses a value of a text enum filter, naming the field and the values it takes.
pub fn one_of<T: std::str::FromStr + std::fmt::Display>(
    field: &'static str,
    raw: &str,
    all: &[T],
) -> Result<T, ApiError> {
    raw.parse().map_err(|_| {
        let values: Vec<String> = all.iter().map(ToString::to_string).collect();
        ApiError::invalid(
            field,
            format!("{raw:?} is not a {field}: use one of {}", values.join(", ")),
        )
    })
}

/// A `since` (included) and `until` (excluded) filter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Period {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// Checks `since` and `until` (RFC 3339; `until` after `since`).
pub fn period(since: Option<&str>, until: Option<&str>) -> Result<Period, ApiError> {
    let since = since.map(|raw| time("since", raw)).transpose()?;
    let until = until.map(|raw| time("until", raw)).transpose()?;
    if let (Some(since), Some(until)) = (since, until)
        && until <= since
    {
        return Err(ApiError::invalid("until", "until must be after since"));
    }
    Ok(Period { since, until })
}

impl Spec {
    /// Checks the paging parameters. `filters` is a canonical rendering of
    /// the list's filters: a cursor made under other filters is refused.
    pub fn page(&'static self, params: Params<'_>, filters: &str) -> Result<Page, ApiError> {
        let sort = params.sort.unwrap_or(self.default_sort);
        let (name, descending) = match sort.strip_prefix('-') {
            Some(name) => (name, true),
            None => (sort, false),
        };
        let column = self.columns.iter().find(|column| column.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.columns.iter().map(|column| column.name).collect();
            ApiError::invalid(
                "sort",
                format!("cannot sort by {sort:?}: use one of {}", names.join(", ")),
            )
        })?;
        let order = match (params.order, descending) {
            (None, false) => self.default_order,
            (None, true) | (Some("desc"), _) => Order::Desc,
            (Some("asc"), false) => Order::Asc,
            (Some("asc"), true) => {
                return Err(ApiError::invalid(
                    "order",
                    format!("sort={sort} already asks for descending order"),
                ));
            }
            (Some(other), _) => {
                return Err(ApiError::invalid(
                    "order",
                    format!("order is asc or desc, got {other:?}"),
                ));
            }
        };
        let size = match params.page_size {
            Some(raw) => integer("page_size", raw, 1..=MAX_PAGE_SIZE)?,
            None => DEFAULT_PAGE_SIZE,
        };
        let context = {
            let digest = Sha256::new()
                .chain_update(self.list)
                .chain_update(b"\0")
                .chain_update(column.name)
                .chain_update(b"\0")
                .chain_update(order.as_str())
                .chain_update(b"\0")
                .chain_update(filters)
                .finalize();
            digest[..8].iter().map(|byte| format!("{byte:02x}")).collect::<String>()
        };
        let mut page = Page {
            spec: self,
            column,
            order,
            size,
            after: None,
            context,
        };
        if let Some(raw) = params.cursor.filter(|raw| !raw.is_empty()) {
            page.after = Some(page.decode(raw)?);
        }
        Ok(page)
    }
}

impl Page {
    fn decode(&self, raw: &str) -> Result<(Option<Bound>, Uuid), ApiError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(raw.trim())
            .map_err(|_| bad_cursor("cursor is not a cursor this API gave out"))?;
        if bytes.len() <= CHECK_LEN {
            return Err(bad_cursor("cursor is not a cursor this API gave out"));
        }
        let (payload, digest) = bytes.split_at(bytes.len() - CHECK_LEN);
        if check(payload) != digest {
            return Err(bad_cursor("cursor was altered"));
        }
        let token: Token =
            serde_json::from_slice(payload).map_err(|_| bad_cursor("cursor is not a cursor this API gave out"))?;
        if token.c != self.context {
            return Err(bad_cursor("cursor was made for another list, sort, order or filters"));
        }
        let column = self.column;
        let mismatch = || bad_cursor("cursor does not fit this list's sort");
        let bound = match (&token.v, column.kind) {
            (Value::Null, _) if column.nullable => None,
            (Value::String(text), Kind::Text) => Some(Bound::Text(text.clone())),
            (Value::String(text), Kind::Time) => Some(Bound::Time(
                DateTime::parse_from_rfc3339(text)
                    .map_err(|_| mismatch())?
                    .with_timezone(&Utc),
            )),
            (Value::Bool(value), Kind::Bool) => Some(Bound::Bool(*value)),
            (Value::Number(number), Kind::Int) => Some(Bound::Int(number.as_i64().ok_or_else(mismatch)?)),
            _ => return Err(mismatch()),
        };
        Ok((bound, token.i))
    }

    fn encode(&self, value: Value, id: Uuid) -> String {
        let token = Token {
            c: self.context.clone(),
            v: value,
            i: id,
        };
        // A struct of strings, a JSON value and a UUID always serializes.
        let mut bytes = serde_json::to_vec(&token).unwrap_or_default();
        let digest = check(&bytes);
        bytes.extend_from_slice(&digest);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The columns to add to the SELECT list: the row's sort value and id,
    /// which the next cursor is made of. Starts with a comma.
    pub fn keys(&self) -> String {
        format!(
            ", to_jsonb({}) AS list_sort_value, {} AS list_row_id",
            self.column.sql, self.spec.id_sql
        )
    }

    /// Appends ` AND (...)`: the rows strictly after the cursor's, in this
    /// order (nothing without a cursor). Goes after the list's own WHERE.
    pub fn push_seek(&self, builder: &mut QueryBuilder<'_, Postgres>) {
        let Some((bound, id)) = &self.after else { return };
        let (column, key) = (self.column.sql, self.spec.id_sql);
        match (bound, self.order) {
            (Some(bound), order) => {
                let operator = if order == Order::Asc { ">" } else { "<" };
                builder.push(format!(" AND (({column}, {key}) {operator} ("));
                match bound {
                    Bound::Text(value) => builder.push_bind(value.clone()),
                    Bound::Time(value) => builder.push_bind(*value),
                    Bound::Bool(value) => builder.push_bind(*value),
                    Bound::Int(value) => builder.push_bind(*value),
                };
                builder.push(", ").push_bind(*id).push(")");
                // NULLs come after every value ascending.
                if order == Order::Asc && self.column.nullable {
                    builder.push(format!(" OR {column} IS NULL"));
                }
                builder.push(")");
            }
            (None, Order::Asc) => {
                builder
                    .push(format!(" AND ({column} IS NULL AND {key} > "))
                    .push_bind(*id)
                    .push(")");
            }
            (None, Order::Desc) => {
                builder
                    .push(format!(" AND ({column} IS NOT NULL OR {key} < "))
                    .push_bind(*id)
                    .push(")");
            }
        }
    }

    /// Appends ` ORDER BY ... LIMIT n`: one row more than the page, to tell
    /// whether another page follows.
    pub fn push_order(&self, builder: &mut QueryBuilder<'_, Postgres>) {
        let (direction, nulls) = match self.order {
            Order::Asc => ("ASC", "LAST"),
            Order::Desc => ("DESC", "FIRST"),
        };
        builder
            .push(format!(
                " ORDER BY {} {direction} NULLS {nulls}, {} {direction} LIMIT ",
                self.column.sql, self.spec.id_sql
            ))
            .push_bind(self.size + 1);
    }

    /// Reads the rows of a query built with [`Page::keys`],
    /// [`Page::push_seek`] and [`Page::push_order`]: the page's items and
    /// the cursor of the next page, if there is one.
    pub fn finish<T>(&self, rows: Vec<PgRow>) -> Result<(Vec<T>, Option<String>), ApiError>
    where
        T: for<'r> FromRow<'r, PgRow>,
    {
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > self.size;
        let mut items = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in rows.iter().take(usize::try_from(self.size).unwrap_or(usize::MAX)) {
            items.push(T::from_row(row)?);
            last = Some(row);
        }
        let next = match (more, last) {
            (true, Some(row)) => Some(
                self.encode(
                    row.try_get::<Option<Value>, _>("list_sort_value")?
                        .unwrap_or(Value::Null),
                    row.try_get("list_row_id")?,
                ),
            ),
            _ => None,
        };
        Ok((items, next))
    }
}

/// A list, named by a type: its spec gives its paging parameters' checks
/// and their documentation.
pub trait Listing: 'static {
    const SPEC: &'static Spec;
}

/// The paging parameters every list takes (`sort`, `order`, `page_size`,
/// `cursor`), read from the query string apart from the list's own filters
/// (see `crate::extract::ListQuery`) and documented from the list's spec, so
/// that the document names exactly the columns it sorts by.
#[derive(Debug)]
pub struct PageParams<L> {
    pub sort: Option<String>,
    pub order: Option<String>,
    pub page_size: Option<String>,
    pub cursor: Option<String>,
    list: std::marker::PhantomData<fn() -> L>,
}

impl<L> Default for PageParams<L> {
    fn default() -> Self {
        Self {
            sort: None,
            order: None,
            page_size: None,
            cursor: None,
            list: std::marker::PhantomData,
        }
    }
}

impl<L> PageParams<L> {
    /// The parameter's slot, for a query-string key that is a paging
    /// parameter; `None` for a filter's.
    pub fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        match key {
            "sort" => Some(&mut self.sort),
            "order" => Some(&mut self.order),
            "page_size" => Some(&mut self.page_size),
            "cursor" => Some(&mut self.cursor),
            _ => None,
        }
    }
}

impl<L: Listing> PageParams<L> {
    /// Checks the parameters against the list's spec; `filters` is a
    /// canonical rendering of the list's filters (a cursor made under
    /// others is refused).
    pub fn page(&self, filters: &str) -> Result<Page, ApiError> {
        L::SPEC.page(
            Params {
                sort: self.sort.as_deref(),
                order: self.order.as_deref(),
                page_size: self.page_size.as_deref(),
                cursor: self.cursor.as_deref(),
            },
            filters,
        )
    }
}

impl<L: Listing> utoipa::IntoParams for PageParams<L> {
    fn into_params(
        parameter_in: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::{
            ObjectBuilder, Required, Type,
            path::{ParameterBuilder, ParameterIn},
        };
        let spec = L::SPEC;
        let names: Vec<&str> = spec.columns.iter().map(|column| column.name).collect();
        let columns: Vec<String> = names
            .iter()
            .map(|name| match *name == spec.default_sort {
                true => format!("`{name}` (default)"),
                false => format!("`{name}`"),
            })
            .collect();
        let (default_order, other_order) = match spec.default_order {
            Order::Asc => ("asc", "desc"),
            Order::Desc => ("desc", "asc"),
        };
        let parameter = |name: &str, description: String, schema: ObjectBuilder| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(parameter_in().unwrap_or(ParameterIn::Query))
                .required(Required::False)
                .description(Some(description))
                .schema(Some(schema.build()))
                .build()
        };
        let text = || ObjectBuilder::new().schema_type(Type::String);
        vec![
            parameter(
                "sort",
                format!("The column: {}; `-column` means `order=desc`.", columns.join(", ")),
                text().pattern(Some(format!("^-?({})$", names.join("|")))),
            ),
            parameter(
                "order",
                format!("`{default_order}` (default) or `{other_order}`."),
                text().pattern(Some("^(asc|desc)$")),
            ),
            parameter(
                "page_size",
                format!("1 to {MAX_PAGE_SIZE}, default {DEFAULT_PAGE_SIZE}."),
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(MAX_PAGE_SIZE)),
            ),
            parameter("cursor", "The previous page's `next_cursor`.".to_owned(), text()),
        ]
    }
}

/// A page of a list, as every list answers it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Listed<T> {
    pub items: Vec<T>,
    /// The cursor of the next page; null on the last one.
    pub next_cursor: Option<String>,
    /// How many rows match the filters, on every page.
    pub total: i64,
}
