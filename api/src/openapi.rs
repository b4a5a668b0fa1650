//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    audit, capture, carts, coupons, deliverability, orders, privacy, recovery, reports, settings,
    system, templates, tokens,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "OCart API", description = "Cart capture, recovery, funnels and A/B tests for online stores."),
    paths(
        capture::capture,
        carts::list, carts::show, carts::abandon, carts::convert,
        settings::show, settings::update,
        tokens::create, tokens::list, tokens::revoke,
        privacy::erase,
        recovery::list_sequences, recovery::create_sequence, recovery::show_sequence,
        recovery::update_sequence, recovery::archive_sequence,
        recovery::list_runs, recovery::show_run, recovery::trigger_test, recovery::stop_run, recovery::preview_template,
        recovery::list_suppression, recovery::add_suppression, recovery::remove_suppression,
        orders::create, orders::list, orders::show,
        coupons::list, coupons::validate, deliverability::feed, deliverability::dns_check,
        reports::recovery, reports::dashboard,
        templates::list, templates::show, templates::save, templates::remove,
        audit::list,
        system::ping, system::info, system::openapi, system::metrics,
    ),
    modifiers(&BearerAuth),
    tags((name = "checkout"), (name = "carts"), (name = "settings"), (name = "tokens"), (name = "privacy"), (name = "recovery"), (name = "orders"), (name = "reports"), (name = "audit"), (name = "system"))
)]
pub struct ApiDoc;

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
