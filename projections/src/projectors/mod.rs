//! One projector per read table.

mod audit;
mod carts;
mod settings;
mod tokens;

pub use audit::AuditProjector;
pub use carts::CartsProjector;
pub use settings::SettingsProjector;
pub use tokens::TokensProjector;
