//! A RaftCluster's status as a watch delivers it, each version with the moment it arrived, so
//! that "how long from an action until status showed it" is read off the log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, watcher as watch_of};
use kuberaft_operator::crd::{RaftCluster, RaftClusterStatus};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// One status, as received.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub status: RaftClusterStatus,
}

pub struct StatusLog {
    samples: Arc<Mutex<Vec<Sample>>>,
    arrived: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for StatusLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(samples: &Mutex<Vec<Sample>>) -> std::sync::MutexGuard<'_, Vec<Sample>> {
    samples.lock().unwrap_or_else(|e| e.into_inner())
}

impl StatusLog {
    /// Watches RaftCluster `namespace/name` from now on.
    pub fn watch(client: Client, namespace: &str, name: &str) -> StatusLog {
        let api: Api<RaftCluster> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let task = {
            let samples = samples.clone();
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let mut events = watch_of(api, config)
                    .default_backoff()
                    .applied_objects()
                    .boxed();
                while let Some(event) = events.next().await {
                    let Ok(rc) = event else { continue };
                    let at = Instant::now();
                    let status = rc.status.unwrap_or_default();
                    let mut s = lock(&samples);
                    if s.last().is_none_or(|last| last.status != status) {
                        s.push(Sample { at, status });
                        arrived.notify_waiters();
                    }
                }
            })
        };
        StatusLog {
            samples,
            arrived,
            task,
        }
    }

    /// A mark: samples from here on came after it.
    pub fn mark(&self) -> usize {
        lock(&self.samples).len()
    }

    /// The status as last received.
    pub fn latest(&self) -> RaftClusterStatus {
        lock(&self.samples)
            .last()
            .map(|s| s.status.clone())
            .unwrap_or_default()
    }

    /// The first status since `mark` for which `pred` holds, waiting up to `timeout`.
    pub async fn wait_for(
        &self,
        mark: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&RaftClusterStatus) -> bool,
    ) -> Result<Sample, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.arrived.notified();
            if let Some(found) = lock(&self.samples)
                .iter()
                .skip(mark)
                .find(|s| pred(&s.status))
            {
                return Ok(found.clone());
            }
            tokio::select! {
                _ = arrived => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(format!(
                        "{what}: not within {timeout:?}; status was {:?}",
                        self.latest()
                    ));
                }
            }
        }
    }
}
