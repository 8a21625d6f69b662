//! Metric alarms, pure: an alarm's rule and the evaluation of its recent periods, following
//! "Using Amazon CloudWatch alarms" in the CloudWatch User Guide (evaluation periods, datapoints
//! to alarm, and "Configuring how CloudWatch alarms treat missing data").
//!
//! The evaluation range is the alarm's `EvaluationPeriods` plus [`EXTRA_PERIODS`] periods before
//! them. When the range holds at least N real datapoints, the most recent N decide: M of them
//! breaching is ALARM, fewer is OK. When it holds fewer, the missing ones are filled by
//! `TreatMissingData`: `breaching` and `notBreaching` fill them as such; `missing` decides on the
//! real ones alone (all missing: INSUFFICIENT_DATA); `ignore` keeps the current state unless the
//! real ones decide whatever the missing would have been (all missing: keep the state).

use serde::{Deserialize, Serialize};

use super::CwError;

/// How many periods before the evaluated ones the evaluation range reaches back, for
/// datapoints that arrive late or periods without data.
pub const EXTRA_PERIODS: usize = 2;

/// An alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum StateValue {
    /// The metric is within the threshold.
    OK,
    /// The metric crossed the threshold.
    ALARM,
    /// Not enough data to decide (every new alarm starts here).
    INSUFFICIENT_DATA,
}

impl StateValue {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            StateValue::OK => "OK",
            StateValue::ALARM => "ALARM",
            StateValue::INSUFFICIENT_DATA => "INSUFFICIENT_DATA",
        }
    }

    /// The state a wire name names.
    pub fn parse(name: &str) -> Result<Self, CwError> {
        [StateValue::OK, StateValue::ALARM, StateValue::INSUFFICIENT_DATA]
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| CwError::invalid_value(format!("The parameter StateValue has the invalid value {name:?}")))
    }
}

/// How the statistic is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// `>=`.
    GreaterThanOrEqualToThreshold,
    /// `>`.
    GreaterThanThreshold,
    /// `<`.
    LessThanThreshold,
    /// `<=`.
    LessThanOrEqualToThreshold,
}

impl Comparison {
    const ALL: [Comparison; 4] = [
        Comparison::GreaterThanOrEqualToThreshold,
        Comparison::GreaterThanThreshold,
        Comparison::LessThanThreshold,
        Comparison::LessThanOrEqualToThreshold,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Comparison::GreaterThanOrEqualToThreshold => "GreaterThanOrEqualToThreshold",
            Comparison::GreaterThanThreshold => "GreaterThanThreshold",
            Comparison::LessThanThreshold => "LessThanThreshold",
            Comparison::LessThanOrEqualToThreshold => "LessThanOrEqualToThreshold",
        }
    }

    /// The operator a wire name names; the anomaly-detection band operators are refused.
    pub fn parse(name: &str) -> Result<Self, CwError> {
        Self::ALL.into_iter().find(|c| c.name() == name).ok_or_else(|| {
            CwError::invalid_value(format!(
                "The parameter ComparisonOperator has the invalid value {name:?} (the local cloud has no anomaly detection bands)"
            ))
        })
    }

    /// Whether `value` breaches `threshold`.
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::GreaterThanOrEqualToThreshold => value >= threshold,
            Comparison::GreaterThanThreshold => value > threshold,
            Comparison::LessThanThreshold => value < threshold,
            Comparison::LessThanOrEqualToThreshold => value <= threshold,
        }
    }

    /// How AWS's state reasons say it ("greater than or equal to").
    fn words(self) -> &'static str {
        match self {
            Comparison::GreaterThanOrEqualToThreshold => "greater than or equal to",
            Comparison::GreaterThanThreshold => "greater than",
            Comparison::LessThanThreshold => "less than",
            Comparison::LessThanOrEqualToThreshold => "less than or equal to",
        }
    }
}

/// What a period without data counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TreatMissing {
    /// Decide on the real datapoints alone (the default).
    Missing,
    /// Keep the current state.
    Ignore,
    /// A missing period breaches.
    Breaching,
    /// A missing period is within the threshold.
    NotBreaching,
}

impl TreatMissing {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            TreatMissing::Missing => "missing",
            TreatMissing::Ignore => "ignore",
            TreatMissing::Breaching => "breaching",
            TreatMissing::NotBreaching => "notBreaching",
        }
    }

    /// The treatment a wire name names.
    pub fn parse(name: &str) -> Result<Self, CwError> {
        [TreatMissing::Missing, TreatMissing::Ignore, TreatMissing::Breaching, TreatMissing::NotBreaching]
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                CwError::invalid_value(format!(
                    "The parameter TreatMissingData must be missing, ignore, breaching or notBreaching (not {name:?})"
                ))
            })
    }
}

/// What an alarm compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// The operator.
    pub comparison: Comparison,
    /// The threshold.
    pub threshold: f64,
    /// N: how many periods are evaluated.
    pub evaluation_periods: usize,
    /// M: how many of them must breach.
    pub datapoints_to_alarm: usize,
    /// What a missing period counts as.
    pub treat_missing: TreatMissing,
}

/// One period of the evaluation range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Period {
    /// Its start, epoch milliseconds.
    pub start_ms: i64,
    /// The statistic's value; `None` when the period has no data.
    pub value: Option<f64>,
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The state the alarm is in now.
    pub state: StateValue,
    /// Why, in AWS's words.
    pub reason: String,
}

/// Evaluates `rule` over the evaluation range `periods` (oldest first); `None`: keep the current
/// state (`ignore` with too little data).
pub fn evaluate(rule: &Rule, periods: &[Period]) -> Option<Verdict> {
    let n = rule.evaluation_periods.max(1);
    let m = rule.datapoints_to_alarm.clamp(1, n);
    // The most recent real datapoints, newest first, at most N of them.
    let real: Vec<Period> = periods.iter().rev().filter(|p| p.value.is_some()).take(n).copied().collect();
    let breaching = |p: &Period| p.value.is_some_and(|v| rule.comparison.breaches(v, rule.threshold));
    let breached = real.iter().filter(|p| breaching(p)).count();
    let missing = n - real.len();
    let (state, fill) = if missing == 0 {
        (if breached >= m { StateValue::ALARM } else { StateValue::OK }, None)
    } else {
        match rule.treat_missing {
            TreatMissing::Breaching => {
                (if breached + missing >= m { StateValue::ALARM } else { StateValue::OK }, Some("Breaching"))
            }
            TreatMissing::NotBreaching => {
                (if breached >= m { StateValue::ALARM } else { StateValue::OK }, Some("NonBreaching"))
            }
            TreatMissing::Missing if real.is_empty() => {
                let reason = format!(
                    "Insufficient Data: {n} datapoint{} {} unknown.",
                    plural(n),
                    if n == 1 { "was" } else { "were" }
                );
                return Some(Verdict { state: StateValue::INSUFFICIENT_DATA, reason });
            }
            TreatMissing::Missing => {
                (if breached >= m.min(real.len()) { StateValue::ALARM } else { StateValue::OK }, None)
            }
            TreatMissing::Ignore => {
                // Decided only when the missing periods could not change the outcome.
                if breached >= m {
                    (StateValue::ALARM, None)
                } else if breached + missing < m {
                    (StateValue::OK, None)
                } else {
                    return None;
                }
            }
        }
    };
    Some(Verdict { state, reason: reason(rule, n, m, &real, breached, missing, state, fill) })
}

#[allow(clippy::too_many_arguments)]
fn reason(
    rule: &Rule,
    n: usize,
    m: usize,
    real: &[Period],
    breached: usize,
    missing: usize,
    state: StateValue,
    fill: Option<&str>,
) -> String {
    let alarm = state == StateValue::ALARM;
    let listed: Vec<String> = real
        .iter()
        .filter(|p| p.value.is_some_and(|v| rule.comparison.breaches(v, rule.threshold)) == alarm)
        .map(|p| format!("{:?} ({})", p.value.unwrap_or_default(), reason_time(p.start_ms)))
        .collect();
    let words = if alarm { rule.comparison.words().to_owned() } else { format!("not {}", rule.comparison.words()) };
    let mut text = if real.is_empty() {
        format!("Threshold Crossed: no datapoints were received for {n} period{}", plural(n))
    } else if n == 1 {
        format!(
            "Threshold Crossed: 1 datapoint [{}] was {words} the threshold ({:?})",
            listed.join(", "),
            rule.threshold
        )
    } else {
        let (count, minimum, transition) =
            if alarm { (breached, m, "OK -> ALARM") } else { (real.len() - breached, n - m + 1, "ALARM -> OK") };
        format!(
            "Threshold Crossed: {count} out of the last {} datapoints [{}] {} {words} the threshold ({:?}) (minimum {minimum} datapoint{} for {transition} transition)",
            real.len(),
            listed.join(", "),
            if count == 1 { "was" } else { "were" },
            rule.threshold,
            plural(minimum),
        )
    };
    if let Some(fill) = fill {
        text.push_str(&format!(
            "{} {missing} missing datapoint{} {} treated as [{fill}]",
            if real.is_empty() { " and" } else { ";" },
            plural(missing),
            if missing == 1 { "was" } else { "were" }
        ));
    }
    text.push('.');
    text
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A time as AWS's state reasons write it: `dd/MM/yy HH:mm:ss`, UTC.
pub fn reason_time(ms: i64) -> String {
    let format = time::macros::format_description!("[day]/[month]/[year repr:last_two] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use StateValue::{ALARM, INSUFFICIENT_DATA, OK};

    /// Periods from a picture: `X` breaching, `0` within the threshold, `-` missing; oldest first.
    fn periods(picture: &str) -> Vec<Period> {
        picture
            .split_whitespace()
            .enumerate()
            .map(|(i, c)| Period {
                start_ms: 1_700_000_040_000 + i as i64 * 60_000,
                value: match c {
                    "X" => Some(90.0),
                    "0" => Some(10.0),
                    _ => None,
                },
            })
            .collect()
    }

    fn rule(n: usize, m: usize, treat_missing: TreatMissing) -> Rule {
        Rule {
            comparison: Comparison::GreaterThanThreshold,
            threshold: 50.0,
            evaluation_periods: n,
            datapoints_to_alarm: m,
            treat_missing,
        }
    }

    fn state(rule: &Rule, picture: &str) -> Option<StateValue> {
        evaluate(rule, &periods(picture)).map(|v| v.state)
    }

    #[test]
    fn m_of_n_breaching_periods_set_off_the_alarm() {
        let two_of_three = rule(3, 2, TreatMissing::Missing);
        for (picture, expected) in
            [("0 0 X 0 X", ALARM), ("X X 0 0 X", OK), ("0 0 0 X X", ALARM), ("0 0 0 0 0", OK), ("X X X 0 0", OK)]
        {
            assert_eq!(state(&two_of_three, picture), Some(expected), "{picture}");
        }
        let one = rule(1, 1, TreatMissing::Missing);
        assert_eq!(state(&one, "0 0 X"), Some(ALARM));
        assert_eq!(state(&one, "X X 0"), Some(OK));
        assert_eq!(state(&one, "X - -"), Some(ALARM), "the most recent real datapoint decides");
    }

    /// The table of "Configuring how CloudWatch alarms treat missing data" (3 of 3, a range of 5).
    #[test]
    fn missing_data_is_treated_as_the_alarm_says() {
        use TreatMissing::*;
        let keep = None;
        let table = [
            ("0 - X - X", [Some(OK), Some(OK), Some(OK), Some(OK)]),
            ("- - - - 0", [Some(OK), Some(OK), Some(OK), Some(OK)]),
            ("- - - - -", [Some(INSUFFICIENT_DATA), keep, Some(ALARM), Some(OK)]),
            ("0 X X - X", [Some(ALARM), Some(ALARM), Some(ALARM), Some(ALARM)]),
            ("- - X - -", [Some(ALARM), keep, Some(ALARM), Some(OK)]),
        ];
        for (picture, expected) in table {
            for (treat, want) in [Missing, Ignore, Breaching, NotBreaching].into_iter().zip(expected) {
                assert_eq!(state(&rule(3, 3, treat), picture), want, "{picture} with {}", treat.name());
            }
        }
    }

    #[test]
    fn a_new_alarm_without_data_has_insufficient_data() {
        let verdict = evaluate(&rule(1, 1, TreatMissing::Missing), &periods("- - -")).unwrap();
        assert_eq!(
            verdict,
            Verdict { state: INSUFFICIENT_DATA, reason: "Insufficient Data: 1 datapoint was unknown.".into() }
        );
        assert_eq!(evaluate(&rule(1, 1, TreatMissing::Ignore), &periods("- - -")), None, "ignore keeps the state");
    }

    #[test]
    fn state_reasons_read_like_cloudwatchs() {
        let verdict = evaluate(&rule(1, 1, TreatMissing::Missing), &periods("0 X")).unwrap();
        assert_eq!(
            verdict.reason,
            "Threshold Crossed: 1 datapoint [90.0 (14/11/23 22:15:00)] was greater than the threshold (50.0)."
        );
        let ok = evaluate(&rule(1, 1, TreatMissing::Missing), &periods("X 0")).unwrap();
        assert_eq!(
            ok.reason,
            "Threshold Crossed: 1 datapoint [10.0 (14/11/23 22:15:00)] was not greater than the threshold (50.0)."
        );
        let two_of_three = evaluate(&rule(3, 2, TreatMissing::Missing), &periods("X 0 X")).unwrap();
        assert_eq!(
            two_of_three.reason,
            "Threshold Crossed: 2 out of the last 3 datapoints [90.0 (14/11/23 22:16:00), 90.0 (14/11/23 22:14:00)] were greater than the threshold (50.0) (minimum 2 datapoints for OK -> ALARM transition)."
        );
        let filled = evaluate(&rule(2, 2, TreatMissing::Breaching), &periods("- -")).unwrap();
        assert_eq!(
            filled.reason,
            "Threshold Crossed: no datapoints were received for 2 periods and 2 missing datapoints were treated as [Breaching]."
        );
    }

    #[test]
    fn comparisons_include_the_threshold_only_when_they_say_so() {
        use Comparison::*;
        assert!(GreaterThanOrEqualToThreshold.breaches(50.0, 50.0));
        assert!(!GreaterThanThreshold.breaches(50.0, 50.0));
        assert!(LessThanOrEqualToThreshold.breaches(50.0, 50.0));
        assert!(!LessThanThreshold.breaches(50.0, 50.0));
        assert!(LessThanThreshold.breaches(49.0, 50.0));
        assert!(Comparison::parse("LessThanLowerOrGreaterThanUpperThreshold").is_err());
    }
}
