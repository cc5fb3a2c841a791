//! Event timestamps as producers send them, to one canonical UTC form.
//!
//! Accepted: `%Y-%m-%d %H:%M:%S` with optional fraction (taken as UTC, the seed's format), RFC 3339 with
//! any offset, and epoch seconds or milliseconds as a JSON number or a numeric string. Anything else is
//! rejected: a guessed timestamp is worse than a dead letter.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde_json::Value;

/// Epoch values at or above this are milliseconds; below, seconds. 1e11 s is the year 5138, 1e11 ms is 1973.
const MILLIS_THRESHOLD: f64 = 1e11;

/// Why a timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("expected 'YYYY-MM-DD HH:MM:SS', RFC 3339 or epoch seconds/millis, got {0}")]
    Unrecognized(String),
    #[error("epoch value {0} is outside the supported range (1970..9999)")]
    OutOfRange(String),
}

/// Parses a JSON timestamp value.
pub fn parse(value: &Value) -> Result<DateTime<Utc>, TimestampError> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| TimestampError::Unrecognized(n.to_string()))
            .and_then(|v| from_epoch(v, &n.to_string())),
        Value::String(s) => parse_str(s.trim()),
        other => Err(TimestampError::Unrecognized(other.to_string())),
    }
}

fn parse_str(s: &str) -> Result<DateTime<Utc>, TimestampError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(Utc.from_utc_datetime(&naive));
        }
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => from_epoch(v, s),
        _ => Err(TimestampError::Unrecognized(format!("{s:?}"))),
    }
}

fn from_epoch(value: f64, original: &str) -> Result<DateTime<Utc>, TimestampError> {
    let micros = if value.abs() >= MILLIS_THRESHOLD { value * 1e3 } else { value * 1e6 };
    // 253402300799 s is 9999-12-31T23:59:59Z.
    if !(0.0..=253_402_300_799e6).contains(&micros) {
        return Err(TimestampError::OutOfRange(original.to_owned()));
    }
    #[expect(clippy::cast_possible_truncation, reason = "range checked above; sub-microsecond digits are dropped")]
    let micros = micros.round() as i64;
    DateTime::from_timestamp_micros(micros).ok_or_else(|| TimestampError::OutOfRange(original.to_owned()))
}

/// The canonical form written to rows: RFC 3339, UTC, microseconds (BigQuery's TIMESTAMP precision).
pub fn format(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canonical(v: Value) -> String {
        format(&parse(&v).expect("parses"))
    }

    #[test]
    fn seed_format_is_utc() {
        assert_eq!(canonical(json!("2024-01-01 10:00:00")), "2024-01-01T10:00:00.000000Z");
        assert_eq!(canonical(json!("2024-01-01 10:00:00.25")), "2024-01-01T10:00:00.250000Z");
    }

    #[test]
    fn rfc3339_offsets_become_utc() {
        assert_eq!(canonical(json!("2024-01-01T12:00:00+02:00")), "2024-01-01T10:00:00.000000Z");
        assert_eq!(canonical(json!("2024-01-01T10:00:00.123456Z")), "2024-01-01T10:00:00.123456Z");
    }

    #[test]
    fn epoch_seconds_and_millis() {
        assert_eq!(canonical(json!(1_704_103_200)), "2024-01-01T10:00:00.000000Z");
        assert_eq!(canonical(json!(1_704_103_200_500_i64)), "2024-01-01T10:00:00.500000Z");
        assert_eq!(canonical(json!("1704103200")), "2024-01-01T10:00:00.000000Z");
        assert_eq!(canonical(json!(1_704_103_200.25)), "2024-01-01T10:00:00.250000Z");
    }

    #[test]
    fn garbage_is_refused_with_what_arrived() {
        let err = parse(&json!("yesterday")).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "expected 'YYYY-MM-DD HH:MM:SS', RFC 3339 or epoch seconds/millis, got \"yesterday\""
        );
        assert!(matches!(parse(&json!(-5)), Err(TimestampError::OutOfRange(_))));
        assert!(matches!(parse(&json!(true)), Err(TimestampError::Unrecognized(_))));
        assert!(parse(&json!("2024-13-01 10:00:00")).is_err());
    }
}
