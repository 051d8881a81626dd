//! Liveness and readiness of the operator process. A background task that panics marks the
//! process dead (`/livez` fails, so the kubelet restarts it) instead of leaving a "ready"
//! operator that silently stopped watching members.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;

#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    ready: AtomicBool,
    fatal: Mutex<Option<String>>,
}

impl Health {
    /// The controller is running (and, with leader election, holds the lease).
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }

    /// Ready: running and nothing fatal happened.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst) && self.fatal().is_none()
    }

    /// Why the process must be restarted, if it must.
    pub fn fatal(&self) -> Option<String> {
        match self.inner.fatal.lock() {
            Ok(f) => f.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set_fatal(&self, why: String) {
        tracing::error!(%why, "the operator can no longer work and must be restarted");
        let mut f = match self.inner.fatal.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        f.get_or_insert(why);
    }

    /// Spawns `task`; if it panics, the process is marked dead.
    pub fn spawn<F>(&self, name: String, task: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let health = self.clone();
        tokio::spawn(async move {
            if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                health.set_fatal(format!("background task {name} panicked: {message}"));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_fails_liveness_and_readiness() {
        let health = Health::default();
        health.set_ready(true);
        assert!(health.is_ready());
        let task = health.spawn("test".to_string(), async { panic!("boom") });
        task.await.expect("the wrapper itself does not panic");
        assert!(!health.is_ready());
        let why = health.fatal().expect("marked fatal");
        assert!(why.contains("test panicked: boom"), "{why}");
    }
}
