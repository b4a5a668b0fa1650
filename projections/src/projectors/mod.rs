//! The projectors: each alone writes its read tables, and reads only them while it applies.

mod abtests;
mod audit;
mod carts;
mod funnel_reports;
mod funnels;
mod offers;
mod recovery;
mod settings;
mod tokens;
mod upsells;

pub use abtests::AbTestsProjector;
pub use audit::AuditProjector;
pub use carts::CartsProjector;
pub use funnel_reports::FunnelReportsProjector;
pub use funnels::FunnelsProjector;
pub use offers::OffersProjector;
pub use recovery::{
    OrdersProjector, RecoveryRunsProjector, RecoverySequencesProjector, SuppressionProjector,
};
pub use settings::SettingsProjector;
pub use tokens::TokensProjector;
pub use upsells::UpsellsProjector;
