mod aggregate;
mod commands;
mod events;
/// The capture rules: consent, and suppressed shoppers not captured.
mod policy;

pub use aggregate::{
    cart_id_for_session, session_token_hash, Cart, CartStatus, MATERIAL_WINDOW_SECS,
};
pub use commands::{CaptureCart, CartCommand, Consent};
pub use events::{AbandonmentKind, CartContent, CartError, CartEvent};
pub use policy::{capture_decision, consents, CaptureDecision};
