//! The routes a function serves, declared once in the function's crate: the function matches
//! requests with them, and the host's function registry serves and checks exactly these.

/// What a route is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Pub/Sub pushes messages here (and may have to authenticate).
    Push,
    /// The timer contract: the host's timer (or any scheduler) POSTs here periodically, no body.
    Tick,
}

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub path: &'static str,
    pub kind: Kind,
}

/// A push route.
pub const fn push(path: &'static str) -> Route {
    Route { path, kind: Kind::Push }
}

/// A timer route.
pub const fn tick(path: &'static str) -> Route {
    Route { path, kind: Kind::Tick }
}

/// Which of `routes` serves `path` (a trailing slash is ignored).
pub fn find<R: Copy>(routes: &[(Route, R)], path: &str) -> Option<R> {
    let path = path.trim_end_matches('/');
    routes.iter().find(|(r, _)| r.path == path).map(|(_, handler)| *handler)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_exactly_but_for_a_trailing_slash() {
        const ROUTES: &[(Route, u8)] = &[(push("/push/a"), 1), (tick("/push/a/tick"), 2)];
        assert_eq!(find(ROUTES, "/push/a"), Some(1));
        assert_eq!(find(ROUTES, "/push/a/tick/"), Some(2));
        assert_eq!(find(ROUTES, "/push/ab"), None);
    }
}
