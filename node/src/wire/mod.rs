//! Conversions between the core's types (`crate::raft`) and the protocol's
//! (`kuberaft_proto::raft`, package `kuberaft.raft.v1`).
//!
//! The core's types are the truth; the protocol's are what crosses a socket
//! or lands on disk. Going out cannot fail for data (every core value has a
//! protocol form); coming in can, because a peer, a disk or a future version
//! may hand us something the core has no meaning for. Such input is refused
//! with a [`WireError`] that names the message and the field, never turned
//! into a panic or silently into a default.
//!
//! - [`log`]: entries, membership changes, members, snapshot metadata and the
//!   hard state (used by the transport and by `storage/`).
//! - [`message`]: a core [`crate::raft::Message`] ↔ the request and response
//!   messages of the `Raft` gRPC service.

pub mod log;
pub mod message;

pub use message::{PeerRequest, PeerResponse, Rpc};

/// Why a protocol message cannot become a core value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("malformed {message}: {field} is missing")]
    Missing {
        message: &'static str,
        field: &'static str,
    },
    #[error("malformed {message}: {field} has the value {value}, which this version does not know")]
    UnknownEnum {
        message: &'static str,
        field: &'static str,
        value: i32,
    },
    #[error("malformed {message}: {why}")]
    Invalid { message: &'static str, why: String },
    #[error(
        "request for cluster {got:?} reached a member of cluster {expected:?}; check the peer addresses"
    )]
    WrongCluster { expected: String, got: String },
    #[error(
        "request for member {to} reached member {me}; a peer address points at the wrong member"
    )]
    WrongMember { to: u64, me: u64 },
    #[error("a {body} message cannot be sent as {rpc}")]
    NotThisRpc {
        body: &'static str,
        rpc: &'static str,
    },
}
