//! kuberaft-node: a Raft member.
//!
//! - [`raft`]: the pure consensus core (no I/O).
//! - [`storage`], [`kv`], [`disk`]: the durable log and the state machine.
//! - [`wire`]: core types ↔ protobuf.
//! - [`transport`]: peer messages over gRPC.
//! - [`server`]: the event loop and services around the core.
//! - [`config`]: flags and environment.
//! - [`cli`]: raftctl, the command-line client.

pub mod cli;
pub mod config;
pub mod disk;
pub mod kv;
pub mod metrics;
pub mod raft;
pub mod rate;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod ui;
pub mod wire;
