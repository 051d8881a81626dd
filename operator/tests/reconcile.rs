//! Reconcile scenarios against a mocked API server (support/api.rs) and a fake Raft cluster
//! behind real gRPC (support/fake_admin.rs): each test reads as the sequence of API calls one
//! reconcile makes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kuberaft_operator::crd::{RaftCluster, RaftClusterStatus};
use kuberaft_operator::health::Health;
use kuberaft_operator::members::watch::MemberWatches;
use kuberaft_operator::metrics::Metrics;
use kuberaft_operator::observe::RaftView;
use kuberaft_operator::reconcile::{Context, backoff, error_policy, reconcile};
use kuberaft_operator::resources::BuildConfig;
use kuberaft_operator::{Error, Result};
use serde_json::{Value, json};
use support::api::mock_client;
use support::eventually;
use support::fake_admin::FakeCluster;

fn cluster(replicas: i32) -> RaftCluster {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/demo.yaml");
    let text = std::fs::read_to_string(path).expect("fixture");
    let mut rc: RaftCluster = serde_yaml::from_str(&text).expect("fixture parses");
    rc.spec.replicas = replicas;
    rc
}

fn context(client: kube::Client, fake: &FakeCluster) -> Arc<Context> {
    context_with_stores(client, fake, None)
}

/// A Context whose reconciles read through `stores` (None: straight from the API).
fn context_with_stores(
    client: kube::Client,
    fake: &FakeCluster,
    stores: Option<kuberaft_operator::reconcile::OwnedStores>,
) -> Arc<Context> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    // Triggers are not consumed here: tests call reconcile themselves.
    std::mem::forget(rx);
    let watches = Arc::new(MemberWatches::new(
        Arc::new(fake.locator()),
        tx,
        Health::default(),
    ));
    Arc::new(Context::new(
        client,
        BuildConfig::default(),
        watches,
        Metrics::default(),
        "kuberaft-operator-test".to_string(),
        stores,
    ))
}

/// The StatefulSet as the API server would return it after `applied`, with `ready` ready pods.
fn statefulset(applied: &Value, ready: i32) -> StatefulSet {
    let mut sts: StatefulSet = serde_json::from_value(applied.clone()).expect("a StatefulSet");
    sts.status = Some(StatefulSetStatus {
        replicas: sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        ready_replicas: Some(ready),
        ..StatefulSetStatus::default()
    });
    sts
}

fn pod(name: &str, leader: bool) -> Pod {
    let mut labels = std::collections::BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "kuberaft".to_string()),
        ("app.kubernetes.io/instance".to_string(), "demo".to_string()),
    ]);
    if leader {
        labels.insert("kuberaft.io/role".to_string(), "leader".to_string());
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("default".to_string()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    }
}

fn start(rc: &RaftCluster, ctx: &Arc<Context>) -> tokio::task::JoinHandle<Result<Action>> {
    tokio::spawn(reconcile(Arc::new(rc.clone()), ctx.clone()))
}

fn with_status(rc: &RaftCluster, status: &Value) -> RaftCluster {
    let mut rc = rc.clone();
    rc.status = Some(serde_json::from_value(status.clone()).expect("a RaftClusterStatus"));
    rc
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

/// Waits until the operator's view of the members satisfies `check`.
async fn settle(ctx: &Context, what: &str, check: impl Fn(&RaftView) -> bool) {
    eventually(Duration::from_secs(3), what, || {
        check(&RaftView::from_members(
            &ctx.watches.view("default", "demo"),
        ))
        .then_some(())
    })
    .await;
}

/// Waits until the operator hears from `n` members.
async fn members_up(ctx: &Context, n: usize) {
    eventually(Duration::from_secs(3), "members reachable", || {
        let view = ctx.watches.view("default", "demo");
        (view.values().filter(|o| o.reachable).count() >= n).then_some(())
    })
    .await;
}

fn leader_is(name: &str, term: u64) -> impl Fn(&RaftView) -> bool {
    let name = name.to_string();
    move |v| v.term == term && v.leader.as_ref().map(|(n, _)| n.as_str()) == Some(name.as_str())
}

#[tokio::test]
async fn creating_a_cluster_applies_every_object_then_an_unchanged_cluster_writes_nothing() {
    let (client, mut api) = mock_client();
    let fake = FakeCluster::new("demo", 3); // no member is up yet
    let ctx = context(client, &fake);
    let rc = cluster(3);

    let task = start(&rc, &ctx);
    api.get_statefulset("demo", None).await;
    api.list_pods(&[]).await;
    let owned = api.apply_all("demo").await;
    assert_eq!(owned.statefulset["spec"]["replicas"], 3);
    assert_eq!(owned.peers["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(
        owned.leader["spec"]["selector"]["kuberaft.io/role"],
        "leader"
    );
    assert_eq!(owned.pdb["spec"]["minAvailable"], 2);
    assert_eq!(
        owned.client["metadata"]["ownerReferences"][0]["kind"],
        "RaftCluster"
    );
    let status = api.status(&rc).await;
    let action = task.await.expect("no panic").expect("reconciled");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(30)),
        "waits for a leader"
    );

    let initial = "1=demo-0@demo-0.demo-peers.default.svc.cluster.local:7000/7001,\
                   2=demo-1@demo-1.demo-peers.default.svc.cluster.local:7000/7001,\
                   3=demo-2@demo-2.demo-peers.default.svc.cluster.local:7000/7001";
    assert_eq!(
        status["bootstrap"]["initialMembers"], initial,
        "the bootstrap is recorded"
    );
    assert_eq!(status["bootstrap"]["replicas"], 3);
    assert_eq!(status["phase"], "Creating");
    assert_eq!(status["ready"], "0/3");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(condition(&status, "Progressing")["reason"], "Creating");
    assert_eq!(condition(&status, "LeaderElected")["status"], "False");
    assert_eq!(
        condition(&status, "Degraded")["status"],
        "False",
        "no alarm while creating"
    );
    let env = &owned.statefulset["spec"]["template"]["spec"]["containers"][0]["env"];
    let members_env = env
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == "KUBERAFT_INITIAL_MEMBERS"))
        .expect("initial members env");
    assert_eq!(members_env["value"], initial);

    // A trigger that arrives before the status write reached the operator's cache: the cached
    // object has no status yet, and still nothing is written again.
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&statefulset(&owned.statefulset, 0)))
        .await;
    api.list_pods(&[]).await;
    api.nothing_more().await;
    task.await.expect("no panic").expect("reconciled");

    // The same cluster again, as the API server now has it: reads, and not one write.
    let rc = with_status(&rc, &status);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&statefulset(&owned.statefulset, 0)))
        .await;
    api.list_pods(&[]).await;
    api.nothing_more().await;
    task.await.expect("no panic").expect("reconciled");
}

#[tokio::test]
async fn a_new_leader_reaches_status_moves_the_leader_label_and_is_announced() {
    let (client, mut api) = mock_client();
    let fake = FakeCluster::new("demo", 3);
    fake.serve(3).await;
    fake.elect(1);
    let ctx = context(client, &fake);
    ctx.watches.ensure("default", "demo", 3);
    members_up(&ctx, 3).await;
    settle(&ctx, "demo-0 leads in term 1", leader_is("demo-0", 1)).await;
    let rc = cluster(3);

    let task = start(&rc, &ctx);
    api.get_statefulset("demo", None).await;
    api.list_pods(&[
        pod("demo-0", false),
        pod("demo-1", false),
        pod("demo-2", false),
    ])
    .await;
    let owned = api.apply_all("demo").await;
    let patch = api.pod_label("demo-0").await;
    assert_eq!(
        patch,
        json!({"metadata": {"labels": {"kuberaft.io/role": "leader"}}})
    );
    let status = api.status(&rc).await;
    assert_eq!(
        api.event().await,
        (
            "Normal".into(),
            "LeaderElected".into(),
            "demo-0 elected leader in term 1".into()
        )
    );
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(status["leader"], "demo-0");
    assert_eq!(status["term"], 1);
    assert_eq!(status["phase"], "Running");
    assert_eq!(
        condition(&status, "LeaderElected")["reason"],
        "LeaderElected"
    );
    assert_eq!(condition(&status, "Available")["status"], "True");
    assert_eq!(condition(&status, "Ready")["status"], "True", "{status}");
    assert_eq!(status["members"][0]["role"], "Leader");
    assert_eq!(status["members"][1]["role"], "Follower");
    assert_eq!(status["members"][2]["suffrage"], "Voter");
    assert!(status["lastLeaderChange"].is_string());

    // `kubectl delete pod demo-0`: demo-2 wins term 2.
    fake.kill(1);
    fake.elect(3);
    settle(&ctx, "demo-2 leads in term 2", leader_is("demo-2", 2)).await;
    let rc = with_status(&rc, &status);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&statefulset(&owned.statefulset, 2)))
        .await;
    api.list_pods(&[
        pod("demo-0", true),
        pod("demo-1", false),
        pod("demo-2", false),
    ])
    .await;
    let off = api.pod_label("demo-0").await;
    assert_eq!(
        off,
        json!({"metadata": {"labels": {"kuberaft.io/role": null}}})
    );
    let on = api.pod_label("demo-2").await;
    assert_eq!(on["metadata"]["labels"]["kuberaft.io/role"], "leader");
    let status = api.status(&rc).await;
    assert_eq!(
        api.event().await,
        (
            "Normal".into(),
            "LeaderElected".into(),
            "demo-2 elected leader in term 2".into()
        )
    );
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(status["leader"], "demo-2");
    assert_eq!(status["term"], 2);
    assert_eq!(status["ready"], "2/3");
    assert_eq!(status["phase"], "Degraded", "demo-0 is down");
    assert_eq!(condition(&status, "Degraded")["reason"], "MemberUnhealthy");
    assert_eq!(
        condition(&status, "Available")["status"],
        "True",
        "2 of 3 is a quorum"
    );
    assert_eq!(
        (
            &condition(&status, "Ready")["status"],
            &condition(&status, "Ready")["reason"]
        ),
        (&json!("False"), &json!("MemberUnhealthy")),
        "available, but not ready while a member is down"
    );
    assert_eq!(status["members"][0]["healthy"], false);
    assert_eq!(status["members"][0]["role"], "Unknown");
}

#[tokio::test]
async fn scaling_up_adds_a_pod_then_a_learner_then_promotes_it() {
    let (client, mut api) = mock_client();
    let fake = FakeCluster::new("demo", 3);
    fake.serve(4).await; // demo-3's pod is up as soon as the StatefulSet grows
    fake.elect(1);
    let ctx = context(client, &fake);
    ctx.watches.ensure("default", "demo", 3);
    members_up(&ctx, 3).await;
    settle(&ctx, "demo-0 leads", leader_is("demo-0", 1)).await;
    let rc = cluster(3);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", None).await;
    api.list_pods(&[]).await;
    let owned = api.apply_all("demo").await;
    let status = api.status(&rc).await;
    api.event().await;
    task.await.expect("no panic").expect("reconciled");
    let three = statefulset(&owned.statefulset, 3);

    // kubectl scale raftcluster demo --replicas 4
    let mut rc = with_status(&rc, &status);
    rc.spec.replicas = 4;
    rc.metadata.generation = Some(2);

    // 1. The StatefulSet grows by one. The PDB stays as it is: it keeps a quorum of the voters
    //    in force, 2 of 3 until the new member is a voter.
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&three)).await;
    api.list_pods(&[]).await;
    let sts = api
        .apply("/apis/apps/v1/namespaces/default/statefulsets/demo")
        .await;
    assert_eq!(sts["spec"]["replicas"], 4);
    let (kind, reason, note) = api.event().await;
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Warning", "EvenReplicas"),
        "{note}"
    );
    let status = api.status(&rc).await;
    assert_eq!(status["phase"], "Scaling");
    assert_eq!(
        condition(&status, "Progressing")["reason"],
        "ScalingStatefulSet"
    );
    let action = task.await.expect("no panic").expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["env"],
        owned.statefulset["spec"]["template"]["spec"]["containers"][0]["env"],
        "the pod template (and the bootstrap membership) does not change"
    );
    let four = statefulset(&sts, 3);

    // 2. The new pod joins as a learner.
    let rc = with_status(&rc, &status);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&four)).await;
    api.list_pods(&[]).await;
    let (_, reason, note) = api.event().await;
    assert_eq!(reason, "MemberAdded");
    assert_eq!(note, "added demo-3 (member 4) as a learner");
    let status = api.status(&rc).await;
    assert_eq!(condition(&status, "Progressing")["reason"], "ScalingUp");
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(fake.calls(), ["AddMember(4, demo-3, learner_only=true)@1"]);

    // 3. Caught up, it is promoted.
    settle(&ctx, "demo-3 is a learner", |v| {
        v.configuration
            .as_ref()
            .is_some_and(|c| c.iter().any(|m| m.ordinal == 3 && !m.voter))
    })
    .await;
    let rc = with_status(&rc, &status);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&four)).await;
    api.list_pods(&[]).await;
    let (_, reason, _) = api.event().await;
    assert_eq!(reason, "MemberPromoted");
    let status = api.status(&rc).await;
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(fake.calls()[1], "PromoteMember(4)@1");

    // 4. Four voters: done.
    settle(&ctx, "demo-3 is a voter", |v| {
        v.configuration
            .as_ref()
            .is_some_and(|c| c.iter().filter(|m| m.voter).count() == 4)
    })
    .await;
    eventually(
        Duration::from_secs(3),
        "demo-3 reports itself serving",
        || {
            kuberaft_operator::status::is_healthy(ctx.watches.view("default", "demo").get("demo-3"))
                .then_some(())
        },
    )
    .await;
    let rc = with_status(&rc, &status);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&statefulset(&sts, 4)))
        .await;
    api.list_pods(&[]).await;
    let pdb = api
        .apply("/apis/policy/v1/namespaces/default/poddisruptionbudgets/demo")
        .await;
    assert_eq!(pdb["spec"]["minAvailable"], 3, "a quorum of 4 voters");
    let status = api.status(&rc).await;
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(status["phase"], "Running");
    assert_eq!(condition(&status, "Progressing")["reason"], "Reconciled");
    assert_eq!(status["members"][3]["suffrage"], "Voter");
    assert_eq!(
        fake.calls().len(),
        2,
        "no other membership call: {:?}",
        fake.calls()
    );
}

#[tokio::test]
async fn scaling_down_moves_leadership_then_removes_the_member_then_shrinks() {
    let (client, mut api) = mock_client();
    let fake = FakeCluster::new("demo", 4);
    fake.serve(4).await;
    fake.elect(4); // demo-3, the member to remove, leads
    let ctx = context(client, &fake);
    ctx.watches.ensure("default", "demo", 4);
    members_up(&ctx, 4).await;
    settle(&ctx, "demo-3 leads", leader_is("demo-3", 1)).await;
    let mut rc = cluster(3);
    rc.status = Some(RaftClusterStatus {
        leader: Some("demo-3".to_string()),
        term: 1,
        ..RaftClusterStatus::default()
    });
    let applied = kuberaft_operator::resources::statefulset(
        &rc,
        &BuildConfig::default(),
        4,
        &kuberaft_operator::resources::initial_members("demo", "default", "cluster.local", 4),
    );
    let four = statefulset(&serde_json::to_value(&applied).expect("json"), 4);

    // 1. Leadership moves off demo-3 first.
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&four)).await;
    api.list_pods(&[]).await;
    let owned = api.apply_all("demo").await;
    assert_eq!(
        owned.statefulset["spec"]["replicas"], 4,
        "nothing shrinks yet"
    );
    let (_, reason, note) = api.event().await;
    println!("{reason}: {note}");
    assert_eq!(reason, "LeadershipTransferred");
    let status = api.status(&rc).await;
    assert_eq!(condition(&status, "Progressing")["reason"], "ScalingDown");
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(
        fake.calls(),
        ["TransferLeadership(1)@4"],
        "to demo-0, which stays"
    );

    // 2. Then demo-3 leaves the configuration, through the new leader.
    settle(&ctx, "demo-0 leads in term 2", leader_is("demo-0", 2)).await;
    let rc = with_status(&rc, &status);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&four)).await;
    api.list_pods(&[]).await;
    let (_, reason, note) = api.event().await;
    assert_eq!(
        (reason.as_str(), note.as_str()),
        ("MemberRemoved", "removed demo-3 from the configuration")
    );
    let status = api.status(&rc).await;
    assert_eq!(api.event().await.2, "demo-0 elected leader in term 2");
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(fake.calls()[1], "RemoveMember(4)@1");

    // 3. Only then does the StatefulSet shrink.
    settle(&ctx, "three members", |v| {
        v.configuration.as_ref().is_some_and(|c| c.len() == 3)
    })
    .await;
    let rc = with_status(&rc, &status);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&four)).await;
    api.list_pods(&[]).await;
    let sts = api
        .apply("/apis/apps/v1/namespaces/default/statefulsets/demo")
        .await;
    assert_eq!(sts["spec"]["replicas"], 3);
    let pdb = api
        .apply("/apis/policy/v1/namespaces/default/poddisruptionbudgets/demo")
        .await;
    assert_eq!(
        pdb["spec"]["minAvailable"], 2,
        "3 of 4 until demo-3 left; a quorum of 3 now"
    );
    let status = api.status(&rc).await;
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(status["replicas"], 3);

    // 4. Steady at three.
    let rc = with_status(&rc, &status);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&statefulset(&sts, 3)))
        .await;
    api.list_pods(&[]).await;
    let status = api.status(&rc).await;
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3));
    api.nothing_more().await;
}

#[tokio::test]
async fn a_deleted_cluster_is_left_to_garbage_collection() {
    let (client, mut api) = mock_client();
    let fake = FakeCluster::new("demo", 3);
    let ctx = context(client, &fake);
    ctx.watches.ensure("default", "demo", 3);
    let mut rc = cluster(3);
    rc.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let action = start(&rc, &ctx)
        .await
        .expect("no panic")
        .expect("reconciled");
    assert_eq!(action, Action::await_change());
    api.nothing_more().await;
    assert_eq!(
        ctx.watches.clusters(),
        0,
        "the members are no longer watched"
    );
}

#[tokio::test]
async fn a_paused_cluster_gets_status_and_nothing_else() {
    let (client, mut api) = mock_client();
    let fake = FakeCluster::new("demo", 3);
    fake.serve(3).await;
    fake.elect(2);
    let ctx = context(client, &fake);
    ctx.watches.ensure("default", "demo", 3);
    members_up(&ctx, 3).await;
    settle(&ctx, "demo-1 leads", leader_is("demo-1", 1)).await;
    let mut rc = cluster(5);
    rc.spec.paused = true;
    rc.metadata.generation = Some(4);
    rc.status = Some(RaftClusterStatus {
        observed_generation: Some(3),
        ..RaftClusterStatus::default()
    });
    let applied = kuberaft_operator::resources::statefulset(
        &rc,
        &BuildConfig::default(),
        3,
        &kuberaft_operator::resources::initial_members("demo", "default", "cluster.local", 3),
    );
    let task = start(&rc, &ctx);
    api.get_statefulset(
        "demo",
        Some(&statefulset(
            &serde_json::to_value(&applied).expect("json"),
            3,
        )),
    )
    .await;
    api.list_pods(&[pod("demo-1", false)]).await;
    let status = api.status(&rc).await;
    api.event().await; // the leader is still reported
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(status["phase"], "Paused");
    assert_eq!(
        status["observedGeneration"], 3,
        "a paused cluster's new spec is not observed"
    );
    assert_eq!(condition(&status, "ReconciliationPaused")["status"], "True");
    assert_eq!(status["leader"], "demo-1");
    assert!(fake.calls().is_empty(), "no membership change while paused");
    api.nothing_more().await;
}

#[tokio::test]
async fn an_api_failure_sets_degraded_and_backs_off() {
    let (client, mut api) = mock_client();
    let fake = FakeCluster::new("demo", 3);
    let ctx = context(client, &fake);
    let rc = cluster(3);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", None).await;
    api.list_pods(&[]).await;
    api.fail(
        Method::PATCH,
        "/api/v1/namespaces/default/services/demo-peers",
    )
    .await;
    let status = api.status(&rc).await;
    let error = task
        .await
        .expect("no panic")
        .expect_err("the reconcile fails");
    assert!(matches!(error, Error::Kube(_)), "{error}");
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "KubernetesApiError");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap_or_default()
            .contains("request timed out")
    );
    assert_eq!(status["phase"], "Degraded");

    let rc = Arc::new(rc);
    let first = error_policy(rc.clone(), &error, ctx.clone());
    let second = error_policy(rc.clone(), &error, ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(1)));
    assert_eq!(second, Action::requeue(Duration::from_secs(2)));
    assert_eq!(
        backoff(20),
        Duration::from_secs(300),
        "capped at five minutes"
    );
}

#[tokio::test]
async fn a_bad_image_shows_as_degraded_with_the_pod_and_the_reason() {
    let (client, mut api) = mock_client();
    let fake = FakeCluster::new("demo", 3);
    let ctx = context(client, &fake);
    let rc = cluster(3);
    let mut broken = pod("demo-0", false);
    broken.status = Some(
        serde_json::from_value(json!({"containerStatuses": [{
            "name": "kuberaft-node", "image": "kuberaft-node:typo", "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"kuberaft-node:typo\""}}
        }]}))
        .expect("a pod status"),
    );
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", None).await;
    api.list_pods(&[broken, pod("demo-1", false)]).await;
    api.apply_all("demo").await;
    let status = api.status(&rc).await;
    task.await.expect("no panic").expect("reconciled");
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "PodFailing");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(message.contains("demo-0: ImagePullBackOff"), "{message}");
    assert_eq!(status["phase"], "Degraded");
}

/// The PEM text under `key` of a Secret as applied (base64 `data`).
fn secret_text(secret: &Value, key: &str) -> String {
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(secret.clone()).expect("a Secret");
    let bytes = secret
        .data
        .and_then(|d| d.get(key).cloned())
        .unwrap_or_else(|| panic!("no {key} in the Secret"));
    String::from_utf8(bytes.0).expect("PEM text")
}

#[tokio::test]
async fn a_tls_cluster_gets_a_ca_and_a_member_certificate_then_keeps_them() {
    let (client, mut api) = mock_client();
    let fake = FakeCluster::new("demo", 3);
    let ctx = context(client, &fake);
    let mut rc = cluster(3);
    rc.spec.tls = Some(kuberaft_operator::crd::TlsSpec {
        enabled: true,
        secret_name: None,
        client_cert_auth: false,
    });

    let task = start(&rc, &ctx);
    api.get_statefulset("demo", None).await;
    api.list_pods(&[]).await;
    api.get_secret("demo-tls", None).await;
    api.get_secret("demo-ca", None).await;
    let ca = api
        .apply("/api/v1/namespaces/default/secrets/demo-ca")
        .await;
    let member = api
        .apply("/api/v1/namespaces/default/secrets/demo-tls")
        .await;
    for secret in [&ca, &member] {
        assert_eq!(
            secret["metadata"]["ownerReferences"][0]["kind"],
            "RaftCluster"
        );
        assert_eq!(secret["type"], "kubernetes.io/tls");
    }
    let ca_cert = secret_text(&ca, "tls.crt");
    assert!(
        kuberaft_operator::certs::inspect(&ca_cert)
            .expect("a certificate")
            .is_ca
    );
    assert_eq!(secret_text(&member, "ca.crt"), ca_cert);
    let info =
        kuberaft_operator::certs::inspect(&secret_text(&member, "tls.crt")).expect("a certificate");
    assert!(!info.is_ca);
    assert!(
        info.sans
            .contains(&"demo-8.demo-peers.default.svc.cluster.local".to_string()),
        "{:?}",
        info.sans
    );
    let owned = api.apply_all("demo").await;
    let pod = &owned.statefulset["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][1]["secret"]["secretName"], "demo-tls");
    api.status(&rc).await;
    task.await.expect("no panic").expect("reconciled");

    // The Secrets exist and are current: read, not written again.
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&statefulset(&owned.statefulset, 0)))
        .await;
    api.list_pods(&[]).await;
    api.get_secret("demo-tls", Some(&member)).await;
    api.get_secret("demo-ca", Some(&ca)).await;
    api.nothing_more().await;
    task.await.expect("no panic").expect("reconciled");

    // A user Secret that does not exist: a clear error, nothing made.
    let mut byo = rc.clone();
    if let Some(tls) = byo.spec.tls.as_mut() {
        tls.secret_name = Some("mine".to_string());
    }
    let task = start(&byo, &ctx);
    api.get_statefulset("demo", Some(&statefulset(&owned.statefulset, 0)))
        .await;
    api.list_pods(&[]).await;
    api.get_secret("mine", None).await;
    // Reported in status; no object is applied with a Secret that does not exist.
    let status = api.status(&byo).await;
    assert!(status.to_string().contains("TlsSecretInvalid"), "{status}");
    api.nothing_more().await;
    let error = task.await.expect("no panic").expect_err("no Secret");
    assert!(error.to_string().contains("mine"), "{error}");
    assert!(error.to_string().contains("secretName"), "{error}");
}

/// A cluster created with 3 and scaled to 5 whose StatefulSet was deleted (`kubectl delete
/// statefulset --cascade=orphan`, the usual way to change volumeClaimTemplates): it is made
/// again with 5 pods, not the bootstrap 3, which would take two of five voters away.
#[tokio::test]
async fn a_deleted_statefulset_comes_back_at_the_clusters_size_not_the_bootstrap_size() {
    let (client, mut api) = mock_client();
    let fake = FakeCluster::new("demo", 5);
    fake.serve(5).await;
    fake.elect(1);
    let ctx = context(client, &fake);
    ctx.watches.ensure("default", "demo", 5);
    members_up(&ctx, 5).await;
    settle(&ctx, "demo-0 leads", leader_is("demo-0", 1)).await;
    let bootstrap =
        kuberaft_operator::resources::initial_members("demo", "default", "cluster.local", 3);
    let members: Vec<Value> = (0..5)
        .map(|o| {
            json!({"name": format!("demo-{o}"), "id": o + 1, "role": if o == 0 { "Leader" } else { "Follower" },
                   "suffrage": "Voter", "term": 1, "commitIndex": 9, "healthy": true})
        })
        .collect();
    let rc = with_status(
        &cluster(5),
        &json!({"replicas": 5, "readyReplicas": 5, "leader": "demo-0", "term": 1,
                "members": members,
                "bootstrap": {"replicas": 3, "initialMembers": bootstrap}}),
    );

    let task = start(&rc, &ctx);
    api.get_statefulset("demo", None).await;
    // The orphaned pods still run.
    let pods: Vec<Pod> = (0..5).map(|o| pod(&format!("demo-{o}"), o == 0)).collect();
    api.list_pods(&pods).await;
    let owned = api.apply_all("demo").await;
    assert_eq!(owned.statefulset["spec"]["replicas"], 5);
    let env = owned.statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    assert!(
        env.iter().any(|e| e["value"] == bootstrap.as_str()),
        "the bootstrap membership stays what the pods were given: {env:?}"
    );
    api.status(&rc).await;
    task.await.expect("no panic").expect("reconciled");
    api.nothing_more().await;
}

/// A pod of the StatefulSet made from `revision`, ready.
fn pod_of_revision(name: &str, revision: &str, leader: bool) -> Pod {
    let mut p = pod(name, leader);
    p.metadata
        .labels
        .get_or_insert_default()
        .insert("controller-revision-hash".to_string(), revision.to_string());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
        conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
            type_: "Ready".to_string(),
            status: "True".to_string(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    p
}

#[tokio::test]
async fn a_changed_template_rolls_followers_first_then_hands_leadership_over_then_the_old_leader() {
    let (client, mut api) = mock_client();
    let fake = FakeCluster::new("demo", 3);
    fake.serve(3).await;
    fake.elect(3); // demo-2 leads
    let ctx = context(client, &fake);
    ctx.watches.ensure("default", "demo", 3);
    members_up(&ctx, 3).await;
    settle(&ctx, "demo-2 leads", leader_is("demo-2", 1)).await;
    let rc = cluster(3);
    let applied = kuberaft_operator::resources::statefulset(
        &rc,
        &BuildConfig::default(),
        3,
        &kuberaft_operator::resources::initial_members("demo", "default", "cluster.local", 3),
    );
    assert_eq!(
        serde_json::to_value(&applied).expect("json")["spec"]["updateStrategy"]["type"],
        "OnDelete",
        "the operator, not the StatefulSet, decides which pod restarts when"
    );
    let mut sts = statefulset(&serde_json::to_value(&applied).expect("json"), 3);
    if let Some(s) = sts.status.as_mut() {
        s.update_revision = Some("demo-new".to_string());
        s.current_revision = Some("demo-old".to_string());
    }
    // The pods, those in `new` made from the new template, the leader labelled.
    let revisions = |new: &[&str], leader: &str| -> Vec<Pod> {
        ["demo-0", "demo-1", "demo-2"]
            .into_iter()
            .map(|p| {
                let revision = if new.contains(&p) {
                    "demo-new"
                } else {
                    "demo-old"
                };
                pod_of_revision(p, revision, p == leader)
            })
            .collect()
    };

    // 1. The highest-ordinal follower first, deleted with its uid as a precondition.
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&sts)).await;
    api.list_pods(&revisions(&[], "demo-2")).await;
    api.apply_all("demo").await;
    let options = api.delete_pod("demo-1").await;
    assert_eq!(options["preconditions"]["uid"], "uid-demo-1");
    let (_, reason, note) = api.event().await;
    assert_eq!(reason, "MemberRestarted", "{note}");
    let status = api.status(&rc).await;
    assert_eq!(status["phase"], "Updating");
    assert_eq!(status["updatedReplicas"], 0);
    let progressing = condition(&status, "Progressing");
    assert_eq!(progressing["reason"], "RollingUpdate");
    assert_eq!(
        progressing["message"],
        "0 of 3 pods updated; restarting demo-1"
    );
    assert_eq!(condition(&status, "Ready")["status"], "False");
    api.event().await; // demo-2 elected
    task.await.expect("no panic").expect("reconciled");

    // 2. demo-1 is back on the new template: demo-0 next (demo-2 leads).
    let rc = with_status(&rc, &status);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&sts)).await;
    api.list_pods(&revisions(&["demo-1"], "demo-2")).await;
    api.delete_pod("demo-0").await;
    api.event().await;
    let status = api.status(&rc).await;
    assert_eq!(status["updatedReplicas"], 1);
    task.await.expect("no panic").expect("reconciled");

    // 3. Only the leader is left: leadership goes to an updated voter, no pod is deleted.
    let rc = with_status(&rc, &status);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&sts)).await;
    api.list_pods(&revisions(&["demo-0", "demo-1"], "demo-2"))
        .await;
    let (_, reason, note) = api.event().await;
    assert_eq!(reason, "LeadershipTransferred", "{note}");
    let status = api.status(&rc).await;
    assert!(
        condition(&status, "Progressing")["message"]
            .as_str()
            .is_some_and(|m| m.contains("moving leadership from demo-2 to demo-0")),
        "{status}"
    );
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(fake.calls(), ["TransferLeadership(1)@3"]);

    // 4. demo-0 leads; demo-2 is an ordinary follower on the old template now.
    settle(&ctx, "demo-0 leads in term 2", leader_is("demo-0", 2)).await;
    let rc = with_status(&rc, &status);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&sts)).await;
    api.list_pods(&revisions(&["demo-0", "demo-1"], "demo-2"))
        .await;
    api.delete_pod("demo-2").await;
    api.event().await;
    api.pod_label("demo-0").await;
    api.pod_label("demo-2").await;
    let status = api.status(&rc).await;
    api.event().await; // demo-0 elected
    task.await.expect("no panic").expect("reconciled");

    // 5. Every pod on the new template: done.
    let rc = with_status(&rc, &status);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&sts)).await;
    api.list_pods(&revisions(&["demo-0", "demo-1", "demo-2"], "demo-0"))
        .await;
    let status = api.status(&rc).await;
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["updatedReplicas"], 3);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    api.nothing_more().await;
}

#[tokio::test]
async fn a_member_back_without_its_data_is_removed_and_restarted_to_be_added_back() {
    let (client, mut api) = mock_client();
    let fake = FakeCluster::new("demo", 3);
    fake.serve(3).await;
    fake.elect(1); // demo-0 leads
    fake.update(|s| s.lost_data = vec![3]); // demo-2 came back with an empty data dir
    let ctx = context(client, &fake);
    ctx.watches.ensure("default", "demo", 3);
    members_up(&ctx, 3).await;
    settle(&ctx, "the leader reports demo-2 lost its data", |v| {
        v.lost_data == [2]
    })
    .await;
    let rc = cluster(3);
    let applied = kuberaft_operator::resources::statefulset(
        &rc,
        &BuildConfig::default(),
        3,
        &kuberaft_operator::resources::initial_members("demo", "default", "cluster.local", 3),
    );
    let sts = statefulset(&serde_json::to_value(&applied).expect("json"), 2);
    let pods = [
        pod_of_revision("demo-0", "r", true),
        pod_of_revision("demo-1", "r", false),
        pod_of_revision("demo-2", "r", false),
    ];

    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&sts)).await;
    api.list_pods(&pods).await;
    api.apply_all("demo").await;
    let options = api.delete_pod("demo-2").await;
    assert_eq!(
        options["preconditions"]["uid"], "uid-demo-2",
        "restarted at once rather than left in its crash-loop back-off"
    );
    let (type_, reason, note) = api.event().await;
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Warning", "MemberReplaced")
    );
    assert!(note.contains("demo-2 came back without its data"), "{note}");
    let status = api.status(&rc).await;
    assert_eq!(
        condition(&status, "Progressing")["reason"],
        "ReplacingMember"
    );
    api.event().await; // demo-0 elected
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(fake.calls(), ["RemoveMember(3)@1"]);

    // Removed, and so forgotten: the grow steps add it back as a learner.
    settle(&ctx, "two members", |v| {
        v.configuration.as_ref().is_some_and(|c| c.len() == 2) && v.lost_data.is_empty()
    })
    .await;
    let rc = with_status(&rc, &status);
    let task = start(&rc, &ctx);
    api.get_statefulset("demo", Some(&sts)).await;
    api.list_pods(&pods).await;
    let (_, reason, _) = api.event().await;
    assert_eq!(reason, "MemberAdded");
    api.status(&rc).await;
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(fake.calls()[1], "AddMember(3, demo-2, learner_only=true)@1");
}

/// A store holding `objects`, as a synced watch would have filled it.
fn store_of<K>(objects: &[K]) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = kube::runtime::reflector::store();
    for o in objects {
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(o.clone()));
    }
    reader
}

#[tokio::test]
async fn with_synced_stores_a_reconcile_reads_nothing_from_the_api() {
    use std::sync::atomic::AtomicBool;
    let (client, mut api) = mock_client();
    let fake = FakeCluster::new("demo", 3);
    fake.serve(3).await;
    fake.elect(1);
    let rc = cluster(3);
    let applied = kuberaft_operator::resources::statefulset(
        &rc,
        &BuildConfig::default(),
        3,
        &kuberaft_operator::resources::initial_members("demo", "default", "cluster.local", 3),
    );
    let mut sts = statefulset(&serde_json::to_value(&applied).expect("json"), 3);
    if let Some(s) = sts.status.as_mut() {
        s.update_revision = Some("r".to_string());
    }
    let pods = [
        pod_of_revision("demo-0", "r", true),
        pod_of_revision("demo-1", "r", false),
        pod_of_revision("demo-2", "r", false),
    ];
    let stores = kuberaft_operator::reconcile::OwnedStores {
        statefulsets: store_of(&[sts]),
        services: store_of(&[]),
        pod_disruption_budgets: store_of(&[]),
        pods: store_of(&pods),
        statefulsets_synced: Arc::new(AtomicBool::new(true)),
        pods_synced: Arc::new(AtomicBool::new(true)),
    };
    let ctx = context_with_stores(client, &fake, Some(stores));
    ctx.watches.ensure("default", "demo", 3);
    members_up(&ctx, 3).await;
    settle(&ctx, "demo-0 leads in term 1", leader_is("demo-0", 1)).await;

    // No GET of the StatefulSet, no LIST of pods: the first request is the first apply.
    let task = start(&rc, &ctx);
    api.apply_all("demo").await;
    let status = api.status(&rc).await;
    api.event().await; // demo-0 elected
    task.await.expect("no panic").expect("reconciled");
    assert_eq!(status["readyReplicas"], 3, "the StatefulSet from the store");
    assert_eq!(status["updatedReplicas"], 3, "the pods from the store");
    assert_eq!(status["phase"], "Running");
    api.nothing_more().await;
}
