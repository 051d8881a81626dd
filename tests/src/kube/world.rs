//! Everything the journey runs on, started in order and stopped in reverse: the Docker network,
//! the control plane on its gateway, the pod runner, and the command lines.

use std::sync::Arc;
use std::time::Duration;

use super::cli::Cli;
use super::control_plane::ControlPlane;
use super::runner::{PodRunner, RunnerConfig};
use super::tools::Tools;
use crate::docker::cluster::Network;
use crate::docker::resources::Run;

/// The Node's name in `kubectl get nodes`.
pub const NODE: &str = "journey-node";

pub struct World {
    // Field order is drop order: the runner stops before the API server it talks to.
    pub runner: PodRunner,
    pub plane: ControlPlane,
    pub cli: Cli,
    pub network: Network,
    service_ca: tokio::task::JoinHandle<()>,
    _helm_home: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        self.service_ca.abort();
    }
}

impl World {
    /// Starts a Kubernetes on `run`'s new network. `backoff` is the runner's CrashLoopBackOff
    /// (first wait, cap).
    pub async fn start(
        tools: &Tools,
        run: Arc<Run>,
        backoff: (Duration, Duration),
    ) -> Result<World, String> {
        let network = Network::create(&run, "pods", 27);
        let gateway = format!("{}.1", network.prefix);
        let plane = ControlPlane::start(tools, &gateway).await?;
        let service_ca = super::service_ca::publish(plane.client.clone(), plane.ca_pem.clone());
        let runner = PodRunner::start(
            plane.client.clone(),
            RunnerConfig {
                node_name: NODE.to_string(),
                network: network.clone(),
                api_host: plane.host.clone(),
                api_port: plane.port,
                cluster_domain: "cluster.local".to_string(),
                backoff,
            },
            run,
        )
        .await?;
        let helm_home = tempfile::Builder::new()
            .prefix("kuberaft-helm-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let cli = Cli::new(tools, &plane.kubeconfig, helm_home.path());
        Ok(World {
            runner,
            plane,
            cli,
            network,
            service_ca,
            _helm_home: helm_home,
        })
    }
}
