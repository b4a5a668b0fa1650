//! `GET`/`PATCH /ocart/v1/settings`.

use axum::extract::State;
use axum::Json;
use ocart_domain::settings::{Rule, SettingsValues, GROUPS, SETTINGS};
use ocart_domain::token::Capability;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{command_error, ApiError};
use crate::json::JsonBody;
use crate::state::{AppState, RequestContext};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show, update))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsReply {
    #[schema(value_type = Object)]
    pub settings: SettingsValues,
    /// The keys this request changed, `group.key`.
    pub changed: Vec<String>,
    pub position: Option<i64>,
}

/// A settings patch as documented: some groups, each with some of its keys, every key typed
/// and ranged as `domain::settings::SETTINGS` says (the table `validate` checks); no other
/// group or key. The body is parsed as JSON and checked by the domain; this is what is
/// documented.
pub struct SettingsPatch;

impl utoipa::PartialSchema for SettingsPatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder};
        let closed = || {
            ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::Object)
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        let mut patch = closed().description(Some(
            "Some groups, each with some of its keys; what is not named keeps its value.",
        ));
        for group in GROUPS {
            let mut keys = closed();
            for setting in SETTINGS.iter().filter(|s| s.group == *group) {
                keys = keys.property(setting.key, key_schema(setting.rule));
            }
            if SETTINGS
                .iter()
                .any(|s| s.group == *group && s.rule == Rule::CouponAmount)
            {
                patch = patch.property(*group, percent_amounts(keys.build()));
            } else {
                patch = patch.property(*group, keys);
            }
        }
        patch.into()
    }
}

impl ToSchema for SettingsPatch {}

/// `keys`, and a percentage coupon in the same patch is 1 to 100: either the patch's
/// `coupon_type` is not `percent`, or its `coupon_amount` (if any) is at most 100. (A patch that
/// sets one of the two is checked against the other's value in force, which no document of the
/// request can state.)
fn percent_amounts(keys: utoipa::openapi::schema::Object) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ObjectBuilder, Type};
    let (_, at_most) = Rule::COUPON_PERCENT;
    let other_types: Vec<&str> = Rule::COUPON_TYPES
        .iter()
        .copied()
        .filter(|t| *t != "percent")
        .collect();
    AllOfBuilder::new()
        .item(keys)
        .item(
            AnyOfBuilder::new()
                .item(
                    ObjectBuilder::new().property(
                        "coupon_type",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some(other_types)),
                    ),
                )
                .item(
                    ObjectBuilder::new().property(
                        "coupon_amount",
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .maximum(Some(at_most)),
                    ),
                ),
        )
        .build()
        .into()
}

/// The JSON Schema of one key's value under `rule`.
fn key_schema(rule: Rule) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let typed = |t: Type| ObjectBuilder::new().schema_type(t);
    let integer =
        |(min, max): (i64, i64)| typed(Type::Integer).minimum(Some(min)).maximum(Some(max));
    let strings = |pattern: &str, max_length: Option<usize>| {
        ArrayBuilder::new()
            .items(
                typed(Type::String)
                    .pattern(Some(pattern))
                    .max_length(max_length),
            )
            .build()
            .into()
    };
    match rule {
        Rule::Flag => typed(Type::Boolean).into(),
        Rule::Integer { min, max } => integer((min, max)).into(),
        Rule::Number { min, max } => typed(Type::Number)
            .minimum(Some(min))
            .maximum(Some(max))
            .into(),
        Rule::OneOf(allowed) => typed(Type::String)
            .enum_values(Some(allowed.iter().copied()))
            .into(),
        Rule::CouponType => typed(Type::String)
            .enum_values(Some(Rule::COUPON_TYPES.iter().copied()))
            .into(),
        Rule::CouponAmount => integer(Rule::COUPON_AMOUNT)
            .description(Some(format!(
                "Minor units (fixed_cart), or a percentage from {} to {} when coupon_type is \
                 percent (in this patch or in force).",
                Rule::COUPON_PERCENT.0,
                Rule::COUPON_PERCENT.1
            )))
            .into(),
        Rule::CouponExpiryDays => integer(Rule::COUPON_EXPIRY_DAYS).into(),
        Rule::Origins => strings(Rule::ORIGIN_PATTERN, Some(Rule::ORIGIN_MAX_LEN)),
        Rule::GatewayIds => strings(Rule::GATEWAY_PATTERN, None),
    }
}

/// The settings in force, by group.
#[utoipa::path(get, path = "/ocart/v1/settings", tag = "settings",
    responses((status = 200, body = SettingsReply), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
) -> Result<Json<SettingsReply>, ApiError> {
    caller.require(&[Capability::OcartManage])?;
    state.read_your_writes("settings", ctx.min_position).await?;
    let (settings, _) = ocart_projections::queries::current_settings(&state.core.db).await?;
    Ok(Json(SettingsReply {
        settings,
        changed: Vec::new(),
        position: None,
    }))
}

/// Changes some settings: a partial document such as `{"recovery": {"abandoned_threshold_min": 45}}`.
/// Out-of-range, unknown and mistyped keys are refused by name; nothing is half-applied.
#[utoipa::path(patch, path = "/ocart/v1/settings", tag = "settings", request_body = SettingsPatch,
    responses((status = 200, body = SettingsReply), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(mut patch): JsonBody<serde_json::Value>,
) -> Result<Json<SettingsReply>, ApiError> {
    caller.require(&[Capability::OcartManage])?;
    // `45.0` is the integer 45, as the document's `type: integer` says.
    crate::json::integral_floats_as_integers(&mut patch);
    let meta = ctx.meta(caller.actor(), &state);
    let outcome = state
        .core
        .update_settings(patch, &meta)
        .await
        .map_err(|e| command_error(e, |e| ApiError::Validation(e.0)))?;
    let changed = outcome
        .events
        .iter()
        .flat_map(|e| {
            let ocart_domain::settings::SettingsEvent::Changed { changes, .. } = &e.event;
            changes.iter().map(|c| c.key.clone())
        })
        .collect();
    Ok(Json(SettingsReply {
        settings: outcome.aggregate.values().clone(),
        changed,
        position: outcome.last_position(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocart_domain::settings::SettingsValues;
    use serde_json::{json, Value};

    fn document() -> Value {
        serde_json::to_value(<SettingsPatch as utoipa::PartialSchema>::schema()).unwrap()
    }

    /// The group's object of keys (the recovery group's is the first of an `allOf`).
    fn keys<'a>(doc: &'a Value, group: &str) -> &'a Value {
        let schema = &doc["properties"][group];
        schema["allOf"].get(0).unwrap_or(schema)
    }

    #[test]
    fn the_patch_document_names_every_key_with_its_rule_and_no_other() {
        let doc = document();
        assert_eq!(doc["additionalProperties"], json!(false));
        let groups = doc["properties"].as_object().unwrap();
        assert_eq!(groups.len(), GROUPS.len());
        for setting in SETTINGS {
            let group = keys(&doc, setting.group);
            assert_eq!(
                group["additionalProperties"],
                json!(false),
                "{}",
                setting.group
            );
            let key = &group["properties"][setting.key];
            let name = format!("{}.{}", setting.group, setting.key);
            match setting.rule {
                Rule::Integer { min, max } => {
                    assert_eq!(key["type"], "integer", "{name}");
                    assert_eq!(
                        (key["minimum"].as_i64(), key["maximum"].as_i64()),
                        (Some(min), Some(max)),
                        "{name}"
                    );
                }
                Rule::Number { min, max } => {
                    assert_eq!(key["type"], "number", "{name}");
                    assert_eq!(
                        (key["minimum"].as_f64(), key["maximum"].as_f64()),
                        (Some(min), Some(max)),
                        "{name}"
                    );
                }
                Rule::OneOf(allowed) => assert_eq!(key["enum"], json!(allowed), "{name}"),
                Rule::Flag => assert_eq!(key["type"], "boolean", "{name}"),
                _ => assert!(
                    key.is_object() && !key.as_object().unwrap().is_empty(),
                    "{name}"
                ),
            }
        }
        let in_document: usize = GROUPS
            .iter()
            .map(|g| keys(&doc, g)["properties"].as_object().unwrap().len())
            .sum();
        assert_eq!(in_document, SETTINGS.len());
    }

    /// What the document says of a patch that sets both coupon keys is what the domain does.
    #[test]
    fn a_percentage_coupon_in_one_patch_is_stated_as_the_domain_checks_it() {
        let doc = document();
        let either = &doc["properties"]["recovery"]["allOf"][1]["anyOf"];
        assert_eq!(
            either[0]["properties"]["coupon_type"]["enum"],
            json!(["fixed_cart"])
        );
        assert_eq!(
            either[1]["properties"]["coupon_amount"]["maximum"],
            json!(100)
        );
        let base = SettingsValues::default();
        for (amount, ok) in [(100, true), (101, false)] {
            let patch = json!({"recovery": {"coupon_type": "percent", "coupon_amount": amount}});
            assert_eq!(base.patched(&patch).is_ok(), ok, "percent {amount}");
        }
    }
}
