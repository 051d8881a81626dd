//! A core [`Message`] ↔ the RPCs of the `kuberaft.raft.v1.Raft` service.
//!
//! The core sees one stream of messages; gRPC sees requests and the responses
//! that answer them. So requests carry a [`pb::Header`] (cluster, from, to)
//! that the core does not, and responses carry nothing but the term: the
//! transport knows which peer it called, so `from` and `to` come from the call.
//!
//! InstallSnapshot is answered by the core with an `AppendEntriesResponse`
//! (the follower's log now matches up to the snapshot); on the wire that is an
//! `InstallSnapshotResponse`, which has no rejection hint (the reject fields
//! are 0 when it comes back in).

use kuberaft_proto::raft as pb;

use super::WireError;
use crate::raft::{Message, MessageBody, NodeId, SnapshotMeta};

/// The four RPCs of the `Raft` service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rpc {
    RequestVote,
    AppendEntries,
    InstallSnapshot,
    TimeoutNow,
}

impl Rpc {
    pub fn name(self) -> &'static str {
        match self {
            Rpc::RequestVote => "RequestVote",
            Rpc::AppendEntries => "AppendEntries",
            Rpc::InstallSnapshot => "InstallSnapshot",
            Rpc::TimeoutNow => "TimeoutNow",
        }
    }
}

/// A request of the `Raft` service.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerRequest {
    RequestVote(pb::RequestVoteRequest),
    AppendEntries(pb::AppendEntriesRequest),
    /// The first chunk of the InstallSnapshot stream: header, term, leader and
    /// metadata. The transport fills in `offset`, `data`, `done`,
    /// `total_size` and `crc32` from the snapshot file and sends the rest of
    /// the file in further chunks.
    InstallSnapshot(pb::InstallSnapshotChunk),
    TimeoutNow(pb::TimeoutNowRequest),
}

impl PeerRequest {
    pub fn rpc(&self) -> Rpc {
        match self {
            PeerRequest::RequestVote(_) => Rpc::RequestVote,
            PeerRequest::AppendEntries(_) => Rpc::AppendEntries,
            PeerRequest::InstallSnapshot(_) => Rpc::InstallSnapshot,
            PeerRequest::TimeoutNow(_) => Rpc::TimeoutNow,
        }
    }
}

/// A response of the `Raft` service.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerResponse {
    RequestVote(pb::RequestVoteResponse),
    AppendEntries(pb::AppendEntriesResponse),
    InstallSnapshot(pb::InstallSnapshotResponse),
    TimeoutNow(pb::TimeoutNowResponse),
}

/// The request that carries a core message from `m.from` to `m.to` in
/// `cluster`. Answers (RequestVoteResponse, AppendEntriesResponse) are not
/// requests: send them with [`response_to_proto`].
pub fn request_to_proto(m: &Message, cluster: &str) -> Result<PeerRequest, WireError> {
    let header = Some(pb::Header {
        // The transport stamps its incarnation (server/incarnations.rs).
        incarnation: 0,
        cluster: cluster.to_owned(),
        from: m.from,
        to: m.to,
    });
    Ok(match &m.body {
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            pre_vote,
            leader_transfer,
        } => PeerRequest::RequestVote(pb::RequestVoteRequest {
            header,
            term: m.term,
            candidate_id: m.from,
            last_log_index: *last_log_index,
            last_log_term: *last_log_term,
            pre_vote: *pre_vote,
            leader_transfer: *leader_transfer,
        }),
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            seq,
        } => PeerRequest::AppendEntries(pb::AppendEntriesRequest {
            header,
            term: m.term,
            leader_id: m.from,
            prev_log_index: *prev_log_index,
            prev_log_term: *prev_log_term,
            entries: entries.iter().map(pb::Entry::from).collect(),
            leader_commit: *leader_commit,
            seq: *seq,
        }),
        MessageBody::InstallSnapshot { snapshot } => {
            PeerRequest::InstallSnapshot(pb::InstallSnapshotChunk {
                header,
                term: m.term,
                leader_id: m.from,
                meta: Some(snapshot.into()),
                ..Default::default()
            })
        }
        MessageBody::TimeoutNow => PeerRequest::TimeoutNow(pb::TimeoutNowRequest {
            header,
            term: m.term,
            leader_id: m.from,
        }),
        MessageBody::RequestVoteResponse { .. } | MessageBody::AppendEntriesResponse { .. } => {
            return Err(WireError::NotThisRpc {
                body: m.body.name(),
                rpc: "a request",
            });
        }
    })
}

/// Checks who a request is from and for, and returns `(from, to)`. A request
/// for another cluster or another member is refused: obeying it could let
/// two clusters (or two members) that share an address corrupt each other.
fn check_header(
    header: Option<&pb::Header>,
    message: &'static str,
    cluster: &str,
    me: NodeId,
) -> Result<(NodeId, NodeId), WireError> {
    let h = header.ok_or(WireError::Missing {
        message,
        field: "header",
    })?;
    if h.cluster != cluster {
        return Err(WireError::WrongCluster {
            expected: cluster.to_owned(),
            got: h.cluster.clone(),
        });
    }
    if h.to != me {
        return Err(WireError::WrongMember { to: h.to, me });
    }
    if h.from == 0 {
        return Err(WireError::Invalid {
            message,
            why: "header.from is 0, which is not a member id".into(),
        });
    }
    Ok((h.from, h.to))
}

/// The sender named in the body (candidate_id, leader_id) must be the one in
/// the header: a message is about one member, not two.
fn check_sender(
    message: &'static str,
    field: &'static str,
    named: NodeId,
    from: NodeId,
) -> Result<(), WireError> {
    if named == from {
        Ok(())
    } else {
        Err(WireError::Invalid {
            message,
            why: format!("{field} {named} differs from header.from {from}"),
        })
    }
}

/// The core message a request carries, after checking that it is for member
/// `me` of `cluster`. For InstallSnapshot pass the first chunk (the one with
/// the metadata); the snapshot's data is the transport's to collect.
pub fn request_from_proto(
    req: PeerRequest,
    cluster: &str,
    me: NodeId,
) -> Result<Message, WireError> {
    match req {
        PeerRequest::RequestVote(r) => {
            const M: &str = "RequestVoteRequest";
            let (from, to) = check_header(r.header.as_ref(), M, cluster, me)?;
            check_sender(M, "candidate_id", r.candidate_id, from)?;
            Ok(Message {
                from,
                to,
                term: r.term,
                body: MessageBody::RequestVote {
                    last_log_index: r.last_log_index,
                    last_log_term: r.last_log_term,
                    pre_vote: r.pre_vote,
                    leader_transfer: r.leader_transfer,
                },
            })
        }
        PeerRequest::AppendEntries(r) => {
            const M: &str = "AppendEntriesRequest";
            let (from, to) = check_header(r.header.as_ref(), M, cluster, me)?;
            check_sender(M, "leader_id", r.leader_id, from)?;
            let entries = r
                .entries
                .into_iter()
                .map(crate::raft::Entry::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Message {
                from,
                to,
                term: r.term,
                body: MessageBody::AppendEntries {
                    prev_log_index: r.prev_log_index,
                    prev_log_term: r.prev_log_term,
                    entries,
                    leader_commit: r.leader_commit,
                    seq: r.seq,
                },
            })
        }
        PeerRequest::InstallSnapshot(r) => {
            const M: &str = "InstallSnapshotChunk";
            let (from, to) = check_header(r.header.as_ref(), M, cluster, me)?;
            check_sender(M, "leader_id", r.leader_id, from)?;
            let meta = r.meta.ok_or(WireError::Missing {
                message: M,
                field: "meta (the first chunk describes the snapshot)",
            })?;
            Ok(Message {
                from,
                to,
                term: r.term,
                body: MessageBody::InstallSnapshot {
                    snapshot: SnapshotMeta::try_from(meta)?,
                },
            })
        }
        PeerRequest::TimeoutNow(r) => {
            const M: &str = "TimeoutNowRequest";
            let (from, to) = check_header(r.header.as_ref(), M, cluster, me)?;
            check_sender(M, "leader_id", r.leader_id, from)?;
            Ok(Message {
                from,
                to,
                term: r.term,
                body: MessageBody::TimeoutNow,
            })
        }
    }
}

/// The response that answers an `rpc` request with the core's answer `m`.
/// TimeoutNow has no answer in the core: the transport answers it at once
/// with its term (`pb::TimeoutNowResponse`).
pub fn response_to_proto(m: &Message, rpc: Rpc) -> Result<PeerResponse, WireError> {
    match (&m.body, rpc) {
        (
            MessageBody::RequestVoteResponse {
                vote_granted,
                pre_vote,
            },
            Rpc::RequestVote,
        ) => Ok(PeerResponse::RequestVote(pb::RequestVoteResponse {
            term: m.term,
            vote_granted: *vote_granted,
            pre_vote: *pre_vote,
        })),
        (
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                reject_index,
                conflict_term,
                conflict_index,
                last_log_index,
                seq,
            },
            Rpc::AppendEntries,
        ) => Ok(PeerResponse::AppendEntries(pb::AppendEntriesResponse {
            term: m.term,
            success: *success,
            match_index: *match_index,
            reject_index: *reject_index,
            conflict_term: *conflict_term,
            conflict_index: *conflict_index,
            last_log_index: *last_log_index,
            seq: *seq,
        })),
        (
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                last_log_index,
                ..
            },
            Rpc::InstallSnapshot,
        ) => Ok(PeerResponse::InstallSnapshot(pb::InstallSnapshotResponse {
            term: m.term,
            success: *success,
            match_index: *match_index,
            last_log_index: *last_log_index,
        })),
        (body, rpc) => Err(WireError::NotThisRpc {
            body: body.name(),
            rpc: rpc.name(),
        }),
    }
}

/// The core message a response from `peer` to us (`me`) stands for. A
/// TimeoutNowResponse has none (the transfer goes on by the election it
/// triggered), so it gives `None`.
pub fn response_from_proto(resp: PeerResponse, peer: NodeId, me: NodeId) -> Option<Message> {
    let (term, body) = match resp {
        PeerResponse::RequestVote(r) => (
            r.term,
            MessageBody::RequestVoteResponse {
                vote_granted: r.vote_granted,
                pre_vote: r.pre_vote,
            },
        ),
        PeerResponse::AppendEntries(r) => (
            r.term,
            MessageBody::AppendEntriesResponse {
                success: r.success,
                match_index: r.match_index,
                reject_index: r.reject_index,
                conflict_term: r.conflict_term,
                conflict_index: r.conflict_index,
                last_log_index: r.last_log_index,
                seq: r.seq,
            },
        ),
        PeerResponse::InstallSnapshot(r) => (
            r.term,
            MessageBody::AppendEntriesResponse {
                success: r.success,
                match_index: r.match_index,
                reject_index: 0,
                conflict_term: 0,
                conflict_index: 0,
                last_log_index: r.last_log_index,
                seq: 0,
            },
        ),
        PeerResponse::TimeoutNow(_) => return None,
    };
    Some(Message {
        from: peer,
        to: me,
        term,
        body,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::raft::{ConfChange, Entry, EntryKind, Member, Membership, Suffrage};

    const CLUSTER: &str = "demo";

    fn msg(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
        Message {
            from,
            to,
            term,
            body,
        }
    }

    fn round_trip_request(m: Message) {
        let req = request_to_proto(&m, CLUSTER).unwrap();
        let back = request_from_proto(req, CLUSTER, m.to).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn requests_round_trip() {
        round_trip_request(msg(
            1,
            2,
            5,
            MessageBody::RequestVote {
                last_log_index: 10,
                last_log_term: 4,
                pre_vote: true,
                leader_transfer: false,
            },
        ));
        round_trip_request(msg(
            1,
            3,
            5,
            MessageBody::RequestVote {
                last_log_index: 10,
                last_log_term: 4,
                pre_vote: false,
                leader_transfer: true,
            },
        ));
        round_trip_request(msg(
            1,
            2,
            5,
            MessageBody::AppendEntries {
                prev_log_index: 9,
                prev_log_term: 4,
                entries: vec![
                    Entry::normal(5, 10, Bytes::from_static(b"a")),
                    Entry {
                        term: 5,
                        index: 11,
                        kind: EntryKind::ConfChange(ConfChange::RemoveMember { id: 3 }),
                        data: Bytes::new(),
                    },
                ],
                leader_commit: 9,
                seq: 17,
            },
        ));
        let member = Member {
            id: 1,
            name: "demo-1".into(),
            peer_addr: "a:1".into(),
            client_addr: "a:2".into(),
            suffrage: Suffrage::Voter,
        };
        round_trip_request(msg(
            1,
            2,
            5,
            MessageBody::InstallSnapshot {
                snapshot: SnapshotMeta {
                    last_included_index: 50,
                    last_included_term: 4,
                    membership: Membership::new([member]),
                },
            },
        ));
        round_trip_request(msg(1, 2, 5, MessageBody::TimeoutNow));
    }

    #[test]
    fn requests_carry_the_header() {
        let m = msg(1, 2, 5, MessageBody::TimeoutNow);
        let PeerRequest::TimeoutNow(r) = request_to_proto(&m, CLUSTER).unwrap() else {
            panic!("not a TimeoutNow");
        };
        assert_eq!(
            r.header,
            Some(pb::Header {
                incarnation: 0,
                cluster: CLUSTER.into(),
                from: 1,
                to: 2
            })
        );
        assert_eq!(r.leader_id, 1);
    }

    #[test]
    fn requests_for_another_cluster_or_member_or_without_header_are_refused() {
        let m = msg(1, 2, 5, MessageBody::TimeoutNow);
        let req = request_to_proto(&m, CLUSTER).unwrap();
        assert!(matches!(
            request_from_proto(req.clone(), "other", 2),
            Err(WireError::WrongCluster { .. })
        ));
        assert_eq!(
            request_from_proto(req, CLUSTER, 3),
            Err(WireError::WrongMember { to: 2, me: 3 })
        );
        let no_header = PeerRequest::TimeoutNow(pb::TimeoutNowRequest {
            header: None,
            term: 5,
            leader_id: 1,
        });
        assert!(matches!(
            request_from_proto(no_header, CLUSTER, 2),
            Err(WireError::Missing { .. })
        ));
        let mismatched = PeerRequest::RequestVote(pb::RequestVoteRequest {
            header: Some(pb::Header {
                incarnation: 0,
                cluster: CLUSTER.into(),
                from: 1,
                to: 2,
            }),
            term: 5,
            candidate_id: 4,
            ..Default::default()
        });
        assert!(request_from_proto(mismatched, CLUSTER, 2).is_err());
        let no_meta = PeerRequest::InstallSnapshot(pb::InstallSnapshotChunk {
            header: Some(pb::Header {
                incarnation: 0,
                cluster: CLUSTER.into(),
                from: 1,
                to: 2,
            }),
            term: 5,
            leader_id: 1,
            ..Default::default()
        });
        assert!(request_from_proto(no_meta, CLUSTER, 2).is_err());
    }

    #[test]
    fn answers_are_not_requests() {
        let m = msg(
            2,
            1,
            5,
            MessageBody::RequestVoteResponse {
                vote_granted: true,
                pre_vote: false,
            },
        );
        assert!(request_to_proto(&m, CLUSTER).is_err());
    }

    #[test]
    fn responses_round_trip() {
        let vote = msg(
            2,
            1,
            5,
            MessageBody::RequestVoteResponse {
                vote_granted: true,
                pre_vote: true,
            },
        );
        let resp = response_to_proto(&vote, Rpc::RequestVote).unwrap();
        assert_eq!(response_from_proto(resp, 2, 1), Some(vote.clone()));

        let append = msg(
            2,
            1,
            5,
            MessageBody::AppendEntriesResponse {
                success: false,
                match_index: 0,
                reject_index: 12,
                conflict_term: 3,
                conflict_index: 8,
                last_log_index: 14,
                seq: 9,
            },
        );
        let resp = response_to_proto(&append, Rpc::AppendEntries).unwrap();
        assert_eq!(response_from_proto(resp, 2, 1), Some(append));
        assert!(response_to_proto(&vote, Rpc::AppendEntries).is_err());
    }

    #[test]
    fn install_snapshot_answers_travel_as_install_snapshot_responses() {
        let answer = msg(
            2,
            1,
            5,
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index: 50,
                reject_index: 0,
                conflict_term: 0,
                conflict_index: 0,
                last_log_index: 50,
                seq: 0,
            },
        );
        let resp = response_to_proto(&answer, Rpc::InstallSnapshot).unwrap();
        assert_eq!(
            resp,
            PeerResponse::InstallSnapshot(pb::InstallSnapshotResponse {
                term: 5,
                success: true,
                match_index: 50,
                last_log_index: 50,
            })
        );
        assert_eq!(response_from_proto(resp, 2, 1), Some(answer));
        let timeout = PeerResponse::TimeoutNow(pb::TimeoutNowResponse { term: 5 });
        assert_eq!(response_from_proto(timeout, 2, 1), None);
    }
}
