//! The pod runner: the journey's stand-in for the scheduler and the kubelet of one Node.
//!
//! It registers a Node, binds every pending pod to it, and runs each pod's container with
//! Docker, the way a kubelet would:
//! - the image the pod names, from the local engine (`IfNotPresent` and `Never` are honoured;
//!   nothing can be pulled here, so a missing image is `ErrImageNeverPull`);
//! - on the tier's Docker network with an IP of its own (a recreated pod gets a new one), its
//!   hostname, and its DNS name under the headless Service when it has a subdomain;
//! - the environment, downward-API `fieldRef`s and Secret/ConfigMap references included, and
//!   `KUBERNETES_SERVICE_HOST/PORT`;
//! - its volumes: a Docker volume behind each PersistentVolumeClaim (through a pre-bound
//!   PersistentVolume the runner makes), Secrets, ConfigMaps, the projected service-account
//!   token with the cluster CA (so a pod talks to the API server as its ServiceAccount, and
//!   RBAC decides), emptyDirs;
//! - the security context (user, groups, read-only root, capabilities, no new privileges;
//!   `runAsNonRoot` is checked against the image);
//! - startup, liveness and readiness probes (HTTP, gRPC, TCP, exec) at their periods and
//!   thresholds, reported as the pod's `Ready` condition;
//! - containers that exit are restarted with a CrashLoopBackOff whose first step and cap are
//!   settings ([`RunnerConfig::backoff`]; a kubelet's are 10 s and 5 min);
//! - a pod being deleted gets SIGTERM and, after its grace period, SIGKILL; then its object is
//!   removed. A pod that vanishes at once (`--force`) has its container killed. A pod recreated
//!   under the same name (a new UID) replaces the old container.
//!
//! It serves pods of one container (no init containers or sidecars: the operator's and the
//! members' pods have one), and does not enforce resource limits.

mod backoff;
mod container;
mod env;
mod node;
mod pods;
mod probe;
mod status;
mod volumes;
mod worker;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::docker::cli::{DockerError, docker_async};
use crate::docker::cluster::Network;
use crate::docker::resources::Run;

pub use backoff::Backoff;

/// How the runner behaves.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// The Node's name.
    pub node_name: String,
    /// The Docker network pods join (a /24; its gateway is the Node's address).
    pub network: Network,
    /// `KUBERNETES_SERVICE_HOST` and `_PORT`: where pods reach the API server.
    pub api_host: String,
    pub api_port: u16,
    pub cluster_domain: String,
    /// The first wait of CrashLoopBackOff and its cap.
    pub backoff: (Duration, Duration),
}

/// What one pod's worker is told from outside.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    Run,
    /// The pod object is gone (force-deleted) or replaced: kill the container now.
    Kill,
}

struct Worker {
    namespace: String,
    name: String,
    container: String,
    pod: watch::Sender<k8s_openapi::api::core::v1::Pod>,
    order: watch::Sender<Order>,
    task: JoinHandle<()>,
}

/// Addresses of the network handed out in turn, so that a recreated pod gets a new one.
struct IpPool {
    prefix: String,
    next: u8,
    in_use: BTreeSet<u8>,
}

impl IpPool {
    const FIRST: u8 = 10;

    fn allocate(&mut self) -> Option<String> {
        for _ in Self::FIRST..=254 {
            let candidate = self.next;
            self.next = if self.next == 254 {
                Self::FIRST
            } else {
                self.next + 1
            };
            if self.in_use.insert(candidate) {
                return Some(format!("{}.{candidate}", self.prefix));
            }
        }
        None
    }

    fn release(&mut self, ip: &str) {
        if let Some(last) = ip.rsplit('.').next().and_then(|o| o.parse().ok()) {
            self.in_use.remove(&last);
        }
    }
}

/// What the runner's tasks share.
struct Shared {
    client: Client,
    config: RunnerConfig,
    run: Arc<Run>,
    /// Host folders behind Secret, ConfigMap, projected and emptyDir volumes.
    files: PathBuf,
    workers: Mutex<HashMap<String, Worker>>,
    ips: Mutex<IpPool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn host_ip(&self) -> String {
        format!("{}.1", self.config.network.prefix)
    }

    /// The container of the pod `namespace/name` as it is now.
    fn container_of(&self, namespace: &str, name: &str) -> Option<String> {
        lock(&self.workers)
            .values()
            .find(|w| w.namespace == namespace && w.name == name)
            .map(|w| w.container.clone())
    }
}

/// The running stand-in. Dropping it stops its tasks; the containers, volumes and network
/// belong to the [`Run`] and go with it.
pub struct PodRunner {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    _files: tempfile::TempDir,
}

impl Drop for PodRunner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for (_, w) in lock(&self.shared.workers).drain() {
            w.task.abort();
        }
    }
}

impl PodRunner {
    /// Registers the Node and starts binding and running pods.
    pub async fn start(
        client: Client,
        config: RunnerConfig,
        run: Arc<Run>,
    ) -> Result<PodRunner, String> {
        let files = tempfile::Builder::new()
            .prefix("kuberaft-pod-runner-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let shared = Arc::new(Shared {
            ips: Mutex::new(IpPool {
                prefix: config.network.prefix.clone(),
                next: IpPool::FIRST,
                in_use: BTreeSet::new(),
            }),
            client,
            config,
            run,
            files: files.path().to_path_buf(),
            workers: Mutex::new(HashMap::new()),
        });
        node::register(&shared).await?;
        let tasks = vec![
            tokio::spawn(pods::run(shared.clone())),
            tokio::spawn(volumes::provision(shared.clone())),
            tokio::spawn(volumes::reclaim(shared.clone())),
        ];
        Ok(PodRunner {
            shared,
            tasks,
            _files: files,
        })
    }

    /// The Docker container of pod `namespace/name` now, if it runs here.
    pub fn container_of(&self, namespace: &str, name: &str) -> Option<String> {
        self.shared.container_of(namespace, name)
    }

    fn require(&self, namespace: &str, name: &str) -> Result<String, String> {
        self.container_of(namespace, name)
            .ok_or_else(|| format!("pod {namespace}/{name} has no container on this node"))
    }

    /// `kubectl exec POD -- ARGS`: runs `args` in the pod's container, returns its output.
    pub async fn exec(&self, namespace: &str, name: &str, args: &[&str]) -> Result<String, String> {
        let container = self.require(namespace, name)?;
        let mut full = vec!["exec", container.as_str()];
        full.extend_from_slice(args);
        docker_async(&full)
            .await
            .map_err(|e: DockerError| e.to_string())
    }

    /// Kills the pod's container with SIGKILL, as a crash would; the runner restarts it.
    pub async fn crash(&self, namespace: &str, name: &str) -> Result<(), String> {
        let container = self.require(namespace, name)?;
        docker_async(&["kill", "--signal", "KILL", container.as_str()])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The container's output (`kubectl logs`), or why there is none.
    pub async fn logs(&self, namespace: &str, name: &str) -> String {
        let Ok(container) = self.require(namespace, name) else {
            return format!("(pod {namespace}/{name} has no container on this node)");
        };
        crate::docker::cli::docker_combined(&["logs", "--tail", "200", container.as_str()])
    }

    /// Resident memory of the pod's main process, in bytes.
    pub async fn rss_bytes(&self, namespace: &str, name: &str) -> Result<u64, String> {
        let container = self.require(namespace, name)?;
        let pid = docker_async(&["inspect", "--format", "{{.State.Pid}}", container.as_str()])
            .await
            .map_err(|e| e.to_string())?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_not_handed_out_again_until_the_pool_wraps() {
        let mut pool = IpPool {
            prefix: "172.30.9".into(),
            next: IpPool::FIRST,
            in_use: BTreeSet::new(),
        };
        let a = pool.allocate().expect("an address");
        assert_eq!(a, "172.30.9.10");
        pool.release(&a);
        assert_eq!(pool.allocate().as_deref(), Some("172.30.9.11"));
        let mut n = 2;
        while pool.allocate().is_some() {
            n += 1;
        }
        // 245 addresses (.10–.254; .0–.9 and .255 are never handed out), and .10 a second time
        // once the pool wrapped.
        assert_eq!(n, 246);
    }
}
