//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations as the router is built (so a route cannot exist without its
//! description), then completed here with what every operation shares: the
//! bearer scheme and the error shape.

use utoipa::{
    OpenApi, ToSchema,
    openapi::{
        self, Content, ContentBuilder, HttpMethod, Ref, RefOr, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

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
    /// `unauthorized`, `forbidden`, `too_many_requests`, `conflict` codes...
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

/// Adds the bearer scheme to every operation, and the error answers every
/// operation can give (the shared error shape; 401 for a missing token).
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
    for item in document.paths.paths.values_mut() {
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
                ("default", "The request failed; the body says why."),
            ] {
                responses.entry(status.to_owned()).or_insert_with(|| {
                    RefOr::T(
                        ResponseBuilder::new()
                            .description(description)
                            .content("application/json", error())
                            .build(),
                    )
                });
            }
        }
    }
    document
}
