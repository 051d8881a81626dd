//! `raftctl watch`: follows every member's WatchStatus stream and prints each
//! change of role, term, leader, vote or reachability as one line.

use std::time::Instant;

use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::Ctx;
use super::args::OutputFormat;
use super::error::CliError;
use super::live::{MemberRow, Update, View, follow, since};
use super::members::{self, role_name, status_json};
use super::output::{outln, print_json};

pub async fn run(ctx: &Ctx, all: bool, interval_ms: u32) -> Result<(), CliError> {
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| CliError::new(format!("cannot catch SIGINT: {e}")))?;
    // Every member the endpoints know of, so a leader elsewhere is seen too.
    let views = members::survey(&ctx.client, true).await;
    let rows: Vec<MemberRow> = views
        .iter()
        .map(|v| MemberRow {
            name: if v.name().is_empty() {
                v.addr.clone()
            } else {
                v.name()
            },
            addr: v.addr.clone(),
            process: None,
            status: None,
            reachable: false,
        })
        .collect();
    let addrs: Vec<String> = rows.iter().map(|r| r.addr.clone()).collect();
    if ctx.format == OutputFormat::Table {
        eprintln!("watching {} (Ctrl-C to stop)", addrs.join(", "));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _followers = follow(&addrs, interval_ms, ctx.client.dial_timeout, tx);
    let mut view = View::new(rows);
    let start = Instant::now();
    loop {
        let update = tokio::select! {
            _ = sigint.recv() => return Ok(()),
            u = rx.recv() => match u {
                Some(u) => u,
                None => return Ok(()),
            },
        };
        let (addr, status) = match &update {
            Update::Status(i, s) => (
                addrs.get(*i).cloned().unwrap_or_default(),
                Some((**s).clone()),
            ),
            Update::Unreachable(i, _) | Update::Process(i, _) => {
                (addrs.get(*i).cloned().unwrap_or_default(), None)
            }
        };
        let said = view.apply(update, &since(start));
        match ctx.format {
            OutputFormat::Json => {
                if said.is_empty() && !all {
                    continue;
                }
                print_json(&json!({
                    "elapsed_s": start.elapsed().as_secs_f64(),
                    "endpoint": addr,
                    "reachable": status.is_some(),
                    "events": said,
                    "status": status.as_ref().map(status_json),
                }));
            }
            OutputFormat::Table => {
                for line in &said {
                    outln!("{}  {line}", since(start));
                }
                if all
                    && said.is_empty()
                    && let Some(s) = status
                {
                    outln!(
                        "{}  {} {} term {} leader {} commit {} applied {}",
                        since(start),
                        s.name,
                        role_name(s.role()),
                        s.term,
                        if s.leader_name.is_empty() {
                            "-"
                        } else {
                            &s.leader_name
                        },
                        s.commit_index,
                        s.applied_index
                    );
                }
            }
        }
    }
}
