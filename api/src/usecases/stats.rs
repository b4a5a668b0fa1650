//! The A/B test calculator (issue 12): `POST /stats/compare` and `GET /stats/sample-size` over
//! HTTP, `ocart test calc compare` and `ocart test calc sample-size` on the command line, and
//! `ocart bench stats`. No store is involved: [`compare`] and [`sample_size`] check the input
//! into the domain's values (`ocart_domain::stats`), call its pure statistics and assemble the
//! answer, so HTTP and the CLI refuse alike (naming the field, `arms[1].conversions`) and
//! answer the same JSON.
//!
//! What [`compare`] answers, the first arm being the control: per arm its rate with the Wilson
//! interval at `confidence` and P(the arm has the highest rate) (Beta posteriors, uniform
//! prior); per other arm, against the control, the difference with its unpooled Wald interval,
//! the relative lift with its delta-method interval, the pooled z-test, P(B > A), P(A > B) and
//! the two expected losses; and the sample-ratio-mismatch test of the visitors against
//! `weights`. A value that does not exist (the rate of an arm without visitors, the z-test when
//! nobody or everybody converted, the lift of a control without conversions) is `null`.

use std::collections::HashMap;

use ocart_domain::stats::bayes::{self, BayesError, MAX_ARMS};
use ocart_domain::stats::frequentist::{self, Arm, Confidence, StatsError};
use ocart_domain::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{RefOr, Required, SchemaFormat};
use utoipa::{IntoParams, ToSchema};

/// The fewest arms a comparison takes (the control and one variant).
pub const MIN_ARMS: usize = 2;
/// The longest arm key, in characters.
pub const MAX_KEY_CHARS: usize = 64;
/// The confidence level of the intervals when none is given.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;
/// The power of a sample size when none is given.
pub const DEFAULT_POWER: f64 = 0.8;
/// The arms of a sample size (the control included) when none is given.
pub const DEFAULT_VARIANTS: u32 = 2;

/// Why the calculator refused its input: the fields that do not fit, each named.
#[derive(Debug, thiserror::Error)]
pub enum CalcError {
    /// Fields that do not fit (422).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
}

/// One arm's counts, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StatsArmCounts)]
pub struct ArmCounts {
    /// The arm's name: 1 to 64 characters, unique among the arms.
    #[schema(min_length = 1, max_length = 64)]
    pub key: String,
    /// Visitors who converted; at most `visitors`.
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(schema_with = conversions_schema)]
    pub conversions: u64,
    /// Visitors exposed to the arm.
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(schema_with = visitors_schema)]
    pub visitors: u64,
}

/// `POST /stats/compare`: the arms, the first the control.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareRequest {
    /// 2 to 10 arms with unique keys, the first the control; each arm's conversions at most
    /// its visitors.
    #[schema(min_items = 2, max_items = 10)]
    pub arms: Vec<ArmCounts>,
    /// The confidence level of every interval, strictly between 0 and 1; 0.95 when absent or
    /// null.
    #[serde(default)]
    #[schema(schema_with = confidence_schema, required = false)]
    pub confidence: Option<f64>,
    /// The intended traffic split the sample-ratio-mismatch test checks the visitors against:
    /// one weight per arm, in the arms' order, each finite and greater than 0 (normalised, so
    /// `[1, 1]` and `[0.5, 0.5]` are the same split); an equal split when absent or null.
    #[serde(default)]
    #[schema(schema_with = weights_schema, required = false)]
    pub weights: Option<Vec<f64>>,
}

/// One arm in the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = StatsArmResult)]
pub struct ArmResult {
    pub key: String,
    #[schema(schema_with = conversions_schema)]
    pub conversions: u64,
    #[schema(schema_with = visitors_schema)]
    pub visitors: u64,
    /// conversions / visitors; null without visitors.
    #[schema(minimum = 0, maximum = 1)]
    pub rate: Option<f64>,
    /// The Wilson score interval's lower bound at `confidence`; null without visitors.
    #[schema(minimum = 0, maximum = 1)]
    pub ci_low: Option<f64>,
    /// The Wilson score interval's upper bound; null without visitors.
    #[schema(minimum = 0, maximum = 1)]
    pub ci_high: Option<f64>,
    /// P(this arm has the highest rate), Beta(1 + conversions, 1 + visitors − conversions)
    /// posteriors; the arms' add up to 1.
    #[schema(minimum = 0, maximum = 1)]
    pub prob_best: f64,
}

/// One variant against the control; differences are variant − control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = StatsComparison)]
pub struct ComparisonResult {
    /// The variant's key.
    pub key: String,
    /// rate(variant) − rate(control); null when an arm has no visitors.
    #[schema(minimum = -1, maximum = 1)]
    pub diff: Option<f64>,
    /// The unpooled Wald interval of `diff` at `confidence` (not clamped to [−1, 1]).
    pub ci_diff_low: Option<f64>,
    pub ci_diff_high: Option<f64>,
    /// rate(variant) / rate(control) − 1; null when an arm has no visitors or the control no
    /// conversions.
    #[schema(minimum = -1)]
    pub lift: Option<f64>,
    /// The first-order delta-method interval of `lift`.
    pub ci_lift_low: Option<f64>,
    pub ci_lift_high: Option<f64>,
    /// The pooled two-proportion z statistic (positive when the variant converts better);
    /// null when an arm has no visitors or the pooled rate is 0 or 1.
    pub z: Option<f64>,
    /// The two-sided p-value of `z`, without continuity correction; null with `z`.
    #[schema(minimum = 0, maximum = 1)]
    pub p_value: Option<f64>,
    /// P(p_variant > p_control).
    #[schema(minimum = 0, maximum = 1)]
    pub prob_beats_control: f64,
    /// P(p_control > p_variant).
    #[schema(minimum = 0, maximum = 1)]
    pub prob_control_beats: f64,
    /// E[max(p_control − p_variant, 0)]: the expected loss, in rate units, of choosing the
    /// variant.
    #[schema(minimum = 0, maximum = 1)]
    pub expected_loss: f64,
    /// E[max(p_variant − p_control, 0)]: the expected loss of keeping the control.
    #[schema(minimum = 0, maximum = 1)]
    pub expected_loss_control: f64,
}

/// The sample-ratio-mismatch test: Pearson's chi-square of the visitors against the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = StatsSrm)]
pub struct SrmResult {
    #[schema(minimum = 0)]
    pub chi2: f64,
    /// Degrees of freedom: the number of arms − 1.
    #[schema(schema_with = df_schema)]
    pub df: u64,
    /// P(χ²_df > chi2); a small value means the split is not the intended one.
    #[schema(minimum = 0, maximum = 1)]
    pub p_value: f64,
}

/// What `POST /stats/compare` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompareAnswer {
    /// The arms, in the order sent.
    pub arms: Vec<ArmResult>,
    /// One per arm but the control, in the order sent.
    pub comparisons: Vec<ComparisonResult>,
    pub srm: SrmResult,
}

/// `GET /stats/sample-size` (its parameters documented by hand below: each with its
/// description, whether it is required and its exact schema).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSizeRequest {
    /// The control's conversion rate, strictly between 0 and 1.
    pub baseline_rate: f64,
    /// The relative change to detect (0.1: +10 %), above −1 and not 0; the variant's rate
    /// baseline_rate × (1 + relative_mde) must stay below 1.
    pub relative_mde: f64,
    /// The probability of detecting the effect, strictly between 0 and 1; default 0.8.
    pub power: Option<f64>,
    /// The confidence level (1 − α) of the two-sided test, strictly between 0 and 1; default
    /// 0.95.
    pub confidence: Option<f64>,
    /// The arms, the control included: 2 to 10; default 2.
    pub variants: Option<u32>,
}

impl IntoParams for SampleSizeRequest {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let param = |name: &str, required: bool, schema: RefOr<Schema>| {
            let description = match &schema {
                RefOr::T(Schema::Object(object)) => object.description.clone(),
                RefOr::T(Schema::OneOf(one_of)) => one_of.description.clone(),
                _ => None,
            };
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(if required {
                    Required::True
                } else {
                    Required::False
                })
                .description(description)
                .schema(Some(schema))
                .build()
        };
        vec![
            param("baseline_rate", true, baseline_schema().into()),
            param("relative_mde", true, mde_schema()),
            param("power", false, power_schema().into()),
            param("confidence", false, test_confidence_schema().into()),
            param("variants", false, variants_schema().into()),
        ]
    }
}

/// What `GET /stats/sample-size` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SampleSizeAnswer {
    /// Visitors needed in each arm (Fleiss, no continuity correction).
    #[schema(schema_with = per_variant_schema)]
    pub per_variant: u64,
    /// `per_variant` × `variants`.
    #[schema(schema_with = total_schema)]
    pub total: u64,
}

/// Compares the arms: the frequentist and Bayesian statistics of each variant against the
/// control, each arm's probability to be best, and the SRM test. Refused, naming every field
/// that does not fit: fewer than 2 or more than 10 arms, a key empty, longer than 64 characters
/// or repeated, conversions above visitors, a confidence outside (0, 1), weights not one per
/// arm or not finite and above 0.
pub fn compare(request: &CompareRequest) -> Result<CompareAnswer, CalcError> {
    let mut errors = Vec::new();
    let confidence = confidence_of("confidence", request.confidence, &mut errors);
    let arms = arms_of(&request.arms, &mut errors);
    let weights = match &request.weights {
        None => vec![1.0; request.arms.len()],
        Some(weights) => {
            if weights.len() != request.arms.len() {
                errors.push(FieldError::new(
                    "weights",
                    format!(
                        "has {} weights for {} arms: give one per arm",
                        weights.len(),
                        request.arms.len()
                    ),
                ));
            }
            for (i, &w) in weights.iter().enumerate() {
                if !(w > 0.0 && w.is_finite()) {
                    errors.push(FieldError::new(
                        format!("weights[{i}]"),
                        format!("must be a finite number greater than 0, got {w}"),
                    ));
                }
            }
            weights.clone()
        }
    };
    let (Some(confidence), Some(arms), true) = (confidence, arms, errors.is_empty()) else {
        return Err(CalcError::Invalid(errors));
    };
    let visitors: Vec<u64> = arms.iter().map(|a| a.visitors()).collect();
    let srm = frequentist::srm(&visitors, &weights).map_err(|e| srm_error(e, weights.len()))?;
    let posterior: Vec<bayes::Arm> = arms
        .iter()
        .map(|a| bayes::Arm {
            conversions: a.conversions(),
            visitors: a.visitors(),
        })
        .collect();
    let (Some(&control), Some(&control_posterior)) = (arms.first(), posterior.first()) else {
        return Err(CalcError::Invalid(vec![arms_count_error(0)]));
    };
    let mut comparisons = Vec::with_capacity(arms.len().saturating_sub(1));
    for ((counts, &arm), &arm_posterior) in request.arms.iter().zip(&arms).zip(&posterior).skip(1) {
        let freq = frequentist::compare(control, arm, confidence);
        let pair = bayes::compare(control_posterior, arm_posterior).map_err(bayes_error)?;
        comparisons.push(ComparisonResult {
            key: counts.key.clone(),
            diff: freq.difference.map(|e| e.value),
            ci_diff_low: freq.difference.map(|e| e.interval.lower),
            ci_diff_high: freq.difference.map(|e| e.interval.upper),
            lift: freq.lift.map(|e| e.value),
            ci_lift_low: freq.lift.map(|e| e.interval.lower),
            ci_lift_high: freq.lift.map(|e| e.interval.upper),
            z: freq.z_test.map(|t| t.z),
            p_value: freq.z_test.map(|t| t.p_value),
            prob_beats_control: pair.prob_beats_control,
            prob_control_beats: pair.prob_control_beats,
            expected_loss: pair.expected_loss,
            expected_loss_control: pair.expected_loss_control,
        });
    }
    // With two arms, P(best) is P(A > B) and P(B > A), which the pairwise comparison has
    // just computed (the same integrals): not computed twice.
    let best = match comparisons.as_slice() {
        [only] if arms.len() == 2 => vec![only.prob_control_beats, only.prob_beats_control],
        _ => bayes::prob_best(&posterior).map_err(bayes_error)?,
    };
    let mut answer_arms = Vec::with_capacity(arms.len());
    for ((counts, &arm), &prob_best) in request.arms.iter().zip(&arms).zip(&best) {
        let estimate = frequentist::wilson(arm, confidence);
        answer_arms.push(ArmResult {
            key: counts.key.clone(),
            conversions: arm.conversions(),
            visitors: arm.visitors(),
            rate: arm.rate(),
            ci_low: estimate.map(|e| e.interval.lower),
            ci_high: estimate.map(|e| e.interval.upper),
            prob_best,
        });
    }
    Ok(CompareAnswer {
        arms: answer_arms,
        comparisons,
        srm: SrmResult {
            chi2: srm.chi2,
            df: srm.df,
            p_value: srm.p_value,
        },
    })
}

/// Visitors per arm for a two-sided test (Fleiss's formula, no continuity correction; see
/// `ocart_domain::stats::frequentist::sample_size`). Refused, naming the parameter: a baseline
/// rate or power or confidence outside (0, 1), an effect of 0 or one that takes the variant's
/// rate out of (0, 1), variants outside 2 to 10, an answer beyond 64 bits.
pub fn sample_size(request: &SampleSizeRequest) -> Result<SampleSizeAnswer, CalcError> {
    let mut errors = Vec::new();
    let confidence = confidence_of("confidence", request.confidence, &mut errors);
    let variants = request.variants.unwrap_or(DEFAULT_VARIANTS);
    if !(MIN_ARMS..=MAX_ARMS).contains(&(variants as usize)) {
        errors.push(FieldError::new(
            "variants",
            format!("must be {MIN_ARMS} to {MAX_ARMS} (the control included), got {variants}"),
        ));
    }
    let (Some(confidence), true) = (confidence, errors.is_empty()) else {
        return Err(CalcError::Invalid(errors));
    };
    let power = request.power.unwrap_or(DEFAULT_POWER);
    frequentist::sample_size(
        request.baseline_rate,
        request.relative_mde,
        power,
        confidence,
        variants,
    )
    .map(|size| SampleSizeAnswer {
        per_variant: size.per_variant,
        total: size.total,
    })
    .map_err(|err| {
        let (field, message) = match err {
            StatsError::Baseline(v) => (
                "baseline_rate",
                format!("must be strictly between 0 and 1, got {v}"),
            ),
            StatsError::MinimumDetectableEffect(v) => (
                "relative_mde",
                format!("must be a finite number other than 0, got {v}"),
            ),
            StatsError::VariantRate(p) => (
                "relative_mde",
                format!(
                    "makes the variant's rate baseline_rate × (1 + relative_mde) = {p}, which is \
                     not strictly between 0 and 1"
                ),
            ),
            StatsError::Power(v) => (
                "power",
                format!("must be strictly between 0 and 1, got {v}"),
            ),
            StatsError::TooFewArms(n) => (
                "variants",
                format!("must be {MIN_ARMS} to {MAX_ARMS} (the control included), got {n}"),
            ),
            StatsError::Overflow => (
                "relative_mde",
                "is too small for this baseline rate: the sample size does not fit in 64 bits"
                    .to_owned(),
            ),
            other => ("query", other.to_string()),
        };
        CalcError::Invalid(vec![FieldError::new(field, message)])
    })
}

/// The confidence level `raw` (default 0.95) as the domain's value, or an error on `field`.
fn confidence_of(
    field: &str,
    raw: Option<f64>,
    errors: &mut Vec<FieldError>,
) -> Option<Confidence> {
    let level = raw.unwrap_or(DEFAULT_CONFIDENCE);
    match Confidence::new(level) {
        Ok(confidence) => Some(confidence),
        Err(_) => {
            errors.push(FieldError::new(
                field,
                format!("must be strictly between 0 and 1, got {level}"),
            ));
            None
        }
    }
}

fn arms_count_error(n: usize) -> FieldError {
    FieldError::new(
        "arms",
        format!("must hold {MIN_ARMS} to {MAX_ARMS} arms (the first is the control), got {n}"),
    )
}

/// The arms as the domain's counts, or `None` with their errors pushed: the count, then per
/// arm its key (empty, too long, repeated) and its conversions against its visitors.
fn arms_of(arms: &[ArmCounts], errors: &mut Vec<FieldError>) -> Option<Vec<Arm>> {
    if !(MIN_ARMS..=MAX_ARMS).contains(&arms.len()) {
        errors.push(arms_count_error(arms.len()));
        return None;
    }
    let before = errors.len();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(arms.len());
    for (i, arm) in arms.iter().enumerate() {
        let chars = arm.key.chars().count();
        if chars == 0 {
            errors.push(FieldError::new(
                format!("arms[{i}].key"),
                "must not be empty",
            ));
        } else if chars > MAX_KEY_CHARS {
            errors.push(FieldError::new(
                format!("arms[{i}].key"),
                format!("is {chars} characters long, at most {MAX_KEY_CHARS} are allowed"),
            ));
        } else if let Some(first) = seen.get(arm.key.as_str()) {
            errors.push(FieldError::new(
                format!("arms[{i}].key"),
                format!("{:?} is already the key of arms[{first}]", arm.key),
            ));
        } else {
            seen.insert(arm.key.as_str(), i);
        }
        match Arm::new(arm.conversions, arm.visitors) {
            Ok(counts) => out.push(counts),
            Err(_) => errors.push(FieldError::new(
                format!("arms[{i}].conversions"),
                format!("{} exceeds visitors ({})", arm.conversions, arm.visitors),
            )),
        }
    }
    (errors.len() == before).then_some(out)
}

/// A refusal of the SRM test, on the field it concerns (the input was checked before: kept for
/// a weight whose ratio to the largest underflows).
fn srm_error(err: StatsError, arms: usize) -> CalcError {
    let error = match err {
        StatsError::Weight { index, weight } => FieldError::new(
            format!("weights[{index}]"),
            format!(
                "{weight} is too small next to the largest weight: their ratio must be a \
                 normal number (above 2.2e-308)"
            ),
        ),
        StatsError::LengthMismatch { visitors, weights } => FieldError::new(
            "weights",
            format!("has {weights} weights for {visitors} arms: give one per arm"),
        ),
        StatsError::TooFewArms(_) => arms_count_error(arms),
        other => FieldError::new("arms", other.to_string()),
    };
    CalcError::Invalid(vec![error])
}

/// A refusal of the Bayesian statistics, on the field it concerns (the input was checked
/// before; kept so that no path can panic).
fn bayes_error(err: BayesError) -> CalcError {
    let error = match err {
        BayesError::MoreConversionsThanVisitors {
            arm,
            conversions,
            visitors,
        } => FieldError::new(
            format!("arms[{arm}].conversions"),
            format!("{conversions} exceeds visitors ({visitors})"),
        ),
        BayesError::NoArms => arms_count_error(0),
        BayesError::TooManyArms(n) => arms_count_error(n),
    };
    CalcError::Invalid(vec![error])
}

// The document's schemas of the numbers above where utoipa's defaults would not state them
// exactly (a u64 is not an `int64`; bounds; a description `schema_with` would drop).

/// A count: an integer from 0 to 2^64 − 1, described.
fn count(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::Custom("uint64".into())))
        .minimum(Some(0))
        .maximum(Some(u64::MAX))
        .description(Some(description))
}

fn conversions_schema() -> ObjectBuilder {
    count("Visitors who converted; at most `visitors`.")
}

fn visitors_schema() -> ObjectBuilder {
    count("Visitors exposed to the arm.")
}

fn df_schema() -> ObjectBuilder {
    count("Degrees of freedom: the number of arms − 1.")
}

fn per_variant_schema() -> ObjectBuilder {
    count("Visitors needed in each arm (Fleiss, no continuity correction).")
}

fn total_schema() -> ObjectBuilder {
    count("`per_variant` × `variants`.")
}

/// A number strictly between 0 and 1, described.
fn open_unit_interval(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
        .exclusive_minimum(Some(0))
        .exclusive_maximum(Some(1))
        .description(Some(description))
}

fn baseline_schema() -> ObjectBuilder {
    open_unit_interval("The control's conversion rate, strictly between 0 and 1.")
}

fn power_schema() -> ObjectBuilder {
    open_unit_interval(
        "The probability of detecting the effect, strictly between 0 and 1; default 0.8.",
    )
    .default(Some(serde_json::json!(DEFAULT_POWER)))
}

fn test_confidence_schema() -> ObjectBuilder {
    open_unit_interval(
        "The confidence level (1 − α) of the two-sided test, strictly between 0 and 1; \
         default 0.95.",
    )
    .default(Some(serde_json::json!(DEFAULT_CONFIDENCE)))
}

/// `confidence` of a comparison: strictly between 0 and 1, or null; 0.95 by default.
fn confidence_schema() -> ObjectBuilder {
    open_unit_interval(
        "The confidence level of every interval, strictly between 0 and 1; 0.95 when absent \
         or null.",
    )
    .schema_type(SchemaType::from_iter([Type::Number, Type::Null]))
    .default(Some(serde_json::json!(DEFAULT_CONFIDENCE)))
}

/// `weights`: 2 to 10 finite numbers above 0, or null.
fn weights_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
                .exclusive_minimum(Some(0)),
        )
        .min_items(Some(MIN_ARMS))
        .max_items(Some(MAX_ARMS))
        .description(Some(
            "The intended traffic split the sample-ratio-mismatch test checks the visitors \
             against: one weight per arm (as many as `arms`), in the arms' order, each finite \
             and greater than 0, normalised (`[1, 1]` and `[0.5, 0.5]` are the same split); an \
             equal split when absent or null.",
        ))
}

/// `variants`: an integer from 2 to 10.
fn variants_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::Custom("uint32".into())))
        .minimum(Some(MIN_ARMS))
        .maximum(Some(MAX_ARMS))
        .default(Some(serde_json::json!(DEFAULT_VARIANTS)))
        .description(Some("The arms, the control included: 2 to 10; default 2."))
}

/// `relative_mde`: above −1 and not 0 (the upper bound depends on the baseline rate).
fn mde_schema() -> RefOr<Schema> {
    let number = || {
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
    };
    OneOfBuilder::new()
        .item(
            number()
                .exclusive_minimum(Some(-1))
                .exclusive_maximum(Some(0)),
        )
        .item(number().exclusive_minimum(Some(0)))
        .description(Some(
            "The relative change to detect (0.1: +10 %), above −1 and not 0; the variant's rate \
             baseline_rate × (1 + relative_mde) must also stay below 1.",
        ))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(key: &str, conversions: u64, visitors: u64) -> ArmCounts {
        ArmCounts {
            key: key.into(),
            conversions,
            visitors,
        }
    }

    fn fields(err: CalcError) -> Vec<String> {
        let CalcError::Invalid(errors) = err;
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn every_refused_field_is_named() {
        let request = CompareRequest {
            arms: vec![arm("a", 5, 4), arm("", 1, 2), arm("a", 1, 2)],
            confidence: Some(1.0),
            weights: Some(vec![1.0, -1.0]),
        };
        assert_eq!(
            fields(compare(&request).unwrap_err()),
            [
                "confidence",
                "arms[0].conversions",
                "arms[1].key",
                "arms[2].key",
                "weights",
                "weights[1]"
            ]
        );
    }

    #[test]
    fn extreme_counts_and_levels_are_answered() {
        let request = CompareRequest {
            arms: vec![arm("a", u64::MAX, u64::MAX), arm("b", 0, u64::MAX)],
            confidence: Some(f64::MIN_POSITIVE),
            weights: None,
        };
        let answer = compare(&request).unwrap();
        assert_eq!(answer.srm.p_value, 1.0);
        let request = CompareRequest {
            weights: Some(vec![1e300, 1e-300]),
            ..request
        };
        assert_eq!(fields(compare(&request).unwrap_err()), ["weights[1]"]);
    }
}
