//! Core messages ↔ `kuberaft.raft.v1` protos, for the peer transport.

use kuberaft_proto::raft as pb;

use crate::raft::{self, MessageBody, NodeId};

/// A request on its way to a peer.
pub enum PeerRequest {
    Vote(pb::RequestVoteRequest),
    Append(pb::AppendEntriesRequest),
    Snapshot(raft::SnapshotMeta),
    TimeoutNow(pb::TimeoutNowRequest),
}

fn header(cluster: &str, m: &raft::Message) -> Option<pb::Header> {
    Some(pb::Header {
        cluster: cluster.to_string(),
        from: m.from,
        to: m.to,
    })
}

/// Turns an outgoing core request into its proto. Answers never travel
/// through here: they return as RPC responses.
pub fn to_request(cluster: &str, m: raft::Message) -> Option<PeerRequest> {
    let h = header(cluster, &m);
    Some(match m.body {
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            pre_vote,
            leader_transfer,
        } => PeerRequest::Vote(pb::RequestVoteRequest {
            header: h,
            term: m.term,
            candidate_id: m.from,
            last_log_index,
            last_log_term,
            pre_vote,
            leader_transfer,
        }),
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            seq,
        } => PeerRequest::Append(pb::AppendEntriesRequest {
            header: h,
            term: m.term,
            leader_id: m.from,
            prev_log_index,
            prev_log_term,
            entries: entries.iter().map(crate::wire::entry_to_pb).collect(),
            leader_commit,
            seq,
        }),
        MessageBody::InstallSnapshot { snapshot } => PeerRequest::Snapshot(snapshot),
        MessageBody::TimeoutNow => PeerRequest::TimeoutNow(pb::TimeoutNowRequest {
            header: h,
            term: m.term,
            leader_id: m.from,
        }),
        MessageBody::RequestVoteResponse { .. } | MessageBody::AppendEntriesResponse { .. } => {
            return None;
        }
    })
}

/// Checks a request's header: right cluster, right member.
pub fn check_header(h: Option<&pb::Header>, cluster: &str, me: NodeId) -> Result<NodeId, String> {
    let h = h.ok_or("request has no header")?;
    if h.cluster != cluster {
        return Err(format!(
            "request for cluster {:?} reached a member of cluster {cluster:?}",
            h.cluster
        ));
    }
    if h.to != me {
        return Err(format!("request for member {} reached member {me}", h.to));
    }
    if h.from == 0 || h.from == me {
        return Err(format!("request claims to come from member {}", h.from));
    }
    Ok(h.from)
}

pub fn vote_request_to_core(me: NodeId, from: NodeId, r: &pb::RequestVoteRequest) -> raft::Message {
    raft::Message {
        from,
        to: me,
        term: r.term,
        body: MessageBody::RequestVote {
            last_log_index: r.last_log_index,
            last_log_term: r.last_log_term,
            pre_vote: r.pre_vote,
            leader_transfer: r.leader_transfer,
        },
    }
}

pub fn append_request_to_core(
    me: NodeId,
    from: NodeId,
    r: pb::AppendEntriesRequest,
) -> Result<raft::Message, String> {
    let entries = r
        .entries
        .into_iter()
        .map(crate::wire::entry_from_pb)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(raft::Message {
        from,
        to: me,
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

/// The core's answer to a vote request, as the RPC response.
pub fn vote_response_to_pb(m: &raft::Message) -> Option<pb::RequestVoteResponse> {
    match m.body {
        MessageBody::RequestVoteResponse {
            vote_granted,
            pre_vote,
        } => Some(pb::RequestVoteResponse {
            term: m.term,
            vote_granted,
            pre_vote,
        }),
        _ => None,
    }
}

pub fn append_response_to_pb(m: &raft::Message) -> Option<pb::AppendEntriesResponse> {
    match m.body {
        MessageBody::AppendEntriesResponse {
            success,
            match_index,
            reject_index,
            conflict_term,
            conflict_index,
            last_log_index,
            seq,
        } => Some(pb::AppendEntriesResponse {
            term: m.term,
            success,
            match_index,
            reject_index,
            conflict_term,
            conflict_index,
            last_log_index,
            seq,
        }),
        _ => None,
    }
}

pub fn vote_response_to_core(
    me: NodeId,
    peer: NodeId,
    r: &pb::RequestVoteResponse,
) -> raft::Message {
    raft::Message {
        from: peer,
        to: me,
        term: r.term,
        body: MessageBody::RequestVoteResponse {
            vote_granted: r.vote_granted,
            pre_vote: r.pre_vote,
        },
    }
}

pub fn append_response_to_core(
    me: NodeId,
    peer: NodeId,
    r: &pb::AppendEntriesResponse,
) -> raft::Message {
    raft::Message {
        from: peer,
        to: me,
        term: r.term,
        body: MessageBody::AppendEntriesResponse {
            success: r.success,
            match_index: r.match_index,
            reject_index: r.reject_index,
            conflict_term: r.conflict_term,
            conflict_index: r.conflict_index,
            last_log_index: r.last_log_index,
            seq: r.seq,
        },
    }
}

pub fn snapshot_response_to_core(
    me: NodeId,
    peer: NodeId,
    r: &pb::InstallSnapshotResponse,
) -> raft::Message {
    raft::Message {
        from: peer,
        to: me,
        term: r.term,
        body: MessageBody::AppendEntriesResponse {
            success: r.success,
            match_index: r.match_index,
            reject_index: 0,
            conflict_term: 0,
            conflict_index: 0,
            last_log_index: r.last_log_index,
            seq: 0,
        },
    }
}

pub fn snapshot_response_to_pb(m: &raft::Message) -> Option<pb::InstallSnapshotResponse> {
    match m.body {
        MessageBody::AppendEntriesResponse {
            success,
            match_index,
            last_log_index,
            ..
        } => Some(pb::InstallSnapshotResponse {
            term: m.term,
            success,
            match_index,
            last_log_index,
        }),
        _ => None,
    }
}
