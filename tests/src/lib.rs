//! Test support for kuberaft: a harness of real member processes, the Docker
//! end-to-end harness, client workloads and the linearizability checker.

pub mod cluster;
pub mod docker;
pub mod linearizability;
pub mod prometheus;
pub mod workload;
