//! The web view (issue 8): a page compiled into the binary that shows a live
//! cluster — members, their election timers, messages, logs, a timeline of
//! terms and leaders — from the protocol events every member publishes.
//!
//! A member serves it at `GET /ui` on its HTTP port, with `GET /ui/events`
//! (server-sent events: its own events and, through admin.v1 WatchEvents,
//! every other member's, so one port-forward shows the whole cluster). It is
//! read-only unless the member runs with `--ui-actions`. `raftctl dev --ui`
//! serves the same page with actions on the processes it runs
//! ([`crate::cli::dev_ui`]).

pub mod aggregate;

use std::convert::Infallible;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::Stream;
use kuberaft_proto::admin::{RaftEvent, StatusResponse};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use crate::server::event::Event;
use crate::server::ui_events::to_json;
use crate::transport::channel::lazy_channel;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Events a page may fall behind by before the oldest are dropped.
const PAGE_BUFFER: usize = 2048;

/// The page and its static files; shared by the member and `raftctl dev --ui`.
pub fn assets<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { html(INDEX_HTML) }))
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route(
            "/ui/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        )
        .route(
            "/ui/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    STYLE_CSS,
                )
            }),
        )
}

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// JSON values as a server-sent event stream.
pub fn sse(rx: mpsc::Receiver<Value>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    Sse::new(
        ReceiverStream::new(rx)
            .map(|v| Ok::<_, Infallible>(SseEvent::default().data(v.to_string()))),
    )
    .keep_alive(KeepAlive::default())
}

/// What a member's page needs.
#[derive(Clone)]
pub struct NodeUi {
    pub member_id: u64,
    /// `--ui-actions`: the page may write and cut this member off.
    pub actions: bool,
    pub events: broadcast::Sender<RaftEvent>,
    pub status: watch::Receiver<StatusResponse>,
    pub loop_events: mpsc::UnboundedSender<Event>,
    /// This member's client port, for the page's writes.
    pub client_addr: String,
    /// This member's admin port, for the page's leadership transfers.
    pub admin_addr: String,
}

/// `/ui`, `/ui/events`, `/ui/config` and `/ui/actions/{action}` of a member.
pub fn node_router(ui: NodeUi) -> Router {
    Router::new()
        .route("/ui/config", get(node_config))
        .route("/ui/events", get(node_events))
        .route("/ui/actions/{action}", post(node_action))
        .with_state(ui)
        .merge(assets())
}

async fn node_config(State(ui): State<NodeUi>) -> impl IntoResponse {
    let actions: Vec<&str> = if ui.actions {
        vec!["put", "transfer_leader", "cut_off", "heal"]
    } else {
        Vec::new()
    };
    axum::Json(json!({"mode": "member", "member_id": ui.member_id, "actions": actions}))
}

#[derive(Deserialize)]
struct Scope {
    /// "member": only this member's own events.
    scope: Option<String>,
}

async fn node_events(State(ui): State<NodeUi>, Query(q): Query<Scope>) -> impl IntoResponse {
    let (tx, rx) = mpsc::channel(PAGE_BUFFER);
    let mut own = ui.events.subscribe();
    let sink = tx.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sink.closed() => return,
                ev = own.recv() => match ev {
                    Ok(ev) => {
                        if sink.send(to_json(&ev)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(lost = n, "a web view fell behind; oldest events dropped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    if q.scope.as_deref() != Some("member") {
        let status = ui.status.clone();
        aggregate::watch_members(
            tx,
            move || {
                status
                    .borrow()
                    .members
                    .iter()
                    .filter_map(|m| m.member.as_ref())
                    .map(|m| aggregate::Target {
                        id: m.id,
                        name: m.name.clone(),
                        client_addr: m.client_addr.clone(),
                    })
                    .collect()
            },
            Some(ui.member_id),
        );
    }
    sse(rx)
}

/// The parameters of an action; which are needed depends on the action.
#[derive(Deserialize, Default, Debug)]
pub struct ActionParams {
    pub member: Option<u64>,
    pub key: Option<String>,
    pub value: Option<String>,
}

/// The answer to an action, as the page shows it.
pub fn action_answer(result: Result<String, (StatusCode, String)>) -> Response {
    match result {
        Ok(message) => axum::Json(json!({"ok": true, "message": message})).into_response(),
        Err((code, message)) => {
            (code, axum::Json(json!({"ok": false, "message": message}))).into_response()
        }
    }
}

async fn node_action(
    State(ui): State<NodeUi>,
    Path(action): Path<String>,
    Query(p): Query<ActionParams>,
) -> Response {
    if !ui.actions {
        return action_answer(Err((
            StatusCode::FORBIDDEN,
            "this web view is read-only; start the member with --ui-actions to allow actions"
                .into(),
        )));
    }
    let r = match action.as_str() {
        "put" => put(&ui.client_addr, p.key, p.value).await,
        "transfer_leader" => transfer_leader(&ui.admin_addr).await,
        "cut_off" | "heal" => {
            let on = action == "cut_off";
            if p.member.is_some_and(|m| m != ui.member_id) {
                Err((
                    StatusCode::BAD_REQUEST,
                    format!(
                        "a member cuts off only itself; open member {}'s own /ui",
                        p.member.unwrap_or_default()
                    ),
                ))
            } else if ui.loop_events.send(Event::Isolate(on)).is_err() {
                Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the member is stopping".into(),
                ))
            } else if on {
                Ok(format!("member {} is cut off from its peers", ui.member_id))
            } else {
                Ok(format!("member {} is connected again", ui.member_id))
            }
        }
        other => Err((StatusCode::NOT_FOUND, format!("no action {other:?}"))),
    };
    action_answer(r)
}

/// A write through the client port at `addr` (a follower forwards it).
pub async fn put(
    addr: &str,
    key: Option<String>,
    value: Option<String>,
) -> Result<String, (StatusCode, String)> {
    let bad = |m: &str| (StatusCode::BAD_REQUEST, m.to_string());
    let key = key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| bad("give a key"))?;
    let value = value.unwrap_or_default();
    let channel = lazy_channel(addr).map_err(|e| bad(&e))?;
    let mut kv = kuberaft_proto::kv::kv_client::KvClient::new(channel);
    let mut req = tonic::Request::new(kuberaft_proto::kv::PutRequest {
        key: key.clone().into_bytes(),
        value: value.clone().into_bytes(),
    });
    req.set_timeout(std::time::Duration::from_secs(5));
    match kv.put(req).await {
        Ok(r) => Ok(format!(
            "put {key}={value}: committed at index {}",
            r.into_inner().index
        )),
        Err(e) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("put {key} failed: {}", e.message()),
        )),
    }
}

async fn transfer_leader(addr: &str) -> Result<String, (StatusCode, String)> {
    let channel = lazy_channel(addr).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let mut admin = kuberaft_proto::admin::admin_client::AdminClient::new(channel);
    let mut req = tonic::Request::new(kuberaft_proto::admin::TransferLeadershipRequest { to: 0 });
    req.set_timeout(std::time::Duration::from_secs(5));
    match admin.transfer_leadership(req).await {
        Ok(r) => {
            let r = r.into_inner();
            Ok(format!("leader is now member {}", r.leader_id))
        }
        Err(e) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("transfer failed: {}", e.message()),
        )),
    }
}

/// The address to reach a listener on this host: an unspecified listen
/// address (0.0.0.0, ::) is reached through loopback.
pub fn local_addr(listen: std::net::SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    std::net::SocketAddr::new(ip, listen.port()).to_string()
}
