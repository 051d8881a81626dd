//! status, transfer-leader, member and snapshot: the kuberaft.admin.v1 API.

use kuberaft_proto::admin::{self, Role, admin_client::AdminClient};
use kuberaft_proto::raft;
use serde_json::json;

use super::Ctx;
use super::admin_port::{admin_client, call_admin};
use super::args::{MemberCommand, OutputFormat};
use super::client::request;
use super::error::{CliError, Effect};
use super::members::{self, MemberView, member_json, role_name, suffrage_name};
use super::output::{Table, out, outln, print_json};

/// `2 dev-1`, or `-` for nobody (id 0).
pub fn who(id: u64, members: &[raft::Member]) -> String {
    if id == 0 {
        return "-".into();
    }
    match members.iter().find(|m| m.id == id) {
        Some(m) => format!("{id} {}", m.name),
        None => id.to_string(),
    }
}

/// The member table of `raftctl status`.
pub fn status_table(views: &[MemberView]) -> Table {
    let membership: Vec<raft::Member> = views.iter().filter_map(|v| v.member.clone()).collect();
    let mut t = Table::new([
        "ID",
        "NAME",
        "ENDPOINT",
        "ROLE",
        "TERM",
        "LEADER",
        "VOTED FOR",
        "COMMIT",
        "APPLIED",
        "LAST",
        "SNAPSHOT",
        "SUFFRAGE",
        "SERVING",
    ]);
    for v in views {
        let id = v.id().map_or("?".into(), |i| i.to_string());
        match &v.status {
            Ok(s) => t.row([
                id,
                s.name.clone(),
                v.addr.clone(),
                role_name(s.role()).to_string(),
                s.term.to_string(),
                who(s.leader_id, &membership),
                who(s.voted_for, &membership),
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                s.last_index.to_string(),
                s.snapshot_index.to_string(),
                suffrage_name(s.suffrage()).to_string(),
                if s.serving { "yes" } else { "no" }.to_string(),
            ]),
            Err(_) => t.row([id, v.name(), v.addr.clone(), "unreachable".to_string()]),
        }
    }
    t
}

/// The leader's view of replication: each member's match index.
pub fn replication_table(leader: &admin::StatusResponse) -> Table {
    let mut t = Table::new([
        "ID",
        "NAME",
        "SUFFRAGE",
        "MATCH INDEX",
        "NEXT INDEX",
        "STATE",
        "ACTIVE",
    ]);
    for m in &leader.members {
        let Some(member) = &m.member else { continue };
        let is_leader = member.id == leader.member_id;
        t.row([
            member.id.to_string(),
            member.name.clone(),
            suffrage_name(member.suffrage()).to_string(),
            if is_leader {
                leader.last_index
            } else {
                m.match_index
            }
            .to_string(),
            if is_leader {
                "-".to_string()
            } else {
                m.next_index.to_string()
            },
            if is_leader {
                "leader".to_string()
            } else {
                m.replication_state.clone()
            },
            if is_leader || m.recent_active {
                "yes"
            } else {
                "no"
            }
            .to_string(),
        ]);
    }
    t
}

/// One line about the leader, or about its absence.
pub fn leader_line(views: &[MemberView]) -> String {
    let answers: Vec<&admin::StatusResponse> = views
        .iter()
        .filter_map(|v| v.status.as_ref().ok())
        .collect();
    if answers.is_empty() {
        return "no member answered".into();
    }
    let mut leaders: Vec<&admin::StatusResponse> = answers
        .iter()
        .copied()
        .filter(|s| s.role() == Role::Leader)
        .collect();
    leaders.sort_by_key(|s| s.term);
    match leaders.as_slice() {
        [] => {
            let term = answers.iter().map(|s| s.term).max().unwrap_or(0);
            format!("no leader (highest term {term}); an election may be under way")
        }
        [l] => format!("leader: {} {} in term {}", l.member_id, l.name, l.term),
        [.., newest] => format!(
            "{} members think they lead; the one in the highest term is {} {} (term {}); the others are stale and will step down",
            leaders.len(),
            newest.member_id,
            newest.name,
            newest.term
        ),
    }
}

pub async fn status(ctx: &Ctx, only_endpoints: bool) -> Result<(), CliError> {
    let views = members::survey(&ctx.client, !only_endpoints).await;
    let reachable = views.iter().filter(|v| v.status.is_ok()).count();
    match ctx.format {
        OutputFormat::Json => {
            let leader = members::leader_of(&views).map(|l| l.member_id);
            print_json(&json!({
                "leader_id": leader,
                "members": views.iter().map(|v| match &v.status {
                    Ok(s) => json!({"endpoint": v.addr, "reachable": true, "status": members::status_json(s)}),
                    Err(e) => json!({
                        "endpoint": v.addr,
                        "reachable": false,
                        "id": v.id(),
                        "name": v.name(),
                        "error": e,
                    }),
                }).collect::<Vec<_>>(),
            }));
        }
        OutputFormat::Table if reachable > 0 => {
            out!("{}", status_table(&views).render());
            for v in views.iter().filter(|v| v.status.is_err()) {
                if let Err(e) = &v.status {
                    match v.name().as_str() {
                        "" => outln!("  {}: {e}", v.addr),
                        name => outln!("  {name} ({}): {e}", v.addr),
                    }
                }
            }
            outln!();
            outln!("{}", leader_line(&views));
            if let Some(l) = members::leader_of(&views) {
                outln!();
                outln!("replication, as leader {} sees it:", l.name);
                out!("{}", replication_table(l).render());
            }
        }
        OutputFormat::Table => {}
    }
    if reachable == 0 {
        let list: Vec<(String, String)> = views
            .iter()
            .map(|v| {
                let why = v.status.clone().err().unwrap_or_default();
                (
                    v.addr.clone(),
                    why.trim_start_matches("unreachable ")
                        .trim_matches(|c| c == '(' || c == ')')
                        .to_string(),
                )
            })
            .collect();
        return Err(super::error::all_unreachable(&list));
    }
    Ok(())
}

pub async fn transfer_leader(ctx: &Ctx, to: Option<u64>) -> Result<(), CliError> {
    let req = admin::TransferLeadershipRequest {
        to: to.unwrap_or(0),
    };
    let (_, r) = call_admin(
        &admin_client(ctx).await?,
        Effect::Write,
        |ch, left| async move {
            Ok(AdminClient::new(ch)
                .transfer_leadership(request(req, left))
                .await?
                .into_inner())
        },
    )
    .await?;
    // The answer may come before the new leader is known: ask the members.
    let (mut leader_id, mut term, mut name) = (r.leader_id, r.term, String::new());
    let deadline = tokio::time::Instant::now() + ctx.client.command_timeout;
    while tokio::time::Instant::now() < deadline {
        let views = members::survey(&ctx.client, true).await;
        if let Some(l) = members::leader_of(&views)
            && l.term >= r.term
            && (leader_id == 0 || l.member_id == leader_id)
        {
            (leader_id, term, name) = (l.member_id, l.term, l.name.clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if leader_id == 0 {
        return Err(CliError::new(format!(
            "the transfer started (term {}) but no new leader was seen within {}; check with `raftctl status`",
            r.term,
            super::error::humanize(ctx.client.command_timeout)
        )));
    }
    match ctx.format {
        OutputFormat::Json => {
            print_json(&json!({"leader_id": leader_id, "leader_name": name, "term": term}))
        }
        OutputFormat::Table => outln!("leader is now {leader_id} {name} (term {term})"),
    }
    Ok(())
}

fn membership_table(m: &raft::Membership) -> Table {
    let mut t = Table::new(["ID", "NAME", "SUFFRAGE", "PEER ADDR", "CLIENT ADDR"]);
    let mut members = m.members.clone();
    members.sort_by_key(|m| m.id);
    for m in &members {
        t.row([
            m.id.to_string(),
            m.name.clone(),
            suffrage_name(m.suffrage()).to_string(),
            m.peer_addr.clone(),
            m.client_addr.clone(),
        ]);
    }
    t
}

fn print_membership(ctx: &Ctx, m: Option<raft::Membership>) {
    let m = m.unwrap_or_default();
    match ctx.format {
        OutputFormat::Json => print_json(&json!({
            "members": m.members.iter().map(member_json).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => out!("{}", membership_table(&m).render()),
    }
}

pub async fn member(ctx: &Ctx, cmd: &MemberCommand) -> Result<(), CliError> {
    match cmd {
        MemberCommand::List => {
            let (_, s) = ctx
                .client
                .call_cli(Effect::Read, |ch, left| async move {
                    Ok(AdminClient::new(ch)
                        .status(request(admin::StatusRequest {}, left))
                        .await?
                        .into_inner())
                })
                .await?;
            let m = raft::Membership {
                members: s.members.iter().filter_map(|m| m.member.clone()).collect(),
            };
            print_membership(ctx, Some(m));
        }
        MemberCommand::Add {
            id,
            name,
            peer_addr,
            client_addr,
            learner_only,
        } => {
            if *id == 0 {
                return Err(CliError::usage("member id 0 is reserved; ids start at 1"));
            }
            super::client::parse_endpoint(peer_addr).map_err(|_| {
                CliError::usage(format!("--peer-addr {peer_addr:?} is not host:port"))
            })?;
            super::client::parse_endpoint(client_addr).map_err(|_| {
                CliError::usage(format!("--client-addr {client_addr:?} is not host:port"))
            })?;
            let req = admin::AddMemberRequest {
                member: Some(raft::Member {
                    id: *id,
                    name: name.clone(),
                    peer_addr: peer_addr.clone(),
                    client_addr: client_addr.clone(),
                    suffrage: raft::Suffrage::Unspecified as i32,
                }),
                learner_only: *learner_only,
            };
            let admin = admin_client(ctx).await?;
            let (_, r) = call_admin(&admin, Effect::Write, |ch, left| {
                let req = req.clone();
                async move {
                    Ok(AdminClient::new(ch)
                        .add_member(request(req, left))
                        .await?
                        .into_inner())
                }
            })
            .await?;
            print_membership(ctx, r.membership);
        }
        MemberCommand::Promote { id } => {
            let req = admin::PromoteMemberRequest { id: *id };
            let admin = admin_client(ctx).await?;
            let (_, r) = call_admin(&admin, Effect::Write, |ch, left| async move {
                Ok(AdminClient::new(ch)
                    .promote_member(request(req, left))
                    .await?
                    .into_inner())
            })
            .await?;
            print_membership(ctx, r.membership);
        }
        MemberCommand::Remove { id } => {
            let req = admin::RemoveMemberRequest { id: *id };
            let admin = admin_client(ctx).await?;
            let (_, r) = call_admin(&admin, Effect::Write, |ch, left| async move {
                Ok(AdminClient::new(ch)
                    .remove_member(request(req, left))
                    .await?
                    .into_inner())
            })
            .await?;
            print_membership(ctx, r.membership);
        }
    }
    Ok(())
}

pub async fn snapshot(ctx: &Ctx, all: bool) -> Result<(), CliError> {
    let admin_addrs = super::admin_port::admin_addrs(ctx).await?;
    let admin = ctx.client.with_endpoints(&admin_addrs)?;
    let targets: Vec<String> = if all {
        admin_addrs
    } else {
        vec![String::new()]
    };
    let mut t = Table::new([
        "ENDPOINT",
        "LAST INCLUDED INDEX",
        "LAST INCLUDED TERM",
        "SIZE",
    ]);
    let mut rows = Vec::new();
    for target in targets {
        let client = if target.is_empty() {
            admin.clone()
        } else {
            ctx.client.with_endpoints(std::slice::from_ref(&target))?
        };
        let (endpoint, r) = call_admin(&client, Effect::Write, |ch, left| async move {
            Ok(AdminClient::new(ch)
                .snapshot(request(admin::SnapshotRequest {}, left))
                .await?
                .into_inner())
        })
        .await?;
        t.row([
            endpoint.clone(),
            r.last_included_index.to_string(),
            r.last_included_term.to_string(),
            format!("{} bytes", r.size_bytes),
        ]);
        rows.push(json!({
            "endpoint": endpoint,
            "last_included_index": r.last_included_index,
            "last_included_term": r.last_included_term,
            "size_bytes": r.size_bytes,
        }));
    }
    match ctx.format {
        OutputFormat::Json => print_json(&json!({ "snapshots": rows })),
        OutputFormat::Table => out!("{}", t.render()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str) -> raft::Member {
        raft::Member {
            id,
            name: name.into(),
            peer_addr: format!("127.0.0.1:{}", 7098 + 2 * id),
            client_addr: format!("127.0.0.1:{}", 7099 + 2 * id),
            suffrage: raft::Suffrage::Voter as i32,
        }
    }

    fn status(id: u64, role: Role, term: u64, leader: u64) -> admin::StatusResponse {
        let ms = (1..=3)
            .map(|i| admin::MemberStatus {
                member: Some(member(i, &format!("dev-{}", i - 1))),
                match_index: 10 + i,
                next_index: 11 + i,
                replication_state: "replicate".into(),
                recent_active: i != 3,
            })
            .collect();
        admin::StatusResponse {
            member_id: id,
            name: format!("dev-{}", id - 1),
            cluster: "dev".into(),
            role: role as i32,
            term,
            voted_for: leader,
            leader_id: leader,
            commit_index: 12,
            applied_index: 12,
            last_index: 13,
            members: ms,
            serving: true,
            suffrage: raft::Suffrage::Voter as i32,
            ..Default::default()
        }
    }

    fn views() -> Vec<MemberView> {
        vec![
            MemberView {
                addr: "127.0.0.1:7101".into(),
                member: Some(member(1, "dev-0")),
                status: Ok(status(1, Role::Leader, 3, 1)),
            },
            MemberView {
                addr: "127.0.0.1:7103".into(),
                member: Some(member(2, "dev-1")),
                status: Ok(status(2, Role::Follower, 3, 1)),
            },
            MemberView {
                addr: "127.0.0.1:7105".into(),
                member: Some(member(3, "dev-2")),
                status: Err("unreachable (connection refused)".into()),
            },
        ]
    }

    #[test]
    fn status_shows_every_member_and_who_leads() {
        let v = views();
        assert_eq!(
            status_table(&v).render(),
            "\
ID  NAME   ENDPOINT        ROLE         TERM  LEADER   VOTED FOR  COMMIT  APPLIED  LAST  SNAPSHOT  SUFFRAGE  SERVING
1   dev-0  127.0.0.1:7101  leader       3     1 dev-0  1 dev-0    12      12       13    0         voter     yes
2   dev-1  127.0.0.1:7103  follower     3     1 dev-0  1 dev-0    12      12       13    0         voter     yes
3   dev-2  127.0.0.1:7105  unreachable
"
        );
        assert_eq!(leader_line(&v), "leader: 1 dev-0 in term 3");
    }

    #[test]
    fn the_leader_shows_each_match_index() {
        let v = views();
        let l = members::leader_of(&v).unwrap();
        assert_eq!(
            replication_table(l).render(),
            "\
ID  NAME   SUFFRAGE  MATCH INDEX  NEXT INDEX  STATE      ACTIVE
1   dev-0  voter     13           -           leader     yes
2   dev-1  voter     12           13          replicate  yes
3   dev-2  voter     13           14          replicate  no
"
        );
    }

    #[test]
    fn stale_leaders_are_called_stale() {
        let mut v = views();
        v[1].status = Ok(status(2, Role::Leader, 4, 2));
        assert!(
            leader_line(&v).contains("2 dev-1 (term 4)"),
            "{}",
            leader_line(&v)
        );
        v[0].status = Ok(status(1, Role::Candidate, 5, 0));
        v[1].status = Ok(status(2, Role::Follower, 5, 0));
        assert_eq!(
            leader_line(&v),
            "no leader (highest term 5); an election may be under way"
        );
    }
}
