//! raftctl: the command-line client of a kuberaft cluster (see `raftctl --help`).

fn main() -> std::process::ExitCode {
    kuberaft_node::cli::main()
}
