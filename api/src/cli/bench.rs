//! `ocart bench …`: measured figures for BENCHMARKS.md.

use clap::Subcommand;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Events per second appended with 1, 16 and 64 writers, 1 and 5 events per command.
    Append,
}

pub async fn run(cmd: BenchCmd, _config: Config) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Append => anyhow::bail!("not yet"),
    }
}
