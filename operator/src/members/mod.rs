//! Talking to the members: where a member is ([`MemberLocator`], injectable so tests can point
//! the operator at local processes), its admin API ([`admin`]), and the WatchStatus streams that
//! keep the operator's view of every member fresh ([`watch`]).

pub mod admin;
pub mod watch;

use crate::resources::admin_addr;

/// A member as the operator addresses it: pod `<cluster>-<ordinal>` in `namespace`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberRef {
    pub namespace: String,
    pub cluster: String,
    pub ordinal: i32,
}

impl MemberRef {
    pub fn pod(&self) -> String {
        crate::resources::pod_name(&self.cluster, self.ordinal)
    }

    pub fn id(&self) -> u64 {
        crate::resources::member_id(self.ordinal)
    }
}

/// Where the operator dials a member's admin port (every call of the admin API, reads too, so
/// the operator needs no access to the client port). The default is the pod's DNS name; tests
/// inject local addresses.
pub trait MemberLocator: Send + Sync + 'static {
    /// A URI such as `http://demo-0.demo-peers.default.svc.cluster.local:7003`.
    fn endpoint(&self, member: &MemberRef) -> String;
}

/// The pod's DNS name through the headless `<cluster>-peers` Service.
#[derive(Clone, Debug)]
pub struct DnsLocator {
    pub cluster_domain: String,
}

impl MemberLocator for DnsLocator {
    fn endpoint(&self, m: &MemberRef) -> String {
        format!(
            "http://{}",
            admin_addr(&m.cluster, &m.namespace, &self.cluster_domain, m.ordinal)
        )
    }
}

impl<F> MemberLocator for F
where
    F: Fn(&MemberRef) -> String + Send + Sync + 'static,
{
    fn endpoint(&self, member: &MemberRef) -> String {
        self(member)
    }
}
