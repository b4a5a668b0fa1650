//! The sandbox gateway: the embedded default, so `ocart serve` runs the whole upsell flow with
//! no account. It keeps Stripe's idempotency rule (the first outcome of a key is the answer to
//! every repeat) and offers test payment methods for every outcome:
//!
//! | payment method        | outcome                                                        |
//! |-----------------------|----------------------------------------------------------------|
//! | `pm_sandbox_ok` (any other) | succeeded                                                |
//! | `pm_sandbox_decline`  | declined (`card_declined`)                                     |
//! | `pm_sandbox_3ds`      | requires action; succeeded once [`Sandbox::authenticate`]d     |
//! | `pm_sandbox_timeout`  | charges, then answers unknown (a timeout); a repeat succeeded  |
//!
//! State is in memory: a restart forgets it (nothing real was charged).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Deserialize;

use super::{ChargeOutcome, ChargeRequest, Gateway, GatewayState, RefundOutcome, RefundRequest};

/// `[gateways.sandbox]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// On by default; turn off where only real gateways may charge.
    pub enabled: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

pub const OK: &str = "pm_sandbox_ok";
pub const DECLINE: &str = "pm_sandbox_decline";
pub const THREE_DS: &str = "pm_sandbox_3ds";
pub const TIMEOUT: &str = "pm_sandbox_timeout";

#[derive(Debug, Clone)]
struct Charge {
    amount: i64,
    refunded: i64,
    state: ChargeState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChargeState {
    Succeeded,
    RequiresAction { authenticated: bool },
    Declined,
}

#[derive(Default)]
struct State {
    /// Idempotency key → (the request's fingerprint, the reference it created).
    keys: HashMap<String, (String, String)>,
    charges: HashMap<String, Charge>,
    refunds: HashMap<String, (String, String)>,
    /// Keys whose first answer was a timeout (answered once).
    timed_out: HashMap<String, bool>,
}

/// The sandbox adapter.
#[derive(Default)]
pub struct Sandbox {
    state: Mutex<State>,
}

impl Sandbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shopper completed the sandbox's 3DS step for `charge_ref`.
    pub fn authenticate(&self, charge_ref: &str) -> bool {
        let mut state = self.state.lock().expect("sandbox state");
        match state.charges.get_mut(charge_ref) {
            Some(charge) if matches!(charge.state, ChargeState::RequiresAction { .. }) => {
                charge.state = ChargeState::RequiresAction {
                    authenticated: true,
                };
                true
            }
            _ => false,
        }
    }

    /// How many charges went through (succeeded), for tests and the bench.
    pub fn succeeded_charges(&self) -> usize {
        let state = self.state.lock().expect("sandbox state");
        state
            .charges
            .values()
            .filter(|c| c.state == ChargeState::Succeeded)
            .count()
    }

    /// How many refunds were made of the charge `charge_ref`, for tests.
    pub fn refunds_of(&self, charge_ref: &str) -> usize {
        let state = self.state.lock().expect("sandbox state");
        let prefix = format!("{charge_ref}|");
        state
            .refunds
            .values()
            .filter(|(print, _)| print.starts_with(&prefix))
            .count()
    }

    fn outcome(charge_ref: &str, charge: &Charge) -> ChargeOutcome {
        match charge.state {
            ChargeState::Succeeded => ChargeOutcome::Succeeded {
                charge_ref: charge_ref.to_owned(),
            },
            ChargeState::RequiresAction { .. } => ChargeOutcome::RequiresAction {
                charge_ref: charge_ref.to_owned(),
                action_url: None,
                client_secret: Some(format!("{charge_ref}_secret_sandbox")),
            },
            ChargeState::Declined => ChargeOutcome::Declined {
                charge_ref: Some(charge_ref.to_owned()),
                code: "card_declined".into(),
                message: "Your card was declined (sandbox).".into(),
            },
        }
    }
}

fn fingerprint(request: &ChargeRequest) -> String {
    format!(
        "{}|{}|{}|{}",
        request.amount.minor(),
        request.amount.currency().as_str(),
        request.customer.as_deref().unwrap_or(""),
        request.payment_method
    )
}

#[async_trait]
impl Gateway for Sandbox {
    fn id(&self) -> &'static str {
        "sandbox"
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        let mut state = self.state.lock().expect("sandbox state");
        let print = fingerprint(request);
        if let Some((seen, charge_ref)) = state.keys.get(&request.idempotency_key).cloned() {
            if seen != print {
                // As the Stripe adapter reads Stripe's `idempotency_error`: not a decision about
                // the charge (the key's first request may have charged), so unknown.
                return ChargeOutcome::Unknown {
                    charge_ref: None,
                    reason: "idempotency_error: the key was first used with other parameters"
                        .into(),
                };
            }
            let charge = state
                .charges
                .get(&charge_ref)
                .cloned()
                .expect("charge of a key");
            return Self::outcome(&charge_ref, &charge);
        }
        let charge_ref = format!("sb_{}", uuid::Uuid::new_v4().simple());
        let charge_state = match request.payment_method.as_str() {
            DECLINE => ChargeState::Declined,
            THREE_DS => ChargeState::RequiresAction {
                authenticated: false,
            },
            _ => ChargeState::Succeeded,
        };
        let charge = Charge {
            amount: request.amount.minor(),
            refunded: 0,
            state: charge_state,
        };
        state
            .keys
            .insert(request.idempotency_key.clone(), (print, charge_ref.clone()));
        state.charges.insert(charge_ref.clone(), charge.clone());
        if request.payment_method == TIMEOUT {
            state
                .timed_out
                .insert(request.idempotency_key.clone(), true);
            return ChargeOutcome::Unknown {
                charge_ref: None,
                reason: "the sandbox timed out after charging".into(),
            };
        }
        Self::outcome(&charge_ref, &charge)
    }

    async fn retrieve(&self, charge_ref: &str) -> ChargeOutcome {
        let state = self.state.lock().expect("sandbox state");
        match state.charges.get(charge_ref) {
            Some(charge) => Self::outcome(charge_ref, charge),
            None => ChargeOutcome::Unknown {
                charge_ref: Some(charge_ref.to_owned()),
                reason: "the sandbox has no such charge (it forgets on restart)".into(),
            },
        }
    }

    async fn complete_action(&self, charge_ref: &str, _idempotency_key: &str) -> ChargeOutcome {
        let mut state = self.state.lock().expect("sandbox state");
        let Some(charge) = state.charges.get_mut(charge_ref) else {
            return ChargeOutcome::Unknown {
                charge_ref: Some(charge_ref.to_owned()),
                reason: "the sandbox has no such charge (it forgets on restart)".into(),
            };
        };
        if charge.state
            == (ChargeState::RequiresAction {
                authenticated: true,
            })
        {
            charge.state = ChargeState::Succeeded;
        }
        let charge = charge.clone();
        Self::outcome(charge_ref, &charge)
    }

    async fn refund(&self, request: &RefundRequest) -> RefundOutcome {
        let mut state = self.state.lock().expect("sandbox state");
        let print = format!("{}|{}", request.charge_ref, request.amount.minor());
        if let Some((seen, refund_ref)) = state.refunds.get(&request.idempotency_key).cloned() {
            return if seen == print {
                RefundOutcome::Refunded { refund_ref }
            } else {
                RefundOutcome::Failed {
                    code: "idempotency_error".into(),
                    message: "the key was used with other parameters".into(),
                }
            };
        }
        let Some(charge) = state.charges.get_mut(&request.charge_ref) else {
            return RefundOutcome::Failed {
                code: "resource_missing".into(),
                message: format!("no such charge: {}", request.charge_ref),
            };
        };
        if charge.state != ChargeState::Succeeded {
            return RefundOutcome::Failed {
                code: "charge_not_succeeded".into(),
                message: "only a succeeded charge can be refunded".into(),
            };
        }
        let left = charge.amount - charge.refunded;
        if request.amount.minor() <= 0 || request.amount.minor() > left {
            return RefundOutcome::Failed {
                code: "amount_too_large".into(),
                message: format!("at most {left} can be refunded"),
            };
        }
        charge.refunded += request.amount.minor();
        let refund_ref = format!("sbre_{}", uuid::Uuid::new_v4().simple());
        state
            .refunds
            .insert(request.idempotency_key.clone(), (print, refund_ref.clone()));
        RefundOutcome::Refunded { refund_ref }
    }

    fn state(&self) -> GatewayState {
        GatewayState {
            id: "sandbox",
            mode: "sandbox",
            api_base: "in-process".into(),
            webhooks: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocart_domain::{Currency, Money};

    fn request(key: &str, method: &str) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: key.into(),
            amount: Money::new(1999, Currency::parse("currency", "USD").unwrap()).unwrap(),
            customer: None,
            payment_method: method.into(),
            description: "Upsell".into(),
            invoice_id: key.into(),
            return_url: None,
            metadata: Vec::new(),
        }
    }

    #[tokio::test]
    async fn each_test_method_answers_its_outcome_and_a_repeat_answers_the_first() {
        let sandbox = Sandbox::new();
        let ok = sandbox.charge(&request("k1", OK)).await;
        assert!(matches!(ok, ChargeOutcome::Succeeded { .. }), "{ok:?}");
        assert_eq!(
            sandbox.charge(&request("k1", OK)).await,
            ok,
            "a repeat answers the first"
        );
        assert_eq!(sandbox.succeeded_charges(), 1, "a repeat charges nothing");
        let declined = sandbox.charge(&request("k2", DECLINE)).await;
        assert!(
            matches!(declined, ChargeOutcome::Declined { .. }),
            "{declined:?}"
        );
        let other = sandbox.charge(&request("k1", DECLINE)).await;
        assert!(
            matches!(&other, ChargeOutcome::Unknown { reason, .. } if reason.starts_with("idempotency_error")),
            "the same key with other parameters is refused, as unknown (never declined): {other:?}"
        );

        let action = sandbox.charge(&request("k3", THREE_DS)).await;
        let ChargeOutcome::RequiresAction { charge_ref, .. } = action else {
            panic!("3DS asks for an action: {action:?}");
        };
        assert!(
            matches!(
                sandbox.complete_action(&charge_ref, "k3").await,
                ChargeOutcome::RequiresAction { .. }
            ),
            "not authenticated yet, still waiting"
        );
        assert!(sandbox.authenticate(&charge_ref));
        assert!(matches!(
            sandbox.complete_action(&charge_ref, "k3").await,
            ChargeOutcome::Succeeded { .. }
        ));

        let unknown = sandbox.charge(&request("k4", TIMEOUT)).await;
        assert!(
            matches!(unknown, ChargeOutcome::Unknown { .. }),
            "{unknown:?}"
        );
        assert!(
            matches!(
                sandbox.charge(&request("k4", TIMEOUT)).await,
                ChargeOutcome::Succeeded { .. }
            ),
            "the replay finds the charge the timeout hid"
        );
        assert_eq!(sandbox.succeeded_charges(), 3);
    }

    #[tokio::test]
    async fn refunds_are_idempotent_and_bounded_by_the_charge() {
        let sandbox = Sandbox::new();
        let ChargeOutcome::Succeeded { charge_ref } = sandbox.charge(&request("k", OK)).await
        else {
            panic!("charged")
        };
        let usd = Currency::parse("currency", "USD").unwrap();
        let refund = |key: &str, amount| RefundRequest {
            idempotency_key: key.into(),
            charge_ref: charge_ref.clone(),
            amount: Money::new(amount, usd).unwrap(),
            reason: None,
        };
        let first = sandbox.refund(&refund("r1", 1000)).await;
        assert!(matches!(first, RefundOutcome::Refunded { .. }));
        assert_eq!(
            sandbox.refund(&refund("r1", 1000)).await,
            first,
            "a repeat refunds nothing more"
        );
        assert!(
            matches!(
                sandbox.refund(&refund("r2", 1000)).await,
                RefundOutcome::Failed { .. }
            ),
            "past what is left"
        );
        assert!(matches!(
            sandbox.refund(&refund("r3", 999)).await,
            RefundOutcome::Refunded { .. }
        ));
    }
}
