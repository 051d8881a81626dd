//! The real-API-server tier. Runs when `KUBEBUILDER_ASSETS` names a folder with `kube-apiserver`
//! and `etcd` (the envtest convention) and otherwise says that it is skipped and why. Checks:
//! the CRD is accepted and established; bad specs are rejected by the server with the field named;
//! a reconcile applies every object and patches status; printer columns and the scale subresource
//! work; an unchanged cluster costs no writes; and, with the whole controller running, how long a
//! leader change takes to reach the RaftCluster's status (printed as p50/p99).

mod support;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::crd::CustomResourceExt;
use kube::{Client, ResourceExt};
use kuberaft_operator::crd::RaftCluster;
use kuberaft_operator::health::Health;
use kuberaft_operator::members::watch::MemberWatches;
use kuberaft_operator::metrics::Metrics;
use kuberaft_operator::reconcile::{Context, reconcile};
use kuberaft_operator::resources::BuildConfig;
use serde_json::{Value, json};
use support::envtest::{TestApiServer, assets};
use support::fake_admin::FakeCluster;

fn main() -> ExitCode {
    let assets = match assets() {
        Ok(a) => a,
        Err(why) => {
            println!("apiserver tier SKIPPED: {why}.");
            println!(
                "  To run it: tests/run --test apiserver (it unpacks the tools and sets KUBEBUILDER_ASSETS)"
            );
            // Where every tier must run (CI), a skip is a failure.
            if std::env::var("KUBERAFT_NO_SKIP").is_ok_and(|v| v == "1") {
                println!("apiserver tier: FAILED: skipped, and KUBERAFT_NO_SKIP=1");
                return ExitCode::FAILURE;
            }
            return ExitCode::SUCCESS;
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let server = TestApiServer::start(&assets).await;
        let client = server.client.clone();
        let mut passed = 0;
        for (name, check) in checks() {
            let started = Instant::now();
            check(client.clone()).await;
            passed += 1;
            println!("apiserver tier: {name} ... ok ({:.1?})", started.elapsed());
        }
        match std::env::var("KUBERAFT_IDLE_SECONDS").ok().and_then(|v| v.parse().ok()) {
            Some(seconds) => {
                idle_operator(&server, seconds).await;
                passed += 1;
            }
            None => println!(
                "apiserver tier: the idle-operator measurement is skipped (set KUBERAFT_IDLE_SECONDS, e.g. 70, to run it)"
            ),
        }
        println!("apiserver tier: {passed} passed, 0 failed");
        drop(server);
    });
    ExitCode::SUCCESS
}

type Check = fn(Client) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

fn checks() -> Vec<(&'static str, Check)> {
    vec![
        ("the CRD is accepted and established", |c| {
            Box::pin(crd_is_established(c))
        }),
        ("bad specs are rejected with the field named", |c| {
            Box::pin(bad_specs_are_rejected(c))
        }),
        (
            "a reconcile applies objects and status; columns and scale work",
            |c| Box::pin(reconcile_against_the_server(c)),
        ),
        (
            "a TLS cluster gets its CA and member certificate; members are watched over TLS",
            |c| Box::pin(tls_cluster(c)),
        ),
        ("the controller shows a new leader in status quickly", |c| {
            Box::pin(leader_change_latency(c))
        }),
        ("operator replicas elect one leader through a Lease", |c| {
            Box::pin(lease_election(c))
        }),
    ]
}

async fn crd_is_established(client: Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    crds.patch(
        "raftclusters.kuberaft.io",
        &PatchParams::apply("kuberaft-envtest").force(),
        &Patch::Apply(RaftCluster::crd()),
    )
    .await
    .expect("the API server accepts the CRD");
    let start = Instant::now();
    loop {
        let crd = crds.get("raftclusters.kuberaft.io").await.expect("the CRD");
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "CRD not established in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cluster(name: &str, spec: Value) -> RaftCluster {
    serde_json::from_value(json!({
        "apiVersion": "kuberaft.io/v1alpha1", "kind": "RaftCluster",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .expect("a RaftCluster")
}

async fn rejected(api: &Api<RaftCluster>, rc: &RaftCluster) -> String {
    match api.create(&PostParams::default(), rc).await {
        Ok(_) => panic!("the API server accepted {:?}", rc.spec),
        Err(e) => e.to_string(),
    }
}

async fn bad_specs_are_rejected(client: Client) {
    let api: Api<RaftCluster> = Api::namespaced(client, "default");
    let too_many = rejected(&api, &cluster("bad-replicas", json!({"replicas": 10}))).await;
    assert!(too_many.contains("spec.replicas"), "{too_many}");
    let inverted = rejected(
        &api,
        &cluster(
            "bad-timeouts",
            json!({"raft": {"electionTimeoutMinMs": 300, "electionTimeoutMaxMs": 150}}),
        ),
    )
    .await;
    assert!(
        inverted.contains("spec.raft.electionTimeoutMinMs must be less than"),
        "{inverted}"
    );
    let heartbeat = rejected(
        &api,
        &cluster(
            "bad-heartbeat",
            json!({"raft": {"heartbeatIntervalMs": 150}}),
        ),
    )
    .await;
    assert!(
        heartbeat.contains("spec.raft.heartbeatIntervalMs"),
        "{heartbeat}"
    );

    // 53 characters: its pods' controller-revision-hash label would exceed 63.
    let long = "a".repeat(53);
    let too_long = rejected(&api, &cluster(&long, json!({}))).await;
    assert!(too_long.contains("at most 52 characters"), "{too_long}");
    // A valid Kubernetes name (DNS-1123 subdomain), but not a Service name.
    let dotted = rejected(&api, &cluster("my.cluster", json!({}))).await;
    assert!(dotted.contains("at most 52 characters"), "{dotted}");
    let fifty_two = "b".repeat(52);
    api.create(&PostParams::default(), &cluster(&fifty_two, json!({})))
        .await
        .expect("a 52-character name is accepted");
    api.delete(&fifty_two, &Default::default())
        .await
        .expect("delete");

    let created = api
        .create(
            &PostParams::default(),
            &cluster(
                "immutable",
                json!({"storage": {"storageClassName": "fast"}}),
            ),
        )
        .await
        .expect("a valid cluster is accepted");
    assert_eq!(
        created.spec.raft.election_timeout_min_ms, 150,
        "defaults are applied"
    );
    assert_eq!(created.spec.replicas, 3);
    let changed = api
        .patch(
            "immutable",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"storage": {"storageClassName": "slow"}}})),
        )
        .await
        .expect_err("the storage class cannot change")
        .to_string();
    assert!(
        changed.contains("spec.storage.storageClassName is immutable"),
        "{changed}"
    );
    api.delete("immutable", &Default::default())
        .await
        .expect("delete");
}

fn context(client: Client, fake: &FakeCluster) -> Arc<Context> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    std::mem::forget(rx);
    Arc::new(Context::new(
        client,
        BuildConfig::default(),
        Arc::new(MemberWatches::new(
            Arc::new(fake.locator()),
            tx,
            Health::default(),
        )),
        Metrics::default(),
        "envtest".to_string(),
        None,
    ))
}

async fn reconcile_against_the_server(client: Client) {
    let api: Api<RaftCluster> = Api::namespaced(client.clone(), "default");
    let fake = FakeCluster::new("demo", 3);
    fake.serve(3).await;
    fake.elect(1);
    let ctx = context(client.clone(), &fake);
    ctx.watches.ensure("default", "demo", 3);
    support::eventually(Duration::from_secs(3), "members observed", || {
        (ctx.watches
            .view("default", "demo")
            .values()
            .filter(|o| o.reachable)
            .count()
            == 3)
            .then_some(())
    })
    .await;
    let rc = api
        .create(
            &PostParams::default(),
            &cluster("demo", json!({"replicas": 3})),
        )
        .await
        .expect("create demo");
    reconcile(Arc::new(rc), ctx.clone())
        .await
        .expect("reconcile");

    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let sts = sts.get("demo").await.expect("the StatefulSet exists");
    assert_eq!(sts.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(sts.owner_references()[0].kind, "RaftCluster");
    assert_eq!(
        sts.managed_fields()
            .iter()
            .filter_map(|f| f.manager.clone())
            .collect::<Vec<_>>(),
        ["kuberaft-operator"]
    );
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    for name in ["demo", "demo-peers", "demo-leader"] {
        services
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("Service {name}: {e}"));
    }
    let rc = api.get("demo").await.expect("demo");
    let status = rc.status.clone().expect("status was written");
    assert_eq!(status.leader.as_deref(), Some("demo-0"));
    assert_eq!(status.term, 1);
    assert!(status.bootstrap.is_some());

    // An unchanged cluster: not one write.
    let (applies, updates) = (ctx.metrics.applies.get(), ctx.metrics.status_updates.get());
    reconcile(Arc::new(rc.clone()), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(
        ctx.metrics.applies.get(),
        applies,
        "no apply of unchanged objects"
    );
    assert_eq!(
        ctx.metrics.status_updates.get(),
        updates,
        "no status write that changes nothing"
    );
    let again = api.get("demo").await.expect("demo");
    assert_eq!(again.resource_version(), rc.resource_version());

    // Printer columns, as `kubectl get raftclusters` asks for them.
    let request = http::Request::get("/apis/kuberaft.io/v1alpha1/namespaces/default/raftclusters")
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .expect("request");
    let table: Value = serde_json::from_str(&client.request_text(request).await.expect("table"))
        .expect("JSON table");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["Name", "Ready", "Leader", "Term", "Phase", "Age"]);
    let row = &table["rows"][0]["cells"];
    println!("  kubectl get raftclusters: {columns:?} / {row}");
    assert_eq!(row[0], "demo");
    assert_eq!(row[2], "demo-0");
    assert_eq!(row[3], 1);

    // kubectl scale raftcluster demo --replicas 5
    api.patch_scale(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .expect("scale");
    assert_eq!(api.get("demo").await.expect("demo").spec.replicas, 5);
    let scale = api.get_scale("demo").await.expect("the scale subresource");
    assert_eq!(
        scale.status.and_then(|s| s.selector).as_deref(),
        Some("app.kubernetes.io/instance=demo,app.kubernetes.io/name=kuberaft")
    );
}

/// `spec.tls` against the server: the operator's Secrets are accepted (type kubernetes.io/tls),
/// kept on the next reconcile, mounted by the StatefulSet, and what the operator dials the
/// members with (members served with the Secret's files, client certificates required).
async fn tls_cluster(client: Client) {
    let api: Api<RaftCluster> = Api::namespaced(client.clone(), "default");
    let fake = FakeCluster::new("secure", 3);
    let ctx = context(client.clone(), &fake);
    let rc = api
        .create(
            &PostParams::default(),
            &cluster(
                "secure",
                json!({"replicas": 3, "tls": {"enabled": true, "clientCertAuth": true}}),
            ),
        )
        .await
        .expect("create secure");
    reconcile(Arc::new(rc.clone()), ctx.clone())
        .await
        .expect("reconcile");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let ca = secrets.get("secure-ca").await.expect("the CA Secret");
    let member = secrets.get("secure-tls").await.expect("the member Secret");
    assert_eq!(member.owner_references()[0].kind, "RaftCluster");
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let sts = sts.get("secure").await.expect("the StatefulSet exists");
    let volumes = sts
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.volumes)
        .unwrap_or_default();
    assert!(
        volumes
            .iter()
            .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("secure-tls")),
        "{volumes:?}"
    );

    // Members serving the Secret's files: the operator reaches them over mutual TLS.
    let data = member.data.clone().unwrap_or_default();
    let dir = tempfile::tempdir().expect("a temporary folder");
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        let bytes = data
            .get(key)
            .unwrap_or_else(|| panic!("{key} in secure-tls"));
        std::fs::write(dir.path().join(key), &bytes.0).expect("write");
    }
    let files = kuberaft_node::tls::TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        ca: Some(dir.path().join("ca.crt")),
    };
    for ordinal in 0..3 {
        fake.serve_member_tls(ordinal, files.clone()).await;
    }
    fake.elect(1);
    // A fresh operator (the first one's watches dial the addresses the members had then).
    let ctx = context(client.clone(), &fake);
    let rc = api.get("secure").await.expect("secure");
    reconcile(Arc::new(rc), ctx.clone())
        .await
        .expect("reconcile");
    support::eventually(Duration::from_secs(5), "members observed over TLS", || {
        (ctx.watches
            .view("default", "secure")
            .values()
            .filter(|o| o.reachable)
            .count()
            == 3)
            .then_some(())
    })
    .await;
    // Switching TLS off on a running cluster is refused, with the reason.
    let err = api
        .patch(
            "secure",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tls": {"enabled": false}}})),
        )
        .await
        .expect_err("turning TLS off is rejected");
    assert!(err.to_string().contains("spec.tls.enabled"), "{err}");

    // Nothing was reissued: the same CA and certificate.
    assert_eq!(secrets.get("secure-ca").await.expect("CA").data, ca.data);
    assert_eq!(
        secrets.get("secure-tls").await.expect("member").data,
        member.data
    );
}

/// The whole controller against the server: elect new leaders in the fake cluster and time
/// until the RaftCluster's status (read back from the API server) shows each.
async fn leader_change_latency(client: Client) {
    let api: Api<RaftCluster> = Api::namespaced(client.clone(), "default");
    let fake = FakeCluster::new("live", 3);
    fake.serve(3).await;
    fake.elect(1);
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let health = Health::default();
    let watches = Arc::new(MemberWatches::new(
        Arc::new(fake.locator()),
        tx,
        health.clone(),
    ));
    let (stores, streams) = kuberaft_operator::controller::owned_stores(&client);
    let ctx = Arc::new(Context::new(
        client.clone(),
        BuildConfig::default(),
        watches,
        Metrics::default(),
        "envtest".to_string(),
        Some(stores),
    ));
    let controller = tokio::spawn(kuberaft_operator::controller::run(
        ctx.clone(),
        streams,
        rx,
        health,
        std::future::pending(),
    ));
    api.create(
        &PostParams::default(),
        &cluster("live", json!({"replicas": 3})),
    )
    .await
    .expect("create live");
    let term_shown = |term: i64| {
        let api = api.clone();
        async move {
            let start = Instant::now();
            loop {
                let rc = api.get_status("live").await.expect("live");
                if rc
                    .status
                    .as_ref()
                    .is_some_and(|s| s.term == term && s.leader.is_some())
                {
                    return start.elapsed();
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "term {term} not in status"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    term_shown(1).await;
    let rounds: u64 = std::env::var("KUBERAFT_LATENCY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut samples = Vec::new();
    for round in 0..rounds {
        fake.elect(round % 3 + 1);
        let term = i64::try_from(round + 2).expect("term");
        samples.push(term_shown(term).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples.sort();
    let pct = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    println!(
        "  leader change -> RaftCluster status (read back from the API server), {} changes: p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        pct(50),
        pct(99),
        samples[samples.len() - 1]
    );
    assert!(pct(99) <= Duration::from_secs(1), "p99 above one second");
    let rc = api.get("live").await.expect("live");
    let leader = rc.status.and_then(|s| s.leader).expect("a leader");
    assert_eq!(leader, format!("live-{}", (rounds - 1) % 3));
    controller.abort();
}

/// Reads one counter from the operator's /metrics.
async fn counter(addr: std::net::SocketAddr, name: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("operator /metrics");
    let request = "GET /metrics HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The operator binary with 10 RaftClusters whose members never answer (no pods run here):
/// its resident memory, and its API writes over `seconds` once settled.
async fn idle_operator(server: &TestApiServer, seconds: u64) {
    let port = support::envtest::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut operator = std::process::Command::new(env!("CARGO_BIN_EXE_kuberaft-operator"))
        .args([
            "run",
            "--http-listen",
            &addr.to_string(),
            "--log-format",
            "json",
        ])
        .env("KUBECONFIG", &server.kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start kuberaft-operator");
    let api: Api<RaftCluster> = Api::namespaced(server.client.clone(), "default");
    for i in 0..10 {
        api.create(
            &PostParams::default(),
            &cluster(&format!("idle-{i}"), json!({"replicas": 3})),
        )
        .await
        .expect("create an idle cluster");
    }
    // Settle: every cluster applied and its status written.
    let start = Instant::now();
    loop {
        let list = api.list(&Default::default()).await.expect("list");
        let settled = list
            .items
            .iter()
            .filter(|rc| rc.name_any().starts_with("idle-"))
            .all(|rc| rc.status.as_ref().is_some_and(|s| s.bootstrap.is_some()));
        if settled {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "idle clusters never settled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = |a: u64, s: u64| a + s;
    let before = writes(
        counter(addr, "kuberaft_operator_applies_total").await,
        counter(addr, "kuberaft_operator_status_updates_total").await,
    );
    let reconciles_before = counter(addr, "kuberaft_operator_reconciles_total").await;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = writes(
        counter(addr, "kuberaft_operator_applies_total").await,
        counter(addr, "kuberaft_operator_status_updates_total").await,
    );
    let reconciles = counter(addr, "kuberaft_operator_reconciles_total").await - reconciles_before;
    let rss = resident_kib(operator.id());
    let _ = operator.kill();
    let _ = operator.wait();
    println!(
        "apiserver tier: idle operator, 10 clusters, {seconds} s: {} API writes, {reconciles} reconciles, {:.1} MiB resident",
        after - before,
        rss as f64 / 1024.0
    );
    assert_eq!(after, before, "an idle operator writes nothing");
    assert!(rss < 50 * 1024, "resident memory {rss} KiB is above 50 MiB");
    for i in 0..10 {
        let _ = api.delete(&format!("idle-{i}"), &Default::default()).await;
    }
}

async fn lease_election(client: Client) {
    use kuberaft_operator::lease::{self, LeaseConfig};
    let cfg = |identity: &str| LeaseConfig {
        name: "kuberaft-operator".to_string(),
        namespace: "default".to_string(),
        identity: identity.to_string(),
        duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1_300),
        renew_every: Duration::from_millis(300),
    };
    lease::acquire(&client, &cfg("replica-a"))
        .await
        .expect("a takes the free lease");
    let a = tokio::spawn(lease::hold(client.clone(), cfg("replica-a")));
    let b_early = tokio::time::timeout(
        Duration::from_secs(3),
        lease::acquire(&client, &cfg("replica-b")),
    )
    .await;
    assert!(b_early.is_err(), "b must not take a lease that a renews");
    a.abort(); // replica a stops renewing (it died)
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(6),
        lease::acquire(&client, &cfg("replica-b")),
    )
    .await
    .expect("b takes the lease once it expires")
    .expect("acquire");
    println!(
        "  the standby took the lease {:.1?} after the holder stopped",
        started.elapsed()
    );
    let lost = tokio::time::timeout(
        Duration::from_secs(3),
        lease::hold(client.clone(), cfg("replica-a")),
    )
    .await
    .expect("a learns that it lost the lease");
    assert!(
        matches!(lost, kuberaft_operator::Error::LeaseLost(_)),
        "{lost}"
    );

    // A clean shutdown releases the lease: the standby takes it without waiting it out.
    let long = |identity: &str| LeaseConfig {
        duration: Duration::from_secs(600),
        ..cfg(identity)
    };
    lease::release(client.clone(), &long("replica-a")).await; // not a's: nothing changes
    tokio::time::timeout(
        Duration::from_secs(3),
        lease::acquire(&client, &long("replica-b")),
    )
    .await
    .expect("b still holds it")
    .expect("acquire");
    lease::release(client.clone(), &long("replica-b")).await;
    tokio::time::timeout(
        Duration::from_secs(60),
        lease::acquire(&client, &long("replica-a")),
    )
    .await
    .expect("a released lease is free at once, not after its 600 s")
    .expect("acquire");
}
