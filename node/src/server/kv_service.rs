//! `kuberaft.kv.v1`: validates requests, hands them to the event loop, and
//! forwards what only the leader can do when this member is not the leader.

use std::time::Duration;

use bytes::Bytes;
use kuberaft_proto::kv as pb;
use kuberaft_proto::kv::kv_server::Kv;
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::client::{ClientError, ClientRequest, ReadQuery, ReadResult, WriteResult, ask};
use super::deadline::{Deadline, FORWARDED};
use super::event::Event;
use super::forward::Forwarder;

/// Limits of the client API (also documented in kv.proto).
pub const MAX_KEY_BYTES: usize = 4 << 10;
pub const MAX_VALUE_BYTES: usize = 1 << 20;
pub const MAX_SCAN_LIMIT: u32 = 10_000;
pub const DEFAULT_SCAN_LIMIT: u32 = 1_000;

#[derive(Clone)]
pub struct KvService {
    pub events: mpsc::UnboundedSender<Event>,
    pub forwarder: Forwarder,
}

fn check_key(key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument(
            "key is empty; keys are 1 byte to 4 KiB",
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Status::invalid_argument(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES} (4 KiB)",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), Status> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Status::invalid_argument(format!(
            "value is {} bytes; the limit is {MAX_VALUE_BYTES} (1 MiB)",
            value.len()
        )));
    }
    Ok(())
}

impl KvService {
    async fn write<Req>(
        &self,
        request: &Request<Req>,
        command: pb::Command,
    ) -> Result<(WriteResult, pb::ResponseHeader), Status> {
        let deadline = Deadline::of(request);
        match ask(&self.events, deadline, |reply| ClientRequest::Write {
            command: command.clone(),
            deadline,
            reply,
        })
        .await
        {
            Err(ClientError::NotLeader {
                leader_addr: Some(addr),
                ..
            }) if !request.metadata().contains_key(FORWARDED) => {
                let answer = self
                    .forwarder
                    .forward_write(&addr, command, deadline)
                    .await?;
                Ok(answer)
            }
            other => other.map_err(|e| e.to_status()),
        }
    }

    async fn read(
        &self,
        deadline: Deadline,
        forwarded: bool,
        query: impl Fn() -> ReadQuery,
        linearizable: bool,
    ) -> Result<Result<(ReadResult, pb::ResponseHeader), (String, Deadline)>, Status> {
        match ask(&self.events, deadline, |reply| ClientRequest::Read {
            query: query(),
            linearizable,
            deadline,
            reply,
        })
        .await
        {
            Ok(r) => Ok(Ok(r)),
            Err(ClientError::NotLeader {
                leader_addr: Some(addr),
                ..
            }) if !forwarded => Ok(Err((addr, deadline))),
            Err(e) => Err(e.to_status()),
        }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let r = request.get_ref();
        check_key(&r.key)?;
        check_value(&r.value)?;
        let command = pb::Command {
            op: Some(pb::command::Op::Put(r.clone())),
        };
        match self.write(&request, command).await? {
            (WriteResult::Put { index }, header) => Ok(Response::new(pb::PutResponse {
                header: Some(header),
                index,
            })),
            (other, _) => Err(Status::internal(format!("Put applied as {other:?}"))),
        }
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = request.get_ref();
        check_key(&r.key)?;
        let command = pb::Command {
            op: Some(pb::command::Op::Delete(r.clone())),
        };
        match self.write(&request, command).await? {
            (WriteResult::Delete { index, existed }, header) => {
                Ok(Response::new(pb::DeleteResponse {
                    header: Some(header),
                    index,
                    deleted: existed,
                }))
            }
            (other, _) => Err(Status::internal(format!("Delete applied as {other:?}"))),
        }
    }

    async fn compare_and_swap(
        &self,
        request: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let r = request.get_ref();
        check_key(&r.key)?;
        check_value(&r.new_value)?;
        if let Some(v) = &r.expected_value {
            check_value(v)?;
        }
        let command = pb::Command {
            op: Some(pb::command::Op::CompareAndSwap(r.clone())),
        };
        match self.write(&request, command).await? {
            (
                WriteResult::CompareAndSwap {
                    index,
                    succeeded,
                    current,
                },
                header,
            ) => {
                let resp = pb::CompareAndSwapResponse {
                    header: Some(header),
                    succeeded,
                    index,
                    current_value: current.map(|b| b.to_vec()),
                };
                if succeeded {
                    Ok(Response::new(resp))
                } else {
                    Err(cas_failed(&r.key, resp))
                }
            }
            (other, _) => Err(Status::internal(format!(
                "CompareAndSwap applied as {other:?}"
            ))),
        }
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let deadline = Deadline::of(&request);
        let forwarded = request.metadata().contains_key(FORWARDED);
        let r = request.into_inner();
        check_key(&r.key)?;
        let linearizable = r.consistency() == pb::Consistency::Linearizable;
        let key = Bytes::from(r.key.clone());
        match self
            .read(
                deadline,
                forwarded,
                || ReadQuery::Get { key: key.clone() },
                linearizable,
            )
            .await?
        {
            Ok((ReadResult::Get(kv), header)) => Ok(Response::new(pb::GetResponse {
                header: Some(header),
                kv,
            })),
            Ok(_) => Err(Status::internal("Get answered as a scan")),
            Err((addr, deadline)) => self
                .forwarder
                .forward_get(&addr, r, deadline)
                .await
                .map(Response::new),
        }
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let deadline = Deadline::of(&request);
        let forwarded = request.metadata().contains_key(FORWARDED);
        let r = request.into_inner();
        if r.prefix.len() > MAX_KEY_BYTES || r.start_after.len() > MAX_KEY_BYTES {
            return Err(Status::invalid_argument(
                "scan prefix or start_after is over 4 KiB",
            ));
        }
        let limit = match r.limit {
            0 => DEFAULT_SCAN_LIMIT,
            l if l > MAX_SCAN_LIMIT => {
                return Err(Status::invalid_argument(format!(
                    "scan limit {l} is out of range; use 1 to {MAX_SCAN_LIMIT} (0 means {DEFAULT_SCAN_LIMIT})"
                )));
            }
            l => l,
        } as usize;
        let linearizable = r.consistency() == pb::Consistency::Linearizable;
        let (prefix, start_after) = (
            Bytes::from(r.prefix.clone()),
            Bytes::from(r.start_after.clone()),
        );
        let query = || ReadQuery::Scan {
            prefix: prefix.clone(),
            start_after: start_after.clone(),
            limit,
        };
        match self.read(deadline, forwarded, query, linearizable).await? {
            Ok((ReadResult::Scan { kvs, more }, header)) => Ok(Response::new(pb::ScanResponse {
                header: Some(header),
                kvs,
                more,
            })),
            Ok(_) => Err(Status::internal("Scan answered as a get")),
            Err((addr, deadline)) => self
                .forwarder
                .forward_scan(&addr, r, deadline)
                .await
                .map(Response::new),
        }
    }
}

/// FAILED_PRECONDITION with the current value, readable by people in the
/// message and by programs in the details (an encoded CompareAndSwapResponse).
pub fn cas_failed(key: &[u8], resp: pb::CompareAndSwapResponse) -> Status {
    let current = match &resp.current_value {
        Some(v) => format!("holds {:?}", String::from_utf8_lossy(v)),
        None => "does not exist".to_string(),
    };
    Status::with_details(
        tonic::Code::FailedPrecondition,
        format!(
            "compare-and-swap failed: key {:?} {current}",
            String::from_utf8_lossy(key)
        ),
        resp.encode_to_vec().into(),
    )
}

/// How long a request may run when the client set no deadline.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
