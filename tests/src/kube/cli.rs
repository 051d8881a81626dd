//! `kubectl` and `helm`, run as a user runs them, against the journey's API server.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::tools::Tools;

/// The two command lines with the admin's kubeconfig, and helm's state in a folder of its own.
#[derive(Clone, Debug)]
pub struct Cli {
    kubectl: PathBuf,
    helm: PathBuf,
    kubeconfig: PathBuf,
    helm_home: PathBuf,
}

impl Cli {
    pub fn new(tools: &Tools, kubeconfig: &Path, helm_home: &Path) -> Cli {
        Cli {
            kubectl: tools.kubectl.clone(),
            helm: tools.helm.clone(),
            kubeconfig: kubeconfig.to_path_buf(),
            helm_home: helm_home.to_path_buf(),
        }
    }

    fn command(&self, program: &Path, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(program);
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", self.helm_home.join("config"))
            .env("HELM_DATA_HOME", self.helm_home.join("data"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    async fn output(&self, program: &Path, args: &[&str]) -> Result<String, String> {
        let name = program
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let out = self
            .command(program, args)
            .output()
            .await
            .map_err(|e| format!("cannot run {name}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`{name} {}` failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        }
    }

    /// `kubectl ARGS`: its standard output, or what it said when it failed.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.output(&self.kubectl, args).await
    }

    /// `helm ARGS`.
    pub async fn helm(&self, args: &[&str]) -> Result<String, String> {
        self.output(&self.helm, args).await
    }

    /// Starts `kubectl ARGS` without waiting for it (`kubectl delete pod` waits until the pod
    /// is gone; the journey watches status meanwhile).
    pub fn spawn_kubectl(&self, args: &[&str]) -> Result<tokio::process::Child, String> {
        self.command(&self.kubectl, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run kubectl: {e}"))
    }
}
