//! The `Funnel` aggregate: one funnel, identified by its slug (the aggregate id, which never
//! changes). It holds a name, a status (`draft`, `active`, `archived`), the trigger that picks
//! it for a cart (targeting rules, a priority, whether it is the default funnel), its display
//! settings (theme, layout) and its steps, kept valid by [`super::validate`]. Archiving is
//! final: an archived funnel is neither activated nor changed again.

use std::ops::RangeInclusive;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::{validate, Step};
use crate::offer::Targeting;
use crate::FieldError;

/// The longest funnel name.
pub const MAX_NAME_LEN: usize = 200;
/// The longest theme name.
pub const MAX_THEME_LEN: usize = 64;
/// The longest slug.
pub const MAX_SLUG_LEN: usize = 64;
/// The priorities a trigger may have.
pub const PRIORITY_RANGE: RangeInclusive<i32> = -1000..=1000;

/// Checks a funnel slug: 1 to 64 of `a-z`, `0-9` and `-`, neither starting nor ending with
/// `-` (`^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$`). `field` names it in the error.
pub fn validate_slug(field: &str, raw: &str) -> Result<(), FieldError> {
    let bytes = raw.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_SLUG_LEN
        && bytes.iter().all(|b| allowed(b) || *b == b'-')
        && bytes.first().is_some_and(allowed)
        && bytes.last().is_some_and(allowed);
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must be 1 to {MAX_SLUG_LEN} of a-z, 0-9 and -, starting and ending with a letter or digit"
            ),
        ))
    }
}

/// Where a funnel stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunnelStatus {
    /// Saved, not offered to shoppers.
    #[default]
    Draft,
    /// Offered to the carts its trigger picks.
    Active,
    /// Retired for good.
    Archived,
}

impl FunnelStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Archived => "archived",
        }
    }
}

/// How the checkout of a funnel is laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    OneStep,
    #[default]
    TwoStep,
    ThreeStep,
}

impl Layout {
    /// The layout as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneStep => "one_step",
            Self::TwoStep => "two_step",
            Self::ThreeStep => "three_step",
        }
    }
}

/// Which carts a funnel is for: its targeting rules, its priority among the funnels whose
/// rules match (higher first), and whether it is the default funnel (the one for carts no
/// other funnel takes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    #[serde(default)]
    pub rules: Targeting,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub is_default: bool,
}

/// How a funnel looks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunnelSettings {
    #[serde(default = "default_theme")]
    pub theme: String,
    #[serde(default)]
    pub layout: Layout,
}

fn default_theme() -> String {
    "default".into()
}

impl Default for FunnelSettings {
    fn default() -> Self {
        Self {
            theme: default_theme(),
            layout: Layout::default(),
        }
    }
}

/// What a funnel is, as recorded: every `funnel/created` and `funnel/updated` carries all of
/// it, so a reader needs no earlier event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunnelDefinition {
    pub name: String,
    pub trigger: Trigger,
    pub settings: FunnelSettings,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FunnelCommand {
    /// Creates the funnel under `slug` (the aggregate id the command is sent to).
    Create {
        slug: String,
        name: String,
        trigger: Trigger,
        settings: FunnelSettings,
        steps: Vec<Step>,
        /// Created active rather than as a draft.
        active: bool,
        at: DateTime<Utc>,
    },
    /// Changes what is given; `None` keeps the current value.
    Update {
        name: Option<String>,
        trigger: Option<Trigger>,
        settings: Option<FunnelSettings>,
        steps: Option<Vec<Step>>,
        at: DateTime<Utc>,
    },
    Activate {
        at: DateTime<Utc>,
    },
    Archive {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum FunnelEvent {
    #[serde(rename = "funnel/created")]
    Created {
        definition: FunnelDefinition,
        /// `draft` or `active`.
        status: FunnelStatus,
        at: DateTime<Utc>,
    },
    #[serde(rename = "funnel/updated")]
    Updated {
        definition: FunnelDefinition,
        at: DateTime<Utc>,
    },
    #[serde(rename = "funnel/activated")]
    Activated { at: DateTime<Utc> },
    #[serde(rename = "funnel/archived")]
    Archived { at: DateTime<Utc> },
}

impl DomainEvent for FunnelEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created { .. } => "funnel/created",
            Self::Updated { .. } => "funnel/updated",
            Self::Activated { .. } => "funnel/activated",
            Self::Archived { .. } => "funnel/archived",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunnelError {
    #[error("the funnel is not valid")]
    Invalid(Vec<FieldError>),
    #[error("a funnel with this slug exists")]
    SlugTaken,
    #[error("no such funnel")]
    NotFound,
    #[error("the funnel is archived")]
    Archived,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Funnel {
    definition: Option<FunnelDefinition>,
    status: FunnelStatus,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
}

impl Funnel {
    /// What the funnel is; `None` before it is created.
    pub fn definition(&self) -> Option<&FunnelDefinition> {
        self.definition.as_ref()
    }

    pub fn status(&self) -> FunnelStatus {
        self.status
    }

    /// When it was created.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    /// When it last changed (created, updated, activated or archived).
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.updated_at
    }
}

/// Checks and normalises (trims) a definition, reporting every problem at once.
fn validated(
    name: String,
    trigger: Trigger,
    settings: FunnelSettings,
    steps: Vec<Step>,
) -> Result<FunnelDefinition, FunnelError> {
    FunnelDefinition::checked(name, trigger, settings, steps).map_err(FunnelError::Invalid)
}

impl FunnelDefinition {
    /// The definition a funnel saves for these fields, checked and normalised (trimmed) as
    /// creating or updating one does, every problem reported at once (an import checks a
    /// whole file with it before writing anything).
    pub fn checked(
        name: String,
        trigger: Trigger,
        settings: FunnelSettings,
        steps: Vec<Step>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = name.trim().to_owned();
        if name.is_empty() {
            errors.push(FieldError::new("name", "name the funnel"));
        } else if name.chars().count() > MAX_NAME_LEN {
            errors.push(FieldError::new(
                "name",
                format!("at most {MAX_NAME_LEN} characters"),
            ));
        }
        if !PRIORITY_RANGE.contains(&trigger.priority) {
            errors.push(FieldError::new(
                "trigger.priority",
                format!(
                    "must be from {} to {}",
                    PRIORITY_RANGE.start(),
                    PRIORITY_RANGE.end()
                ),
            ));
        }
        if let Err(mut more) = trigger.rules.validate("trigger.rules") {
            errors.append(&mut more);
        }
        let theme = settings.theme.trim().to_owned();
        if theme.is_empty() || theme.chars().count() > MAX_THEME_LEN {
            errors.push(FieldError::new(
                "settings.theme",
                format!("must be 1 to {MAX_THEME_LEN} characters"),
            ));
        }
        if let Err(mut more) = validate(&steps) {
            errors.append(&mut more);
        }
        if errors.is_empty() {
            Ok(FunnelDefinition {
                name,
                trigger,
                settings: FunnelSettings {
                    theme,
                    layout: settings.layout,
                },
                steps,
            })
        } else {
            Err(errors)
        }
    }
}

impl Aggregate for Funnel {
    const TYPE: &'static str = "funnel";
    type Command = FunnelCommand;
    type Event = FunnelEvent;
    type Error = FunnelError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            FunnelCommand::Create {
                slug,
                name,
                trigger,
                settings,
                steps,
                active,
                at,
            } => {
                if self.definition.is_some() {
                    return Err(FunnelError::SlugTaken);
                }
                let definition = validated(name, trigger, settings, steps);
                let definition = match (validate_slug("id", &slug), definition) {
                    (Ok(()), Ok(definition)) => definition,
                    (Err(e), Ok(_)) => return Err(FunnelError::Invalid(vec![e])),
                    (Ok(()), Err(e)) => return Err(e),
                    (Err(e), Err(FunnelError::Invalid(mut more))) => {
                        more.insert(0, e);
                        return Err(FunnelError::Invalid(more));
                    }
                    (Err(_), Err(other)) => return Err(other),
                };
                FunnelEvent::Created {
                    definition,
                    status: if active {
                        FunnelStatus::Active
                    } else {
                        FunnelStatus::Draft
                    },
                    at,
                }
            }
            FunnelCommand::Update {
                name,
                trigger,
                settings,
                steps,
                at,
            } => {
                let current = self.definition.as_ref().ok_or(FunnelError::NotFound)?;
                if self.status == FunnelStatus::Archived {
                    return Err(FunnelError::Archived);
                }
                let definition = validated(
                    name.unwrap_or_else(|| current.name.clone()),
                    trigger.unwrap_or_else(|| current.trigger.clone()),
                    settings.unwrap_or_else(|| current.settings.clone()),
                    steps.unwrap_or_else(|| current.steps.clone()),
                )?;
                if &definition == current {
                    return Ok(());
                }
                FunnelEvent::Updated { definition, at }
            }
            FunnelCommand::Activate { at } => {
                match (self.definition.is_some(), self.status) {
                    (false, _) => return Err(FunnelError::NotFound),
                    (true, FunnelStatus::Archived) => return Err(FunnelError::Archived),
                    (true, FunnelStatus::Active) => return Ok(()),
                    (true, FunnelStatus::Draft) => {}
                }
                FunnelEvent::Activated { at }
            }
            FunnelCommand::Archive { at } => {
                if self.definition.is_none() {
                    return Err(FunnelError::NotFound);
                }
                if self.status == FunnelStatus::Archived {
                    return Ok(());
                }
                FunnelEvent::Archived { at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            FunnelEvent::Created {
                definition,
                status,
                at,
            } => {
                self.definition = Some(definition);
                self.status = status;
                self.created_at = Some(at);
                self.updated_at = Some(at);
            }
            FunnelEvent::Updated { definition, at } => {
                self.definition = Some(definition);
                self.updated_at = Some(at);
            }
            FunnelEvent::Activated { at } => {
                self.status = FunnelStatus::Active;
                self.updated_at = Some(at);
            }
            FunnelEvent::Archived { at } => {
                self.status = FunnelStatus::Archived;
                self.updated_at = Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::funnel::{Branches, StepType};
    use cqrs_es::test::TestFramework;

    type FunnelTest = TestFramework<Funnel>;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn step(key: &str, kind: StepType, position: u32, branches: Branches) -> Step {
        Step {
            key: key.into(),
            kind,
            position,
            offer_id: kind.needs_offer().then(|| format!("offer-{key}")),
            branches,
        }
    }

    fn to(key: &str) -> Branches {
        Branches {
            default: Some(key.into()),
            ..Branches::default()
        }
    }

    fn steps() -> Vec<Step> {
        vec![
            step("checkout", StepType::Checkout, 0, to("upsell")),
            step(
                "upsell",
                StepType::Upsell,
                1,
                Branches {
                    accepted: Some("thanks".into()),
                    declined: Some("thanks".into()),
                    default: None,
                },
            ),
            step("thanks", StepType::ThankYou, 2, Branches::default()),
        ]
    }

    fn definition() -> FunnelDefinition {
        FunnelDefinition {
            name: "Main".into(),
            trigger: Trigger::default(),
            settings: FunnelSettings::default(),
            steps: steps(),
        }
    }

    fn create(slug: &str, name: &str, steps: Vec<Step>) -> FunnelCommand {
        FunnelCommand::Create {
            slug: slug.into(),
            name: name.into(),
            trigger: Trigger::default(),
            settings: FunnelSettings::default(),
            steps,
            active: false,
            at: at(),
        }
    }

    fn created() -> FunnelEvent {
        FunnelEvent::Created {
            definition: definition(),
            status: FunnelStatus::Draft,
            at: at(),
        }
    }

    fn invalid_fields(command: FunnelCommand) -> Vec<String> {
        match FunnelTest::with(())
            .given_no_previous_events()
            .when(command)
            .inspect_result()
        {
            Err(FunnelError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn slugs_follow_their_pattern() {
        for ok in ["a", "main", "black-friday-2026", "0", &"a".repeat(64)] {
            assert!(validate_slug("id", ok).is_ok(), "{ok:?} is a slug");
        }
        for bad in ["", "-a", "a-", "Main", "a_b", "a b", "é", &"a".repeat(65)] {
            assert!(validate_slug("id", bad).is_err(), "{bad:?} is not a slug");
        }
    }

    #[test]
    fn a_funnel_is_created_as_a_draft_with_its_name_trimmed() {
        FunnelTest::with(())
            .given_no_previous_events()
            .when(create("main", "  Main ", steps()))
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn a_taken_slug_is_refused() {
        FunnelTest::with(())
            .given(vec![created()])
            .when(create("main", "Other", steps()))
            .then_expect_error(FunnelError::SlugTaken);
    }

    #[test]
    fn invalid_definitions_name_every_field() {
        let mut bad_steps = steps();
        bad_steps[1].branches.declined = Some("nowhere".into());
        let mut command = create("Bad Slug", "", bad_steps);
        if let FunnelCommand::Create {
            trigger, settings, ..
        } = &mut command
        {
            trigger.priority = 1001;
            settings.theme = "x".repeat(65);
        }
        assert_eq!(
            invalid_fields(command),
            [
                "id",
                "name",
                "trigger.priority",
                "settings.theme",
                "steps[1].branches.declined"
            ]
        );
    }

    #[test]
    fn updates_change_what_is_given_and_an_unchanged_one_records_nothing() {
        let mut expected = definition();
        expected.name = "Renamed".into();
        FunnelTest::with(())
            .given(vec![created()])
            .when(FunnelCommand::Update {
                name: Some("Renamed".into()),
                trigger: None,
                settings: None,
                steps: None,
                at: at(),
            })
            .then_expect_events(vec![FunnelEvent::Updated {
                definition: expected,
                at: at(),
            }]);
        FunnelTest::with(())
            .given(vec![created()])
            .when(FunnelCommand::Update {
                name: Some("Main".into()),
                trigger: None,
                settings: None,
                steps: None,
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn archiving_is_final() {
        let archived = FunnelEvent::Archived { at: at() };
        FunnelTest::with(())
            .given(vec![created()])
            .when(FunnelCommand::Activate { at: at() })
            .then_expect_events(vec![FunnelEvent::Activated { at: at() }]);
        FunnelTest::with(())
            .given(vec![created(), FunnelEvent::Activated { at: at() }])
            .when(FunnelCommand::Activate { at: at() })
            .then_expect_events(vec![]);
        FunnelTest::with(())
            .given(vec![created()])
            .when(FunnelCommand::Archive { at: at() })
            .then_expect_events(vec![archived.clone()]);
        FunnelTest::with(())
            .given(vec![created(), archived.clone()])
            .when(FunnelCommand::Archive { at: at() })
            .then_expect_events(vec![]);
        FunnelTest::with(())
            .given(vec![created(), archived.clone()])
            .when(FunnelCommand::Activate { at: at() })
            .then_expect_error(FunnelError::Archived);
        FunnelTest::with(())
            .given(vec![created(), archived])
            .when(FunnelCommand::Update {
                name: Some("Again".into()),
                trigger: None,
                settings: None,
                steps: None,
                at: at(),
            })
            .then_expect_error(FunnelError::Archived);
        FunnelTest::with(())
            .given_no_previous_events()
            .when(FunnelCommand::Archive { at: at() })
            .then_expect_error(FunnelError::NotFound);
    }
}
