//! One projector per read table.

mod audit;
mod carts;
mod recovery;
mod settings;
mod tokens;

pub use audit::AuditProjector;
pub use carts::CartsProjector;
pub use recovery::RecoveryProjector;
pub use settings::SettingsProjector;
pub use tokens::TokensProjector;
