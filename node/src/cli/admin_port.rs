//! Where raftctl sends the calls that change the cluster (member add, promote and remove,
//! transfer-leader, snapshot): the members' admin ports, which are not the client ports of
//! `--endpoints` (see admin.proto for why).

use std::future::Future;
use std::time::Duration;

use tonic::Status;
use tonic::transport::Channel;

use super::Ctx;
use super::client::{CallError, Client};
use super::error::{CliError, Effect};
use super::members;

/// Said when an admin port cannot be reached: the usual cause is raftctl running outside.
const WHERE_ADMIN_PORTS_ARE: &str = "the admin port (7003 on Kubernetes) is reachable from the \
    members' pods and the operator only: run raftctl in a member's pod (kubectl exec), or give \
    --admin-endpoints";

/// The admin addresses to use: `--admin-endpoints`, else what each reachable endpoint says in
/// its Status (`admin_addr`), the leader's first (it does the work; others forward to it).
pub async fn admin_addrs(ctx: &Ctx) -> Result<Vec<String>, CliError> {
    if !ctx.admin_endpoints.is_empty() {
        return Ok(ctx.admin_endpoints.clone());
    }
    let views = members::survey(&ctx.client, false).await;
    let mut addrs: Vec<String> = Vec::new();
    let leader = members::leader_of(&views).map(|s| s.admin_addr.clone());
    let answers = views.iter().filter_map(|v| v.status.as_ref().ok());
    for addr in leader
        .into_iter()
        .chain(answers.map(|s| s.admin_addr.clone()))
    {
        if !addr.is_empty() && !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if !addrs.is_empty() {
        return Ok(addrs);
    }
    let unreachable: Vec<(String, String)> = views
        .iter()
        .filter_map(|v| v.status.as_ref().err().map(|e| (v.addr.clone(), e.clone())))
        .collect();
    if unreachable.len() == views.len() {
        return Err(super::error::all_unreachable(&unreachable));
    }
    Err(CliError::new(
        "no member said where its admin port is (a member older than the admin port?); give \
         --admin-endpoints",
    ))
}

/// A client for the admin ports, with the timeouts of `--endpoints`.
pub async fn admin_client(ctx: &Ctx) -> Result<Client, CliError> {
    ctx.client.with_endpoints(&admin_addrs(ctx).await?)
}

/// [`Client::call`] on the admin ports; an admin port that cannot be reached is explained.
pub async fn call_admin<T, F, Fut>(
    client: &Client,
    effect: Effect,
    f: F,
) -> Result<(String, T), CliError>
where
    F: FnMut(Channel, Duration) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let timeout = client.command_timeout;
    client.call(effect, f).await.map_err(|e| match e {
        CallError::Failed(e) => CliError {
            message: format!("{}; {WHERE_ADMIN_PORTS_ARE}", e.message),
            ..e
        },
        e => e.into_cli(effect, timeout),
    })
}
