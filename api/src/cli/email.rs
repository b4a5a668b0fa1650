//! `ocart email …`: what the sending domain needs. `dkim-record` prints the DNS TXT record
//! that publishes the public key of `[email.dkim]` (never the private key).

use clap::Subcommand;
use ocart_processors::recovery::dkim::DkimKey;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum EmailCmd {
    /// Print the DNS TXT record to publish for the DKIM key of `[email.dkim]`
    /// (`--json`: {"name", "type", "value"}).
    DkimRecord,
}

pub fn run(cmd: EmailCmd, config: &Config, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        EmailCmd::DkimRecord => {
            let Some(settings) = &config.email.dkim else {
                anyhow::bail!(
                    "no [email.dkim] section in the configuration: set domain, selector and private_key or private_key_file (see deploy/ocart.example.toml)"
                );
            };
            let record = DkimKey::load(settings)?.record(&settings.selector, &settings.domain)?;
            super::print(json_out, &serde_json::to_value(&record)?, || {
                format!(
                    "Publish this TXT record in the DNS of {domain}:\n\n  name:  {name}\n  type:  TXT\n  value: {value}\n\nIn a zone file (TXT strings hold at most 255 characters each):\n\n  {name}. 3600 IN TXT ( {strings} )",
                    domain = settings.domain,
                    name = record.name,
                    value = record.value,
                    strings = record
                        .value
                        .as_bytes()
                        .chunks(255)
                        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            });
            Ok(())
        }
    }
}
