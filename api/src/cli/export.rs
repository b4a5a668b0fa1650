//! `ocart export` and `ocart import`: the store's offers, funnels and recovery sequences as one
//! JSON document, and such a document written back (issue 11; `wp ocart export`).
//!
//! The document is `{"format": "ocart-export", "version": 1, "exported_at", "offers",
//! "funnels", "sequences"}`. Each item is its HTTP create body (`POST /bumps` or `/upsells`,
//! `POST /funnels`, `POST /recovery/sequences`) plus its `id` and `status`; archived items are
//! included with `status: "archived"`. A sequence's `active` is its on/off switch, as in its
//! create body; its `status` says whether it is archived. Each list is sorted by id and every
//! item is read from its aggregate, so two exports of one state differ only in `exported_at`.
//! None of it is personal data: offers, funnels and sequences are what the store owner defines
//! (products, prices, copy, template names), never a shopper's data.
//!
//! An import first reads the whole document into typed values (the domain's own parsers and
//! validators), then plans every item against the store's aggregates, reading only: what to
//! create, update, activate or archive, or nothing. Any problem — an unknown format or version,
//! a malformed item, an id given twice, a funnel step naming an offer neither in the file nor in
//! the store, a change an archived item cannot take, a status going backwards — is reported
//! naming the item, and nothing is written. Then the plan runs through the use cases and
//! commands HTTP uses (offers before funnels, whose steps name offers; then sequences), so
//! every change is an event with its audit entry. An item already as the file says is left
//! alone: importing one file twice changes nothing the second time. Offers keep their ids.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use ocart_domain::funnel::{self as funnel, FunnelDefinition, FunnelSettings, FunnelStatus};
use ocart_domain::offer::{OfferDefinition, OfferKind, OfferStatus};
use ocart_domain::recovery::{self as recovery, SequenceCommand, SequenceDefinition, TriggerType};
use ocart_domain::FieldError;
use ocart_projections::queries::recovery as sequence_rows;
use ocart_projections::queries::{funnels as funnel_rows, offers as offer_rows};
use ocart_projections::{CommandError, CommandMeta};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{cli_meta, open, print};
use crate::config::Config;
use crate::core::Core;
use crate::routes::recovery::StepBody as SequenceStepBody;
use crate::usecases::funnels::{
    self as funnels_uc, FunnelPatch, FunnelsError, InitialStatus, NewFunnel, SettingsBody,
    StepBody, TriggerBody,
};
use crate::usecases::offers::{self as offers_uc, Family, OffersError};

/// The document's `format`.
pub const FORMAT: &str = "ocart-export";
/// The document's `version` this build writes and reads.
pub const VERSION: u64 = 1;

/// The top-level keys a document may have.
const KEYS: &[&str] = &[
    "format",
    "version",
    "exported_at",
    "offers",
    "funnels",
    "sequences",
];

/// The longest offer or sequence id an import takes.
const MAX_ID_LEN: usize = 64;

#[derive(Debug, Serialize)]
struct Document {
    format: &'static str,
    version: u64,
    exported_at: DateTime<Utc>,
    offers: Vec<OfferItem>,
    funnels: Vec<FunnelItem>,
    sequences: Vec<SequenceItem>,
}

/// An offer as exported: its definition as `POST /bumps` or `POST /upsells` takes it (with its
/// `kind`), its id and status. Read back by [`offer_item`] with `OfferDefinition::parse`.
#[derive(Debug, Serialize)]
struct OfferItem {
    id: String,
    status: OfferStatus,
    #[serde(flatten)]
    definition: OfferDefinition,
}

/// A funnel: `POST /funnels`'s body, with `status` draft, active or archived.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunnelItem {
    id: String,
    status: FunnelStatus,
    name: String,
    #[serde(default)]
    trigger: TriggerBody,
    #[serde(default)]
    settings: SettingsBody,
    steps: Vec<StepBody>,
}

/// Whether a sequence is archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Lifecycle {
    Active,
    Archived,
}

/// A recovery sequence: `POST /recovery/sequences`'s body, its id, and whether it is archived.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SequenceItem {
    id: String,
    status: Lifecycle,
    name: String,
    trigger_type: TriggerType,
    steps: Vec<SequenceStepBody>,
    #[serde(default = "switched_on")]
    active: bool,
}

fn switched_on() -> bool {
    true
}

/// Makes the read tables current before a read.
async fn current(core: &Core) -> anyhow::Result<()> {
    let (_, head) = core.log.stats().await?;
    core.ensure_projected(head).await
}

/// A funnel's steps by position (then key), as the API shows them.
fn steps_by_position(steps: &[funnel::Step]) -> Vec<StepBody> {
    let mut bodies: Vec<StepBody> = steps.iter().map(StepBody::from).collect();
    bodies.sort_by(|a, b| (a.position, &a.key).cmp(&(b.position, &b.key)));
    bodies
}

/// The store's offers, funnels and sequences, each list by id, each item from its aggregate.
async fn snapshot(core: &Core) -> anyhow::Result<Document> {
    let mut offer_ids = Vec::new();
    for family in [Family::Bumps, Family::Upsells] {
        offer_ids.extend(
            offer_rows::list_offers(&core.db, family.kinds(), true)
                .await?
                .into_iter()
                .map(|row| row.id),
        );
    }
    offer_ids.sort();
    offer_ids.dedup();
    let mut offers = Vec::with_capacity(offer_ids.len());
    for id in offer_ids {
        let (offer, _, _) = core
            .offers
            .load(&id)
            .await
            .map_err(|e| anyhow!("offer {id}: {e}"))?;
        if let (Some(definition), Some(status)) = (offer.definition(), offer.status()) {
            offers.push(OfferItem {
                id,
                status,
                definition: definition.clone(),
            });
        }
    }

    let mut slugs: Vec<String> = funnel_rows::list_funnels(&core.db, None)
        .await?
        .into_iter()
        .map(|row| row.slug)
        .collect();
    slugs.sort();
    let mut funnels = Vec::with_capacity(slugs.len());
    for slug in slugs {
        let (found, _, _) = core
            .funnels
            .load(&slug)
            .await
            .map_err(|e| anyhow!("funnel {slug}: {e}"))?;
        if let Some(definition) = found.definition() {
            funnels.push(FunnelItem {
                status: found.status(),
                name: definition.name.clone(),
                trigger: (&definition.trigger).into(),
                settings: (&definition.settings).into(),
                steps: steps_by_position(&definition.steps),
                id: slug,
            });
        }
    }

    let mut sequence_ids: Vec<String> = sequence_rows::list_sequences(&core.db, true)
        .await?
        .into_iter()
        .map(|row| row.sequence_id)
        .collect();
    sequence_ids.sort();
    let mut sequences = Vec::with_capacity(sequence_ids.len());
    for id in sequence_ids {
        let (found, _, _) = core
            .sequences
            .load(&id)
            .await
            .map_err(|e| anyhow!("sequence {id}: {e}"))?;
        if let Some(definition) = found.definition() {
            sequences.push(SequenceItem {
                status: if found.is_archived() {
                    Lifecycle::Archived
                } else {
                    Lifecycle::Active
                },
                name: definition.name.clone(),
                trigger_type: definition.trigger,
                steps: definition
                    .steps
                    .iter()
                    .map(SequenceStepBody::from)
                    .collect(),
                active: definition.active,
                id,
            });
        }
    }

    Ok(Document {
        format: FORMAT,
        version: VERSION,
        exported_at: ocart_domain::Clock::now(&*core.clock),
        offers,
        funnels,
        sequences,
    })
}

/// `ocart export [--out FILE]`: the document on stdout, or written to FILE with a summary.
pub async fn export(config: Config, out: Option<PathBuf>, json_out: bool) -> anyhow::Result<()> {
    let core = open(config).await?;
    current(&core).await?;
    let document = snapshot(&core).await?;
    let mut text = serde_json::to_string_pretty(&document)?;
    text.push('\n');
    match out {
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
        Some(path) => {
            std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
            let summary = json!({
                "out": path.display().to_string(),
                "offers": document.offers.len(),
                "funnels": document.funnels.len(),
                "sequences": document.sequences.len(),
            });
            print(json_out, &summary, || {
                format!(
                    "exported {} offers, {} funnels and {} sequences to {}",
                    document.offers.len(),
                    document.funnels.len(),
                    document.sequences.len(),
                    path.display()
                )
            });
        }
    }
    Ok(())
}

/// An offer read back from the document.
#[derive(Debug)]
struct ParsedOffer {
    label: String,
    id: String,
    status: OfferStatus,
    definition: OfferDefinition,
}

/// A funnel read back, with its definition as the aggregate would save it.
#[derive(Debug)]
struct ParsedFunnel {
    label: String,
    item: FunnelItem,
    definition: FunnelDefinition,
}

/// A sequence read back, with its definition as the aggregate would save it (steps
/// normalised).
#[derive(Debug)]
struct ParsedSequence {
    label: String,
    id: String,
    archived: bool,
    definition: SequenceDefinition,
}

/// A whole document read into typed values.
#[derive(Debug, Default)]
struct Parsed {
    offers: Vec<ParsedOffer>,
    funnels: Vec<ParsedFunnel>,
    sequences: Vec<ParsedSequence>,
}

/// How an item is named in errors: `funnels[2] "main"`.
fn label(list: &str, index: usize, value: &Value) -> String {
    match value.get("id").and_then(Value::as_str) {
        Some(id) => format!("{list}[{index}] {id:?}"),
        None => format!("{list}[{index}]"),
    }
}

fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

fn check_id(id: &str) -> Result<(), FieldError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "id",
            format!("must be 1 to {MAX_ID_LEN} of A-Z, a-z, 0-9, - and _"),
        ))
    }
}

/// Reads one item into `T`, naming the bad field (`steps[2].type: unknown variant …`).
fn typed<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, Vec<FieldError>> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        vec![if path == "." {
            FieldError::new("item", inner)
        } else {
            FieldError::new(path, inner)
        }]
    })
}

/// An offer item: `id`, `status`, and the rest parsed by `OfferDefinition::parse` (which names
/// each field it refuses), `kind` required.
fn offer_item(value: &Value) -> Result<(String, OfferStatus, OfferDefinition), Vec<FieldError>> {
    let Some(obj) = value.as_object() else {
        return Err(vec![FieldError::new("item", "must be a JSON object")]);
    };
    let mut errors = Vec::new();
    let id = match obj.get("id") {
        Some(Value::String(id)) => {
            if let Err(e) = check_id(id) {
                errors.push(e);
            }
            id.clone()
        }
        _ => {
            errors.push(FieldError::new("id", "is required (a string)"));
            String::new()
        }
    };
    let status = match obj.get("status").and_then(Value::as_str) {
        Some("active") => Some(OfferStatus::Active),
        Some("archived") => Some(OfferStatus::Archived),
        _ => {
            errors.push(FieldError::new("status", "must be active or archived"));
            None
        }
    };
    if obj.get("kind").is_none_or(Value::is_null) {
        errors.push(FieldError::new(
            "kind",
            "is required (bump, upsell or downsell)",
        ));
    }
    let mut rest: Map<String, Value> = obj.clone();
    rest.remove("id");
    rest.remove("status");
    let definition = match OfferDefinition::parse(&Value::Object(rest), OfferKind::Bump) {
        Ok(definition) => Some(definition),
        Err(mut more) => {
            errors.append(&mut more);
            None
        }
    };
    match (status, definition, errors.is_empty()) {
        (Some(status), Some(definition), true) => Ok((id, status, definition)),
        _ => Err(errors),
    }
}

/// The definition the `Funnel` aggregate would save for `item` (its slug checked too), by the
/// domain's own check.
fn funnel_definition(item: &FunnelItem) -> Result<FunnelDefinition, Vec<FieldError>> {
    let slug = funnel::validate_slug("id", &item.id).err();
    let steps = item
        .steps
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, s)| s.into_step(i))
        .collect();
    let definition = FunnelDefinition::checked(
        item.name.clone(),
        item.trigger.clone().into(),
        FunnelSettings {
            theme: item.settings.theme.clone(),
            layout: item.settings.layout,
        },
        steps,
    );
    match (slug, definition) {
        (None, definition) => definition,
        (Some(slug), Ok(_)) => Err(vec![slug]),
        (Some(slug), Err(mut errors)) => {
            errors.insert(0, slug);
            Err(errors)
        }
    }
}

/// The definition the `RecoverySequence` aggregate would save for `item` (name checked, steps
/// normalised by the domain).
fn sequence_definition(item: &SequenceItem) -> Result<SequenceDefinition, Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Err(e) = check_id(&item.id) {
        errors.push(e);
    }
    let name = item.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > recovery::MAX_NAME_LEN {
        errors.push(FieldError::new(
            "name",
            format!("must be 1 to {} characters", recovery::MAX_NAME_LEN),
        ));
    }
    let steps = match recovery::normalise(
        item.steps
            .iter()
            .cloned()
            .map(recovery::Step::from)
            .collect(),
    ) {
        Ok(steps) => steps,
        Err(mut more) => {
            errors.append(&mut more);
            Vec::new()
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(SequenceDefinition {
        name,
        trigger: item.trigger_type,
        steps,
        active: item.active,
    })
}

fn invalid(errors: &[String]) -> anyhow::Error {
    anyhow!(
        "the import file is not valid; nothing was written:\n  {}",
        errors.join("\n  ")
    )
}

/// Reads a whole document into typed values; every problem is named by its item.
fn parse_document(text: &str) -> anyhow::Result<Parsed> {
    let root: Value =
        serde_json::from_str(text).map_err(|e| anyhow!("the file is not JSON: {e}"))?;
    let Some(obj) = root.as_object() else {
        bail!("the file is not an ocart export: it is not a JSON object");
    };
    match obj.get("format") {
        Some(Value::String(s)) if s == FORMAT => {}
        Some(other) => {
            bail!("the file is not an ocart export: format is {other}, not \"{FORMAT}\"")
        }
        None => bail!("the file is not an ocart export: it has no \"format\""),
    }
    match obj.get("version") {
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(other) => bail!(
            "version {other} of the export format is not supported (this ocart reads version {VERSION})"
        ),
        None => bail!("the file has no \"version\" (this ocart reads version {VERSION})"),
    }
    let mut errors = Vec::new();
    for key in obj.keys() {
        if !KEYS.contains(&key.as_str()) {
            errors.push(format!("{key}: unknown field"));
        }
    }
    let list = |key: &str, errors: &mut Vec<String>| -> Vec<Value> {
        match obj.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => {
                errors.push(format!("{key}: must be a list"));
                Vec::new()
            }
        }
    };
    let mut parsed = Parsed::default();

    let mut seen = BTreeSet::new();
    for (i, value) in list("offers", &mut errors).iter().enumerate() {
        let label = label("offers", i, value);
        match offer_item(value) {
            Ok((id, status, definition)) => {
                if !seen.insert(id.clone()) {
                    errors.push(format!("{label}: id: given twice"));
                }
                parsed.offers.push(ParsedOffer {
                    label,
                    id,
                    status,
                    definition,
                });
            }
            Err(e) => errors.push(format!("{label}: {}", describe(&e))),
        }
    }

    let mut seen = BTreeSet::new();
    for (i, value) in list("funnels", &mut errors).iter().enumerate() {
        let label = label("funnels", i, value);
        match typed::<FunnelItem>(value).and_then(|item| {
            let definition = funnel_definition(&item)?;
            Ok((item, definition))
        }) {
            Ok((item, definition)) => {
                if !seen.insert(item.id.clone()) {
                    errors.push(format!("{label}: id: given twice"));
                }
                parsed.funnels.push(ParsedFunnel {
                    label,
                    item,
                    definition,
                });
            }
            Err(e) => errors.push(format!("{label}: {}", describe(&e))),
        }
    }

    let mut seen = BTreeSet::new();
    for (i, value) in list("sequences", &mut errors).iter().enumerate() {
        let label = label("sequences", i, value);
        match typed::<SequenceItem>(value).and_then(|item| {
            let definition = sequence_definition(&item)?;
            Ok((item, definition))
        }) {
            Ok((item, definition)) => {
                if !seen.insert(item.id.clone()) {
                    errors.push(format!("{label}: id: given twice"));
                }
                parsed.sequences.push(ParsedSequence {
                    label,
                    id: item.id,
                    archived: item.status == Lifecycle::Archived,
                    definition,
                });
            }
            Err(e) => errors.push(format!("{label}: {}", describe(&e))),
        }
    }

    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(invalid(&errors))
    }
}

/// What an item needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Created,
    Updated,
    Unchanged,
}

/// One write of the plan.
#[derive(Debug)]
enum Op {
    CreateOffer(Family, Value),
    /// A JSON merge patch from the saved definition to the file's.
    UpdateOffer(Family, Value),
    ArchiveOffer(Family),
    CreateFunnel(Box<NewFunnel>),
    UpdateFunnel(Box<FunnelPatch>),
    ActivateFunnel,
    ArchiveFunnel,
    CreateSequence(SequenceDefinition),
    UpdateSequence(SequenceDefinition),
    ArchiveSequence,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Self::CreateOffer(..) | Self::CreateFunnel(_) | Self::CreateSequence(_) => "create",
            Self::UpdateOffer(..) | Self::UpdateFunnel(_) | Self::UpdateSequence(_) => "update",
            Self::ActivateFunnel => "activate",
            Self::ArchiveOffer(_) | Self::ArchiveFunnel | Self::ArchiveSequence => "archive",
        }
    }
}

/// One item of the plan: what it is and the writes it needs (none: unchanged).
#[derive(Debug)]
struct Planned {
    kind: &'static str,
    id: String,
    ops: Vec<Op>,
}

impl Planned {
    fn action(&self) -> Action {
        match self.ops.first() {
            None => Action::Unchanged,
            Some(op) if op.name() == "create" => Action::Created,
            Some(_) => Action::Updated,
        }
    }
}

fn family_of(kind: OfferKind) -> Family {
    match kind {
        OfferKind::Bump => Family::Bumps,
        OfferKind::Upsell | OfferKind::Downsell => Family::Upsells,
    }
}

/// A JSON merge patch (RFC 7386) that turns `old` into `new` (a `null` in `new` is a field
/// left out, as `OfferDefinition::parse` reads it).
fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, value) in old {
                let gone = new.get(key).is_none_or(Value::is_null);
                if gone && !value.is_null() {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            for (key, value) in new {
                if value.is_null() {
                    continue;
                }
                match old.get(key) {
                    Some(before) if before == value => {}
                    Some(before @ Value::Object(_)) if value.is_object() => {
                        patch.insert(key.clone(), merge_patch(before, value));
                    }
                    _ => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            Value::Object(patch)
        }
        (_, new) => new.clone(),
    }
}

/// Whether two funnel definitions are the same funnel (steps compared by position and key,
/// whatever order they were given in).
fn same_funnel(a: &FunnelDefinition, b: &FunnelDefinition) -> bool {
    a.name == b.name
        && a.trigger == b.trigger
        && a.settings == b.settings
        && steps_by_position(&a.steps) == steps_by_position(&b.steps)
}

fn rank(status: FunnelStatus) -> u8 {
    match status {
        FunnelStatus::Draft => 0,
        FunnelStatus::Active => 1,
        FunnelStatus::Archived => 2,
    }
}

/// Plans every item against the store's aggregates (reads only). Any problem is an error
/// naming its items, before anything is written.
async fn plan(core: &Core, parsed: &Parsed) -> anyhow::Result<Vec<Planned>> {
    let mut errors = Vec::new();
    let mut planned = Vec::new();

    // Offers the funnels may name: the file's, and the store's (looked up once each).
    let mut offers_known: BTreeMap<String, bool> =
        parsed.offers.iter().map(|o| (o.id.clone(), true)).collect();

    for o in &parsed.offers {
        let (offer, _, _) = core
            .offers
            .load(&o.id)
            .await
            .map_err(|e| anyhow!("offer {}: {e}", o.id))?;
        let family = family_of(o.definition.kind);
        let wanted = serde_json::to_value(&o.definition)?;
        let mut ops = Vec::new();
        match (offer.definition(), offer.status()) {
            (Some(saved), Some(status)) => {
                if saved.kind.is_upsell() != o.definition.kind.is_upsell() {
                    errors.push(format!(
                        "{}: is a {} in this store; a bump cannot become an upsell or downsell, nor the other way round",
                        o.label,
                        saved.kind.as_str()
                    ));
                    continue;
                }
                let same = *saved == o.definition;
                match (status, o.status) {
                    (OfferStatus::Archived, OfferStatus::Active) => errors.push(format!(
                        "{}: is archived in this store; an archived offer is not offered again",
                        o.label
                    )),
                    (OfferStatus::Archived, OfferStatus::Archived) if !same => {
                        errors.push(format!(
                            "{}: is archived in this store with another definition; an archived offer cannot change",
                            o.label
                        ))
                    }
                    (OfferStatus::Archived, OfferStatus::Archived) => {}
                    (OfferStatus::Active, wanted_status) => {
                        if !same {
                            let saved = serde_json::to_value(saved)?;
                            ops.push(Op::UpdateOffer(family, merge_patch(&saved, &wanted)));
                        }
                        if wanted_status == OfferStatus::Archived {
                            ops.push(Op::ArchiveOffer(family));
                        }
                    }
                }
            }
            _ => {
                ops.push(Op::CreateOffer(family, wanted));
                if o.status == OfferStatus::Archived {
                    ops.push(Op::ArchiveOffer(family));
                }
            }
        }
        planned.push(Planned {
            kind: "offer",
            id: o.id.clone(),
            ops,
        });
    }

    for f in &parsed.funnels {
        for (i, step) in f.item.steps.iter().enumerate() {
            let Some(offer_id) = step.offer_id.as_deref() else {
                continue;
            };
            let known = match offers_known.get(offer_id) {
                Some(known) => *known,
                None => {
                    let (offer, _, _) = core
                        .offers
                        .load(offer_id)
                        .await
                        .map_err(|e| anyhow!("offer {offer_id}: {e}"))?;
                    let known = offer.definition().is_some();
                    offers_known.insert(offer_id.to_owned(), known);
                    known
                }
            };
            if !known {
                errors.push(format!(
                    "{}: steps[{i}].offer_id: names the offer {offer_id:?}, which is neither in the file nor in this store",
                    f.label
                ));
            }
        }
        let slug = f.item.id.as_str();
        let (found, _, _) = core
            .funnels
            .load(slug)
            .await
            .map_err(|e| anyhow!("funnel {slug}: {e}"))?;
        let wanted = f.item.status;
        let mut ops = Vec::new();
        match found.definition() {
            None => {
                ops.push(Op::CreateFunnel(Box::new(NewFunnel {
                    id: f.item.id.clone(),
                    name: f.item.name.clone(),
                    status: if wanted == FunnelStatus::Active {
                        InitialStatus::Active
                    } else {
                        InitialStatus::Draft
                    },
                    trigger: f.item.trigger.clone(),
                    settings: f.item.settings.clone(),
                    steps: f.item.steps.clone(),
                })));
                if wanted == FunnelStatus::Archived {
                    ops.push(Op::ArchiveFunnel);
                }
            }
            Some(saved) => {
                let status = found.status();
                let same = same_funnel(saved, &f.definition);
                if rank(wanted) < rank(status) {
                    errors.push(format!(
                        "{}: is {} in this store and {} in the file; a funnel's status only moves forward (draft, active, archived)",
                        f.label,
                        status.as_str(),
                        wanted.as_str()
                    ));
                } else if status == FunnelStatus::Archived && !same {
                    errors.push(format!(
                        "{}: is archived in this store with another definition; an archived funnel cannot change",
                        f.label
                    ));
                } else {
                    if !same {
                        ops.push(Op::UpdateFunnel(Box::new(FunnelPatch {
                            name: Some(f.item.name.clone()),
                            trigger: Some(f.item.trigger.clone()),
                            settings: Some(f.item.settings.clone()),
                            steps: Some(f.item.steps.clone()),
                        })));
                    }
                    if status == FunnelStatus::Draft && wanted == FunnelStatus::Active {
                        ops.push(Op::ActivateFunnel);
                    }
                    if status != FunnelStatus::Archived && wanted == FunnelStatus::Archived {
                        ops.push(Op::ArchiveFunnel);
                    }
                }
            }
        }
        planned.push(Planned {
            kind: "funnel",
            id: f.item.id.clone(),
            ops,
        });
    }

    for s in &parsed.sequences {
        let (found, _, _) = core
            .sequences
            .load(&s.id)
            .await
            .map_err(|e| anyhow!("sequence {}: {e}", s.id))?;
        let mut ops = Vec::new();
        match found.definition() {
            None => {
                ops.push(Op::CreateSequence(s.definition.clone()));
                if s.archived {
                    ops.push(Op::ArchiveSequence);
                }
            }
            Some(saved) => {
                let same = *saved == s.definition;
                match (found.is_archived(), s.archived) {
                    (true, false) => errors.push(format!(
                        "{}: is archived in this store; an archived sequence opens no runs again",
                        s.label
                    )),
                    (true, true) if !same => errors.push(format!(
                        "{}: is archived in this store with another definition; an archived sequence cannot change",
                        s.label
                    )),
                    (true, true) => {}
                    (false, archive) => {
                        if !same {
                            ops.push(Op::UpdateSequence(s.definition.clone()));
                        }
                        if archive {
                            ops.push(Op::ArchiveSequence);
                        }
                    }
                }
            }
        }
        planned.push(Planned {
            kind: "sequence",
            id: s.id.clone(),
            ops,
        });
    }

    if errors.is_empty() {
        Ok(planned)
    } else {
        Err(invalid(&errors))
    }
}

fn offer_failure(err: OffersError) -> anyhow::Error {
    match err {
        OffersError::Invalid(errors) => anyhow!("{}", describe(&errors)),
        other => other.into(),
    }
}

fn funnel_failure(err: FunnelsError) -> anyhow::Error {
    match err {
        FunnelsError::Invalid(errors) => anyhow!("{}", describe(&errors)),
        other => other.into(),
    }
}

fn sequence_failure(err: CommandError<recovery::SequenceError>) -> anyhow::Error {
    match err {
        CommandError::Rejected(recovery::SequenceError::Invalid(errors)) => {
            anyhow!("{}", describe(&errors))
        }
        other => other.into(),
    }
}

/// Runs one write through its use case (or, for sequences, the command HTTP sends); answers
/// the position of the last event it wrote.
async fn run_op(core: &Core, id: &str, op: &Op, meta: &CommandMeta) -> anyhow::Result<Option<i64>> {
    Ok(match op {
        Op::CreateOffer(family, body) => {
            offers_uc::create_with_id(core, *family, id, body, meta)
                .await
                .map_err(offer_failure)?
                .position
        }
        Op::UpdateOffer(family, patch) => {
            offers_uc::update(core, *family, id, patch, meta)
                .await
                .map_err(offer_failure)?
                .position
        }
        Op::ArchiveOffer(family) => {
            offers_uc::archive(core, *family, id, meta)
                .await
                .map_err(offer_failure)?
                .position
        }
        Op::CreateFunnel(input) => {
            funnels_uc::create(core, (**input).clone(), meta)
                .await
                .map_err(funnel_failure)?
                .position
        }
        Op::UpdateFunnel(patch) => {
            funnels_uc::update(core, id, (**patch).clone(), meta)
                .await
                .map_err(funnel_failure)?
                .position
        }
        Op::ActivateFunnel => {
            funnels_uc::activate(core, id, meta)
                .await
                .map_err(funnel_failure)?
                .position
        }
        Op::ArchiveFunnel => {
            funnels_uc::archive(core, id, meta)
                .await
                .map_err(funnel_failure)?
                .position
        }
        Op::CreateSequence(definition) | Op::UpdateSequence(definition) => {
            let command = if matches!(op, Op::CreateSequence(_)) {
                SequenceCommand::Create {
                    name: definition.name.clone(),
                    trigger: definition.trigger,
                    steps: definition.steps.clone(),
                    active: definition.active,
                    at: meta.at,
                }
            } else {
                SequenceCommand::Update {
                    name: Some(definition.name.clone()),
                    trigger: Some(definition.trigger),
                    steps: Some(definition.steps.clone()),
                    active: Some(definition.active),
                    at: meta.at,
                }
            };
            core.sequences
                .execute(id, command, meta)
                .await
                .map_err(sequence_failure)?
                .last_position()
        }
        Op::ArchiveSequence => core
            .sequences
            .execute(id, SequenceCommand::Archive { at: meta.at }, meta)
            .await
            .map_err(sequence_failure)?
            .last_position(),
    })
}

/// The import's answer: counts, and each item with what it needed.
fn report(source: &str, plan: &[Planned], dry_run: bool) -> (Value, String) {
    let count = |action| plan.iter().filter(|p| p.action() == action).count();
    let (created, updated, unchanged) = (
        count(Action::Created),
        count(Action::Updated),
        count(Action::Unchanged),
    );
    let items: Vec<Value> = plan
        .iter()
        .map(|p| {
            json!({
                "kind": p.kind,
                "id": p.id,
                "action": p.action(),
                "ops": p.ops.iter().map(Op::name).collect::<Vec<_>>(),
            })
        })
        .collect();
    let value = json!({
        "file": source,
        "dry_run": dry_run,
        "created": created,
        "updated": updated,
        "unchanged": unchanged,
        "items": items,
    });
    let mut human = if dry_run {
        format!(
            "dry run of {source}, nothing written: would create {created}, update {updated}, leave {unchanged} unchanged"
        )
    } else {
        format!("imported {source}: {created} created, {updated} updated, {unchanged} unchanged")
    };
    for p in plan.iter().filter(|p| !p.ops.is_empty()) {
        human.push_str(&format!(
            "\n  {} {}: {}",
            p.kind,
            p.id,
            p.ops.iter().map(Op::name).collect::<Vec<_>>().join(", ")
        ));
    }
    (value, human)
}

fn read_input(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the document from stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// `ocart import FILE [--dry-run]`: checks the whole document, plans it against the store, and
/// (unless a dry run) writes the plan through the use cases.
pub async fn import(
    config: Config,
    file: PathBuf,
    dry_run: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    let text = read_input(&file)?;
    let parsed = parse_document(&text)?;
    let core = open(config).await?;
    let plan = plan(&core, &parsed).await?;
    if !dry_run {
        let meta = cli_meta(&core);
        let mut last = None;
        for item in &plan {
            for op in &item.ops {
                let position = run_op(&core, &item.id, op, &meta).await.with_context(|| {
                    format!(
                        "{} {}: {} failed (the items before it were imported; importing the file again goes on from here)",
                        item.kind,
                        item.id,
                        op.name()
                    )
                })?;
                last = last.max(position);
            }
        }
        if let Some(position) = last {
            core.ensure_projected(position).await?;
        }
    }
    let (value, human) = report(&file.display().to_string(), &plan, dry_run);
    print(json_out, &value, || human);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(extra: Value) -> String {
        let mut doc = json!({"format": FORMAT, "version": 1, "exported_at": "2026-01-01T00:00:00Z",
                             "offers": [], "funnels": [], "sequences": []});
        if let (Some(doc), Some(extra)) = (doc.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                doc.insert(k.clone(), v.clone());
            }
        }
        doc.to_string()
    }

    fn bump(id: &str) -> Value {
        json!({"id": id, "status": "active", "kind": "bump", "name": "Wrap", "currency": "EUR",
               "product": {"product_id": 7, "name": "Gift wrap", "price": 1500, "quantity": 1},
               "pricing": {"type": "fixed_addon", "amount": 300}})
    }

    fn error_of(text: &str) -> String {
        parse_document(text).unwrap_err().to_string()
    }

    #[test]
    fn a_merge_patch_turns_the_saved_definition_into_the_new_one() {
        let old = json!({"name": "a", "pricing": {"type": "price", "amount": 1},
                         "display": {"headline": "h", "image_url": "https://x/y.png"},
                         "page_template": "<p>"});
        let new = json!({"name": "a", "pricing": {"type": "discount_pct", "value": "15"},
                         "display": {"headline": "h", "image_url": null},
                         "page_template": null});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"pricing": {"type": "discount_pct", "value": "15", "amount": null},
                   "display": {"image_url": null}, "page_template": null})
        );
        assert_eq!(merge_patch(&new, &new), json!({}), "no change, no patch");
    }

    #[test]
    fn the_format_and_version_are_checked_first() {
        assert!(error_of("[1]").contains("not an ocart export"));
        assert!(error_of(r#"{"format": "other", "version": 1}"#).contains("format"));
        let v2 = document(json!({"version": 2}));
        assert!(error_of(&v2).contains("version 2"), "{}", error_of(&v2));
        assert!(error_of(&document(json!({"extra": 1}))).contains("extra: unknown field"));
        assert!(parse_document(&document(json!({}))).is_ok());
    }

    #[test]
    fn a_bad_item_is_named_with_its_field() {
        let mut broken = bump("b-2");
        broken["pricing"] = json!({"type": "cheap"});
        let text = document(json!({"offers": [bump("b-1"), broken, bump("b-1")]}));
        let err = error_of(&text);
        assert!(err.contains("offers[1] \"b-2\": pricing.type"), "{err}");
        assert!(err.contains("offers[2] \"b-1\": id: given twice"), "{err}");
        assert!(err.contains("nothing was written"), "{err}");

        let funnel = json!({"id": "main", "status": "active", "name": "Main", "steps": [
            {"key": "checkout", "type": "checkout", "branches": {"default": "nowhere"}}]});
        let err = error_of(&document(json!({"funnels": [funnel]})));
        assert!(err.contains("funnels[0] \"main\": steps[0]"), "{err}");

        let sequence = json!({"id": "s", "status": "paused", "name": "S",
                              "trigger_type": "cart_abandoned", "steps": [], "active": true});
        let err = error_of(&document(json!({"sequences": [sequence]})));
        assert!(err.contains("sequences[0] \"s\": status"), "{err}");
    }

    #[test]
    fn items_read_back_as_the_aggregates_save_them() {
        let sequence = json!({"id": "s-1", "status": "active", "name": "  Winback ",
                              "trigger_type": "cart_abandoned", "active": false,
                              "steps": [{"channel": "email", "delay_min": 1, "template": "t"}]});
        let funnel = json!({"id": "main", "status": "draft", "name": " Main ", "steps": [
            {"key": "thanks", "type": "thank_you", "position": 1},
            {"key": "checkout", "type": "checkout", "position": 0, "branches": {"default": "thanks"}}]});
        let parsed = parse_document(&document(json!({
            "offers": [bump("b-1")], "funnels": [funnel], "sequences": [sequence]})))
        .unwrap();
        assert_eq!(parsed.offers[0].definition.name, "Wrap");
        let f = &parsed.funnels[0].definition;
        assert_eq!(f.name, "Main");
        assert_eq!(
            steps_by_position(&f.steps)[0].key,
            "checkout",
            "steps compare by position"
        );
        let s = &parsed.sequences[0].definition;
        assert_eq!(s.name, "Winback");
        assert_eq!(
            s.steps[0].delay_min,
            recovery::MIN_DELAY_MIN,
            "delays are normalised"
        );
        assert!(!s.active);
    }
}
