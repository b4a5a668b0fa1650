//! Recovery sequence steps and their timing rules (CartBay's "Timing Controls"): delays in
//! minutes counted from abandonment, at least 15 and at most 10,080 (7 days), and later steps
//! moved so that every step comes at least 15 minutes after the one before. The saved value is
//! the normalised one.

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// The shortest delay after abandonment, and the smallest gap between two steps (minutes).
pub const MIN_DELAY_MIN: i64 = 15;
/// The longest delay after abandonment: 7 days (minutes).
pub const MAX_DELAY_MIN: i64 = 10_080;
/// The most steps one sequence may have.
pub const MAX_STEPS: usize = 10;

/// How a step reaches the shopper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    /// The name the API, the read tables and the events use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
        }
    }
}

/// What opens a run of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerType {
    CartAbandoned,
    CheckoutAbandoned,
    BrowseAbandoned,
}

impl TriggerType {
    /// The name the API, the read tables and the events use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CartAbandoned => "cart_abandoned",
            Self::CheckoutAbandoned => "checkout_abandoned",
            Self::BrowseAbandoned => "browse_abandoned",
        }
    }
}

/// How a recovery coupon discounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CouponKind {
    /// A fixed amount off the cart, in minor units of the cart's currency.
    FixedCart,
    /// A percentage off the cart.
    Percent,
}

impl CouponKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FixedCart => "fixed_cart",
            Self::Percent => "percent",
        }
    }
}

/// The coupon a step offers: `amount` is minor units (fixed_cart) or a percentage (percent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discount {
    #[serde(rename = "type")]
    pub kind: CouponKind,
    pub amount: i64,
    /// Days the coupon stays valid after it is issued (1–365).
    pub expiry_days: u32,
}

impl Discount {
    /// The problems with this discount, as messages.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.kind {
            CouponKind::Percent if !(1..=100).contains(&self.amount) => {
                problems.push("a percentage discount is 1 to 100".to_owned())
            }
            CouponKind::FixedCart if self.amount < 1 => problems
                .push("a fixed-cart discount is at least 1 (minor units of the currency)".into()),
            _ => {}
        }
        if !(1..=365).contains(&self.expiry_days) {
            problems.push("a coupon expires 1 to 365 days after it is issued".to_owned());
        }
        problems
    }
}

/// One step of a sequence, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub channel: Channel,
    /// Minutes after abandonment.
    pub delay_min: i64,
    /// The template this step renders.
    pub template: String,
    /// Whether a recovery coupon is created before this step is sent.
    #[serde(default)]
    pub coupon: bool,
    /// The coupon's terms; `None` uses the settings (`recovery.coupon_type`, `coupon_amount`,
    /// `coupon_expiry_days`). Setting a discount turns the coupon on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<Discount>,
    /// An A/B test this step takes part in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab_test: Option<String>,
}

/// Normalises steps as CartBay does: each delay is clamped to 15–10,080 minutes, then moved
/// later where needed so that it is at least 15 minutes after the previous step. Refused (with
/// the field named): no steps, too many, an empty template, a negative delay, or a sequence
/// that cannot keep its steps 15 minutes apart within 7 days.
pub fn normalise(steps: Vec<Step>) -> Result<Vec<Step>, Vec<FieldError>> {
    let mut errors = Vec::new();
    if steps.is_empty() {
        errors.push(FieldError::new(
            "steps",
            "a sequence needs at least one step",
        ));
    }
    if steps.len() > MAX_STEPS {
        errors.push(FieldError::new(
            "steps",
            format!("a sequence has at most {MAX_STEPS} steps"),
        ));
    }
    let mut previous: Option<i64> = None;
    let mut out = Vec::with_capacity(steps.len());
    for (i, mut step) in steps.into_iter().enumerate() {
        if step.template.trim().is_empty() {
            errors.push(FieldError::new(
                format!("steps[{i}].template"),
                "name the template this step sends",
            ));
        }
        if step.delay_min < 0 {
            errors.push(FieldError::new(
                format!("steps[{i}].delay_min"),
                "a delay is minutes after abandonment and cannot be negative",
            ));
        }
        let mut delay = step.delay_min.clamp(MIN_DELAY_MIN, MAX_DELAY_MIN);
        if let Some(before) = previous {
            delay = delay.max(before + MIN_DELAY_MIN);
        }
        if delay > MAX_DELAY_MIN {
            errors.push(FieldError::new(
                format!("steps[{i}].delay_min"),
                format!(
                    "steps must be at least {MIN_DELAY_MIN} minutes apart and within \
                     {MAX_DELAY_MIN} minutes (7 days) of abandonment; this one cannot fit"
                ),
            ));
        }
        if let Some(discount) = &step.discount {
            for problem in discount.check() {
                errors.push(FieldError::new(format!("steps[{i}].discount"), problem));
            }
            step.coupon = true;
        }
        step.delay_min = delay;
        previous = Some(delay);
        out.push(step);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The sequence a fresh install has: emails 45 minutes, 24 hours and 72 hours after
/// abandonment, a coupon on the third only.
pub fn default_steps() -> Vec<Step> {
    let email = |delay_min: i64, template: &str, coupon: bool| Step {
        channel: Channel::Email,
        delay_min,
        template: template.to_owned(),
        coupon,
        discount: None,
        ab_test: None,
    };
    vec![
        email(45, "recovery_email_1", false),
        email(24 * 60, "recovery_email_2", false),
        email(72 * 60, "recovery_email_3", true),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree_with_the_serialised_form() {
        for channel in [Channel::Email, Channel::Sms] {
            assert_eq!(serde_json::to_value(channel).unwrap(), channel.as_str());
        }
        for trigger in [
            TriggerType::CartAbandoned,
            TriggerType::CheckoutAbandoned,
            TriggerType::BrowseAbandoned,
        ] {
            assert_eq!(serde_json::to_value(trigger).unwrap(), trigger.as_str());
        }
    }

    fn step(delay_min: i64) -> Step {
        Step {
            channel: Channel::Email,
            delay_min,
            template: "t".into(),
            coupon: false,
            discount: None,
            ab_test: None,
        }
    }

    fn delays(steps: &[Step]) -> Vec<i64> {
        steps.iter().map(|s| s.delay_min).collect()
    }

    #[test]
    fn delays_are_clamped_to_15_minutes_and_7_days() {
        let out = normalise(vec![step(5)]).unwrap();
        assert_eq!(delays(&out), [15]);
        let out = normalise(vec![step(0), step(20_000)]).unwrap();
        assert_eq!(delays(&out), [15, MAX_DELAY_MIN]);
    }

    #[test]
    fn later_steps_move_to_stay_ordered_15_minutes_apart() {
        // Email 2 set earlier than email 1: saved as a safe ordered value.
        let out = normalise(vec![step(60), step(30), step(70)]).unwrap();
        assert_eq!(delays(&out), [60, 75, 90]);
        let ordered = normalise(vec![step(45), step(1440), step(4320)]).unwrap();
        assert_eq!(delays(&ordered), [45, 1440, 4320]);
    }

    #[test]
    fn malformed_sequences_are_refused_by_field() {
        let err = normalise(vec![]).unwrap_err();
        assert_eq!(err[0].field, "steps");
        let err = normalise(vec![step(-1)]).unwrap_err();
        assert_eq!(err[0].field, "steps[0].delay_min");
        let mut blank = step(60);
        blank.template = " ".into();
        let err = normalise(vec![step(30), blank]).unwrap_err();
        assert_eq!(err[0].field, "steps[1].template");
        let err = normalise(vec![step(30); MAX_STEPS + 1]).unwrap_err();
        assert!(err.iter().any(|e| e.field == "steps"));
        let mut generous = step(60);
        generous.discount = Some(Discount {
            kind: CouponKind::Percent,
            amount: 150,
            expiry_days: 400,
        });
        let err = normalise(vec![generous]).unwrap_err();
        assert_eq!(err.len(), 2);
        assert!(err.iter().all(|e| e.field == "steps[0].discount"));
        // Two steps at the 7-day limit cannot be 15 minutes apart.
        let err = normalise(vec![step(MAX_DELAY_MIN), step(MAX_DELAY_MIN)]).unwrap_err();
        assert_eq!(err[0].field, "steps[1].delay_min");
    }

    #[test]
    fn the_default_sequence_is_45_minutes_24_and_72_hours_with_a_coupon_on_the_third() {
        let steps = default_steps();
        assert_eq!(delays(&steps), [45, 1440, 4320]);
        assert_eq!(
            steps.iter().map(|s| s.coupon).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert!(steps.iter().all(|s| s.channel == Channel::Email));
        assert_eq!(normalise(steps.clone()).unwrap(), steps);
    }

    #[test]
    fn channels_and_triggers_use_the_reference_names() {
        assert_eq!(serde_json::to_value(Channel::Sms).unwrap(), "sms");
        assert_eq!(
            serde_json::to_value(TriggerType::CheckoutAbandoned).unwrap(),
            "checkout_abandoned"
        );
        assert_eq!(
            serde_json::from_str::<TriggerType>("\"browse_abandoned\"").unwrap(),
            TriggerType::BrowseAbandoned
        );
    }
}
