//! The timer: every `timers.tick_ms` the host POSTs each tick route of the registry on its own
//! listener, the way an outside scheduler (Spin's cron trigger, Cloud Scheduler) would.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use crate::functions::{self, Kind};

/// `[timers]`: every `tick_ms` the host POSTs each function's tick route, which closes windows that
/// are due (also when no traffic arrives) and recomputes debounced users. 0 turns the timer off (an
/// outside scheduler can call the routes instead).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimersConfig {
    pub tick_ms: u64,
}

impl Default for TimersConfig {
    fn default() -> Self {
        Self { tick_ms: 5_000 }
    }
}

/// POSTs every tick route of the host at `addr` each `every`, until `stop`. A tick that fails is
/// logged; the next one tries again.
pub async fn run(addr: SocketAddr, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for route in functions::routes(Kind::Tick) {
            match tokio::time::timeout(every.max(Duration::from_secs(10)), crate::client::post(addr, route, &[], ""))
                .await
            {
                Ok(Ok((status, _))) if (200..300).contains(&status) => {}
                Ok(Ok((status, body))) => {
                    tracing::warn!(route, status, body = %String::from_utf8_lossy(&body), "timer tick failed")
                }
                Ok(Err(e)) => tracing::warn!(route, error = %e, "timer tick failed"),
                Err(_) => tracing::warn!(route, "timer tick timed out"),
            }
        }
    }
}
