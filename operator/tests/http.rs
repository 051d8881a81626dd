//! The operator's /livez, /readyz and /metrics, over real HTTP.

use std::sync::Arc;

use kuberaft_operator::health::Health;
use kuberaft_operator::http::router;
use kuberaft_operator::metrics::{Exporter, Metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

#[tokio::test]
async fn health_and_metrics_endpoints() {
    let health = Health::default();
    let metrics = Metrics::default();
    metrics.reconciles.inc();
    metrics.leader_change_to_status.observe(0.12);
    metrics
        .reconcile_errors
        .get_or_create(&kuberaft_operator::metrics::ReasonLabel {
            reason: "MemberUnreachable".to_string(),
        })
        .inc();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(health.clone(), Arc::new(Exporter::new(&metrics)));
    tokio::spawn(async move { axum::serve(listener, app).await });

    assert_eq!(get(addr, "/livez").await.0, 200);
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(code, 503, "not ready before the caches sync");
    assert!(body.contains("waiting"), "{body}");
    health.set_ready(true);
    assert_eq!(get(addr, "/readyz").await.0, 200);

    let (code, text) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for series in [
        "kuberaft_operator_reconciles_total 1",
        "kuberaft_operator_reconcile_errors_total{reason=\"MemberUnreachable\"} 1",
        "kuberaft_operator_status_updates_total",
        "kuberaft_operator_applies_total",
        "kuberaft_operator_leader_change_to_status_seconds_bucket",
        "kuberaft_operator_watched_clusters",
    ] {
        assert!(text.contains(series), "no {series} in\n{text}");
    }

    // A member watch that panics must not leave a live, ready operator doing nothing.
    health
        .spawn("watch of member demo-0".to_string(), async {
            panic!("bug")
        })
        .await
        .expect("the wrapper survives");
    let (code, body) = get(addr, "/livez").await;
    assert_eq!(code, 500);
    assert!(body.contains("watch of member demo-0 panicked"), "{body}");
    assert_eq!(get(addr, "/readyz").await.0, 503);
}
