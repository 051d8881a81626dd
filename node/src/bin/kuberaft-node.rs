//! kuberaft-node: one member of a kuberaft Raft cluster.

use clap::Parser;
use kuberaft_node::config::{LogFormat, NodeArgs};

#[derive(Parser)]
#[command(
    name = "kuberaft-node",
    version,
    about = "A member of a kuberaft Raft cluster: a replicated key-value store over gRPC"
)]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cfg = match cli.node.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kuberaft-node: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    kuberaft_node::telemetry::init(cfg.log_format == LogFormat::Json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kuberaft-node: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kuberaft_node::server::run::run(cfg)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, for people and for `kubectl logs`.
            eprintln!("kuberaft-node: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
