//! The README's kind walkthrough as a test, for a machine with a Kubernetes cluster that runs
//! the operator (`deploy/kind/up.sh` makes one). It runs only when `KUBERAFT_E2E_KIND=1`, and
//! otherwise says that it was skipped and why.
//!
//! Through `kubectl` (the current context; `KUBERAFT_E2E_NAMESPACE`, default `default`): apply a
//! 3-member RaftCluster, wait for a leader, write through one member and read through another,
//! delete the leader's pod, wait for a new leader in a higher term, read the value again, scale to
//! 5 and back to 3, and delete the cluster.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const CLUSTER: &str = "e2e-kind";

fn main() -> ExitCode {
    if std::env::var("KUBERAFT_E2E_KIND").as_deref() != Ok("1") {
        println!(
            "kind e2e not run: it is opt-in, for a machine with a kind cluster (deploy/kind/up.sh, then KUBERAFT_E2E_KIND=1 tests/run --test kind_e2e); the journey tier (kube_journey) runs the same steps on a real API server everywhere"
        );
        return ExitCode::SUCCESS;
    }
    let namespace = std::env::var("KUBERAFT_E2E_NAMESPACE").unwrap_or_else(|_| "default".into());
    let e2e = KindE2e { namespace };
    let outcome = e2e.journey();
    // Clean up whatever happened; the volumes are deleted with the cluster (retention Delete).
    let _ = e2e.kubectl(&[
        "delete",
        "raftcluster",
        CLUSTER,
        "--ignore-not-found",
        "--wait=false",
    ]);
    match outcome {
        Ok(()) => {
            println!("kind e2e: 1 passed, 0 failed");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("kind e2e: FAILED: {why}\nkind e2e: 0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

struct KindE2e {
    namespace: String,
}

impl KindE2e {
    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("kubectl")
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run kubectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn status(&self, field: &str) -> String {
        self.kubectl(&[
            "get",
            "raftcluster",
            CLUSTER,
            "-o",
            &format!("jsonpath={{.status.{field}}}"),
        ])
        .unwrap_or_default()
    }

    fn wait(
        &self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let start = Instant::now();
        while !done() {
            if start.elapsed() > limit {
                let state = self.kubectl(&["get", "raftcluster", CLUSTER, "-o", "yaml"]);
                return Err(format!("not within {limit:?}: {what}\n{state:?}"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        println!("kind e2e: {what} ({:.1?})", start.elapsed());
        Ok(())
    }

    fn raftctl(&self, pod: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["exec", pod, "--", "raftctl"];
        all.extend_from_slice(args);
        self.kubectl(&all)
    }

    fn journey(&self) -> Result<(), String> {
        let manifest = format!(
            "apiVersion: kuberaft.io/v1alpha1\nkind: RaftCluster\nmetadata:\n  name: {CLUSTER}\nspec:\n  replicas: 3\n  storage:\n    retention:\n      whenDeleted: Delete\n      whenScaled: Delete\n"
        );
        let path = std::env::temp_dir().join("kuberaft-kind-e2e.yaml");
        std::fs::write(&path, manifest).map_err(|e| e.to_string())?;
        self.kubectl(&["apply", "-f", &path.to_string_lossy()])?;
        self.wait("a leader and 3/3 ready", Duration::from_secs(300), || {
            !self.status("leader").is_empty() && self.status("ready") == "3/3"
        })?;
        let leader = self.status("leader");
        let term: i64 = self.status("term").parse().unwrap_or(0);
        self.raftctl(&format!("{CLUSTER}-0"), &["put", "journey", "kind"])?;
        let read = self.raftctl(&format!("{CLUSTER}-2"), &["get", "journey"])?;
        if read != "kind" {
            return Err(format!("read {read:?} through {CLUSTER}-2, wrote \"kind\""));
        }
        self.kubectl(&["delete", "pod", &leader, "--wait=false"])?;
        self.wait(
            "a new leader in a higher term",
            Duration::from_secs(60),
            || {
                let now = self.status("leader");
                let t: i64 = self.status("term").parse().unwrap_or(0);
                !now.is_empty() && t > term
            },
        )?;
        self.wait("3/3 ready again", Duration::from_secs(300), || {
            self.status("ready") == "3/3"
        })?;
        let read = self.raftctl(&format!("{CLUSTER}-1"), &["get", "journey"])?;
        if read != "kind" {
            return Err(format!("after the failover, read {read:?}"));
        }
        self.kubectl(&["scale", "raftcluster", CLUSTER, "--replicas=5"])?;
        self.wait("5/5 ready", Duration::from_secs(300), || {
            self.status("ready") == "5/5"
        })?;
        self.kubectl(&["scale", "raftcluster", CLUSTER, "--replicas=3"])?;
        self.wait("back to 3/3", Duration::from_secs(300), || {
            self.status("ready") == "3/3" && self.status("replicas") == "3"
        })?;
        Ok(())
    }
}
