//! A local cluster of `kuberaft-node` processes on 127.0.0.1, for `raftctl
//! dev` and `failover-bench`: start, stop, kill and restart members, and
//! never leave a process behind.
//!
//! Every member runs in its own process group, so a Ctrl-C in the terminal
//! reaches raftctl alone and the members are stopped in order (SIGTERM, then
//! SIGKILL after a grace period). Should raftctl itself be killed, the kernel
//! kills the members too (`PR_SET_PDEATHSIG`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::args::ClusterArgs;
use super::error::CliError;

/// Name of the cluster a local cluster runs as.
pub const CLUSTER_NAME: &str = "dev";

/// Each member listens on three consecutive ports: peers, clients, HTTP.
pub const PORTS_PER_MEMBER: u32 = 4;

/// Where a kept data dir records the layout it was created with.
const LAYOUT_FILE: &str = "raftctl-dev.layout";

/// How many members and which ports. A kept data dir must be restarted with
/// the same layout: its members know each other by these addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub nodes: u16,
    pub base_port: u16,
}

impl Layout {
    pub const DEFAULT: Layout = Layout {
        nodes: 3,
        base_port: 7100,
    };

    pub fn render(&self) -> String {
        format!("nodes={}\nbase_port={}\n", self.nodes, self.base_port)
    }

    pub fn parse(s: &str) -> Option<Layout> {
        let mut nodes = None;
        let mut base_port = None;
        for line in s.lines() {
            match line.split_once('=') {
                Some(("nodes", v)) => nodes = v.trim().parse().ok(),
                Some(("base_port", v)) => base_port = v.trim().parse().ok(),
                _ => {}
            }
        }
        Some(Layout {
            nodes: nodes?,
            base_port: base_port?,
        })
    }

    /// The flags, else what the data dir recorded, else the defaults; flags
    /// that contradict the data dir are refused.
    pub fn resolve(
        nodes: Option<u16>,
        base_port: Option<u16>,
        recorded: Option<Layout>,
        data_dir: Option<&Path>,
    ) -> Result<Layout, CliError> {
        let Some(r) = recorded else {
            return Ok(Layout {
                nodes: nodes.unwrap_or(Layout::DEFAULT.nodes),
                base_port: base_port.unwrap_or(Layout::DEFAULT.base_port),
            });
        };
        if nodes.is_some_and(|n| n != r.nodes) || base_port.is_some_and(|b| b != r.base_port) {
            return Err(CliError::usage(format!(
                "--data-dir {} holds a cluster of {} members on --base-port {}, and its members know each other by those ports; leave out --nodes and --base-port to resume it, or choose another --data-dir",
                data_dir.map_or_else(String::new, |d| d.display().to_string()),
                r.nodes,
                r.base_port
            )));
        }
        Ok(r)
    }
}

/// How a member's process is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Process {
    Running {
        pid: u32,
    },
    /// Stopped or crashed; what happened, e.g. "killed by SIGKILL".
    Exited {
        how: String,
    },
}

pub struct LocalMember {
    pub id: u64,
    pub name: String,
    pub peer_addr: String,
    pub client_addr: String,
    /// Prometheus /metrics, /livez, /readyz.
    pub http_addr: String,
    /// Membership changes, transfers and snapshots.
    pub admin_addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    pub process: Process,
}

impl LocalMember {
    pub fn pid(&self) -> Option<u32> {
        match self.process {
            Process::Running { pid } => Some(pid),
            Process::Exited { .. } => None,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.process, Process::Running { .. })
    }

    /// The last non-empty line the member logged (why it exited, usually).
    pub fn last_log_line(&self) -> Option<String> {
        let mut f = File::open(&self.log_path).ok()?;
        let len = f.metadata().ok()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail).ok()?;
        String::from_utf8_lossy(&tail)
            .lines()
            .rev()
            .map(strip_ansi)
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
    }
}

/// Where the data lives, and whether it is ours to remove.
enum Root {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

pub struct LocalCluster {
    binary: PathBuf,
    root: Root,
    extra_args: Vec<String>,
    pub members: Vec<LocalMember>,
}

/// Finds `kuberaft-node`: the explicit path, else next to raftctl's own
/// executable, else on PATH.
pub fn find_node_binary(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        return Err(CliError::usage(format!(
            "--node-binary {} does not exist; build it with `cargo build --release --bin kuberaft-node`",
            p.display()
        )));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("kuberaft-node")));
    if let Some(p) = beside.filter(|p| p.is_file()) {
        return Ok(p);
    }
    if let Some(p) = on_path("kuberaft-node") {
        return Ok(p);
    }
    Err(CliError::new(
        "cannot find kuberaft-node next to raftctl or on PATH; build it with `cargo build --release --bin kuberaft-node` (or pass --node-binary)",
    ))
}

/// An executable of this name in a PATH directory.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// "exited with code 1", "killed by SIGKILL".
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(libc::SIGKILL) => "killed by SIGKILL".into(),
        Some(libc::SIGTERM) => "stopped by SIGTERM".into(),
        Some(libc::SIGINT) => "stopped by SIGINT".into(),
        Some(s) => format!("killed by signal {s}"),
        None => "exited".into(),
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl LocalCluster {
    /// Creates the data dirs and starts every member.
    pub fn start(args: &ClusterArgs) -> Result<LocalCluster, CliError> {
        let binary = find_node_binary(args.node_binary.as_deref())?;
        let recorded = args
            .data_dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join(LAYOUT_FILE)).ok())
            .and_then(|s| Layout::parse(&s));
        let layout = Layout::resolve(
            args.nodes,
            args.base_port,
            recorded,
            args.data_dir.as_deref(),
        )?;
        let nodes = u64::from(layout.nodes);
        let last_port = u32::from(layout.base_port) + PORTS_PER_MEMBER * u32::from(layout.nodes);
        if last_port > u32::from(u16::MAX) || layout.base_port < 1024 {
            return Err(CliError::usage(format!(
                "--base-port {} leaves no room for {} members (each takes three ports); pick one between 1024 and {}",
                layout.base_port,
                layout.nodes,
                u32::from(u16::MAX) - PORTS_PER_MEMBER * u32::from(layout.nodes)
            )));
        }
        let root = match &args.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| {
                    CliError::new(format!("cannot create --data-dir {}: {e}", d.display()))
                })?;
                std::fs::write(d.join(LAYOUT_FILE), layout.render()).map_err(|e| {
                    CliError::new(format!("cannot write to --data-dir {}: {e}", d.display()))
                })?;
                Root::Kept(d.clone())
            }
            None => Root::Temporary(
                tempfile::Builder::new()
                    .prefix("kuberaft-dev-")
                    .tempdir()
                    .map_err(|e| {
                        CliError::new(format!(
                            "cannot create a temporary data dir: {e}; pass --data-dir"
                        ))
                    })?,
            ),
        };
        let mut members = Vec::new();
        for id in 1..=nodes {
            let peer_port = u64::from(layout.base_port) + u64::from(PORTS_PER_MEMBER) * (id - 1);
            let name = format!("{CLUSTER_NAME}-{}", id - 1);
            let dir = match &root {
                Root::Temporary(t) => t.path().to_path_buf(),
                Root::Kept(p) => p.clone(),
            };
            members.push(LocalMember {
                id,
                peer_addr: format!("127.0.0.1:{peer_port}"),
                client_addr: format!("127.0.0.1:{}", peer_port + 1),
                http_addr: format!("127.0.0.1:{}", peer_port + 2),
                admin_addr: format!("127.0.0.1:{}", peer_port + 3),
                data_dir: dir.join(&name),
                log_path: dir.join(format!("{name}.log")),
                name,
                child: None,
                process: Process::Exited {
                    how: "not started".into(),
                },
            });
        }
        for m in &members {
            for addr in [&m.peer_addr, &m.client_addr, &m.http_addr, &m.admin_addr] {
                if std::net::TcpListener::bind(addr.as_str()).is_err() {
                    return Err(CliError::new(format!(
                        "{addr} is in use (another raftctl dev?); stop it or choose another --base-port"
                    )));
                }
            }
        }
        let (min, max, hb) = if args.slow {
            (Some(1500), Some(3000), Some(500))
        } else {
            (
                args.election_timeout_min_ms,
                args.election_timeout_max_ms,
                args.heartbeat_interval_ms,
            )
        };
        let mut extra_args = Vec::new();
        if args.ui_actions {
            extra_args.push("--ui-actions".to_string());
        }
        for (flag, v) in [
            ("--election-timeout-min-ms", min),
            ("--election-timeout-max-ms", max),
            ("--heartbeat-interval-ms", hb),
        ] {
            if let Some(v) = v {
                extra_args.push(format!("{flag}={v}"));
            }
        }
        let mut cluster = LocalCluster {
            binary,
            root,
            extra_args,
            members,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    pub fn data_dir(&self) -> &Path {
        match &self.root {
            Root::Temporary(t) => t.path(),
            Root::Kept(p) => p,
        }
    }

    /// Whether the data dir is removed on exit.
    pub fn is_temporary(&self) -> bool {
        matches!(self.root, Root::Temporary(_))
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_addr.clone()).collect()
    }

    /// The `--initial-members` every member is started with.
    pub fn initial_members(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let (host, peer_port) = m.peer_addr.rsplit_once(':').unwrap_or((&m.peer_addr, ""));
                let client_port = m.client_addr.rsplit_once(':').map_or("", |(_, p)| p);
                format!("{}={}@{host}:{peer_port}/{client_port}", m.id, m.name)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member's command line (without the binary).
    pub fn member_args(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        let mut a = vec![
            format!("--cluster={CLUSTER_NAME}"),
            format!("--id={}", m.id),
            format!("--name={}", m.name),
            format!("--data-dir={}", m.data_dir.display()),
            format!("--peer-listen={}", m.peer_addr),
            format!("--client-listen={}", m.client_addr),
            format!("--http-listen={}", m.http_addr),
            format!("--admin-listen={}", m.admin_addr),
            format!("--initial-members={}", self.initial_members()),
        ];
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// Starts member `i` (again, if it had exited); its output goes to its log.
    pub fn spawn(&mut self, i: usize) -> Result<u32, CliError> {
        if let Some(pid) = self.members[i].pid() {
            return Ok(pid);
        }
        let args = self.member_args(i);
        let m = &mut self.members[i];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .map_err(|e| CliError::new(format!("cannot open {}: {e}", m.log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| CliError::new(format!("cannot open {}: {e}", m.log_path.display())))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches only the child.
        // If raftctl dies without stopping its members (SIGKILL, a crash),
        // the kernel kills them: a dev cluster never outlives raftctl.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            CliError::new(format!(
                "cannot start {}: {e}; build it with `cargo build --release --bin kuberaft-node`",
                self.binary.display()
            ))
        })?;
        let pid = child.id();
        m.child = Some(child);
        m.process = Process::Running { pid };
        Ok(pid)
    }

    /// Sends `signal` to member `i`, if it runs.
    pub fn signal(&self, i: usize, signal: i32) -> bool {
        match self.members[i].pid().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a pid of a child we have not reaped yet,
            // so it cannot name another process.
            Some(pid) => unsafe { libc::kill(pid, signal) == 0 },
            None => false,
        }
    }

    /// Notices members that exited; returns their indexes.
    pub fn reap(&mut self) -> Vec<usize> {
        let mut exited = Vec::new();
        for (i, m) in self.members.iter_mut().enumerate() {
            if let Some(child) = &mut m.child
                && let Ok(Some(status)) = child.try_wait()
            {
                m.process = Process::Exited {
                    how: describe_exit(status),
                };
                m.child = None;
                exited.push(i);
            }
        }
        exited
    }

    /// Waits up to `grace` for member `i` to exit.
    pub async fn wait_exit(&mut self, i: usize, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        loop {
            self.reap();
            if !self.members[i].is_running() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM to every member, SIGKILL to those still running after
    /// `grace`; returns once every process has been reaped.
    pub async fn stop_all(&mut self, grace: Duration) {
        for i in 0..self.members.len() {
            self.signal(i, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while self.members.iter().any(LocalMember::is_running) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.reap();
        }
        self.kill_all();
    }

    /// SIGKILL to every member still running, and reap them.
    pub fn kill_all(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let how = match child.wait() {
                    Ok(s) => describe_exit(s),
                    Err(_) => "killed".into(),
                };
                m.process = Process::Exited { how };
            }
        }
    }
}

impl Drop for LocalCluster {
    /// The last line of defence: whatever path raftctl leaves by, no member
    /// keeps running (the temporary data dir is removed after this).
    fn drop(&mut self) {
        self.kill_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_data_dir_keeps_its_layout() {
        let r = Layout {
            nodes: 5,
            base_port: 7300,
        };
        assert_eq!(Layout::parse(&r.render()), Some(r));
        assert_eq!(Layout::resolve(None, None, None, None), Ok(Layout::DEFAULT));
        assert_eq!(Layout::resolve(None, None, Some(r), None), Ok(r));
        assert_eq!(Layout::resolve(Some(5), Some(7300), Some(r), None), Ok(r));
        let e = Layout::resolve(None, Some(7100), Some(r), Some(Path::new("/d"))).unwrap_err();
        assert!(e.message.contains("5 members on --base-port 7300"), "{e}");
    }

    #[test]
    fn exits_are_described_plainly() {
        assert_eq!(
            describe_exit(ExitStatus::from_raw(1 << 8)),
            "exited with code 1"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(libc::SIGKILL)),
            "killed by SIGKILL"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(libc::SIGTERM)),
            "stopped by SIGTERM"
        );
    }

    #[test]
    fn log_colours_are_stripped() {
        assert_eq!(
            strip_ansi("\x1b[2mts\x1b[0m \x1b[31mERROR\x1b[0m bad"),
            "ts ERROR bad"
        );
    }

    #[test]
    fn a_missing_node_binary_says_how_to_build_it() {
        let e = find_node_binary(Some(Path::new("/nonexistent/kuberaft-node"))).unwrap_err();
        assert!(
            e.message
                .contains("cargo build --release --bin kuberaft-node"),
            "{e}"
        );
    }
}
