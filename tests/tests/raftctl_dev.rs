//! `raftctl dev` as a newcomer uses it: it starts a local cluster that
//! elects one leader, raftctl's commands work through it, and Ctrl-C (or
//! SIGTERM, or raftctl being killed) leaves no member process behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kuberaft_tests::cluster::{build_binary, node_binary};
use serde_json::Value;

fn raftctl_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // raftctl dev finds kuberaft-node next to itself.
        node_binary();
        build_binary("raftctl")
    })
    .clone()
}

/// A base port with the ports of `nodes` members, and one more, free.
fn free_base_port(nodes: u16) -> u16 {
    for _ in 0..200 {
        // Above free_port()'s range (10000–19999) and below the ephemeral one (32768+).
        let base = 20_000 + rand_u16() % 12_000;
        let free = (base..base + PORTS * (nodes + 1))
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free port range found");
}

/// Ports of one member in `raftctl dev`'s layout (peer, client, HTTP, admin).
const PORTS: u16 = kuberaft_node::cli::cluster::PORTS_PER_MEMBER as u16;

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) as u16
}

struct Dev {
    child: Child,
    out: PathBuf,
    endpoints: String,
    base: u16,
    scratch: tempfile::TempDir,
}

impl Dev {
    fn start(nodes: u16, extra: &[&str]) -> Dev {
        let base = free_base_port(nodes);
        let layout = [
            "--nodes".to_string(),
            nodes.to_string(),
            "--base-port".to_string(),
            base.to_string(),
        ];
        Dev::run(base, nodes, &layout, extra)
    }

    /// Starts raftctl dev without --nodes and --base-port: a kept data dir
    /// brings its own.
    fn resume(base: u16, nodes: u16, extra: &[&str]) -> Dev {
        Dev::run(base, nodes, &[], extra)
    }

    fn run(base: u16, nodes: u16, layout: &[String], extra: &[&str]) -> Dev {
        let scratch = tempfile::tempdir().expect("scratch dir");
        let out = scratch.path().join("dev.out");
        let mut cmd = Command::new(raftctl_bin());
        cmd.arg("dev")
            .args(layout)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("output file"))
            .stderr(Stdio::inherit());
        let child = cmd.spawn().expect("start raftctl dev");
        let endpoints = (0..nodes)
            .map(|i| format!("127.0.0.1:{}", base + PORTS * i + 1))
            .collect::<Vec<_>>()
            .join(",");
        Dev {
            child,
            out,
            endpoints,
            base,
            scratch,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until the banner is printed and returns the member pids from
    /// its "Kill a member with `kill -9 PID` (dev-0=123 ...)" line.
    fn pids(&self) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.output();
            if let Some(line) = out.lines().find(|l| l.starts_with("Kill a member")) {
                return line
                    .split([' ', '(', ')'])
                    .filter_map(|w| w.split_once('='))
                    .filter_map(|(_, pid)| pid.parse().ok())
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "no banner from raftctl dev:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The data dir named in the banner.
    fn data_dir(&self) -> PathBuf {
        let out = self.output();
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("data:"))
            .expect("a data line");
        let path = line.trim_start().trim_start_matches("data:").trim();
        PathBuf::from(path.split(" (").next().unwrap_or(path))
    }

    fn raftctl(&self, args: &[&str]) -> Output {
        Command::new(raftctl_bin())
            .arg("--endpoints")
            .arg(&self.endpoints)
            .args(args)
            .output()
            .expect("run raftctl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.raftctl(args);
        assert!(
            o.status.success(),
            "raftctl {args:?} failed: {}\n--- dev output:\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.output()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Waits for `raftctl status` to show exactly one leader that every
    /// member follows.
    fn wait_one_leader(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = self.raftctl(&["status", "--json"]);
            if o.status.success() {
                let v: Value = serde_json::from_slice(&o.stdout).expect("status JSON");
                let members = v["members"].as_array().cloned().unwrap_or_default();
                let leaders = members
                    .iter()
                    .filter(|m| m["status"]["role"] == "leader")
                    .count();
                let agree = members
                    .iter()
                    .all(|m| m["reachable"] == true && m["status"]["leader_id"] == v["leader_id"]);
                if leaders == 1 && agree && !v["leader_id"].is_null() {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single leader within 20s:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for raftctl to exit; returns its exit code.
    fn wait(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "raftctl dev did not exit within {within:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    /// Ctrl-C first, so raftctl removes its temporary data dir even when a
    /// test fails; SIGKILL if it does not exit (its members die with it).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a process is gone (or a zombie nobody has reaped yet).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn all_gone_within(pids: &[i32], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if pids.iter().all(|&p| gone(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn dev_elects_one_leader_serves_every_command_and_stops_cleanly() {
    let mut dev = Dev::start(3, &[]);
    let pids = dev.pids();
    assert_eq!(pids.len(), 3, "{}", dev.output());
    let data = dev.data_dir();
    assert!(data.exists());

    let status = dev.wait_one_leader();
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3));

    assert!(
        dev.ok(&["put", "hello", "world"])
            .starts_with("OK (committed at index")
    );
    assert_eq!(dev.ok(&["get", "hello"]), "world\n");
    assert_eq!(dev.ok(&["get", "hello", "--serializable"]), "world\n");
    dev.ok(&["put", "hello2", "again"]);
    let scan = dev.ok(&["scan", "hello"]);
    assert!(
        scan.starts_with("KEY     VALUE  MOD INDEX\nhello   world"),
        "{scan}"
    );
    assert!(scan.contains("hello2  again"), "{scan}");
    let v: Value = serde_json::from_str(&dev.ok(&["scan", "--json"])).expect("JSON");
    assert_eq!(v["kvs"].as_array().map(Vec::len), Some(2));

    // `raftctl scan | head`: a reader that went away ends raftctl quietly,
    // with success, like other Unix tools (and without the default SIGPIPE
    // disposition, which also killed raftctl silently on a closed socket).
    let mut child = Command::new(raftctl_bin())
        .args(["--endpoints", &dev.endpoints, "scan", "hello"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run raftctl");
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("raftctl ends");
    assert_eq!(
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned()
        ),
        (Some(0), String::new()),
        "raftctl scan into a closed pipe: {:?}",
        o.status
    );

    // A failed compare says what the key holds and exits 3.
    let o = dev.raftctl(&["cas", "hello", "x", "--expect", "nope"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "raftctl: compare failed: key \"hello\" holds \"world\" (expected \"nope\"); nothing changed"
    );
    dev.ok(&["cas", "hello", "x", "--expect", "world"]);
    assert_eq!(dev.ok(&["get", "hello"]), "x\n");
    dev.ok(&["cas", "fresh", "1", "--expect-absent"]);

    assert!(dev.ok(&["del", "hello"]).starts_with("deleted"));
    let o = dev.raftctl(&["get", "hello"]);
    assert_eq!(o.status.code(), Some(3), "a missing key exits 3");

    // An invalid request is refused with the cluster's reason.
    let o = dev.raftctl(&["get", ""]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid request"));

    // The table shows every member and the leader's replication view.
    let table = dev.ok(&["status"]);
    let leaders = table
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some("leader"))
        .count();
    assert_eq!(leaders, 1, "{table}");
    assert!(table.contains("MATCH INDEX"), "{table}");

    // Ctrl-C stops every member and removes the temporary data dir.
    dev.signal(libc::SIGINT);
    assert_eq!(
        dev.wait(Duration::from_secs(15)),
        Some(0),
        "{}",
        dev.output()
    );
    assert!(
        all_gone_within(&pids, Duration::from_secs(1)),
        "members left behind"
    );
    assert!(!data.exists(), "{} was not removed", data.display());
    assert!(
        dev.output().contains("stopped; removed"),
        "{}",
        dev.output()
    );
}

#[test]
fn dev_follows_an_election_after_the_leader_is_killed() {
    let mut dev = Dev::start(3, &[]);
    let pids = dev.pids();
    let status = dev.wait_one_leader();
    let leader = status["leader_id"].as_u64().expect("leader id");
    let term = status["members"][0]["status"]["term"].as_u64().unwrap_or(0);
    let leader_pid = pids[(leader - 1) as usize];
    // raftctl watch follows the same election from outside.
    let watch_out = dev.scratch.path().join("watch.out");
    let mut watch = Command::new(raftctl_bin())
        .args(["--endpoints", &dev.endpoints, "watch"])
        .stdout(std::fs::File::create(&watch_out).expect("watch output"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start raftctl watch");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&watch_out).is_ok_and(|o| o.matches(" is up: ").count() == 3) {
        assert!(Instant::now() < deadline, "raftctl watch saw no members");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: a pid raftctl dev printed; it is its child, not yet reaped.
    unsafe {
        libc::kill(leader_pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = dev.output();
        let new_leader = out.lines().any(|l| {
            l.contains("won the election") && !l.contains(&format!("leader of term {term}"))
        });
        if out.contains(&format!("dev-{} killed by SIGKILL", leader - 1)) && new_leader {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader in the view:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Writes go on through the remaining majority.
    dev.ok(&["put", "after", "failover"]);
    let watched = std::fs::read_to_string(&watch_out).unwrap_or_default();
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        watched.contains(&format!("dev-{} is unreachable", leader - 1)),
        "{watched}"
    );
    assert!(
        watched
            .lines()
            .any(|l| l.contains("won the election")
                && !l.contains(&format!("leader of term {term}"))),
        "{watched}"
    );
    dev.signal(libc::SIGTERM);
    assert_eq!(dev.wait(Duration::from_secs(15)), Some(0));
    assert!(all_gone_within(&pids, Duration::from_secs(1)));
}

#[test]
fn a_kept_data_dir_resumes_after_a_restart() {
    let scratch = tempfile::tempdir().expect("scratch");
    let dir = scratch.path().join("cluster");
    let arg = dir.to_string_lossy().into_owned();
    let mut dev = Dev::start(3, &["--data-dir", &arg]);
    dev.pids();
    dev.wait_one_leader();
    dev.ok(&["put", "durable", "yes"]);
    dev.signal(libc::SIGINT);
    assert_eq!(dev.wait(Duration::from_secs(15)), Some(0));
    assert!(dev.output().contains("data kept in"), "{}", dev.output());
    assert!(Path::new(&dir).join("dev-0").exists());

    // Other ports would strand the members (they know each other by port).
    let o = Command::new(raftctl_bin())
        .args(["dev", "--data-dir", &arg, "--base-port", "7100"])
        .output()
        .expect("run raftctl");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("on --base-port {}", dev.base)),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let mut dev = Dev::resume(dev.base, 3, &["--data-dir", &arg]);
    dev.pids();
    dev.wait_one_leader();
    assert_eq!(dev.ok(&["get", "durable"]), "yes\n");
    dev.signal(libc::SIGINT);
    assert_eq!(dev.wait(Duration::from_secs(15)), Some(0));
}

#[test]
fn members_die_with_raftctl_even_when_it_is_killed() {
    let mut dev = Dev::start(3, &[]);
    let pids = dev.pids();
    let data = dev.data_dir();
    dev.signal(libc::SIGKILL);
    dev.wait(Duration::from_secs(5));
    assert!(
        all_gone_within(&pids, Duration::from_secs(5)),
        "members outlived a killed raftctl"
    );
    // A killed raftctl cannot clean up its temporary dir; the test does.
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn the_benchmarks_run_end_to_end() {
    let mut dev = Dev::start(3, &[]);
    let pids = dev.pids();
    dev.wait_one_leader();
    for extra in [&[][..], &["--read", "--keys", "50"][..]] {
        let mut args = vec![
            "bench",
            "--clients",
            "4",
            "--seconds",
            "1",
            "--warmup-seconds",
            "0",
            "--json",
        ];
        args.extend_from_slice(extra);
        let v: Value = serde_json::from_str(&dev.ok(&args)).expect("bench JSON");
        assert!(v["ops"].as_u64().unwrap_or(0) > 0, "{v}");
        assert_eq!(v["errors"], serde_json::json!({}), "{v}");
        assert!(v["latency_ms"]["p99"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    }
    dev.signal(libc::SIGINT);
    assert_eq!(dev.wait(Duration::from_secs(15)), Some(0));
    assert!(all_gone_within(&pids, Duration::from_secs(1)));

    // failover-bench runs its own cluster and leaves nothing behind.
    let base = free_base_port(3).to_string();
    let o = Command::new(raftctl_bin())
        .args([
            "failover-bench",
            "--rounds",
            "2",
            "--settle-ms",
            "200",
            "--base-port",
            &base,
            "--json",
        ])
        .output()
        .expect("run failover-bench");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("failover JSON");
    assert_eq!(v["rounds"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["missing_acknowledged_writes"], 0, "{v}");
    assert!(v["acknowledged_writes"].as_u64().unwrap_or(0) > 0, "{v}");
    for r in v["rounds"].as_array().into_iter().flatten() {
        assert!(r["new_term"].as_u64() > r["old_term"].as_u64(), "{r}");
    }
}

#[test]
fn membership_and_leadership_through_raftctl() {
    let mut dev = Dev::start(3, &[]);
    let pids = dev.pids();
    dev.wait_one_leader();

    // A fourth member, started empty, is added as a learner, then promoted.
    let first = dev.base + 3 * PORTS;
    let (peer, client, http, admin) = (first, first + 1, first + 2, first + 3);
    let data = dev.scratch.path().join("dev-3");
    let mut joiner = Command::new(node_binary())
        .args(["--cluster=dev", "--id=4", "--name=dev-3"])
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--peer-listen=127.0.0.1:{peer}"))
        .arg(format!("--client-listen=127.0.0.1:{client}"))
        .arg(format!("--http-listen=127.0.0.1:{http}"))
        .arg(format!("--admin-listen=127.0.0.1:{admin}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the fourth member");
    let peer_addr = format!("127.0.0.1:{peer}");
    let client_addr = format!("127.0.0.1:{client}");
    let add = [
        "member",
        "add",
        "4",
        "dev-3",
        "--peer-addr",
        &peer_addr,
        "--client-addr",
        &client_addr,
        "--learner-only",
        "--command-timeout",
        "20s",
    ];
    let list = dev.ok(&add);
    assert!(list.contains("4   dev-3  learner"), "{list}");
    dev.ok(&["member", "promote", "4", "--command-timeout", "20s"]);
    let list = dev.ok(&["member", "list"]);
    assert!(list.contains("4   dev-3  voter"), "{list}");

    // Leadership moves where it is asked to.
    let moved = dev.ok(&["transfer-leader", "--to", "4"]);
    assert!(moved.starts_with("leader is now 4 dev-3"), "{moved}");
    let moved = dev.ok(&["transfer-leader", "--to", "2"]);
    assert!(moved.starts_with("leader is now 2 dev-1"), "{moved}");

    let list = dev.ok(&["member", "remove", "4", "--command-timeout", "20s"]);
    assert!(!list.contains("dev-3"), "{list}");
    let _ = joiner.kill();
    let _ = joiner.wait();

    dev.signal(libc::SIGINT);
    assert_eq!(dev.wait(Duration::from_secs(15)), Some(0));
    assert!(all_gone_within(&pids, Duration::from_secs(1)));
}
