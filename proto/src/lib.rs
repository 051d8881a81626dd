//! kuberaft's wire protocol, generated from the `.proto` files in `proto/`.
//!
//! - [`raft`] (`kuberaft.raft.v1`): between members.
//! - [`kv`] (`kuberaft.kv.v1`): the key-value API for clients.
//! - [`admin`] (`kuberaft.admin.v1`): status and membership.

/// The generated modules, nested as the protobuf packages are (generated code
/// refers across packages with `super::`).
pub mod kuberaft {
    pub mod raft {
        pub mod v1 {
            tonic::include_proto!("kuberaft.raft.v1");
        }
    }
    pub mod kv {
        pub mod v1 {
            tonic::include_proto!("kuberaft.kv.v1");
        }
    }
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("kuberaft.admin.v1");
        }
    }
}

pub use kuberaft::admin::v1 as admin;
pub use kuberaft::kv::v1 as kv;
pub use kuberaft::raft::v1 as raft;

/// The encoded descriptors of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kuberaft_descriptor");
