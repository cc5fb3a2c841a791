//! A user's JavaScript UDF, compiled once and applied to each message, in the two styles users already
//! write:
//!
//! - **`smt`**, Pub/Sub's single message transforms: `function name(message, metadata)`, `message` =
//!   `{data: string, attributes: {k: v}}`, `metadata` = `{message_id, publish_time, ordering_key}`;
//!   returning `null` drops the message, returning `{data, attributes?}` rewrites it (no `attributes`
//!   keeps them, empty `attributes` clears them).
//! - **`dataflow`**, the Dataflow Pub/Sub → BigQuery template's UDFs: `function process(inJson)` gets the
//!   payload as a string and returns the new payload as a string; `null` or `undefined` drops it.
//!
//! Pure: the engine is given no I/O at all (Boa provides ECMAScript and JSON, nothing of a browser or
//! of Node). Time and memory are bounded by the host (epoch deadline, store memory limit), not here.

use boa_engine::object::JsObject;
use boa_engine::property::PropertyKey;
use boa_engine::{Context, JsError, JsString, JsValue, Source};
use serde_json::{Map, Value};

/// Which calling convention the user's function follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Pub/Sub single message transform: `(message, metadata) → message | null`.
    Smt,
    /// Dataflow template UDF: `(payload string) → payload string | null`.
    Dataflow,
}

impl Style {
    /// `smt` (also the default when unset) or `dataflow`.
    pub fn parse(name: Option<&str>) -> Result<Self, CompileError> {
        match name.unwrap_or("smt") {
            "smt" => Ok(Self::Smt),
            "dataflow" => Ok(Self::Dataflow),
            other => Err(CompileError::Setting(format!("style must be \"smt\" or \"dataflow\", got {other:?}"))),
        }
    }
}

/// What a UDF is made of: its file (for messages), its source, the function to call, the style.
#[derive(Debug, Clone)]
pub struct Spec {
    pub file: String,
    pub source: String,
    pub function: String,
    pub style: Style,
}

/// The parts of a message a UDF sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub data: Vec<u8>,
    pub attributes: Vec<(String, String)>,
    pub publish_time: Option<String>,
    pub ordering_key: Option<String>,
}

/// What the UDF made of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it on with this data and these attributes.
    Keep { data: Vec<u8>, attributes: Vec<(String, String)> },
    /// Drop it: acked, no row.
    Drop,
}

/// The UDF cannot run at all: the host refuses to start with it, or keeps the previous version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: no function named {function:?} is defined (the step's `function` setting)")]
    Missing { file: String, function: String },
    #[error("{0}")]
    Setting(String),
}

/// The UDF failed on one message: that message is dead-lettered (stage `udf`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UdfError {
    /// The function threw.
    #[error("{file}: {function} threw {message}")]
    Threw { file: String, function: String, message: String },
    /// The function returned something that is not a message.
    #[error("{file}: {function} returned {message}")]
    Shape { file: String, function: String, message: String },
    /// The payload is not UTF-8 text, which a UDF's `data` string must be.
    #[error("the payload is not UTF-8 text ({0}), so it cannot be a JavaScript string")]
    NotText(String),
}

impl UdfError {
    /// The rejection reason (`udf-` + what went wrong).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Threw { .. } => "udf-error",
            Self::Shape { .. } => "udf-shape",
            Self::NotText(_) => "udf-input",
        }
    }
}

/// A compiled UDF and the engine it lives in. Globals the script sets survive between calls on the same
/// instance (as they do in Pub/Sub's and Dataflow's workers), so a UDF must not rely on either.
pub struct Udf {
    context: Context,
    function: JsObject,
    spec: Spec,
}

impl Udf {
    /// Runs the script once (defining its functions) and finds the function to call.
    pub fn compile(spec: Spec) -> Result<Self, CompileError> {
        let mut context = Context::default();
        let path = std::path::PathBuf::from(&spec.file);
        context
            .eval(Source::from_bytes(spec.source.as_bytes()).with_path(&path))
            .map_err(|e| CompileError::Syntax { file: spec.file.clone(), message: describe(&e, &mut context) })?;
        let key = PropertyKey::from(JsString::from(spec.function.as_str()));
        let found = context
            .global_object()
            .get(key, &mut context)
            .map_err(|e| CompileError::Syntax { file: spec.file.clone(), message: describe(&e, &mut context) })?;
        let function = found
            .as_callable()
            .ok_or_else(|| CompileError::Missing { file: spec.file.clone(), function: spec.function.clone() })?;
        Ok(Self { context, function, spec })
    }

    /// Applies the UDF to one message.
    pub fn apply(&mut self, msg: &Message) -> Result<Verdict, UdfError> {
        let data = std::str::from_utf8(&msg.data).map_err(|e| UdfError::NotText(e.to_string()))?;
        let args = match self.spec.style {
            Style::Smt => {
                let attributes: Map<String, Value> =
                    msg.attributes.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
                let message = serde_json::json!({ "data": data, "attributes": attributes });
                let mut metadata = Map::new();
                metadata.insert("message_id".into(), Value::String(msg.id.clone()));
                if let Some(t) = &msg.publish_time {
                    metadata.insert("publish_time".into(), Value::String(whole_seconds(t)));
                }
                if let Some(k) = msg.ordering_key.as_ref().filter(|k| !k.is_empty()) {
                    metadata.insert("ordering_key".into(), Value::String(k.clone()));
                }
                vec![self.js_value(&message)?, self.js_value(&Value::Object(metadata))?]
            }
            Style::Dataflow => vec![JsValue::from(JsString::from(data))],
        };
        let result = self.function.call(&JsValue::undefined(), &args, &mut self.context).map_err(|e| self.threw(&e))?;
        match self.spec.style {
            Style::Smt => self.smt_verdict(&result, &msg.attributes),
            Style::Dataflow => self.dataflow_verdict(&result, &msg.attributes),
        }
    }

    fn js_value(&mut self, value: &Value) -> Result<JsValue, UdfError> {
        JsValue::from_json(value, &mut self.context).map_err(|e| self.threw(&e))
    }

    fn smt_verdict(&mut self, result: &JsValue, original: &[(String, String)]) -> Result<Verdict, UdfError> {
        if result.is_null() {
            return Ok(Verdict::Drop);
        }
        if result.is_undefined() {
            return Err(self.shape("undefined: return the message, or null to drop it".into()));
        }
        let json = result.to_json(&mut self.context).map_err(|e| self.threw(&e))?;
        let Some(Value::Object(mut object)) = json else {
            return Err(self.shape(format!("{}, not a message object {{data, attributes}}", kind(json.as_ref()))));
        };
        let data = match object.remove("data") {
            Some(Value::String(s)) => s.into_bytes(),
            other => return Err(self.shape(format!("a message whose data is {}, not a string", kind(other.as_ref())))),
        };
        let attributes = match object.remove("attributes") {
            None | Some(Value::Null) => original.to_vec(),
            Some(Value::Object(map)) => {
                let mut attributes = Vec::with_capacity(map.len());
                for (k, v) in map {
                    let Value::String(v) = v else {
                        return Err(self.shape(format!("attribute {k:?} as {}, not a string", kind(Some(&v)))));
                    };
                    attributes.push((k, v));
                }
                attributes
            }
            Some(other) => {
                return Err(self.shape(format!("attributes as {}, not an object of strings", kind(Some(&other)))));
            }
        };
        if let Some(extra) = object.keys().next() {
            return Err(self.shape(format!("a message with an unknown key {extra:?} (only data and attributes)")));
        }
        Ok(Verdict::Keep { data, attributes })
    }

    fn dataflow_verdict(&mut self, result: &JsValue, original: &[(String, String)]) -> Result<Verdict, UdfError> {
        if result.is_null() || result.is_undefined() {
            return Ok(Verdict::Drop);
        }
        match result.as_string() {
            Some(s) => {
                Ok(Verdict::Keep { data: s.to_std_string_escaped().into_bytes(), attributes: original.to_vec() })
            }
            None => {
                let json = result.to_json(&mut self.context).ok().flatten();
                Err(self.shape(format!("{}, not a string (return JSON.stringify(obj))", kind(json.as_ref()))))
            }
        }
    }

    fn threw(&mut self, error: &JsError) -> UdfError {
        UdfError::Threw {
            file: self.spec.file.clone(),
            function: self.spec.function.clone(),
            message: describe(error, &mut self.context),
        }
    }

    fn shape(&self, message: String) -> UdfError {
        UdfError::Shape { file: self.spec.file.clone(), function: self.spec.function.clone(), message }
    }
}

/// A JavaScript error as `TypeError: message`, or the thrown value itself.
fn describe(error: &JsError, context: &mut Context) -> String {
    match error.try_native(context) {
        Ok(native) => native.to_string(),
        Err(_) => error.to_string(),
    }
}

/// The JSON kind of a value, for messages.
fn kind(value: Option<&Value>) -> &'static str {
    match value {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    }
}

/// `2026-12-03T18:52:04.123456Z` → `2026-12-03T18:52:04Z`: the `YYYY-MM-DDTHH:MM:SSZ` form Pub/Sub's UDF
/// metadata uses. Anything else is passed as it came.
fn whole_seconds(time: &str) -> String {
    match (time.find('.'), time.strip_suffix('Z')) {
        (Some(dot), Some(_)) if time[dot + 1..time.len() - 1].bytes().all(|b| b.is_ascii_digit()) => {
            format!("{}Z", &time[..dot])
        }
        _ => time.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udf(source: &str, function: &str, style: Style) -> Result<Udf, CompileError> {
        Udf::compile(Spec { file: "udfs/test.js".into(), source: source.into(), function: function.into(), style })
    }

    fn message(data: &str) -> Message {
        Message {
            id: "m-1".into(),
            data: data.as_bytes().to_vec(),
            attributes: vec![("source".into(), "web".into()), ("pii".into(), "yes".into())],
            publish_time: Some("2026-12-03T18:52:04.123Z".into()),
            ordering_key: None,
        }
    }

    const SCRUB: &str = r#"
        function scrub(message, metadata) {
          const event = JSON.parse(message.data);
          delete event.email;
          event.seen_id = metadata.message_id;
          event.seen_at = metadata.publish_time;
          const attributes = message.attributes;
          delete attributes.pii;
          return { data: JSON.stringify(event), attributes };
        }
    "#;

    #[test]
    fn an_smt_udf_rewrites_data_and_attributes() {
        let mut udf = udf(SCRUB, "scrub", Style::Smt).expect("works");
        let verdict = udf.apply(&message(r#"{"user_id":"u1","email":"a@b.c"}"#)).expect("works");
        let Verdict::Keep { data, attributes } = verdict else { panic!("kept") };
        let event: Value = serde_json::from_slice(&data).expect("works");
        assert_eq!(event, serde_json::json!({"user_id":"u1","seen_id":"m-1","seen_at":"2026-12-03T18:52:04Z"}));
        assert_eq!(attributes, vec![("source".to_owned(), "web".to_owned())]);
        // The engine is reused: a second message gets a fresh message object.
        let again = udf.apply(&message(r#"{"user_id":"u2"}"#)).expect("works");
        assert!(matches!(again, Verdict::Keep { attributes, .. } if attributes.len() == 1));
    }

    #[test]
    fn null_drops_missing_attributes_keep_and_empty_attributes_clear() {
        let mut drop = udf("function f(m) { return null; }", "f", Style::Smt).expect("works");
        assert_eq!(drop.apply(&message("{}")).expect("works"), Verdict::Drop);
        let mut keep = udf("function f(m) { return { data: m.data + ' ' }; }", "f", Style::Smt).expect("works");
        let Verdict::Keep { data, attributes } = keep.apply(&message("{}")).expect("works") else { panic!() };
        assert_eq!((data, attributes.len()), (b"{} ".to_vec(), 2));
        let mut clear =
            udf("function f(m) { return { data: m.data, attributes: {} }; }", "f", Style::Smt).expect("works");
        assert!(
            matches!(clear.apply(&message("{}")).expect("works"), Verdict::Keep { attributes, .. } if attributes.is_empty())
        );
    }

    #[test]
    fn a_throw_or_a_wrong_shape_is_a_udf_error_naming_the_file() {
        let mut throws = udf("function f(m) { return JSON.parse(m.data).a.b; }", "f", Style::Smt).expect("works");
        let error = throws.apply(&message("{}")).expect_err("fails");
        assert_eq!(error.reason(), "udf-error");
        assert!(error.to_string().starts_with("udfs/test.js: f threw TypeError"), "{error}");

        let mut custom = udf("function f(m) { throw new Error('no user'); }", "f", Style::Smt).expect("works");
        assert!(custom.apply(&message("{}")).expect_err("fails").to_string().contains("Error: no user"));

        for (source, expected) in [
            ("function f(m) { }", "returned undefined"),
            ("function f(m) { return 'x'; }", "a string, not a message object"),
            ("function f(m) { return { data: 5 }; }", "data is a number"),
            ("function f(m) { return { data: 'x', attributes: { a: 1 } }; }", "attribute \"a\" as a number"),
            ("function f(m) { return { data: 'x', extra: 1 }; }", "unknown key \"extra\""),
        ] {
            let error = udf(source, "f", Style::Smt).expect("works").apply(&message("{}")).expect_err("fails");
            assert_eq!(error.reason(), "udf-shape", "{source}");
            assert!(error.to_string().contains(expected), "{source}: {error}");
        }
    }

    #[test]
    fn a_syntax_error_names_file_and_line_and_a_missing_function_is_named() {
        let error = udf("function f(m) {\n  return m.data;\n  let = ;\n}", "f", Style::Smt).err().expect("refused");
        let text = error.to_string();
        assert!(text.starts_with("udfs/test.js: SyntaxError") && text.contains("line 3"), "{text}");
        let error = udf("function g(m) { return m; }", "scrub", Style::Smt).err().expect("refused");
        assert_eq!(
            error.to_string(),
            "udfs/test.js: no function named \"scrub\" is defined (the step's `function` setting)"
        );
        assert!(Style::parse(Some("beam")).is_err());
    }

    #[test]
    fn a_dataflow_udf_maps_the_payload_string() {
        let source = r#"
            function process(inJson) {
              var obj = JSON.parse(inJson);
              if (obj.type === 'heartbeat') return null;
              obj.processed = true;
              return JSON.stringify(obj);
            }
        "#;
        let mut udf = udf(source, "process", Style::Dataflow).expect("works");
        let Verdict::Keep { data, attributes } = udf.apply(&message(r#"{"type":"view"}"#)).expect("works") else {
            panic!()
        };
        assert_eq!(
            (String::from_utf8(data).expect("works"), attributes.len()),
            (r#"{"type":"view","processed":true}"#.into(), 2)
        );
        assert_eq!(udf.apply(&message(r#"{"type":"heartbeat"}"#)).expect("works"), Verdict::Drop);
        let mut object = super::Udf::compile(Spec {
            file: "x.js".into(),
            source: "function process(s) { return JSON.parse(s); }".into(),
            function: "process".into(),
            style: Style::Dataflow,
        })
        .expect("works");
        assert!(object.apply(&message("{}")).expect_err("fails").to_string().contains("an object, not a string"));
    }

    #[test]
    fn binary_payloads_are_refused_not_mangled() {
        let mut udf = udf("function f(m) { return m; }", "f", Style::Smt).expect("works");
        let msg = Message { data: vec![0xff, 0xfe], ..message("") };
        assert_eq!(udf.apply(&msg).expect_err("fails").reason(), "udf-input");
    }

    #[test]
    fn publish_times_lose_their_fraction() {
        assert_eq!(whole_seconds("2026-12-03T18:52:04.123456789Z"), "2026-12-03T18:52:04Z");
        assert_eq!(whole_seconds("2026-12-03T18:52:04Z"), "2026-12-03T18:52:04Z");
        assert_eq!(whole_seconds("yesterday"), "yesterday");
    }
}
