//! Startup, liveness and readiness probes, run from the host against the pod's IP (or with
//! `docker exec`) at their periods, with their thresholds, as a kubelet's prober does.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::docker::cli::docker_async;

/// A probe's verdict once its threshold was reached.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The startup probe passed (or there is none): liveness and readiness begin.
    Started,
    /// The startup probe failed `failureThreshold` times: the container is restarted.
    StartupFailed(String),
    /// The liveness probe failed `failureThreshold` times: the container is restarted.
    LivenessFailed(String),
    Ready(bool),
}

/// Where probes reach the container.
#[derive(Clone, Debug)]
pub struct Target {
    pub ip: String,
    /// The Docker container, for exec probes.
    pub docker: String,
    pub spec: Container,
}

impl Target {
    /// A port given by number or by the name of a container port.
    fn port(&self, port: &IntOrString) -> Result<u16, String> {
        match port {
            IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is invalid")),
            IntOrString::String(name) => self
                .spec
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("no container port named {name}")),
        }
    }
}

/// One attempt: Ok, or why it failed.
async fn attempt(target: &Target, probe: &Probe) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let work = async {
        if let Some(h) = &probe.http_get {
            if h.scheme.as_deref().is_some_and(|s| s != "HTTP") {
                return Err("only HTTP probes are stood in for".to_string());
            }
            let port = target.port(&h.port)?;
            let code = http_get(&target.ip, port, h.path.as_deref().unwrap_or("/")).await?;
            return if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            };
        }
        if let Some(g) = &probe.grpc {
            let port = u16::try_from(g.port).map_err(|_| format!("port {} is invalid", g.port))?;
            return grpc_health(&target.ip, port, g.service.clone().unwrap_or_default()).await;
        }
        if let Some(t) = &probe.tcp_socket {
            let port = target.port(&t.port)?;
            return tokio::net::TcpStream::connect((target.ip.as_str(), port))
                .await
                .map(|_| ())
                .map_err(|e| format!("dial tcp {}:{port}: {e}", target.ip));
        }
        if let Some(e) = &probe.exec {
            let mut args = vec!["exec".to_string(), target.docker.clone()];
            args.extend(e.command.clone().unwrap_or_default());
            return docker_async(&args)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
        Err("the probe has no handler".to_string())
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe timed out after {timeout:?}")),
    }
}

async fn http_get(ip: &str, port: u16, path: &str) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect((ip, port))
        .await
        .map_err(|e| format!("dial tcp {ip}:{port}: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP to {ip}:{port}: {e}"))?;
    let driver = tokio::spawn(connection);
    let request = http::Request::get(path)
        .header("host", format!("{ip}:{port}"))
        .header("user-agent", "kube-probe/1.32")
        .body(String::new())
        .map_err(|e| format!("HTTP request: {e}"))?;
    let response = sender.send_request(request).await;
    driver.abort();
    response
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("HTTP GET {path} on {ip}:{port}: {e}"))
}

async fn grpc_health(ip: &str, port: u16, service: String) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("gRPC to {ip}:{port}: {e}"))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
        .map_err(|s| format!("gRPC health check: {}", s.message()))?;
    match ServingStatus::try_from(answer.into_inner().status) {
        Ok(ServingStatus::Serving) => Ok(()),
        other => Err(format!("service unhealthy (responded with {other:?})")),
    }
}

/// Counts consecutive results against a probe's thresholds.
#[derive(Debug)]
struct Threshold {
    success: i32,
    failure: i32,
    successes: i32,
    failures: i32,
}

impl Threshold {
    fn of(probe: &Probe) -> Threshold {
        Threshold {
            success: probe.success_threshold.unwrap_or(1).max(1),
            failure: probe.failure_threshold.unwrap_or(3).max(1),
            successes: 0,
            failures: 0,
        }
    }

    /// Some(true/false) once a threshold is reached by this result.
    fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes += 1;
            (self.successes >= self.success).then_some(true)
        } else {
            self.successes = 0;
            self.failures += 1;
            (self.failures >= self.failure).then_some(false)
        }
    }
}

fn period(probe: &Probe) -> Duration {
    Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64)
}

fn initial_delay(probe: &Probe) -> Duration {
    Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64)
}

/// Probes a container that just started, sending each verdict as it is reached. Ends when the
/// receiver is gone; abort it when the container stops.
pub fn spawn(target: Target, verdicts: mpsc::Sender<Verdict>) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Some(startup) = target.spec.startup_probe.clone() {
            tokio::time::sleep(initial_delay(&startup)).await;
            let mut t = Threshold::of(&startup);
            t.success = 1;
            loop {
                let result = attempt(&target, &startup).await;
                match t.record(result.is_ok()) {
                    Some(true) => break,
                    Some(false) => {
                        let why = result.err().unwrap_or_default();
                        let _ = verdicts.send(Verdict::StartupFailed(why)).await;
                        return;
                    }
                    None => tokio::time::sleep(period(&startup)).await,
                }
            }
        }
        if verdicts.send(Verdict::Started).await.is_err() {
            return;
        }
        // Both run in this task, so that aborting it stops them.
        let liveness = async {
            let Some(p) = target.spec.liveness_probe.clone() else {
                return;
            };
            tokio::time::sleep(initial_delay(&p)).await;
            let mut t = Threshold::of(&p);
            t.success = 1;
            loop {
                let result = attempt(&target, &p).await;
                if t.record(result.is_ok()) == Some(false) {
                    let why = result.err().unwrap_or_default();
                    let _ = verdicts.send(Verdict::LivenessFailed(why)).await;
                    return;
                }
                tokio::time::sleep(period(&p)).await;
            }
        };
        let readiness = async {
            let Some(p) = target.spec.readiness_probe.clone() else {
                let _ = verdicts.send(Verdict::Ready(true)).await;
                return;
            };
            tokio::time::sleep(initial_delay(&p)).await;
            let mut t = Threshold::of(&p);
            let mut ready = None;
            loop {
                let ok = attempt(&target, &p).await.is_ok();
                if let Some(verdict) = t.record(ok)
                    && ready != Some(verdict)
                {
                    ready = Some(verdict);
                    if verdicts.send(Verdict::Ready(verdict)).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(period(&p)).await;
            }
        };
        tokio::join!(liveness, readiness);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_count_consecutive_results() {
        let probe = Probe {
            success_threshold: Some(2),
            failure_threshold: Some(3),
            ..Probe::default()
        };
        let mut t = Threshold::of(&probe);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None, "a success resets the failures");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
    }
}
