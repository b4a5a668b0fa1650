//! The send guards: whether a due recovery step may be sent now, must wait, or ends the run.
//! A pure decision over typed facts; the dispatcher gathers the facts (one read per pass) and
//! acts on the verdict (claim and send, stop, or leave the run for a later pass).

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};

use super::{Channel, StopReason};

/// A cart's state as the read model records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CartState {
    Active,
    Abandoned,
    Converted,
    Expired,
    /// A status the guards do not know (the carts projector writes none).
    Unknown,
}

impl CartState {
    /// The state of a read-model status (`active`, `abandoned`, `converted`, `expired`).
    pub fn from_status(status: &str) -> Self {
        match status {
            "active" => Self::Active,
            "abandoned" => Self::Abandoned,
            "converted" => Self::Converted,
            "expired" => Self::Expired,
            _ => Self::Unknown,
        }
    }
}

/// A run's state as the read model records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Opened, nothing sent yet.
    Pending,
    /// At least one step done.
    Running,
    Converted,
    Stopped,
    /// A status the guards do not know (the `recovery_runs` projector writes none).
    Unknown,
}

impl RunState {
    /// The state of a read-model status (`pending`, `running`, `converted`, `stopped`).
    pub fn from_status(status: &str) -> Self {
        match status {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "converted" => Self::Converted,
            "stopped" => Self::Stopped,
            _ => Self::Unknown,
        }
    }

    /// Whether the run may still message its recipient.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }
}

/// What the guards know of the run's cart.
#[derive(Debug, Clone, Copy)]
pub struct CartFacts<'a> {
    pub state: CartState,
    /// The shopper was erased (consent withdrawn, retention).
    pub erased: bool,
    /// An order is recorded on the cart.
    pub has_order: bool,
    pub email_hash: Option<&'a str>,
    pub phone_hash: Option<&'a str>,
    /// Whether the clear address of each channel can be read (its key not erased).
    pub has_email: bool,
    pub has_phone: bool,
}

/// Another run of the same recipient (email), as far as it can hold this one back.
#[derive(Debug, Clone, Copy)]
pub struct OtherRun<'a> {
    pub run_id: &'a str,
    pub state: RunState,
    pub abandoned_at: DateTime<Utc>,
    pub last_sent_at: Option<DateTime<Utc>>,
}

/// The settings the guards apply (`recovery.max_age_days`, `recovery.quiet_period_hours`).
#[derive(Debug, Clone, Copy)]
pub struct GuardSettings {
    pub max_age_days: u32,
    pub quiet_period_hours: u32,
}

/// Everything the guards look at for one due run.
#[derive(Debug, Clone, Copy)]
pub struct SendFacts<'a> {
    pub run_id: &'a str,
    pub run_state: RunState,
    /// Steps done (sent or given up); the step due is the next one.
    pub steps_done: u32,
    /// The channel of the step due, or none when every step is done.
    pub next_channel: Option<Channel>,
    pub abandoned_at: DateTime<Utc>,
    /// The cart, if the read model has it.
    pub cart: Option<CartFacts<'a>>,
    /// Suppressed recipients (subject hashes).
    pub suppressed: &'a HashSet<String>,
    /// Recipients (email subject hashes) with a paid order within the look-back window.
    pub buyers: &'a HashSet<String>,
    /// The recipient's runs that can hold this one (open, or sent within the quiet period).
    pub others: &'a [OtherRun<'a>],
}

/// Why a run waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// The cart converted; the opener is crediting the run. Never send meanwhile.
    CartConverting,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CartConverting => "the cart converted; the run is being credited",
        }
    }
}

/// The guards' verdict on a due run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendVerdict {
    /// Send step `step` (1-based) on `channel`.
    Send { step: u32, channel: Channel },
    /// Leave it for now.
    Hold(HoldReason),
    /// End the run: a guard failed for good.
    Stop(StopReason),
}

/// The send guards, in order: the first that fails decides.
pub fn send_verdict(
    facts: &SendFacts<'_>,
    settings: GuardSettings,
    now: DateTime<Utc>,
) -> SendVerdict {
    use SendVerdict::Stop;
    let Some(channel) = facts.next_channel else {
        return Stop(StopReason::Completed);
    };
    let Some(cart) = facts.cart else {
        return Stop(StopReason::CartNotAbandoned);
    };
    if cart.erased {
        return Stop(StopReason::NoConsent);
    }
    match cart.state {
        CartState::Abandoned => {}
        CartState::Converted => return SendVerdict::Hold(HoldReason::CartConverting),
        CartState::Active | CartState::Expired | CartState::Unknown => {
            return Stop(StopReason::CartNotAbandoned)
        }
    }
    if cart.has_order {
        return Stop(StopReason::OrderPlaced);
    }
    if facts.abandoned_at < now - Duration::days(i64::from(settings.max_age_days)) {
        return Stop(StopReason::TooOld);
    }
    let Some(email_hash) = cart.email_hash else {
        return Stop(StopReason::NoConsent);
    };
    let recipient_hash = match channel {
        Channel::Email => Some(email_hash),
        Channel::Sms => cart.phone_hash,
    };
    let Some(recipient_hash) = recipient_hash else {
        return Stop(StopReason::NoRecipient);
    };
    if facts.suppressed.contains(email_hash) || facts.suppressed.contains(recipient_hash) {
        return Stop(StopReason::Suppressed);
    }
    if facts.buyers.contains(email_hash) {
        return Stop(StopReason::OrderPlaced);
    }
    let quiet = Duration::hours(i64::from(settings.quiet_period_hours));
    if facts.steps_done == 0 && facts.run_state == RunState::Pending {
        // Only a run that has not messaged yet yields to another run of the recipient: one
        // still open that started before it (the oldest open run of a recipient is the one
        // that messages them), or one that messaged them within the quiet period.
        let held = facts.others.iter().any(|other| {
            other.run_id != facts.run_id
                && ((other.state.is_open()
                    && (other.abandoned_at, other.run_id) < (facts.abandoned_at, facts.run_id))
                    || other.last_sent_at.is_some_and(|at| at > now - quiet))
        });
        if held {
            return Stop(StopReason::QuietPeriod);
        }
    }
    let has_address = match channel {
        Channel::Email => cart.has_email,
        Channel::Sms => cart.has_phone,
    };
    if !has_address {
        return Stop(StopReason::NoRecipient);
    }
    SendVerdict::Send {
        step: facts.steps_done + 1,
        channel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(hours: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-10T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::hours(hours)
    }

    const SETTINGS: GuardSettings = GuardSettings {
        max_age_days: 7,
        quiet_period_hours: 24,
    };

    fn cart() -> CartFacts<'static> {
        CartFacts {
            state: CartState::Abandoned,
            erased: false,
            has_order: false,
            email_hash: Some("e1"),
            phone_hash: Some("p1"),
            has_email: true,
            has_phone: true,
        }
    }

    struct Case {
        rule: &'static str,
        run_state: RunState,
        steps_done: u32,
        channel: Option<Channel>,
        abandoned_at: DateTime<Utc>,
        cart: Option<CartFacts<'static>>,
        suppressed: &'static [&'static str],
        buyers: &'static [&'static str],
        others: Vec<OtherRun<'static>>,
        expected: SendVerdict,
    }

    fn case(rule: &'static str, expected: SendVerdict) -> Case {
        Case {
            rule,
            run_state: RunState::Pending,
            steps_done: 0,
            channel: Some(Channel::Email),
            abandoned_at: t(-1),
            cart: Some(cart()),
            suppressed: &[],
            buyers: &[],
            others: Vec::new(),
            expected,
        }
    }

    fn with_cart(mut c: Case, change: impl FnOnce(&mut CartFacts<'static>)) -> Case {
        let mut facts = c.cart.unwrap();
        change(&mut facts);
        c.cart = Some(facts);
        c
    }

    fn other(
        run_id: &'static str,
        state: RunState,
        abandoned_at: DateTime<Utc>,
        sent: Option<DateTime<Utc>>,
    ) -> OtherRun<'static> {
        OtherRun {
            run_id,
            state,
            abandoned_at,
            last_sent_at: sent,
        }
    }

    #[test]
    fn the_send_guards() {
        use SendVerdict::{Hold, Send, Stop};
        let send_email = Send {
            step: 1,
            channel: Channel::Email,
        };
        let table = vec![
            case(
                "an abandoned cart with a reachable, unsuppressed shopper gets the step",
                send_email,
            ),
            Case {
                steps_done: 2,
                run_state: RunState::Running,
                ..case(
                    "the step due is the one after those done",
                    Send {
                        step: 3,
                        channel: Channel::Email,
                    },
                )
            },
            Case {
                channel: None,
                ..case(
                    "a run with no step left is completed",
                    Stop(StopReason::Completed),
                )
            },
            Case {
                cart: None,
                ..case(
                    "a run whose cart is gone is stopped as not abandoned",
                    Stop(StopReason::CartNotAbandoned),
                )
            },
            with_cart(
                case(
                    "an erased shopper has no consent",
                    Stop(StopReason::NoConsent),
                ),
                |c| c.erased = true,
            ),
            with_cart(
                case(
                    "a converted cart holds the run while the opener credits it",
                    Hold(HoldReason::CartConverting),
                ),
                |c| c.state = CartState::Converted,
            ),
            with_cart(
                case(
                    "an active cart (captured again) is not abandoned",
                    Stop(StopReason::CartNotAbandoned),
                ),
                |c| c.state = CartState::Active,
            ),
            with_cart(
                case(
                    "an expired cart is not abandoned",
                    Stop(StopReason::CartNotAbandoned),
                ),
                |c| c.state = CartState::Expired,
            ),
            with_cart(
                case(
                    "a cart with an order recorded is never chased",
                    Stop(StopReason::OrderPlaced),
                ),
                |c| c.has_order = true,
            ),
            Case {
                abandoned_at: t(-24 * 8),
                ..case(
                    "a cart abandoned longer ago than the maximum age is too old",
                    Stop(StopReason::TooOld),
                )
            },
            with_cart(
                case(
                    "a cart without an email subject has no consent",
                    Stop(StopReason::NoConsent),
                ),
                |c| c.email_hash = None,
            ),
            with_cart(
                Case {
                    channel: Some(Channel::Sms),
                    ..case(
                        "an SMS step for a shopper without a phone has no recipient",
                        Stop(StopReason::NoRecipient),
                    )
                },
                |c| c.phone_hash = None,
            ),
            Case {
                suppressed: &["e1"],
                ..case(
                    "a suppressed email is not messaged",
                    Stop(StopReason::Suppressed),
                )
            },
            Case {
                channel: Some(Channel::Sms),
                suppressed: &["p1"],
                ..case(
                    "a suppressed phone gets no SMS",
                    Stop(StopReason::Suppressed),
                )
            },
            Case {
                channel: Some(Channel::Sms),
                suppressed: &["e1"],
                ..case(
                    "a suppressed email gets no SMS either",
                    Stop(StopReason::Suppressed),
                )
            },
            Case {
                buyers: &["e1"],
                ..case(
                    "a shopper who has ordered since is never chased",
                    Stop(StopReason::OrderPlaced),
                )
            },
            Case {
                others: vec![other("a-older", RunState::Running, t(-2), None)],
                ..case(
                    "a first step yields to an older open run of the recipient",
                    Stop(StopReason::QuietPeriod),
                )
            },
            Case {
                others: vec![other("z-newer", RunState::Pending, t(0), None)],
                ..case(
                    "a newer open run of the recipient does not hold the older one",
                    send_email,
                )
            },
            Case {
                others: vec![other("x", RunState::Stopped, t(-5), Some(t(-3)))],
                ..case(
                    "a first step waits out the quiet period after another run's send",
                    Stop(StopReason::QuietPeriod),
                )
            },
            Case {
                others: vec![other("x", RunState::Stopped, t(-50), Some(t(-30)))],
                ..case("a send before the quiet period holds nothing", send_email)
            },
            Case {
                others: vec![other("x", RunState::Stopped, t(-5), None)],
                ..case("a closed run that sent nothing holds nothing", send_email)
            },
            Case {
                run_state: RunState::Running,
                steps_done: 1,
                others: vec![other("a-older", RunState::Running, t(-2), Some(t(0)))],
                ..case(
                    "a run that has messaged already is never held by another",
                    Send {
                        step: 2,
                        channel: Channel::Email,
                    },
                )
            },
            with_cart(
                case(
                    "a shopper whose address cannot be read has no recipient",
                    Stop(StopReason::NoRecipient),
                ),
                |c| c.has_email = false,
            ),
            with_cart(
                Case {
                    channel: Some(Channel::Sms),
                    ..case(
                        "an SMS step needs a readable phone",
                        Stop(StopReason::NoRecipient),
                    )
                },
                |c| c.has_phone = false,
            ),
            Case {
                channel: Some(Channel::Sms),
                ..case(
                    "an SMS step to a reachable phone is sent",
                    Send {
                        step: 1,
                        channel: Channel::Sms,
                    },
                )
            },
        ];
        for c in table {
            let suppressed: HashSet<String> = c.suppressed.iter().map(|s| s.to_string()).collect();
            let buyers: HashSet<String> = c.buyers.iter().map(|s| s.to_string()).collect();
            let facts = SendFacts {
                run_id: "m-run",
                run_state: c.run_state,
                steps_done: c.steps_done,
                next_channel: c.channel,
                abandoned_at: c.abandoned_at,
                cart: c.cart,
                suppressed: &suppressed,
                buyers: &buyers,
                others: &c.others,
            };
            assert_eq!(
                send_verdict(&facts, SETTINGS, t(0)),
                c.expected,
                "{}",
                c.rule
            );
        }
    }

    #[test]
    fn read_model_statuses_map_to_states() {
        let carts = [
            ("active", CartState::Active),
            ("abandoned", CartState::Abandoned),
            ("converted", CartState::Converted),
            ("expired", CartState::Expired),
            ("withdrawn", CartState::Unknown),
        ];
        for (status, state) in carts {
            assert_eq!(CartState::from_status(status), state, "{status}");
        }
        let runs = [
            ("pending", RunState::Pending, true),
            ("running", RunState::Running, true),
            ("converted", RunState::Converted, false),
            ("stopped", RunState::Stopped, false),
            ("other", RunState::Unknown, false),
        ];
        for (status, state, open) in runs {
            assert_eq!(RunState::from_status(status), state, "{status}");
            assert_eq!(state.is_open(), open, "{status}");
        }
    }
}
