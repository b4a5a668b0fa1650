//! Step visits the funnel report counts that no other use case records: the hosted upsell or
//! downsell page rendering its offer (`upsell/shown` on the `UpsellView` aggregate, once per
//! parent order, funnel and step, whatever the token or how often the page is loaded). Bump
//! steps' visits are `bump/shown`, recorded by `bumps::show`; checkout and thank-you pages are
//! the store's and are not counted.

use ocart_domain::offer::OfferKind;
use ocart_domain::upsell::{view_id, ShownStep, UpsellKind, UpsellView, ViewCommand};
use ocart_projections::{CommandMeta, Commands};

use crate::core::Core;
use crate::usecases::upsells::{acceptance_of, PageView};

/// Records that the page showed its step's offer, when it did (the step undecided, the token
/// live, the offer eligible); answers the event's position, `None` when nothing was recorded.
pub async fn record_upsell_view(
    core: &Core,
    view: &PageView,
    meta: &CommandMeta,
) -> anyhow::Result<Option<i64>> {
    let (Some((offer, _)), None) = (&view.offer, &view.acceptance) else {
        return Ok(None);
    };
    let kind = match offer.kind {
        OfferKind::Upsell => UpsellKind::Upsell,
        OfferKind::Downsell => UpsellKind::Downsell,
        OfferKind::Bump => return Ok(None),
    };
    let claims = &view.claims;
    let step = ShownStep {
        acceptance_id: acceptance_of(claims),
        offer_id: claims.offer_id.clone(),
        kind,
        funnel_id: claims.funnel_id.clone(),
        step: claims.step.clone(),
        parent_order_id: claims.order_id.clone(),
        jti: claims.jti.clone(),
    };
    let id = view_id(&step.parent_order_id, &step.funnel_id, &step.step);
    let views: Commands<UpsellView> = Commands::new(core.log.clone(), ());
    let outcome = views
        .execute(
            &id,
            ViewCommand::Show {
                step: Box::new(step),
                at: meta.at,
            },
            meta,
        )
        .await?;
    Ok(outcome.last_position())
}
