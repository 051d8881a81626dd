//! The web view in a real browser (issue 8): headless Chromium opens the
//! page of `raftctl dev --ui`, sees exactly one leader, clicks "kill leader"
//! and sees a new leader in a higher term within a few seconds. A screenshot
//! of the page is saved (its path is printed).
//!
//! Needs Debian's `chromium` (`.ci/run` installs it); without it this test
//! fails and says how to install it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kuberaft_tests::cdp::{Browser, find_chromium};
use kuberaft_tests::cluster::{build_binary, free_port, node_binary};
use serde_json::Value;

/// A base port with the ports of `nodes` members free.
fn free_base_port(nodes: u16) -> u16 {
    let seed = std::process::id() as u16
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()) as u16);
    for i in 0..200u16 {
        let base = 20_000 + (seed.wrapping_add(i.wrapping_mul(97))) % 12_000;
        if (base..base + 3 * nodes).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range found");
}

struct Dev {
    child: Child,
    out: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Dev {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The web view's address from the banner.
    fn ui_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.output();
            if let Some(url) = out
                .lines()
                .find_map(|l| l.trim().strip_prefix("web view:"))
                .and_then(|rest| rest.split_whitespace().next())
            {
                return url.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no web view in the banner:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev() -> Dev {
    node_binary();
    let raftctl = build_binary("raftctl");
    let scratch = tempfile::tempdir().expect("scratch dir");
    let out = scratch.path().join("dev.out");
    let base = free_base_port(3).to_string();
    let ui = format!("127.0.0.1:{}", free_port());
    let child = Command::new(raftctl)
        .args(["dev", "--base-port", &base, "--ui", "--ui-listen", &ui])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("output file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start raftctl dev --ui");
    Dev {
        child,
        out,
        _scratch: scratch,
    }
}

/// The members the page shows that are up, and the leaders among them.
fn leaders(view: &Value) -> Vec<(u64, u64)> {
    view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "leader" && m["down"] == false)
        .map(|m| {
            (
                m["id"].as_u64().unwrap_or(0),
                m["term"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn wait_view(
    browser: &mut Browser,
    page: &kuberaft_tests::cdp::Page,
    within: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let view = browser.eval(page, "window.kuberaftView ? kuberaftView() : null");
        if ok(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not show {what} within {within:?}; it shows: {view}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_page_shows_one_leader_and_a_new_one_after_kill_leader() {
    let chromium = find_chromium().unwrap_or_else(|e| panic!("{e}"));
    let dev = start_dev();
    let url = dev.ui_url();
    let mut browser = Browser::launch(&chromium, 1400, 1000);
    let page = browser.open(&url);

    let view = wait_view(
        &mut browser,
        &page,
        Duration::from_secs(20),
        "three members and exactly one leader",
        |v| {
            v["connected"] == true
                && v["members"].as_array().map(Vec::len) == Some(3)
                && leaders(v).len() == 1
        },
    );
    let (old_leader, old_term) = leaders(&view)[0];

    // Put a value so the logs show an entry of the client's.
    let put = browser.eval(
        &page,
        "document.getElementById('put').click(); new Promise(r => setTimeout(() => r(document.getElementById('action-result').textContent), 1500))",
    );
    assert!(
        put.as_str().unwrap_or("").contains("committed at index"),
        "put: {put}"
    );

    let started = Instant::now();
    browser.eval(
        &page,
        "document.getElementById('kill-leader').click(); true",
    );
    let view = wait_view(
        &mut browser,
        &page,
        Duration::from_secs(10),
        "a new leader in a higher term, the old one down",
        |v| {
            let l = leaders(v);
            l.len() == 1
                && l[0].0 != old_leader
                && l[0].1 > old_term
                && v["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["id"].as_u64() == Some(old_leader) && m["down"] == true)
        },
    );
    let (new_leader, new_term) = leaders(&view)[0];
    println!(
        "leader {old_leader} (term {old_term}) killed; the page showed leader {new_leader} (term {new_term}) after {:?}",
        started.elapsed()
    );
    // The timeline has the new term and who led it.
    let timeline = browser.eval(&page, "document.getElementById('timeline').textContent");
    assert!(
        timeline
            .as_str()
            .unwrap_or("")
            .contains(&format!("term {new_term}")),
        "{timeline}"
    );

    // Let the dots and timers move a little, then keep a picture.
    std::thread::sleep(Duration::from_millis(700));
    let png = browser.screenshot(&page);
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let exe = std::env::current_exe().expect("test path");
    let dir = exe
        .ancestors()
        .nth(3)
        .map_or_else(std::env::temp_dir, PathBuf::from);
    let path = dir.join("ui-browser-screenshot.png");
    std::fs::write(&path, &png).expect("write the screenshot");
    println!("screenshot: {}", path.display());

    // Restart the killed member from the page; it comes back as a follower
    // of the new leader.
    let click = |b: &mut Browser, member: u64, action: &str| {
        b.eval(
            &page,
            &format!(
                "document.querySelector('.card[data-id=\"{member}\"] .act-{action}').click(); true"
            ),
        )
    };
    click(&mut browser, old_leader, "restart");
    wait_view(
        &mut browser,
        &page,
        Duration::from_secs(15),
        "the killed member back as a follower",
        |v| {
            v["members"].as_array().into_iter().flatten().any(|m| {
                m["id"].as_u64() == Some(old_leader)
                    && m["down"] == false
                    && m["role"] == "follower"
                    && m["term"].as_u64() == Some(new_term)
            })
        },
    );

    // The article's last scene: a follower cut off from its peers, then
    // healed, rejoins without deposing the leader (PreVote: it never
    // raised its term while alone).
    let follower = old_leader;
    click(&mut browser, follower, "cut_off");
    let isolated = |want: bool| {
        move |v: &Value| {
            v["members"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["id"].as_u64() == Some(follower) && m["isolated"] == want)
        }
    };
    wait_view(
        &mut browser,
        &page,
        Duration::from_secs(5),
        "the follower cut off",
        isolated(true),
    );
    // Longer than an election timeout: alone, it would have started elections.
    std::thread::sleep(Duration::from_millis(1000));
    click(&mut browser, follower, "heal");
    wait_view(
        &mut browser,
        &page,
        Duration::from_secs(5),
        "the follower healed",
        isolated(false),
    );
    std::thread::sleep(Duration::from_millis(1000));
    let view = browser.eval(&page, "kuberaftView()");
    assert_eq!(
        leaders(&view),
        vec![(new_leader, new_term)],
        "the healed follower deposed the leader: {view}"
    );
    assert!(
        dev.output().contains("killed (SIGKILL) the leader"),
        "{}",
        dev.output()
    );
}
