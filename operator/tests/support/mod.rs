#![allow(dead_code)]

pub mod api;
pub mod envtest;
pub mod fake_admin;

use std::time::{Duration, Instant};

/// Polls `check` every 10 ms until it returns Some, or panics after `limit` with `what`.
pub async fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
