//! Recovery coupons: the history (`GET /ocart/v1/recovery/coupons`) and, for stores that use
//! OCart's own registry (the embedded mode), `POST /ocart/v1/coupons/validate`: whether a code
//! may be applied now by this buyer (single use, the captured email only, before expiry).

use axum::extract::State;
use axum::Json;
use ocart_domain::token::Capability;
use ocart_domain::Email;
use ocart_projections::queries::recovery::{self as q, CouponRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Query;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(validate))
}

const READ: &[Capability] = &[
    Capability::OcartManageRecovery,
    Capability::OcartManage,
    Capability::OcartViewReports,
];
const WRITE: &[Capability] = &[Capability::OcartManageRecovery, Capability::OcartManage];

#[derive(Debug, Deserialize, IntoParams)]
pub struct CouponQuery {
    /// active, used or expired
    #[param(pattern = "^(active|used|expired)$")]
    pub status: Option<String>,
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CouponList {
    pub coupons: Vec<CouponRow>,
}

/// Recovery coupons issued, newest first.
#[utoipa::path(get, path = "/ocart/v1/recovery/coupons", tag = "recovery", params(CouponQuery),
    responses((status = 200, body = CouponList), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<CouponQuery>,
) -> Result<Json<CouponList>, ApiError> {
    caller.require(READ)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 500"));
    }
    if let Some(status) = &query.status {
        if !["active", "used", "expired"].contains(&status.as_str()) {
            return Err(ApiError::validation(
                "status",
                "must be active, used or expired",
            ));
        }
    }
    Ok(Json(CouponList {
        coupons: q::list_coupons(&state.core.db, query.status.as_deref(), limit).await?,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateCoupon {
    /// 1 to 64 characters, not blank.
    #[schema(max_length = 64, pattern = "\\S")]
    pub code: String,
    /// The checkout's billing email: a recovery coupon is for the captured email only.
    #[schema(value_type = crate::openapi::EmailAddress)]
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CouponVerdict {
    pub valid: bool,
    /// Why not: unknown_code, used, expired or wrong_email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// fixed_cart or percent (valid codes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Minor units (fixed_cart) or a percentage (percent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Whether a recovery coupon may be applied now by this buyer.
#[utoipa::path(post, path = "/ocart/v1/coupons/validate", tag = "recovery", request_body = ValidateCoupon,
    responses((status = 200, body = CouponVerdict), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn validate(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<CouponVerdict>, ApiError> {
    caller.require(WRITE)?;
    let request: ValidateCoupon = crate::json::parse(&body)?;
    let email = Email::parse("email", &request.email).map_err(|e| ApiError::Validation(vec![e]))?;
    if request.code.trim().is_empty() || request.code.len() > 64 {
        return Err(ApiError::validation(
            "code",
            "must be a coupon code (1–64 characters)",
        ));
    }
    let refused = |reason| CouponVerdict {
        valid: false,
        reason: Some(reason),
        kind: None,
        amount: None,
        currency: None,
        expires_at: None,
    };
    let Some(coupon) = q::coupon_by_code(&state.core.db, &request.code).await? else {
        return Ok(Json(refused("unknown_code")));
    };
    let now = state.core.clock.now();
    let subject = state.core.vault.subject_for_email(&email);
    let verdict = if coupon.status == "used" {
        refused("used")
    } else if coupon.status == "expired" || coupon.expires_at <= now {
        refused("expired")
    } else if coupon.email_hash.as_deref() != Some(subject.as_str()) {
        refused("wrong_email")
    } else {
        CouponVerdict {
            valid: true,
            reason: None,
            kind: Some(coupon.kind),
            amount: Some(coupon.amount),
            currency: Some(coupon.currency),
            expires_at: Some(coupon.expires_at),
        }
    };
    Ok(Json(verdict))
}
