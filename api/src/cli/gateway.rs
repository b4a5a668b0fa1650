//! `ocart gateway status`: the configured payment gateway adapters and their state, from the
//! config file (credentials are never shown).

use clap::Subcommand;
use serde_json::json;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum GatewayCmd {
    /// The gateway adapters upsell charges can go through: id, mode, API base, webhooks.
    Status,
}

pub fn run(cmd: GatewayCmd, config: &Config, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        GatewayCmd::Status => {
            let gateways = ocart_processors::gateways::Gateways::from_config(&config.gateways)?;
            let infos = crate::routes::gateways::gateway_infos(&gateways);
            super::print(json_out, &json!({ "gateways": infos }), || {
                if infos.is_empty() {
                    return "no gateway is configured (the sandbox is turned off)".into();
                }
                infos
                    .iter()
                    .map(|g| {
                        format!(
                            "{:<8} {:<8} {} (webhooks {})",
                            g.id,
                            g.mode,
                            g.api_base,
                            if g.webhooks {
                                "verified"
                            } else {
                                "not configured"
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
    }
}
