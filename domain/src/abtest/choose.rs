//! Which running test applies on a surface, and which variant a unit gets in it: the policy
//! the checkout's resolve, bump eligibility, the upsell token and the recovery dispatcher share
//! (no IO; the callers hold the running tests and record the assignment).
//!
//! # Which test applies
//! - Checkout ([`checkout_test`]): a test whose target is the funnel the cart's trigger rules
//!   picked, else one with no target (every cart). A variant serves a funnel (its slug) or a
//!   layout ([`checkout_serves`]).
//! - Bump and upsell ([`offer_test`]): a test whose target is the offer about to be shown, or,
//!   with no target, whose control serves that offer. A variant serves an offer; the offers the
//!   other variants of a running test serve are shown only through it ([`held_back_offers`]).
//! - Recovery ([`recovery_test`]): the test a step's `ab_test` names, on the surface of the
//!   step's channel, whose target is the run's sequence or none. A variant serves a template.
//!
//! One test runs in a place at a time: starting a checkout test while another runs with the
//! same target (the same funnel, or none), or a bump or upsell test while another runs with
//! the same target offer (or, both without one, the same control offer), is refused (409,
//! `api::usecases::abtests::start`). That check reads the read side, so two starts at the
//! same instant can both pass: among several that apply, the first by id wins — ids are UUID
//! v7, so the earliest created — and the others get no traffic there (the callers hold them
//! by id). A targeted test goes before an untargeted one, by the rules above.
//!
//! # Which variant
//! [`choose_variant`]: frequentist and Bayesian tests split by the sticky hash
//! ([`super::split`]); bandits draw by Thompson sampling from the allocator's posteriors, with a
//! generator seeded from (test, unit), so the draw for a unit depends only on the allocator's
//! state. Either way the choice is made once per unit: the `Assignment` aggregate keeps the
//! first.

use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};

use super::{serves_layout, split, Surface, TestDefinition, Variant, MAX_UNIT_LEN};
use crate::funnel::Layout;
use crate::recovery::Channel;
use crate::stats::bandit::Allocator;
use crate::stats::conclude::Method;

/// A running test as the surfaces hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningTest {
    pub id: String,
    pub definition: TestDefinition,
}

impl RunningTest {
    /// The test's surface.
    pub fn surface(&self) -> Surface {
        self.definition.surface
    }

    /// The control (the first variant).
    pub fn control(&self) -> Option<&Variant> {
        self.definition.variants.first()
    }

    /// The variant at `index`, or the control when there is none there.
    pub fn variant(&self, index: usize) -> Option<&Variant> {
        self.definition
            .variants
            .get(index)
            .or_else(|| self.control())
    }
}

/// What a checkout variant serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutServes<'a> {
    /// The funnel with this slug.
    Funnel(&'a str),
    /// This layout, on the funnel the cart gets.
    Layout(Layout),
}

/// What a checkout variant's `serves` names: a layout (`one_step`, `two_step`, `three_step`)
/// or else a funnel slug.
pub fn checkout_serves(serves: &str) -> CheckoutServes<'_> {
    match serves_layout(serves) {
        Some(layout) => CheckoutServes::Layout(layout),
        None => CheckoutServes::Funnel(serves),
    }
}

fn seed(domain: &[u8], test_id: &str, unit: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [domain, test_id.as_bytes(), unit.as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The seed of `unit`'s Thompson draw in test `test_id`: sha256("thompson", test, unit), each
/// part length-prefixed.
pub fn thompson_seed(test_id: &str, unit: &str) -> [u8; 32] {
    seed(b"thompson", test_id, unit)
}

/// The index of the variant `unit` gets in `test` (for a unit not assigned yet): the sticky
/// hash split by the weights for frequentist and Bayesian tests; for a bandit, a Thompson draw
/// from `bandit` (the test's allocator, counted as an allocation) with a generator seeded by
/// [`thompson_seed`]. A bandit without an allocator of its arms, or weights that split nothing,
/// fall back to the hash split and then to the control (0).
pub fn choose_variant(test: &RunningTest, unit: &str, bandit: Option<&mut Allocator>) -> usize {
    let def = &test.definition;
    if def.method == Method::Bandit {
        if let Some(allocator) = bandit.filter(|a| a.snapshot().len() == def.variants.len()) {
            let mut rng = StdRng::from_seed(thompson_seed(&test.id, unit));
            return allocator.choose(&mut rng);
        }
    }
    split(&test.id, unit, &def.weights()).unwrap_or(0)
}

/// The checkout test for a cart the trigger rules gave `funnel` (its slug; `None`: no funnel):
/// the first of `tests` on the checkout whose target is that funnel, else the first with no
/// target.
pub fn checkout_test<'a>(
    tests: &'a [RunningTest],
    funnel: Option<&str>,
) -> Option<&'a RunningTest> {
    let on_checkout = || tests.iter().filter(|t| t.surface() == Surface::Checkout);
    funnel
        .and_then(|slug| on_checkout().find(|t| t.definition.target.as_deref() == Some(slug)))
        .or_else(|| on_checkout().find(|t| t.definition.target.is_none()))
}

/// The test on `surface` (bump or upsell) for offer `offer_id` about to be shown: the first
/// whose target is the offer, else the first with no target whose control serves it.
pub fn offer_test<'a>(
    tests: &'a [RunningTest],
    surface: Surface,
    offer_id: &str,
) -> Option<&'a RunningTest> {
    let on_surface = || tests.iter().filter(move |t| t.surface() == surface);
    on_surface()
        .find(|t| t.definition.target.as_deref() == Some(offer_id))
        .or_else(|| {
            on_surface().find(|t| {
                t.definition.target.is_none() && t.control().is_some_and(|c| c.serves == offer_id)
            })
        })
}

/// The offers the variants other than the control of the running tests on `surface` serve
/// (except where one is also a control there): shown only to the units assigned to them.
pub fn held_back_offers(tests: &[RunningTest], surface: Surface) -> Vec<&str> {
    let on_surface: Vec<&RunningTest> = tests.iter().filter(|t| t.surface() == surface).collect();
    let controls: Vec<&str> = on_surface
        .iter()
        .filter_map(|t| t.control().map(|c| c.serves.as_str()))
        .collect();
    let mut held: Vec<&str> = on_surface
        .iter()
        .flat_map(|t| t.definition.variants.iter().skip(1))
        .map(|v| v.serves.as_str())
        .filter(|serves| !controls.contains(serves))
        .collect();
    held.sort_unstable();
    held.dedup();
    held
}

/// The recovery test a step with `ab_test` takes part in, sending on `channel` for a run of
/// `sequence_id`: the running test of that id on the channel's surface whose target is that
/// sequence or none.
pub fn recovery_test<'a>(
    tests: &'a [RunningTest],
    ab_test: &str,
    channel: Channel,
    sequence_id: &str,
) -> Option<&'a RunningTest> {
    let surface = match channel {
        Channel::Email => Surface::RecoveryEmail,
        Channel::Sms => Surface::RecoverySms,
    };
    tests.iter().find(|t| {
        t.id == ab_test
            && t.surface() == surface
            && t.definition
                .target
                .as_deref()
                .is_none_or(|target| target == sequence_id)
    })
}

/// The unit of an upsell test for a parent order: the order's cart when it has one (the same
/// unit as the cart's checkout and bump tests), else `order:{order_id}` (an id too long for a
/// unit is replaced by `order:#` and 32 hex digits of its sha256). The conversion process
/// manager uses the same rule.
pub fn upsell_unit(cart_id: Option<&str>, order_id: &str) -> String {
    if let Some(cart) = cart_id.filter(|c| !c.is_empty() && c.len() <= MAX_UNIT_LEN) {
        return cart.to_owned();
    }
    let unit = format!("order:{order_id}");
    if unit.len() <= MAX_UNIT_LEN {
        unit
    } else {
        let digest = Sha256::digest(order_id.as_bytes());
        format!("order:#{}", hex::encode(&digest[..16]))
    }
}

/// Where a running test applies, for the rule "one running test per place" (starting a
/// second test in a place another running test holds is refused): on `checkout` its
/// target (a funnel, or every cart); on `bump` and `upsell` its target offer, or without one
/// the offer its control serves ([`offer_test`]). Recovery tests have none: a sequence
/// step names the one test it takes part in.
pub fn place(definition: &TestDefinition) -> Option<(Surface, Option<&str>, Option<&str>)> {
    let target = definition.target.as_deref();
    match definition.surface {
        Surface::Checkout => Some((Surface::Checkout, target, None)),
        surface @ (Surface::Bump | Surface::Upsell) => Some(match target {
            Some(_) => (surface, target, None),
            None => (
                surface,
                None,
                definition.variants.first().map(|c| c.serves.as_str()),
            ),
        }),
        Surface::RecoveryEmail | Surface::RecoverySms => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::bayes::Arm;

    fn test(id: &str, surface: Surface, target: Option<&str>, serves: &[&str]) -> RunningTest {
        RunningTest {
            id: id.into(),
            definition: TestDefinition {
                name: id.into(),
                surface,
                target: target.map(Into::into),
                variants: serves
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Variant {
                        key: format!("v{i}"),
                        weight: 1,
                        serves: (*s).into(),
                    })
                    .collect(),
                method: Method::Frequentist,
                mde_relative: 0.1,
                power_target: 0.8,
                significance: 0.95,
                baseline_rate: None,
            },
        }
    }

    #[test]
    fn the_checkout_test_is_the_picked_funnels_else_an_untargeted_one() {
        let tests = [
            test("t1", Surface::Bump, None, &["main", "one_step"]),
            test(
                "t2",
                Surface::Checkout,
                Some("main"),
                &["two_step", "one_step"],
            ),
            test("t3", Surface::Checkout, None, &["a", "b"]),
            test("t4", Surface::Checkout, Some("main"), &["two_step", "x"]),
        ];
        let cases: [(Option<&str>, Option<&str>); 3] = [
            (Some("main"), Some("t2")),
            (Some("other"), Some("t3")),
            (None, Some("t3")),
        ];
        for (funnel, expected) in cases {
            assert_eq!(
                checkout_test(&tests, funnel).map(|t| t.id.as_str()),
                expected,
                "{funnel:?}"
            );
        }
        let targeted_only = [test("t2", Surface::Checkout, Some("main"), &["a", "b"])];
        assert_eq!(checkout_test(&targeted_only, Some("other")), None);
        assert_eq!(checkout_test(&targeted_only, None), None);
        assert_eq!(checkout_test(&[], Some("main")), None);
    }

    #[test]
    fn an_offer_test_is_the_offers_target_or_an_untargeted_test_whose_control_serves_it() {
        let tests = [
            test("b1", Surface::Bump, None, &["bump-a", "bump-b"]),
            test("b2", Surface::Bump, Some("bump-c"), &["bump-x", "bump-d"]),
            test("b3", Surface::Bump, Some("bump-a"), &["bump-a", "bump-e"]),
            test("u1", Surface::Upsell, None, &["up-1", "up-2"]),
        ];
        let cases = [
            (Surface::Bump, "bump-a", Some("b3")),
            (Surface::Bump, "bump-c", Some("b2")),
            (Surface::Bump, "bump-x", None),
            (Surface::Bump, "up-1", None),
            (Surface::Upsell, "up-1", Some("u1")),
            (Surface::Upsell, "bump-a", None),
        ];
        for (surface, offer, expected) in cases {
            assert_eq!(
                offer_test(&tests, surface, offer).map(|t| t.id.as_str()),
                expected,
                "{surface:?} {offer}"
            );
        }
        let untargeted = [test("b1", Surface::Bump, None, &["bump-a", "bump-b"])];
        assert_eq!(
            offer_test(&untargeted, Surface::Bump, "bump-a").map(|t| t.id.as_str()),
            Some("b1")
        );
    }

    #[test]
    fn the_other_variants_offers_are_held_back_unless_a_control_serves_them() {
        let tests = [
            test("b1", Surface::Bump, None, &["bump-a", "bump-b", "bump-c"]),
            test("b2", Surface::Bump, None, &["bump-c", "bump-d", "bump-b"]),
            test("u1", Surface::Upsell, None, &["up-1", "up-2"]),
        ];
        assert_eq!(
            held_back_offers(&tests, Surface::Bump),
            ["bump-b", "bump-d"]
        );
        assert_eq!(held_back_offers(&tests, Surface::Upsell), ["up-2"]);
        assert!(held_back_offers(&tests, Surface::Checkout).is_empty());
    }

    #[test]
    fn a_recovery_test_is_the_steps_on_the_channels_surface_and_sequence() {
        let tests = [
            test("r1", Surface::RecoveryEmail, None, &["e1", "e2"]),
            test("r2", Surface::RecoverySms, Some("default"), &["s1", "s2"]),
            test("r3", Surface::RecoveryEmail, Some("other"), &["e1", "e3"]),
        ];
        let cases = [
            ("r1", Channel::Email, "default", Some("r1")),
            ("r1", Channel::Sms, "default", None),
            ("r2", Channel::Sms, "default", Some("r2")),
            ("r2", Channel::Sms, "vip", None),
            ("r3", Channel::Email, "default", None),
            ("r3", Channel::Email, "other", Some("r3")),
            ("r9", Channel::Email, "default", None),
        ];
        for (ab_test, channel, sequence, expected) in cases {
            assert_eq!(
                recovery_test(&tests, ab_test, channel, sequence).map(|t| t.id.as_str()),
                expected,
                "{ab_test} {channel:?} {sequence}"
            );
        }
    }

    #[test]
    fn a_checkout_variant_serves_a_layout_or_a_funnel() {
        assert_eq!(
            checkout_serves("one_step"),
            CheckoutServes::Layout(Layout::OneStep)
        );
        assert_eq!(
            checkout_serves("three_step"),
            CheckoutServes::Layout(Layout::ThreeStep)
        );
        assert_eq!(checkout_serves("summer"), CheckoutServes::Funnel("summer"));
    }

    #[test]
    fn hash_tests_split_by_the_weights_and_bandits_draw_from_the_allocator() {
        let mut t = test("t1", Surface::Checkout, None, &["two_step", "one_step"]);
        t.definition.variants[0].weight = 0;
        for unit in ["c1", "c2", "c3"] {
            assert_eq!(
                choose_variant(&t, unit, None),
                1,
                "weight 0 never gets a unit"
            );
        }
        t.definition.variants[0].weight = 1;
        for i in 0..100 {
            let unit = format!("cart-{i}");
            assert_eq!(
                choose_variant(&t, &unit, None),
                split("t1", &unit, &[1, 1]).unwrap_or(9)
            );
        }

        t.definition.method = Method::Bandit;
        let mut allocator = Allocator::new(2).unwrap();
        // Arm 1 converts far better: Thompson sends nearly every unit there.
        allocator
            .refresh(vec![
                Arm {
                    conversions: 10,
                    visitors: 10_000,
                },
                Arm {
                    conversions: 5_000,
                    visitors: 10_000,
                },
            ])
            .unwrap();
        let ones = (0..200)
            .filter(|i| choose_variant(&t, &format!("cart-{i}"), Some(&mut allocator)) == 1)
            .count();
        assert_eq!(ones, 200);
        assert_eq!(allocator.allocated_since_refresh(), &[0, 200]);
        // The draw depends on (test, unit) and the allocator's state only.
        let mut other = Allocator::new(2).unwrap();
        let mut again = Allocator::new(2).unwrap();
        let draws: Vec<usize> = (0..50)
            .map(|i| choose_variant(&t, &format!("u{i}"), Some(&mut other)))
            .collect();
        let redraws: Vec<usize> = (0..50)
            .map(|i| choose_variant(&t, &format!("u{i}"), Some(&mut again)))
            .collect();
        assert_eq!(draws, redraws);
        assert!(draws.contains(&0) && draws.contains(&1), "{draws:?}");
        // A bandit without an allocator of its arms splits by hash.
        let mut three = Allocator::new(3).unwrap();
        assert_eq!(
            choose_variant(&t, "cart-1", Some(&mut three)),
            split("t1", "cart-1", &[1, 1]).unwrap_or(9)
        );
        assert_eq!(three.allocated_since_refresh(), &[0, 0, 0]);
    }

    #[test]
    fn the_upsell_unit_is_the_cart_else_the_order() {
        assert_eq!(upsell_unit(Some("cart-1"), "1001"), "cart-1");
        assert_eq!(upsell_unit(None, "1001"), "order:1001");
        assert_eq!(upsell_unit(Some(""), "1001"), "order:1001");
        let long = "9".repeat(200);
        let unit = upsell_unit(None, &long);
        assert!(unit.starts_with("order:#") && unit.len() == 39, "{unit}");
        assert_eq!(unit, upsell_unit(None, &long));
    }

    #[test]
    fn the_thompson_seed_separates_tests_and_units() {
        assert_ne!(thompson_seed("ab", "c"), thompson_seed("a", "bc"));
        assert_eq!(thompson_seed("t", "u"), thompson_seed("t", "u"));
    }

    #[test]
    fn a_place_is_the_surface_and_its_target_or_the_controls_offer() {
        let with = |surface, target: Option<&str>, control: &str| TestDefinition {
            surface,
            target: target.map(str::to_owned),
            variants: vec![Variant {
                key: "a".into(),
                weight: 1,
                serves: control.into(),
            }],
            ..definition_for_place()
        };
        for (def, expected) in [
            (
                with(Surface::Checkout, None, "two_step"),
                Some((Surface::Checkout, None, None)),
            ),
            (
                with(Surface::Checkout, Some("f1"), "two_step"),
                Some((Surface::Checkout, Some("f1"), None)),
            ),
            (
                with(Surface::Bump, Some("o1"), "o2"),
                Some((Surface::Bump, Some("o1"), None)),
            ),
            (
                with(Surface::Upsell, None, "o2"),
                Some((Surface::Upsell, None, Some("o2"))),
            ),
            (with(Surface::RecoveryEmail, None, "t1"), None),
            (with(Surface::RecoverySms, None, "t1"), None),
        ] {
            assert_eq!(place(&def), expected, "{def:?}");
        }
    }

    fn definition_for_place() -> TestDefinition {
        TestDefinition {
            name: "t".into(),
            surface: Surface::Checkout,
            target: None,
            variants: Vec::new(),
            method: Method::Frequentist,
            mde_relative: 0.1,
            power_target: 0.8,
            significance: 0.95,
            baseline_rate: None,
        }
    }
}
