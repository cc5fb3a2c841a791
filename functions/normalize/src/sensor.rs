//! Sensor reading → one `sensor_readings` row (seed §7.2). A payload with a `sensor_id` field is a
//! reading: `{"sensor_id","sensor_type","location","timestamp","value"}`, plus an optional `unit`.
//!
//! Values are normalized to one canonical unit per type and checked against the type's physical
//! range (a reading outside it is kept, flagged `is_anomaly` with `anomaly_reason = "out-of-range"`):
//!
//! | `sensor_type` | canonical unit | accepted `unit`s (default first) | physical range |
//! |---|---|---|---|
//! | `temperature` | °C | `C`/`celsius`, `F`/`fahrenheit`, `K`/`kelvin` | −50 … 150 °C |
//! | `humidity` | %RH | `%`/`percent`, `fraction` (0–1) | 0 … 100 %RH |
//! | `pressure` | hPa | `hPa`/`mbar`, `Pa`, `kPa`, `bar` | 300 … 1100 hPa |
//! | `co2` | ppm | `ppm`, `%` (vol) | 0 … 10 000 ppm |
//! | `light` | lx | `lx`/`lux` | 0 … 200 000 lx |
//!
//! Refused (dead-lettered): a missing `sensor_id`/`sensor_type`, an unknown type or unit, a value that
//! is not a finite number (numeric strings are accepted), a timestamp that does not parse.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tributary_model::{Message, Rejection, Row};

use crate::timestamp;

/// The table readings go to.
pub const TABLE: &str = "sensor_readings";

/// Accepted spellings of a unit, and its conversion to the canonical unit.
type Unit = (&'static [&'static str], fn(f64) -> f64);

/// One sensor type: its canonical unit, its physical range and its unit conversions.
struct Kind {
    name: &'static str,
    unit: &'static str,
    range: (f64, f64),
    /// (accepted spellings, conversion to the canonical unit); the first entry is the default.
    units: &'static [Unit],
}

const KINDS: &[Kind] = &[
    Kind {
        name: "temperature",
        unit: "C",
        range: (-50.0, 150.0),
        units: &[
            (&["c", "celsius", "°c"], |v| v),
            (&["f", "fahrenheit", "°f"], |v| (v - 32.0) * 5.0 / 9.0),
            (&["k", "kelvin"], |v| v - 273.15),
        ],
    },
    Kind {
        name: "humidity",
        unit: "%RH",
        range: (0.0, 100.0),
        units: &[(&["%", "percent", "%rh"], |v| v), (&["fraction"], |v| v * 100.0)],
    },
    Kind {
        name: "pressure",
        unit: "hPa",
        range: (300.0, 1100.0),
        units: &[
            (&["hpa", "mbar"], |v| v),
            (&["pa"], |v| v / 100.0),
            (&["kpa"], |v| v * 10.0),
            (&["bar"], |v| v * 1000.0),
        ],
    },
    Kind { name: "co2", unit: "ppm", range: (0.0, 10_000.0), units: &[(&["ppm"], |v| v), (&["%"], |v| v * 10_000.0)] },
    Kind { name: "light", unit: "lx", range: (0.0, 200_000.0), units: &[(&["lx", "lux"], |v| v)] },
];

/// Whether a payload object is a sensor reading.
pub fn is_reading(fields: &Map<String, Value>) -> bool {
    fields.contains_key("sensor_id")
}

/// Normalizes one reading.
pub fn normalize(msg: &Message, fields: &Map<String, Value>, now: DateTime<Utc>) -> Result<Vec<Row>, Rejection> {
    let sensor_id = match fields.get("sensor_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(Rejection::new("missing-field", "expected a non-empty string field 'sensor_id'")),
    };
    let type_name = fields
        .get("sensor_type")
        .and_then(Value::as_str)
        .ok_or_else(|| Rejection::new("missing-field", "expected a string field 'sensor_type'"))?;
    let kind = KINDS.iter().find(|k| k.name.eq_ignore_ascii_case(type_name)).ok_or_else(|| {
        let known: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        Rejection::new("unknown-sensor-type", format!("sensor_type '{type_name}' is not one of {}", known.join(", ")))
    })?;
    let unit = fields.get("unit").and_then(Value::as_str);
    let convert = match unit {
        None => kind.units[0].1,
        Some(u) => {
            let lower = u.trim().to_ascii_lowercase();
            kind.units.iter().find(|(names, _)| names.contains(&lower.as_str())).map(|(_, f)| *f).ok_or_else(|| {
                let known: Vec<&str> = kind.units.iter().map(|(names, _)| names[0]).collect();
                Rejection::new("unknown-unit", format!("unit '{u}' is not a {} unit ({})", kind.name, known.join(", ")))
            })?
        }
    };
    let value = match fields.get("value") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|v| v.is_finite())
    .ok_or_else(|| {
        Rejection::new(
            "bad-value",
            format!("field 'value': expected a finite number, got {}", shown(fields.get("value"))),
        )
    })?;
    let time = match fields.get("timestamp").filter(|v| !v.is_null()) {
        Some(v) => {
            timestamp::parse(v).map_err(|e| Rejection::new("bad-timestamp", format!("field 'timestamp': {e}")))?
        }
        None => {
            msg.publish_time.as_deref().and_then(|t| timestamp::parse(&Value::String(t.to_owned())).ok()).ok_or_else(
                || Rejection::new("missing-field", "expected a 'timestamp' field (or a message publish time)"),
            )?
        }
    };
    let location = match fields.get("location") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => "unknown".to_owned(),
    };
    let normalized = convert(value);
    let in_range = (kind.range.0..=kind.range.1).contains(&normalized);
    let row = json!({
        "reading_id": msg.id,
        "sensor_id": sensor_id,
        "sensor_type": kind.name,
        "location": location,
        "timestamp": timestamp::format(&time),
        "value": value,
        "unit": unit,
        "normalized_value": normalized,
        "normalized_unit": kind.unit,
        "is_anomaly": if in_range { Value::Null } else { Value::Bool(true) },
        "anomaly_reason": if in_range { Value::Null } else { json!("out-of-range") },
        "processed_at": timestamp::format(&now),
    });
    Ok(vec![Row { table: TABLE.to_owned(), insert_id: msg.id.clone(), json: row.to_string() }])
}

fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "nothing".to_owned(), Value::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(payload: &str) -> Result<Value, Rejection> {
        let msg = Message { id: "r-1".into(), data: payload.as_bytes().to_vec(), ..Message::default() };
        let Value::Object(fields) = serde_json::from_str(payload).expect("json") else { panic!("object") };
        let now = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").expect("t").to_utc();
        let rows = normalize(&msg, &fields, now)?;
        Ok(serde_json::from_str(&rows[0].json).expect("row"))
    }

    #[test]
    fn units_are_normalized_and_ranges_checked() {
        let r = row(r#"{"sensor_id":"t1","sensor_type":"temperature","unit":"F","value":212,"timestamp":"2024-01-01T00:00:00Z"}"#).expect("ok");
        assert_eq!((r["normalized_value"].as_f64(), r["normalized_unit"].as_str()), (Some(100.0), Some("C")));
        assert_eq!(r["is_anomaly"], Value::Null);
        let r =
            row(r#"{"sensor_id":"p","sensor_type":"pressure","unit":"kPa","value":"101.3","timestamp":1704067200}"#)
                .expect("ok");
        assert!((r["normalized_value"].as_f64().expect("n") - 1013.0).abs() < 1e-9);
        let r = row(r#"{"sensor_id":"h","sensor_type":"humidity","value":130,"timestamp":1704067200}"#).expect("ok");
        assert_eq!((r["is_anomaly"].as_bool(), r["anomaly_reason"].as_str()), (Some(true), Some("out-of-range")));
        assert_eq!(r["location"], "unknown");
    }

    #[test]
    fn unreadable_readings_are_refused() {
        let reason = |p: &str| row(p).expect_err("refused").reason;
        assert_eq!(reason(r#"{"sensor_id":"x","sensor_type":"noise","value":1,"timestamp":1}"#), "unknown-sensor-type");
        assert_eq!(
            reason(r#"{"sensor_id":"x","sensor_type":"light","unit":"candela","value":1,"timestamp":1}"#),
            "unknown-unit"
        );
        assert_eq!(reason(r#"{"sensor_id":"x","sensor_type":"light","value":"bright","timestamp":1}"#), "bad-value");
        assert_eq!(reason(r#"{"sensor_id":"x","sensor_type":"light","value":1}"#), "missing-field");
        assert_eq!(reason(r#"{"sensor_id":"","sensor_type":"light","value":1,"timestamp":1}"#), "missing-field");
    }
}
