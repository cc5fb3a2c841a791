//! The push handler component: a Pub/Sub push request in, 204/200/429/503 out (the acknowledgement
//! contract is `function_kit::contract`'s). `lib.rs` is glue only: the logic lives in [`flow`] and the
//! kit, which compile and are tested natively (the host's native baseline links them too).

pub mod flow;

#[cfg(target_arch = "wasm32")]
#[expect(unsafe_code, reason = "wit-bindgen generates the canonical-ABI glue of the direct-handler export")]
mod component {
    use function_kit::contract::{Outcome, Reply};
    use function_kit::envelope::PushRequest;

    use crate::flow;

    wit_bindgen::generate!({
        path: "../../wit",
        world: "pubsub-push",
    });

    function_kit::import_glue!(tributary::pipeline);

    /// Push authentication inside the function, for hosts other than Tributary (whose host checks
    /// tokens itself and gives the function no network): on when `TRIBUTARY_PUSH_AUDIENCE` is set
    /// (`TRIBUTARY_PUSH_SERVICE_ACCOUNTS`, comma-separated; `TRIBUTARY_JWKS_URL`, Google's by default).
    /// The key set is fetched over outbound HTTP and kept in the instance for an hour, fetched again
    /// when a token names an unknown key.
    mod auth {
        use std::sync::Mutex;

        use jsonwebtoken::jwk::JwkSet;
        use push_auth::{AuthError, GOOGLE_ISSUERS, GOOGLE_JWKS_URL, Policy};
        use spin_sdk::http::body::IncomingBodyExt as _;

        static KEYS: Mutex<Option<(JwkSet, std::time::Instant)>> = Mutex::new(None);

        fn policy() -> Option<(Policy, String)> {
            let audience = std::env::var("TRIBUTARY_PUSH_AUDIENCE").ok()?;
            let accounts = std::env::var("TRIBUTARY_PUSH_SERVICE_ACCOUNTS").unwrap_or_default();
            let policy = Policy {
                audience,
                service_accounts: accounts.split(',').map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect(),
                issuers: GOOGLE_ISSUERS.iter().map(|i| (*i).to_owned()).collect(),
                leeway_seconds: 60,
            };
            Some((policy, std::env::var("TRIBUTARY_JWKS_URL").unwrap_or_else(|_| GOOGLE_JWKS_URL.to_owned())))
        }

        async fn keys(url: &str, kid: &str) -> Result<JwkSet, String> {
            if let Ok(cached) = KEYS.lock()
                && let Some((keys, at)) = cached.as_ref()
                && at.elapsed().as_secs() < 3600
                && keys.find(kid).is_some()
            {
                return Ok(keys.clone());
            }
            let resp = spin_sdk::http::get(url).await.map_err(|e| format!("fetching {url}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("{url} answered {}", resp.status()));
            }
            let body = resp.into_body().bytes().await.map_err(|e| format!("reading {url}: {e:?}"))?;
            let keys: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("{url}: not a JWK set: {e}"))?;
            if let Ok(mut cached) = KEYS.lock() {
                *cached = Some((keys.clone(), std::time::Instant::now()));
            }
            Ok(keys)
        }

        /// `Err((status, reason))` when the push must be refused. Without a policy it returns at once,
        /// so the direct call (the Tributary host, which checks tokens itself) never waits here.
        pub async fn check(authorization: Option<&str>) -> Result<(), (u16, String)> {
            let Some((policy, url)) = policy() else { return Ok(()) };
            let refuse = |e: AuthError| (e.status(), e.to_string());
            let token = push_auth::bearer(authorization).map_err(refuse)?;
            let kid = push_auth::key_id(token).map_err(refuse)?;
            let keys = keys(&url, &kid).await.map_err(|e| (503, e))?;
            push_auth::verify(token, &keys, &policy).map(|_| ()).map_err(refuse)
        }
    }

    /// One route wherever the function is mounted.
    fn route(_: &str) -> Option<()> {
        Some(())
    }

    /// No settings (push authentication reads its environment).
    fn settings() -> Result<&'static (), String> {
        Ok(&())
    }

    async fn run((): (), push: PushRequest, _: &'static ()) -> Reply {
        if let Err((status, reason)) = auth::check(push.header("authorization")).await {
            eprintln!("pubsub-push: push refused by push authentication: {reason}");
            return Outcome::Refused { status, reason }.into();
        }
        flow::handle(&push, &Imports, &Imports, chrono::Utc::now()).await.into()
    }

    function_kit::serve_glue!(route, settings, run);
}
