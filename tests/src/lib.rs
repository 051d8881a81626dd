//! Test support for kuberaft: a harness of real member processes.

pub mod cluster;
pub mod prometheus;
