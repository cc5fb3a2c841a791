//! Push authentication in the host: routes listed in a `[[push_auth]]` entry accept a push only with a
//! valid Google-signed OIDC token (`push-auth` does the checking). Signing keys are fetched from the
//! entry's JWKS URL, cached for the `Cache-Control: max-age` the server gives (an hour otherwise), and
//! fetched again, at most every few seconds, when a token names a key the cache does not know (Google
//! rotates its keys). A refused push gets 401 (not authenticated) or 403 (not allowed here), a clear
//! reason in the log and `tributary_push_auth_total{route,result}`; if the keys cannot be fetched at all
//! the push gets 503, so Pub/Sub retries rather than the message being judged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use push_auth::{AuthError, Policy};
use serde::Deserialize;

use crate::metrics::Metrics;

/// `[[push_auth]]`: the listed push routes accept only pushes with a valid Google-signed OIDC token
/// (a push subscription created with `--push-auth-service-account`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushAuthConfig {
    /// Push routes this applies to, e.g. `["/push/events"]` (timer routes take no token).
    pub routes: Vec<String>,
    /// The expected `aud` claim: the subscription's `--push-auth-token-audience`, by default its push
    /// endpoint URL.
    pub audience: String,
    /// Accepted `email` claims: the subscriptions' push service accounts.
    pub service_accounts: Vec<String>,
    /// Where the signing keys are (Google's by default).
    #[serde(default = "google_jwks")]
    pub jwks_url: String,
    /// Accepted issuers (Google's by default).
    #[serde(default = "google_issuers")]
    pub issuers: Vec<String>,
    /// Clock skew tolerated, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
}

fn google_jwks() -> String {
    push_auth::GOOGLE_JWKS_URL.to_owned()
}

fn google_issuers() -> Vec<String> {
    push_auth::GOOGLE_ISSUERS.iter().map(|s| (*s).to_owned()).collect()
}

fn default_leeway() -> u64 {
    60
}

impl PushAuthConfig {
    /// Checks the entries: each names push routes of the registry, each route at most once.
    pub fn validate_all(entries: &[PushAuthConfig]) -> Result<(), String> {
        let push_routes: Vec<&str> = crate::functions::routes(crate::functions::Kind::Push).collect();
        let mut guarded: Vec<&str> = Vec::new();
        for (i, auth) in entries.iter().enumerate() {
            if auth.audience.is_empty() || auth.service_accounts.is_empty() || auth.routes.is_empty() {
                return Err(format!(
                    "push_auth entry {}: routes, audience and service_accounts must not be empty",
                    i + 1
                ));
            }
            for route in &auth.routes {
                if !push_routes.contains(&route.as_str()) {
                    return Err(format!(
                        "push_auth: '{route}' is not a push route (known: {})",
                        push_routes.join(", ")
                    ));
                }
                if guarded.contains(&route.as_str()) {
                    return Err(format!("push_auth: '{route}' is listed twice"));
                }
                guarded.push(route);
            }
        }
        Ok(())
    }
}

/// A key set fetched from one URL.
pub struct KeyCache {
    url: String,
    client: reqwest::Client,
    state: tokio::sync::Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    keys: Option<Arc<JwkSet>>,
    fresh_until: Option<Instant>,
    last_fetch: Option<Instant>,
}

/// Unknown `kid`s refetch at most this often (a flood of bad tokens must not become a flood of fetches).
const REFETCH_FLOOR: Duration = Duration::from_secs(5);
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

impl KeyCache {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        Ok(Self { url: url.to_owned(), client, state: tokio::sync::Mutex::default() })
    }

    /// The key set, holding `kid` if the server has it. `Err`: no key set could be fetched at all.
    async fn keys_for(&self, kid: &str) -> Result<Arc<JwkSet>, String> {
        let mut cached = self.state.lock().await;
        let now = Instant::now();
        let stale = cached.fresh_until.is_none_or(|t| now >= t);
        let unknown = cached.keys.as_ref().is_none_or(|k| k.find(kid).is_none());
        let may_refetch = cached.last_fetch.is_none_or(|t| now.duration_since(t) >= REFETCH_FLOOR);
        if (stale || unknown) && may_refetch {
            cached.last_fetch = Some(now);
            match self.fetch().await {
                Ok((keys, max_age)) => {
                    cached.keys = Some(Arc::new(keys));
                    cached.fresh_until = Some(now + max_age);
                }
                // Keep serving the keys we have; only with none at all is this an outage.
                Err(e) => tracing::warn!(url = %self.url, error = %e, "fetching the push-auth signing keys failed"),
            }
        }
        cached.keys.clone().ok_or_else(|| format!("no signing keys could be fetched from {}", self.url))
    }

    async fn fetch(&self) -> Result<(JwkSet, Duration), String> {
        let resp = self.client.get(&self.url).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{} answered {}", self.url, resp.status()));
        }
        let max_age = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok()))
            .map_or(DEFAULT_MAX_AGE, Duration::from_secs);
        let keys = resp.json::<JwkSet>().await.map_err(|e| format!("not a JWK set: {e}"))?;
        Ok((keys, max_age))
    }
}

struct Rule {
    routes: Vec<String>,
    policy: Policy,
    keys: Arc<KeyCache>,
}

/// Every `[[push_auth]]` entry.
pub struct PushAuth {
    rules: Vec<Rule>,
    metrics: Arc<Metrics>,
}

enum Failure {
    Auth(AuthError),
    Keys(String),
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        Failure::Auth(e)
    }
}

/// Why a push was not let through: the HTTP status and the reason.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub reason: String,
}

impl PushAuth {
    pub fn new(config: &[PushAuthConfig], metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let mut rules = Vec::new();
        let mut caches: Vec<Arc<KeyCache>> = Vec::new();
        for c in config {
            // One cache per URL, shared by the entries that use it.
            let keys = match caches.iter().find(|k| k.url == c.jwks_url) {
                Some(k) => Arc::clone(k),
                None => {
                    let k = Arc::new(KeyCache::new(&c.jwks_url)?);
                    caches.push(Arc::clone(&k));
                    k
                }
            };
            let policy = Policy {
                audience: c.audience.clone(),
                service_accounts: c.service_accounts.clone(),
                issuers: c.issuers.clone(),
                leeway_seconds: c.leeway_seconds,
            };
            rules.push(Rule { routes: c.routes.clone(), policy, keys });
        }
        Ok(Self { rules, metrics })
    }

    /// Checks a push to `route` with this `Authorization` header; routes without a rule pass.
    pub async fn check(&self, route: &str, authorization: Option<&str>) -> Result<(), Refused> {
        let Some(rule) = self.rules.iter().find(|r| r.routes.iter().any(|x| x == route)) else { return Ok(()) };
        let result = async {
            let token = push_auth::bearer(authorization)?;
            let kid = push_auth::key_id(token)?;
            let keys = rule.keys.keys_for(&kid).await.map_err(Failure::Keys)?;
            push_auth::verify(token, &keys, &rule.policy)?;
            Ok::<(), Failure>(())
        }
        .await;
        let outcome = match &result {
            Ok(()) => "ok",
            Err(Failure::Auth(e)) => e.label(),
            Err(Failure::Keys(_)) => "keys_unavailable",
        };
        self.metrics.push_auth(route, outcome);
        match result {
            Ok(()) => Ok(()),
            Err(Failure::Auth(e)) => {
                tracing::warn!(route, reason = %e, "push refused by push authentication");
                Err(Refused { status: e.status(), reason: e.to_string() })
            }
            Err(Failure::Keys(e)) => {
                tracing::error!(route, error = %e, "push authentication cannot run");
                Err(Refused { status: 503, reason: e })
            }
        }
    }
}
