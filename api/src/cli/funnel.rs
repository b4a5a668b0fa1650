//! `ocart funnel …` (list, show, create, update, activate, archive) and `ocart template …`
//! (the built-in funnel templates: list them, install one as a new funnel). Both go through
//! the funnel use cases, as HTTP does.

use anyhow::{bail, Context};
use clap::Subcommand;
use ocart_domain::funnel::{Layout, StepType};
use serde_json::Value;

use super::{cli_meta, open, print};
use crate::config::Config;
use crate::core::Core;
use crate::usecases::funnels::{
    self as uc, BranchesBody, FunnelPatch, FunnelView, FunnelsError, InitialStatus, NewFunnel,
    SettingsBody, StepBody, TriggerBody,
};

#[derive(Debug, Subcommand)]
pub enum FunnelCmd {
    /// Funnels, oldest first.
    List {
        /// draft, active or archived
        #[arg(long)]
        status: Option<String>,
    },
    /// One funnel with its steps.
    Show { id: String },
    /// Create a funnel from a JSON file shaped as `POST /funnels`'s body.
    Create {
        #[arg(long)]
        file: String,
    },
    /// Change a funnel from a JSON file shaped as `PATCH /funnels/{id}`'s body.
    Update {
        id: String,
        #[arg(long)]
        file: String,
    },
    /// Activate a draft funnel.
    Activate { id: String },
    /// Archive a funnel, for good.
    Archive { id: String },
}

#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// The built-in funnel templates.
    List,
    /// Create a funnel (a draft) from a built-in template.
    Install {
        /// The template's name (see `ocart template list`).
        #[arg(value_name = "NAME")]
        template: String,
        /// The new funnel's slug.
        #[arg(long)]
        slug: String,
        /// The offer of the bump step.
        #[arg(long)]
        bump_offer: Option<String>,
        /// The offer of the upsell step.
        #[arg(long)]
        upsell_offer: Option<String>,
        /// The offer of the downsell step.
        #[arg(long)]
        downsell_offer: Option<String>,
        /// The funnel's name (default: the template's title).
        #[arg(long)]
        name: Option<String>,
    },
}

/// A built-in funnel template: its layout and its steps as (key, type, branches), in order.
pub struct Template {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub layout: Layout,
    /// (key, type, default, accepted, declined)
    pub steps: &'static [TemplateStep],
}

/// One step of a template: key, type, and the default, accepted and declined branches.
pub type TemplateStep = (
    &'static str,
    StepType,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

/// The built-in templates.
pub const TEMPLATES: &[Template] = &[
    Template {
        name: "two-step-bump-upsell-downsell",
        title: "Two-step checkout, bump, upsell, downsell",
        description: "A two-step checkout with an order bump, then an upsell; declined, a downsell; then the thank-you page.",
        layout: Layout::TwoStep,
        steps: &[
            ("checkout", StepType::Checkout, Some("bump"), None, None),
            ("bump", StepType::Bump, Some("upsell"), None, None),
            ("upsell", StepType::Upsell, None, Some("thank-you"), Some("downsell")),
            ("downsell", StepType::Downsell, Some("thank-you"), None, None),
            ("thank-you", StepType::ThankYou, None, None, None),
        ],
    },
    Template {
        name: "one-step-checkout",
        title: "One-step checkout",
        description: "A one-page checkout straight to the thank-you page.",
        layout: Layout::OneStep,
        steps: &[
            ("checkout", StepType::Checkout, Some("thank-you"), None, None),
            ("thank-you", StepType::ThankYou, None, None, None),
        ],
    },
    Template {
        name: "three-step-upsell",
        title: "Three-step checkout with an upsell",
        description: "A three-step checkout, then one upsell, then the thank-you page.",
        layout: Layout::ThreeStep,
        steps: &[
            ("checkout", StepType::Checkout, Some("upsell"), None, None),
            ("upsell", StepType::Upsell, None, Some("thank-you"), Some("thank-you")),
            ("thank-you", StepType::ThankYou, None, None, None),
        ],
    },
];

/// The offers given on the command line, by the step type that needs them.
pub struct TemplateOffers {
    pub bump: Option<String>,
    pub upsell: Option<String>,
    pub downsell: Option<String>,
}

impl Template {
    /// The template as a funnel to create under `slug`; every offer step needs its offer.
    pub fn funnel(
        &self,
        slug: &str,
        name: Option<String>,
        offers: &TemplateOffers,
    ) -> anyhow::Result<NewFunnel> {
        let mut steps = Vec::new();
        for (i, (key, kind, default, accepted, declined)) in self.steps.iter().enumerate() {
            let (offer, flag) = match kind {
                StepType::Bump => (&offers.bump, "--bump-offer"),
                StepType::Upsell => (&offers.upsell, "--upsell-offer"),
                StepType::Downsell => (&offers.downsell, "--downsell-offer"),
                _ => (&None, ""),
            };
            if kind.needs_offer() && offer.is_none() {
                bail!(
                    "the template {} has a {} step: give {flag} OFFER_ID",
                    self.name,
                    kind.as_str()
                );
            }
            steps.push(StepBody {
                key: (*key).to_owned(),
                kind: *kind,
                position: Some(u32::try_from(i)?),
                offer_id: offer.clone(),
                branches: BranchesBody {
                    default: default.map(str::to_owned),
                    accepted: accepted.map(str::to_owned),
                    declined: declined.map(str::to_owned),
                },
            });
        }
        Ok(NewFunnel {
            id: slug.to_owned(),
            name: name.unwrap_or_else(|| self.title.to_owned()),
            status: InitialStatus::Draft,
            trigger: TriggerBody::default(),
            settings: SettingsBody {
                layout: self.layout,
                ..SettingsBody::default()
            },
            steps,
        })
    }
}

fn funnel_error(id: &str, err: FunnelsError) -> anyhow::Error {
    match err {
        FunnelsError::Invalid(errors) => anyhow::anyhow!(
            "the funnel is not valid:\n{}",
            errors
                .iter()
                .map(|e| format!("  {}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        FunnelsError::NotFound(_) => anyhow::anyhow!("no funnel {id}"),
        other => anyhow::anyhow!("funnel {id}: {other}"),
    }
}

fn describe(view: &FunnelView) -> String {
    let steps = view
        .steps
        .iter()
        .map(|s| format!("{}({})", s.key, s.kind.as_str()))
        .collect::<Vec<_>>()
        .join(" → ");
    format!(
        "{}  {}  [{}, {}, priority {}{}]  {}",
        view.id,
        view.name,
        view.status,
        view.settings.layout.as_str(),
        view.trigger.priority,
        if view.trigger.is_default {
            ", default"
        } else {
            ""
        },
        steps
    )
}

fn read_json<T: serde::de::DeserializeOwned>(path: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("{path}: {}", e.into_inner())
    })
}

/// Makes the read tables current before a read.
async fn current(core: &Core) -> anyhow::Result<()> {
    let (_, head) = core.log.stats().await?;
    core.ensure_projected(head).await
}

/// Shows a written funnel once the projections hold it.
async fn written(core: &Core, json_out: bool, view: FunnelView) -> anyhow::Result<()> {
    if let Some(position) = view.position {
        core.ensure_projected(position).await?;
    }
    print(json_out, &serde_json::to_value(&view)?, || describe(&view));
    Ok(())
}

pub async fn run(cmd: FunnelCmd, config: Config, json_out: bool) -> anyhow::Result<()> {
    let core = open(config).await?;
    let meta = cli_meta(&core);
    match cmd {
        FunnelCmd::List { status } => {
            current(&core).await?;
            let views = uc::list(&core, status.as_deref())
                .await
                .map_err(|e| funnel_error("list", e))?;
            print(json_out, &serde_json::to_value(&views)?, || {
                if views.is_empty() {
                    return "no funnels".into();
                }
                views.iter().map(describe).collect::<Vec<_>>().join("\n")
            });
            Ok(())
        }
        FunnelCmd::Show { id } => {
            current(&core).await?;
            let view = uc::show(&core, &id)
                .await
                .map_err(|e| funnel_error(&id, e))?;
            print(json_out, &serde_json::to_value(&view)?, || describe(&view));
            Ok(())
        }
        FunnelCmd::Create { file } => {
            let input: NewFunnel = read_json(&file)?;
            let id = input.id.clone();
            let view = uc::create(&core, input, &meta)
                .await
                .map_err(|e| funnel_error(&id, e))?;
            written(&core, json_out, view).await
        }
        FunnelCmd::Update { id, file } => {
            let patch: FunnelPatch = read_json(&file)?;
            let view = uc::update(&core, &id, patch, &meta)
                .await
                .map_err(|e| funnel_error(&id, e))?;
            written(&core, json_out, view).await
        }
        FunnelCmd::Activate { id } => {
            let view = uc::activate(&core, &id, &meta)
                .await
                .map_err(|e| funnel_error(&id, e))?;
            written(&core, json_out, view).await
        }
        FunnelCmd::Archive { id } => {
            let view = uc::archive(&core, &id, &meta)
                .await
                .map_err(|e| funnel_error(&id, e))?;
            written(&core, json_out, view).await
        }
    }
}

pub async fn template(cmd: TemplateCmd, config: Config, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        TemplateCmd::List => {
            let value = Value::Array(
                TEMPLATES
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "name": t.name,
                            "title": t.title,
                            "description": t.description,
                            "layout": t.layout.as_str(),
                            "steps": t.steps.iter().map(|s| serde_json::json!({"key": s.0, "type": s.1.as_str()})).collect::<Vec<_>>(),
                        })
                    })
                    .collect(),
            );
            print(json_out, &value, || {
                TEMPLATES
                    .iter()
                    .map(|t| format!("{}  {}", t.name, t.description))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        TemplateCmd::Install {
            template: wanted,
            slug,
            bump_offer,
            upsell_offer,
            downsell_offer,
            name,
        } => {
            let Some(template) = TEMPLATES.iter().find(|t| t.name == wanted) else {
                bail!(
                    "no template {wanted:?}; the templates are {}",
                    TEMPLATES
                        .iter()
                        .map(|t| t.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            let input = template.funnel(
                &slug,
                name,
                &TemplateOffers {
                    bump: bump_offer,
                    upsell: upsell_offer,
                    downsell: downsell_offer,
                },
            )?;
            let core = open(config).await?;
            let meta = cli_meta(&core);
            let view = uc::create(&core, input, &meta)
                .await
                .map_err(|e| funnel_error(&slug, e))?;
            written(&core, json_out, view).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_is_a_valid_funnel_with_its_offers() {
        let offers = TemplateOffers {
            bump: Some("b".into()),
            upsell: Some("u".into()),
            downsell: Some("d".into()),
        };
        for template in TEMPLATES {
            let funnel = template.funnel("t", None, &offers).unwrap();
            let steps: Vec<_> = funnel
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| ocart_domain::funnel::Step {
                    key: s.key.clone(),
                    kind: s.kind,
                    position: s.position.unwrap_or(i as u32),
                    offer_id: s.offer_id.clone(),
                    branches: ocart_domain::funnel::Branches {
                        default: s.branches.default.clone(),
                        accepted: s.branches.accepted.clone(),
                        declined: s.branches.declined.clone(),
                    },
                })
                .collect();
            assert_eq!(
                ocart_domain::funnel::validate(&steps),
                Ok(()),
                "{}",
                template.name
            );
        }
    }

    #[test]
    fn a_template_needs_the_offers_of_its_offer_steps() {
        let none = TemplateOffers {
            bump: None,
            upsell: None,
            downsell: None,
        };
        let err = TEMPLATES[0].funnel("t", None, &none).unwrap_err();
        assert!(err.to_string().contains("--bump-offer"), "{err}");
        assert!(TEMPLATES[1].funnel("t", None, &none).is_ok());
    }
}
