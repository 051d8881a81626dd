//! A kuberaft cluster of containers arranged as the operator's StatefulSet
//! arranges pods, so the suite sees what a pod would see.
//!
//! | StatefulSet                                  | here                                          |
//! |----------------------------------------------|-----------------------------------------------|
//! | pod `demo-<i>`                               | container (hostname `demo-<i>`)               |
//! | headless Service `demo-peers`: DNS name      | `--network-alias demo-<i>.demo-peers.default.svc.cluster.local` |
//! |   per pod, resolved by the cluster DNS       |   on the "pods" network, resolved by Docker's embedded DNS |
//! | PVC `data-demo-<i>` at `/var/lib/kuberaft`   | named volume at `/var/lib/kuberaft`           |
//! | env of the pod template                      | the same variables, the same values           |
//! | restricted securityContext                   | user 65532, read-only root, /tmp a tmpfs, no capabilities, no-new-privileges |
//! | terminationGracePeriodSeconds: 30            | `--stop-timeout 30`                           |
//! | a recreated pod gets a new IP                | IPs are pinned per "generation"; `recreate` moves to the next |
//!
//! The host cannot resolve the pod names, and a member cut off from the pods
//! network must stay observable, so every container is also attached to a
//! second "ctl" network with no aliases: the test talks to members by their
//! IP there. Members never use it: they know each other only by DNS name,
//! and those names exist only on the pods network, so disconnecting a member
//! from it partitions that member from all its peers, both ways. A third,
//! "side" network holds a minority that is cut off together: there the
//! members of the minority resolve and reach each other, and nobody else
//! (or, as a bridge, one member of the majority too).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::cli::{docker, docker_combined, must};
use super::image::{self, Image};
use super::resources::Run;

pub const PEER_PORT: u16 = 7000;
pub const CLIENT_PORT: u16 = 7001;
pub const HTTP_PORT: u16 = 7002;
pub const ADMIN_PORT: u16 = 7003;
pub const DATA_DIR: &str = "/var/lib/kuberaft";
/// The pod template's terminationGracePeriodSeconds.
pub const TERMINATION_GRACE_SECONDS: u32 = 30;

/// What the RaftCluster resource would say.
#[derive(Clone, Debug)]
pub struct Spec {
    pub cluster: String,
    pub namespace: String,
    pub replicas: u32,
    pub election_timeout_min_ms: u32,
    pub election_timeout_max_ms: u32,
    pub heartbeat_interval_ms: u32,
}

impl Spec {
    /// `demo` in `default` with the operator's default timeouts.
    pub fn demo(replicas: u32) -> Spec {
        Spec {
            cluster: "demo".into(),
            namespace: "default".into(),
            replicas,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            heartbeat_interval_ms: 50,
        }
    }
}

/// One pod of the StatefulSet.
#[derive(Clone, Debug)]
pub struct Member {
    pub ordinal: u32,
    /// Raft member id: the ordinal plus one.
    pub id: u64,
    /// The pod name, `demo-<i>`.
    pub name: String,
    /// `demo-<i>.demo-peers.<namespace>.svc.cluster.local`.
    pub fqdn: String,
    pub container: String,
    pub volume: String,
}

/// A user-defined bridge network with a /24 the suite chose, so that IPs can
/// be pinned.
#[derive(Clone, Debug)]
pub struct Network {
    pub name: String,
    /// The first three octets, e.g. `172.30.57`.
    pub prefix: String,
}

impl Network {
    /// A new network of `run`, a /24 in `172.<second_octet>.0.0/16`.
    pub fn create(run: &Run, what: &str, second_octet: u8) -> Network {
        let name = run.name_of(what);
        run.network(&name);
        // Spread runs over the third octet so that parallel runs rarely try
        // the same subnet; the engine refuses overlaps, then we try the next.
        let start = std::process::id() as usize * 7;
        for attempt in 0..64 {
            let third = (start + attempt * 37) % 200 + 20;
            let prefix = format!("172.{second_octet}.{third}");
            let mut args: Vec<String> = vec!["network".into(), "create".into()];
            args.extend(run.label_args());
            args.extend([
                "--driver".into(),
                "bridge".into(),
                "--subnet".into(),
                format!("{prefix}.0/24"),
                "--gateway".into(),
                format!("{prefix}.1"),
                name.clone(),
            ]);
            match docker(&args) {
                Ok(_) => return Network { name, prefix },
                Err(e) if e.stderr.contains("overlap") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no free /24 in 172.{second_octet}.0.0/16 for network {name}");
    }

    /// The pinned IP of a member's `generation`.
    pub fn ip(&self, ordinal: u32, generation: u32) -> String {
        assert!(ordinal < 50 && generation < 4, "IP plan exhausted");
        format!("{}.{}", self.prefix, 10 + ordinal + 50 * generation)
    }
}

pub struct DockerCluster {
    pub spec: Spec,
    pub image: Image,
    pub pods: Network,
    pub ctl: Network,
    pub side: Network,
    pub members: Vec<Member>,
    /// Each member's IP generation: bumped by `recreate`.
    generations: Mutex<Vec<u32>>,
    // Last: dropped after everything else, removes every Docker object.
    run: Run,
}

impl DockerCluster {
    /// Builds the node image and starts `spec.replicas` members that
    /// bootstrap the cluster together (what the StatefulSet's first rollout
    /// with `podManagementPolicy: Parallel` does).
    pub fn start(spec: Spec) -> DockerCluster {
        let run = Run::new();
        let image = image::build(&run, "node.Dockerfile", "node");
        let pods = Network::create(&run, "pods", 30);
        let ctl = Network::create(&run, "ctl", 31);
        let side = Network::create(&run, "side", 29);
        let members: Vec<Member> = (0..spec.replicas)
            .map(|ordinal| {
                let name = format!("{}-{ordinal}", spec.cluster);
                Member {
                    ordinal,
                    id: u64::from(ordinal) + 1,
                    fqdn: format!(
                        "{name}.{}-peers.{}.svc.cluster.local",
                        spec.cluster, spec.namespace
                    ),
                    container: run.name_of(&name),
                    volume: run.name_of(&format!("data-{name}")),
                    name,
                }
            })
            .collect();
        let c = DockerCluster {
            generations: Mutex::new(vec![0; members.len()]),
            spec,
            image,
            pods,
            ctl,
            side,
            members,
            run,
        };
        for m in &c.members {
            c.run.volume(&m.volume);
            let mut args: Vec<String> = vec!["volume".into(), "create".into()];
            args.extend(c.run.label_args());
            args.push(m.volume.clone());
            must(&args);
        }
        for m in &c.members {
            c.create_container(m, 0);
        }
        for m in &c.members {
            must(&["start", &m.container]);
        }
        c
    }

    /// `1=demo-0@demo-0.demo-peers.default.svc.cluster.local:7000/7001,…`
    pub fn initial_members(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}@{}:{PEER_PORT}/{CLIENT_PORT}", m.id, m.name, m.fqdn))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The pod template's environment for member `m`.
    fn env(&self, m: &Member) -> Vec<(String, String)> {
        let s = &self.spec;
        [
            ("KUBERAFT_CLUSTER", s.cluster.clone()),
            ("KUBERAFT_NAME", m.name.clone()),
            ("KUBERAFT_NAMESPACE", s.namespace.clone()),
            ("KUBERAFT_DATA_DIR", DATA_DIR.to_string()),
            ("KUBERAFT_PEER_LISTEN", format!("0.0.0.0:{PEER_PORT}")),
            ("KUBERAFT_CLIENT_LISTEN", format!("0.0.0.0:{CLIENT_PORT}")),
            ("KUBERAFT_ADMIN_LISTEN", format!("0.0.0.0:{ADMIN_PORT}")),
            ("KUBERAFT_HTTP_LISTEN", format!("0.0.0.0:{HTTP_PORT}")),
            ("KUBERAFT_INITIAL_MEMBERS", self.initial_members()),
            (
                "KUBERAFT_ELECTION_TIMEOUT_MIN_MS",
                s.election_timeout_min_ms.to_string(),
            ),
            (
                "KUBERAFT_ELECTION_TIMEOUT_MAX_MS",
                s.election_timeout_max_ms.to_string(),
            ),
            (
                "KUBERAFT_HEARTBEAT_INTERVAL_MS",
                s.heartbeat_interval_ms.to_string(),
            ),
            ("KUBERAFT_LOG_FORMAT", "json".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Creates (does not start) member `m`'s container with the IPs of
    /// `generation`, on both networks.
    fn create_container(&self, m: &Member, generation: u32) {
        self.run.container(&m.container);
        let mut args: Vec<String> = vec!["create".into()];
        args.extend(self.run.label_args());
        args.extend([
            "--name".into(),
            m.container.clone(),
            "--hostname".into(),
            m.name.clone(),
            "--network".into(),
            self.pods.name.clone(),
            "--ip".into(),
            self.pods.ip(m.ordinal, generation),
            "--network-alias".into(),
            m.fqdn.clone(),
            "--volume".into(),
            format!("{}:{DATA_DIR}", m.volume),
            "--read-only".into(),
            "--tmpfs".into(),
            "/tmp".into(),
            "--cap-drop".into(),
            "ALL".into(),
            "--security-opt".into(),
            "no-new-privileges".into(),
            "--stop-timeout".into(),
            TERMINATION_GRACE_SECONDS.to_string(),
        ]);
        for (k, v) in self.env(m) {
            args.extend(["--env".into(), format!("{k}={v}")]);
        }
        args.push(self.image.name.clone());
        must(&args);
        must(&[
            "network",
            "connect",
            "--ip",
            &self.ctl.ip(m.ordinal, generation),
            &self.ctl.name,
            &m.container,
        ]);
    }

    pub fn member(&self, id: u64) -> &Member {
        self.members
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.id).collect()
    }

    fn generation(&self, id: u64) -> u32 {
        let m = self.member(id);
        self.generations.lock().unwrap_or_else(|e| e.into_inner())[m.ordinal as usize]
    }

    /// Where the test reaches member `id`'s client port (the ctl network).
    pub fn client_addr(&self, id: u64) -> String {
        let m = self.member(id);
        format!(
            "{}:{CLIENT_PORT}",
            self.ctl.ip(m.ordinal, self.generation(id))
        )
    }

    pub fn client_addrs(&self) -> Vec<String> {
        self.ids()
            .into_iter()
            .map(|id| self.client_addr(id))
            .collect()
    }

    /// Client addresses of every member but `except`.
    pub fn client_addrs_except(&self, except: &[u64]) -> Vec<String> {
        self.ids()
            .into_iter()
            .filter(|id| !except.contains(id))
            .map(|id| self.client_addr(id))
            .collect()
    }

    /// The IP the engine gave member `id` on the pods network, if attached.
    pub fn pod_ip(&self, id: u64) -> Option<String> {
        let format = format!(
            "{{{{with index .NetworkSettings.Networks \"{}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}",
            self.pods.name
        );
        docker(&["inspect", "--format", &format, &self.member(id).container])
            .ok()
            .filter(|ip| !ip.is_empty())
    }

    /// SIGKILL, as when a node dies: nothing is handed over.
    pub fn kill(&self, id: u64) {
        must(&["kill", &self.member(id).container]);
    }

    /// SIGTERM, then SIGKILL after `grace` seconds (`kubectl delete pod`).
    pub fn stop(&self, id: u64, grace_seconds: u32) {
        must(&[
            "stop",
            "--time",
            &grace_seconds.to_string(),
            &self.member(id).container,
        ]);
    }

    /// Starts a stopped member again with its volume (the kubelet restarting
    /// the pod's container).
    pub fn start_member(&self, id: u64) {
        must(&["start", &self.member(id).container]);
    }

    /// Freezes every process of the member (the cgroup freezer).
    pub fn pause(&self, id: u64) {
        must(&["pause", &self.member(id).container]);
    }

    pub fn unpause(&self, id: u64) {
        must(&["unpause", &self.member(id).container]);
    }

    /// Cuts the member off from its peers (both ways); clients on the ctl
    /// network still reach it.
    pub fn disconnect(&self, id: u64) {
        must(&[
            "network",
            "disconnect",
            &self.pods.name,
            &self.member(id).container,
        ]);
    }

    /// Undoes `disconnect`: same IP, same DNS name.
    pub fn reconnect(&self, id: u64) {
        let m = self.member(id);
        must(&[
            "network",
            "connect",
            "--ip",
            &self.pods.ip(m.ordinal, self.generation(id)),
            "--alias",
            &m.fqdn,
            &self.pods.name,
            &m.container,
        ]);
    }

    /// Moves member `id` from the pods network to the side network, with
    /// its DNS name: together with the others moved there, it forms a
    /// minority that can reach only itself.
    pub fn move_to_side(&self, id: u64) {
        self.disconnect(id);
        self.bridge_to_side(id);
    }

    /// Attaches member `id` to the side network as well, with its DNS name: it stays with the
    /// majority on the pods network and also reaches the members moved to the side, which reach
    /// only it and each other (a bridge: a partition that is not transitive).
    pub fn bridge_to_side(&self, id: u64) {
        let m = self.member(id);
        must(&[
            "network",
            "connect",
            "--ip",
            &self.side.ip(m.ordinal, self.generation(id)),
            "--alias",
            &m.fqdn,
            &self.side.name,
            &m.container,
        ]);
    }

    /// Undoes `bridge_to_side`.
    pub fn unbridge(&self, id: u64) {
        must(&[
            "network",
            "disconnect",
            &self.side.name,
            &self.member(id).container,
        ]);
    }

    /// Undoes `move_to_side`.
    pub fn back_from_side(&self, id: u64) {
        self.unbridge(id);
        self.reconnect(id);
    }

    /// Deletes member `id`'s container and creates it again with the same
    /// name and volume but new IPs, as a StatefulSet recreates a deleted pod;
    /// returns the new pod IP. The member is stopped with SIGKILL.
    pub fn recreate(&self, id: u64) -> String {
        let m = self.member(id).clone();
        must(&["rm", "--force", &m.container]);
        self.create_next_generation(&m)
    }

    /// Like `recreate`, but the volume is lost too and replaced by an empty
    /// one (a PVC deleted with its pod, a node's local disk gone).
    pub fn recreate_with_empty_volume(&self, id: u64) -> String {
        let m = self.member(id).clone();
        must(&["rm", "--force", &m.container]);
        must(&["volume", "rm", &m.volume]);
        let mut args: Vec<String> = vec!["volume".into(), "create".into()];
        args.extend(self.run.label_args());
        args.push(m.volume.clone());
        must(&args);
        self.create_next_generation(&m)
    }

    fn create_next_generation(&self, m: &Member) -> String {
        let generation = {
            let mut g = self.generations.lock().unwrap_or_else(|e| e.into_inner());
            g[m.ordinal as usize] += 1;
            g[m.ordinal as usize]
        };
        self.create_container(m, generation);
        must(&["start", &m.container]);
        self.pods.ip(m.ordinal, generation)
    }

    /// Runs a program of the image inside member `id`'s container
    /// (`kubectl exec demo-0 -- raftctl …`); its output, or the error.
    pub fn exec(&self, id: u64, command: &[&str]) -> Result<String, super::cli::DockerError> {
        let mut args = vec!["exec", self.member(id).container.as_str()];
        args.extend_from_slice(command);
        docker(&args)
    }

    /// Everything member `id` has logged (its container's stderr), across
    /// restarts of the same container.
    pub fn logs(&self, id: u64) -> String {
        docker_combined(&["logs", &self.member(id).container])
    }

    /// Whether member `id`'s container is running (and not paused).
    pub fn is_running(&self, id: u64) -> bool {
        docker(&[
            "inspect",
            "--format",
            "{{.State.Running}} {{.State.Paused}}",
            &self.member(id).container,
        ])
        .is_ok_and(|s| s == "true false")
    }

    /// Waits until member `id`'s container has exited; returns its exit code.
    pub fn wait_exited(&self, id: u64, timeout: Duration) -> Option<i64> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let state = docker(&[
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.ExitCode}}",
                &self.member(id).container,
            ])
            .unwrap_or_default();
            if let Some(code) = state.strip_prefix("exited ") {
                return code.parse().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Prints the last lines of every member's log (for a failing test).
    pub fn dump_logs(&self, lines: usize) {
        for m in &self.members {
            let log = docker_combined(&["logs", "--tail", &lines.to_string(), &m.container]);
            eprintln!(
                "===== last {lines} log lines of {} (member {}) =====\n{log}",
                m.name, m.id
            );
        }
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs(60);
        }
    }
}
