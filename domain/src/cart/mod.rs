mod aggregate;
mod commands;
mod events;

pub use aggregate::{
    cart_id_for_session, session_token_hash, Cart, CartStatus, MATERIAL_WINDOW_SECS,
};
pub use commands::{CaptureCart, CartCommand, Consent};
pub use events::{AbandonmentKind, CartContent, CartError, CartEvent};
