//! Storage Write API rows: a proto2 descriptor built at run time from the table's live BigQuery schema,
//! and each row's JSON encoded as a dynamic message of it (`prost-reflect`).
//!
//! Encodings follow the API's type mapping: STRING/JSON/NUMERIC → string, INT64 → int64, FLOAT64 →
//! double, BOOL → bool, TIMESTAMP → int64 microseconds since the epoch, DATE → int32 days. A value that
//! does not fit its column is refused with BigQuery's wording and the column as location.

use chrono::NaiveDate;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value as Proto};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value};

use super::rest::Field;
use crate::warehouse::schema::parse_timestamp;

/// Why a row could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError {
    pub location: Option<String>,
    pub message: String,
}

/// Encodes rows of one table schema.
pub struct RowEncoder {
    descriptor: DescriptorProto,
    message: MessageDescriptor,
    fields: Vec<Field>,
}

fn proto_type(field: &Field) -> Option<Type> {
    Some(match field.canonical_type() {
        "STRING" | "JSON" | "NUMERIC" | "BIGNUMERIC" | "DATETIME" | "TIME" | "GEOGRAPHY" => Type::String,
        "INT64" | "TIMESTAMP" => Type::Int64,
        "FLOAT64" => Type::Double,
        "BOOL" => Type::Bool,
        "DATE" => Type::Int32,
        "BYTES" => Type::Bytes,
        _ => return None,
    })
}

impl RowEncoder {
    /// Builds the descriptor for `fields`; columns of types this encoder cannot write (RECORD) are
    /// refused here, once, with the table's name.
    pub fn new(table: &str, fields: &[Field]) -> Result<Self, String> {
        let mut descriptor = DescriptorProto { name: Some("Row".into()), ..Default::default() };
        for (i, f) in fields.iter().enumerate() {
            let ty = proto_type(f).ok_or_else(|| {
                format!(
                    "table {table}: column {} has type {}, which the Storage Write encoder does not support",
                    f.name, f.ty
                )
            })?;
            let label = if f.mode == "REPEATED" { Label::Repeated } else { Label::Optional };
            descriptor.field.push(FieldDescriptorProto {
                name: Some(f.name.clone()),
                number: Some(i32::try_from(i + 1).map_err(|e| e.to_string())?),
                label: Some(label as i32),
                r#type: Some(ty as i32),
                ..Default::default()
            });
        }
        let file = FileDescriptorProto {
            name: Some(format!("tributary_{table}.proto")),
            syntax: Some("proto2".into()),
            message_type: vec![descriptor.clone()],
            ..Default::default()
        };
        let pool = DescriptorPool::from_file_descriptor_set(FileDescriptorSet { file: vec![file] })
            .map_err(|e| format!("table {table}: building the row descriptor: {e}"))?;
        let message =
            pool.get_message_by_name("Row").ok_or_else(|| format!("table {table}: descriptor lost its message"))?;
        Ok(Self { descriptor, message, fields: fields.to_vec() })
    }

    /// The columns this encoder was built for.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The writer schema sent with AppendRows.
    pub fn descriptor(&self) -> &DescriptorProto {
        &self.descriptor
    }

    /// One row's serialized message. Fields the table lacks are refused (`no such field`), as insertAll would.
    pub fn encode(&self, row: &Map<String, Value>) -> Result<Vec<u8>, EncodeError> {
        let mut message = DynamicMessage::new(self.message.clone());
        for (name, value) in row {
            let Some((i, field)) = self.fields.iter().enumerate().find(|(_, f)| f.name.eq_ignore_ascii_case(name))
            else {
                return Err(EncodeError { location: Some(name.clone()), message: format!("no such field: {name}.") });
            };
            if value.is_null() {
                continue;
            }
            let Some(descriptor) = self.message.get_field(u32::try_from(i + 1).unwrap_or(u32::MAX)) else { continue };
            let encoded = if field.mode == "REPEATED" {
                let Value::Array(items) = value else {
                    return Err(wrong(field, value));
                };
                Proto::List(items.iter().map(|v| scalar(field, v)).collect::<Result<_, _>>()?)
            } else {
                scalar(field, value)?
            };
            message.set_field(&descriptor, encoded);
        }
        if let Some(missing) = self.fields.iter().find(|f| {
            f.mode == "REQUIRED"
                && row.iter().find(|(k, _)| k.eq_ignore_ascii_case(&f.name)).is_none_or(|(_, v)| v.is_null())
        }) {
            return Err(EncodeError {
                location: Some(missing.name.clone()),
                message: format!("Missing required field: {}.", missing.name),
            });
        }
        Ok(message.encode_to_vec())
    }
}

fn wrong(field: &Field, value: &Value) -> EncodeError {
    EncodeError {
        location: Some(field.name.clone()),
        message: format!("Cannot convert value to {}: {value}", field.canonical_type().to_lowercase()),
    }
}

fn scalar(field: &Field, value: &Value) -> Result<Proto, EncodeError> {
    let bad = || wrong(field, value);
    Ok(match (field.canonical_type(), value) {
        ("JSON", Value::String(s)) => Proto::String(s.clone()),
        ("JSON", v) => Proto::String(v.to_string()),
        ("STRING" | "NUMERIC" | "BIGNUMERIC" | "DATETIME" | "TIME" | "GEOGRAPHY", Value::String(s)) => {
            Proto::String(s.clone())
        }
        ("NUMERIC" | "BIGNUMERIC", Value::Number(n)) => Proto::String(n.to_string()),
        ("INT64", Value::Number(n)) => Proto::I64(n.as_i64().ok_or_else(bad)?),
        ("INT64", Value::String(s)) => Proto::I64(s.parse().map_err(|_| bad())?),
        ("FLOAT64", Value::Number(n)) => Proto::F64(n.as_f64().ok_or_else(bad)?),
        ("FLOAT64", Value::String(s)) => Proto::F64(s.parse().map_err(|_| bad())?),
        ("BOOL", Value::Bool(b)) => Proto::Bool(*b),
        ("TIMESTAMP", Value::String(s)) => Proto::I64(parse_timestamp(s).ok_or_else(|| EncodeError {
            location: Some(field.name.clone()),
            message: format!(
                "Could not parse '{s}' as a timestamp. Required format is YYYY-MM-DD HH:MM[:SS[.SSSSSS]] or RFC 3339"
            ),
        })?),
        ("TIMESTAMP", Value::Number(n)) => Proto::I64(n.as_i64().ok_or_else(bad)?),
        ("DATE", Value::String(s)) => {
            let day = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad())?;
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or_else(bad)?;
            Proto::I32(i32::try_from((day - epoch).num_days()).map_err(|_| bad())?)
        }
        ("BYTES", Value::String(s)) => {
            use base64::Engine as _;
            Proto::Bytes(base64::engine::general_purpose::STANDARD.decode(s).map_err(|_| bad())?.into())
        }
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use prost_reflect::ReflectMessage as _;
    use serde_json::json;

    use super::*;

    fn fields() -> Vec<Field> {
        vec![
            Field::new("event_id", "STRING", true),
            Field::new("timestamp", "TIMESTAMP", true),
            Field::new("properties", "JSON", false),
            Field::new("n", "INTEGER", false),
            Field::new("ok", "BOOLEAN", false),
        ]
    }

    fn obj(v: Value) -> Map<String, Value> {
        let Value::Object(m) = v else { panic!("object") };
        m
    }

    #[test]
    fn a_row_round_trips_through_its_descriptor() {
        let enc = RowEncoder::new("t", &fields()).expect("descriptor");
        let bytes = enc
            .encode(&obj(json!({"event_id": "e1", "timestamp": "2024-01-01T10:00:00Z", "properties": "{\"a\":1}", "n": "42", "ok": true})))
            .expect("encodes");
        let back = DynamicMessage::decode(enc.message.clone(), bytes.as_slice()).expect("decodes");
        assert_eq!(back.get_field_by_name("event_id").expect("f").as_str(), Some("e1"));
        assert_eq!(back.get_field_by_name("timestamp").expect("f").as_i64(), Some(1_704_103_200_000_000));
        assert_eq!(back.get_field_by_name("n").expect("f").as_i64(), Some(42));
        assert_eq!(back.descriptor().name(), "Row");
        assert_eq!(enc.descriptor().field.len(), 5);
    }

    #[test]
    fn refusals_name_the_column() {
        let enc = RowEncoder::new("t", &fields()).expect("descriptor");
        let e = enc.encode(&obj(json!({"event_id": "e", "timestamp": "soon"}))).expect_err("bad ts");
        assert_eq!(e.location.as_deref(), Some("timestamp"));
        assert!(e.message.starts_with("Could not parse 'soon' as a timestamp"));
        let e = enc.encode(&obj(json!({"event_id": "e", "timestamp": 1, "n": {"x": 1}}))).expect_err("bad int");
        assert_eq!(e.message, "Cannot convert value to int64: {\"x\":1}");
        let e = enc.encode(&obj(json!({"timestamp": 1}))).expect_err("missing");
        assert_eq!(e.message, "Missing required field: event_id.");
        let e = enc.encode(&obj(json!({"event_id": "e", "timestamp": 1, "nope": 1}))).expect_err("unknown");
        assert_eq!(e.message, "no such field: nope.");
    }
}
