//! The event loop: the one owner of the Raft core, the log storage and the
//! state machine. Each turn it takes every queued event, steps the core, and
//! handles the `Ready` in Raft's order — persist (one fsync for the whole
//! batch: group commit), send, apply, answer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kuberaft_proto::kv as kvpb;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot, watch};

use super::client::{
    ClientError, ClientRequest, NOT_CARRIED_OUT, ReadQuery, ReadResult, Reply, WriteResult,
    abandoned,
};
use super::deadline::Deadline;
use super::event::{Event, PeerAnswer};
use super::status::StatusBoard;
use super::ui_events::{Cause, Recorder};
use crate::config::NodeConfig;
use crate::disk::Disk;
use crate::kv::{self, ApplyResult};
use crate::metrics::{KindLabels, Metrics};
use crate::raft::{
    self, EntryKind, Index, Membership, MessageBody, NodeId, RawNode, Ready, Role, Term,
};
use crate::transport::Transport;

/// Most events handled in one turn before the loop persists and sends; keeps
/// latency bounded under a flood while still batching.
const MAX_EVENTS_PER_TURN: usize = 4096;

/// Most key and value bytes in one page of a scan.
const MAX_SCAN_PAGE_BYTES: usize = 3 << 20;

struct PendingRead {
    query: ReadQuery,
    reply: Reply<(ReadResult, kvpb::ResponseHeader)>,
}

struct PendingTransfer {
    deadline: Instant,
    reply: Reply<(NodeId, u64)>,
}

pub struct EventLoop {
    cfg: NodeConfig,
    node: RawNode,
    disk: Disk,
    transport: Transport,
    runtime: tokio::runtime::Handle,
    events: mpsc::UnboundedReceiver<Event>,
    status: StatusBoard,
    metrics: Metrics,

    /// Writes waiting to be applied: index → (term proposed in, reply).
    pending_writes: BTreeMap<Index, (Term, Reply<(WriteResult, kvpb::ResponseHeader)>)>,
    /// Membership changes waiting to be committed.
    pending_changes: BTreeMap<Index, (Term, Reply<Membership>)>,
    /// Linearizable reads waiting for their ReadIndex.
    pending_reads: BTreeMap<u64, PendingRead>,
    /// Reads whose ReadIndex is known, waiting for the state machine.
    confirmed_reads: Vec<(Index, PendingRead)>,
    next_read_ctx: u64,
    pending_transfer: Option<PendingTransfer>,
    /// Answers to peers, held until what they promise is on disk.
    /// (answer, whether it answers a heartbeat, reply).
    peer_answers: Vec<(Option<raft::Message>, bool, oneshot::Sender<PeerAnswer>)>,
    /// A snapshot of our own being written in the background, and who waits
    /// for it.
    snapshot_in_progress: Option<raft::SnapshotMeta>,
    snapshot_waiters: Vec<Reply<kuberaft_proto::admin::SnapshotResponse>>,
    /// Bytes of entries applied since the last snapshot.
    applied_bytes_since_snapshot: u64,
    incarnations: super::incarnations::Incarnations,
    /// Set by the ticker while a tick waits in the queue.
    tick_pending: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Our own sender, for background work to report back.
    events_tx: mpsc::UnboundedSender<Event>,
    /// The membership the transport was last set up for.
    synced_membership: Membership,
    /// Set on SIGTERM: stop once leadership has moved, or at this instant.
    shutdown_at: Option<Instant>,
    /// Whether this member led when the shutdown began.
    led_at_shutdown: bool,
    /// Protocol events for the web view; also whether this member is cut off.
    ui: Recorder,
}

/// What `EventLoop::new` needs besides the configuration.
pub struct Parts {
    pub node: RawNode,
    pub disk: Disk,
    pub transport: Transport,
    pub runtime: tokio::runtime::Handle,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub events_tx: mpsc::UnboundedSender<Event>,
    pub incarnations: super::incarnations::Incarnations,
    pub status: watch::Sender<kuberaft_proto::admin::StatusResponse>,
    pub metrics: Metrics,
    /// Protocol events for the web view.
    pub ui_events: tokio::sync::broadcast::Sender<kuberaft_proto::admin::RaftEvent>,
}

impl EventLoop {
    pub fn new(cfg: NodeConfig, parts: Parts) -> EventLoop {
        let status = StatusBoard::new(&cfg, parts.status, parts.metrics.clone());
        let ui = Recorder::new(parts.ui_events, cfg.id, cfg.name.clone(), cfg.tick_ms);
        let mut el = EventLoop {
            node: parts.node,
            disk: parts.disk,
            transport: parts.transport,
            runtime: parts.runtime,
            events: parts.events,
            status,
            metrics: parts.metrics,
            cfg,
            pending_writes: BTreeMap::new(),
            pending_changes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            confirmed_reads: Vec::new(),
            next_read_ctx: 1,
            pending_transfer: None,
            peer_answers: Vec::new(),
            tick_pending: Default::default(),
            incarnations: parts.incarnations,
            snapshot_in_progress: None,
            snapshot_waiters: Vec::new(),
            applied_bytes_since_snapshot: 0,
            events_tx: parts.events_tx,
            synced_membership: Membership::default(),
            shutdown_at: None,
            led_at_shutdown: false,
            ui,
        };
        el.sync_transport();
        el
    }

    /// The flag the ticker uses to keep at most one tick queued.
    pub fn tick_pending(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.tick_pending.clone()
    }

    /// Runs until shutdown; an `Err` is a storage failure after which this
    /// member must not go on (it could acknowledge what is not durable).
    pub fn run(mut self) -> Result<(), String> {
        loop {
            let Some(ev) = self.events.blocking_recv() else {
                return Ok(());
            };
            self.handle(ev)?;
            for _ in 0..MAX_EVENTS_PER_TURN {
                match self.events.try_recv() {
                    Ok(ev) => self.handle(ev)?,
                    Err(_) => break,
                }
            }
            self.process_ready()?;
            if self.should_stop() {
                if self.led_at_shutdown {
                    if self.node.role() == Role::Leader {
                        tracing::warn!(
                            member = self.cfg.id,
                            term = self.node.term(),
                            "no follower took over in time; stopping as leader"
                        );
                    } else {
                        tracing::info!(
                            member = self.cfg.id,
                            term = self.node.term(),
                            leader = self.node.leader_id(),
                            "leadership handed over"
                        );
                    }
                }
                tracing::info!(member = self.cfg.id, "event loop stopped");
                return Ok(());
            }
        }
    }

    fn should_stop(&self) -> bool {
        match self.shutdown_at {
            None => false,
            Some(at) => self.node.role() != Role::Leader || Instant::now() >= at,
        }
    }

    fn leader_client_addr(&self, leader_id: NodeId) -> Option<String> {
        if leader_id == 0 || leader_id == self.cfg.id {
            return None;
        }
        self.node
            .membership()
            .members
            .get(&leader_id)
            .map(|m| m.client_addr.clone())
    }

    fn not_leader(&self) -> ClientError {
        let leader_id = self.node.leader_id();
        ClientError::NotLeader {
            leader_id,
            leader_addr: self.leader_client_addr(leader_id),
        }
    }

    fn header(&self) -> kvpb::ResponseHeader {
        kvpb::ResponseHeader {
            member_id: self.cfg.id,
            term: self.node.term(),
            leader_id: self.node.leader_id(),
            applied_index: self.disk.state_machine.applied_index(),
        }
    }

    // --------------------------------------------------------------- events

    fn handle(&mut self, ev: Event) -> Result<(), String> {
        if !self.ui.active() {
            self.ui.idle();
            return self.handle_event(ev);
        }
        let cause = match &ev {
            Event::Tick => Cause::Tick,
            Event::PeerRequest { msg, .. }
            | Event::PeerMessage(msg)
            | Event::SnapshotReceived { msg, .. } => Cause::of_message(msg),
            _ => Cause::Other,
        };
        self.handle_event(ev)?;
        self.ui.after_input(&self.node, cause);
        Ok(())
    }

    fn handle_event(&mut self, ev: Event) -> Result<(), String> {
        if self.ui.isolated {
            // Cut off (raftctl dev): peer traffic is lost both ways.
            match ev {
                Event::PeerRequest { reply, .. } | Event::SnapshotReceived { reply, .. } => {
                    let _ = reply.send(Err(tonic::Status::unavailable(
                        "this member is cut off from its peers (raftctl dev)",
                    )));
                    return Ok(());
                }
                Event::PeerMessage(_) => return Ok(()),
                ev => return self.handle_connected(ev),
            }
        }
        self.handle_connected(ev)
    }

    fn handle_connected(&mut self, ev: Event) -> Result<(), String> {
        match ev {
            Event::Tick => {
                self.tick_pending
                    .store(false, std::sync::atomic::Ordering::Release);
                self.node.tick();
                self.check_transfer_deadline();
            }
            Event::PeerRequest { msg, reply } => self.step_request(msg, reply),
            Event::PeerMessage(msg) => {
                if let Err(e) = self.node.step(msg) {
                    log_step_error(self.cfg.id, &e);
                }
            }
            // The file is complete and durable under its final name; if the
            // core takes the snapshot, `persist` installs it from there.
            Event::SnapshotReceived {
                msg,
                file: _,
                reply,
            } => self.step_request(msg, reply),
            Event::SnapshotSent { to, ok } => {
                if ok {
                    self.metrics
                        .snapshots
                        .get_or_create(&KindLabels { kind: "sent" })
                        .inc();
                }
                self.node.report_snapshot(to, ok);
            }
            Event::SnapshotWritten { meta, result } => self.snapshot_written(meta, result)?,
            Event::PeerIncarnation { peer, incarnation } => self
                .disk
                .storage
                .record_peer_incarnation(peer, incarnation)
                .map_err(|e| format!("cannot record the incarnation of member {peer}: {e}"))?,
            Event::Fenced(why) => return Err(why),
            Event::Client(req) => self.handle_client(req),
            Event::Shutdown => self.begin_shutdown(),
            Event::Isolate(on) => {
                if on != self.ui.isolated {
                    tracing::warn!(
                        member = self.cfg.id,
                        isolated = on,
                        "cut off from the peers (on request of the web view)"
                    );
                    self.ui.isolation(&self.node, on);
                    self.ui.isolated = on;
                }
            }
        }
        Ok(())
    }

    fn step_request(&mut self, msg: raft::Message, reply: oneshot::Sender<PeerAnswer>) {
        let heartbeat =
            matches!(&msg.body, MessageBody::AppendEntries { entries, .. } if entries.is_empty());
        match self.node.step_request(msg) {
            Ok(answer) => self.peer_answers.push((answer, heartbeat, reply)),
            Err(e) => {
                log_step_error(self.cfg.id, &e);
                let _ = reply.send(Err(tonic::Status::failed_precondition(e.to_string())));
            }
        }
    }

    fn handle_client(&mut self, req: ClientRequest) {
        match req {
            ClientRequest::Write {
                command,
                deadline,
                reply,
            } => {
                let Some(reply) = self.unless_abandoned(reply, &deadline, "write") else {
                    return;
                };
                if self.shutdown_at.is_some() {
                    let _ = reply.send(Err(ClientError::Unavailable(
                        "member is shutting down".into(),
                    )));
                    return;
                }
                let data = Bytes::from(command.encode_to_vec());
                match self.node.propose(data) {
                    Ok(index) => {
                        self.pending_writes.insert(index, (self.node.term(), reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ClientError::from_propose(e, |id| {
                            self.leader_client_addr(id)
                        })));
                    }
                }
            }
            ClientRequest::Read {
                query,
                linearizable,
                deadline,
                reply,
            } => {
                let Some(reply) = self.unless_abandoned(reply, &deadline, "read") else {
                    return;
                };
                if !linearizable {
                    let result = self.read(&query);
                    let _ = reply.send(Ok((result, self.header())));
                    return;
                }
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                match self.node.read_index(ctx) {
                    Ok(()) => {
                        self.pending_reads.insert(ctx, PendingRead { query, reply });
                    }
                    Err(_) => {
                        let _ = reply.send(Err(self.not_leader()));
                    }
                }
            }
            ClientRequest::ChangeMembership {
                change,
                deadline,
                reply,
            } => {
                let Some(reply) = self.unless_abandoned(reply, &deadline, "membership") else {
                    return;
                };
                match self.node.propose_conf_change(change) {
                    Ok(index) => {
                        self.pending_changes
                            .insert(index, (self.node.term(), reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ClientError::from_propose(e, |id| {
                            self.leader_client_addr(id)
                        })));
                    }
                }
            }
            ClientRequest::TransferLeadership {
                to,
                deadline,
                reply,
            } => {
                let Some(reply) = self.unless_abandoned(reply, &deadline, "transfer") else {
                    return;
                };
                if self.node.role() != Role::Leader {
                    let _ = reply.send(Err(self.not_leader()));
                    return;
                }
                let Some(target) = to.or_else(|| self.node.most_caught_up_voter()) else {
                    let _ = reply.send(Err(ClientError::FailedPrecondition(
                        "there is no other voter to hand leadership to".into(),
                    )));
                    return;
                };
                match self.node.transfer_leader(target) {
                    Ok(()) if target == self.cfg.id => {
                        let _ = reply.send(Ok((self.cfg.id, self.node.term())));
                    }
                    Ok(()) => {
                        let deadline = Instant::now() + self.election_timeout_max() * 2;
                        if let Some(old) = self
                            .pending_transfer
                            .replace(PendingTransfer { deadline, reply })
                        {
                            let _ = old.reply.send(Err(ClientError::Unavailable(
                                "superseded by a newer transfer request".into(),
                            )));
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ClientError::from_propose(e, |id| {
                            self.leader_client_addr(id)
                        })));
                    }
                }
            }
            ClientRequest::Snapshot { reply } => {
                self.snapshot_waiters.push(reply);
                if self.snapshot_in_progress.is_none() && !self.start_snapshot() {
                    // Nothing applied since the newest snapshot: that one is current.
                    let answer = self.current_snapshot_response();
                    for w in self.snapshot_waiters.drain(..) {
                        let _ = w.send(Ok(answer));
                    }
                }
            }
        }
    }

    /// `reply`, unless nobody waits for it any more: then the request is answered
    /// DEADLINE_EXCEEDED and dropped, never proposed or read, so a client that gave up never
    /// finds its write applied later (a forwarded request can arrive long after it was sent).
    fn unless_abandoned<T>(
        &self,
        reply: Reply<T>,
        deadline: &Deadline,
        kind: &'static str,
    ) -> Option<Reply<T>> {
        if !abandoned(&reply, deadline) {
            return Some(reply);
        }
        self.metrics
            .requests_abandoned
            .get_or_create(&crate::metrics::KindLabels { kind })
            .inc();
        tracing::debug!(
            member = self.cfg.id,
            kind,
            "request abandoned by its client; not carried out"
        );
        let _ = reply.send(Err(ClientError::DeadlineExceeded(NOT_CARRIED_OUT.into())));
        None
    }

    fn election_timeout_max(&self) -> Duration {
        Duration::from_millis(u64::from(self.cfg.election_tick_max * self.cfg.tick_ms))
    }

    fn check_transfer_deadline(&mut self) {
        if let Some(t) = &self.pending_transfer
            && Instant::now() >= t.deadline
            && let Some(t) = self.pending_transfer.take()
        {
            let _ = t.reply.send(Err(ClientError::Unavailable(
                "leadership transfer did not complete in time; this member still leads".into(),
            )));
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_at.is_some() {
            return;
        }
        self.shutdown_at = Some(Instant::now() + self.cfg.shutdown_transfer_timeout);
        self.led_at_shutdown = self.node.role() == Role::Leader;
        if self.led_at_shutdown {
            match self.node.most_caught_up_voter() {
                Some(to) => {
                    tracing::info!(
                        member = self.cfg.id,
                        to,
                        term = self.node.term(),
                        "shutting down: handing leadership over"
                    );
                    if let Err(e) = self.node.transfer_leader(to) {
                        tracing::warn!(member = self.cfg.id, error = %e, "cannot hand leadership over");
                    }
                }
                None => tracing::info!(
                    member = self.cfg.id,
                    "shutting down: no other voter to hand leadership to"
                ),
            }
        }
    }

    fn read(&self, query: &ReadQuery) -> ReadResult {
        match query {
            ReadQuery::Get { key } => ReadResult::Get(
                self.disk
                    .state_machine
                    .get(key)
                    .map(|v| key_value(key.clone(), v)),
            ),
            ReadQuery::Scan {
                prefix,
                start_after,
                limit,
            } => {
                let page = self.disk.state_machine.scan(prefix, start_after, *limit);
                // Also bounded in bytes, so a page fits a client's default
                // 4 MiB message limit; `more` sends it back for the rest.
                let mut bytes = 0;
                let mut more = page.more;
                let mut kvs = Vec::with_capacity(page.kvs.len());
                for (k, v) in page.kvs {
                    bytes += k.len() + v.value.len() + 16;
                    if !kvs.is_empty() && bytes > MAX_SCAN_PAGE_BYTES {
                        more = true;
                        break;
                    }
                    kvs.push(key_value(k, &v));
                }
                ReadResult::Scan { kvs, more }
            }
        }
    }

    // ------------------------------------------------------------ snapshots

    fn maybe_snapshot(&mut self) {
        if self.snapshot_in_progress.is_some() {
            return;
        }
        let applied = self.disk.state_machine.applied_index();
        let base = self
            .disk
            .storage
            .snapshot_meta()
            .map_or(0, |m| m.last_included_index);
        if applied.saturating_sub(base) >= self.cfg.snapshot_threshold_entries
            || self.applied_bytes_since_snapshot >= self.cfg.snapshot_threshold_bytes
        {
            self.start_snapshot();
        }
    }

    /// Starts writing a snapshot of the state machine at its applied index on
    /// a background thread; the event loop goes on (the image is a cheap
    /// clone of the map). False if there is nothing new to snapshot.
    fn start_snapshot(&mut self) -> bool {
        let applied = self.disk.state_machine.applied_index();
        let base = self
            .disk
            .storage
            .snapshot_meta()
            .map_or(0, |m| m.last_included_index);
        if applied <= base {
            return false;
        }
        let Some(meta) = self.node.snapshot_meta_at(applied) else {
            return false;
        };
        let image = self.disk.state_machine.snapshot_image();
        let dir = self.disk.storage.snapshot_dir();
        let tx = self.events_tx.clone();
        let rate = self.cfg.snapshot_write_rate;
        self.snapshot_in_progress = Some(meta.clone());
        tracing::info!(member = self.cfg.id, index = applied, "taking a snapshot");
        let spawned = std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || {
                super::background::lower_this_threads_priority();
                let result = std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))
                    .and_then(|()| {
                        kv::snapshot_file::write_at_rate(&dir, &meta, &image, rate)
                            .map_err(|e| e.to_string())
                    });
                let _ = tx.send(Event::SnapshotWritten { meta, result });
            });
        if let Err(e) = spawned {
            tracing::warn!(member = self.cfg.id, error = %e, "cannot start the snapshot writer");
            self.snapshot_in_progress = None;
            return false;
        }
        true
    }

    /// The background writer finished: compact the log to the snapshot.
    fn snapshot_written(
        &mut self,
        meta: raft::SnapshotMeta,
        result: Result<kv::snapshot_file::SnapshotFile, String>,
    ) -> Result<(), String> {
        self.snapshot_in_progress = None;
        let file = match result {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(member = self.cfg.id, error = %e, "writing a snapshot failed; the log is not compacted");
                for w in self.snapshot_waiters.drain(..) {
                    let _ = w.send(Err(ClientError::Internal(format!(
                        "writing the snapshot failed: {e}"
                    ))));
                }
                return Ok(());
            }
        };
        // Durable metadata first (it also syncs the applied state), then the
        // covered entries go — from the disk and from the core's memory.
        let trim = self
            .disk
            .compact(&meta)
            .map_err(|e| format!("cannot compact the log: {e}"))?;
        self.node.compact(meta.clone());
        let member = self.cfg.id;
        let spawned = std::thread::Builder::new()
            .name("log-trim".into())
            .spawn(move || match trim.run() {
                Ok(n) => tracing::debug!(member, removed = n, "removed compacted log segments"),
                // They stay until a later compaction removes them; a start
                // reads and skips them.
                Err(e) => {
                    tracing::warn!(member, error = %e, "cannot remove compacted log segments")
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(member, error = %e, "cannot start removing compacted log segments");
        }
        self.applied_bytes_since_snapshot = 0;
        self.metrics
            .snapshots
            .get_or_create(&KindLabels { kind: "taken" })
            .inc();
        self.metrics.snapshot_bytes.set(file.size as i64);
        let answer = kuberaft_proto::admin::SnapshotResponse {
            last_included_index: meta.last_included_index,
            last_included_term: meta.last_included_term,
            size_bytes: file.size,
        };
        for w in self.snapshot_waiters.drain(..) {
            let _ = w.send(Ok(answer));
        }
        Ok(())
    }

    fn current_snapshot_response(&self) -> kuberaft_proto::admin::SnapshotResponse {
        let meta = self
            .disk
            .storage
            .snapshot_meta()
            .cloned()
            .unwrap_or_default();
        let size = std::fs::metadata(self.disk.storage.snapshot_path(&meta)).map_or(0, |m| m.len());
        kuberaft_proto::admin::SnapshotResponse {
            last_included_index: meta.last_included_index,
            last_included_term: meta.last_included_term,
            size_bytes: size,
        }
    }

    /// The file of the snapshot a follower needs. The bootstrap snapshot
    /// (index 0: the founding membership, no data) has no file until a new
    /// member needs it; then an empty one is written.
    fn snapshot_file_for(&self, meta: &raft::SnapshotMeta) -> Result<std::path::PathBuf, String> {
        let path = self.disk.storage.snapshot_path(meta);
        if meta.last_included_index == 0 && !path.exists() {
            let dir = self.disk.storage.snapshot_dir();
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let image = kv::SnapshotImage {
                applied_index: 0,
                data: kv::KvMap::new(),
            };
            kv::snapshot_file::write(&dir, meta, &image).map_err(|e| e.to_string())?;
        }
        Ok(path)
    }

    // ---------------------------------------------------------------- ready

    fn process_ready(&mut self) -> Result<(), String> {
        while self.node.has_ready() {
            let mut rd = self.node.ready();
            for to in std::mem::take(&mut rd.cancelled_snapshots) {
                self.transport.cancel_snapshot(to);
            }
            // A leader's requests go first: its disk write then overlaps
            // the followers' (thesis §10.2.1).
            self.send(std::mem::take(&mut rd.leader_messages));
            // A hard state that only moves the commit index promises nothing
            // to anyone (a lost commit index is learned again), so writing it
            // can wait until the clients have their answers.
            let persist_later = !rd.must_sync() && rd.entries.is_empty() && rd.snapshot.is_none();
            if !persist_later {
                self.persist(&rd)?;
            }
            // What the answers promise is durable now.
            self.answer_peers();
            self.send(std::mem::take(&mut rd.messages));
            let (unwritten, applying) = self.apply(&rd.committed_entries)?;
            if self.ui.active() {
                self.ui.appended(&self.node, &rd.entries);
                self.ui.committed(&self.node);
                if !rd.committed_entries.is_empty() {
                    self.ui
                        .applied(&self.node, self.disk.state_machine.applied_index());
                }
                if let Some(meta) = &rd.snapshot {
                    self.ui
                        .snapshot_installed(&self.node, meta.last_included_index);
                }
            }
            for rs in std::mem::take(&mut rd.read_states) {
                if let Some(read) = self.pending_reads.remove(&rs.ctx) {
                    self.confirmed_reads.push((rs.index, read));
                }
            }
            self.answer_reads();
            // Off the clients' path: see `StateMachine::apply_in_memory`.
            let writing = Instant::now();
            self.disk
                .state_machine
                .write(unwritten)
                .map_err(|e| format!("cannot apply committed entries: {e}"))?;
            if !rd.committed_entries.is_empty() {
                self.metrics
                    .apply_seconds
                    .observe((applying + writing.elapsed()).as_secs_f64());
            }
            if persist_later {
                self.persist(&rd)?;
            }
            if let Some(soft) = rd.soft_state {
                self.on_soft_state(soft);
            }
            self.node.advance();
            self.sync_transport();
        }
        self.answer_peers();
        self.maybe_snapshot();
        if self.ui.active() {
            self.ui
                .status(&self.node, self.disk.state_machine.applied_index(), false);
        }
        self.status.publish(
            &self.node,
            self.disk.state_machine.applied_index(),
            self.incarnations.refused(),
            false,
        );
        Ok(())
    }

    /// Releases the answers to peers' requests: what they promise is durable.
    fn answer_peers(&mut self) {
        let term = self.node.term();
        let watched = self.ui.active();
        for (answer, heartbeat, reply) in self.peer_answers.drain(..) {
            if watched && let Some(a) = &answer {
                self.ui.sent(&self.node, a, heartbeat);
            }
            let _ = reply.send(Ok((answer, term)));
        }
    }

    fn persist(&mut self, rd: &Ready) -> Result<(), String> {
        if let Some(meta) = &rd.snapshot {
            self.install_snapshot(meta)?;
        }
        let started = Instant::now();
        self.disk
            .storage
            .persist(rd.hard_state.as_ref(), &rd.entries, rd.must_sync())
            .map_err(|e| format!("cannot persist the log: {e}"))?;
        if !rd.entries.is_empty() || rd.hard_state.is_some() {
            self.metrics
                .append_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        for took in self.disk.storage.take_sync_times() {
            self.metrics.fsync_seconds.observe(took.as_secs_f64());
        }
        Ok(())
    }

    fn install_snapshot(&mut self, meta: &raft::SnapshotMeta) -> Result<(), String> {
        // The event loop waits for the installation either way (the core has
        // moved to the snapshot; nothing may be applied or persisted until
        // the state machine and the log follow). Doing the work on a thread
        // of lower priority lets the other members and the load have the
        // CPUs first: on a small machine this member's install would
        // otherwise slow the whole cluster's writes.
        let disk = &mut self.disk;
        std::thread::scope(|s| {
            s.spawn(|| {
                super::background::lower_this_threads_priority();
                disk.install_snapshot(meta)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .map_err(|e| format!("cannot install snapshot {}: {e}", meta.last_included_index))?;
        self.applied_bytes_since_snapshot = 0;
        self.metrics
            .snapshots
            .get_or_create(&KindLabels { kind: "installed" })
            .inc();
        Ok(())
    }

    fn send(&mut self, messages: Vec<raft::Message>) {
        let watched = self.ui.active();
        for m in messages {
            if self.ui.isolated {
                // Cut off: the message is lost on the way.
                if let MessageBody::InstallSnapshot { .. } = &m.body {
                    self.node.report_snapshot(m.to, false);
                }
                continue;
            }
            if watched {
                self.ui.sent(&self.node, &m, false);
            }
            if let MessageBody::InstallSnapshot { snapshot } = &m.body {
                let to = m.to;
                let sent = match self.snapshot_file_for(snapshot) {
                    Ok(file) => self.transport.send_snapshot(m, file),
                    Err(e) => {
                        tracing::warn!(member = self.cfg.id, to, error = %e, "cannot send a snapshot");
                        false
                    }
                };
                if !sent {
                    self.node.report_snapshot(to, false);
                }
                continue;
            }
            self.transport.send(m);
        }
    }

    /// Applies committed entries in memory and answers their clients; the
    /// caller writes the returned changes to sled afterwards.
    fn apply(&mut self, entries: &[raft::Entry]) -> Result<(kv::Unwritten, Duration), String> {
        let started = Instant::now();
        let (results, unwritten) = self
            .disk
            .state_machine
            .apply_in_memory(entries)
            .map_err(|e| format!("cannot apply committed entries: {e}"))?;
        let took = started.elapsed();
        if entries.is_empty() {
            return Ok((unwritten, took));
        }
        let mut results: BTreeMap<Index, ApplyResult> = results.into_iter().collect();
        for e in entries {
            if matches!(e.kind, EntryKind::ConfChange(_)) {
                if let Some((term, reply)) = self.pending_changes.remove(&e.index) {
                    let answer = if term == e.term {
                        Ok(self.node.membership().clone())
                    } else {
                        Err(lost_to_new_leader())
                    };
                    let _ = reply.send(answer);
                }
                continue;
            }
            let Some((term, reply)) = self.pending_writes.remove(&e.index) else {
                continue;
            };
            if term != e.term {
                self.metrics.proposals_failed.inc();
                let _ = reply.send(Err(lost_to_new_leader()));
                continue;
            }
            self.metrics.proposals_committed.inc();
            let answer = match results.remove(&e.index) {
                Some(r) => write_result(e.index, r).map(|w| (w, self.header())),
                None => Err(ClientError::Internal(format!(
                    "entry {} was applied without a result",
                    e.index
                ))),
            };
            let _ = reply.send(answer);
        }
        Ok((unwritten, took))
    }

    fn answer_reads(&mut self) {
        if self.confirmed_reads.is_empty() {
            return;
        }
        let applied = self.disk.state_machine.applied_index();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.confirmed_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.confirmed_reads = waiting;
        for (_, read) in ready {
            let result = self.read(&read.query);
            let _ = read.reply.send(Ok((result, self.header())));
        }
    }

    fn on_soft_state(&mut self, soft: raft::SoftState) {
        tracing::info!(
            member = self.cfg.id,
            term = self.node.term(),
            role = soft.role.as_str(),
            leader = soft.leader_id,
            "role or leader changed"
        );
        if soft.role != Role::Leader {
            // ReadIndex rounds of a leader that stepped down can never finish.
            for (_, read) in std::mem::take(&mut self.pending_reads) {
                let _ = read.reply.send(Err(ClientError::Unavailable(
                    "leadership changed during the read; retry".into(),
                )));
            }
            if let Some(t) = self.pending_transfer.take() {
                let _ = t.reply.send(Ok((soft.leader_id, self.node.term())));
            }
        }
        self.status.publish(
            &self.node,
            self.disk.state_machine.applied_index(),
            self.incarnations.refused(),
            true,
        );
    }

    fn sync_transport(&mut self) {
        if self.node.membership() != &self.synced_membership {
            // Members that left are forgotten, so a new incarnation of one
            // can be added back later.
            let gone: Vec<NodeId> = self
                .synced_membership
                .members
                .keys()
                .filter(|id| !self.node.membership().contains(**id))
                .copied()
                .collect();
            for id in gone {
                if self.incarnations.forget(id)
                    && let Err(e) = self.disk.storage.record_peer_incarnation(id, None)
                {
                    tracing::warn!(member = self.cfg.id, peer = id, error = %e, "cannot forget a removed member's incarnation");
                }
            }
            self.synced_membership = self.node.membership().clone();
            self.transport.sync(&self.synced_membership, &self.runtime);
            // Status readers (the operator) should see a membership change at once.
            self.status.publish(
                &self.node,
                self.disk.state_machine.applied_index(),
                self.incarnations.refused(),
                true,
            );
        }
    }
}

fn lost_to_new_leader() -> ClientError {
    ClientError::Unavailable(
        "leadership changed before the request committed; it was not applied; retry".into(),
    )
}

fn write_result(index: Index, r: ApplyResult) -> Result<WriteResult, ClientError> {
    Ok(match r {
        ApplyResult::Put => WriteResult::Put { index },
        ApplyResult::Delete { existed } => WriteResult::Delete { index, existed },
        ApplyResult::Invalid { reason } => {
            return Err(ClientError::InvalidArgument(format!(
                "the command at index {index} was committed but is not a valid command: {reason}"
            )));
        }
        ApplyResult::CompareAndSwap {
            succeeded,
            current_value,
        } => WriteResult::CompareAndSwap {
            index,
            succeeded,
            current: current_value,
        },
    })
}

fn key_value(key: Bytes, v: &kv::Versioned) -> kvpb::KeyValue {
    kvpb::KeyValue {
        key: key.to_vec(),
        value: v.value.to_vec(),
        mod_index: v.mod_index,
    }
}

fn log_step_error(member: NodeId, e: &raft::StepError) {
    if e.is_routine() {
        tracing::debug!(member, error = %e, "message dropped");
    } else {
        tracing::warn!(member, error = %e, "message dropped");
    }
}
