//! Keeping a TLS configuration in step with its files.
//!
//! Kubernetes updates a mounted Secret by pointing a symlink at a new
//! directory, which no watch on the old file sees; so the files are simply
//! read again every interval and compared with what was loaded. A change is
//! built into a new configuration and swapped in for new connections; a
//! change that does not build (a half-copied file, a key that does not match)
//! is logged once and the last good configuration stays.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

type Build<T> = dyn Fn(&[Vec<u8>]) -> Result<(T, String), String> + Send + Sync;

struct Inner<T> {
    what: String,
    files: Vec<(PathBuf, &'static str)>,
    build: Box<Build<T>>,
    current: RwLock<Arc<T>>,
    /// The file contents last tried, built or not.
    last_seen: Mutex<Vec<Vec<u8>>>,
}

/// A value built from files, rebuilt when they change.
pub struct Reloading<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Reloading<T> {
    fn clone(&self) -> Self {
        Reloading {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Reads `files` (each with the flag it came from) and builds the first
    /// value; any error is returned, for the member to exit with.
    pub fn new(
        what: impl Into<String>,
        files: Vec<(PathBuf, &'static str)>,
        build: impl Fn(&[Vec<u8>]) -> Result<(T, String), String> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, String> {
        let what = what.into();
        let contents = read_all(&files)?;
        let (value, description) = build(&contents)?;
        tracing::info!(tls = %what, "loaded {description}");
        Ok(Reloading {
            inner: Arc::new(Inner {
                what,
                files,
                build: Box::new(build),
                current: RwLock::new(Arc::new(value)),
                last_seen: Mutex::new(contents),
            }),
        })
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<T> {
        match self.inner.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the files again and swaps in a new value if they changed.
    /// Returns whether a new value was installed.
    pub fn reload(&self) -> bool {
        let inner = &self.inner;
        let contents = match read_all(&inner.files) {
            Ok(c) => c,
            Err(e) => {
                // Mid-swap, or removed: keep serving with what we have.
                let mut seen = inner.last_seen.lock().unwrap_or_else(|p| p.into_inner());
                if !seen.is_empty() {
                    tracing::warn!(tls = %inner.what, error = %e, "cannot reload TLS files; keeping the loaded certificate");
                    seen.clear();
                }
                return false;
            }
        };
        {
            let mut seen = inner.last_seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == contents {
                return false;
            }
            *seen = contents.clone();
        }
        match (inner.build)(&contents) {
            Ok((value, description)) => {
                let mut cur = inner.current.write().unwrap_or_else(|p| p.into_inner());
                *cur = Arc::new(value);
                tracing::info!(tls = %inner.what, "reloaded {description}; new connections use it");
                true
            }
            Err(e) => {
                tracing::warn!(tls = %inner.what, error = %e, "changed TLS files do not load; keeping the previous certificate until they do");
                false
            }
        }
    }

    /// Starts a task that reloads every `interval`. Needs a tokio runtime.
    pub fn watch(&self, interval: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let r = this.clone();
                // File reads block; keep them off the async workers.
                if tokio::task::spawn_blocking(move || r.reload())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

fn read_all(files: &[(PathBuf, &'static str)]) -> Result<Vec<Vec<u8>>, String> {
    files
        .iter()
        .map(|(path, flag)| super::pem::read(path, flag))
        .collect()
}
