//! Every built component's imports, listed from the binary, against what each place provides: this
//! host, and Spin 4 plus this project's adapter components. A new import that one of them cannot
//! satisfy fails here, not at deploy time.

use tributary::components;
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

/// What this project's adapter components provide under Spin (`[component.X.dependencies]`).
const ADAPTERS: &[(&str, &str)] = &[
    ("tributary:pipeline/transform@0.1.0", "functions/transform"),
    ("tributary:pipeline/sink@0.1.0", "functions/sink-http"),
    ("tributary:pipeline/types@0.1.0", "(types only, shared with the adapters)"),
];

fn imports(engine: &wasmtime::Engine, bytes: &[u8]) -> Vec<String> {
    let component = Component::new(engine, bytes).expect("compiles");
    component.component_type().imports(engine).map(|(name, _)| name.to_owned()).collect()
}

fn provided(list: &[&str], import: &str) -> bool {
    WASI.iter().chain(list).any(|p| import.starts_with(p))
}

#[test]
fn every_import_is_provided_by_the_host_and_by_spin_with_the_adapters() {
    let engine = tributary::engine::build(&tributary::config::GuestConfig::default()).expect("engine");
    let read = |path: &str| std::fs::read(path).expect("built component");
    let built: Vec<(&str, Vec<u8>)> = vec![
        ("pubsub-push", components::PUBSUB_PUSH.to_vec()),
        ("transform", components::TRANSFORM.to_vec()),
        ("anomaly-check", components::ANOMALY_CHECK.to_vec()),
        ("recommend-trigger", components::RECOMMEND_TRIGGER.to_vec()),
        ("sink-http", read(components::SINK_HTTP_PATH)),
    ];
    let mut missing_host = Vec::new();
    let mut missing_spin = Vec::new();
    for (name, bytes) in &built {
        let list = imports(&engine, bytes);
        assert!(!list.is_empty(), "{name} imports nothing?");
        for import in list {
            // The host runs every component but the sink adapter, which exists for other hosts.
            if *name != "sink-http" && !provided(HOST, &import) {
                missing_host.push(format!("{name}: {import}"));
            }
            let adapter = ADAPTERS.iter().any(|(i, _)| import == *i);
            if !provided(SPIN, &import) && !adapter {
                missing_spin.push(format!("{name}: {import}"));
            }
        }
    }
    assert!(missing_host.is_empty(), "imports the host does not provide: {missing_host:#?}");
    // Known gap, until the state adapter over Spin's key-value store exists (see spin.toml): the
    // stateful functions' `state` import. Anything else missing under Spin fails.
    let expected_gap = vec![
        "anomaly-check: tributary:pipeline/state@0.1.0".to_owned(),
        "recommend-trigger: tributary:pipeline/state@0.1.0".to_owned(),
    ];
    assert_eq!(missing_spin, expected_gap, "imports Spin plus the adapters do not provide");
}
