//! kuberaft-node: one member of a kuberaft Raft cluster.

use clap::Parser;
use kuberaft_node::config::{LogFormat, NodeArgs};

/// mimalloc rather than glibc's malloc: under load a member allocates and
/// frees small buffers on many threads at a high rate, and glibc's allocator
/// took about a tenth of the machine's CPU (perf, five members under
/// `cargo bench --bench lifecycle`). With it, `raftctl bench --clients 64`
/// went from 7,765–8,226 to 8,841–9,520 writes/s on 2026-11-26 (three
/// members on one 2-core machine). Built without transparent huge pages
/// (`no_thp`): with them an idle member's resident memory was 60 MiB
/// instead of 16.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// Whether this process was started under the name `raftctl`.
fn invoked_as_raftctl() -> bool {
    std::env::args_os()
        .next()
        .and_then(|argv0| {
            std::path::Path::new(&argv0)
                .file_name()
                .map(|n| n == "raftctl")
        })
        .unwrap_or(false)
}

fn main() -> std::process::ExitCode {
    // One binary, two programs: the node image ships `raftctl` as a link to
    // this file. The two share nearly all their code, and a second copy cost
    // 7 MB of the image's 40 MB budget.
    if invoked_as_raftctl() {
        return kuberaft_node::cli::main();
    }
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
