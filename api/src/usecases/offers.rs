//! Defining offers: creating, updating (a JSON merge patch over the saved definition) and
//! archiving bumps (`/bumps`) and upsells and downsells (`/upsells`). The definition is checked
//! by `OfferDefinition::parse`, which names each field it refuses; the answer is the offer as
//! saved, from the aggregate (read-your-writes without waiting for the projection).

use ocart_domain::offer::{Offer, OfferCommand, OfferDefinition, OfferError, OfferKind};
use ocart_domain::FieldError;
use ocart_projections::queries::offers::OfferRow;
use ocart_projections::{CommandError, CommandMeta};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::StoreFailure;
use crate::core::Core;

/// Which offers a route handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `/bumps`: kind `bump`.
    Bumps,
    /// `/upsells`: kind `upsell` (the default) or `downsell`.
    Upsells,
}

impl Family {
    /// The kind a body without `kind` has.
    pub fn default_kind(self) -> OfferKind {
        match self {
            Self::Bumps => OfferKind::Bump,
            Self::Upsells => OfferKind::Upsell,
        }
    }

    /// Whether an offer of `kind` belongs here.
    pub fn holds(self, kind: &str) -> bool {
        match self {
            Self::Bumps => kind == "bump",
            Self::Upsells => kind == "upsell" || kind == "downsell",
        }
    }

    /// The kinds it lists.
    pub fn kinds(self) -> &'static [&'static str] {
        match self {
            Self::Bumps => &["bump"],
            Self::Upsells => &["upsell", "downsell"],
        }
    }

    /// What the offer is called in problems.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Bumps => "bump",
            Self::Upsells => "upsell",
        }
    }
}

/// An offer as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OfferView {
    pub id: String,
    /// bump, upsell or downsell
    pub kind: String,
    pub name: String,
    /// active or archived
    pub status: String,
    /// ISO 4217 code.
    pub currency: String,
    /// `{product_id, name, price, quantity}`; amounts in minor units.
    #[schema(value_type = Object)]
    pub product: Value,
    /// Tagged by `type`; percentages as decimal strings.
    #[schema(value_type = Object)]
    pub pricing: Value,
    #[schema(value_type = Object)]
    pub targeting: Value,
    /// `{position, headline, copy, image_url}`.
    #[schema(value_type = Object)]
    pub display: Value,
    pub page_template: Option<String>,
    /// Global position of the last event written (send as `OCart-Position` to read it back).
    pub position: Option<i64>,
}

impl OfferView {
    /// The view of an `offers` row.
    pub fn of_row(row: OfferRow) -> Self {
        Self {
            id: row.id,
            kind: row.kind,
            name: row.name,
            status: row.status,
            currency: row.currency,
            product: row.product.0,
            pricing: row.pricing.0,
            targeting: row.targeting.0,
            display: row.display.0,
            page_template: row.page_template,
            position: Some(row.last_position),
        }
    }

    fn of_aggregate(id: &str, offer: &Offer, position: Option<i64>) -> Result<Self, OffersError> {
        let (Some(def), Some(status)) = (offer.definition(), offer.status()) else {
            return Err(OffersError::NotFound);
        };
        let json = |v: &dyn erased::Json| v.value();
        Ok(Self {
            id: id.to_owned(),
            kind: def.kind.as_str().to_owned(),
            name: def.name.clone(),
            status: status.as_str().to_owned(),
            currency: def.currency.as_str().to_owned(),
            product: json(&def.product)?,
            pricing: json(&def.pricing)?,
            targeting: json(&def.targeting)?,
            display: json(&def.display)?,
            page_template: def.page_template.clone(),
            position,
        })
    }
}

mod erased {
    /// Serializes a definition part to JSON.
    pub trait Json {
        fn value(&self) -> Result<serde_json::Value, super::OffersError>;
    }
    impl<T: serde::Serialize> Json for T {
        fn value(&self) -> Result<serde_json::Value, super::OffersError> {
            serde_json::to_value(self).map_err(|e| super::OffersError::Internal(e.into()))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OffersError {
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    /// No such offer of this family.
    #[error("no such offer")]
    NotFound,
    /// An archived offer cannot change.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(OffersError);

impl OffersError {
    fn of_command(err: CommandError<OfferError>) -> Self {
        match StoreFailure::split(err) {
            Ok(failure) => Self::Store(failure),
            Err(OfferError::NotFound) => Self::NotFound,
            Err(other) => Self::Conflict(other.to_string()),
        }
    }
}

fn parse(family: Family, body: &Value) -> Result<OfferDefinition, OffersError> {
    let definition =
        OfferDefinition::parse(body, family.default_kind()).map_err(OffersError::Invalid)?;
    if !family.holds(definition.kind.as_str()) {
        let allowed = match family {
            Family::Bumps => "must be bump here (upsells and downsells are under /upsells)",
            Family::Upsells => "must be upsell or downsell here (bumps are under /bumps)",
        };
        return Err(OffersError::Invalid(vec![FieldError::new("kind", allowed)]));
    }
    Ok(definition)
}

/// Creates an offer with a new id.
pub async fn create(
    core: &Core,
    family: Family,
    body: &Value,
    meta: &CommandMeta,
) -> Result<OfferView, OffersError> {
    let definition = parse(family, body)?;
    let id = Uuid::now_v7().to_string();
    let outcome = core
        .offers
        .execute(
            &id,
            OfferCommand::Create {
                definition: Box::new(definition),
                at: meta.at,
            },
            meta,
        )
        .await
        .map_err(OffersError::of_command)?;
    core.bump_cache.invalidate();
    OfferView::of_aggregate(&id, &outcome.aggregate, outcome.last_position())
}

/// Creates an offer under a given `id` rather than a new one: `ocart import` keeps the ids an
/// export recorded, so the funnel steps naming them still do. An id in use is a conflict.
pub async fn create_with_id(
    core: &Core,
    family: Family,
    id: &str,
    body: &Value,
    meta: &CommandMeta,
) -> Result<OfferView, OffersError> {
    let definition = parse(family, body)?;
    let outcome = core
        .offers
        .execute(
            id,
            OfferCommand::Create {
                definition: Box::new(definition),
                at: meta.at,
            },
            meta,
        )
        .await
        .map_err(OffersError::of_command)?;
    core.bump_cache.invalidate();
    OfferView::of_aggregate(id, &outcome.aggregate, outcome.last_position())
}

async fn load(core: &Core, family: Family, id: &str) -> Result<Offer, OffersError> {
    let (offer, _, _) = core
        .offers
        .load(id)
        .await
        .map_err(OffersError::of_command)?;
    match offer.definition() {
        Some(def) if family.holds(def.kind.as_str()) => Ok(offer),
        _ => Err(OffersError::NotFound),
    }
}

/// Applies a JSON merge patch (RFC 7386) to the saved definition and saves the result.
pub async fn update(
    core: &Core,
    family: Family,
    id: &str,
    patch: &Value,
    meta: &CommandMeta,
) -> Result<OfferView, OffersError> {
    if !patch.is_object() {
        return Err(OffersError::Invalid(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )]));
    }
    let offer = load(core, family, id).await?;
    let mut merged =
        serde_json::to_value(offer.definition()).map_err(|e| OffersError::Internal(e.into()))?;
    merge(&mut merged, patch);
    let definition = parse(family, &merged)?;
    let outcome = core
        .offers
        .execute(
            id,
            OfferCommand::Update {
                definition: Box::new(definition),
                at: meta.at,
            },
            meta,
        )
        .await
        .map_err(OffersError::of_command)?;
    core.bump_cache.invalidate();
    OfferView::of_aggregate(id, &outcome.aggregate, outcome.last_position())
}

/// Archives an offer (safe to repeat).
pub async fn archive(
    core: &Core,
    family: Family,
    id: &str,
    meta: &CommandMeta,
) -> Result<OfferView, OffersError> {
    load(core, family, id).await?;
    let outcome = core
        .offers
        .execute(id, OfferCommand::Archive { at: meta.at }, meta)
        .await
        .map_err(OffersError::of_command)?;
    core.bump_cache.invalidate();
    OfferView::of_aggregate(id, &outcome.aggregate, outcome.last_position())
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usecases::testing::answer;
    use axum::http::StatusCode;
    use serde_json::json;

    #[test]
    fn a_merge_patch_merges_objects_removes_nulls_and_replaces_the_rest() {
        let mut target = json!({"name": "a", "display": {"headline": "h", "copy": "c"},
                                "pricing": {"type": "fixed_addon", "amount": 1}});
        merge(
            &mut target,
            &json!({"display": {"copy": null, "position": "in_summary"},
                    "pricing": {"type": "percent_addon", "value": "5", "amount": null}}),
        );
        assert_eq!(
            target,
            json!({"name": "a", "display": {"headline": "h", "position": "in_summary"},
                   "pricing": {"type": "percent_addon", "value": "5"}})
        );
    }

    #[test]
    fn each_failure_has_its_status() {
        assert_eq!(answer(OffersError::NotFound).0, StatusCode::NOT_FOUND);
        assert_eq!(
            answer(OffersError::of_command(CommandError::Rejected(
                OfferError::Archived
            )))
            .0,
            StatusCode::CONFLICT
        );
        let Err(wrong) = parse(
            Family::Bumps,
            &json!({"kind": "upsell", "name": "n", "currency": "EUR",
                    "product": {"product_id": 1, "name": "p"},
                    "pricing": {"type": "price", "amount": 1}}),
        ) else {
            panic!("an upsell was accepted as a bump");
        };
        assert_eq!(answer(wrong).0, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
