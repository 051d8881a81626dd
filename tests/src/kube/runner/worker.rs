//! One pod's life on the node, as a kubelet's pod worker lives it: set up (volumes, image,
//! environment), start, probe, restart with back-off, and stop when the pod is deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::backoff::Backoff;
use super::container::{self, Inputs};
use super::probe::{self, Target, Verdict};
use super::status::{PodState, Waiting};
use super::{Order, Shared, env, lock, volumes};
use crate::docker::cli::docker_async;

/// How often file-backed volumes are written again, and a failed setup retried.
const RESYNC: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(1);

/// Removes the pod's object once its containers are gone (the kubelet's last word on a pod).
pub(super) async fn remove_object(shared: &Shared, pod: &Pod) {
    let api: Api<Pod> =
        Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => {
            tracing::warn!(pod = %pod.name_any(), error = %e, "pod runner: cannot remove the pod")
        }
    }
}

/// What ended a wait.
enum Interrupt {
    /// The pod is being deleted (gracefully).
    Terminating,
    /// The pod's object is gone or replaced: kill now.
    Killed,
}

struct Life {
    shared: Arc<Shared>,
    uid: String,
    docker: String,
    pod: watch::Receiver<Pod>,
    order: watch::Receiver<Order>,
    state: PodState,
    reported: Option<serde_json::Value>,
    folder: std::path::PathBuf,
}

impl Life {
    fn current(&self) -> Pod {
        self.pod.borrow().clone()
    }

    fn interrupt(&self) -> Option<Interrupt> {
        if *self.order.borrow() == Order::Kill {
            Some(Interrupt::Killed)
        } else if self.pod.borrow().metadata.deletion_timestamp.is_some() {
            Some(Interrupt::Terminating)
        } else {
            None
        }
    }

    /// Sleeps for `d` unless the pod is deleted or killed first.
    async fn sleep(&mut self, d: Duration) -> Option<Interrupt> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if let Some(i) = self.interrupt() {
                return Some(i);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return None,
                r = self.pod.changed() => if r.is_err() { return Some(Interrupt::Killed) },
                r = self.order.changed() => if r.is_err() { return Some(Interrupt::Killed) },
            }
        }
    }

    /// Writes the pod's status if it changed.
    async fn report(&mut self) {
        let status = self.state.render();
        let Ok(value) = serde_json::to_value(&status) else {
            return;
        };
        if self.reported.as_ref() == Some(&value) {
            return;
        }
        let pod = self.current();
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        match api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": value })),
            )
            .await
        {
            Ok(_) => self.reported = Some(value),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), error = %e, "pod runner: status not written")
            }
        }
    }

    fn spec(&self) -> Result<Container, Waiting> {
        let pod = self.current();
        let spec = pod.spec.as_ref();
        let containers = spec.map(|s| s.containers.clone()).unwrap_or_default();
        if containers.len() != 1 || spec.is_some_and(|s| s.init_containers.is_some()) {
            return Err(Waiting::new(
                "CreateContainerConfigError",
                "the journey's pod runner runs pods of exactly one container",
            ));
        }
        Ok(containers[0].clone())
    }

    /// Volumes, image and environment, then `docker create`.
    async fn create(&mut self) -> Result<Container, Waiting> {
        let spec = self.spec()?;
        let pod = self.current();
        let volumes = volumes::prepare(&self.shared, &pod, &self.folder).await?;
        let image = spec.image.clone().unwrap_or_default();
        let image_user = match docker_async(&[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}",
            &image,
        ])
        .await
        {
            Ok(user) => user,
            Err(_) if spec.image_pull_policy.as_deref() == Some("Never") => {
                return Err(Waiting::new(
                    "ErrImageNeverPull",
                    format!("Container image \"{image}\" is not present with pull policy of Never"),
                ));
            }
            Err(_) => {
                return Err(Waiting::new(
                    "ErrImagePull",
                    format!(
                        "image \"{image}\" is not on this node and no registry can be reached; build it locally"
                    ),
                ));
            }
        };
        let env = env::resolve(&self.shared, &pod, &spec, &self.state.pod_ip).await?;
        let mut labels: Vec<String> = self.shared.run.label_args().to_vec();
        labels.extend([
            "--label".into(),
            format!(
                "io.kuberaft.journey.pod={}/{}",
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            ),
            "--label".into(),
            format!("io.kuberaft.journey.uid={}", self.uid),
        ]);
        let args = container::create_args(
            &pod,
            &spec,
            &Inputs {
                name: &self.docker,
                labels,
                network: &self.shared.config.network.name,
                ip: &self.state.pod_ip,
                cluster_domain: &self.shared.config.cluster_domain,
                env: &env,
                volumes: &volumes,
                image_user: &image_user,
            },
        )?;
        self.shared.run.container(&self.docker);
        docker_async(&args)
            .await
            .map_err(|e| Waiting::new("CreateContainerError", e.to_string()))?;
        Ok(spec)
    }

    /// Stops the container: SIGTERM, and SIGKILL after the grace period (or at once).
    async fn stop(&self, kill: bool) {
        let grace = self
            .current()
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or(30)
            .max(0);
        let result = if kill {
            docker_async(&["kill", "--signal", "KILL", &self.docker]).await
        } else {
            docker_async(&["stop", "--time", &grace.to_string(), &self.docker]).await
        };
        if let Err(e) = result
            && !e.stderr.contains("is not running")
            && !e.stderr.contains("No such container")
        {
            tracing::warn!(container = %self.docker, error = %e, "pod runner: stop failed");
        }
    }

    /// Ends the pod's life here: the container stopped (it stays, stopped, for its logs until
    /// the run ends), its address freed, and for a deleted pod its object removed.
    async fn end(mut self, how: Interrupt, created: bool) {
        if created {
            self.stop(matches!(how, Interrupt::Killed)).await;
        }
        if matches!(how, Interrupt::Terminating) {
            if created && matches!(self.state.state, super::status::State::Running { .. }) {
                let code =
                    docker_async(&["inspect", "--format", "{{.State.ExitCode}}", &self.docker])
                        .await
                        .ok()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(-1);
                self.state.exited(code);
                self.report().await;
            }
            remove_object(&self.shared, &self.current()).await;
        }
        lock(&self.shared.ips).release(&self.state.pod_ip);
        lock(&self.shared.workers).remove(&self.uid);
    }
}

pub(super) async fn run(
    shared: Arc<Shared>,
    uid: String,
    docker: String,
    pod: watch::Receiver<Pod>,
    order: watch::Receiver<Order>,
) {
    let Some(ip) = lock(&shared.ips).allocate() else {
        tracing::error!("pod runner: the pod network has no free address");
        return;
    };
    let first = pod.borrow().clone();
    let container_name = first
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .unwrap_or_default();
    let folder = shared.files.join(&uid);
    let mut life = Life {
        state: PodState::new(ip, shared.host_ip(), container_name.0, container_name.1),
        shared,
        uid,
        docker,
        pod,
        order,
        reported: None,
        folder,
    };
    life.report().await;

    // Set up until it works (a claim not bound yet, a Secret not made yet, an image missing).
    let spec = loop {
        match life.create().await {
            Ok(spec) => break spec,
            Err(waiting) => {
                life.state.waiting(waiting);
                life.report().await;
                let pause = if life.state_reason() == "ErrImagePull" {
                    RETRY * 5
                } else {
                    RETRY
                };
                if let Some(how) = life.sleep(pause).await {
                    return life.end(how, false).await;
                }
            }
        }
    };

    let (initial, max) = life.shared.config.backoff;
    let mut backoff = Backoff::new(initial, max);
    loop {
        if let Some(how) = life.interrupt() {
            return life.end(how, true).await;
        }
        let id = match docker_async(&["start", &life.docker])
            .await
            .and(docker_async(&["inspect", "--format", "{{.Id}}", &life.docker]).await)
        {
            Ok(id) => id,
            Err(e) => {
                life.state
                    .waiting(Waiting::new("RunContainerError", e.to_string()));
                life.report().await;
                if let Some(how) = life.sleep(backoff.delay(Instant::now()).max(RETRY)).await {
                    return life.end(how, true).await;
                }
                continue;
            }
        };
        life.state.running(id);
        life.report().await;
        let (tx, mut verdicts) = mpsc::channel(8);
        let prober = probe::spawn(
            Target {
                ip: life.state.pod_ip.clone(),
                docker: life.docker.clone(),
                spec: spec.clone(),
            },
            tx,
        );
        let docker = life.docker.clone();
        let mut exit = Box::pin(async move { docker_async(&["wait", &docker]).await });
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        let code = loop {
            if let Some(how) = life.interrupt() {
                prober.abort();
                return life.end(how, true).await;
            }
            tokio::select! {
                result = &mut exit => {
                    break result.ok().and_then(|c| c.trim().parse::<i32>().ok()).unwrap_or(-1);
                }
                Some(verdict) = verdicts.recv() => {
                    match verdict {
                        Verdict::Started => life.state.started = true,
                        Verdict::Ready(ready) => life.state.set_ready(ready && life.state.started),
                        Verdict::StartupFailed(why) | Verdict::LivenessFailed(why) => {
                            tracing::info!(container = %life.docker, %why, "pod runner: probe failed; restarting");
                            life.stop(false).await;
                        }
                    }
                    life.report().await;
                }
                _ = resync.tick() => {
                    let pod = life.current();
                    if let Err(w) = volumes::refresh(&life.shared, &pod, &life.folder).await {
                        tracing::warn!(container = %life.docker, reason = %w.message, "pod runner: volumes not refreshed");
                    }
                }
                r = life.pod.changed() => if r.is_err() { prober.abort(); return life.end(Interrupt::Killed, true).await },
                r = life.order.changed() => if r.is_err() { prober.abort(); return life.end(Interrupt::Killed, true).await },
            }
        };
        prober.abort();
        life.state.exited(code);
        let delay = backoff.delay(Instant::now());
        if !delay.is_zero() {
            life.report().await;
            life.state.waiting(Waiting::new(
                "CrashLoopBackOff",
                format!(
                    "back-off {delay:?} restarting failed container={} pod={}",
                    life.state.container,
                    life.current().name_any()
                ),
            ));
        }
        life.report().await;
        if let Some(how) = life.sleep(delay).await {
            return life.end(how, true).await;
        }
        life.state.restart_count += 1;
    }
}

impl Life {
    fn state_reason(&self) -> &str {
        match &self.state.state {
            super::status::State::Waiting(w) => &w.reason,
            _ => "",
        }
    }
}
