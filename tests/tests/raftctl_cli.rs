//! raftctl as a user meets it without a cluster: bad usage and unreachable
//! endpoints give one line that says what to do, and the documented exit
//! status.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use kuberaft_tests::cluster::{build_binary, free_port};

fn raftctl_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_binary("raftctl")).clone()
}

fn raftctl(args: &[&str]) -> Output {
    Command::new(raftctl_bin())
        .args(args)
        .env_remove("KUBERAFT_ENDPOINTS")
        .output()
        .expect("run raftctl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    let o = raftctl(&["get"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("<KEY>"), "{}", stderr(&o));

    let o = raftctl(&["--dial-timeout", "soon", "get", "k"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--dial-timeout"), "{}", stderr(&o));

    let o = raftctl(&["--endpoints", "no-port", "get", "k"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        "raftctl: --endpoints: \"no-port\" is not host:port (e.g. 127.0.0.1:7001)"
    );

    let o = raftctl(&["--hex", "--endpoints", "127.0.0.1:1", "get", "xyz"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not hex"), "{}", stderr(&o));
}

#[test]
fn unreachable_endpoints_are_named_with_what_to_do() {
    let (a, b) = (free_port(), free_port());
    let endpoints = format!("127.0.0.1:{a},127.0.0.1:{b}");
    for args in [
        vec!["--endpoints", &endpoints, "put", "k", "v"],
        vec!["--endpoints", &endpoints, "get", "k"],
        vec!["--endpoints", &endpoints, "status"],
    ] {
        let o = raftctl(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert_eq!(e.lines().count(), 1, "one line: {e}");
        assert!(e.starts_with("raftctl: cannot reach any endpoint"), "{e}");
        assert!(
            e.contains(&format!("127.0.0.1:{a}: connection refused")),
            "{e}"
        );
        assert!(
            e.contains(&format!("127.0.0.1:{b}: connection refused")),
            "{e}"
        );
        assert!(e.contains("KUBERAFT_ENDPOINTS"), "{e}");
    }
}

#[test]
fn the_environment_names_the_endpoints() {
    let port = free_port();
    let o = Command::new(raftctl_bin())
        .args(["get", "k"])
        .env("KUBERAFT_ENDPOINTS", format!("127.0.0.1:{port}"))
        .output()
        .expect("run raftctl");
    assert!(
        stderr(&o).contains(&format!("127.0.0.1:{port}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn dev_without_a_node_binary_says_how_to_build_it() {
    let o = raftctl(&["dev", "--node-binary", "/nonexistent/kuberaft-node"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cargo build --release --bin kuberaft-node"),
        "{}",
        stderr(&o)
    );
}
