//! The `docker` command line: every call the harness makes to the engine goes
//! through here, so an error always names the command that failed and what
//! the engine said.

use std::fmt;
use std::process::{Command, Stdio};

/// A `docker` command that did not succeed.
#[derive(Debug)]
pub struct DockerError {
    pub args: Vec<String>,
    pub status: Option<i32>,
    pub stderr: String,
}

impl fmt::Display for DockerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`docker {}` failed ({}): {}",
            self.args.join(" "),
            self.status
                .map_or_else(|| "no exit status".to_string(), |s| format!("exit {s}")),
            self.stderr.trim()
        )
    }
}

impl std::error::Error for DockerError {}

/// Runs `docker ARGS…` and returns its standard output, trimmed.
pub fn docker<S: AsRef<str>>(args: &[S]) -> Result<String, DockerError> {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    let out = Command::new("docker")
        .args(&args)
        .stdin(Stdio::null())
        .output();
    outcome(args, out)
}

/// [`docker`] for async code: the engine's answer is awaited, not blocked on.
pub async fn docker_async<S: AsRef<str>>(args: &[S]) -> Result<String, DockerError> {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    let out = tokio::process::Command::new("docker")
        .args(&args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    outcome(args, out)
}

/// Standard output of a finished `docker` command, or what went wrong.
fn outcome(
    args: Vec<String>,
    out: std::io::Result<std::process::Output>,
) -> Result<String, DockerError> {
    let out = out.map_err(|e| DockerError {
        args: args.clone(),
        status: None,
        stderr: format!("cannot run the docker CLI: {e}"),
    })?;
    if !out.status.success() {
        return Err(DockerError {
            args,
            status: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Like [`docker`], for calls a test cannot go on without.
pub fn must<S: AsRef<str>>(args: &[S]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Both output streams of `docker ARGS…`, whatever its exit status (for
/// `docker logs`, which replays a container's stderr on its own stderr).
pub fn docker_combined<S: AsRef<str>>(args: &[S]) -> String {
    match Command::new("docker")
        .args(args.iter().map(AsRef::as_ref))
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&out.stderr));
            s
        }
        Err(e) => format!("cannot run the docker CLI: {e}"),
    }
}

/// Set to `1` to skip the Docker suite on purpose.
pub const SKIP_VAR: &str = "KUBERAFT_SKIP_DOCKER";

/// Whether the Docker suite should run: true when an engine answers. Without one, or with
/// `KUBERAFT_SKIP_DOCKER=1`, it says SKIPPED and why, and returns false; where skips are
/// failures (CI, [`crate::skip`]) it fails instead, so CI can never pass by testing nothing.
pub fn engine_available() -> bool {
    const SUITE: &str = "the Docker end-to-end suite";
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        crate::skip::skip(SUITE, &format!("{SKIP_VAR}=1 is set"));
        return false;
    }
    match docker(&["version", "--format", "{{.Server.Version}}"]) {
        Ok(_) => true,
        Err(e) => {
            crate::skip::skip(
                SUITE,
                &format!(
                    "no Docker engine answers ({e}); start one (`service docker start`), or run tests/run, which does"
                ),
            );
            false
        }
    }
}
