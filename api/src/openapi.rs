//! The OpenAPI 3.1 document, generated from `routes()`: every path parameter named in a
//! route's template, the query parameters and headers the handlers read, the JSON body
//! of each write, and problem+json errors. Schemathesis fuzzes the api from it
//! (`scripts/schemathesis.sh`), so it must say what the handlers accept.

use crate::views;
use crate::RouteSpec;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref,
    Required, ResponseBuilder,
};

/// The JSON body a write takes, by method and path template.
fn body_of(method: &str, path: &str) -> Option<&'static str> {
    Some(match (method, path) {
        ("post", "/api/v1/signup") => "SignupBody",
        ("post", "/api/v1/login") => "LoginBody",
        ("post", "/api/v1/auth/refresh-token") => "RefreshBody",
        ("post", "/api/v1/theaters") => "TheaterBody",
        ("post", "/api/v1/shows") => "ShowBody",
        ("post", "/api/v1/shows/{id}/seats/lock") => "LockBody",
        ("post", "/api/v1/users/{id}/bookings/init") => "InitBody",
        ("post", "/api/v1/bookings/{booking_id}/payment") => "PaymentBody",
        _ => return None,
    })
}

/// Query parameters of a read, by path template: (name, schema).
fn query_of(path: &str) -> Vec<(&'static str, ObjectBuilder)> {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let mut params = vec![(
        "consistency",
        string().enum_values(Some(["linearizable", "session", "stale"])),
    )];
    let list = matches!(
        path,
        "/api/v1/shows" | "/api/v1/theaters" | "/api/v1/bookings"
    );
    if list {
        params.push((
            "limit",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(100)),
        ));
        params.push(("cursor", string()));
    }
    if matches!(path, "/api/v1/shows" | "/api/v1/theaters") {
        params.push(("city", string()));
        params.push(("location", string()));
    }
    if path == "/api/v1/shows" {
        params.push((
            "date",
            string().format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Date,
            ))),
        ));
        params.push(("search", string()));
    }
    params
}

/// `{name}` segments of a path template.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

fn problem_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Object)
                        .property("type", ObjectBuilder::new().schema_type(Type::String))
                        .property("title", ObjectBuilder::new().schema_type(Type::String))
                        .property("status", ObjectBuilder::new().schema_type(Type::Integer))
                        .property("detail", ObjectBuilder::new().schema_type(Type::String))
                        .required("title")
                        .required("status"),
                ))
                .build(),
        )
        .build()
}

/// The document for `routes`.
pub fn document(routes: &[RouteSpec]) -> OpenApi {
    let mut paths = PathsBuilder::new();
    for route in routes {
        let method = match route.method {
            "post" => HttpMethod::Post,
            "delete" => HttpMethod::Delete,
            _ => HttpMethod::Get,
        };
        let mut operation = OperationBuilder::new()
            .summary(Some(route.summary))
            .response(
                "200",
                ResponseBuilder::new().description("success (201/202/204 where the contract says)"),
            )
            .response(
                "default",
                problem_response("application/problem+json error"),
            );
        for name in path_params(route.path) {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        if route.method == "get" && route.path.starts_with("/api/v1/") {
            for (name, schema) in query_of(route.path) {
                operation = operation.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Query)
                        .required(Required::False)
                        .schema(Some(schema)),
                );
            }
        }
        if route.method == "get" && route.path == "/api/v1/shows/{id}/seats" {
            operation = operation
                .parameter(
                    ParameterBuilder::new()
                        .name("If-None-Match")
                        .parameter_in(ParameterIn::Header)
                        .required(Required::False)
                        .description(Some(
                            "the ETag of a seat map the caller holds: 304 while the map is \
                             unchanged (tags the api did not issue never match)",
                        ))
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
                )
                .response(
                    "304",
                    ResponseBuilder::new().description(
                        "the map is still the one If-None-Match names (with its ETag and \
                         the read's X- headers, no body)",
                    ),
                );
        }
        if route.method != "get" {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name("Idempotency-Key")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(
                        "1-128 printable ASCII characters; a retry with the same key gets \
                         the first answer for at least 24 hours. If the shard already \
                         holds as many keys younger than that as it may, a new key is \
                         refused with 503 and Retry-After (problem type \
                         idempotency-table-full) rather than an old one forgotten",
                    ))
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some("^[\\x21-\\x7e]{1,128}$")),
                    )),
            );
        }
        if let Some(schema) = body_of(route.method, route.path) {
            operation = operation.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(schema)))
                            .build(),
                    )
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        if route.auth {
            operation = operation
                .description(Some("Requires `Authorization: Bearer <access token>`."))
                .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
                .response("401", problem_response("missing or invalid token"))
                .response("403", problem_response("the token's role may not do this"));
        }
        paths = paths.path(route.path, PathItem::new(method, operation));
    }
    let components = ComponentsBuilder::new()
        .schema_from::<views::SignupBody>()
        .schema_from::<views::LoginBody>()
        .schema_from::<views::RefreshBody>()
        .schema_from::<views::RowBody>()
        .schema_from::<views::ScreenBody>()
        .schema_from::<views::TheaterBody>()
        .schema_from::<views::PricesBody>()
        .schema_from::<views::ShowBody>()
        .schema_from::<views::LockBody>()
        .schema_from::<views::InitBody>()
        .schema_from::<views::PaymentBody>()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Seat ledger booking API")
                .version("1")
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_parameter_and_write_body_is_documented() {
        let routes = crate::routes();
        let document = serde_json::to_value(document(&routes)).unwrap();
        for route in &routes {
            let operation = &document["paths"][route.path][route.method];
            let params = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for name in path_params(route.path) {
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{} {}: path parameter {name} is not documented",
                    route.method,
                    route.path
                );
            }
            if let Some(schema) = body_of(route.method, route.path) {
                assert!(
                    document["components"]["schemas"][schema].is_object(),
                    "{schema} is referenced but not in components"
                );
            }
        }
        // A route template with no documented body for a write would be a gap.
        assert_eq!(
            document["paths"]["/api/v1/shows/{id}/seats/lock"]["post"]["requestBody"]["content"]
                ["application/json"]["schema"]["$ref"],
            "#/components/schemas/LockBody"
        );
    }
}
