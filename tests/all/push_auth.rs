//! Push authentication (OIDC) on a real host: RSA keys generated here (`openssl`), served as a JWKS from
//! a local endpoint, tokens signed here. Every way a token can be wrong is refused with the right status
//! and counted; a good token lands the push; a key rotated in later is fetched on first use.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Host, Jwks, TestKey, envelope, http_raw, temp_dir};

pub const AUDIENCE: &str = "https://tributary.test/push/events";
pub const PUSHER: &str = "pusher@tributary-test.iam.gserviceaccount.com";

/// Claims of a valid push token, with `overrides`.
pub fn claims(overrides: Value) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    let mut c = json!({
        "iss": "https://accounts.google.com", "aud": AUDIENCE, "email": PUSHER, "email_verified": true,
        "sub": "1234567890", "iat": now, "exp": now + 3600,
    });
    for (k, v) in overrides.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

async fn push(host: &Host, id: &str, token: Option<&str>) -> (u16, String) {
    let body = envelope(
        id,
        br#"{"user_id":"u","event_type":"view","timestamp":"2024-01-01 10:00:00"}"#,
        "projects/p/subscriptions/s",
    );
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    http_raw("POST", &host.push_url(), body.into_bytes(), &headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_tokens_are_verified_and_every_bad_one_refused() {
    let key = TestKey::generate("key-1");
    let other = TestKey::generate("key-x");
    let jwks = Jwks::start(vec![key.jwk.clone()]).await;
    let config = format!(
        "[[push_auth]]\nroutes = [\"/push/events\"]\naudience = \"{AUDIENCE}\"\nservice_accounts = [\"{PUSHER}\"]\njwks_url = \"{}\"\nleeway_seconds = 5\n",
        jwks.url
    );
    let host = Host::start(&temp_dir("push-auth"), &config).await;
    let now = jsonwebtoken::get_current_timestamp();

    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("no token", None, 401, "missing"),
        ("not a JWT", Some("abc.def".into()), 401, "malformed"),
        ("signed by another key under our kid", Some(other.sign_as("key-1", &claims(json!({})))), 401, "bad_signature"),
        ("unknown kid", Some(other.sign(&claims(json!({})))), 401, "unknown_key"),
        ("wrong issuer", Some(key.sign(&claims(json!({"iss": "https://evil.example"})))), 401, "wrong_issuer"),
        ("expired", Some(key.sign(&claims(json!({"exp": now - 600, "iat": now - 4200})))), 401, "expired"),
        ("not yet valid", Some(key.sign(&claims(json!({"nbf": now + 600})))), 401, "not_yet_valid"),
        ("issued in the future", Some(key.sign(&claims(json!({"iat": now + 600})))), 401, "not_yet_valid"),
        ("wrong audience", Some(key.sign(&claims(json!({"aud": "https://elsewhere"})))), 403, "wrong_audience"),
        (
            "wrong service account",
            Some(key.sign(&claims(json!({"email": "intruder@x.iam.gserviceaccount.com"})))),
            403,
            "wrong_email",
        ),
        ("email not verified", Some(key.sign(&claims(json!({"email_verified": false})))), 403, "email_not_verified"),
    ];
    for (i, (what, token, status, label)) in cases.iter().enumerate() {
        let (got, body) = push(&host, &format!("bad-{i}"), token.as_deref()).await;
        assert_eq!(got, *status, "{what}: {body}");
        let needle = format!("outcome=\"{label}\"");
        assert!(host.metric("tributary_push_auth_total", &[&needle]).await >= 1.0, "{what}: metric {label}");
    }
    assert!(host.log_text().contains("push refused by push authentication"), "reasons are logged");
    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, 0, "nothing refused was written");

    let (status, body) = push(&host, "good-1", Some(&key.sign(&claims(json!({}))))).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, 1);

    // Google rotates keys: a token under a new kid triggers one fetch of the key set, then is accepted.
    let rotated = TestKey::generate("key-2");
    jwks.keys.lock().expect("lock").push(rotated.jwk.clone());
    let fetches = *jwks.fetches.lock().expect("lock");
    tokio::time::sleep(Duration::from_secs(5)).await; // the unknown-kid refetch floor
    let (status, body) = push(&host, "good-2", Some(&rotated.sign(&claims(json!({}))))).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(*jwks.fetches.lock().expect("lock"), fetches + 1, "one fetch for the new key");
    // Cached: more pushes, no more fetches.
    for i in 0..5 {
        let (status, _) = push(&host, &format!("good-more-{i}"), Some(&key.sign(&claims(json!({}))))).await;
        assert_eq!(status, 204);
    }
    assert_eq!(*jwks.fetches.lock().expect("lock"), fetches + 1);
    assert_eq!(host.metric("tributary_push_auth_total", &["outcome=\"ok\""]).await, 7.0);

    // Routes without a [[push_auth]] entry take pushes as before.
    let (status, body) = http_raw(
        "POST",
        &format!("http://{}/push/anomaly", host.addr),
        b"{}".to_vec(),
        &[("x-goog-pubsub-message-id", "open-1")],
    )
    .await;
    assert!(status == 200 || status == 204, "{status}: {body}");
}
