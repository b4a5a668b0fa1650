//! Payment gateway adapters (issue 11): so far the verification of Stripe's webhook signature.

/// `Stripe-Signature` verification (t=, v1=, tolerance, rotation).
pub mod stripe_signature;
