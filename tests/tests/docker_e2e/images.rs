//! The images themselves: built from `deploy/docker/*.Dockerfile`'s runtime
//! stage, small, unprivileged, and runnable with no shell in them.

use kuberaft_tests::docker::cli::{DockerError, docker, docker_combined};
use kuberaft_tests::docker::image::{self, workspace_has_binary};
use kuberaft_tests::docker::report;
use kuberaft_tests::docker::resources::Run;

use crate::support::turn;

const MB: u64 = 1_000_000;

fn mb(bytes: u64) -> f64 {
    bytes as f64 / MB as f64
}

/// `docker run` of a throwaway container of `run` (removed with it); its
/// output, or the error.
fn run_once(run: &Run, what: &str, args: &[&str]) -> Result<String, DockerError> {
    let name = run.name_of(what);
    run.container(&name);
    let mut all = vec!["run".to_string(), "--name".into(), name];
    all.extend(run.label_args());
    all.extend(args.iter().map(|a| a.to_string()));
    docker(&all)
}

#[test]
fn the_node_image_is_small_unprivileged_and_starts_a_member() {
    let Some(_turn) = turn() else { return };
    let run = Run::new();
    let img = image::build(&run, "node.Dockerfile", "node");
    report(&format!(
        "node image: {:.1} MB here ({:.1} MB of its own layers on a {:.1} MB local base), \
         about {:.1} MB on distroless/cc-debian12; user {}, entrypoint {:?}, ports {:?}",
        mb(img.size_bytes),
        mb(img.layers_bytes),
        mb(img.size_bytes - img.layers_bytes),
        mb(img.size_on_distroless()),
        img.user,
        img.entrypoint,
        img.exposed_ports
    ));
    // The budget is for the image users get, on the distroless base.
    assert!(
        img.size_on_distroless() <= 40 * MB,
        "the node image would be about {:.1} MB on distroless/cc-debian12 \
         ({:.1} MB of its own layers); the budget is 40 MB",
        mb(img.size_on_distroless()),
        mb(img.layers_bytes)
    );
    assert_eq!(img.user, "65532:65532");
    assert_eq!(img.entrypoint, vec!["/usr/local/bin/kuberaft-node"]);
    assert_eq!(
        img.exposed_ports,
        vec!["7000/tcp", "7001/tcp", "7002/tcp", "7003/tcp"]
    );

    // The binary runs on the base (its libraries are all there).
    let version =
        run_once(&run, "version", &[&img.name, "--version"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(version.starts_with("kuberaft-node "), "{version}");
    let raftctl = run_once(
        &run,
        "raftctl",
        &[
            "--entrypoint",
            "/usr/local/bin/raftctl",
            &img.name,
            "--version",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(raftctl.starts_with("raftctl "), "{raftctl}");

    // No shell to exec into: the image holds only what the member needs.
    let shell = run_once(
        &run,
        "shell",
        &["--entrypoint", "/bin/sh", &img.name, "-c", "true"],
    );
    assert!(shell.is_err(), "the image has a shell");

    // Misconfiguration is one line that names the flag.
    let err = run_once(
        &run,
        "bad-config",
        &["--env", "KUBERAFT_NAME=demo", &img.name],
    )
    .expect_err("a name without an ordinal is refused");
    let logs = docker_combined(&["logs", &run.name_of("bad-config")]);
    assert!(logs.contains("--name"), "{err}\n{logs}");
}

#[test]
fn the_operator_image_builds_from_its_dockerfile() {
    let Some(_turn) = turn() else { return };
    if !workspace_has_binary("kuberaft-operator", "kuberaft-operator") {
        report(
            "NOT TESTED: the operator image — the workspace has no kuberaft-operator \
             binary yet (deploy/docker/operator.Dockerfile is written for it)",
        );
        return;
    }
    let run = Run::new();
    let img = image::build(&run, "operator.Dockerfile", "operator");
    report(&format!(
        "operator image: {:.1} MB here, about {:.1} MB on distroless/cc-debian12; user {}, entrypoint {:?}",
        mb(img.size_bytes),
        mb(img.size_on_distroless()),
        img.user,
        img.entrypoint
    ));
    assert_eq!(img.user, "65532:65532");
    assert_eq!(img.entrypoint, vec!["/usr/local/bin/kuberaft-operator"]);
    let crd = run_once(&run, "crd", &[&img.name, "crd"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(crd.contains("kind: CustomResourceDefinition"), "{crd}");
    assert!(image::exists(&img.name));
}
