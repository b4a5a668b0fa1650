//! Recovery message templates: the built-in ones and those saved under a name (which override
//! the built-in one of that name). `PUT /ocart/v1/recovery/templates/{id}` checks every part's
//! merge tags before anything is saved, so a template that would fail at send time is refused
//! with the part and the tag named.

use axum::extract::State;
use axum::Json;
use ocart_domain::recovery::{check_template_id, TemplateCommand, TemplateError};
use ocart_domain::token::Capability;
use ocart_domain::FieldError;
use ocart_processors::recovery::templates::{builtin, resolve, TemplateParts, BUILTIN, MERGE_TAGS};
use ocart_projections::queries::recovery as q;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{command_error, ApiError};
use crate::extract::Path;
use crate::state::{AppState, RequestContext};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, save, remove))
}

const READ: &[Capability] = &[
    Capability::OcartManageRecovery,
    Capability::OcartManage,
    Capability::OcartViewReports,
];
const WRITE: &[Capability] = &[Capability::OcartManageRecovery, Capability::OcartManage];

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    pub template_id: String,
    /// `saved` (overrides any built-in of the name) or `builtin`.
    pub source: &'static str,
    #[schema(value_type = Object)]
    pub parts: TemplateParts,
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A template's parts as sent (documentation of `TemplateParts`): minijinja text using only
/// the merge tags the list names; each part at most 100000 characters.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PartsBody {
    #[schema(max_length = 100000)]
    subject: String,
    #[serde(default)]
    #[schema(max_length = 100000)]
    preheader: String,
    #[schema(max_length = 100000)]
    html: String,
    #[schema(max_length = 100000)]
    text: String,
    #[serde(default)]
    #[schema(max_length = 100000)]
    sms: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateView>,
    /// The merge tags templates may use.
    pub merge_tags: Vec<&'static str>,
}

fn saved(row: q::TemplateRow) -> TemplateView {
    TemplateView {
        template_id: row.template_id,
        source: "saved",
        parts: TemplateParts {
            subject: row.subject,
            preheader: row.preheader,
            html: row.html,
            text: row.text,
            sms: row.sms,
        },
        updated_at: Some(row.updated_at),
    }
}

/// The built-in templates and the saved ones.
#[utoipa::path(get, path = "/ocart/v1/recovery/templates", tag = "recovery",
    responses((status = 200, body = TemplateList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TemplateList>, ApiError> {
    caller.require(READ)?;
    let mut templates: Vec<TemplateView> = q::list_templates(&state.core.db)
        .await?
        .into_iter()
        .map(saved)
        .collect();
    for name in BUILTIN {
        if !templates.iter().any(|t| t.template_id == *name) {
            templates.push(TemplateView {
                template_id: (*name).to_owned(),
                source: "builtin",
                parts: builtin(name),
                updated_at: None,
            });
        }
    }
    templates.sort_by(|a, b| a.template_id.cmp(&b.template_id));
    Ok(Json(TemplateList {
        templates,
        merge_tags: MERGE_TAGS.to_vec(),
    }))
}

#[utoipa::path(get, path = "/ocart/v1/recovery/templates/{id}", tag = "recovery", params(("id" = String, Path, description = "Template name")),
    responses((status = 200, body = TemplateView), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TemplateView>, ApiError> {
    caller.require(READ)?;
    if let Some(row) = q::get_template(&state.core.db, &id).await? {
        return Ok(Json(saved(row)));
    }
    if BUILTIN.contains(&id.as_str()) {
        return Ok(Json(TemplateView {
            parts: resolve(&state.core.db, &id).await?,
            template_id: id,
            source: "builtin",
            updated_at: None,
        }));
    }
    Err(ApiError::NotFound(format!("template {id}")))
}

/// Saves a template under `id` after checking every part's merge tags.
#[utoipa::path(put, path = "/ocart/v1/recovery/templates/{id}", tag = "recovery", params(("id" = String, Path, description = "Template name: 1 to 64 of a-z, 0-9, _ and -", pattern = "^[a-z0-9_-]{1,64}$")),
    request_body = PartsBody,
    responses((status = 200, body = TemplateView), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn save(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<TemplateView>, ApiError> {
    caller.require(WRITE)?;
    check_template_id(&id).map_err(|e| ApiError::Validation(vec![e]))?;
    let parts: TemplateParts = crate::json::parse(&body)?;
    parts.check().map_err(|errors| {
        ApiError::Validation(
            errors
                .into_iter()
                .map(|e| FieldError::new(e.part, e.message))
                .collect(),
        )
    })?;
    let meta = ctx.meta(caller.actor(), &state);
    let command = TemplateCommand::Save {
        content: parts.clone().into(),
        at: meta.at,
    };
    state
        .core
        .templates
        .execute(&id, command, &meta)
        .await
        .map_err(|e| {
            command_error(e, |e| match e {
                TemplateError::Invalid(message) => ApiError::validation("template", message),
                other => ApiError::Conflict(other.to_string()),
            })
        })?;
    Ok(Json(TemplateView {
        template_id: id,
        source: "saved",
        parts,
        updated_at: Some(meta.at),
    }))
}

/// Deletes a saved template (a built-in one of the name takes over again).
#[utoipa::path(delete, path = "/ocart/v1/recovery/templates/{id}", tag = "recovery", params(("id" = String, Path, description = "Template name")),
    responses((status = 204), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    caller.require(WRITE)?;
    let meta = ctx.meta(caller.actor(), &state);
    state
        .core
        .templates
        .execute(&id, TemplateCommand::Delete { at: meta.at }, &meta)
        .await
        .map_err(|e| {
            command_error(e, |e| match e {
                TemplateError::NotFound => ApiError::NotFound(format!("saved template {id}")),
                other => ApiError::Conflict(other.to_string()),
            })
        })?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
