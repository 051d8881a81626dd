//! The HTTP port: Prometheus `/metrics`, and `/livez` and `/readyz` for
//! probes and people.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kuberaft_proto::admin::StatusResponse;
use tokio::sync::watch;

use super::liveness::Pulse;
use crate::metrics::Metrics;

#[derive(Clone)]
struct HttpState {
    metrics: Metrics,
    status: watch::Receiver<StatusResponse>,
    pulse: Pulse,
}

pub fn router(metrics: Metrics, status: watch::Receiver<StatusResponse>, pulse: Pulse) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(HttpState {
            metrics,
            status,
            pulse,
        })
}

/// Alive = the Raft event loop turns (liveness.rs).
async fn livez(State(s): State<HttpState>) -> impl IntoResponse {
    match s.pulse.stuck() {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn metrics_text(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Ready = serving: a leader is known and this member has caught up.
async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let st = s.status.borrow().clone();
    if st.serving {
        (
            StatusCode::OK,
            format!("serving (leader {}, term {})\n", st.leader_id, st.term),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not serving: leader {} (0 = none), term {}, applied {} of commit {}\n",
                st.leader_id, st.term, st.applied_index, st.commit_index
            ),
        )
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
