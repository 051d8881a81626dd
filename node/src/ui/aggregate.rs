//! One stream of events for the whole cluster: a watcher per member
//! (admin.v1 WatchEvents on its client port), merged into one channel of
//! JSON values, plus what only the watcher can tell — that a member cannot
//! be reached, or went silent (paused), and when it is back.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kuberaft_proto::admin::WatchEventsRequest;
use kuberaft_proto::admin::admin_client::AdminClient;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::server::ui_events::to_json;
use crate::transport::channel::lazy_channel;

/// Where merged events go; every watcher ends once the receiver is dropped.
pub type Sink = mpsc::Sender<Value>;

/// A member to watch: id, name, client address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub id: u64,
    pub name: String,
    pub client_addr: String,
}

/// A member that sends nothing for this long is reported silent (a member
/// publishes a STATUS event every 250 ms while watched).
const SILENT_AFTER: Duration = Duration::from_millis(1500);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn reachability(id: u64, reachable: bool, reason: &str) -> Value {
    json!({
        "kind": if reachable { "member_reachable" } else { "member_unreachable" },
        "member_id": id,
        "unix_ms": unix_ms(),
        "reason": reason,
    })
}

/// Watches the members `targets` returns (asked again every second, so a
/// membership change is followed), except `skip` (the member serving the
/// page, which feeds its own events). Announces the member list first and
/// whenever it changes.
pub fn watch_members<F>(sink: Sink, targets: F, skip: Option<u64>)
where
    F: Fn() -> Vec<Target> + Send + 'static,
{
    tokio::spawn(async move {
        let mut watched: HashSet<u64> = HashSet::new();
        let mut announced: Option<Vec<Target>> = None;
        loop {
            let list = targets();
            if announced.as_ref() != Some(&list) {
                let members: Vec<Value> = list
                    .iter()
                    .map(|t| json!({"id": t.id, "name": t.name, "client_addr": t.client_addr}))
                    .collect();
                let ev = json!({"kind": "members", "members": members, "unix_ms": unix_ms()});
                if sink.send(ev).await.is_err() {
                    return;
                }
                announced = Some(list.clone());
            }
            for t in list {
                if Some(t.id) != skip && watched.insert(t.id) {
                    tokio::spawn(watch_one(sink.clone(), t));
                }
            }
            tokio::select! {
                _ = sink.closed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}

async fn open(addr: &str) -> Result<tonic::Streaming<kuberaft_proto::admin::RaftEvent>, String> {
    let mut client = AdminClient::new(lazy_channel(addr)?);
    match tokio::time::timeout(
        Duration::from_secs(2),
        client.watch_events(WatchEventsRequest {}),
    )
    .await
    {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(e)) => Err(e.message().to_string()),
        Err(_) => Err("no answer within 2 s".to_string()),
    }
}

async fn watch_one(sink: Sink, t: Target) {
    let mut reachable: Option<bool> = None;
    loop {
        let stream = open(&t.client_addr).await;
        match stream {
            Ok(mut stream) => loop {
                tokio::select! {
                    _ = sink.closed() => return,
                    next = tokio::time::timeout(SILENT_AFTER, stream.message()) => match next {
                        Ok(Ok(Some(ev))) => {
                            if reachable != Some(true) {
                                reachable = Some(true);
                                if sink.send(reachability(t.id, true, "")).await.is_err() {
                                    return;
                                }
                            }
                            if sink.send(to_json(&ev)).await.is_err() {
                                return;
                            }
                        }
                        Ok(Ok(None)) | Ok(Err(_)) => {
                            reachable = Some(false);
                            if sink.send(reachability(t.id, false, "its event stream ended (stopped?)")).await.is_err() {
                                return;
                            }
                            break;
                        }
                        Err(_) => {
                            if reachable != Some(false) {
                                reachable = Some(false);
                                let why = "silent for 1.5 s (paused, or its process hangs)";
                                if sink.send(reachability(t.id, false, why)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            },
            Err(e) => {
                if reachable != Some(false) {
                    reachable = Some(false);
                    let why = format!("cannot watch it: {e}");
                    if sink.send(reachability(t.id, false, &why)).await.is_err() {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            _ = sink.closed() => return,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
}
