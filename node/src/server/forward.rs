//! Forwarding to the leader: a follower sends writes and linearizable reads
//! on to the leader's client port, and membership changes and transfers on
//! to the leader's admin port, once, marked so they are not forwarded again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kuberaft_proto::admin as adminpb;
use kuberaft_proto::admin::admin_client::AdminClient;
use kuberaft_proto::kv as pb;
use kuberaft_proto::kv::kv_client::KvClient;
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::client::WriteResult;
use super::deadline::{DEADLINE_HEADER, Deadline, FORWARDED};
use crate::tls::ClientTls;
use crate::transport::channel::{CONNECT_TIMEOUT, lazy_channel_with};
use crate::transport::peer::MAX_MESSAGE_BYTES;

/// Channels to leaders' client and admin ports, kept while the leader stays the same.
#[derive(Clone, Default)]
pub struct Forwarder {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// TLS to the leader's client port, when the client port has TLS.
    tls: Option<ClientTls>,
    /// TLS to the leader's admin port (see `MemberTls::admin_client`).
    admin_tls: Option<ClientTls>,
    /// Leaders' admin addresses by client address, as their Status says.
    admin_addrs: Arc<Mutex<HashMap<String, String>>>,
}

/// How long asking a leader for its admin address may take.
const ADMIN_ADDR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The request as the leader gets it: marked as forwarded, with the client's deadline as an
/// absolute time (see `deadline.rs` for why a relative one is not enough).
fn forwarded<T>(msg: T, deadline: Deadline) -> Request<T> {
    let mut r = Request::new(msg);
    r.set_timeout(deadline.remaining());
    r.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    r.metadata_mut().insert(
        DEADLINE_HEADER,
        tonic::metadata::MetadataValue::from(deadline.unix_ms()),
    );
    r
}

impl Forwarder {
    pub fn new(tls: Option<ClientTls>, admin_tls: Option<ClientTls>) -> Forwarder {
        Forwarder {
            channels: Arc::default(),
            tls,
            admin_tls,
            admin_addrs: Arc::default(),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        self.channel_with(addr, &self.tls)
    }

    /// A channel to `addr` (a client or an admin address: they differ by port, so one map
    /// holds both).
    fn channel_with(&self, addr: &str, tls: &Option<ClientTls>) -> Result<Channel, Status> {
        let mut map = self
            .channels
            .lock()
            .map_err(|_| Status::internal("forwarder lock poisoned"))?;
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = lazy_channel_with(addr, CONNECT_TIMEOUT, tls.clone()).map_err(Status::internal)?;
        // Few leaders come and go; forget old ones so the map stays small.
        if map.len() > 16 {
            map.clear();
        }
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn kv(&self, addr: &str) -> Result<KvClient<Channel>, Status> {
        Ok(KvClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The read-only Admin service on the client port at `addr`.
    fn admin(&self, addr: &str) -> Result<AdminClient<Channel>, Status> {
        Ok(AdminClient::new(self.channel(addr)?))
    }

    /// The Admin service on the admin port of the leader whose client address is
    /// `client_addr`: its admin address is asked once from its Status (members may listen on
    /// other admin ports than this one) and kept.
    pub async fn leader_admin(&self, client_addr: &str) -> Result<AdminClient<Channel>, Status> {
        let known = self
            .admin_addrs
            .lock()
            .map_err(|_| Status::internal("forwarder lock poisoned"))?
            .get(client_addr)
            .cloned();
        let admin_addr = match known {
            Some(a) => a,
            None => {
                let mut request = Request::new(adminpb::StatusRequest {});
                request.set_timeout(ADMIN_ADDR_TIMEOUT);
                let status = self.admin(client_addr)?.status(request).await?.into_inner();
                if status.admin_addr.is_empty() {
                    return Err(Status::unavailable(format!(
                        "the leader at {client_addr} did not say where its admin port is; retry"
                    )));
                }
                let mut map = self
                    .admin_addrs
                    .lock()
                    .map_err(|_| Status::internal("forwarder lock poisoned"))?;
                if map.len() > 16 {
                    map.clear();
                }
                map.insert(client_addr.to_string(), status.admin_addr.clone());
                status.admin_addr
            }
        };
        Ok(AdminClient::new(
            self.channel_with(&admin_addr, &self.admin_tls)?,
        ))
    }

    pub async fn forward_write(
        &self,
        addr: &str,
        command: pb::Command,
        deadline: Deadline,
    ) -> Result<(WriteResult, pb::ResponseHeader), Status> {
        let mut kv = self.kv(addr)?;
        match command.op {
            Some(pb::command::Op::Put(r)) => {
                let resp = kv.put(forwarded(r, deadline)).await?.into_inner();
                Ok((
                    WriteResult::Put { index: resp.index },
                    resp.header.unwrap_or_default(),
                ))
            }
            Some(pb::command::Op::Delete(r)) => {
                let resp = kv.delete(forwarded(r, deadline)).await?.into_inner();
                Ok((
                    WriteResult::Delete {
                        index: resp.index,
                        existed: resp.deleted,
                    },
                    resp.header.unwrap_or_default(),
                ))
            }
            Some(pb::command::Op::CompareAndSwap(r)) => {
                // A failed swap comes back as FAILED_PRECONDITION and is passed on as is.
                let resp = kv
                    .compare_and_swap(forwarded(r, deadline))
                    .await?
                    .into_inner();
                Ok((
                    WriteResult::CompareAndSwap {
                        index: resp.index,
                        succeeded: resp.succeeded,
                        current: resp.current_value.map(Into::into),
                    },
                    resp.header.unwrap_or_default(),
                ))
            }
            None => Err(Status::invalid_argument("empty command")),
        }
    }

    pub async fn forward_get(
        &self,
        addr: &str,
        r: pb::GetRequest,
        deadline: Deadline,
    ) -> Result<pb::GetResponse, Status> {
        Ok(self
            .kv(addr)?
            .get(forwarded(r, deadline))
            .await?
            .into_inner())
    }

    pub async fn forward_scan(
        &self,
        addr: &str,
        r: pb::ScanRequest,
        deadline: Deadline,
    ) -> Result<pb::ScanResponse, Status> {
        Ok(self
            .kv(addr)?
            .scan(forwarded(r, deadline))
            .await?
            .into_inner())
    }

    pub fn forwarded_admin<T>(msg: T, deadline: Deadline) -> Request<T> {
        forwarded(msg, deadline)
    }

    pub async fn status(&self, addr: &str) -> Result<adminpb::StatusResponse, Status> {
        Ok(self
            .admin(addr)?
            .status(adminpb::StatusRequest {})
            .await?
            .into_inner())
    }
}
