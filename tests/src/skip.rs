//! One policy for tests that need something a machine may not have (a Docker engine, Chromium,
//! the Kubernetes tools): on a person's machine they say `SKIPPED` and why; where every tier
//! must run (CI sets `KUBERAFT_NO_SKIP=1`) a skip is a failure.

use std::io::Write as _;

/// Set to `1` where every tier must run: a tier that would be skipped fails instead.
pub const NO_SKIP_VAR: &str = "KUBERAFT_NO_SKIP";

/// Whether a skip must fail the run.
pub fn skips_are_failures() -> bool {
    std::env::var(NO_SKIP_VAR).is_ok_and(|v| v == "1")
}

/// Reports that `what` cannot run, and why. Returns (the caller then skips), or panics when
/// skips are failures.
pub fn skip(what: &str, why: &str) {
    let line = format!("SKIPPED {what}: {why}");
    if skips_are_failures() {
        panic!("{line} ({NO_SKIP_VAR}=1: every tier must run here)");
    }
    // Straight to stderr: the test harness captures println!, and this belongs in the log.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
