//! Optional leader election among operator replicas through a `coordination.k8s.io/v1` Lease:
//! only the holder reconciles. A replica that loses the lease exits, so that it never acts on a
//! stale belief that it leads; its restart makes it a candidate again.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica (its pod name).
    pub identity: String,
    /// How long a holder that stopped renewing keeps the lease.
    pub duration: Duration,
    /// How long the holder goes on acting without a successful renewal: shorter than
    /// `duration`, so it has stopped before another replica can take the lease (client-go's
    /// renewDeadline; it uses 10 s of a 15 s lease). Every renewal request is cut off by it, so
    /// a request that hangs cannot keep the holder acting.
    pub renew_deadline: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// The operator's defaults (client-go's): a 15 s lease, renewed every 2 s, given up after
    /// 10 s without a renewal.
    pub fn new(name: String, namespace: String, identity: String) -> LeaseConfig {
        LeaseConfig {
            name,
            namespace,
            identity,
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
        }
    }
}

enum Outcome {
    Held,
    HeldByOther(String),
}

/// Waits until this replica holds the lease.
pub async fn acquire(client: &Client, cfg: &LeaseConfig) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    loop {
        match try_take(&api, cfg).await {
            Ok(Outcome::Held) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "acquired the operator lease");
                return Ok(());
            }
            Ok(Outcome::HeldByOther(holder)) => {
                tracing::debug!(%holder, "the operator lease is held by another replica")
            }
            Err(error) => tracing::warn!(%error, "could not take the operator lease"),
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}

/// Renews the lease until it is lost; returns why. It is lost when another replica holds it,
/// or when no renewal succeeded for `renew_deadline` (a hung request included): the caller
/// stops acting then, while the lease it last wrote is still valid for `duration -
/// renew_deadline`, so two replicas never act at once (up to the clock rates of the two).
pub async fn hold(client: Client, cfg: LeaseConfig) -> Error {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    // When the request of the last successful renewal was sent: the renewTime it wrote is no
    // earlier than that.
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.renew_every).await;
        let left = cfg.renew_deadline.saturating_sub(last_renewal.elapsed());
        let sent = tokio::time::Instant::now();
        let outcome = match tokio::time::timeout(left, try_take(&api, &cfg)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Fatal(format!(
                "the renewal request had no answer within {left:?}"
            ))),
        };
        match outcome {
            Ok(Outcome::Held) => last_renewal = sent,
            Ok(Outcome::HeldByOther(holder)) => {
                return Error::LeaseLost(format!("{} (now held by {holder})", cfg.name));
            }
            Err(error) => {
                tracing::warn!(%error, "could not renew the operator lease");
                if last_renewal.elapsed() >= cfg.renew_deadline {
                    return Error::LeaseLost(format!(
                        "{} (not renewed for {:?}, the renew deadline; it expires {:?} after the last renewal)",
                        cfg.name, cfg.renew_deadline, cfg.duration
                    ));
                }
            }
        }
    }
}

/// Gives the lease up if this replica holds it (on a clean shutdown), so a standby takes over
/// at once instead of after the lease's duration. Best effort: a failure leaves the lease to
/// expire.
pub async fn release(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    spec.lease_duration_seconds = Some(1);
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %cfg.name, "released the operator lease"),
        Err(error) => tracing::warn!(%error, "could not release the operator lease; it expires"),
    }
}

/// Takes or renews the lease if it is free, expired or already ours. Conflicting writes fail
/// on the resourceVersion, so two replicas never both believe they took it.
async fn try_take(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<Outcome> {
    let now = Timestamp::now();
    let seconds = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX);
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await?;
            Ok(Outcome::Held)
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let ours = holder == cfg.identity;
            let expired = spec.renew_time.as_ref().is_none_or(|t| {
                let d = SignedDuration::from_secs(i64::from(
                    spec.lease_duration_seconds.unwrap_or(seconds),
                ));
                t.0 + d < now
            });
            if !ours && !expired && !holder.is_empty() {
                return Ok(Outcome::HeldByOther(holder));
            }
            if !ours {
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                spec.holder_identity = Some(cfg.identity.clone());
            }
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(seconds);
            let name = lease.name_any();
            api.replace(&name, &PostParams::default(), &lease).await?;
            Ok(Outcome::Held)
        }
    }
}
