//! raftctl: the command-line client of a kuberaft cluster (see `raftctl --help`).

/// The member's allocator (see `kuberaft-node.rs`): `raftctl bench` at 64
/// clients spent about a tenth of its CPU in glibc's malloc and free (perf,
/// 2026-11-26), CPU the members it measures share on a small machine. The
/// image's raftctl is a link to kuberaft-node and has it already.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kuberaft_node::cli::main()
}
