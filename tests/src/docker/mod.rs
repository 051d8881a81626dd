//! The Docker end-to-end harness: `kuberaft-node` containers built from
//! `deploy/docker/node.Dockerfile`, arranged on a Docker network as the
//! operator's StatefulSet arranges pods, and the faults done to them.

pub mod cli;
pub mod cluster;
pub mod dockerfile;
pub mod image;
pub mod nemesis;
pub mod resources;

use std::io::Write as _;

/// Prints a line that shows in the test output even when the test passes
/// (the test harness captures `println!`, not writes to the real stderr):
/// the suite's numbers belong in CI's log.
pub fn report(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}
