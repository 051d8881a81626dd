//! The user's journey on Kubernetes, with the README's own commands, on a real API server and
//! real controllers (`tests/src/kube/`: what is real and what is stood in for):
//!
//! `helm install` the operator (it runs in its own container, as its ServiceAccount, with only
//! the chart's RBAC) → `kubectl apply` the 3-member example → `kubectl get raftclusters` shows
//! READY 3/3, a LEADER and a TERM → writes through the members → rounds of `kubectl delete pod`
//! of the leader, `kubectl delete pod --grace-period=0 --force` of the leader, and a crash of the
//! leader's container, each followed by a new leader in a higher term in status and every
//! acknowledged write still there → `kubectl scale` to 5 (the PodDisruptionBudget keeps 3), its
//! StatefulSet deleted with `--cascade=orphan` and made again with 5, back to 3 (the budget keeps
//! 2) → `spec.image` changed while a writer writes through the members: one member restarted at a
//! time, the leader last after a leadership transfer, at most one new term → spec.image set to an
//! image that cannot run (the update stops at one follower, UpdateStalled; set back, it heals) → a
//! follower's PVC and pod deleted (the operator replaces the member on its own) → the TLS example
//! answers
//! `raftctl --cacert` → `kubectl delete raftcluster` (the garbage collector removes what it
//! owned; the volumes stay) → `helm uninstall`.
//!
//! Printed every run: the time from each action until the new leader and term reached the
//! RaftCluster's status (read by a watch), apply → leader, the scale times, the operator's RSS.
//!
//!     tests/run --test kube_journey          # or: cargo test --release -p kuberaft-tests --test kube_journey
//!
//! It needs `../shared/tools/k8s` unpacked (`tests/run` does it), etcd, kubectl and a Docker
//! engine; without them it says SKIPPED and why (with `KUBERAFT_NO_SKIP=1`, as in CI, it fails).
//! `KUBE_JOURNEY_ROUNDS=D,F,C` sets the rounds of delete, force-delete and crash (default
//! 20,10,20); `KUBE_JOURNEY_HOLD=1` keeps everything up for an hour after a failure, to look
//! around with `KUBECONFIG=… kubectl`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kuberaft_operator::crd::RaftClusterStatus;
use kuberaft_tests::docker::cli::docker;
use kuberaft_tests::docker::image::{self, repo_root};
use kuberaft_tests::docker::resources::Run;
use kuberaft_tests::kube::observer::StatusLog;
use kuberaft_tests::kube::tools::Tools;
use kuberaft_tests::kube::world::World;
use kuberaft_tests::skip::skips_are_failures;

const NS: &str = "default";
const OPERATOR_NS: &str = "kuberaft-system";
const RELEASE: &str = "kuberaft-operator";
/// How long one step may take before the journey fails (a busy 2-core machine included).
const STEP: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    // The stand-in kubelet's warnings (a volume not ready, a status not written) go to stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,kube_client::client::builder=off")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let tools = match Tools::find() {
        Ok(t) => t,
        Err(why) => return skipped(&why),
    };
    if let Err(e) = docker(&["version", "--format", "{{.Server.Version}}"]) {
        return skipped(&format!("no Docker engine answers ({e})"));
    }
    let run = Arc::new(Run::new());
    let started = Instant::now();
    // The images a user builds from deploy/docker/, as the Docker suite builds them.
    let node = image::build(&run, "node.Dockerfile", "node");
    let operator = image::build(&run, "operator.Dockerfile", "operator");
    println!(
        "kube journey: images built ({:.0?}): {} ({} MB), {} ({} MB)",
        started.elapsed(),
        node.name,
        node.size_bytes / 1_000_000,
        operator.name,
        operator.size_bytes / 1_000_000
    );
    // The same image under a second name, for the rolling update: what a user's new release is.
    let rolled_image = format!(
        "{}:rolled",
        node.name.split(':').next().unwrap_or(&node.name)
    );
    run.image(&rolled_image);
    if let Err(e) = docker(&["tag", &node.name, &rolled_image]) {
        println!(
            "kube journey: FAILED: docker tag {} {rolled_image}: {e}",
            node.name
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            println!("kube journey: FAILED: no tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let world = World::start(
            &tools,
            run.clone(),
            (Duration::from_secs(1), Duration::from_secs(4)),
        )
        .await?;
        let mut journey = Journey {
            world,
            node_image: node.name.clone(),
            rolled_image: rolled_image.clone(),
            operator_image: operator.name.clone(),
            figures: Figures::default(),
            acknowledged: BTreeMap::new(),
        };
        let result = journey.run().await;
        if let Err(why) = &result {
            println!("kube journey: FAILED: {why}");
            journey.diagnose().await;
            if std::env::var("KUBE_JOURNEY_HOLD").is_ok_and(|v| v == "1") {
                println!(
                    "kube journey: holding everything up for an hour (KUBE_JOURNEY_HOLD=1): KUBECONFIG={}",
                    journey.world.plane.kubeconfig.display()
                );
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
        journey.figures.print();
        result
    });
    drop(runtime);
    drop(run);
    match outcome {
        Ok(()) => {
            println!("kube journey: passed in {:.0?}", started.elapsed());
            ExitCode::SUCCESS
        }
        Err(_) => ExitCode::FAILURE,
    }
}

fn skipped(why: &str) -> ExitCode {
    println!("kube journey SKIPPED: {why}");
    if skips_are_failures() {
        println!("kube journey: FAILED: KUBERAFT_NO_SKIP=1 and the tier cannot run");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    /// `kubectl delete pod <leader>`: SIGTERM, the leader hands over, exits.
    Delete,
    /// `kubectl delete pod <leader> --grace-period=0 --force`: the container is killed.
    ForceDelete,
    /// The leader's container dies (SIGKILL); the kubelet restarts it in place.
    Crash,
}

#[derive(Default)]
struct Figures {
    /// Action → the new leader and term in status, per kind of action.
    failover: BTreeMap<Action, Vec<Duration>>,
    apply_to_leader: Option<Duration>,
    apply_to_ready: Option<Duration>,
    scale_up: Option<Duration>,
    scale_down: Option<Duration>,
    tls_to_leader: Option<Duration>,
    operator_rss: Option<u64>,
    rolling_update: Option<RollFigures>,
    /// A member's volume lost → the member a healthy voter again.
    lost_volume: Option<Duration>,
}

/// The rolling update of spec.image under writes.
struct RollFigures {
    took: Duration,
    terms: u64,
    acknowledged: usize,
    failed: usize,
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

impl Figures {
    fn print(&self) {
        let secs = |d: Option<Duration>| {
            d.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
        };
        println!("kube journey figures:");
        for (action, times) in &self.failover {
            let mut sorted = times.clone();
            sorted.sort();
            if sorted.is_empty() {
                continue;
            }
            println!(
                "  {action:?} of the leader -> new leader and term in status: n={} median {:.2} s, p90 {:.2} s, p99 {:.2} s, max {:.2} s",
                sorted.len(),
                quantile(&sorted, 0.5).as_secs_f64(),
                quantile(&sorted, 0.9).as_secs_f64(),
                quantile(&sorted, 0.99).as_secs_f64(),
                sorted[sorted.len() - 1].as_secs_f64()
            );
        }
        println!(
            "  kubectl apply -> leader in status: {}; -> READY 3/3: {}",
            secs(self.apply_to_leader),
            secs(self.apply_to_ready)
        );
        println!(
            "  kubectl scale 3 -> 5 (5 voters ready): {}; 5 -> 3: {}",
            secs(self.scale_up),
            secs(self.scale_down)
        );
        if let Some(r) = &self.rolling_update {
            println!(
                "  spec.image changed on 3 members under writes: all updated and Ready in {:.1} s, {} new term(s), {} writes acknowledged (all there after), {} attempts failed (through a member restarting)",
                r.took.as_secs_f64(),
                r.terms,
                r.acknowledged,
                r.failed
            );
        }
        println!(
            "  a follower's volume lost (PVC and pod deleted) -> replaced and a healthy voter again: {}",
            secs(self.lost_volume)
        );
        println!(
            "  TLS example: apply -> leader in status: {}",
            secs(self.tls_to_leader)
        );
        if let Some(rss) = self.operator_rss {
            println!(
                "  the operator's RSS after the journey: {:.1} MiB",
                rss as f64 / (1024.0 * 1024.0)
            );
        }
    }
}

struct Journey {
    world: World,
    node_image: String,
    /// The node image under a second name: `spec.image` set to it changes the pod template.
    rolled_image: String,
    operator_image: String,
    figures: Figures,
    /// Every write acknowledged to the journey: key → value.
    acknowledged: BTreeMap<String, String>,
}

/// What a steady 3-member cluster shows: every member ready, healthy and a voter, one leader.
fn steady(s: &RaftClusterStatus, replicas: i32) -> bool {
    s.leader.is_some()
        && s.ready_replicas == replicas
        && s.replicas == replicas
        && s.members.len() == replicas as usize
        && s.members.iter().all(|m| m.healthy && m.suffrage == "Voter")
}

fn rounds() -> (usize, usize, usize) {
    let parsed: Option<Vec<usize>> = std::env::var("KUBE_JOURNEY_ROUNDS")
        .ok()
        .and_then(|v| v.split(',').map(|n| n.trim().parse().ok()).collect());
    match parsed.as_deref() {
        Some([d, f, c]) => (*d, *f, *c),
        _ => (20, 10, 20),
    }
}

impl Journey {
    fn step(&self, name: &str, started: Instant) {
        println!("kube journey: {name} ... ok ({:.1?})", started.elapsed());
    }

    async fn run(&mut self) -> Result<(), String> {
        let t = Instant::now();
        self.install_operator().await?;
        self.step("helm install: the operator runs in its pod and is ready", t);

        let log = StatusLog::watch(self.world.plane.client.clone(), NS, "demo");
        let t = Instant::now();
        let example = repo_root().join("deploy/examples/raftcluster-3.yaml");
        self.world
            .cli
            .kubectl(&["apply", "-f", &example.display().to_string()])
            .await?;
        let leader = log
            .wait_for(0, STEP, "a leader after kubectl apply", |s| {
                s.leader.is_some() && s.term > 0
            })
            .await?;
        self.figures.apply_to_leader = Some(leader.at - t);
        let ready = log.wait_for(0, STEP, "READY 3/3", |s| steady(s, 3)).await?;
        self.figures.apply_to_ready = Some(ready.at - t);
        self.check_printer_columns(&ready.status).await?;
        // What scripts, kstatus, Flux and Argo CD wait on.
        self.world
            .cli
            .kubectl(&[
                "wait",
                "--for=condition=Ready",
                "raftcluster/demo",
                "--timeout=120s",
            ])
            .await?;
        self.step(
            "kubectl apply: READY 3/3 with a LEADER and a TERM; kubectl wait --for=condition=Ready",
            t,
        );

        let t = Instant::now();
        self.write("hello", "world").await?;
        let value = self.read("demo-2", "hello").await?;
        if value != "world" {
            return Err(format!(
                "raftctl get hello through demo-2 said {value:?}, not \"world\""
            ));
        }
        self.step("raftctl put through demo-0, get through demo-2", t);

        let (deletes, forces, crashes) = rounds();
        let plan = std::iter::repeat_n(Action::Delete, deletes)
            .chain(std::iter::repeat_n(Action::ForceDelete, forces))
            .chain(std::iter::repeat_n(Action::Crash, crashes));
        let t = Instant::now();
        for (round, action) in plan.enumerate() {
            self.failover(&log, round, action).await?;
        }
        // The last round's old leader may still be restarting (CI once read through it while
        // its container was down): a user reads once the pods are back.
        self.pods_ready_with_leader(&log).await?;
        self.check_every_write().await?;
        self.step(
            &format!("{deletes} deletes, {forces} forced deletes and {crashes} crashes of the leader: each a new leader in a higher term; every write there"),
            t,
        );
        self.check_events().await?;

        let t = Instant::now();
        let mark = log.mark();
        self.world
            .cli
            .kubectl(&["scale", "raftcluster", "demo", "--replicas=5"])
            .await?;
        let up = log
            .wait_for(
                mark,
                STEP,
                "5 voters after kubectl scale --replicas=5",
                |s| steady(s, 5),
            )
            .await?;
        self.figures.scale_up = Some(up.at - t);
        self.check_budget(3).await?;
        self.statefulset_deleted_with_orphans(&log).await?;
        let t2 = Instant::now();
        let mark = log.mark();
        self.world
            .cli
            .kubectl(&["scale", "raftcluster", "demo", "--replicas=3"])
            .await?;
        let down = log
            .wait_for(
                mark,
                STEP,
                "3 voters after kubectl scale --replicas=3",
                |s| steady(s, 3),
            )
            .await?;
        self.figures.scale_down = Some(down.at - t2);
        self.check_budget(2).await?;
        self.check_every_write().await?;
        self.step("kubectl scale 3 -> 5 -> 3, every write there", t);

        let t = Instant::now();
        self.rolling_update(&log).await?;
        self.step(
            "spec.image changed under writes: one member at a time, the leader last, at most one new term, every acknowledged write there",
            t,
        );

        let t = Instant::now();
        self.stalled_update(&log).await?;
        self.step(
            "spec.image set to an image that cannot run: the update stops at one follower (UpdateStalled), the quorum serves; set back, it heals",
            t,
        );

        let t = Instant::now();
        self.lost_volume(&log).await?;
        self.step(
            "a follower's volume lost: the operator replaces the member on its own, every write there",
            t,
        );

        let t = Instant::now();
        self.tls_example().await?;
        self.step("the TLS example answers raftctl --cacert", t);

        self.figures.operator_rss = Some(self.operator_rss().await?);
        drop(log);

        let t = Instant::now();
        self.delete_cluster().await?;
        self.step(
            "kubectl delete raftcluster: owned objects collected, volumes kept",
            t,
        );

        let t = Instant::now();
        self.world
            .cli
            .helm(&[
                "uninstall",
                RELEASE,
                "-n",
                OPERATOR_NS,
                "--wait",
                "--timeout",
                "2m",
            ])
            .await?;
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(self.world.plane.client.clone(), OPERATOR_NS);
        if deployments
            .get_opt(RELEASE)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Err("the operator's Deployment is still there after helm uninstall".into());
        }
        self.step("helm uninstall", t);
        Ok(())
    }

    async fn install_operator(&self) -> Result<(), String> {
        let chart = repo_root().join("charts/kuberaft-operator");
        let (repo, tag) = self
            .operator_image
            .split_once(':')
            .unwrap_or((&self.operator_image, "latest"));
        let (node_repo, node_tag) = self
            .node_image
            .split_once(':')
            .unwrap_or((&self.node_image, "latest"));
        let sets = format!(
            "image.repository={repo},image.tag={tag},nodeImage.repository={node_repo},nodeImage.tag={node_tag}"
        );
        self.world
            .cli
            .helm(&[
                "install",
                RELEASE,
                &chart.display().to_string(),
                "-n",
                OPERATOR_NS,
                "--create-namespace",
                "--set",
                &sets,
                "--wait",
                "--timeout",
                "3m",
            ])
            .await
            .map(|_| ())
    }

    /// `raftctl put KEY VALUE` in demo-0's container (`kubectl exec demo-0 -- raftctl put`).
    async fn write(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.write_via("demo-0", key, value).await
    }

    async fn write_via(&mut self, pod: &str, key: &str, value: &str) -> Result<(), String> {
        let out = self
            .world
            .runner
            .exec(
                NS,
                pod,
                &["raftctl", "--command-timeout", "10s", "put", key, value],
            )
            .await?;
        if !out.starts_with("OK") {
            return Err(format!("raftctl put {key} through {pod} said {out:?}"));
        }
        self.acknowledged.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// `raftctl get KEY` in `pod`'s container (linearizable).
    async fn read(&self, pod: &str, key: &str) -> Result<String, String> {
        self.world
            .runner
            .exec(
                NS,
                pod,
                &["raftctl", "--command-timeout", "10s", "get", key],
            )
            .await
            .map(|v| v.trim().to_string())
    }

    async fn check_printer_columns(&self, status: &RaftClusterStatus) -> Result<(), String> {
        let table = self.world.cli.kubectl(&["get", "raftclusters"]).await?;
        println!("{}", table.trim_end());
        let row = table
            .lines()
            .find(|l| l.starts_with("demo "))
            .ok_or_else(|| format!("kubectl get raftclusters shows no demo:\n{table}"))?;
        let cells: Vec<&str> = row.split_whitespace().collect();
        let leader = status.leader.clone().unwrap_or_default();
        if cells.get(1) != Some(&"3/3")
            || cells.get(2) != Some(&leader.as_str())
            || cells.get(3) != Some(&status.term.to_string().as_str())
        {
            return Err(format!(
                "kubectl get raftclusters shows {row:?}; expected READY 3/3, LEADER {leader}, TERM {}",
                status.term
            ));
        }
        Ok(())
    }

    /// One round: act on the leader, time the new leader's arrival in status, check the data.
    async fn failover(
        &mut self,
        log: &StatusLog,
        round: usize,
        action: Action,
    ) -> Result<(), String> {
        // What a user sees before acting: every pod ready, and a leader in status. Not more:
        // waiting until the operator also streams from every member again would hide a slow
        // reconnect after a restart, which is what made status lag elections.
        let before = self.pods_ready_with_leader(log).await?;
        let leader = before.leader.clone().unwrap_or_default();
        let term = before.term;
        let follower = ["demo-0", "demo-1", "demo-2"]
            .into_iter()
            .find(|p| *p != leader)
            .unwrap_or("demo-0");
        let key = format!("round-{round:03}");
        self.write_via(
            follower,
            &key,
            &format!("{action:?} of {leader} in term {term}"),
        )
        .await?;

        let mark = log.mark();
        let t0 = Instant::now();
        let mut deleting = None;
        match action {
            Action::Delete => {
                deleting = Some(self.world.cli.spawn_kubectl(&["delete", "pod", &leader])?)
            }
            Action::ForceDelete => {
                self.world
                    .cli
                    .kubectl(&["delete", "pod", &leader, "--grace-period=0", "--force"])
                    .await?;
            }
            Action::Crash => self.world.runner.crash(NS, &leader).await?,
        }
        let new = log
            .wait_for(
                mark,
                STEP,
                &format!("round {round} ({action:?} of {leader}): a new leader after term {term}"),
                |s| s.term > term && s.leader.as_ref().is_some_and(|l| *l != leader),
            )
            .await?;
        let took = new.at - t0;
        self.figures.failover.entry(action).or_default().push(took);
        if let Some(child) = deleting {
            let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "kubectl delete pod {leader}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        let new_leader = new.status.leader.clone().unwrap_or_default();
        let value = self.read(&new_leader, &key).await?;
        if Some(&value) != self.acknowledged.get(&key) {
            return Err(format!(
                "round {round}: {key} reads {value:?} through {new_leader} after the failover"
            ));
        }
        println!(
            "kube journey: round {round:2} {action:?} of {leader} (term {term}) -> {new_leader} in term {} after {:.2} s",
            new.status.term,
            took.as_secs_f64()
        );
        Ok(())
    }

    /// Waits until pods demo-0..2 are Ready (and none is being deleted) and status names one of
    /// them leader; returns that status.
    async fn pods_ready_with_leader(&self, log: &StatusLog) -> Result<RaftClusterStatus, String> {
        let pods: Api<Pod> = Api::namespaced(self.world.plane.client.clone(), NS);
        let deadline = Instant::now() + STEP;
        loop {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/instance=demo"))
                .await
                .map_err(|e| e.to_string())?;
            let ready: Vec<String> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
                .map(|p| p.name_any())
                .collect();
            let status = log.latest();
            if ready.len() == 3 && status.leader.as_ref().is_some_and(|l| ready.contains(l)) {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "pods ready: {ready:?}, status: {status:?}; not three ready pods and a leader within {STEP:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kubectl delete statefulset demo --cascade=orphan` (how a user changes
    /// volumeClaimTemplates) on the cluster scaled to 5: the operator makes it again with 5 pods,
    /// which adopts the running ones; the cluster stays at 5 healthy voters with its leader.
    async fn statefulset_deleted_with_orphans(&self, log: &StatusLog) -> Result<(), String> {
        let t = Instant::now();
        let statefulsets: Api<StatefulSet> = Api::namespaced(self.world.plane.client.clone(), NS);
        let old_uid = statefulsets
            .get("demo")
            .await
            .map_err(|e| format!("the StatefulSet demo: {e}"))?
            .uid();
        self.world
            .cli
            .kubectl(&["delete", "statefulset", "demo", "--cascade=orphan"])
            .await?;
        let deadline = Instant::now() + STEP;
        let replicas = loop {
            if let Some(sts) = statefulsets
                .get_opt("demo")
                .await
                .map_err(|e| e.to_string())?
                && sts.uid() != old_uid
            {
                break sts.spec.and_then(|s| s.replicas);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the operator did not make the StatefulSet demo again within {STEP:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if replicas != Some(5) {
            return Err(format!(
                "the StatefulSet of a cluster of 5 was made again with {replicas:?} replicas"
            ));
        }
        log.wait_for(
            log.mark().saturating_sub(1),
            STEP,
            "5 healthy voters after the StatefulSet was made again",
            |s| steady(s, 5),
        )
        .await?;
        self.step(
            "kubectl delete statefulset --cascade=orphan: made again with 5 pods",
            t,
        );
        Ok(())
    }

    /// The PodDisruptionBudget keeps a quorum of the voters in force.
    async fn check_budget(&self, min_available: i32) -> Result<(), String> {
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(self.world.plane.client.clone(), NS);
        let deadline = Instant::now() + STEP;
        loop {
            let pdb = pdbs
                .get("demo")
                .await
                .map_err(|e| format!("the PodDisruptionBudget demo: {e}"))?;
            let got = pdb.spec.and_then(|s| s.min_available);
            if got
                == Some(
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(min_available),
                )
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the PodDisruptionBudget's minAvailable is {got:?}, not {min_available}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Changes spec.image while a writer keeps writing through the members, and waits until every
    /// pod runs it: the operator restarts one member at a time, followers first, the leader last
    /// after handing leadership over, so the update costs at most one new term; every write
    /// acknowledged meanwhile is there after.
    async fn rolling_update(&mut self, log: &StatusLog) -> Result<(), String> {
        let before = self.pods_ready_with_leader(log).await?;
        let mark = log.mark();
        let t0 = Instant::now();
        let generation = self.set_image(&self.rolled_image.clone()).await?;
        let done = std::sync::atomic::AtomicBool::new(false);
        let writer = async {
            let mut acknowledged = BTreeMap::new();
            let mut failed = 0;
            let mut n = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let pod = format!("demo-{}", n % 3);
                let (key, value) = (format!("roll-{n:05}"), format!("v{n}"));
                n += 1;
                let args = ["raftctl", "--command-timeout", "5s", "put", &key, &value];
                match self.world.runner.exec(NS, &pod, &args).await {
                    Ok(out) if out.starts_with("OK") => {
                        acknowledged.insert(key, value);
                    }
                    // Through a member being restarted: not acknowledged, may or may not apply.
                    // Paced, not to spin on a pod whose container is gone for a moment.
                    _ => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            (acknowledged, failed)
        };
        let updated = async {
            let result = log
                .wait_for(
                    mark,
                    Duration::from_secs(300),
                    "every pod updated and the cluster Ready after spec.image changed",
                    |s| {
                        s.observed_generation >= Some(generation)
                            && s.updated_replicas == Some(3)
                            && steady(s, 3)
                            && s.conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                    },
                )
                .await;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            result
        };
        let ((acknowledged, failed), updated) = tokio::join!(writer, updated);
        let updated = updated?;
        let took = updated.at - t0;
        let terms = u64::try_from(updated.status.term - before.term).unwrap_or(u64::MAX);
        let ok = acknowledged.len();
        self.acknowledged.extend(acknowledged);
        self.figures.rolling_update = Some(RollFigures {
            took,
            terms,
            acknowledged: ok,
            failed,
        });
        if ok == 0 {
            return Err("no write was acknowledged during the rolling update".into());
        }
        if terms > 1 {
            return Err(format!(
                "the rolling update took the cluster from term {} to term {}: more than the one leadership transfer it needs",
                before.term, updated.status.term
            ));
        }
        for (p, image) in self.images().await? {
            if image.as_deref() != Some(self.rolled_image.as_str()) {
                return Err(format!(
                    "{p} runs {image:?} after the update, not {}",
                    self.rolled_image
                ));
            }
        }
        let events = self.events().await?;
        let restarts = events
            .lines()
            .filter(|l| l.contains("MemberRestarted"))
            .count();
        if restarts < 3 || !events.contains("LeadershipTransferred") {
            return Err(format!(
                "expected 3 MemberRestarted Events and a LeadershipTransferred one:\n{events}"
            ));
        }
        self.pods_ready_with_leader(log).await?;
        self.check_every_write().await
    }

    /// `kubectl events --for raftcluster/demo`.
    async fn events(&self) -> Result<String, String> {
        self.world
            .cli
            .kubectl(&["events", "--for", "raftcluster/demo"])
            .await
    }

    /// The image each of demo-0..2 runs, as its pod spec names it.
    async fn images(&self) -> Result<Vec<(&'static str, Option<String>)>, String> {
        let pods: Api<Pod> = Api::namespaced(self.world.plane.client.clone(), NS);
        let mut images = Vec::new();
        for p in ["demo-0", "demo-1", "demo-2"] {
            let pod = pods.get(p).await.map_err(|e| format!("get pod {p}: {e}"))?;
            let image = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone());
            images.push((p, image));
        }
        Ok(images)
    }

    /// Patches spec.image and returns the RaftCluster's new generation.
    async fn set_image(&self, image: &str) -> Result<i64, String> {
        let patch = format!(r#"{{"spec":{{"image":"{image}"}}}}"#);
        self.world
            .cli
            .kubectl(&[
                "patch",
                "raftcluster",
                "demo",
                "--type",
                "merge",
                "-p",
                &patch,
                "-o",
                "jsonpath={.metadata.generation}",
            ])
            .await?
            .trim()
            .parse()
            .map_err(|e| format!("kubectl patch printed no generation: {e}"))
    }

    /// A release that cannot run: spec.image names an image no node has. The operator restarts
    /// one follower onto it, sees it cannot start, and stops there with Degraded/UpdateStalled;
    /// the other two keep the quorum and take writes. Set back, the stuck member is restarted
    /// at once and the cluster is Ready again.
    async fn stalled_update(&mut self, log: &StatusLog) -> Result<(), String> {
        self.pods_ready_with_leader(log).await?;
        let good = self.rolled_image.clone();
        let bad = format!("{}:missing", good.split(':').next().unwrap_or(&good));
        let mark = log.mark();
        let generation = self.set_image(&bad).await?;
        let stalled = log
            .wait_for(
                mark,
                STEP,
                "Degraded/UpdateStalled after spec.image named a missing image",
                |s| {
                    s.observed_generation >= Some(generation)
                        && s.conditions.iter().any(|c| {
                            c.type_ == "Degraded"
                                && c.status == "True"
                                && c.reason == "UpdateStalled"
                        })
                },
            )
            .await?;
        let on_bad: Vec<&str> = self
            .images()
            .await?
            .into_iter()
            .filter(|(_, image)| image.as_deref() == Some(bad.as_str()))
            .map(|(p, _)| p)
            .collect();
        let leader = stalled.status.leader.clone().unwrap_or_default();
        if on_bad.len() != 1 || on_bad.contains(&leader.as_str()) {
            return Err(format!(
                "the stalled update should have restarted exactly one follower onto {bad}; on it: {on_bad:?}, leader {leader}"
            ));
        }
        let available = stalled
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True");
        if !available {
            return Err(format!(
                "the cluster lost its quorum in a stalled update: {:?}",
                stalled.status.conditions
            ));
        }
        // The two members left keep taking writes.
        let serving = ["demo-0", "demo-1", "demo-2"]
            .into_iter()
            .find(|p| !on_bad.contains(p))
            .unwrap_or("demo-0");
        self.write_via(serving, "while-stalled", "still-writable")
            .await?;
        let events = self.events().await?;
        if !events.lines().any(|l| l.contains("UpdateStalled")) {
            return Err(format!("no UpdateStalled Event:\n{events}"));
        }

        let mark = log.mark();
        let generation = self.set_image(&good).await?;
        log.wait_for(
            mark,
            STEP,
            "Ready again after spec.image was set back",
            |s| {
                s.observed_generation >= Some(generation)
                    && s.updated_replicas == Some(3)
                    && steady(s, 3)
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            },
        )
        .await?;
        self.pods_ready_with_leader(log).await?;
        self.check_every_write().await
    }

    /// A follower loses its volume (its PVC deleted with its pod, as when a node and its local
    /// disk are gone): it comes back empty, the leader refuses its new incarnation, and the
    /// operator replaces it — removed, restarted, added back as a learner, promoted — with no one
    /// touching it; it then holds every write.
    async fn lost_volume(&mut self, log: &StatusLog) -> Result<(), String> {
        let before = self.pods_ready_with_leader(log).await?;
        let leader = before.leader.clone().unwrap_or_default();
        let victim = ["demo-2", "demo-1", "demo-0"]
            .into_iter()
            .find(|p| *p != leader)
            .unwrap_or("demo-2");
        let claim = format!("data-{victim}");
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.world.plane.client.clone(), NS);
        let old_uid = claims
            .get(&claim)
            .await
            .map_err(|e| format!("get pvc {claim}: {e}"))?
            .uid();
        let t0 = Instant::now();
        self.world
            .cli
            .kubectl(&["delete", "pvc", &claim, "--wait=false"])
            .await?;
        self.world.cli.kubectl(&["delete", "pod", victim]).await?;
        // The Event says the operator saw it for what it is.
        let deadline = Instant::now() + STEP;
        loop {
            let events = self.events().await?;
            if events
                .lines()
                .any(|l| l.contains("MemberReplaced") && l.contains(victim))
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no MemberReplaced Event for {victim} within {STEP:?} of losing its volume:\n{events}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mark = log.mark();
        let back = log
            .wait_for(
                mark,
                STEP,
                &format!("{victim} a healthy voter again after losing its volume"),
                |s| steady(s, 3),
            )
            .await?;
        self.figures.lost_volume = Some(back.at - t0);
        let new_uid = claims
            .get(&claim)
            .await
            .map_err(|e| format!("get pvc {claim}: {e}"))?
            .uid();
        if new_uid == old_uid {
            return Err(format!(
                "{claim} is the same claim ({old_uid:?}): the volume was not replaced"
            ));
        }
        self.pods_ready_with_leader(log).await?;
        self.check_every_write_via(victim).await
    }

    /// Every acknowledged write, read back through demo-1.
    async fn check_every_write(&self) -> Result<(), String> {
        self.check_every_write_via("demo-1").await
    }

    /// Every acknowledged write, read back through `pod`.
    async fn check_every_write_via(&self, pod: &str) -> Result<(), String> {
        // One linearizable scan per exec (the rolling update's writer makes hundreds of keys).
        let out = self
            .world
            .runner
            .exec(
                NS,
                pod,
                &[
                    "raftctl",
                    "--command-timeout",
                    "10s",
                    "--json",
                    "scan",
                    "--limit",
                    "10000",
                ],
            )
            .await?;
        let scan: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| format!("raftctl --json scan said {out:?}: {e}"))?;
        if scan["more"] != serde_json::Value::Bool(false) {
            return Err(format!("the scan did not get every key in one page: {out}"));
        }
        let stored: BTreeMap<&str, &str> = scan["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv["key"].as_str()?, kv["value"].as_str()?)))
            .collect();
        for (key, value) in &self.acknowledged {
            if stored.get(key.as_str()) != Some(&value.as_str()) {
                return Err(format!(
                    "{key} reads {:?} in a scan through {pod}, but {value:?} was acknowledged",
                    stored.get(key.as_str())
                ));
            }
        }
        Ok(())
    }

    async fn check_events(&self) -> Result<(), String> {
        let events = self.events().await?;
        let elected = events
            .lines()
            .filter(|l| l.contains("LeaderElected"))
            .count();
        if elected == 0 {
            return Err(format!(
                "no LeaderElected Event for raftcluster/demo:\n{events}"
            ));
        }
        Ok(())
    }

    async fn tls_example(&mut self) -> Result<(), String> {
        let log = StatusLog::watch(self.world.plane.client.clone(), NS, "secure");
        let t = Instant::now();
        let example = repo_root().join("deploy/examples/raftcluster-tls.yaml");
        self.world
            .cli
            .kubectl(&["apply", "-f", &example.display().to_string()])
            .await?;
        let up = log
            .wait_for(0, STEP, "a leader of the TLS example", |s| steady(s, 3))
            .await?;
        self.figures.tls_to_leader = Some(up.at - t);
        let tls = [
            "--cacert",
            "/etc/kuberaft/tls/ca.crt",
            "--cert",
            "/etc/kuberaft/tls/tls.crt",
            "--key",
            "/etc/kuberaft/tls/tls.key",
            "--endpoints",
            "https://secure-1.secure-peers.default.svc.cluster.local:7001",
        ];
        let mut put = vec!["raftctl"];
        put.extend(tls);
        put.extend(["put", "over-tls", "yes"]);
        let out = self.world.runner.exec(NS, "secure-0", &put).await?;
        if !out.starts_with("OK") {
            return Err(format!(
                "raftctl --cacert put through secure-1 said {out:?}"
            ));
        }
        let mut get = vec!["raftctl"];
        get.extend(tls);
        get.extend(["get", "over-tls"]);
        let value = self.world.runner.exec(NS, "secure-2", &get).await?;
        if value.trim() != "yes" {
            return Err(format!("raftctl --cacert get over-tls said {value:?}"));
        }
        self.world
            .cli
            .kubectl(&["delete", "raftcluster", "secure"])
            .await?;
        Ok(())
    }

    async fn operator_rss(&self) -> Result<u64, String> {
        let pods: Api<Pod> = Api::namespaced(self.world.plane.client.clone(), OPERATOR_NS);
        let list = pods
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
            .await
            .map_err(|e| e.to_string())?;
        let pod = list.items.first().ok_or("no operator pod")?;
        self.world
            .runner
            .rss_bytes(OPERATOR_NS, &pod.name_any())
            .await
    }

    /// `kubectl delete raftcluster demo`: the garbage collector removes the StatefulSet, the
    /// Services and the PDB; the PVCs stay (retention Retain).
    async fn delete_cluster(&self) -> Result<(), String> {
        self.world
            .cli
            .kubectl(&["delete", "raftcluster", "demo"])
            .await?;
        let client = self.world.plane.client.clone();
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
        let svc: Api<Service> = Api::namespaced(client.clone(), NS);
        let pdb: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), NS);
        let deadline = Instant::now() + STEP;
        loop {
            let mut left = Vec::new();
            if sts
                .get_opt("demo")
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                left.push("statefulset/demo".to_string());
            }
            for name in ["demo", "demo-peers", "demo-leader"] {
                if svc
                    .get_opt(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    left.push(format!("service/{name}"));
                }
            }
            if pdb
                .get_opt("demo")
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                left.push("poddisruptionbudget/demo".to_string());
            }
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "still there after kubectl delete raftcluster demo: {left:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client, NS);
        for ordinal in 0..5 {
            let name = format!("data-demo-{ordinal}");
            if pvcs
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                return Err(format!(
                    "{name} is gone; the volumes should be kept (Retain)"
                ));
            }
        }
        Ok(())
    }

    /// What a person would look at when the journey fails.
    async fn diagnose(&self) {
        for args in [
            vec!["get", "nodes,pods,pvc,pv", "-A", "-o", "wide"],
            vec!["get", "raftclusters", "-o", "yaml"],
            vec!["get", "events", "-A", "--sort-by=.lastTimestamp"],
        ] {
            match self.world.cli.kubectl(&args).await {
                Ok(out) => println!("--- kubectl {}\n{out}", args.join(" ")),
                Err(e) => println!("--- kubectl {}: {e}", args.join(" ")),
            }
        }
        let all: Api<Pod> = Api::all(self.world.plane.client.clone());
        if let Ok(list) = all.list(&ListParams::default()).await {
            for pod in list.items {
                let states: Vec<String> = pod
                    .status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
                    .map(|c| format!("{:?} (restarts {})", c.state, c.restart_count))
                    .collect();
                println!(
                    "--- pod {}/{}: {states:?}",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any()
                );
            }
        }
        let pods: Api<Pod> = Api::namespaced(self.world.plane.client.clone(), OPERATOR_NS);
        if let Ok(list) = pods.list(&ListParams::default()).await {
            for pod in list.items {
                println!(
                    "--- logs of {OPERATOR_NS}/{}\n{}",
                    pod.name_any(),
                    self.world.runner.logs(OPERATOR_NS, &pod.name_any()).await
                );
            }
        }
        for pod in ["demo-0", "demo-1", "demo-2"] {
            let logs = self.world.runner.logs(NS, pod).await;
            let tail: Vec<&str> = logs.lines().rev().take(20).collect();
            println!(
                "--- last lines of {pod}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        for part in ["kube-apiserver", "kube-controller-manager"] {
            println!(
                "--- last lines of {part}\n{}",
                self.world.plane.log_tail(part, 15)
            );
        }
    }
}
