//! `raftctl dev`: a local cluster in one command, with a live view of every
//! member that changes as elections happen. Ctrl-C (or SIGTERM, or closing
//! the terminal) stops every member it started.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::args::{DevArgs, GlobalArgs};
use super::cluster::{LocalCluster, Process, on_path};
use super::error::CliError;
use super::live::{MemberRow, Update, View, follow, since};
use super::members::role_name;
use super::terminal::{KeyMode, Screen, spawn_key_reader};

/// How long members get to stop after SIGTERM before they are killed (a
/// leader first hands over leadership, which the node bounds at 2 s).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How raftctl should be written in a line to copy: `raftctl` when that is
/// what PATH finds, else the path of this executable.
pub fn self_command() -> String {
    let exe = std::env::current_exe().ok();
    let same = |p: &Path| {
        exe.as_deref()
            .and_then(|e| std::fs::canonicalize(e).ok())
            .zip(std::fs::canonicalize(p).ok())
            .is_some_and(|(a, b)| a == b)
    };
    if on_path("raftctl").is_some_and(|p| same(&p)) {
        return "raftctl".into();
    }
    match exe {
        Some(e) => {
            let cwd = std::env::current_dir().unwrap_or_default();
            match e.strip_prefix(&cwd) {
                Ok(rel) => format!("./{}", rel.display()),
                Err(_) => e.display().to_string(),
            }
        }
        None => "raftctl".into(),
    }
}

/// The lines printed once, above the live view.
pub fn banner(cluster: &LocalCluster, keys: bool) -> Vec<String> {
    let endpoints = cluster.endpoints().join(",");
    let me = self_command();
    let data = if cluster.is_temporary() {
        format!(
            "{} (removed on exit; pass --data-dir to keep it)",
            cluster.data_dir().display()
        )
    } else {
        format!(
            "{} (kept; run the same command again to resume)",
            cluster.data_dir().display()
        )
    };
    let mut lines = vec![
        format!(
            "kuberaft dev: {} members of cluster \"dev\" on 127.0.0.1",
            cluster.members.len()
        ),
        format!("  endpoints: {endpoints}"),
        format!("  data:      {data}"),
        format!("  logs:      {}/dev-*.log", cluster.data_dir().display()),
        format!(
            "  metrics:   {}",
            cluster
                .members
                .iter()
                .map(|m| format!("http://{}/metrics", m.http_addr))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        String::new(),
        "Try, in another terminal:".into(),
        format!("  {me} --endpoints {endpoints} put hello world"),
        format!("  {me} --endpoints {endpoints} get hello"),
        format!("  export KUBERAFT_ENDPOINTS={endpoints}   # then: {me} status, watch, bench"),
        String::new(),
    ];
    if keys {
        lines.push(format!(
            "Keys: k kill the leader (SIGKILL) · t stop it gracefully (SIGTERM) · 1-{} stop/start a member · r restart stopped members · q quit",
            cluster.members.len()
        ));
    } else {
        let pids: Vec<String> = cluster
            .members
            .iter()
            .filter_map(|m| m.pid().map(|p| format!("{}={p}", m.name)))
            .collect();
        lines.push(format!(
            "Kill a member with `kill -9 PID` ({}) and watch a new election; Ctrl-C stops them all.",
            pids.join(" ")
        ));
    }
    lines.push(String::new());
    lines
}

/// Prints a line; false once standard output is gone (a closed pipe), so
/// the view stops and the members are stopped instead of raftctl dying.
fn say(line: &str) -> bool {
    use std::io::Write;
    writeln!(std::io::stdout(), "{line}").is_ok()
}

/// The index of the member that leads in the highest term, as the view knows.
fn leader_index(view: &View) -> Option<usize> {
    view.rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.reachable)
        .filter_map(|(i, r)| r.status.as_ref().map(|s| (i, s)))
        .filter(|(_, s)| role_name(s.role()) == "leader")
        .max_by_key(|(_, s)| s.term)
        .map(|(i, _)| i)
}

pub async fn run(args: &DevArgs, global: &GlobalArgs) -> Result<(), CliError> {
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| CliError::new(format!("cannot catch SIGINT: {e}")))?;
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| CliError::new(format!("cannot catch SIGTERM: {e}")))?;
    let mut sighup = signal(SignalKind::hangup())
        .map_err(|e| CliError::new(format!("cannot catch SIGHUP: {e}")))?;

    let mut cluster = LocalCluster::start(&args.cluster)?;
    let tty = std::io::stdout().is_terminal();
    let key_mode = if tty { KeyMode::enable() } else { None };
    for line in banner(&cluster, key_mode.is_some()) {
        say(&line);
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let endpoints = cluster.endpoints();
    let _followers = follow(&endpoints, 250, global.dial_timeout, tx);
    let (key_tx, mut keys) = mpsc::unbounded_channel();
    if key_mode.is_some() {
        spawn_key_reader(key_tx);
    }
    let mut view = View::new(
        cluster
            .members
            .iter()
            .map(|m| MemberRow {
                name: m.name.clone(),
                addr: m.client_addr.clone(),
                process: Some(m.process.clone()),
                status: None,
                reachable: false,
            })
            .collect(),
    );
    let start = Instant::now();
    let mut screen = tty.then(Screen::new);
    let mut dirty = true;
    // Members raftctl stopped on purpose: their exit is not news to explain.
    let mut stopping: HashSet<usize> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut said: Vec<String> = Vec::new();

    let reason = loop {
        tokio::select! {
            _ = sigint.recv() => break "interrupted",
            _ = sigterm.recv() => break "terminated",
            _ = sighup.recv() => break "the terminal closed",
            Some(u) = rx.recv() => {
                said.extend(view.apply(u, &since(start)));
                dirty = true;
            }
            Some(k) = keys.recv() => {
                let leader = leader_index(&view);
                let mut act = |i: usize, sig: i32, what: &str| {
                    if cluster.signal(i, sig) {
                        stopping.insert(i);
                        said.extend(note(&mut view, start, format!("you {what} {}", cluster.members[i].name)));
                    }
                };
                match k {
                    b'q' => break "asked to quit",
                    b'k' | b't' => match leader {
                        Some(i) if k == b'k' => act(i, libc::SIGKILL, "killed (SIGKILL) the leader,"),
                        Some(i) => act(i, libc::SIGTERM, "stopped (SIGTERM) the leader,"),
                        None => said.extend(note(&mut view, start, "no leader to stop right now".into())),
                    },
                    b'1'..=b'9' => {
                        let i = usize::from(k - b'1');
                        if i < cluster.members.len() {
                            if cluster.members[i].is_running() {
                                act(i, libc::SIGKILL, "killed (SIGKILL)");
                            } else {
                                restart(&mut cluster, &mut view, &mut stopping, i, start, &mut said)?;
                            }
                        }
                    }
                    b'r' => {
                        for i in 0..cluster.members.len() {
                            if !cluster.members[i].is_running() {
                                restart(&mut cluster, &mut view, &mut stopping, i, start, &mut said)?;
                            }
                        }
                    }
                    _ => {}
                }
                dirty = true;
            }
            _ = tick.tick() => {
                for i in cluster.reap() {
                    let mut p = cluster.members[i].process.clone();
                    // A member that exits with an error by itself: say why.
                    if !stopping.remove(&i)
                        && let Process::Exited { how } = &mut p
                        && how.starts_with("exited with code")
                        && let Some(last) = cluster.members[i].last_log_line()
                    {
                        how.push_str(&format!(": {last}"));
                    }
                    said.extend(view.apply(Update::Process(i, p), &since(start)));
                    dirty = true;
                }
                if start.elapsed() < Duration::from_secs(5)
                    && cluster.members.iter().all(|m| !m.is_running())
                {
                    let m = &cluster.members[0];
                    let last = m.last_log_line().unwrap_or_default();
                    drop(screen.take());
                    return Err(CliError::new(format!(
                        "every member exited right after starting; {} said: {last}",
                        m.name
                    )));
                }
            }
        }
        match &mut screen {
            Some(s) if dirty => {
                s.draw(&view.screen(true));
                said.clear();
                dirty = false;
            }
            Some(_) => {}
            None => {
                let printed = said
                    .drain(..)
                    .all(|line| say(&format!("{}  {line}", since(start))));
                if !printed {
                    break "standard output closed";
                }
            }
        }
    };

    if let Some(mut s) = screen.take() {
        s.finish();
    }
    drop(key_mode);
    say(&format!(
        "{reason}: stopping {} members…",
        cluster.members.iter().filter(|m| m.is_running()).count()
    ));
    stop(&mut cluster, &mut sigint).await;
    let data = cluster.data_dir().display().to_string();
    let temporary = cluster.is_temporary();
    drop(cluster);
    if temporary {
        say(&format!("stopped; removed {data}"));
    } else {
        say(&format!("stopped; data kept in {data}"));
    }
    Ok(())
}

/// Adds a line of raftctl's own to the view's events.
fn note(view: &mut View, start: Instant, line: String) -> Vec<String> {
    view.events.push_back(format!("{}  {line}", since(start)));
    while view.events.len() > super::live::EVENTS_SHOWN {
        view.events.pop_front();
    }
    vec![line]
}

fn restart(
    cluster: &mut LocalCluster,
    view: &mut View,
    stopping: &mut HashSet<usize>,
    i: usize,
    start: Instant,
    said: &mut Vec<String>,
) -> Result<(), CliError> {
    stopping.remove(&i);
    let pid = cluster.spawn(i)?;
    said.extend(view.apply(Update::Process(i, Process::Running { pid }), &since(start)));
    Ok(())
}

/// SIGTERM to every member, SIGKILL after the grace period or a second Ctrl-C.
async fn stop(cluster: &mut LocalCluster, sigint: &mut tokio::signal::unix::Signal) {
    for i in 0..cluster.members.len() {
        cluster.signal(i, libc::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    loop {
        cluster.reap();
        if cluster.members.iter().all(|m| !m.is_running()) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                say(&format!("members still running after {}s: killing them", STOP_GRACE.as_secs()));
                break;
            }
            _ = sigint.recv() => {
                say("interrupted again: killing the members");
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    cluster.kill_all();
}
