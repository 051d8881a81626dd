//! One-shot calls to a member's `kuberaft.admin.v1.Admin` service: membership changes and
//! leadership transfer, each with a deadline, since a vanished pod often sends no TCP reset.

use std::time::Duration;

use kuberaft_proto::admin::admin_client::AdminClient;
use kuberaft_proto::admin::{
    AddMemberRequest, PromoteMemberRequest, RemoveMemberRequest, StatusRequest, StatusResponse,
    TransferLeadershipRequest,
};
use kuberaft_proto::raft::{Member, Suffrage};
use tonic::transport::{Channel, Endpoint};

use super::{MemberLocator, MemberRef};
use crate::error::{Error, Result};
use crate::resources::{client_addr, peer_addr};
use crate::tls::MemberTls;

/// How long one admin call may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dialling a member may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A channel to `endpoint` with the deadlines and keep-alives every member connection needs.
pub fn endpoint(uri: &str) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(uri.to_string())
        .map_err(|e| Error::InvalidEndpoint {
            endpoint: uri.to_string(),
            message: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true))
}

/// A channel to the member at `uri` (`http://host:port`, as a [`super::MemberLocator`] gives
/// it): plaintext, or TLS with the cluster's member certificate when `tls` is set (never a
/// fallback to plaintext). Connected eagerly without TLS; with TLS the handshake happens on the
/// first request, whose deadline bounds it.
pub async fn connect(uri: &str, tls: Option<&MemberTls>) -> Result<Channel, String> {
    let Some(tls) = tls else {
        let endpoint = endpoint(uri).map_err(|e| e.to_string())?;
        return tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect())
            .await
            .map_err(|_| format!("connecting to {uri} timed out"))?
            .map_err(|e| format!("cannot connect to {uri}: {e}"));
    };
    let addr = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
        .unwrap_or(uri);
    kuberaft_node::transport::channel::lazy_channel_with(
        addr,
        CONNECT_TIMEOUT,
        Some(tls.client.clone()),
    )
    .map_err(|e| format!("cannot dial {addr} with TLS (Secret {}): {e}", tls.secret))
}

/// Makes membership changes through one member (any member forwards them to the leader).
pub struct MemberAdmin<'a> {
    pub locator: &'a dyn MemberLocator,
    pub cluster_domain: &'a str,
    /// The cluster's TLS, when it has TLS on.
    pub tls: Option<&'a MemberTls>,
}

impl MemberAdmin<'_> {
    async fn client(&self, via: &MemberRef) -> Result<AdminClient<Channel>> {
        let uri = self.locator.endpoint(via);
        let channel = connect(&uri, self.tls)
            .await
            .map_err(|e| unreachable(via, &uri, &e))?;
        Ok(AdminClient::new(channel))
    }

    async fn call<T, F>(&self, via: &MemberRef, request: &'static str, f: F) -> Result<T>
    where
        F: AsyncFnOnce(AdminClient<Channel>) -> Result<tonic::Response<T>, tonic::Status>,
    {
        let client = self.client(via).await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, f(client)).await {
            Err(_) => Err(unreachable(
                via,
                &self.locator.endpoint(via),
                &format!("{request} timed out after {REQUEST_TIMEOUT:?}"),
            )),
            Ok(Err(status)) => Err(Error::MemberRequest {
                member: via.pod(),
                request,
                status: Box::new(status),
            }),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    /// The member's own Status.
    pub async fn status(&self, via: &MemberRef) -> Result<StatusResponse> {
        self.call(via, "Status", async |mut c| {
            c.status(StatusRequest {}).await
        })
        .await
    }

    /// Adds the pod at `member` as a learner; it is promoted separately once caught up.
    pub async fn add_learner(&self, via: &MemberRef, member: &MemberRef) -> Result<()> {
        let request = AddMemberRequest {
            member: Some(Member {
                id: member.id(),
                name: member.pod(),
                peer_addr: peer_addr(
                    &member.cluster,
                    &member.namespace,
                    self.cluster_domain,
                    member.ordinal,
                ),
                client_addr: client_addr(
                    &member.cluster,
                    &member.namespace,
                    self.cluster_domain,
                    member.ordinal,
                ),
                suffrage: Suffrage::Learner as i32,
            }),
            learner_only: true,
        };
        self.call(via, "AddMember", async |mut c| c.add_member(request).await)
            .await
            .map(drop)
    }

    /// Makes a caught-up learner a voter.
    pub async fn promote(&self, via: &MemberRef, id: u64) -> Result<()> {
        self.call(via, "PromoteMember", async |mut c| {
            c.promote_member(PromoteMemberRequest { id }).await
        })
        .await
        .map(drop)
    }

    /// Removes a member from the configuration.
    pub async fn remove(&self, via: &MemberRef, id: u64) -> Result<()> {
        self.call(via, "RemoveMember", async |mut c| {
            c.remove_member(RemoveMemberRequest { id }).await
        })
        .await
        .map(drop)
    }

    /// Moves leadership to member `to` (0: the most caught-up other voter).
    pub async fn transfer_leadership(&self, via: &MemberRef, to: u64) -> Result<()> {
        self.call(via, "TransferLeadership", async |mut c| {
            c.transfer_leadership(TransferLeadershipRequest { to })
                .await
        })
        .await
        .map(drop)
    }
}

fn unreachable(member: &MemberRef, endpoint: &str, message: &str) -> Error {
    Error::MemberUnreachable {
        member: member.pod(),
        endpoint: endpoint.to_string(),
        message: message.to_string(),
    }
}
