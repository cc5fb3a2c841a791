//! The JavaScript message-transform component (world `message-transform-component`): runs a user's
//! Pub/Sub SMT or Dataflow UDF file, unmodified, in Boa (a JavaScript engine in pure Rust, compiled to
//! wasm with the rest of the workspace).
//!
//! Settings (`wasi:config/store`; the host fills them from the step's `[[message_transforms]]` entry,
//! Spin from component variables): `udf_source` (the script text), `udf_function` (the function to
//! call), `udf_style` (`smt`, the default, or `dataflow`), `udf_file` (the file's name, for messages).
//!
//! `lib.rs` is glue only: the logic is [`udf`], compiled and tested natively.

pub mod udf;

/// The settings keys, shared with the host that fills them.
pub use tributary_model::udf_settings as keys;

#[cfg(target_arch = "wasm32")]
#[expect(unsafe_code, reason = "wit-bindgen generates the canonical-ABI glue")]
mod component {
    use std::cell::RefCell;

    use super::keys;
    use super::udf::{CompileError, Spec, Style, Udf, Verdict};

    wit_bindgen::generate!({
        path: "../../wit",
        world: "message-transform-component",
        generate_all,
    });

    use exports::tributary::pipeline::message_transform::Guest;
    use tributary::pipeline::types::{Message, Rejection};

    thread_local! {
        /// The compiled UDF of this instance: compiled by `prepare` (or the first `apply`), then reused.
        static UDF: RefCell<Option<Udf>> = const { RefCell::new(None) };
    }

    fn setting(key: &str) -> Result<Option<String>, CompileError> {
        wasi::config::store::get(key).map_err(|e| CompileError::Setting(format!("reading setting {key}: {e:?}")))
    }

    fn spec() -> Result<Spec, CompileError> {
        let file = setting(keys::FILE)?.unwrap_or_else(|| "udf.js".to_owned());
        let source = setting(keys::SOURCE)?
            .ok_or_else(|| CompileError::Setting(format!("setting {} (the script) is missing", keys::SOURCE)))?;
        let function = setting(keys::FUNCTION)?.ok_or_else(|| {
            CompileError::Setting(format!("setting {} (the function to call) is missing", keys::FUNCTION))
        })?;
        let style = Style::parse(setting(keys::STYLE)?.as_deref())?;
        Ok(Spec { file, source, function, style })
    }

    fn ensure_compiled() -> Result<(), String> {
        UDF.with_borrow_mut(|udf| {
            if udf.is_none() {
                *udf = Some(Udf::compile(spec().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?);
            }
            Ok(())
        })
    }

    struct Component;

    impl Guest for Component {
        fn prepare() -> Result<(), String> {
            ensure_compiled()
        }

        fn apply(msg: Message) -> Result<Option<Message>, Rejection> {
            ensure_compiled().map_err(|message| Rejection { reason: "udf-compile".into(), message })?;
            let input = super::udf::Message {
                id: msg.id.clone(),
                data: msg.data,
                attributes: msg.attributes,
                publish_time: msg.publish_time.clone(),
                ordering_key: msg.ordering_key.clone(),
            };
            let verdict = UDF.with_borrow_mut(|udf| udf.as_mut().map(|udf| udf.apply(&input)));
            match verdict {
                Some(Ok(Verdict::Keep { data, attributes })) => Ok(Some(Message { data, attributes, ..msg })),
                Some(Ok(Verdict::Drop)) => Ok(None),
                Some(Err(e)) => Err(Rejection { reason: e.reason().into(), message: e.to_string() }),
                None => Err(Rejection { reason: "udf-compile".into(), message: "the UDF is not compiled".into() }),
            }
        }
    }

    export!(Component);
}
