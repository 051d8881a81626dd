//! The protocol events behind the web view (issue 8), read as a browser
//! would — server-sent events from one member's HTTP port, which merges
//! every member's stream: an election shows up in order (pre-votes, votes,
//! then the new leader, terms only growing), and a client write is traced
//! from the leader's append to commit to apply on every member.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kuberaft_tests::cluster::{Cluster, kv, wait_for_leader};
use serde_json::Value;

/// Opens `GET path` on `addr` and sends every `data:` line's JSON to the
/// returned channel, from a thread, until the connection closes.
fn sse(addr: &str, path: &str) -> mpsc::Receiver<Value> {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP port");
    // HTTP/1.0: the body is delimited by the connection's end, not chunked.
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("send the request");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(s);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if let Some(json) = line.trim_end().strip_prefix("data:")
                && let Ok(v) = serde_json::from_str::<Value>(json.trim())
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    rx
}

/// A one-shot HTTP/1.0 request; returns (status code, body).
fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP port");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

/// Collects events until `done` says so, or panics after `within`.
fn collect_until(
    rx: &mpsc::Receiver<Value>,
    seen: &mut Vec<Value>,
    within: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) {
    let deadline = Instant::now() + within;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => seen.push(v),
            Err(_) => panic!(
                "{what}: not seen within {within:?}; last events:\n{}",
                seen.iter()
                    .rev()
                    .take(40)
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}
fn num(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or(0)
}
fn of(v: &Value, member: u64) -> bool {
    num(v, "member_id") == member
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_and_a_write_arrive_in_order_through_one_member() {
    let mut c = Cluster::start(3);
    let addrs = c.client_addrs();
    let (old_leader, old_term) = wait_for_leader(&addrs, Duration::from_secs(10)).await;
    let watched = c
        .ids()
        .into_iter()
        .find(|i| *i != old_leader)
        .expect("a follower");
    let http_addr = c.member(watched).http_addr();

    // The page and its files are in the binary; without --ui-actions the
    // view is read-only.
    let (code, page) = http(&http_addr, "GET", "/ui");
    assert_eq!(code, 200);
    assert!(page.contains("<title>kuberaft"), "{page}");
    assert_eq!(http(&http_addr, "GET", "/ui/app.js").0, 200);
    let (code, body) = http(&http_addr, "POST", "/ui/actions/put?key=a&value=b");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("--ui-actions"), "{body}");

    // One member's stream carries all three: wait for each one's status.
    let rx = sse(&http_addr, "/ui/events");
    let mut seen = Vec::new();
    collect_until(
        &rx,
        &mut seen,
        Duration::from_secs(10),
        "a status of every member",
        |s| {
            (1..=3).all(|m| {
                s.iter()
                    .any(|v| kind(v) == "status" && of(v, m) && num(v, "term") >= old_term)
            })
        },
    );
    assert!(
        seen.iter()
            .any(|v| kind(v) == "members" && v["members"].as_array().map(Vec::len) == Some(3)),
        "the member list comes first"
    );
    let start = seen.len();

    c.kill(old_leader);
    let new_leader_event = |s: &[Value]| {
        s[start..].iter().position(|v| {
            kind(v) == "role_changed" && v["role"] == "leader" && num(v, "term") > old_term
        })
    };
    collect_until(
        &rx,
        &mut seen,
        Duration::from_secs(15),
        "a new leader in a higher term",
        |s| new_leader_event(s).is_some(),
    );
    let at = start + new_leader_event(&seen).unwrap_or_default();
    let won = seen[at].clone();
    let (leader, term) = (num(&won, "member_id"), num(&won, "term"));
    assert!(
        won["reason"]
            .as_str()
            .unwrap_or("")
            .contains("won the election"),
        "{won}"
    );
    // The dead member is reported, by the watcher that lost it.
    collect_until(
        &rx,
        &mut seen,
        Duration::from_secs(10),
        "the killed leader reported unreachable",
        |s| {
            s.iter()
                .any(|v| kind(v) == "member_unreachable" && of(v, old_leader))
        },
    );

    // In the new leader's own stream: its timer ran out, it asked for
    // pre-votes, then (as a candidate of the new term) for votes, then won.
    let own: Vec<&Value> = seen[start..=at].iter().filter(|v| of(v, leader)).collect();
    let pos = |f: &dyn Fn(&Value) -> bool| own.iter().position(|v| f(v));
    let pre_vote = pos(&|v| kind(v) == "vote_requested" && v["pre_vote"] == true)
        .unwrap_or_else(|| panic!("no pre-vote request before winning: {own:?}"));
    let candidate =
        pos(&|v| kind(v) == "role_changed" && v["role"] == "candidate" && num(v, "term") == term)
            .unwrap_or_else(|| panic!("never a candidate of term {term}: {own:?}"));
    let vote =
        pos(&|v| kind(v) == "vote_requested" && v["pre_vote"].is_null() && num(v, "term") == term)
            .unwrap_or_else(|| panic!("no vote request in term {term}: {own:?}"));
    assert!(
        pre_vote < candidate && candidate < vote && vote < own.len() - 1,
        "{own:?}"
    );
    // Another member granted that vote, no later (by the clock of this one
    // host) than the leader announced its win.
    let granted = seen.iter().find(|v| {
        kind(v) == "vote_granted"
            && num(v, "peer_id") == leader
            && v["pre_vote"].is_null()
            && num(v, "term") == term
    });
    let granted = granted.unwrap_or_else(|| panic!("nobody granted {leader} its vote"));
    assert!(
        num(granted, "unix_ms") <= num(&won, "unix_ms"),
        "{granted} after {won}"
    );

    // Per member, events come in publication order and terms never go back.
    for m in 1..=3 {
        let mine: Vec<&Value> = seen
            .iter()
            .filter(|v| of(v, m) && v.get("seq").is_some())
            .collect();
        for w in mine.windows(2) {
            assert!(
                num(w[0], "seq") < num(w[1], "seq"),
                "{} then {}",
                w[0],
                w[1]
            );
            assert!(
                num(w[0], "term") <= num(w[1], "term"),
                "{} then {}",
                w[0],
                w[1]
            );
        }
    }

    // A write, traced on every live member: appended, committed, applied.
    let survivors: Vec<String> = c
        .members
        .iter()
        .filter(|m| m.id != old_leader)
        .map(|m| m.client_addr())
        .collect();
    let (leader_now, _) = wait_for_leader(&survivors, Duration::from_secs(10)).await;
    assert_eq!(leader_now, leader);
    let before = seen.len();
    let index = kv(&c.member(leader).client_addr())
        .await
        .put(kuberaft_proto::kv::PutRequest {
            key: b"traced".to_vec(),
            value: b"write".to_vec(),
        })
        .await
        .expect("put")
        .into_inner()
        .index;
    let live: Vec<u64> = c.ids().into_iter().filter(|i| *i != old_leader).collect();
    let step = |v: &Value, m: u64, k: &str| -> bool {
        of(v, m)
            && kind(v) == k
            && match k {
                "entries_appended" => num(v, "index") <= index && index <= num(v, "last_index"),
                _ => num(v, "index") >= index,
            }
    };
    collect_until(
        &rx,
        &mut seen,
        Duration::from_secs(10),
        "the write applied on every live member",
        |s| {
            live.iter()
                .all(|m| s[before..].iter().any(|v| step(v, *m, "applied")))
        },
    );
    for m in &live {
        let trace: Vec<&Value> = seen[before..].iter().filter(|v| of(v, *m)).collect();
        let at = |k: &str| {
            trace
                .iter()
                .position(|v| step(v, *m, k))
                .unwrap_or_else(|| panic!("member {m}: no {k} of index {index}: {trace:?}"))
        };
        let (appended, committed, applied) =
            (at("entries_appended"), at("committed"), at("applied"));
        assert!(
            appended < committed && committed <= applied,
            "member {m}: append {appended}, commit {committed}, apply {applied}"
        );
    }
    // The leader sent the entry to its follower, which acknowledged it.
    let follower = live.iter().copied().find(|m| *m != leader).unwrap_or(0);
    assert!(seen[before..].iter().any(|v| kind(v) == "append_sent"
        && of(v, leader)
        && num(v, "peer_id") == follower
        && num(v, "index") <= index));
    assert!(seen[before..].iter().any(|v| kind(v) == "append_acked"
        && of(v, follower)
        && num(v, "peer_id") == leader
        && num(v, "index") >= index));
}
