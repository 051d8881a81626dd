//! kuberaft-operator: the `RaftCluster` resource and the controller that runs it on Kubernetes.
//!
//! The reconcile pipeline is fixed: read (the RaftCluster, its StatefulSet and pods, and what the
//! members report through their admin API) → decide (pure: [`resources`] builds every object,
//! [`scaling`] picks the next membership step, [`status`] computes the status) → apply (server-side
//! apply under one field manager) → report (status, leader label, events).

pub mod certs;
pub mod controller;
pub mod crd;
pub mod error;
pub mod events;
pub mod health;
pub mod http;
pub mod lease;
pub mod members;
pub mod metrics;
pub mod observe;
pub mod reconcile;
pub mod resources;
pub mod rollout;
pub mod scaling;
pub mod status;
pub mod telemetry;
pub mod tls;

pub use error::{Error, Result};
