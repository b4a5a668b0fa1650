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
    tags((name = "checkout"), (name = "carts"), (name = "settings"), (name = "tokens"), (name = "privacy"), (name = "recovery"), (name = "orders"), (name = "funnels"), (name = "offers"), (name = "reports"), (name = "audit"), (name = "system"), (name = "gateways"), (name = "webhooks"), (name = "links"), (name = "upsells"), (name = "stats"), (name = "tests"))
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

/// An email address's shape as `domain::Email::parse` checks it: a dot-atom local part, `@`,
/// and a domain of at least two labels (letters, digits, inner hyphens; 1 to 63 each).
const EMAIL: &str = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+";
/// [`EMAIL`] not starting with `+`: where a recipient may be an email address or a phone
/// number, one starting with `+` is read as a phone number (`Core::recipient_hash`).
const EMAIL_NOT_PLUS: &str = "[A-Za-z0-9!#$%&'*/=?^_`{|}~-][A-Za-z0-9!#$%&'*+/=?^_`{|}~-]*(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+";
/// An E.164 phone number (`domain::Phone`).
const PHONE: &str = "\\+[1-9][0-9]{7,14}";
/// The longest email address (`domain::Email`), and the longest part before its `@`
/// (RFC 5321).
const EMAIL_MAX_LEN: usize = 254;
const LOCAL_PART_MAX_LEN: usize = 64;

/// A string matching both `shape` (anchored) and `prefix`, at most [`EMAIL_MAX_LEN`]
/// characters. A JSON Schema object has one `pattern`; two are stated with `allOf`, so the
/// local part's length is stated without look-ahead (which generators do not follow).
fn two_patterns(
    shape: String,
    prefix: String,
    description: &str,
) -> RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
    AllOfBuilder::new()
        .description(Some(description))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(EMAIL_MAX_LEN))
                .pattern(Some(shape)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(prefix)),
        )
        .into()
}

/// An email address: at most 254 characters, at most 64 before the `@`.
pub struct EmailAddress;

impl utoipa::PartialSchema for EmailAddress {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        two_patterns(
            format!("^{EMAIL}$"),
            format!("^[^@]{{1,{LOCAL_PART_MAX_LEN}}}@"),
            "An email address: at most 254 characters, at most 64 before the @.",
        )
    }
}

impl utoipa::ToSchema for EmailAddress {}

/// An email address, or blank (spaces only, or empty): none.
pub struct EmailAddressOrBlank;

impl utoipa::PartialSchema for EmailAddressOrBlank {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        two_patterns(
            format!("^( *|{EMAIL})$"),
            format!("^( *$|[^@]{{1,{LOCAL_PART_MAX_LEN}}}@)"),
            "An email address (at most 254 characters, at most 64 before the @), or blank for none.",
        )
    }
}

impl utoipa::ToSchema for EmailAddressOrBlank {}

/// An email address or an E.164 phone number.
pub struct EmailAddressOrPhone;

impl utoipa::PartialSchema for EmailAddressOrPhone {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        two_patterns(
            format!("^({EMAIL_NOT_PLUS}|{PHONE})$"),
            format!("^([^@]{{1,{LOCAL_PART_MAX_LEN}}}@|\\+)"),
            "An email address (at most 254 characters, at most 64 before the @, not starting with +) or an E.164 phone number (+ then 8 to 15 digits).",
        )
    }
}

impl utoipa::ToSchema for EmailAddressOrPhone {}

/// A sequence's steps as documented: 1 to [`MAX_STEPS`] [`StepBody`]s whose delays can be
/// kept [`MIN_DELAY_MIN`] minutes apart within [`MAX_DELAY_MIN`] minutes of abandonment.
///
/// `domain::recovery::normalise` clamps each delay to 15–10,080 and moves each step to at
/// least 15 minutes after the one before, so step `j` of `n` ends at least `15·(n−1−j)`
/// minutes before the last; it is refused exactly when some step but the last asks for more
/// than `10,080 − 15·(n−1−j)`. That is stated here as one branch per length `n`, each with
/// that maximum on every step's `delay_min` (JSON Schema's `prefixItems`).
///
/// [`StepBody`]: crate::routes::recovery::StepBody
pub struct SequenceSteps;

impl utoipa::PartialSchema for SequenceSteps {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        use ocart_domain::recovery::{MAX_DELAY_MIN, MAX_STEPS, MIN_DELAY_MIN};
        use utoipa::openapi::schema::{
            AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Type,
        };
        let step = || RefOr::Ref(Ref::from_schema_name("StepBody"));
        let mut lengths = OneOfBuilder::new().description(Some(format!(
            "1 to {MAX_STEPS} steps. Each delay is saved clamped to {MIN_DELAY_MIN}–{MAX_DELAY_MIN} \
             minutes and at least {MIN_DELAY_MIN} after the step before, so a step but the last \
             may ask for at most {MAX_DELAY_MIN} − {MIN_DELAY_MIN} × (the steps after it)."
        )));
        for n in 1..=MAX_STEPS {
            let prefix = (0..n - 1).map(|j| {
                let after = i64::try_from(n - 1 - j).unwrap_or(i64::MAX);
                let latest = MAX_DELAY_MIN.saturating_sub(MIN_DELAY_MIN.saturating_mul(after));
                AllOfBuilder::new()
                    .item(step())
                    .item(
                        ObjectBuilder::new().schema_type(Type::Object).property(
                            "delay_min",
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .maximum(Some(latest)),
                        ),
                    )
                    .build()
            });
            lengths = lengths.item(
                ArrayBuilder::new()
                    .items(step())
                    .prefix_items(prefix)
                    .min_items(Some(n))
                    .max_items(Some(n)),
            );
        }
        lengths.into()
    }
}

impl utoipa::ToSchema for SequenceSteps {
    fn schemas(schemas: &mut Vec<(String, RefOr<utoipa::openapi::schema::Schema>)>) {
        type Step = crate::routes::recovery::StepBody;
        schemas.push((
            Step::name().into(),
            <Step as utoipa::PartialSchema>::schema(),
        ));
        Step::schemas(schemas);
    }
}

/// Targeting rules as `domain::offer::Targeting` reads and `validate` checks them: one of
/// `{"all"|"any"|"none": [rules]}` (groups nested at most [`MAX_DEPTH`] deep),
/// `{"cart_min_total": 0..=MAX_AMOUNT}`, `{"product_in_cart": id}` or `{"category_in_cart":
/// slug}` (1 to 200 characters, not blank). Each level of nesting is its own component
/// (`Targeting`, `TargetingLevel2`, …), so the depth is stated without recursion; the bound of
/// 100 rules in all is not stated.
///
/// [`MAX_DEPTH`]: ocart_domain::offer::MAX_DEPTH
pub struct Targeting;

impl Targeting {
    /// The component name of the rules at `level` (1 is the top).
    fn name_of(level: usize) -> String {
        if level == 1 {
            "Targeting".into()
        } else {
            format!("TargetingLevel{level}")
        }
    }

    /// The rules at `level`: groups of the next level (while groups may nest) or predicates.
    fn level(level: usize) -> RefOr<utoipa::openapi::schema::Schema> {
        use ocart_domain::offer::{MAX_CATEGORY_LEN, MAX_DEPTH};
        use utoipa::openapi::schema::{
            AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Type,
        };
        let single = |key: &str, schema: RefOr<utoipa::openapi::schema::Schema>| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(key, schema)
                .required(key)
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        let mut rules = OneOfBuilder::new().description(Some(
            "One rule: a group `{\"all\"|\"any\"|\"none\": [rules]}` (nested at most 4 deep) or a \
             predicate `{\"cart_min_total\": minor units}`, `{\"product_in_cart\": id}`, \
             `{\"category_in_cart\": slug}`.",
        ));
        if level <= MAX_DEPTH {
            for group in ["all", "any", "none"] {
                let items = ArrayBuilder::new()
                    .items(RefOr::Ref(Ref::from_schema_name(Self::name_of(level + 1))));
                rules = rules.item(single(group, items.into()));
            }
        }
        rules
            .item(single(
                "cart_min_total",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(ocart_domain::MAX_AMOUNT))
                    .into(),
            ))
            .item(single(
                "product_in_cart",
                <crate::routes::capture::ProductIdBody as utoipa::PartialSchema>::schema(),
            ))
            .item(single(
                "category_in_cart",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(MAX_CATEGORY_LEN))
                    .pattern(Some("\\S"))
                    .into(),
            ))
            .into()
    }
}

impl utoipa::PartialSchema for Targeting {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        Self::level(1)
    }
}

impl utoipa::ToSchema for Targeting {
    fn schemas(schemas: &mut Vec<(String, RefOr<utoipa::openapi::schema::Schema>)>) {
        for level in 2..=ocart_domain::offer::MAX_DEPTH + 1 {
            schemas.push((Self::name_of(level), Self::level(level)));
        }
    }
}

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

    /// Each length's branch of [`super::SequenceSteps`] bounds each step's delay exactly where
    /// `domain::recovery::normalise` starts refusing it.
    #[test]
    fn the_steps_document_bounds_each_delay_where_normalise_refuses_it() {
        use ocart_domain::recovery::{normalise, Channel, Step, MAX_STEPS};
        let doc = serde_json::to_value(<super::SequenceSteps as utoipa::PartialSchema>::schema())
            .unwrap();
        let branches = doc["oneOf"].as_array().unwrap();
        assert_eq!(branches.len(), MAX_STEPS);
        let step = |delay_min: i64| Step {
            channel: Channel::Email,
            delay_min,
            template: "recovery_email_1".into(),
            coupon: false,
            discount: None,
            ab_test: None,
        };
        for (i, branch) in branches.iter().enumerate() {
            let n = i + 1;
            assert_eq!(
                (branch["minItems"].as_u64(), branch["maxItems"].as_u64()),
                (Some(n as u64), Some(n as u64))
            );
            let prefix = branch["prefixItems"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            assert_eq!(prefix.len(), n - 1, "every step but the last is bounded");
            for (j, item) in prefix.iter().enumerate() {
                let max = item["allOf"][1]["properties"]["delay_min"]["maximum"]
                    .as_i64()
                    .unwrap();
                // The others as early as they may be; step j at its bound, then one past it.
                let steps = |d: i64| {
                    (0..n)
                        .map(|k| step(if k == j { d } else { 0 }))
                        .collect::<Vec<_>>()
                };
                assert!(
                    normalise(steps(max)).is_ok(),
                    "{n} steps, step {j} at {max}"
                );
                assert!(
                    normalise(steps(max + 1)).is_err(),
                    "{n} steps, step {j} at {}",
                    max + 1
                );
            }
            // The last step may ask for any delay: it is clamped to 7 days.
            let mut steps: Vec<Step> = (0..n).map(|_| step(0)).collect();
            steps[n - 1].delay_min = i64::MAX;
            assert!(normalise(steps).is_ok(), "{n} steps, the last at i64::MAX");
        }
    }

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
