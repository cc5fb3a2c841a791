//! The `state` capability's contract, kept by both backends: the embedded redb store and a real
//! `redis-server`. (The functions using it are exercised end to end in `anomaly.rs`.)

use std::time::Duration;

use tributary::state::{Entry, StateBackend, StateConfig, StateError, StateStore};

use crate::support::{Redis, temp_dir};

async fn contract(store: &std::sync::Arc<dyn StateStore>) {
    assert_eq!(store.get("a/k").await.expect("get"), None);
    let v1 = store.compare_and_swap("a/k", 0, b"one".to_vec(), None).await.expect("cas").expect("created");
    assert_eq!(store.compare_and_swap("a/k", 0, b"two".to_vec(), None).await.expect("cas"), None, "exists");
    assert_eq!(
        store.compare_and_swap("a/k", v1 + 1000, b"two".to_vec(), None).await.expect("cas"),
        None,
        "wrong version"
    );
    let v2 = store.compare_and_swap("a/k", v1, b"two".to_vec(), None).await.expect("cas").expect("swapped");
    assert!(v2 > v1);
    assert_eq!(store.get("a/k").await.expect("get"), Some(Entry { value: b"two".to_vec(), version: v2 }));
    assert!(!store.delete("a/k", v1).await.expect("delete"), "stale version");
    assert!(store.delete("a/k", v2).await.expect("delete"));
    assert_eq!(store.get("a/k").await.expect("get"), None);
    let v3 = store.compare_and_swap("a/k", 0, vec![0, 255, 7], None).await.expect("cas").expect("re-created");
    assert!(v3 > v2, "a re-created key never reuses a version");
    assert_eq!(store.get("a/k").await.expect("get").expect("there").value, vec![0, 255, 7], "binary values");
    for k in ["a/w/2", "a/w/1", "a/w*", "b/w/1"] {
        store.compare_and_swap(k, 0, b"x".to_vec(), None).await.expect("cas").expect("created");
    }
    assert_eq!(store.scan("a/w/", 10).await.expect("scan"), vec!["a/w/1", "a/w/2"]);
    assert_eq!(store.scan("a/w/", 1).await.expect("scan"), vec!["a/w/1"]);
    assert_eq!(store.scan("a/w*", 10).await.expect("scan"), vec!["a/w*"], "prefixes match literally");
    store.compare_and_swap("a/t", 0, b"x".to_vec(), Some(100)).await.expect("cas").expect("created");
    assert!(store.get("a/t").await.expect("get").is_some());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(store.get("a/t").await.expect("get"), None, "expired");
    assert!(store.scan("a/t", 10).await.expect("scan").is_empty(), "expired keys are not listed");
    assert!(store.compare_and_swap("a/t", 0, b"y".to_vec(), None).await.expect("cas").is_some(), "expired = absent");

    // Many writers racing on one key: every increment lands exactly once.
    let store = std::sync::Arc::clone(store);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = std::sync::Arc::clone(&store);
        tasks.push(async move {
            for _ in 0..25 {
                loop {
                    let cur = store.get("a/counter").await.expect("get");
                    let (n, version) = cur.map_or((0, 0), |e| {
                        (String::from_utf8(e.value).expect("utf8").parse::<u64>().expect("n"), e.version)
                    });
                    if store
                        .compare_and_swap("a/counter", version, (n + 1).to_string().into_bytes(), None)
                        .await
                        .expect("cas")
                        .is_some()
                    {
                        break;
                    }
                }
            }
        });
    }
    futures::future::join_all(tasks).await;
    assert_eq!(store.get("a/counter").await.expect("get").expect("counter").value, b"200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_the_contract() {
    let dir = temp_dir("state-embedded");
    let store = tributary::state::open(&StateConfig::default(), &dir).await.expect("open");
    contract(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_keeps_the_contract_and_reports_an_outage() {
    let mut redis = Redis::start().await;
    let config = StateConfig {
        backend: StateBackend::Redis,
        redis_url: redis.url.clone(),
        op_timeout_ms: 500,
        ..StateConfig::default()
    };
    let store = tributary::state::open(&config, &temp_dir("state-redis")).await.expect("connect");
    contract(&store).await;
    redis.kill();
    let err = store.get("a/k").await.expect_err("redis is down");
    assert!(matches!(err, StateError::Unavailable(_)), "{err:?}");
    redis.restart().await;
    // The connection manager reconnects; the append-only file kept the data.
    let back = crate::support::wait_for("redis to answer again", Duration::from_secs(20), || async {
        store.get("a/counter").await.ok().flatten()
    })
    .await;
    assert_eq!(back.value, b"200");
}
