//! `kuberaft-operator`: `crd` prints the RaftCluster CRD; `run` runs the controller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use kuberaft_operator::controller;
use kuberaft_operator::crd::crd_yaml;
use kuberaft_operator::error::{Error, Result};
use kuberaft_operator::health::Health;
use kuberaft_operator::http;
use kuberaft_operator::lease::{self, LeaseConfig};
use kuberaft_operator::members::DnsLocator;
use kuberaft_operator::members::watch::MemberWatches;
use kuberaft_operator::metrics::{Exporter, Metrics};
use kuberaft_operator::reconcile::Context;
use kuberaft_operator::resources::BuildConfig;
use kuberaft_operator::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "kuberaft-operator",
    version,
    about = "Runs RaftClusters on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the RaftCluster CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Address of /livez, /readyz and /metrics.
    #[arg(
        long,
        env = "KUBERAFT_OPERATOR_HTTP_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    http_listen: SocketAddr,
    /// Log format.
    #[arg(
        long,
        env = "KUBERAFT_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// The Kubernetes cluster's DNS domain, used in the members' addresses.
    #[arg(long, env = "KUBERAFT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Image of kuberaft-node for clusters that set no spec.image.
    #[arg(long, env = "KUBERAFT_NODE_IMAGE", default_value = concat!("kuberaft-node:", env!("CARGO_PKG_VERSION")))]
    node_image: String,
    /// Elect one active replica through a coordination.k8s.io Lease.
    #[arg(
        long,
        env = "KUBERAFT_OPERATOR_LEADER_ELECTION",
        default_value_t = false
    )]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(
        long,
        env = "KUBERAFT_OPERATOR_LEASE_NAME",
        default_value = "kuberaft-operator"
    )]
    lease_name: String,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(
        long,
        env = "KUBERAFT_OPERATOR_NAMESPACE",
        default_value = "kuberaft-system"
    )]
    lease_namespace: String,
    /// This replica's name, for the Lease and Events (the pod name).
    #[arg(
        long,
        env = "KUBERAFT_OPERATOR_POD_NAME",
        default_value = "kuberaft-operator"
    )]
    instance: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => crd_yaml().map(|yaml| print!("{yaml}")).map_err(Error::from),
        Command::Run(args) => {
            telemetry::init(args.log_format);
            match tokio::runtime::Runtime::new() {
                Ok(rt) => rt.block_on(run(args)),
                Err(e) => Err(Error::Fatal(format!("cannot start the async runtime: {e}"))),
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "kuberaft-operator stopped");
            eprintln!("kuberaft-operator: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| Error::KubeConfig(e.to_string()))?;
    let health = Health::default();
    let metrics = Metrics::default();
    let exporter = Arc::new(Exporter::new(&metrics));
    let server = tokio::spawn(http::serve(args.http_listen, health.clone(), exporter));

    let lease_cfg = args.leader_election.then(|| {
        LeaseConfig::new(
            args.lease_name.clone(),
            args.lease_namespace.clone(),
            args.instance.clone(),
        )
    });
    let lease_lost = match &lease_cfg {
        Some(cfg) => {
            lease::acquire(&client, cfg).await?;
            Some(tokio::spawn(lease::hold(client.clone(), cfg.clone())))
        }
        None => None,
    };
    let stop_renewing = lease_lost
        .as_ref()
        .map(tokio::task::JoinHandle::abort_handle);
    let lease_client = client.clone();

    let (trigger_tx, trigger_rx) = tokio::sync::mpsc::channel(1024);
    let locator = Arc::new(DnsLocator {
        cluster_domain: args.cluster_domain.clone(),
    });
    let watches = Arc::new(MemberWatches::new(locator, trigger_tx, health.clone()));
    let (stores, streams) = controller::owned_stores(&client);
    let ctx = Arc::new(Context::new(
        client,
        BuildConfig {
            cluster_domain: args.cluster_domain,
            default_image: args.node_image,
        },
        watches,
        metrics,
        args.instance,
        Some(stores),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut controller = tokio::spawn(controller::run(
        ctx,
        streams,
        trigger_rx,
        health.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));

    let fatal = {
        let health = health.clone();
        async move {
            loop {
                if let Some(why) = health.fatal() {
                    return why;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let lease = async move {
        match lease_lost {
            Some(task) => match task.await {
                Ok(error) => error,
                Err(e) => Error::Fatal(format!("the lease task failed: {e}")),
            },
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        why = fatal => Err(Error::Fatal(why)),
        error = lease => Err(error),
        result = server => match result {
            Ok(Ok(())) => Err(Error::Fatal("the HTTP server stopped".to_string())),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(Error::Fatal(format!("the HTTP server failed: {e}"))),
        },
        result = &mut controller => match result {
            Ok(()) => Err(Error::Fatal("the controller stopped".to_string())),
            Err(e) => Err(Error::Fatal(format!("the controller failed: {e}"))),
        },
    };
    health.set_ready(false);
    let _ = stop_tx.send(());
    // Let in-flight reconciles finish, briefly.
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    // Only now, when this replica no longer acts, may a standby take over at once.
    if let Some(renewing) = stop_renewing {
        renewing.abort();
    }
    if let (Ok(()), Some(cfg)) = (&outcome, &lease_cfg) {
        lease::release(lease_client, cfg).await;
    }
    outcome
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
