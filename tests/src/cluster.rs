//! A cluster of real `kuberaft-node` processes on 127.0.0.1 for tests: start,
//! kill, pause, restart members, and talk to them over gRPC. Every process
//! is killed when the `Cluster` is dropped, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kuberaft_proto::admin::admin_client::AdminClient;
use kuberaft_proto::admin::{self as adminpb};
use kuberaft_proto::kv::kv_client::KvClient;
use tonic::transport::Channel;

/// The `kuberaft-node` binary of the profile these tests were built with,
/// built on first use (`cargo test` builds only test targets of other
/// packages, not their binaries).
pub fn node_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_binary("kuberaft-node")).clone()
}

/// Builds a binary of the workspace with the test's own profile. With
/// `KUBERAFT_TEST_BIN_DIR` set, takes the binary from that directory instead
/// (for a target dir shared by several checkouts, where another build may
/// replace `target/<profile>/<name>` while tests run).
pub fn build_binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("KUBERAFT_TEST_BIN_DIR") {
        let bin = PathBuf::from(dir).join(name);
        assert!(
            bin.exists(),
            "KUBERAFT_TEST_BIN_DIR has no {}",
            bin.display()
        );
        return bin;
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    build_workspace_binaries(release);
    let target_dir = profile_dir.parent().expect("target dir");
    let bin = target_dir
        .join(if release { "release" } else { "debug" })
        .join(name);
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

/// Builds every binary of the workspace (once per test process), into the target dir the
/// tests run from. The features are those of `cargo test --workspace` (`--workspace --tests`
/// unifies the same dependencies, dev-dependencies included), so this only links what is not
/// built yet; a `-p` or a plain `--bins` build would resolve other features and build every
/// dependency again.
pub fn build_workspace_binaries(release: bool) {
    static BUILT: std::sync::Mutex<[bool; 2]> = std::sync::Mutex::new([false; 2]);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built[usize::from(release)] {
        return;
    }
    let exe = std::env::current_exe().expect("test executable path");
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // `cargo test` gives the test process its own CARGO_* variables (CARGO_MANIFEST_DIR of the
    // tests crate, …). Some build scripts (ring's) watch them: passed on, they would make this
    // build, and the next `cargo test` after it, compile everything above them again.
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str()
            && k.starts_with("CARGO_")
            && k != "CARGO_HOME"
        {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--quiet",
            "--locked",
            "--workspace",
            "--tests",
            "--bins",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(
        status.success(),
        "cargo build of the workspace's binaries failed"
    );
    built[usize::from(release)] = true;
}

/// A free TCP port on 127.0.0.1 for a member to listen on.
///
/// It is picked from 10000–19999, below the kernel's ephemeral range (32768–60999 here) and
/// below the range `raftctl_dev` picks from. A port taken from the ephemeral range and released
/// can be handed out again as the local port of an outgoing connection, for example a member's
/// long-lived connection to a peer; a member restarted on that port then fails with "address
/// already in use". Each test process starts at its own offset and never hands out a port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT);
}

pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_port: u16,
    pub client_port: u16,
    pub http_port: u16,
    /// Membership changes, transfers and snapshots (not on the client port).
    pub admin_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// Extra flags this member was started with.
    pub extra_args: Vec<String>,
}

impl Member {
    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
}

pub struct Cluster {
    pub name: String,
    pub members: Vec<Member>,
    /// Holds every data dir and log; removed on drop.
    pub dir: tempfile::TempDir,
    initial_members: String,
}

impl Cluster {
    /// Starts `n` members that bootstrap a cluster together.
    pub fn start(n: u64) -> Cluster {
        Self::start_with(n, &[])
    }

    /// Starts `n` members named like the pods of StatefulSet `name`
    /// (`<name>-0`, …; member id = ordinal + 1), in cluster `name`.
    pub fn start_named(name: &str, n: u64) -> Cluster {
        Self::build(name, n, |_| Vec::new(), |id| format!("{name}-{}", id - 1))
    }

    pub fn start_with(n: u64, extra_args: &[&str]) -> Cluster {
        let args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        Self::build("test", n, |_| args.clone(), |id| format!("node-{id}"))
    }

    /// Starts `n` members whose client ports, as the members know each other (where a
    /// follower forwards to the leader), are `advertised(id)` instead of their own: for a
    /// proxy in between. Clients still reach each member at its own port.
    pub fn start_advertising(n: u64, advertised: impl Fn(u64) -> u16) -> Cluster {
        let mut c = Self::prepare("test", n, |_| Vec::new(), |id| format!("node-{id}"));
        c.initial_members = c
            .members
            .iter()
            .map(|m| {
                format!(
                    "{}={}@127.0.0.1:{}/{}",
                    m.id,
                    m.name,
                    m.peer_port,
                    advertised(m.id)
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// Starts `n` members, each with its own extra flags (e.g. its own
    /// certificate files).
    pub fn start_with_each(n: u64, args_of: impl Fn(u64) -> Vec<String>) -> Cluster {
        Self::build("test", n, args_of, |id| format!("node-{id}"))
    }

    fn build(
        cluster: &str,
        n: u64,
        args_of: impl Fn(u64) -> Vec<String>,
        name_of: impl Fn(u64) -> String,
    ) -> Cluster {
        let mut c = Self::prepare(cluster, n, args_of, name_of);
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// The cluster's members with their ports and folders, none started yet.
    fn prepare(
        cluster: &str,
        n: u64,
        args_of: impl Fn(u64) -> Vec<String>,
        name_of: impl Fn(u64) -> String,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let members: Vec<Member> = (1..=n)
            .map(|id| Member {
                id,
                name: name_of(id),
                peer_port: free_port(),
                client_port: free_port(),
                http_port: free_port(),
                admin_port: free_port(),
                data_dir: dir.path().join(format!("data-{id}")),
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
                extra_args: args_of(id),
            })
            .collect();
        let initial_members = members
            .iter()
            .map(|m| {
                format!(
                    "{}={}@127.0.0.1:{}/{}",
                    m.id, m.name, m.peer_port, m.client_port
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            name: cluster.into(),
            members,
            dir,
            initial_members,
        }
    }

    /// Starts a new member that is not among the initial members: it joins
    /// and waits to be added (AddMember). Returns its id.
    pub fn add_node(&mut self) -> u64 {
        let id = self.members.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        let extra_args = self
            .members
            .first()
            .map(|m| m.extra_args.clone())
            .unwrap_or_default();
        self.members.push(Member {
            id,
            name: format!("node-{id}"),
            peer_port: free_port(),
            client_port: free_port(),
            http_port: free_port(),
            admin_port: free_port(),
            data_dir: self.dir.path().join(format!("data-{id}")),
            log: self.dir.path().join(format!("node-{id}.log")),
            child: None,
            extra_args,
        });
        self.spawn(id);
        id
    }

    /// The AddMember description of member `id`.
    pub fn member_pb(&mut self, id: u64) -> kuberaft_proto::raft::Member {
        let m = self.member(id);
        kuberaft_proto::raft::Member {
            id,
            name: m.name.clone(),
            peer_addr: format!("127.0.0.1:{}", m.peer_port),
            client_addr: m.client_addr(),
            suffrage: kuberaft_proto::raft::Suffrage::Learner as i32,
        }
    }

    pub fn member(&mut self, id: u64) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    /// The command line of member `id`, for tests that start it themselves.
    pub fn command(&mut self, id: u64) -> Command {
        let bin = node_binary();
        let initial = self.initial_members.clone();
        let cluster = self.name.clone();
        let m = self.member(id);
        let mut cmd = Command::new(bin);
        cmd.arg("--cluster")
            .arg(&cluster)
            .arg("--id")
            .arg(m.id.to_string())
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--peer-listen")
            .arg(format!("127.0.0.1:{}", m.peer_port))
            .arg("--client-listen")
            .arg(format!("127.0.0.1:{}", m.client_port))
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{}", m.http_port))
            .arg("--admin-listen")
            .arg(m.admin_addr())
            .arg("--initial-members")
            .arg(initial)
            .args(&m.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("KUBERAFT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            );
        cmd
    }

    /// (Re)starts member `id` with its data dir; output goes to its log.
    pub fn spawn(&mut self, id: u64) {
        let mut cmd = self.command(id);
        let m = self.member(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("open member log");
        let err = log.try_clone().expect("clone log handle");
        let child = cmd
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn kuberaft-node");
        m.child = Some(child);
    }

    pub fn signal(&mut self, id: u64, sig: i32) {
        if let Some(pid) = self.member(id).pid() {
            // SAFETY: kill(2) with a pid of a child we own.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// SIGKILL: the member dies without a chance to hand anything over.
    pub fn kill(&mut self, id: u64) {
        let m = self.member(id);
        if let Some(mut c) = m.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the member to exit; returns its exit status.
    pub fn terminate(&mut self, id: u64, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal(id, libc::SIGTERM);
        let m = self.member(id);
        let mut c = m.child.take()?;
        let start = Instant::now();
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if start.elapsed() > timeout {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGSTOP, and wait until every thread of the member has stopped.
    /// kill(2) returns before the stop takes effect: the kernel stops the
    /// other threads only once the thread it picked runs, and on a busy
    /// machine a runtime worker went on answering appends for milliseconds
    /// after kill(2), so "paused" members still acknowledged writes.
    pub fn pause(&mut self, id: u64) {
        self.signal(id, libc::SIGSTOP);
        if let Some(pid) = self.member(id).pid() {
            wait_until_stopped(pid, Duration::from_secs(10));
        }
    }

    pub fn resume(&mut self, id: u64) {
        self.signal(id, libc::SIGCONT);
    }

    pub fn log_of(&mut self, id: u64) -> String {
        std::fs::read_to_string(&self.member(id).log).unwrap_or_default()
    }

    pub fn client_addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_addr()).collect()
    }

    pub fn admin_addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.admin_addr()).collect()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// Prints every member's log; call when a test is about to fail.
    pub fn dump_logs(&mut self) {
        for id in self.ids() {
            eprintln!("===== log of member {id} =====\n{}", self.log_of(id));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                if let Some(pid) = Some(c.id() as i32) {
                    // A paused process must be resumed to die promptly.
                    unsafe {
                        libc::kill(pid, libc::SIGCONT);
                    }
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            for m in &self.members {
                if let Ok(log) = std::fs::read_to_string(&m.log) {
                    let tail: Vec<&str> = log.lines().rev().take(60).collect();
                    eprintln!(
                        "===== last lines of member {} =====\n{}",
                        m.id,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
    }
}

/// A channel to `addr` that fails fast when nobody listens.
pub async fn channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

pub async fn kv(addr: &str) -> KvClient<Channel> {
    KvClient::new(channel(addr).await)
}

pub async fn admin(addr: &str) -> AdminClient<Channel> {
    AdminClient::new(channel(addr).await)
}

/// Status of the member at `addr`, or None if it does not answer.
pub async fn status(addr: &str) -> Option<adminpb::StatusResponse> {
    let mut a = admin(addr).await;
    tokio::time::timeout(
        Duration::from_millis(500),
        a.status(adminpb::StatusRequest {}),
    )
    .await
    .ok()?
    .ok()
    .map(|r| r.into_inner())
}

/// Waits until every given member that answers agrees on one leader of one
/// term, and that leader says so itself; returns (leader id, term).
pub async fn wait_for_leader(addrs: &[String], timeout: Duration) -> (u64, u64) {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for a in addrs {
            if let Some(s) = status(a).await {
                seen.push(s);
            }
        }
        let leaders: Vec<_> = seen
            .iter()
            .filter(|s| s.role == adminpb::Role::Leader as i32)
            .collect();
        if leaders.len() == 1 {
            let (id, term) = (leaders[0].member_id, leaders[0].term);
            if seen.iter().all(|s| s.leader_id == id && s.term == term) {
                return (id, term);
            }
        }
        assert!(
            start.elapsed() < timeout,
            "no single leader within {timeout:?}; saw {:?}",
            seen.iter()
                .map(|s| (s.member_id, s.role, s.term, s.leader_id))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A linearizable read through `addr`, retried while the cluster answers
/// UNAVAILABLE (an election in progress), as a client would.
pub async fn get_linearizable(addr: &str, key: &str) -> Result<Option<Vec<u8>>, tonic::Status> {
    let start = Instant::now();
    loop {
        let r = kv(addr)
            .await
            .get(kuberaft_proto::kv::GetRequest {
                key: key.as_bytes().to_vec(),
                consistency: 0,
            })
            .await;
        match r {
            Ok(r) => return Ok(r.into_inner().kv.map(|kv| kv.value)),
            Err(e)
                if e.code() == tonic::Code::Unavailable
                    && start.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits until every thread of `pid` is in the stopped state ('T' in
/// /proc/PID/task/TID/stat), or panics after `timeout`.
fn wait_until_stopped(pid: i32, timeout: Duration) {
    let start = Instant::now();
    loop {
        if all_threads_stopped(pid) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "member process {pid} did not stop within {timeout:?} of SIGSTOP"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        // Gone: nothing of it runs any more.
        return true;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .map(|stat| thread_state(&stat) == Some('T'))
            // A thread that exited meanwhile does not run either.
            .unwrap_or(true)
    })
}

/// The state field of a /proc stat line: the first character after the
/// command name, which is in parentheses and may itself hold spaces or ')'.
fn thread_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_state_is_read_after_the_last_parenthesis_of_the_name() {
        assert_eq!(thread_state("42 (tokio-rt) T 1 42 42"), Some('T'));
        assert_eq!(thread_state("42 (a) b) S 1 42 42"), Some('S'));
        assert_eq!(thread_state("garbage"), None);
    }

    #[test]
    fn a_stopped_child_is_seen_stopped_and_a_running_one_is_not() {
        let mut child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        assert!(!all_threads_stopped(pid), "a sleeping child is not stopped");
        // SAFETY: kill(2) with a pid of a child we own.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        wait_until_stopped(pid, Duration::from_secs(10));
        let _ = child.kill();
        let _ = child.wait();
    }
}
