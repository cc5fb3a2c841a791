//! Every built component's imports, listed from the binary, against what each place provides: this
//! host, and Spin 4 plus this project's adapter components. A new import that one of them cannot
//! satisfy fails here, not at deploy time. And `spin.toml` against the function registry and the
//! components: every function is a component there, every route of it is routed to it and nothing else
//! is, and each has the one dependency Spin can compose (the pipeline adapter, which exports every
//! `tributary:pipeline` interface the function imports) with the configuration the adapter reads.
//! CI cannot run Spin itself: README "Under Spin" says which Spin was run by hand, and how.

use tributary::{components, functions};
use wasmtime::component::Component;

/// The WASI interfaces both places provide (by prefix, any 0.2/0.3 version).
const WASI: &[&str] =
    &["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/", "wasi:sockets/", "wasi:http/"];

/// Interfaces the Tributary host links besides [`WASI`].
const HOST: &[&str] = &[
    "tributary:pipeline/types@0.1.0",
    "tributary:pipeline/transform@0.1.0",
    "tributary:pipeline/sink@0.1.0",
    "tributary:pipeline/state@0.1.0",
    "wasi:config/store@0.2.0-draft-2024-09-27",
];

/// What Spin 4 provides besides [`WASI`]: variables as wasi:config, key-value, and its own
/// `fermyon:spin`/`spin:` interfaces.
const SPIN: &[&str] = &["wasi:config/store@0.2.0-draft-2024-09-27", "wasi:keyvalue/", "fermyon:spin/", "spin:"];

/// What this project's adapter components provide under Spin: the pipeline adapter (the one
/// `[component.X.dependencies]` entry) exports the first four; a message-transform step is composed in
/// with `wac plug` (docs/WRITE_YOUR_OWN_STEP.md).
const ADAPTERS: &[(&str, &str)] = &[
    ("tributary:pipeline/types@0.1.0", "functions/pipeline-adapter"),
    ("tributary:pipeline/transform@0.1.0", "functions/pipeline-adapter"),
    ("tributary:pipeline/sink@0.1.0", "functions/pipeline-adapter"),
    ("tributary:pipeline/state@0.1.0", "functions/pipeline-adapter"),
    ("tributary:pipeline/message-transform@0.1.0", "functions/js-udf, or any message-transform component"),
];

/// The dependency key every function has in spin.toml: the whole package, so one component serves
/// all of its imports (Spin registers one component per package in a composition).
const PIPELINE_DEPENDENCY: &str = "tributary:pipeline@0.1.0";

fn imports(engine: &wasmtime::Engine, bytes: &[u8]) -> Vec<String> {
    let component = Component::new(engine, bytes).expect("compiles");
    component.component_type().imports(engine).map(|(name, _)| name.to_owned()).collect()
}

fn provided(list: &[&str], import: &str) -> bool {
    WASI.iter().chain(list).any(|p| import.starts_with(p))
}

#[test]
fn every_import_is_provided_by_the_host_and_by_spin_with_the_adapters() {
    let engine = tributary::engine::build(&tributary::engine::GuestConfig::default(), 1).expect("engine");
    let read = |path: &str| std::fs::read(path).expect("built component");
    let mut built: Vec<(&str, Vec<u8>)> = functions::all().iter().map(|f| (f.name, f.component.to_vec())).collect();
    built.push(("transform", components::TRANSFORM.to_vec()));
    built.push(("sink-http", read(components::SINK_HTTP_PATH)));
    built.push(("js-udf", components::JS_UDF.to_vec()));
    built.push(("transform-steps", read(components::TRANSFORM_STEPS_PATH)));
    built.push(("pipeline-adapter", read(components::PIPELINE_ADAPTER_PATH)));
    let mut missing_host = Vec::new();
    let mut missing_spin = Vec::new();
    for (name, bytes) in &built {
        let list = imports(&engine, bytes);
        assert!(!list.is_empty(), "{name} imports nothing?");
        for import in list {
            // The host runs every component but the adapters that exist for other hosts (the sink
            // adapter, and the steps-in-front-of-a-transform composition: the host runs steps itself).
            if !["sink-http", "transform-steps", "pipeline-adapter"].contains(name) && !provided(HOST, &import) {
                missing_host.push(format!("{name}: {import}"));
            }
            let adapter = ADAPTERS.iter().any(|(i, _)| import == *i);
            if !provided(SPIN, &import) && !adapter {
                missing_spin.push(format!("{name}: {import}"));
            }
        }
    }
    assert!(missing_host.is_empty(), "imports the host does not provide: {missing_host:#?}");
    assert!(missing_spin.is_empty(), "imports Spin plus the adapters do not provide: {missing_spin:#?}");
}

#[test]
fn the_pipeline_adapter_exports_every_pipeline_interface_a_function_imports() {
    let engine = tributary::engine::build(&tributary::engine::GuestConfig::default(), 1).expect("engine");
    let adapter =
        Component::new(&engine, std::fs::read(components::PIPELINE_ADAPTER_PATH).expect("built")).expect("compiles");
    let exports: Vec<String> = adapter.component_type().exports(&engine).map(|(n, _)| n.to_owned()).collect();
    for function in functions::all() {
        for import in imports(&engine, function.component) {
            if import.starts_with("tributary:pipeline/") {
                assert!(
                    exports.contains(&import),
                    "{}: the adapter does not export {import} ({exports:?})",
                    function.name
                );
            }
        }
    }
}

#[test]
fn the_registry_declares_exactly_the_capabilities_each_component_imports() {
    let engine = tributary::engine::build(&tributary::engine::GuestConfig::default(), 1).expect("engine");
    for function in functions::all() {
        let list = imports(&engine, function.component);
        let has = |prefix: &str| list.iter().any(|i| i.starts_with(prefix));
        assert_eq!(has("tributary:pipeline/state@"), function.stateful, "{}: stateful", function.name);
        assert_eq!(has("wasi:config/store@"), function.settings, "{}: settings", function.name);
    }
}

/// A Spin route covers `path`: the same path, or a `prefix/...` wildcard over it.
fn covers(spin_route: &str, path: &str) -> bool {
    match spin_route.strip_suffix("/...") {
        Some(prefix) => path == prefix || path.starts_with(&format!("{prefix}/")),
        None => spin_route == path,
    }
}

#[test]
fn spin_toml_serves_every_function_of_the_registry_and_nothing_else() {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spin.toml");
    let text = std::fs::read_to_string(&manifest).expect("spin.toml");
    let spin: toml::Value = toml::from_str(&text).expect("spin.toml is TOML");
    let triggers: Vec<(String, String)> = spin["trigger"]["http"]
        .as_array()
        .expect("[[trigger.http]]")
        .iter()
        .map(|t| {
            let field = |k: &str| t[k].as_str().unwrap_or_else(|| panic!("trigger without {k}: {t}")).to_owned();
            (field("route"), field("component"))
        })
        .collect();
    let components = spin["component"].as_table().expect("[component.*]");
    let declared = spin["variables"].as_table().expect("[variables]");
    for function in functions::all() {
        assert!(components.contains_key(function.name), "spin.toml has no [component.{}]", function.name);
        let component = &components[function.name];
        let dependencies = component["dependencies"].as_table().expect("[component.X.dependencies]");
        let keys: Vec<&String> = dependencies.keys().collect();
        assert_eq!(keys, vec![PIPELINE_DEPENDENCY], "{}: one dependency, the whole package", function.name);
        let adapter = &dependencies[PIPELINE_DEPENDENCY];
        assert_eq!(
            adapter["path"].as_str(),
            Some("target/wasm32-wasip2/release/pipeline_adapter.wasm"),
            "{}: the pipeline adapter",
            function.name
        );
        assert_eq!(
            adapter["inherit_configuration"].as_bool(),
            Some(true),
            "{}: the adapter reads its variables",
            function.name
        );
        let variables = component["variables"].as_table().expect("[component.X.variables]");
        for name in ["sink_origin", "sink_project", "sink_dataset", "sink_token_source", "sink_bearer_token"] {
            assert!(variables.contains_key(name) && declared.contains_key(name), "{}: variable {name}", function.name);
        }
        let hosts = component["allowed_outbound_hosts"].as_array().expect("allowed_outbound_hosts");
        assert_eq!(hosts, &vec![toml::Value::from("{{ sink_origin }}")], "{}: only the sink's origin", function.name);
        let stores = component.get("key_value_stores").and_then(|v| v.as_array()).cloned().unwrap_or_default();
        if function.stateful {
            assert_eq!(variables["state_scope"].as_str(), Some(function.name), "{}: state scoped to it", function.name);
            assert_eq!(stores, vec![toml::Value::from("default")], "{}: the key-value store", function.name);
        } else {
            assert!(stores.is_empty() && !variables.contains_key("state_scope"), "{}: no state", function.name);
        }
        let build = component["build"]["command"].as_str().expect("build command");
        assert!(build.contains("-p pipeline-adapter"), "{}: spin build builds the adapter", function.name);
        for route in &function.routes {
            let routed: Vec<&str> =
                triggers.iter().filter(|(r, _)| covers(r, route.path)).map(|(_, c)| c.as_str()).collect();
            assert_eq!(routed, vec![function.name], "spin.toml must route {} to {} (only)", route.path, function.name);
        }
    }
    for (route, component) in &triggers {
        let function = functions::named(component)
            .unwrap_or_else(|| panic!("spin.toml routes {route} to {component}, which is not in the registry"));
        assert!(
            function.routes.iter().any(|r| covers(route, r.path)),
            "spin.toml routes {route} to {component}, which serves none of it ({:?})",
            function.routes.iter().map(|r| r.path).collect::<Vec<_>>()
        );
    }
}
