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
use super::dev_ui;
use super::error::CliError;
use super::live::{MemberRow, Update, View, follow, since};
use super::members::role_name;
use super::terminal::{KeyMode, Screen, spawn_key_reader};
use crate::ui::{ActionParams, aggregate};
use axum::http::StatusCode;

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

    let mut cluster_args = args.cluster.clone();
    cluster_args.ui_actions = args.ui;
    let ui_listener = if args.ui {
        Some(dev_ui::bind(args.ui_listen).await.map_err(CliError::new)?)
    } else {
        None
    };
    let mut cluster = LocalCluster::start(&cluster_args)?;
    let (ui_tx, mut ui_actions) = mpsc::channel::<dev_ui::DevAction>(16);
    let mut ui_addr = None;
    if let Some(listener) = ui_listener {
        ui_addr = listener.local_addr().ok();
        let targets = cluster
            .members
            .iter()
            .map(|m| aggregate::Target {
                id: m.id,
                name: m.name.clone(),
                client_addr: m.client_addr.clone(),
            })
            .collect();
        dev_ui::serve(listener, targets, ui_tx);
    }
    let tty = std::io::stdout().is_terminal();
    let key_mode = if tty { KeyMode::enable() } else { None };
    let mut lines = banner(&cluster, key_mode.is_some());
    if let Some(addr) = ui_addr {
        lines.insert(
            5,
            format!("  web view:  http://{addr}/ui   (open it in a browser)"),
        );
    }
    for line in lines {
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
            Some(a) = ui_actions.recv() => {
                let answer = dev_action(&mut cluster, &mut view, &mut stopping, start, &mut said, &a.action, &a.params).await;
                let _ = a.reply.send(answer);
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
    for i in 0..cluster.members.len() {
        // A paused member must run again to hear SIGTERM.
        cluster.signal(i, libc::SIGCONT);
    }
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

/// Does what the web view asked; the answer is what the page shows.
async fn dev_action(
    cluster: &mut LocalCluster,
    view: &mut View,
    stopping: &mut HashSet<usize>,
    start: Instant,
    said: &mut Vec<String>,
    action: &str,
    p: &ActionParams,
) -> Result<String, (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    if action == "put" {
        let mut last = bad("no member is running".into());
        for m in cluster.members.iter().filter(|m| m.is_running()) {
            match crate::ui::put(&m.client_addr, p.key.clone(), p.value.clone()).await {
                Ok(done) => {
                    said.extend(note(view, start, format!("you: {done}")));
                    return Ok(done);
                }
                Err(e) => last = e,
            }
        }
        return Err(last);
    }
    let i = if action == "kill_leader" {
        leader_index(view).ok_or_else(|| bad("no leader to kill right now".into()))?
    } else {
        p.member
            .and_then(|id| cluster.members.iter().position(|m| m.id == id))
            .ok_or_else(|| bad(format!("no member {}", p.member.unwrap_or_default())))?
    };
    let name = cluster.members[i].name.clone();
    let done = match action {
        "kill" | "kill_leader" => {
            if !cluster.signal(i, libc::SIGKILL) {
                return Err(bad(format!("{name} is not running")));
            }
            stopping.insert(i);
            if action == "kill_leader" {
                format!("killed (SIGKILL) the leader, {name}")
            } else {
                format!("killed (SIGKILL) {name}")
            }
        }
        "restart" => {
            if cluster.members[i].is_running() {
                stopping.insert(i);
                cluster.signal(i, libc::SIGCONT);
                cluster.signal(i, libc::SIGKILL);
                cluster.wait_exit(i, Duration::from_secs(2)).await;
            }
            restart(cluster, view, stopping, i, start, said)
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.message))?;
            format!("started {name} again")
        }
        "pause" | "resume" => {
            let (sig, what) = match action {
                "pause" => (libc::SIGSTOP, "paused (SIGSTOP)"),
                _ => (libc::SIGCONT, "resumed (SIGCONT)"),
            };
            if !cluster.signal(i, sig) {
                return Err(bad(format!("{name} is not running")));
            }
            format!("{what} {name}")
        }
        "cut_off" | "heal" => {
            let addr = cluster.members[i].http_addr.clone();
            dev_ui::post_to_member(&addr, &format!("/ui/actions/{action}"))
                .await
                .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))?
        }
        other => return Err((StatusCode::NOT_FOUND, format!("no action {other:?}"))),
    };
    said.extend(note(view, start, format!("you {done}")));
    Ok(done)
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
