//! The A/B test calculator (issue 12): `POST /ocart/v1/stats/compare` (rates, intervals,
//! z-test, lift, Bayesian probabilities and losses, SRM for 2 to 10 arms) and
//! `GET /ocart/v1/stats/sample-size` (Fleiss's visitors per arm). Pure computations on the
//! counts given (nothing is read or stored); capability `ocart_view_reports` or
//! `ocart_manage_tests` (or `ocart_manage`). The handlers only translate: the checks and the
//! statistics are `usecases::stats`, which `ocart test calc` calls too.

use axum::Json;
use ocart_domain::token::Capability;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Query;
use crate::state::AppState;
use crate::usecases::stats::{
    self as uc, CalcError, CompareAnswer, CompareRequest, SampleSizeAnswer, SampleSizeRequest,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(compare))
        .routes(routes!(sample_size))
}

/// Who may use the calculator: report readers and test managers (and the admin).
const CALC: &[Capability] = &[
    Capability::OcartViewReports,
    Capability::OcartManageTests,
    Capability::OcartManage,
];

// The calculator's refusals as problem documents: every one is a field that does not fit (422).
impl From<CalcError> for ApiError {
    fn from(err: CalcError) -> Self {
        match err {
            CalcError::Invalid(errors) => Self::Validation(errors),
        }
    }
}

/// Compares 2 to 10 arms, the first the control. Per arm: the rate and its Wilson interval at
/// `confidence`, and the probability to be best (Beta(1 + conversions, 1 + visitors −
/// conversions) posteriors). Per other arm against the control: the difference with its
/// unpooled Wald interval, the relative lift with its delta-method interval, the pooled
/// two-sided z-test (no continuity correction), P(variant > control), P(control > variant)
/// and both expected losses. And the sample-ratio-mismatch chi-square of the visitors against
/// `weights`. A value that does not exist is null: the rate of an arm without visitors, the
/// z-test when the pooled rate is 0 or 1, the lift of a control without conversions.
///
/// Besides what the schema states, the arms' keys must be unique, each arm's conversions at
/// most its visitors, `weights` one per arm (and no weight so much smaller than the largest
/// that their ratio underflows): each refused with a 422 naming the field.
#[utoipa::path(post, path = "/ocart/v1/stats/compare", tag = "stats", request_body = CompareRequest,
    responses((status = 200, body = CompareAnswer), (status = 400, body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem),
        (status = 422, description = "A field that does not fit, named (`arms[1].conversions`)", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn compare(
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<CompareAnswer>, ApiError> {
    caller.require(CALC)?;
    let request: CompareRequest = crate::json::parse(&body)?;
    Ok(Json(uc::compare(&request)?))
}

/// Visitors needed per arm to detect a relative change `relative_mde` of `baseline_rate` with
/// probability `power` in a two-sided test at `confidence`: Fleiss's formula without
/// continuity correction, rounded up; `total` is that × `variants` (no correction for more
/// than two arms). Besides what the schema states, baseline_rate × (1 + relative_mde) must be
/// below 1 and the answer must fit in 64 bits: each refused with a 422 naming the parameter.
#[utoipa::path(get, path = "/ocart/v1/stats/sample-size", tag = "stats", params(SampleSizeRequest),
    responses((status = 200, body = SampleSizeAnswer), (status = 401, body = crate::error::Problem),
        (status = 403, body = crate::error::Problem),
        (status = 422, description = "A parameter that does not fit, named", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn sample_size(
    caller: Caller,
    Query(request): Query<SampleSizeRequest>,
) -> Result<Json<SampleSizeAnswer>, ApiError> {
    caller.require(CALC)?;
    Ok(Json(uc::sample_size(&request)?))
}
