//! What happens to a message after it is sent: provider reports (delivery, bounce,
//! complaint) and opens, recorded on the run. A hard bounce or a complaint suppresses the
//! recipient and stops their runs: the recovery follow-ups (`processors::recovery::followups`)
//! do that when they reach the recorded report, so a replay gets the same effect.

use ocart_domain::recovery::{DeliveryReport, RunCommand};
use ocart_projections::queries::recovery as q;
use ocart_projections::{CommandError, CommandMeta};

use crate::core::Core;

/// What a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// Recorded (a hard bounce or complaint then suppresses the recipient, by the follow-ups).
    Recorded,
    /// Already recorded: a provider's retry.
    Repeated,
    /// No message of ours has this key.
    Unknown,
}

impl Core {
    /// Records `report` about the message `message_key`.
    pub async fn report_delivery(
        &self,
        message_key: &str,
        report: DeliveryReport,
        meta: &CommandMeta,
    ) -> anyhow::Result<Reported> {
        let Some(message) = q::message_by_key(&self.db, message_key).await? else {
            return Ok(Reported::Unknown);
        };
        let command = RunCommand::ReportDelivery {
            message_key: message_key.to_owned(),
            report,
            at: meta.at,
        };
        let outcome = match self.runs.execute(&message.run_id, command, meta).await {
            Ok(outcome) => outcome,
            Err(CommandError::Rejected(_)) => return Ok(Reported::Unknown),
            Err(other) => return Err(other.into()),
        };
        if outcome.events.is_empty() {
            return Ok(Reported::Repeated);
        }
        Ok(Reported::Recorded)
    }
}
