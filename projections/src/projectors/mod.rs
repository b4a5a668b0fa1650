//! The projectors: each alone writes its read tables, and reads only them while it applies.

mod audit;
mod carts;
mod recovery;
mod settings;
mod tokens;

pub use audit::AuditProjector;
pub use carts::CartsProjector;
pub use recovery::{
    OrdersProjector, RecoveryRunsProjector, RecoverySequencesProjector, SuppressionProjector,
};
pub use settings::SettingsProjector;
pub use tokens::TokensProjector;
