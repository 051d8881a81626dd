//! A deterministic simulator for kuberaft's Raft core.
//!
//! Real `RawNode`s run on a virtual clock (one tick per virtual millisecond)
//! over a simulated network and simulated disks, driven by one seeded random
//! generator, so any run can be replayed exactly from its seed. Faults are
//! injected as a real deployment would suffer them: lost, duplicated,
//! delayed and reordered messages; partitions, symmetric or one-way, that
//! come and go; crashes (also between `ready()` and persisting it) and
//! restarts from what was persisted; paused members and skewed clocks. At the
//! same time clients write and read, the operator changes the membership one
//! server at a time, leaders hand over leadership, and members compact their
//! logs, so lagging members need InstallSnapshot to catch up.
//!
//! After every input a member handles and every `Ready` it hands out, the
//! [`checker`] asserts Raft's safety properties; after the faults heal, the
//! [`run`] requires the cluster to settle within a deadline.
//!
//! - [`state_machine`]: the toy key-value store and its history hash.
//! - [`disk`]: what a member persisted; what a crash leaves.
//! - [`node`]: one member and the `Ready` contract.
//! - [`network`]: messages in flight and network faults.
//! - [`cluster`]: the virtual clock and the members' turns.
//! - [`checker`], [`config_model`]: the invariants.
//! - [`faults`], [`operator`], [`client`]: what happens to and around the cluster.
//! - [`run`]: one seeded run, start to verdict.
//! - [`trace`]: what happened, for the person reading a failure.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod config_model;
pub mod disk;
pub mod faults;
pub mod network;
pub mod node;
pub mod operator;
pub mod run;
pub mod state_machine;
pub mod trace;

pub use checker::{Checker, Stats, Violation};
pub use cluster::{Cluster, ClusterOptions};
pub use network::NetFaults;
pub use run::{Outcome, RunSpec, run};
