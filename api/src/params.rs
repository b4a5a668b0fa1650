//! Parsers of query and CLI values that are not JSON bodies: ages and times. Each one answers
//! `None` for anything it cannot read (overflow, multi-byte text, odd units), never panics.

use chrono::{DateTime, TimeDelta, Utc};

/// `24h`, `7d`, `30m`, `90s` or an RFC 3339 time. An age reaching before the earliest time
/// chrono can represent, a number that overflows, or text that is neither is `None`.
pub fn parse_since(raw: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Some(at.with_timezone(&Utc));
    }
    // The unit is the last character, whatever its width in bytes.
    let unit = raw.chars().next_back()?;
    let number = &raw[..raw.len() - unit.len_utf8()];
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = number.parse().ok()?;
    let span = match unit {
        's' => TimeDelta::try_seconds(n)?,
        'm' => TimeDelta::try_minutes(n)?,
        'h' => TimeDelta::try_hours(n)?,
        'd' => TimeDelta::try_days(n)?,
        _ => return None,
    };
    now.checked_sub_signed(span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn ages_and_times_are_read_and_everything_else_refused() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("an age in hours", "24h", Some("2026-11-30T12:00:00+00:00")),
            ("an age in days", "7d", Some("2026-11-24T12:00:00+00:00")),
            (
                "an age in minutes",
                "30m",
                Some("2026-12-01T11:30:00+00:00"),
            ),
            (
                "an age in seconds",
                "90s",
                Some("2026-12-01T11:58:30+00:00"),
            ),
            (
                "an RFC 3339 time",
                "2026-01-02T03:04:05Z",
                Some("2026-01-02T03:04:05+00:00"),
            ),
            ("a zero age is now", "0s", Some("2026-12-01T12:00:00+00:00")),
            (
                "days past chrono's range are refused",
                "99999999999999d",
                None,
            ),
            (
                "an age before the earliest time is refused",
                "9223372036854775s",
                None,
            ),
            (
                "a number past i64 is refused",
                "99999999999999999999h",
                None,
            ),
            ("a multi-byte unit is refused", "24é", None),
            ("a multi-byte number is refused", "２4h", None),
            ("a lone unit is refused", "h", None),
            ("a sign is refused", "-5h", None),
            ("a plus sign is refused", "+5h", None),
            ("an unknown unit is refused", "5w", None),
            ("an empty value is refused", "", None),
        ];
        for (rule, raw, want) in cases {
            let got = parse_since(raw, now()).map(|t| t.to_rfc3339());
            assert_eq!(got.as_deref(), *want, "{rule}: {raw:?}");
        }
    }

    proptest! {
        #[test]
        fn no_text_makes_the_age_parser_panic(raw in "\\PC{0,24}") {
            let _ = parse_since(&raw, now());
        }

        #[test]
        fn no_number_and_unit_makes_the_age_parser_panic(n in any::<u64>(), unit in "[smhdé日]") {
            let _ = parse_since(&format!("{n}{unit}"), now());
        }
    }
}
