//! One-click upsells (issue 11): the charger, a process manager that follows the log and drives
//! every acceptance by its state — charges it with the key recorded in `upsell/before_charge`,
//! reconciles an unknown outcome, writes the store order of a charged one and carries its
//! refunds to the gateway and the store.

use std::time::Duration;

use ocart_domain::ProductId;

/// The charger process manager.
mod charger;

pub use charger::{ChargerConfig, UpsellCharger, UPSELL_CHARGER};

/// The first wait before reconciling an unknown outcome again; it doubles up to
/// [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between two reconciliations of one acceptance.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// The wait before the `attempt`-th retry (1-based): 0.5 s, 1 s, 2 s, … capped at 60 s.
pub fn retry_after(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    FIRST_RETRY
        .checked_mul(1u32 << doublings)
        .unwrap_or(MAX_RETRY)
        .min(MAX_RETRY)
}

/// The offer's line as the store gets it: what a child order holds, or what is merged into the
/// parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLine {
    pub acceptance_id: String,
    /// The parent order's id at the store.
    pub parent: u64,
    pub product_id: ProductId,
    pub product_name: String,
    pub quantity: u32,
    /// The line's total, as a decimal string in its currency (`"19.90"`).
    pub total: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The upsell's own charge as the store records it (the child order's transaction id;
    /// `Gateway::transaction_id`: PayPal's capture).
    pub charge_ref: String,
    /// The gateway that charged it (the child order's payment method).
    pub gateway: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_half_a_second_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|a| retry_after(a).as_millis() as u64).collect();
        assert_eq!(
            waits,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(retry_after(0), FIRST_RETRY);
        assert_eq!(retry_after(u32::MAX), MAX_RETRY);
    }
}
