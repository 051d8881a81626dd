//! Starting and stopping a member: storage, core, event loop thread, the peer,
//! client and admin gRPC servers, and the SIGTERM handover.

use std::time::Duration;

use kuberaft_proto::admin as adminpb;
use kuberaft_proto::admin::admin_server::AdminServer;
use kuberaft_proto::kv::kv_server::KvServer;
use kuberaft_proto::raft::raft_server::RaftServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic_health::ServingStatus;

use super::admin_service::AdminService;
use super::event::Event;
use super::event_loop::{EventLoop, Parts};
use super::forward::Forwarder;
use super::incarnations::Incarnations;
use super::kv_service::KvService;
use crate::config::NodeConfig;
use crate::disk::Disk;
use crate::metrics::Metrics;
use crate::raft::{self, RawNode, RestoredState};
use crate::storage::{Boot, Identity};
use crate::tls::MemberTls;
use crate::tls::server::incoming;
use crate::transport::Transport;
use crate::transport::peer::{MAX_MESSAGE_BYTES, PeerContext};
use crate::transport::service::PeerService;

/// Runs a member until SIGTERM or SIGINT. An `Err` is one line for the user.
pub async fn run(cfg: NodeConfig) -> Result<(), String> {
    let (mut disk, restored) = tokio::task::block_in_place(|| open_data_dir(&cfg))?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let raft_cfg = raft::Config {
        election_tick_min: cfg.election_tick_min,
        election_tick_max: cfg.election_tick_max,
        heartbeat_tick: cfg.heartbeat_tick,
        ..raft::Config::with_tick_ms(cfg.id, cfg.tick_ms, seed)
    };
    // Certificates are checked before anything listens: a bad file ends the
    // member with one line saying which file and what is wrong.
    let tls = MemberTls::start(&cfg.tls)?;
    let node =
        RawNode::new(raft_cfg, restored).map_err(|e| format!("cannot start the Raft core: {e}"))?;

    let peer_listener = TcpListener::bind(cfg.peer_listen)
        .await
        .map_err(|e| format!("cannot listen on --peer-listen {}: {e}", cfg.peer_listen))?;
    let client_listener = TcpListener::bind(cfg.client_listen).await.map_err(|e| {
        format!(
            "cannot listen on --client-listen {}: {e}",
            cfg.client_listen
        )
    })?;
    let admin_listener = TcpListener::bind(cfg.admin_listen)
        .await
        .map_err(|e| format!("cannot listen on --admin-listen {}: {e}", cfg.admin_listen))?;
    let http_listener = TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|e| format!("cannot listen on --http-listen {}: {e}", cfg.http_listen))?;
    let metrics = Metrics::new();

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let incarnations = Incarnations::new(
        disk.storage.identity().incarnation,
        known_incarnations(&mut disk, node.membership())?,
        events_tx.clone(),
    );
    let (status_tx, status_rx) = watch::channel(adminpb::StatusResponse::default());
    let (ui_events, _) = tokio::sync::broadcast::channel(super::ui_events::CHANNEL_CAPACITY);
    let transport = Transport::new(PeerContext {
        cluster: cfg.cluster.clone(),
        me: cfg.id,
        events: events_tx.clone(),
        metrics: metrics.clone(),
        snapshot_send_rate: cfg.snapshot_send_rate,
        incarnations: incarnations.clone(),
        tls: tls.peer_client.clone(),
    });
    let snapshot_dir = disk.storage.snapshot_dir();
    let event_loop = EventLoop::new(
        cfg.clone(),
        Parts {
            node,
            disk,
            transport,
            runtime: tokio::runtime::Handle::current(),
            events: events_rx,
            events_tx: events_tx.clone(),
            incarnations: incarnations.clone(),
            status: status_tx,
            metrics: metrics.clone(),
            ui_events: ui_events.clone(),
        },
    );
    // The core's clock. At most one tick waits in the queue: while the
    // event loop is stalled (a slow disk), time it did not see is dropped
    // rather than replayed in a burst — a burst would fire election timeouts
    // although the leader's messages were only waiting behind the stall.
    let ticker_events = events_tx.clone();
    let tick_pending = event_loop.tick_pending();
    let tick = Duration::from_millis(u64::from(cfg.tick_ms));
    let pulse = super::liveness::Pulse::default();
    let ticker_pulse = pulse.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            if tick_pending.swap(true, std::sync::atomic::Ordering::AcqRel) {
                continue;
            }
            // The previous tick was taken: the event loop turns (liveness).
            ticker_pulse.beat();
            if ticker_events.send(Event::Tick).is_err() {
                return;
            }
        }
    });

    let (loop_done_tx, mut loop_done) = watch::channel(None::<Result<(), String>>);
    std::thread::Builder::new()
        .name("raft-event-loop".into())
        .spawn(move || {
            let result = event_loop.run();
            let _ = loop_done_tx.send(Some(result));
        })
        .map_err(|e| format!("cannot start the event loop thread: {e}"))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let forwarder = Forwarder::new(tls.forward_client.clone(), tls.admin_client());
    let peer_service = PeerService {
        cluster: cfg.cluster.clone(),
        me: cfg.id,
        events: events_tx.clone(),
        snapshot_dir,
        incarnations,
    };
    let mut stop = stop_rx.clone();
    let peer_server = tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .add_service(
                RaftServer::new(peer_service)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(
                incoming(peer_listener, tls.peer_server.clone()),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ),
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    // Liveness (the Admin service): the Raft event loop turns (liveness.rs).
    // Readiness (the overall status "" and the KV service) waits for a leader
    // and a caught-up state machine.
    health
        .set_service_status("kuberaft.admin.v1.Admin", ServingStatus::Serving)
        .await;
    let liveness_health = health.clone();
    let liveness_pulse = pulse.clone();
    let member = cfg.id;
    tokio::spawn(async move {
        let mut alive = true;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let stuck = liveness_pulse.stuck();
            if stuck.is_some() == alive {
                alive = stuck.is_none();
                match &stuck {
                    Some(why) => tracing::error!(member, %why, "not alive"),
                    None => tracing::warn!(member, "the Raft event loop turns again"),
                }
                let status = if alive {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                liveness_health
                    .set_service_status("kuberaft.admin.v1.Admin", status)
                    .await;
            }
        }
    });
    let mut health_status = status_rx.clone();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let serving = health_status.borrow_and_update().serving;
            if last != Some(serving) {
                let s = if serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                health.set_service_status("", s).await;
                health.set_service_status("kuberaft.kv.v1.KV", s).await;
                last = Some(serving);
            }
            if health_status.changed().await.is_err() {
                return;
            }
        }
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kuberaft_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("cannot build gRPC reflection: {e}"))?;
    let kv_service = KvService {
        events: events_tx.clone(),
        forwarder: forwarder.clone(),
    };
    let admin_service = AdminService {
        events: events_tx.clone(),
        status: status_rx.clone(),
        forwarder,
        ui_events: ui_events.clone(),
        admin_port: false,
    };
    let mut stop = stop_rx.clone();
    let client_server = tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(
                KvServer::new(kv_service)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(AdminServer::new(admin_service.clone()))
            .add_service(health_service.clone())
            .add_service(reflection.clone())
            .serve_with_incoming_shutdown(
                incoming(client_listener, tls.client_server.clone()),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ),
    );
    let mut stop = stop_rx.clone();
    let admin_server = tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(AdminServer::new(AdminService {
                admin_port: true,
                ..admin_service
            }))
            .add_service(health_service)
            .add_service(reflection)
            .serve_with_incoming_shutdown(
                incoming(admin_listener, tls.admin_server()),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ),
    );
    let http = tokio::spawn(super::http::serve(
        http_listener,
        super::http::router(metrics.clone(), status_rx.clone(), pulse.clone()).merge(
            crate::ui::node_router(crate::ui::NodeUi {
                member_id: cfg.id,
                actions: cfg.ui_actions,
                events: ui_events,
                status: status_rx.clone(),
                loop_events: events_tx.clone(),
                client_addr: crate::ui::local_addr(cfg.client_listen),
                admin_addr: crate::ui::local_addr(cfg.admin_listen),
            }),
        ),
        stop_rx.clone(),
    ));
    tracing::info!(
        member = cfg.id,
        name = %cfg.name,
        cluster = %cfg.cluster,
        peer = %cfg.peer_listen,
        client = %cfg.client_listen,
        admin = %cfg.admin_listen,
        http = %cfg.http_listen,
        peer_tls = cfg.tls.peer.is_some(),
        client_tls = cfg.tls.client.is_some(),
        client_cert_auth = cfg.tls.client_cert_auth,
        "member started"
    );

    // Wait for a signal or for the event loop to stop by itself (a storage
    // failure).
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot install the SIGTERM handler: {e}"))?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!(member = cfg.id, "SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!(member = cfg.id, "interrupted: stopping"),
        _ = loop_done.changed() => {}
    }
    let _ = events_tx.send(Event::Shutdown);
    let result = loop {
        if let Some(r) = loop_done.borrow_and_update().clone() {
            break r;
        }
        if loop_done.changed().await.is_err() {
            break Err("the event loop ended unexpectedly".to_string());
        }
    };
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(2);
    let _ = tokio::time::timeout(grace, peer_server).await;
    let _ = tokio::time::timeout(grace, client_server).await;
    let _ = tokio::time::timeout(grace, admin_server).await;
    let _ = tokio::time::timeout(grace, http).await;
    result
}

/// Opens (or creates) the data dir and decides how the member starts:
/// restart from its data (the stored configuration wins over flags),
/// bootstrap with the initial members, or join and wait to be added.
fn open_data_dir(cfg: &NodeConfig) -> Result<(Disk, RestoredState), String> {
    let identity = Identity {
        cluster: cfg.cluster.clone(),
        member_id: cfg.id,
        member_name: cfg.name.clone(),
    };
    let (mut disk, boot) = Disk::open(&cfg.data_dir, &identity).map_err(|e| e.to_string())?;
    let restored = match boot {
        Boot::Restored(r) => {
            tracing::info!(
                member = cfg.id,
                term = r.hard_state.current_term,
                commit = r.hard_state.commit_index,
                snapshot = r.snapshot.last_included_index,
                entries = r.entries.len(),
                "restarting from the data dir; its stored membership wins over --initial-members"
            );
            r
        }
        Boot::Fresh => {
            if cfg.initial_membership.members.is_empty() {
                tracing::info!(
                    member = cfg.id,
                    "fresh data dir and not among the initial members: joining; waiting to be added (AddMember)"
                );
            } else {
                tracing::info!(
                    member = cfg.id,
                    voters = cfg.initial_membership.voter_count(),
                    "fresh data dir: bootstrapping with the initial members"
                );
            }
            disk.storage
                .bootstrap(cfg.initial_membership.clone())
                .map_err(|e| e.to_string())?
        }
    };
    Ok((disk, restored))
}

/// The incarnations this member remembers for its peers, minus those of
/// members no longer in its configuration (they left while it was down; a new
/// incarnation of them may be added back).
fn known_incarnations(
    disk: &mut Disk,
    membership: &raft::Membership,
) -> Result<std::collections::BTreeMap<raft::NodeId, u64>, String> {
    let mut known = disk
        .storage
        .peer_incarnations()
        .map_err(|e| e.to_string())?;
    let gone: Vec<raft::NodeId> = known
        .keys()
        .filter(|id| !membership.contains(**id))
        .copied()
        .collect();
    for id in gone {
        known.remove(&id);
        disk.storage
            .record_peer_incarnation(id, None)
            .map_err(|e| e.to_string())?;
    }
    Ok(known)
}
