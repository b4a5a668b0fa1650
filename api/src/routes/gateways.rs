//! `GET /ocart/v1/gateways`: the payment gateway adapters this server charges upsells through,
//! and their state. Never a credential: only the id, the mode (live, test, sandbox), the API
//! base and whether inbound webhooks can be verified.

use axum::extract::State;
use axum::Json;
use ocart_domain::token::Capability;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

const READ: &[Capability] = &[
    Capability::OcartManage,
    Capability::OcartManageOffers,
    Capability::OcartViewReports,
];

/// One configured gateway adapter.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayInfo {
    /// stripe, paypal or sandbox: what an order's `payment.gateway` names.
    pub id: String,
    /// live, test or sandbox.
    pub mode: String,
    /// The API it talks to.
    pub api_base: String,
    /// Whether its webhooks can be verified (a signing secret or webhook id is configured).
    pub webhooks: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayList {
    pub gateways: Vec<GatewayInfo>,
    /// Per purpose (woocommerce-webhook, stripe-webhook, upsell-token): how many secrets are
    /// accepted and when the older ones retire; never a value (ADR 0016).
    pub secrets: Vec<crate::secret_ring::SecretState>,
}

/// The gateways upsell charges can go through.
#[utoipa::path(get, path = "/ocart/v1/gateways", tag = "gateways",
    responses((status = 200, body = GatewayList), (status = 401, body = crate::error::Problem),
        (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<GatewayList>, ApiError> {
    caller.require(READ)?;
    Ok(Json(GatewayList {
        gateways: gateway_infos(&state.core.gateways),
        secrets: state.core.secret_ring.states(&state.core),
    }))
}

/// What `GET /gateways` and `ocart gateway status` show.
pub fn gateway_infos(gateways: &ocart_processors::gateways::Gateways) -> Vec<GatewayInfo> {
    gateways
        .states()
        .into_iter()
        .map(|s| GatewayInfo {
            id: s.id.to_owned(),
            mode: s.mode.to_owned(),
            api_base: s.api_base,
            webhooks: s.webhooks,
        })
        .collect()
}
