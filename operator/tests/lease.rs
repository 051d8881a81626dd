//! The operator's Lease against a mocked API server that stops answering: the holder must stop
//! acting (return from `hold`) within its renew deadline, before the lease it last wrote expires
//! and a standby may take over — a hung request must not keep it acting.

mod support;

use std::time::{Duration, Instant};

use http::Method;
use kuberaft_operator::Error;
use kuberaft_operator::lease::{self, LeaseConfig};
use support::api::mock_client;

#[tokio::test]
async fn a_holder_whose_renewal_hangs_gives_up_before_the_lease_expires() {
    let (client, mut api) = mock_client();
    let cfg = LeaseConfig {
        name: "kuberaft-operator".to_string(),
        namespace: "default".to_string(),
        identity: "replica-a".to_string(),
        duration: Duration::from_secs(30),
        renew_deadline: Duration::from_millis(800),
        renew_every: Duration::from_millis(100),
    };
    let started = Instant::now();
    let holder = tokio::spawn(lease::hold(client, cfg.clone()));
    // The renewal's GET arrives and is never answered.
    let (_, _, hung) = api
        .expect(
            Method::GET,
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/kuberaft-operator",
        )
        .await;
    let lost = tokio::time::timeout(cfg.duration, holder)
        .await
        .expect("the holder still acts when its lease may already be another's")
        .expect("no panic");
    drop(hung);
    assert!(
        matches!(&lost, Error::LeaseLost(why) if why.contains("renew deadline")),
        "{lost}"
    );
    println!(
        "the holder gave up {:.1?} after its last renewal",
        started.elapsed()
    );
}
