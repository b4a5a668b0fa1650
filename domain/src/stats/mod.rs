//! A/B test statistics (issue 12): pure functions on counts, checked against vectors made
//! with mpmath and scipy (`scripts/stats/`), shipped in `vectors/`.
//!
//! - [`special`]: the normal distribution (Φ, its complement and its exact quantile), log-gamma
//!   and the regularized incomplete gamma (the chi-square survival function).
//! - [`frequentist`]: Wilson intervals, the pooled z-test, the Wald interval of a difference,
//!   the delta-method interval of a relative lift, Fleiss's sample size, the SRM chi-square.
//! - [`beta`] and [`bayes`]: Beta posteriors of Bernoulli arms, P(B > A), expected loss and
//!   the probability to be best.
//! - [`bandit`]: Thompson sampling with the batched posterior updates live traffic uses, and
//!   its regret simulator.
//! - [`conclude`]: when a running test concludes (an always-valid mSPRT guard under every
//!   method), and the A/A simulator that measures its false winners.

pub mod bandit;
pub mod bayes;
pub mod beta;
pub mod conclude;
pub mod frequentist;
pub mod special;
