//! Recovery administration: sequences (create, read, update, archive), runs (list, show,
//! stop), and template previews. Capability `ocart_manage_recovery` (or `ocart_manage`);
//! reports readers may read.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ocart_domain::recovery::{
    Channel, Discount, RunCommand, RunError, SequenceCommand, SequenceError, Step, StopReason,
    SuppressionReason, TriggerType,
};
use ocart_domain::token::Capability;
use ocart_domain::FieldError;
use ocart_processors::recovery::templates::{resolve, sample_context, Rendered, TemplateParts};
use ocart_projections::queries::recovery::{self as q, NotificationRow, RunFilter, RunRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{command_error, ApiError};
use crate::extract::{Path, Query};
use crate::state::{AppState, RequestContext};
use crate::usecases::{suppress, test_trigger};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sequences, create_sequence))
        .routes(routes!(show_sequence, update_sequence, archive_sequence))
        .routes(routes!(list_runs))
        .routes(routes!(show_run))
        .routes(routes!(stop_run))
        .routes(routes!(preview_template))
        .routes(routes!(trigger_test))
        .routes(routes!(
            list_suppression,
            add_suppression,
            remove_suppression
        ))
}

const READ: &[Capability] = &[
    Capability::OcartManageRecovery,
    Capability::OcartManage,
    Capability::OcartViewReports,
];
const WRITE: &[Capability] = &[Capability::OcartManageRecovery, Capability::OcartManage];

/// A step as sent and returned.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    /// email or sms
    #[schema(value_type = String, pattern = "^(email|sms)$")]
    pub channel: Channel,
    /// Minutes after abandonment (saved clamped to 15–10080, and at least 15 after the step
    /// before; refused where the steps cannot fit 15 minutes apart within 7 days).
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(minimum = 0)]
    pub delay_min: i64,
    /// The template this step sends.
    #[schema(pattern = "\\S")]
    pub template: String,
    /// Create a recovery coupon for this step.
    #[serde(default)]
    pub coupon: bool,
    /// The coupon's terms: `{"type": "fixed_cart" | "percent", "amount", "expiry_days"}`
    /// (amount in minor units, or a percentage; expiry 1–365 days). Absent: the
    /// `recovery.coupon_*` settings. Setting it turns the coupon on.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::with_whole_numbers"
    )]
    #[schema(value_type = Option<DiscountBody>)]
    pub discount: Option<Discount>,
    /// An A/B test this step takes part in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab_test: Option<String>,
}

impl From<StepBody> for Step {
    fn from(s: StepBody) -> Self {
        Step {
            channel: s.channel,
            delay_min: s.delay_min,
            template: s.template,
            coupon: s.coupon,
            discount: s.discount,
            ab_test: s.ab_test,
        }
    }
}

impl From<&Step> for StepBody {
    fn from(s: &Step) -> Self {
        StepBody {
            channel: s.channel,
            delay_min: s.delay_min,
            template: s.template.clone(),
            coupon: s.coupon,
            discount: s.discount,
            ab_test: s.ab_test.clone(),
        }
    }
}

/// A step's coupon terms (documentation of [`Discount`]): `fixed_cart`, an amount in minor
/// units, or `percent`, a percentage from 1 to 100; valid 1 to 365 days after it is issued.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DiscountBody {
    FixedCart {
        #[schema(minimum = 1, maximum = 9223372036854775807_i64)]
        amount: i64,
        #[schema(minimum = 1, maximum = 365)]
        expiry_days: u32,
    },
    Percent {
        #[schema(minimum = 1, maximum = 100)]
        amount: i64,
        #[schema(minimum = 1, maximum = 365)]
        expiry_days: u32,
    },
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSequence {
    /// 1 to 120 characters, not blank.
    #[schema(max_length = 120, pattern = "\\S")]
    pub name: String,
    /// cart_abandoned, checkout_abandoned or browse_abandoned
    #[schema(value_type = String, pattern = "^(cart_abandoned|checkout_abandoned|browse_abandoned)$")]
    pub trigger_type: TriggerType,
    #[schema(value_type = crate::openapi::SequenceSteps)]
    pub steps: Vec<StepBody>,
    /// Default true.
    pub active: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSequence {
    #[schema(max_length = 120, pattern = "\\S")]
    pub name: Option<String>,
    #[schema(value_type = Option<String>, pattern = "^(cart_abandoned|checkout_abandoned|browse_abandoned)$")]
    pub trigger_type: Option<TriggerType>,
    #[schema(value_type = Option<crate::openapi::SequenceSteps>)]
    pub steps: Option<Vec<StepBody>>,
    pub active: Option<bool>,
}

/// A sequence, with its saved (normalised) steps.
#[derive(Debug, Serialize, ToSchema)]
pub struct SequenceView {
    pub sequence_id: String,
    pub name: String,
    pub trigger_type: String,
    pub steps: Vec<StepBody>,
    pub active: bool,
    pub archived: bool,
    /// Global position of the last event written (send as `OCart-Position` to read it back).
    pub position: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SequenceList {
    pub sequences: Vec<SequenceView>,
}

fn sequence_rejection(e: SequenceError) -> ApiError {
    match e {
        SequenceError::Invalid(errors) => ApiError::Validation(errors),
        SequenceError::NotFound => ApiError::NotFound("recovery sequence".into()),
        other => ApiError::Conflict(other.to_string()),
    }
}

fn view_of_row(row: q::SequenceRow) -> Result<SequenceView, ApiError> {
    let steps: Vec<Step> = serde_json::from_value(row.steps.0)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored steps: {e}")))?;
    Ok(SequenceView {
        sequence_id: row.sequence_id,
        name: row.name,
        trigger_type: row.trigger_type,
        steps: steps.iter().map(StepBody::from).collect(),
        active: row.active,
        archived: row.archived,
        position: Some(row.last_position),
    })
}

fn view_of_aggregate(
    id: &str,
    sequence: &ocart_domain::recovery::RecoverySequence,
    position: Option<i64>,
) -> Result<SequenceView, ApiError> {
    let definition = sequence
        .definition()
        .ok_or_else(|| ApiError::NotFound(format!("recovery sequence {id}")))?;
    Ok(SequenceView {
        sequence_id: id.to_owned(),
        name: definition.name.clone(),
        trigger_type: definition.trigger.as_str().to_owned(),
        steps: definition.steps.iter().map(StepBody::from).collect(),
        active: definition.active && !sequence.is_archived(),
        archived: sequence.is_archived(),
        position,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SequenceQuery {
    /// Include archived sequences (default false).
    pub include_archived: Option<bool>,
}

/// Recovery sequences, oldest first.
#[utoipa::path(get, path = "/ocart/v1/recovery/sequences", tag = "recovery", params(SequenceQuery),
    responses((status = 200, body = SequenceList), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list_sequences(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<SequenceQuery>,
) -> Result<Json<SequenceList>, ApiError> {
    caller.require(READ)?;
    state
        .read_your_writes("recovery_sequences", ctx.min_position)
        .await?;
    let rows = q::list_sequences(&state.core.db, query.include_archived.unwrap_or(false)).await?;
    let sequences = rows
        .into_iter()
        .map(view_of_row)
        .collect::<Result<_, _>>()?;
    Ok(Json(SequenceList { sequences }))
}

/// Creates a sequence; answers it with its steps as saved (normalised).
#[utoipa::path(post, path = "/ocart/v1/recovery/sequences", tag = "recovery", request_body = CreateSequence,
    responses((status = 201, body = SequenceView), (status = 400, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create_sequence(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<SequenceView>), ApiError> {
    caller.require(WRITE)?;
    let request: CreateSequence = crate::json::parse(&body)?;
    let meta = ctx.meta(caller.actor(), &state);
    let id = Uuid::now_v7().to_string();
    let command = SequenceCommand::Create {
        name: request.name,
        trigger: request.trigger_type,
        steps: request.steps.into_iter().map(Step::from).collect(),
        active: request.active.unwrap_or(true),
        at: meta.at,
    };
    let outcome = state
        .core
        .sequences
        .execute(&id, command, &meta)
        .await
        .map_err(|e| command_error(e, sequence_rejection))?;
    let view = view_of_aggregate(&id, &outcome.aggregate, outcome.last_position())?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// One sequence. An archived (deleted) one is not found here; the list shows it with
/// `include_archived=true`.
#[utoipa::path(get, path = "/ocart/v1/recovery/sequences/{id}", tag = "recovery", params(("id" = String, Path, description = "Sequence id")),
    responses((status = 200, body = SequenceView), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn show_sequence(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<SequenceView>, ApiError> {
    caller.require(READ)?;
    state
        .read_your_writes("recovery_sequences", ctx.min_position)
        .await?;
    let row = q::get_sequence(&state.core.db, &id)
        .await?
        .filter(|row| !row.archived)
        .ok_or_else(|| ApiError::NotFound(format!("recovery sequence {id}")))?;
    Ok(Json(view_of_row(row)?))
}

/// Changes what is given; answers the sequence as saved. Runs already open keep the steps
/// they started with.
#[utoipa::path(patch, path = "/ocart/v1/recovery/sequences/{id}", tag = "recovery", params(("id" = String, Path, description = "Sequence id")), request_body = UpdateSequence,
    responses((status = 200, body = SequenceView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update_sequence(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<SequenceView>, ApiError> {
    caller.require(WRITE)?;
    let request: UpdateSequence = crate::json::parse(&body)?;
    let meta = ctx.meta(caller.actor(), &state);
    let command = SequenceCommand::Update {
        name: request.name,
        trigger: request.trigger_type,
        steps: request
            .steps
            .map(|steps| steps.into_iter().map(Step::from).collect()),
        active: request.active,
        at: meta.at,
    };
    let outcome = state
        .core
        .sequences
        .execute(&id, command, &meta)
        .await
        .map_err(|e| command_error(e, sequence_rejection))?;
    Ok(Json(view_of_aggregate(
        &id,
        &outcome.aggregate,
        outcome.last_position(),
    )?))
}

/// Archives a sequence: it opens no more runs; open runs go on.
#[utoipa::path(delete, path = "/ocart/v1/recovery/sequences/{id}", tag = "recovery", params(("id" = String, Path, description = "Sequence id")),
    responses((status = 200, body = SequenceView), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn archive_sequence(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<SequenceView>, ApiError> {
    caller.require(WRITE)?;
    let meta = ctx.meta(caller.actor(), &state);
    let outcome = state
        .core
        .sequences
        .execute(&id, SequenceCommand::Archive { at: meta.at }, &meta)
        .await
        .map_err(|e| command_error(e, sequence_rejection))?;
    Ok(Json(view_of_aggregate(
        &id,
        &outcome.aggregate,
        outcome.last_position(),
    )?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct RunQuery {
    /// pending, running, converted or stopped
    #[param(pattern = "^(pending|running|converted|stopped)$")]
    pub status: Option<String>,
    pub cart_id: Option<String>,
    pub sequence_id: Option<String>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,16}\\.([0-9a-f]{2})*$")]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    pub runs: Vec<RunRow>,
    pub next_cursor: Option<String>,
}

/// Recovery runs, newest first, with filters and keyset pagination.
#[utoipa::path(get, path = "/ocart/v1/recovery/runs", tag = "recovery", params(RunQuery),
    responses((status = 200, body = RunPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<RunQuery>,
) -> Result<Json<RunPage>, ApiError> {
    caller.require(READ)?;
    let mut errors = Vec::new();
    if let Some(status) = &query.status {
        if !["pending", "running", "converted", "stopped"].contains(&status.as_str()) {
            errors.push(FieldError::new(
                "status",
                "must be pending, running, converted or stopped",
            ));
        }
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        errors.push(FieldError::new("limit", "must be between 1 and 200"));
    }
    let after = match &query.cursor {
        Some(raw) => match super::keyset::decode(raw) {
            Some(after) => Some(after),
            None => {
                errors.push(FieldError::new("cursor", "is not a cursor this API issued"));
                None
            }
        },
        None => None,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    state
        .read_your_writes("recovery_runs", ctx.min_position)
        .await?;
    let mut runs = q::list_runs(
        &state.core.db,
        &RunFilter {
            status: query.status,
            cart_id: query.cart_id,
            sequence_id: query.sequence_id,
            after,
            limit: limit + 1,
        },
    )
    .await?;
    let next_cursor = if runs.len() as i64 > limit {
        runs.truncate(limit as usize);
        runs.last()
            .map(|row| super::keyset::encode(row.started_at, &row.run_id))
    } else {
        None
    };
    Ok(Json(RunPage { runs, next_cursor }))
}

/// A run with its messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunRow,
    pub notifications: Vec<NotificationRow>,
}

/// One run, with every message and its status.
#[utoipa::path(get, path = "/ocart/v1/recovery/runs/{id}", tag = "recovery", params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunDetail), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn show_run(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    caller.require(READ)?;
    state
        .read_your_writes("recovery_runs", ctx.min_position)
        .await?;
    let run = q::get_run(&state.core.db, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("recovery run {id}")))?;
    let notifications = q::notifications_of_run(&state.core.db, &id).await?;
    Ok(Json(RunDetail { run, notifications }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunReply {
    pub run_id: String,
    pub status: String,
    pub position: Option<i64>,
}

/// Stops a run: nothing more is sent for it.
#[utoipa::path(post, path = "/ocart/v1/recovery/runs/{id}/stop", tag = "recovery", params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunReply), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn stop_run(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<RunReply>, ApiError> {
    caller.require(WRITE)?;
    let meta = ctx.meta(caller.actor(), &state);
    let outcome = state
        .core
        .runs
        .execute(
            &id,
            RunCommand::Stop {
                reason: StopReason::Manual,
                at: meta.at,
            },
            &meta,
        )
        .await
        .map_err(|e| {
            command_error(e, |e| match e {
                RunError::NotFound => ApiError::NotFound(format!("recovery run {id}")),
                other => ApiError::Conflict(other.to_string()),
            })
        })?;
    Ok(Json(RunReply {
        run_id: id,
        status: outcome.aggregate.status().as_str().into(),
        position: outcome.last_position(),
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// Parts to preview instead of the saved template (unsaved edits).
    #[schema(value_type = Option<crate::routes::templates::PartsBody>)]
    pub template: Option<TemplateParts>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewReply {
    pub template: String,
    #[schema(value_type = Object)]
    pub rendered: Rendered,
}

/// Renders a template with a sample cart.
#[utoipa::path(post, path = "/ocart/v1/recovery/templates/{id}/preview", tag = "recovery", params(("id" = String, Path, description = "Template name")), request_body(content = Option<PreviewRequest>, description = "Unsaved parts to preview; without a body, the saved (or built-in) template is previewed"),
    responses((status = 200, body = PreviewReply), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn preview_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<PreviewReply>, ApiError> {
    caller.require(READ)?;
    // The body is optional: none, or `null`, is the empty request.
    let request: PreviewRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PreviewRequest::default()
    } else {
        crate::json::parse::<Option<PreviewRequest>>(&body)?.unwrap_or_default()
    };
    let parts = match request.template {
        Some(parts) => parts,
        None => resolve(&state.core.db, &id).await?,
    };
    parts.check().map_err(|errors| {
        ApiError::Validation(
            errors
                .into_iter()
                .map(|e| FieldError::new(format!("template.{}", e.part), e.message))
                .collect(),
        )
    })?;
    let mut context = sample_context();
    context.store_name = state.core.config.recovery.store_name.clone();
    let rendered = parts.render(&context).map_err(|e| {
        ApiError::Validation(vec![FieldError::new(
            format!("template.{}", e.part),
            e.message,
        )])
    })?;
    Ok(Json(PreviewReply {
        template: id,
        rendered,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionList {
    pub suppression: Vec<q::SuppressionRow>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SuppressionQuery {
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Suppressed recipients (hashes only), newest first.
#[utoipa::path(get, path = "/ocart/v1/recovery/suppression", tag = "recovery", params(SuppressionQuery),
    responses((status = 200, body = SuppressionList)), security(("bearer" = [])))]
pub async fn list_suppression(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<SuppressionQuery>,
) -> Result<Json<SuppressionList>, ApiError> {
    caller.require(READ)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 1000"));
    }
    state
        .read_your_writes("suppression", ctx.min_position)
        .await?;
    Ok(Json(SuppressionList {
        suppression: q::list_suppression(&state.core.db, limit).await?,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSuppression {
    /// An email address or an E.164 phone number; only its hash is kept.
    #[schema(value_type = crate::openapi::EmailAddressOrPhone)]
    pub recipient: String,
    /// manual (default), bounce, complaint, unsubscribe or winback_failed
    #[schema(value_type = Option<String>, pattern = "^(manual|bounce|complaint|unsubscribe|winback_failed)$")]
    pub reason: Option<SuppressionReason>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionReply {
    pub recipient_hash: String,
    pub suppressed: bool,
    pub position: Option<i64>,
}

/// Suppresses a recipient on every channel and stops their open runs.
#[utoipa::path(post, path = "/ocart/v1/recovery/suppression", tag = "recovery", request_body = AddSuppression,
    responses((status = 200, body = SuppressionReply), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn add_suppression(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    body: axum::body::Bytes,
) -> Result<Json<SuppressionReply>, ApiError> {
    caller.require(WRITE)?;
    let request: AddSuppression = crate::json::parse(&body)?;
    let meta = ctx.meta(caller.actor(), &state);
    let input = suppress::Suppress {
        recipient: suppress::Recipient::address(request.recipient),
        reason: request.reason.unwrap_or(SuppressionReason::Manual),
        channel: None,
        source: Some("admin".into()),
    };
    let done = suppress::suppress(&state.core, input, &meta).await?;
    Ok(Json(done.into()))
}

impl From<suppress::Suppressed> for SuppressionReply {
    fn from(done: suppress::Suppressed) -> Self {
        Self {
            recipient_hash: done.recipient_hash,
            suppressed: done.suppressed,
            position: done.position,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct RemoveSuppressionQuery {
    /// The email address or E.164 phone number to allow again (give it or
    /// `recipient_hash`, not both).
    #[param(value_type = Option<crate::openapi::EmailAddressOrPhone>)]
    pub recipient: Option<String>,
    /// Or its hash, as the list shows it.
    #[param(pattern = "^[0-9a-fA-F]{64}$")]
    pub recipient_hash: Option<String>,
}

/// Lifts a suppression (runs already stopped stay stopped).
#[utoipa::path(delete, path = "/ocart/v1/recovery/suppression", tag = "recovery", params(RemoveSuppressionQuery),
    responses((status = 200, body = SuppressionReply), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn remove_suppression(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<RemoveSuppressionQuery>,
) -> Result<Json<SuppressionReply>, ApiError> {
    caller.require(WRITE)?;
    let recipient = suppress::Recipient::one_of(query.recipient, query.recipient_hash)?;
    let meta = ctx.meta(caller.actor(), &state);
    let done = suppress::lift(&state.core, recipient, &meta).await?;
    Ok(Json(done.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerTest {
    /// Where the test messages go.
    #[schema(value_type = crate::openapi::EmailAddress)]
    pub email: String,
}

/// Test mode: a dummy abandoned cart for `email` whose first message goes out in about 30
/// seconds. Refused unless `recovery.test_mode` is on.
#[utoipa::path(post, path = "/ocart/v1/recovery/test/trigger", tag = "recovery", request_body = TriggerTest,
    responses((status = 201, body = test_trigger::TestFlow), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn trigger_test(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<test_trigger::TestFlow>), ApiError> {
    caller.require(WRITE)?;
    let request: TriggerTest = crate::json::parse(&body)?;
    let meta = ctx.meta(caller.actor(), &state);
    let input = test_trigger::TriggerTest {
        email: request.email,
    };
    let flow = test_trigger::trigger_test(&state.core, input, &meta).await?;
    Ok((StatusCode::CREATED, Json(flow)))
}
