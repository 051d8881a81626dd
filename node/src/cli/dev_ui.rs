//! `raftctl dev --ui`: the web view of the local cluster, with actions on
//! the member processes raftctl runs — put a value, kill / restart / pause /
//! resume a member, kill the leader, cut a member off from its peers and
//! heal it. The page is the members' own (`crate::ui`); the events come from
//! every member's admin.v1 WatchEvents, merged here.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::ui::{ActionParams, action_answer, aggregate, sse};

/// What the page asks raftctl dev to do with its processes.
pub struct DevAction {
    pub action: String,
    pub params: ActionParams,
    pub reply: oneshot::Sender<Result<String, (StatusCode, String)>>,
}

/// The actions the dev page offers.
pub const ACTIONS: [&str; 8] = [
    "put",
    "kill_leader",
    "kill",
    "restart",
    "pause",
    "resume",
    "cut_off",
    "heal",
];

#[derive(Clone)]
struct DevUi {
    members: Vec<aggregate::Target>,
    actions: mpsc::Sender<DevAction>,
}

/// Binds the web view's address; an error says what to do.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on --ui-listen {addr}: {e}; choose another address with --ui-listen")
    })
}

/// Serves the page until the process ends.
pub fn serve(
    listener: TcpListener,
    members: Vec<aggregate::Target>,
    actions: mpsc::Sender<DevAction>,
) {
    let app = Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui") }))
        .route("/ui/config", get(config))
        .route("/ui/events", get(events))
        .route("/ui/actions/{action}", post(action))
        .with_state(DevUi { members, actions })
        .merge(crate::ui::assets());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the web view stopped");
        }
    });
}

async fn config() -> impl IntoResponse {
    axum::Json(json!({"mode": "dev", "member_id": 0, "actions": ACTIONS}))
}

async fn events(State(ui): State<DevUi>) -> impl IntoResponse {
    let (tx, rx) = mpsc::channel(2048);
    let members = ui.members.clone();
    aggregate::watch_members(tx, move || members.clone(), None);
    sse(rx)
}

async fn action(
    State(ui): State<DevUi>,
    Path(action): Path<String>,
    Query(params): Query<ActionParams>,
) -> Response {
    if !ACTIONS.contains(&action.as_str()) {
        return action_answer(Err((
            StatusCode::NOT_FOUND,
            format!("no action {action:?}"),
        )));
    }
    let (reply, answer) = oneshot::channel();
    let asked = ui
        .actions
        .send(DevAction {
            action,
            params,
            reply,
        })
        .await;
    if asked.is_err() {
        return action_answer(Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "raftctl dev is stopping".into(),
        )));
    }
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok(r)) => action_answer(r),
        _ => action_answer(Err((
            StatusCode::GATEWAY_TIMEOUT,
            "no answer from raftctl dev".into(),
        ))),
    }
}

/// POSTs to a member's HTTP port (its `--ui-actions` endpoints) and returns
/// the answer's message.
pub async fn post_to_member(http_addr: &str, path: &str) -> Result<String, String> {
    let talk = async {
        let mut s = tokio::net::TcpStream::connect(http_addr)
            .await
            .map_err(|e| format!("cannot reach {http_addr}: {e}"))?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {http_addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("cannot write to {http_addr}: {e}"))?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .await
            .map_err(|e| format!("cannot read from {http_addr}: {e}"))?;
        Ok::<_, String>(String::from_utf8_lossy(&out).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(2), talk)
        .await
        .map_err(|_| format!("{http_addr} did not answer within 2 s (paused?)"))??;
    let ok = text.starts_with("HTTP/1.1 200");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    if ok { Ok(message) } else { Err(message) }
}
