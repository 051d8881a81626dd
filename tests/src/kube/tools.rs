//! Where the Kubernetes tools are, or why a tier cannot run.
//!
//! `tests/run` unpacks `../shared/tools/k8s` into `target/k8s-tools` and names the folder in
//! `KUBERAFT_K8S_TOOLS`; etcd is Debian's `etcd-server` on PATH (or `ETCD`), kubectl is on PATH
//! (or `KUBECTL`). When something is missing a tier says `SKIPPED` and why ([`crate::skip`]).

use std::path::{Path, PathBuf};

/// The folder with kube-apiserver, kube-controller-manager and helm.
pub const TOOLS_VAR: &str = "KUBERAFT_K8S_TOOLS";

#[derive(Clone, Debug)]
pub struct Tools {
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub helm: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
}

/// The repository's root (this crate is `tests/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `name` in the folders of PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A program named by `var`, else found on PATH.
fn program(var: &str, name: &str, hint: &str) -> Result<PathBuf, String> {
    match std::env::var_os(var) {
        Some(path) => {
            let path = PathBuf::from(path);
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!("{var}={} is not a file", path.display()))
            }
        }
        None => on_path(name).ok_or_else(|| format!("{name} is not on PATH ({hint})")),
    }
}

impl Tools {
    /// Every tool the journey needs, or what is missing and how to get it.
    pub fn find() -> Result<Tools, String> {
        let dir = match std::env::var_os(TOOLS_VAR) {
            Some(d) => PathBuf::from(d),
            None => repo_root().join("target/k8s-tools"),
        };
        let in_dir = |name: &str| -> Result<PathBuf, String> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "{} has no {name} (tests/run unpacks ../shared/tools/k8s there; or set {TOOLS_VAR})",
                    dir.display()
                ))
            }
        };
        Ok(Tools {
            kube_apiserver: in_dir("kube-apiserver")?,
            kube_controller_manager: in_dir("kube-controller-manager")?,
            helm: in_dir("helm")?,
            etcd: program("ETCD", "etcd", "apt-get install etcd-server")?,
            kubectl: program("KUBECTL", "kubectl", "install kubectl 1.32")?,
        })
    }
}
