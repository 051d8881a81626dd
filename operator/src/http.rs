//! The operator's HTTP endpoints: `/livez`, `/readyz` and Prometheus `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::{Error, Result};
use crate::health::Health;
use crate::metrics::Exporter;

#[derive(Clone)]
struct AppState {
    health: Health,
    exporter: Arc<Exporter>,
}

pub fn router(health: Health, exporter: Arc<Exporter>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState { health, exporter })
}

/// Serves the endpoints on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, health: Health, exporter: Arc<Exporter>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    tracing::info!(%addr, "serving /livez, /readyz and /metrics");
    axum::serve(listener, router(health, exporter))
        .await
        .map_err(|source| Error::Listen { addr, source })
}

async fn livez(State(state): State<AppState>) -> Response {
    match state.health.fatal() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.health.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else if let Some(why) = state.health.fatal() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the RaftCluster cache to sync (or for the leader lease)\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.exporter.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}
