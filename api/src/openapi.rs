//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations as the router is built (so a route cannot exist without its
//! description), then completed here with what every operation shares: the
//! bearer scheme, the error shape, the outage answer (503 with
//! `Retry-After`) and the `Idempotency-Key` header of the keyed routes.

use utoipa::{
    OpenApi, ToSchema,
    openapi::{
        self, Content, ContentBuilder, HttpMethod, ObjectBuilder, Ref, RefOr, Required, ResponseBuilder, Type,
        header::HeaderBuilder,
        path::{ParameterBuilder, ParameterIn},
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

use crate::idempotency;

/// The schema of a text enum, its values spelled once where it is declared
/// (the domain's enums bring their own schemas: see `common::domain`).
fn text_enum(values: impl IntoIterator<Item = &'static str>) -> openapi::Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .build()
}

/// The refresh tokens `PUT /v1/users/{id}/credentials/{kind}` stores.
pub fn token_kind() -> openapi::Object {
    text_enum(
        crate::routes::configuration::TOKEN_KINDS
            .iter()
            .map(|kind| kind.as_str()),
    )
}

/// The credentials `DELETE /v1/users/{id}/credentials/{kind}` forgets.
pub fn forgettable_kind() -> openapi::Object {
    text_enum(
        crate::routes::configuration::FORGETTABLE_KINDS
            .iter()
            .map(|kind| kind.as_str()),
    )
}

/// The error body every failing request answers.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable, for clients to branch on: `invalid`, `not_found`,
    /// `unauthorized`, `forbidden`, `too_many_requests`, `conflict` codes,
    /// `unavailable`, `outcome_unknown` and `timeout` (503), `too_large`
    /// (413), `idempotency_key_reused` (422), `idempotency_key_in_progress`
    /// (409)...
    pub code: String,
    /// For people.
    pub message: String,
    /// The offending field or parameter, when there is one.
    pub field: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Syncfleet API",
        description = "Administration of organizations and users, their actions, statistics and activity; \
                       the add-in users' customization and notifications. Every route takes a bearer token.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(ErrorBody, ErrorDetail))
)]
struct Base;

/// The document the routers' annotations are added to.
pub fn base() -> openapi::OpenApi {
    Base::openapi()
}

const SCHEME: &str = "bearer";

/// What the 503 answer says, for every operation.
const OUTAGE: &str = "The database or the broker is unreachable (`unavailable`): nothing was changed, retry after \
    `Retry-After` seconds. `outcome_unknown`: the connection was lost while the change was committed, so it may \
    have taken effect; a retry with the same `Idempotency-Key` is safe. `timeout`: the request ran longer than the \
    api lets one run and was stopped, with the same uncertainty and the same safe retry.";

/// What the `Idempotency-Key` header does, on the routes that take it.
const IDEMPOTENCY: &str = "Optional, 1 to 255 printable ASCII characters, chosen by the client (a UUID, say). \
    A retry with the same key and the same request (method, path, query and body) within 24 hours answers the \
    first answer (with `Idempotency-Replayed: true`) and does nothing again, even when the first answer was lost; \
    the same key with another request answers 422 `idempotency_key_reused`; a retry sent while the first runs waits \
    for it; 409 `idempotency_key_in_progress` when the first took effect but no answer could be kept. Keys are scoped to the caller's \
    token. A request that changed nothing (a 4xx, or a 503 `unavailable`) keeps no key: its retry runs.";

/// Adds the bearer scheme to every operation, the error answers every
/// operation can give (the shared error shape; 401 for a missing token; 503
/// with `Retry-After` for an outage), and the `Idempotency-Key` header to
/// the keyed routes.
pub fn finish(mut document: openapi::OpenApi) -> openapi::OpenApi {
    let components = document.components.get_or_insert_with(openapi::Components::new);
    components.add_security_scheme(
        SCHEME,
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    document.security = Some(vec![SecurityRequirement::new(SCHEME, Vec::<String>::new())]);
    let error = || -> Content {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build()
    };
    for (path, item) in document.paths.paths.iter_mut() {
        if let Some(operation) = item.post.as_mut()
            && idempotency::KEYED_ROUTES.contains(&path.as_str())
        {
            let key = ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[ -~]{1,255}$"))
                .build();
            operation.parameters.get_or_insert_with(Vec::new).push(RefOr::T(
                ParameterBuilder::new()
                    .name(idempotency::HEADER_NAME)
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(IDEMPOTENCY))
                    .schema(Some(key))
                    .build(),
            ));
        }
        for method in [
            HttpMethod::Get,
            HttpMethod::Put,
            HttpMethod::Post,
            HttpMethod::Delete,
            HttpMethod::Patch,
        ] {
            let operation = match method {
                HttpMethod::Get => item.get.as_mut(),
                HttpMethod::Put => item.put.as_mut(),
                HttpMethod::Post => item.post.as_mut(),
                HttpMethod::Delete => item.delete.as_mut(),
                HttpMethod::Patch => item.patch.as_mut(),
                _ => None,
            };
            let Some(operation) = operation else { continue };
            let responses = &mut operation.responses.responses;
            for (status, description) in [
                ("401", "No valid bearer token."),
                ("503", OUTAGE),
                ("default", "The request failed; the body says why."),
            ] {
                responses.entry(status.to_owned()).or_insert_with(|| {
                    let mut response = ResponseBuilder::new()
                        .description(description)
                        .content("application/json", error());
                    if status == "503" {
                        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).build();
                        response = response.header(
                            "Retry-After",
                            HeaderBuilder::new()
                                .schema(Some(seconds))
                                .description(Some("Seconds to wait before retrying."))
                                .build(),
                        );
                    }
                    RefOr::T(response.build())
                });
            }
        }
    }
    document
}
