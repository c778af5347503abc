//! The OpenAPI document's frame; paths and schemas are added by the router in `lib.rs`.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(title = "macpool", description = "Cluster-wide MAC address authority. Every request needs `Authorization: Bearer <token>`; errors are RFC 9457 problem+json."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "pools"), (name = "leases"), (name = "holds"), (name = "history"), (name = "tokens"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
