//! The capture rules: whether a checkout's consent lets OCart keep the cart, and what becomes
//! of a capture from a shopper on the suppression list.

/// Whether the shopper consents to being kept: a consent given or withdrawn says so; one not
/// stated consents only where the store does not require consent
/// (`recovery.consent_required`).
pub fn consents(given: Option<bool>, consent_required: bool) -> bool {
    match given {
        Some(given) => given,
        None => !consent_required,
    }
}

/// What a capture does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureDecision {
    /// Keep (create or update) the cart.
    Keep,
    /// The shopper withdrew consent: erase the cart and its personal data.
    Withdraw,
    /// No consent and nothing to withdraw: keep nothing, and say so.
    NotKept,
    /// A shopper who unsubscribed, bounced or complained is not tracked again; the answer is
    /// the one a kept cart gets, so the public endpoint tells no one who is suppressed.
    IgnoreSuppressed,
}

/// The capture rule. `suppressed` is whether the shopper's email is on the suppression list
/// (it matters only to a capture that would keep the cart).
pub fn capture_decision(
    given: Option<bool>,
    consent_required: bool,
    suppressed: bool,
) -> CaptureDecision {
    if consents(given, consent_required) {
        if suppressed {
            CaptureDecision::IgnoreSuppressed
        } else {
            CaptureDecision::Keep
        }
    } else if given == Some(false) {
        CaptureDecision::Withdraw
    } else {
        CaptureDecision::NotKept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CaptureDecision::*;

    #[test]
    fn the_capture_rules() {
        let table = [
            (
                "a consent given keeps the cart",
                Some(true),
                true,
                false,
                Keep,
            ),
            (
                "a consent given keeps it where none is required",
                Some(true),
                false,
                false,
                Keep,
            ),
            (
                "an unstated consent keeps the cart where none is required",
                None,
                false,
                false,
                Keep,
            ),
            (
                "an unstated consent keeps nothing where consent is required",
                None,
                true,
                false,
                NotKept,
            ),
            (
                "a withdrawn consent erases the cart",
                Some(false),
                true,
                false,
                Withdraw,
            ),
            (
                "a withdrawn consent erases it where none is required",
                Some(false),
                false,
                false,
                Withdraw,
            ),
            (
                "a suppressed shopper who consents is not captured",
                Some(true),
                true,
                true,
                IgnoreSuppressed,
            ),
            (
                "a suppressed shopper is not captured where no consent is required",
                None,
                false,
                true,
                IgnoreSuppressed,
            ),
            (
                "a suppressed shopper may still withdraw",
                Some(false),
                true,
                true,
                Withdraw,
            ),
            (
                "a suppressed shopper without consent keeps nothing",
                None,
                true,
                true,
                NotKept,
            ),
        ];
        for (rule, given, required, suppressed, expected) in table {
            assert_eq!(
                capture_decision(given, required, suppressed),
                expected,
                "{rule}"
            );
            assert_eq!(
                consents(given, required),
                matches!(expected, Keep | IgnoreSuppressed),
                "{rule}"
            );
        }
    }
}
