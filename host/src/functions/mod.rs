//! The function registry: every function this host serves, declared once. Everything else derives
//! from it — the server's routing, the timer's tick routes, which routes push authentication may
//! guard, which `[functions.<name>]` settings tables exist, which capabilities each function is
//! linked with, the pool sizing, and the checks of `spin.toml` in the portability test.
//!
//! A function's routes are declared by its own crate (`ROUTES` next to its flow, where requests are
//! matched), so the guest and the host can never disagree about them.
//!
//! Adding a function: its crate under `functions/` (`build.rs` builds every `cdylib` crate there into
//! [`crate::components`]), one [`Function`] entry below, and its block in `spin.toml`.

pub mod instances;
pub mod native;

use std::path::PathBuf;
use std::sync::LazyLock;

pub use function_kit::routes::{Kind, Route};
use serde::Deserialize;

use crate::components;

/// One function.
#[derive(Debug)]
pub struct Function {
    /// Its name: the component in `spin.toml`, the `[functions.<name>]` settings table, the prefix of
    /// its state keys, the `function` label of its metrics.
    pub name: &'static str,
    /// The built-in component (`[components]` may replace the transform it calls, not the function).
    pub component: &'static [u8],
    /// Push and timer routes, as the function's crate declares them.
    pub routes: Vec<Route>,
    /// Takes settings through `wasi:config/store`.
    pub settings: bool,
    /// Keeps state between requests through the `state` import.
    pub stateful: bool,
}

/// Every function, in the order they are compiled and served.
pub fn all() -> &'static [Function] {
    static REGISTRY: LazyLock<Vec<Function>> = LazyLock::new(|| {
        vec![
            Function {
                name: "pubsub-push",
                component: components::PUBSUB_PUSH,
                routes: paths(pubsub_push::flow::ROUTES),
                settings: false,
                stateful: false,
            },
            Function {
                name: "anomaly-check",
                component: components::ANOMALY_CHECK,
                routes: paths(anomaly_check::flow::ROUTES),
                settings: true,
                stateful: true,
            },
            Function {
                name: "recommend-trigger",
                component: components::RECOMMEND_TRIGGER,
                routes: paths(recommend_trigger::flow::ROUTES),
                settings: true,
                stateful: true,
            },
            Function {
                name: "windows",
                component: components::EVENT_WINDOWS,
                routes: paths(event_windows::flow::ROUTES),
                settings: true,
                stateful: true,
            },
        ]
    });
    &REGISTRY
}

fn paths<R>(table: &[(Route, R)]) -> Vec<Route> {
    table.iter().map(|(route, _)| *route).collect()
}

/// The function serving `path` (a trailing slash ignored), its index in [`all`], and the route.
pub fn find(path: &str) -> Option<(usize, &'static Function, Route)> {
    let path = path.trim_end_matches('/');
    all().iter().enumerate().find_map(|(i, f)| Some((i, f, *f.routes.iter().find(|r| r.path == path)?)))
}

/// Every route of `kind`, in registry order.
pub fn routes(kind: Kind) -> impl Iterator<Item = &'static str> {
    all().iter().flat_map(|f| &f.routes).filter(move |r| r.kind == kind).map(|r| r.path)
}

/// The function called `name`.
pub fn named(name: &str) -> Option<&'static Function> {
    all().iter().find(|f| f.name == name)
}

/// `[components]`: replacement components; the built-in ones are embedded in the binary.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComponentsConfig {
    /// A transform component (world `transform-component`) to use instead of the built-in one.
    pub transform: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_one_function_and_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for f in all() {
            assert!(!f.routes.is_empty(), "{} serves no route", f.name);
            for r in &f.routes {
                assert!(seen.insert(r.path), "{} is declared twice", r.path);
                assert_eq!(find(r.path).map(|(_, g, _)| g.name), Some(f.name));
            }
        }
        assert_eq!(all().iter().map(|f| f.name).collect::<std::collections::HashSet<_>>().len(), all().len());
        assert_eq!(find("/push/events/").map(|(i, _, r)| (i, r.kind)), Some((0, Kind::Push)));
        assert_eq!(
            routes(Kind::Tick).collect::<Vec<_>>(),
            vec![
                "/push/anomaly/tick",
                "/push/sensors/tick",
                "/push/recommend/tick",
                "/push/sessions/tick",
                "/push/metrics/tick"
            ]
        );
    }
}
