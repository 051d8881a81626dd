//! The web view in a real browser (issue 8): headless Chromium opens the
//! page of `raftctl dev --ui`, sees exactly one leader, clicks "kill leader"
//! and sees a new leader in a higher term within a few seconds. A screenshot
//! of the page is saved (its path is printed). And the page's first picture,
//! opened right after `raftctl dev --ui` starts and right after a write,
//! agrees with itself: header, graph and cards name the same leader in the
//! same term, no member is drawn before its status arrived, every log cell
//! shows its entry's term.
//!
//! Needs Debian's `chromium` (`tests/run` installs it); without it this test
//! says SKIPPED and how to install it (and fails where skips are failures).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kuberaft_tests::cdp::{Browser, find_chromium};
use kuberaft_tests::cluster::{build_binary, free_port, node_binary};
use kuberaft_tests::skip::skip;
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
    let chromium = match find_chromium() {
        Ok(c) => c,
        Err(why) => return skip("the web view's browser test", &why),
    };
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

/// Runs in the page before any script of its own. It learns which members'
/// status the page has received from the event stream itself, not from
/// app.js (its listener is added before the page's `onmessage`, so it sees
/// each message first), and keeps every distinct picture the page shows
/// from the first non-empty one on, looked at every 10 ms.
const WATCH_FROM_LOAD: &str = r#"
(() => {
  const statusSeen = new Set();
  const Real = window.EventSource;
  window.EventSource = class extends Real {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (m) => {
        try {
          const ev = JSON.parse(m.data);
          if (ev.kind === "status") statusSeen.add(ev.member_id);
        } catch (e) { /* not JSON: the page skips it too */ }
      });
    }
  };
  const watch = { loadedAt: performance.now(), pictures: [], last: "" };
  window.kuberaftWatch = watch;
  setInterval(() => {
    if (!window.kuberaftView) return;
    const shown = window.kuberaftView().shown;
    if (!watch.pictures.length && !shown.graph.length && !shown.cards.length) return;
    const key = JSON.stringify(shown);
    if (key === watch.last) return;
    watch.last = key;
    watch.pictures.push({ at: performance.now() - watch.loadedAt, statusSeen: [...statusSeen], shown });
  }, 10);
})();
"#;

/// How long the first pictures are watched, from the first non-empty one.
const FIRST_PICTURES_MS: u64 = 2000;

/// Entries of each log a card shows (`LOG_TAIL` in app.js).
const LOG_TAIL: u64 = 14;

/// Opens the page and returns the pictures it showed: the first one that
/// shows anything, and every change in the [`FIRST_PICTURES_MS`] after it.
fn first_pictures(browser: &mut Browser, url: &str) -> Vec<Value> {
    let page = browser.open_watched(url, WATCH_FROM_LOAD);
    let done = format!(
        "(() => {{ const w = window.kuberaftWatch; \
         if (!w || !w.pictures.length) return null; \
         if (performance.now() - w.loadedAt - w.pictures[0].at < {FIRST_PICTURES_MS}) return null; \
         return w.pictures; }})()"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Value::Array(pictures) = browser.eval(&page, &done) {
            return pictures;
        }
        assert!(
            Instant::now() < deadline,
            "the page showed no member within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One member in the graph.
struct Node {
    role: String,
    term: Option<u64>,
    crowned: bool,
}

/// One member's card.
struct Card {
    name: String,
    role: String,
    term: Option<u64>,
    last: Option<u64>,
    /// Index and the term text of each log cell.
    cells: Vec<(u64, String)>,
}

fn term_text(text: &str) -> Option<u64> {
    text.strip_prefix("term ")?.parse().ok()
}

fn nodes(shown: &Value) -> std::collections::BTreeMap<u64, Node> {
    let list = shown["graph"].as_array().into_iter().flatten();
    list.map(|g| {
        let node = Node {
            role: g["role"].as_str().unwrap_or("").to_string(),
            term: term_text(g["term"].as_str().unwrap_or("")),
            crowned: g["crowned"] == true,
        };
        (g["id"].as_u64().unwrap_or(0), node)
    })
    .collect()
}

/// "index 7, term 2, committed" → 7.
fn cell_index(title: &str) -> u64 {
    let digits = title.strip_prefix("index ").unwrap_or("");
    let digits: String = digits.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

fn cards(shown: &Value) -> std::collections::BTreeMap<u64, Card> {
    let list = shown["cards"].as_array().into_iter().flatten();
    list.map(|c| {
        // "dev-0 · leader · term 1" and "… · commit 3 · applied 3 · last 3".
        let head: Vec<&str> = c["head"].as_str().unwrap_or("").split(" · ").collect();
        let meta = c["meta"].as_str().unwrap_or("");
        let cells = c["cells"].as_array().into_iter().flatten();
        let card = Card {
            name: head.first().unwrap_or(&"").to_string(),
            role: head.get(1).unwrap_or(&"").to_string(),
            term: head.get(2).and_then(|t| term_text(t)),
            last: meta
                .split(" · ")
                .find_map(|p| p.strip_prefix("last ")?.parse().ok()),
            cells: cells
                .map(|e| {
                    let index = cell_index(e["title"].as_str().unwrap_or(""));
                    (index, e["term"].as_str().unwrap_or("").to_string())
                })
                .collect(),
        };
        (c["id"].as_u64().unwrap_or(0), card)
    })
    .collect()
}

/// The header: "leader dev-0 · term 1"; anything else ("no leader",
/// "waiting for the members' status…") names no leader.
fn header(text: &str) -> Result<(Vec<String>, Option<u64>), String> {
    let Some(rest) = text.strip_prefix("leader ") else {
        return Ok((Vec::new(), None));
    };
    let (names, term) = rest
        .rsplit_once(" · term ")
        .ok_or_else(|| format!("the header says {text:?}, a leader without its term"))?;
    let term = term
        .parse()
        .map_err(|_| format!("the header's term is {term:?}"))?;
    Ok((names.split(", ").map(str::to_string).collect(), Some(term)))
}

/// What is wrong with one picture: members shown before their status came,
/// header, graph and cards disagreeing, log cells without their term.
fn problems(picture: &Value) -> Vec<String> {
    let seen: Vec<u64> = picture["statusSeen"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    let shown = &picture["shown"];
    let (nodes, cards) = (nodes(shown), cards(shown));
    let mut out = Vec::new();
    if !nodes.keys().eq(cards.keys()) {
        out.push(format!(
            "the graph shows members {:?}, the cards {:?}",
            nodes.keys().collect::<Vec<_>>(),
            cards.keys().collect::<Vec<_>>()
        ));
    }
    for (id, card) in &cards {
        // Unreachable from the start, a member may be shown greyed, with
        // nothing about its Raft state.
        let only_down = card.role == "down" && card.term.is_none() && card.cells.is_empty();
        if !seen.contains(id) && !only_down {
            out.push(format!(
                "member {id} is shown ({} · term {:?}) before its status arrived",
                card.role, card.term
            ));
        }
        if let Some(node) = nodes.get(id)
            && (node.role != card.role || node.term != card.term)
        {
            out.push(format!(
                "member {id}: the graph says {} in term {:?}, its card {} in term {:?}",
                node.role, node.term, card.role, card.term
            ));
        }
        out.extend(log_problems(*id, card));
    }
    out.extend(leader_problems(shown, &nodes, &cards));
    out
}

/// Header, crown and cards must name the same leaders, in the same term.
fn leader_problems(
    shown: &Value,
    nodes: &std::collections::BTreeMap<u64, Node>,
    cards: &std::collections::BTreeMap<u64, Card>,
) -> Vec<String> {
    let text = shown["header"].as_str().unwrap_or("");
    let (names, term) = match header(text) {
        Ok(h) => h,
        Err(e) => return vec![e],
    };
    let by_cards: Vec<u64> = cards
        .iter()
        .filter(|(_, c)| c.role == "leader")
        .map(|(id, _)| *id)
        .collect();
    let crowned: Vec<u64> = nodes
        .iter()
        .filter(|(_, n)| n.crowned)
        .map(|(id, _)| *id)
        .collect();
    let mut by_header: Vec<u64> = names
        .iter()
        .map(|n| {
            cards
                .iter()
                .find(|(_, c)| &c.name == n)
                .map_or(0, |(id, _)| *id)
        })
        .collect();
    by_header.sort_unstable();
    let mut out = Vec::new();
    if by_header != by_cards || crowned != by_cards {
        out.push(format!(
            "leaders: the header ({text:?}) says {by_header:?}, the graph crowns {crowned:?}, the cards say {by_cards:?}"
        ));
    }
    let card_term = by_cards.iter().filter_map(|id| cards[id].term).max();
    if term.is_some() && term != card_term {
        out.push(format!(
            "the header ({text:?}) says term {term:?}, the leaders' cards term {card_term:?}"
        ));
    }
    out
}

/// Every cell shows its entry's term (never more than the member's term),
/// and the cells are the last [`LOG_TAIL`] entries of the member's log.
fn log_problems(id: u64, card: &Card) -> Vec<String> {
    let mut out = Vec::new();
    for (index, t) in &card.cells {
        match t.strip_prefix('t').and_then(|t| t.parse::<u64>().ok()) {
            None => out.push(format!(
                "member {id}'s log cell {index} shows {t:?}, not its entry's term"
            )),
            Some(t) if Some(t) > card.term => out.push(format!(
                "member {id}'s log cell {index} is of term {t}, after the member's term {:?}",
                card.term
            )),
            Some(_) => {}
        }
    }
    if let (Some(last), false) = (card.last, card.role == "down") {
        let want: Vec<u64> = (last.saturating_sub(LOG_TAIL) + 1..=last).collect();
        let got: Vec<u64> = card.cells.iter().map(|(i, _)| *i).collect();
        if got != want {
            out.push(format!(
                "member {id}'s log shows entries {got:?}, not the last ones up to {last}"
            ));
        }
    }
    out
}

/// Checks every picture; the first one that is wrong fails the test.
fn check_pictures(when: &str, pictures: &[Value]) {
    assert!(!pictures.is_empty(), "{when}: no picture");
    println!(
        "{when}: {} pictures; the first, {:.0} ms after loading: {}",
        pictures.len(),
        pictures[0]["at"].as_f64().unwrap_or(0.0),
        pictures[0]["shown"]
    );
    for (n, picture) in pictures.iter().enumerate() {
        let wrong = problems(picture);
        assert!(
            wrong.is_empty(),
            "{when}: picture {n} ({:.0} ms after loading) is wrong:\n  {}\nit shows: {}\nstatus received from members {}",
            picture["at"].as_f64().unwrap_or(0.0),
            wrong.join("\n  "),
            picture["shown"],
            picture["statusSeen"]
        );
    }
}

/// A write through the page's server (`POST /ui/actions/put`); retried
/// until the cluster has a leader. Returns the entry's index.
fn put(url: &str) -> u64 {
    let addr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/ui"))
        .unwrap_or_else(|| panic!("not the page's address: {url}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = post(addr, "/ui/actions/put?key=first&value=picture");
        if let Some(index) = answer.split("committed at index ").nth(1).and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        }) {
            return index;
        }
        assert!(Instant::now() < deadline, "put: {answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn post(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let talk = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    talk().unwrap_or_else(|e| format!("POST {path}: {e}"))
}

/// The picture issue 21 saw, as the page reports it: the checks above catch
/// each of its faults (no browser needed).
#[test]
fn the_checks_catch_the_picture_of_issue_21() {
    let picture = serde_json::json!({
        "statusSeen": [],
        "shown": {
            "header": "no leader",
            "graph": [{"id": 1, "name": "dev-0", "role": "leader", "term": "term 1", "crowned": true}],
            "cards": [{
                "id": 1,
                "head": "dev-0 · follower · term 0",
                "meta": "leader — · commit 0 · applied 0 · last 1",
                "cells": [{"title": "index 1, committed", "term": "?"}],
            }],
        },
    });
    let found = problems(&picture).join("\n");
    for fault in [
        "member 1 is shown (follower · term Some(0)) before its status arrived",
        "member 1: the graph says leader in term Some(1), its card follower in term Some(0)",
        "member 1's log cell 1 shows \"?\", not its entry's term",
        "leaders: the header (\"no leader\") says [], the graph crowns [1], the cards say []",
    ] {
        assert!(
            found.contains(fault),
            "not caught: {fault}\nfound:\n{found}"
        );
    }
}

#[test]
fn the_first_picture_agrees_with_itself() {
    let chromium = match find_chromium() {
        Ok(c) => c,
        Err(why) => return skip("the web view's browser test", &why),
    };
    let dev = start_dev();
    let url = dev.ui_url();
    let mut browser = Browser::launch(&chromium, 1400, 1000);

    // At once after the banner: the members may still be starting, or
    // electing their first leader.
    let pictures = first_pictures(&mut browser, &url);
    check_pictures("the page opened right after the banner", &pictures);

    // At once after a write: the logs have entries whose terms are known.
    let index = put(&url);
    let pictures = first_pictures(&mut browser, &url);
    check_pictures("the page opened right after a write", &pictures);
    let last = pictures
        .last()
        .map(|p| cards(&p["shown"]))
        .unwrap_or_default();
    assert!(
        last.values()
            .any(|c| c.cells.iter().any(|(i, _)| *i == index)),
        "no card shows the written entry {index}: {:?}",
        pictures.last()
    );
}
