//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi};

/// The document's frame: info, tags, security scheme and operation ids. Its paths are not
/// listed here: they come from the routers themselves (`routes::all`, built with utoipa-axum's
/// `OpenApiRouter`), so registering a handler is what documents it; see [`document`].
#[derive(OpenApi)]
#[openapi(
    info(title = "OCart API", description = "Cart capture, recovery, funnels and A/B tests for online stores."),
    components(schemas(crate::error::Problem, crate::error::ProblemField)),
    tags((name = "checkout"), (name = "carts"), (name = "settings"), (name = "tokens"), (name = "privacy"), (name = "recovery"), (name = "orders"), (name = "reports"), (name = "audit"), (name = "system"), (name = "webhooks"), (name = "links"))
)]
pub struct ApiDoc;

/// The OpenAPI 3.1 document of `routed`, the paths the routers registered: the frame of
/// [`ApiDoc`], the bearer scheme, unique operation ids, and the error answers every route
/// shares as problem documents.
pub fn document(routed: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(routed);
    for modifier in [&BearerAuth as &dyn Modify, &OperationIds, &ErrorAnswers] {
        modifier.modify(&mut doc);
    }
    doc
}

/// The JSON `null`: a field that must be absent or null (one side of a one-of).
pub struct Null;

impl utoipa::PartialSchema for Null {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Null)
            .into()
    }
}

impl utoipa::ToSchema for Null {}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Operation ids are the handler's name by default, which repeats across areas (`list`,
/// `show`, `create`); client generators and validators need them unique, so each is made from
/// the method and the path instead, unique by construction: `get_carts`,
/// `get_carts_by_id`, `post_carts_by_id_abandon`, `get_recovery_coupons`.
struct OperationIds;

/// The operation id of `method path`.
pub fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for segment in path
        .trim_start_matches("/ocart/v1")
        .split('/')
        .filter(|s| !s.is_empty())
    {
        id.push('_');
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(param) => {
                id.push_str("by_");
                id.push_str(param);
            }
            None => id.push_str(&segment.replace(['-', '.'], "_")),
        }
    }
    id
}

impl Modify for OperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, operation) in [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("options", &mut item.options),
                ("head", &mut item.head),
                ("patch", &mut item.patch),
                ("trace", &mut item.trace),
            ] {
                if let Some(operation) = operation {
                    operation.operation_id = Some(operation_id(method, path));
                }
            }
        }
    }
}

/// The answers an operation can give because of what it takes, whatever its handler does:
/// a bearer-authenticated route answers 401 and 403; a JSON body 400 (malformed), 413 (over the
/// limit), 415 (another Content-Type) and 422 (a field that does not fit); a path or query
/// parameter 422; every route 503 when the request times out or the store is unavailable.
/// Every error answer without a content of its own (the HTML pages of the links have one)
/// is an `application/problem+json` [`Problem`](crate::error::Problem).
struct ErrorAnswers;

impl ErrorAnswers {
    fn shared(operation: &utoipa::openapi::path::Operation) -> Vec<(&'static str, &'static str)> {
        let mut shared = Vec::new();
        if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
            shared.push(("401", "No valid bearer token"));
            shared.push(("403", "The token lacks the capability this route needs"));
        }
        if operation.request_body.is_some() {
            shared.push(("400", "The body is not valid JSON"));
            shared.push(("413", "The body is larger than this route accepts"));
            shared.push((
                "415",
                "The Content-Type is neither application/json nor text/plain",
            ));
            shared.push(("422", "Invalid fields, each named"));
        }
        if operation.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
            shared.push(("422", "Invalid parameters, each named"));
        }
        shared.push((
            "503",
            "The request timed out or the store is unavailable; retry after Retry-After",
        ));
        shared
    }
}

impl Modify for ErrorAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let problem = || {
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(Ref::from_schema_name("Problem"))))
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                for (status, description) in Self::shared(operation) {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            RefOr::T(ResponseBuilder::new().description(description).build())
                        });
                }
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if !(status.starts_with('4') || status.starts_with('5')) {
                        continue;
                    }
                    if let Some(json) = response.content.shift_remove("application/json") {
                        response
                            .content
                            .insert("application/problem+json".to_owned(), json);
                    }
                    if response.content.is_empty() {
                        response
                            .content
                            .insert("application/problem+json".to_owned(), problem());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::operation_id;

    #[test]
    fn operation_ids_follow_the_method_and_path() {
        let cases = [
            ("get", "/ocart/v1/carts", "get_carts"),
            ("get", "/ocart/v1/carts/{id}", "get_carts_by_id"),
            (
                "post",
                "/ocart/v1/carts/{id}/abandon",
                "post_carts_by_id_abandon",
            ),
            ("get", "/metrics", "get_metrics"),
            (
                "post",
                "/ocart/v1/webhooks/woocommerce",
                "post_webhooks_woocommerce",
            ),
        ];
        for (method, path, want) in cases {
            assert_eq!(operation_id(method, path), want, "{method} {path}");
        }
    }
}
