//! Builds the guest components (`functions/*`, and the test-only `tests/components/*`) for
//! `wasm32-wasip2` and exposes their paths as `TRIBUTARY_*_WASM` so the host embeds exactly the
//! components of this checkout: a test can never run against a stale wasm file.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, artifact file name, env var the host reads).
const GUESTS: [(&str, &str, &str); 6] = [
    ("pubsub-push", "pubsub_push.wasm", "TRIBUTARY_PUBSUB_PUSH_WASM"),
    ("anomaly-check", "anomaly_check.wasm", "TRIBUTARY_ANOMALY_CHECK_WASM"),
    ("recommend-trigger", "recommend_trigger.wasm", "TRIBUTARY_RECOMMEND_TRIGGER_WASM"),
    ("transform", "transform.wasm", "TRIBUTARY_TRANSFORM_WASM"),
    ("chaos-transform", "chaos_transform.wasm", "TRIBUTARY_CHAOS_TRANSFORM_WASM"),
    ("sink-http", "sink_http.wasm", "TRIBUTARY_SINK_HTTP_WASM"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ sits in the workspace root").to_path_buf();
    for watched in ["functions", "wit", "tests/components", "Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: the guests get <target>/guests of their own,
    // so this nested cargo never waits on the outer one's build lock.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out_dir.ancestors().nth(4).map(Path::to_path_buf).unwrap_or_else(|| root.join("target"));
    let guest_target = target_dir.join("guests");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(&guest_target);
    for (package, _, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    // The outer build's flags are for the host target, not for wasm.
    for var in
        ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTC_WORKSPACE_WRAPPER"]
    {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the guest components");
    assert!(status.success(), "building the guest components for wasm32-wasip2 failed: {status}");

    for (_, file, var) in GUESTS {
        let path = guest_target.join("wasm32-wasip2/release").join(file);
        assert!(path.exists(), "expected guest component at {}", path.display());
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
