//! `ocart gateway status`: the configured payment gateway adapters and their state, from the
//! config file (credentials are never shown), and per purpose how many secrets are accepted
//! and when the older ones retire. `ocart gateway rotate`: a new WooCommerce webhook secret
//! (shown once), a new Stripe webhook secret read from standard input (never shown), or a new
//! upsell token key version (never shown); the earlier ones stay accepted for `--overlap`
//! (ADR 0016).

use std::io::{BufRead, IsTerminal, Read};

use anyhow::Context;
use chrono::Duration;
use clap::Subcommand;
use ocart_domain::gateway_secret::SecretPurpose;
use serde_json::json;

use super::{cli_meta, open, print};
use crate::config::Config;
use crate::usecases::rotate_secret::{self, MAX_SECRET_LEN};

#[derive(Debug, Subcommand)]
pub enum GatewayCmd {
    /// The gateway adapters upsell charges can go through: id, mode, API base, webhooks; and
    /// the secrets in force per purpose (counts and retirement times, never a value).
    Status,
    /// Rotate a secret: woocommerce-webhook (a new secret, shown once), stripe-webhook (the
    /// secret Stripe rolled, on standard input) or upsell-token (a new signing key).
    Rotate {
        /// woocommerce-webhook, stripe-webhook or upsell-token
        #[arg(value_name = "PURPOSE")]
        purpose: String,
        /// How long the earlier secrets stay accepted: 90s, 30m, 24h, 7d (0s: not at all).
        /// Default 24h for the webhooks, the token lifetime for upsell-token.
        #[arg(long)]
        overlap: Option<String>,
        /// Read the new secret from standard input (stripe-webhook; never from the command
        /// line, where it would stay in the shell's history and the process list).
        #[arg(long)]
        secret_stdin: bool,
    },
}

/// `90s`, `30m`, `24h`, `7d`: an overlap; anything else is `None`, never a panic.
pub fn parse_overlap(raw: &str) -> Option<Duration> {
    let unit = raw.chars().next_back()?;
    let number = &raw[..raw.len() - unit.len_utf8()];
    if number.is_empty() || number.len() > 9 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = number.parse().ok()?;
    match unit {
        's' => Duration::try_seconds(n),
        'm' => Duration::try_minutes(n),
        'h' => Duration::try_hours(n),
        'd' => Duration::try_days(n),
        _ => None,
    }
}

/// One line from standard input, at most a little more than the longest secret.
fn read_secret() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Paste the new secret (whsec_…) and press Enter; it is not echoed back:");
    }
    let mut line = String::new();
    stdin
        .lock()
        .take(MAX_SECRET_LEN as u64 + 2)
        .read_line(&mut line)
        .context("reading the secret from standard input")?;
    Ok(line)
}

pub async fn run(cmd: GatewayCmd, config: &Config, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        GatewayCmd::Status => {
            let gateways = ocart_processors::gateways::Gateways::from_config(&config.gateways)?;
            let infos = crate::routes::gateways::gateway_infos(&gateways);
            let core = open(config.clone()).await?;
            let secrets = core.secret_ring.states(&core);
            super::print(
                json_out,
                &json!({ "gateways": infos, "secrets": secrets }),
                || {
                    let mut out = if infos.is_empty() {
                        "no gateway is configured (the sandbox is turned off)".to_owned()
                    } else {
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
                    };
                    out.push_str("\n\nsecrets:");
                    for s in &secrets {
                        out.push_str(&format!(
                            "\n{:<20} version {}, {} accepted",
                            s.purpose, s.version, s.live
                        ));
                        for r in &s.retiring {
                            out.push_str(&format!(
                                "; version {} retires {}",
                                r.version,
                                r.retire_at.to_rfc3339()
                            ));
                        }
                        if s.unreadable > 0 {
                            out.push_str(&format!(
                                "; {} cannot be opened with this server secret",
                                s.unreadable
                            ));
                        }
                    }
                    out
                },
            );
            Ok(())
        }
        GatewayCmd::Rotate {
            purpose,
            overlap,
            secret_stdin,
        } => {
            let purpose =
                SecretPurpose::parse("PURPOSE", &purpose).map_err(|e| anyhow::anyhow!("{e}"))?;
            let overlap = overlap
                .as_deref()
                .map(|raw| {
                    parse_overlap(raw).ok_or_else(|| {
                        anyhow::anyhow!("--overlap: {raw:?} is not a span like 90s, 30m, 24h or 7d")
                    })
                })
                .transpose()?;
            if secret_stdin && purpose != SecretPurpose::StripeWebhook {
                anyhow::bail!(
                    "--secret-stdin: only stripe-webhook takes a secret; {} is generated",
                    purpose.as_str()
                );
            }
            let supplied = if secret_stdin {
                Some(rotate_secret::check_stripe_secret(&read_secret()?)?)
            } else {
                None
            };
            let core = open(config.clone()).await?;
            let overlap = match overlap {
                Some(o) => o,
                None => rotate_secret::default_overlap(&core, purpose).await?,
            };
            let meta = cli_meta(&core);
            let rotated = rotate_secret::rotate(&core, purpose, overlap, supplied, &meta).await?;
            let retire = rotated.previous_retire_at.to_rfc3339();
            let mut value = json!({
                "purpose": purpose.as_str(),
                "version": rotated.version,
                "previous_retire_at": retire,
                "position": rotated.position,
            });
            if let Some(secret) = &rotated.shown_once {
                value["secret"] = json!(secret);
            }
            print(json_out, &value, || {
                let mut out = format!(
                    "{} rotated to version {}; the earlier secrets are accepted until {retire}.",
                    purpose.as_str(),
                    rotated.version
                );
                match (&rotated.shown_once, purpose) {
                    (Some(secret), _) => out.push_str(&format!(
                        "\n\nThe new secret, shown only this once: paste it into WooCommerce > \
                         Settings > Advanced > Webhooks > (each OCart webhook) > Secret.\n\n    \
                         {secret}\n"
                    )),
                    (None, SecretPurpose::StripeWebhook) => out.push_str(
                        "\nStripe's new secret is stored sealed; events signed with it are accepted now.",
                    ),
                    (None, _) => out.push_str(
                        "\nNew one-click tokens are signed with the new key within seconds; \
                         tokens signed before stay valid until the time above.",
                    ),
                }
                out
            });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_are_read_and_everything_else_refused() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("90s", Some(Duration::seconds(90))),
            ("30m", Some(Duration::minutes(30))),
            ("24h", Some(Duration::hours(24))),
            ("7d", Some(Duration::days(7))),
            ("0s", Some(Duration::zero())),
            ("", None),
            ("h", None),
            ("-1h", None),
            ("1w", None),
            ("1.5h", None),
            ("1é", None),
            ("é", None),
            ("9999999999d", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(parse_overlap(raw), *expected, "{raw}");
        }
    }
}
