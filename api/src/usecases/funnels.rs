//! Funnels: creating, changing, activating and archiving them (`/funnels` over HTTP, `ocart
//! funnel` and `ocart template install` on the command line), reading them back, and the
//! checkout's hot read, [`resolve`]: which funnel (and which bumps) a cart gets.
//!
//! A funnel's id is its slug. Bodies are checked into domain values here, so HTTP and the CLI
//! refuse alike and name the field (`steps[2].branches.accepted`). [`resolve`] reads the cart
//! by its key and the active funnels from an in-memory snapshot ([`FunnelCache`], reloaded
//! when older than 250 ms and dropped by every write of this process), never scanning a table
//! per request.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ocart_domain::abtest::{self, CheckoutServes, Surface};
use ocart_domain::cart::cart_id_for_session;
use ocart_domain::funnel::{
    Branches, Funnel, FunnelCommand, FunnelError, FunnelSettings, Layout, Step, StepType, Trigger,
};
use ocart_domain::offer::Targeting;
use ocart_domain::FieldError;
use ocart_projections::queries::funnels::{self as q, FunnelRow, FunnelStepRow};
use ocart_projections::{CommandError, CommandMeta};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bumps::{cart_facts, eligible_for_facts, takes_bumps, BumpsError, EligibleBump};
use super::StoreFailure;
use crate::core::Core;

/// How long the active funnels' snapshot serves before it is read again.
pub const SNAPSHOT_TTL: Duration = Duration::from_millis(250);

/// Where a step goes next, as sent and returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchesBody {
    /// The step after this one whatever the shopper did (and when an outcome has no branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The step after the offer is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<String>,
    /// The step after the offer is declined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declined: Option<String>,
}

/// A step as sent and returned.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = FunnelStepBody)]
pub struct StepBody {
    /// Unique in the funnel: 1 to 64 of A-Z, a-z, 0-9, - and _.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub key: String,
    /// checkout, bump, upsell, downsell, thank_you or custom
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^(checkout|bump|upsell|downsell|thank_you|custom)$")]
    pub kind: StepType,
    /// Where the step sits; the lowest is the entry. Absent: its index in the list.
    #[serde(default, deserialize_with = "crate::json::whole_opt")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    pub position: Option<u32>,
    /// The offer a bump, upsell or downsell presents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    #[serde(default, deserialize_with = "branches_object")]
    pub branches: BranchesBody,
}

/// A step's branches, from a JSON object only (serde would read an array positionally).
fn branches_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BranchesBody, D::Error> {
    use serde::de::Error as _;
    let value = serde_json::Value::deserialize(d)?;
    if !value.is_object() {
        return Err(D::Error::custom("must be an object"));
    }
    serde_json::from_value(value).map_err(D::Error::custom)
}

impl StepBody {
    /// The domain's step; a missing position is the step's index in the list.
    pub fn into_step(self, index: usize) -> Step {
        Step {
            key: self.key,
            kind: self.kind,
            position: self
                .position
                .unwrap_or_else(|| u32::try_from(index).unwrap_or(u32::MAX)),
            offer_id: self.offer_id,
            branches: Branches {
                default: self.branches.default,
                accepted: self.branches.accepted,
                declined: self.branches.declined,
            },
        }
    }
}

impl From<&Step> for StepBody {
    fn from(s: &Step) -> Self {
        StepBody {
            key: s.key.clone(),
            kind: s.kind,
            position: Some(s.position),
            offer_id: s.offer_id.clone(),
            branches: BranchesBody {
                default: s.branches.default.clone(),
                accepted: s.branches.accepted.clone(),
                declined: s.branches.declined.clone(),
            },
        }
    }
}

fn steps_of(bodies: Vec<StepBody>) -> Vec<Step> {
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.into_step(i))
        .collect()
}

/// Which carts a funnel is for, as sent and returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// Targeting rules on the cart: `{"all": [{"cart_min_total": 5000}, {"any":
    /// [{"product_in_cart": 42}, {"category_in_cart": "shoes"}]}]}`. Absent: every cart.
    /// `cart_min_total` is in minor units of the cart's currency.
    // Read through a JSON value: a rule of the wrong shape (`{}`) is a field error naming
    // `trigger.rules`, not a malformed body; `5000.0` is `5000`.
    #[serde(default, deserialize_with = "crate::json::with_whole_numbers")]
    #[schema(value_type = crate::openapi::Targeting)]
    pub rules: Targeting,
    /// Among the funnels whose rules match, the highest priority wins (−1000 to 1000, default
    /// 0).
    #[serde(default)]
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: i32,
    /// The funnel for carts no other funnel takes.
    #[serde(default)]
    pub is_default: bool,
}

impl From<TriggerBody> for Trigger {
    fn from(t: TriggerBody) -> Self {
        Trigger {
            rules: t.rules,
            priority: t.priority,
            is_default: t.is_default,
        }
    }
}

impl From<&Trigger> for TriggerBody {
    fn from(t: &Trigger) -> Self {
        TriggerBody {
            rules: t.rules.clone(),
            priority: t.priority,
            is_default: t.is_default,
        }
    }
}

/// How a funnel looks, as sent and returned.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// The theme's name (1 to 64 characters, default `default`).
    #[serde(default = "default_theme")]
    #[schema(min_length = 1, max_length = 64, pattern = "\\S")]
    pub theme: String,
    /// one_step, two_step (default) or three_step
    #[serde(default)]
    #[schema(value_type = String, pattern = "^(one_step|two_step|three_step)$")]
    pub layout: Layout,
}

fn default_theme() -> String {
    FunnelSettings::default().theme
}

impl Default for SettingsBody {
    fn default() -> Self {
        (&FunnelSettings::default()).into()
    }
}

impl From<SettingsBody> for FunnelSettings {
    fn from(s: SettingsBody) -> Self {
        FunnelSettings {
            theme: s.theme,
            layout: s.layout,
        }
    }
}

impl From<&FunnelSettings> for SettingsBody {
    fn from(s: &FunnelSettings) -> Self {
        SettingsBody {
            theme: s.theme.clone(),
            layout: s.layout,
        }
    }
}

/// The status a funnel is created in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InitialStatus {
    #[default]
    Draft,
    Active,
}

/// A funnel to create (`POST /funnels`, `ocart funnel create --file`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFunnel {
    /// The funnel's slug, its id for good: `^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$`.
    #[schema(pattern = "^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")]
    pub id: String,
    /// 1 to 200 characters, trimmed.
    #[schema(max_length = 200, pattern = "\\S")]
    pub name: String,
    /// draft (default) or active
    #[serde(default)]
    pub status: InitialStatus,
    #[serde(default)]
    pub trigger: TriggerBody,
    #[serde(default)]
    pub settings: SettingsBody,
    #[schema(min_items = 1)]
    pub steps: Vec<StepBody>,
}

/// Changes to a funnel (`PATCH /funnels/{id}`, `ocart funnel update --file`): what is given
/// replaces what is saved.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunnelPatch {
    #[schema(max_length = 200, pattern = "\\S")]
    pub name: Option<String>,
    pub trigger: Option<TriggerBody>,
    pub settings: Option<SettingsBody>,
    #[schema(min_items = 1)]
    pub steps: Option<Vec<StepBody>>,
}

/// A funnel as the API and the CLI show it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FunnelView {
    /// The slug.
    pub id: String,
    pub name: String,
    /// draft, active or archived
    pub status: String,
    pub trigger: TriggerBody,
    pub settings: SettingsBody,
    /// By position.
    pub steps: Vec<StepBody>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Global position of the last event written or applied (send as `OCart-Position` to read
    /// it back).
    pub position: Option<i64>,
}

/// What the checkout shows of the funnel a cart resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ResolvedFunnel {
    /// The slug.
    pub id: String,
    pub name: String,
    /// one_step, two_step or three_step
    pub layout: String,
    pub theme: String,
}

/// The funnel a cart gets, its steps, and the bumps the cart is eligible for.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Resolved {
    /// `null` when no active funnel applies (no rule matches and there is no default).
    pub funnel: Option<ResolvedFunnel>,
    /// The funnel's steps, by position (empty without a funnel).
    pub steps: Vec<StepBody>,
    pub bumps: Vec<EligibleBump>,
    /// The running A/B tests (checkout and bump) this answer serves the cart a variant of;
    /// absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<ResolvedTest>,
}

/// A running test a resolve served, and the cart's variant in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ResolvedTest {
    pub test_id: String,
    /// The variant's key.
    pub variant: String,
}

/// Whose funnel to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveBy {
    /// A cart id (an authenticated caller).
    Cart(String),
    /// The checkout session's token (the public checkout page).
    Session(String),
}

#[derive(Debug, thiserror::Error)]
pub enum FunnelsError {
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("a funnel with the slug {0} exists")]
    SlugTaken(String),
    #[error("funnel {0}")]
    NotFound(String),
    #[error("funnel {0} is archived")]
    Archived(String),
    #[error("cart {0}")]
    CartNotFound(String),
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(FunnelsError);

impl FunnelsError {
    fn of_command(slug: &str, err: CommandError<FunnelError>) -> Self {
        match StoreFailure::split(err) {
            Ok(failure) => Self::Store(failure),
            Err(FunnelError::Invalid(errors)) => Self::Invalid(errors),
            Err(FunnelError::SlugTaken) => Self::SlugTaken(slug.to_owned()),
            Err(FunnelError::NotFound) => Self::NotFound(slug.to_owned()),
            Err(FunnelError::Archived) => Self::Archived(slug.to_owned()),
        }
    }
}

impl From<BumpsError> for FunnelsError {
    fn from(err: BumpsError) -> Self {
        match err {
            BumpsError::Store(failure) => Self::Store(failure),
            BumpsError::Internal(err) => Self::Internal(err),
            other => Self::Internal(anyhow::anyhow!("bumps: {other}")),
        }
    }
}

fn view_of_aggregate(
    slug: &str,
    funnel: &Funnel,
    position: Option<i64>,
) -> Result<FunnelView, FunnelsError> {
    let definition = funnel
        .definition()
        .ok_or_else(|| FunnelsError::NotFound(slug.to_owned()))?;
    let mut steps: Vec<StepBody> = definition.steps.iter().map(StepBody::from).collect();
    steps.sort_by(|a, b| (a.position, &a.key).cmp(&(b.position, &b.key)));
    let at = funnel.updated_at().unwrap_or_default();
    Ok(FunnelView {
        id: slug.to_owned(),
        name: definition.name.clone(),
        status: funnel.status().as_str().to_owned(),
        trigger: (&definition.trigger).into(),
        settings: (&definition.settings).into(),
        steps,
        created_at: funnel.created_at().unwrap_or(at),
        updated_at: at,
        position,
    })
}

fn stored<T: serde::de::DeserializeOwned>(what: &str, raw: &str) -> Result<T, FunnelsError> {
    serde_json::from_str(raw)
        .map_err(|e| FunnelsError::Internal(anyhow::anyhow!("stored {what}: {e}")))
}

/// A stored name of an enum (`thank_you`, `two_step`) read back.
fn stored_name<T: serde::de::DeserializeOwned>(what: &str, raw: &str) -> Result<T, FunnelsError> {
    serde_json::from_value(serde_json::Value::String(raw.to_owned()))
        .map_err(|e| FunnelsError::Internal(anyhow::anyhow!("stored {what}: {e}")))
}

fn step_of_row(row: &FunnelStepRow) -> Result<StepBody, FunnelsError> {
    Ok(StepBody {
        key: row.step_key.clone(),
        kind: stored_name("step type", &row.step_type)?,
        position: Some(
            u32::try_from(row.position)
                .map_err(|e| FunnelsError::Internal(anyhow::anyhow!("stored position: {e}")))?,
        ),
        offer_id: row.offer_id.clone(),
        branches: stored("branches", &row.branches)?,
    })
}

fn view_of_row(row: FunnelRow, steps: &[FunnelStepRow]) -> Result<FunnelView, FunnelsError> {
    Ok(FunnelView {
        trigger: TriggerBody {
            rules: stored("trigger rules", &row.trigger_rules)?,
            priority: row.priority,
            is_default: row.is_default,
        },
        settings: SettingsBody {
            theme: row.theme,
            layout: stored_name("layout", &row.layout)?,
        },
        steps: steps.iter().map(step_of_row).collect::<Result<_, _>>()?,
        id: row.slug,
        name: row.name,
        status: row.status,
        created_at: row.created_at,
        updated_at: row.updated_at,
        position: Some(row.last_position),
    })
}

/// Runs `command` on funnel `slug` and answers the funnel as it now is. Drops this process's
/// snapshot, so its next resolve reads the change (once projected).
async fn run(
    core: &Core,
    slug: &str,
    command: FunnelCommand,
    meta: &CommandMeta,
) -> Result<FunnelView, FunnelsError> {
    let outcome = core
        .funnels
        .execute(slug, command, meta)
        .await
        .map_err(|e| FunnelsError::of_command(slug, e))?;
    core.funnel_cache.invalidate();
    view_of_aggregate(slug, &outcome.aggregate, outcome.last_position())
}

/// Creates a funnel.
pub async fn create(
    core: &Core,
    input: NewFunnel,
    meta: &CommandMeta,
) -> Result<FunnelView, FunnelsError> {
    // The slug is checked before it addresses anything in the log.
    ocart_domain::funnel::validate_slug("id", &input.id)
        .map_err(|e| FunnelsError::Invalid(vec![e]))?;
    let command = FunnelCommand::Create {
        slug: input.id.clone(),
        name: input.name,
        trigger: input.trigger.into(),
        settings: input.settings.into(),
        steps: steps_of(input.steps),
        active: input.status == InitialStatus::Active,
        at: meta.at,
    };
    run(core, &input.id, command, meta).await
}

/// Changes what `patch` gives.
pub async fn update(
    core: &Core,
    slug: &str,
    patch: FunnelPatch,
    meta: &CommandMeta,
) -> Result<FunnelView, FunnelsError> {
    let command = FunnelCommand::Update {
        name: patch.name,
        trigger: patch.trigger.map(Into::into),
        settings: patch.settings.map(Into::into),
        steps: patch.steps.map(steps_of),
        at: meta.at,
    };
    run(core, slug, command, meta).await
}

/// Activates a draft funnel (an active one stays so; an archived one is refused).
pub async fn activate(
    core: &Core,
    slug: &str,
    meta: &CommandMeta,
) -> Result<FunnelView, FunnelsError> {
    run(core, slug, FunnelCommand::Activate { at: meta.at }, meta).await
}

/// Archives a funnel, for good (archiving twice changes nothing).
pub async fn archive(
    core: &Core,
    slug: &str,
    meta: &CommandMeta,
) -> Result<FunnelView, FunnelsError> {
    run(core, slug, FunnelCommand::Archive { at: meta.at }, meta).await
}

/// The funnels (in `status`, if given), oldest first, from the read tables.
pub async fn list(core: &Core, status: Option<&str>) -> Result<Vec<FunnelView>, FunnelsError> {
    if let Some(s) = status {
        if !["draft", "active", "archived"].contains(&s) {
            return Err(FunnelsError::Invalid(vec![FieldError::new(
                "status",
                "must be draft, active or archived",
            )]));
        }
    }
    let rows = q::list_funnels(&core.db, status).await?;
    let steps = q::all_funnel_steps(&core.db).await?;
    rows.into_iter()
        .map(|row| {
            let mine: Vec<FunnelStepRow> = steps
                .iter()
                .filter(|s| s.funnel_id == row.slug)
                .cloned()
                .collect();
            view_of_row(row, &mine)
        })
        .collect()
}

/// One funnel, from the read tables.
pub async fn show(core: &Core, slug: &str) -> Result<FunnelView, FunnelsError> {
    let row = q::get_funnel(&core.db, slug)
        .await?
        .ok_or_else(|| FunnelsError::NotFound(slug.to_owned()))?;
    let steps = q::funnel_steps(&core.db, slug).await?;
    view_of_row(row, &steps)
}

/// One active funnel as the snapshot holds it.
#[derive(Debug, Clone)]
struct ActiveFunnel {
    funnel: ResolvedFunnel,
    rules: Targeting,
    is_default: bool,
    steps: Vec<StepBody>,
}

/// The active funnels, in the order resolve tries them: highest priority first, a default
/// funnel before another of the same priority, then by slug.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    funnels: Vec<ActiveFunnel>,
}

impl Snapshot {
    fn load(rows: Vec<FunnelRow>, steps: Vec<FunnelStepRow>) -> Result<Self, FunnelsError> {
        let mut funnels = Vec::with_capacity(rows.len());
        let mut order = Vec::with_capacity(rows.len());
        for row in rows {
            let mine: Vec<StepBody> = steps
                .iter()
                .filter(|s| s.funnel_id == row.slug)
                .map(step_of_row)
                .collect::<Result<_, _>>()?;
            order.push((row.priority, row.is_default));
            funnels.push(ActiveFunnel {
                rules: stored("trigger rules", &row.trigger_rules)?,
                is_default: row.is_default,
                steps: mine,
                funnel: ResolvedFunnel {
                    id: row.slug,
                    name: row.name,
                    layout: row.layout,
                    theme: row.theme,
                },
            });
        }
        let mut indexed: Vec<((i32, bool), ActiveFunnel)> =
            order.into_iter().zip(funnels).collect();
        indexed.sort_by(|((pa, da), a), ((pb, db), b)| {
            pb.cmp(pa)
                .then(db.cmp(da))
                .then_with(|| a.funnel.id.cmp(&b.funnel.id))
        });
        Ok(Self {
            funnels: indexed.into_iter().map(|(_, f)| f).collect(),
        })
    }

    /// The active funnel with this slug.
    fn by_slug(&self, slug: &str) -> Option<&ActiveFunnel> {
        self.funnels.iter().find(|f| f.funnel.id == slug)
    }

    /// The funnel for a cart: the first whose rules match (by priority), else the first
    /// default one; `facts` is `None` when the cart is unknown or unreadable (only a default
    /// funnel applies).
    fn pick(&self, facts: Option<&super::bumps::CartFacts>) -> Option<&ActiveFunnel> {
        if let Some(facts) = facts {
            let view = facts.view();
            let currency = view.subtotal.currency();
            if let Some(found) = self
                .funnels
                .iter()
                .find(|f| f.rules.matches(&view, currency))
            {
                return Some(found);
            }
        }
        self.funnels.iter().find(|f| f.is_default)
    }
}

/// The active funnels, held in memory and read again when older than [`SNAPSHOT_TTL`] (or
/// after a write of this process).
#[derive(Debug, Default)]
pub struct FunnelCache {
    snapshot: crate::snapshot::Refreshing<Snapshot>,
}

impl FunnelCache {
    /// Drops the snapshot: the next resolve reads the tables.
    pub fn invalidate(&self) {
        self.snapshot.invalidate();
    }

    async fn get(&self, core: &Core) -> Result<Arc<Snapshot>, FunnelsError> {
        self.snapshot
            .get(SNAPSHOT_TTL, || async {
                let (rows, steps) = q::active_funnels(&core.db).await?;
                Snapshot::load(rows, steps)
            })
            .await
    }
}

/// Checks a session token's shape (as capture does); `field` names it.
fn check_session_token(raw: &str) -> Result<(), FunnelsError> {
    let ok = (16..=128).contains(&raw.len())
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(FunnelsError::Invalid(vec![FieldError::new(
            "session_token",
            "must be 16 to 128 characters of A-Z, a-z, 0-9, - and _",
        )]))
    }
}

/// The funnel a cart gets: the active funnel whose trigger rules match it (highest priority
/// first, a default funnel before another of the same priority), else the default funnel,
/// else none; with the funnel's steps and the bumps the cart is eligible for. An unknown
/// `cart_id` is not found; a session without a cart yet (the page before the first capture)
/// gets the default funnel and no bumps.
///
/// A running checkout test that applies to the picked funnel (`abtest::checkout_test`)
/// assigns the cart (the unit: the cart id, for a session token the cart id it derives) and
/// serves its variant: a variant serving a layout serves the picked funnel in that layout (with
/// no funnel picked there is nothing to lay out); a variant serving a funnel slug serves that
/// funnel and its steps if it is active, and otherwise the picked funnel (the assignment
/// stands: the test's results count what the cart was shown, not what it was meant to get).
/// Running bump tests swap the bumps they target (`bumps::eligible_for_facts`). Every test
/// served is listed in `tests`. With no test running this costs what it did before: the
/// running tests are a snapshot in memory.
pub async fn resolve(core: &Core, by: ResolveBy) -> Result<Resolved, FunnelsError> {
    let cart_id = match &by {
        ResolveBy::Cart(id) => id.clone(),
        ResolveBy::Session(token) => {
            check_session_token(token)?;
            cart_id_for_session(token).to_string()
        }
    };
    let cart = ocart_projections::queries::get_cart(&core.db, &cart_id).await?;
    if cart.is_none() {
        if let ResolveBy::Cart(id) = by {
            return Err(FunnelsError::CartNotFound(id));
        }
    }
    let snapshot = core.funnel_cache.get(core).await?;
    let facts = cart.as_ref().and_then(cart_facts);
    let mut picked = snapshot.pick(facts.as_ref());
    let mut layout = None;
    let mut tests = Vec::new();
    let running = core.assigner.running(core).await?;
    if running.on(Surface::Checkout) {
        let slug = picked.map(|f| f.funnel.id.as_str());
        if let Some(test) = abtest::checkout_test(running.tests(), slug) {
            let assigned = super::assign::assign(core, test, &cart_id).await?;
            match abtest::checkout_serves(&assigned.variant.serves) {
                CheckoutServes::Layout(l) => layout = Some(l),
                CheckoutServes::Funnel(slug) => {
                    if let Some(funnel) = snapshot.by_slug(slug) {
                        picked = Some(funnel);
                    }
                }
            }
            tests.push(ResolvedTest {
                test_id: test.id.clone(),
                variant: assigned.variant.key.clone(),
            });
        }
    }
    let open = cart.as_ref().is_some_and(takes_bumps);
    let bumps = match &facts {
        Some(facts) if open => eligible_for_facts(core, facts, &cart_id).await?,
        _ => Vec::new(),
    };
    for bump in &bumps {
        if let (Some(test_id), Some(variant)) = (&bump.test_id, &bump.variant) {
            if !tests.iter().any(|t| &t.test_id == test_id) {
                tests.push(ResolvedTest {
                    test_id: test_id.clone(),
                    variant: variant.clone(),
                });
            }
        }
    }
    let funnel = picked.map(|f| {
        let mut funnel = f.funnel.clone();
        if let Some(layout) = layout {
            funnel.layout = layout.as_str().to_owned();
        }
        funnel
    });
    Ok(Resolved {
        funnel,
        steps: picked.map(|f| f.steps.clone()).unwrap_or_default(),
        bumps,
        tests,
    })
}
