//! Rows on their way to BigQuery: parsed once, fitted to the table's live schema (schema evolution),
//! and completed with the dedup columns. Pure logic, unit-tested natively.

use serde_json::{Map, Value};

use super::rest::Field;

/// One row of a flush, for one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Index in the flush (what refusals are reported against).
    pub index: usize,
    pub insert_id: String,
    pub json: Map<String, Value>,
}

/// The BigQuery type a new column gets from the first non-null value seen for it.
pub fn infer_type(value: &Value) -> Option<&'static str> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(_) => "BOOL",
        Value::Number(n) if n.is_i64() || n.is_u64() => "INT64",
        Value::Number(_) => "FLOAT64",
        Value::String(_) => "STRING",
        Value::Array(_) | Value::Object(_) => "JSON",
    })
}

fn has(fields: &[Field], name: &str) -> bool {
    fields.iter().any(|f| f.name.eq_ignore_ascii_case(name))
}

/// `add-column`: the NULLABLE columns the rows need that the table lacks, typed by their first
/// non-null value, in order of appearance.
pub fn new_columns(fields: &[Field], rows: &[Prepared]) -> Vec<Field> {
    let mut new: Vec<Field> = Vec::new();
    for row in rows {
        for (name, value) in &row.json {
            if has(fields, name) || has(&new, name) || !valid_column_name(name) {
                continue;
            }
            if let Some(ty) = infer_type(value) {
                new.push(Field::new(name, ty, false));
            }
        }
    }
    new
}

/// BigQuery column names: letters, digits, underscores, not starting with a digit, ≤ 300 chars.
/// Others stay as they are and are refused by BigQuery with its own reason.
fn valid_column_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 300
        && !name.starts_with("_TABLE_")
        && !name.starts_with("_PARTITION")
}

/// `properties`: moves top-level fields the table lacks into the row's `properties` JSON object, when
/// the table has such a column and the key is not taken there. What cannot move stays, and BigQuery
/// refuses the row (`no such field`), which dead-letters it: nothing is dropped.
pub fn fold_into_properties(fields: &[Field], row: &mut Map<String, Value>) {
    if !fields.iter().any(|f| f.name == "properties" && f.canonical_type() == "JSON") {
        return;
    }
    let unknown: Vec<String> = row.keys().filter(|k| !has(fields, k)).cloned().collect();
    if unknown.is_empty() {
        return;
    }
    let mut properties = match row.remove("properties") {
        Some(Value::Object(p)) => p,
        None | Some(Value::Null) => Map::new(),
        // Not an object: nothing can move into it.
        Some(other) => {
            row.insert("properties".into(), other);
            return;
        }
    };
    for key in unknown {
        if !properties.contains_key(&key)
            && let Some(value) = row.remove(&key)
        {
            properties.insert(key, value);
        }
    }
    row.insert("properties".into(), Value::Object(properties));
}

/// A value that can never fit its column: an object or array for a scalar column (e.g. a field added as
/// STRING by schema evolution that later arrives as an object). Refused before the request, with
/// BigQuery's wording, so it is dead-lettered whatever the backend; subtler mismatches are left to
/// BigQuery's own checks.
pub fn type_conflict(fields: &[Field], row: &Map<String, Value>) -> Option<(String, String)> {
    row.iter().find_map(|(name, value)| {
        let field = fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))?;
        let structured =
            field.canonical_type() == "JSON" || field.canonical_type() == "RECORD" || field.mode == "REPEATED";
        match value {
            Value::Object(_) if !structured => {
                Some((field.name.clone(), format!("This field: {} is not a record.", field.name)))
            }
            Value::Array(_) if !structured => {
                Some((field.name.clone(), format!("Array specified for non-repeated field: {}.", field.name)))
            }
            _ => None,
        }
    })
}

/// Adds `_insert_id` and `_inserted_at` when the table has them, and turns JSON-typed values into
/// the JSON text insertAll and the Storage Write API expect.
pub fn finish(fields: &[Field], row: &mut Prepared, inserted_at: &str) {
    if has(fields, "_insert_id") {
        row.json.insert("_insert_id".into(), Value::String(row.insert_id.clone()));
    }
    if has(fields, "_inserted_at") {
        row.json.insert("_inserted_at".into(), Value::String(inserted_at.into()));
    }
    for f in fields.iter().filter(|f| f.canonical_type() == "JSON") {
        if let Some(v) = row.json.get_mut(&f.name)
            && !v.is_null()
            && !v.is_string()
        {
            *v = Value::String(v.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields() -> Vec<Field> {
        vec![
            Field::new("event_id", "STRING", true),
            Field::new("properties", "JSON", false),
            Field::new("_insert_id", "STRING", true),
            Field::new("_inserted_at", "TIMESTAMP", true),
        ]
    }

    fn row(v: Value) -> Prepared {
        let Value::Object(json) = v else { panic!("object") };
        Prepared { index: 0, insert_id: "m1".into(), json }
    }

    #[test]
    fn unknown_fields_fold_into_properties_unless_the_key_is_taken() {
        let mut r = row(json!({"event_id": "e", "device": "ios", "page": 1, "properties": {"page": 2}}));
        fold_into_properties(&fields(), &mut r.json);
        assert_eq!(
            Value::Object(r.json),
            json!({"event_id": "e", "page": 1, "properties": {"page": 2, "device": "ios"}})
        );
        let mut r = row(json!({"event_id": "e", "device": "ios"}));
        fold_into_properties(&fields(), &mut r.json);
        assert_eq!(r.json["properties"], json!({"device": "ios"}));
    }

    #[test]
    fn new_columns_are_typed_by_their_first_non_null_value() {
        let rows = vec![
            row(json!({"event_id": "e", "a": null, "b": 1.5})),
            row(json!({"event_id": "e", "a": "x", "c": {"k": 1}, "d": 3, "B": true, "bad-name": 1})),
        ];
        let new = new_columns(&fields(), &rows);
        let got: Vec<(&str, &str)> = new.iter().map(|f| (f.name.as_str(), f.ty.as_str())).collect();
        assert_eq!(got, vec![("b", "FLOAT64"), ("a", "STRING"), ("c", "JSON"), ("d", "INT64")]);
        assert!(new.iter().all(|f| f.mode == "NULLABLE"));
    }

    #[test]
    fn structured_values_for_scalar_columns_conflict() {
        let mut f = fields();
        f.push(Field::new("device", "STRING", false));
        let r = row(json!({"event_id": "e", "device": {"v": 1}, "properties": {"ok": [1]}}));
        assert_eq!(type_conflict(&f, &r.json), Some(("device".into(), "This field: device is not a record.".into())));
        let r = row(json!({"event_id": "e", "device": ["a"]}));
        assert_eq!(
            type_conflict(&f, &r.json).map(|c| c.1),
            Some("Array specified for non-repeated field: device.".into())
        );
        assert_eq!(type_conflict(&f, &row(json!({"event_id": "e", "device": "x"})).json), None);
    }

    #[test]
    fn finish_adds_dedup_columns_and_stringifies_json() {
        let mut r = row(json!({"event_id": "e", "properties": {"a": [1]}}));
        finish(&fields(), &mut r, "2026-01-01T00:00:00Z");
        assert_eq!(
            Value::Object(r.json),
            json!({"event_id": "e", "properties": "{\"a\":[1]}", "_insert_id": "m1", "_inserted_at": "2026-01-01T00:00:00Z"})
        );
    }
}
