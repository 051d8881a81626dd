//! The member's configuration: flags, each also read from a `KUBERAFT_*`
//! environment variable (how the operator configures pods).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::raft::{Member, Membership, NodeId, Suffrage};

#[derive(Args, Clone, Debug)]
pub struct NodeArgs {
    /// Name of the cluster. Members refuse messages for another cluster, and a
    /// data dir remembers which cluster it belongs to.
    #[arg(long, env = "KUBERAFT_CLUSTER", default_value = "kuberaft")]
    pub cluster: String,

    /// This member's name, e.g. the pod name "demo-2". Defaults to the name
    /// given for --id in --initial-members, else "member-<id>".
    #[arg(long, env = "KUBERAFT_NAME")]
    pub name: Option<String>,

    /// This member's id (1 or more; 0 means "nobody" on the wire). When unset,
    /// derived from a name ending in a StatefulSet ordinal: "demo-2" is id 3.
    #[arg(long, env = "KUBERAFT_ID")]
    pub id: Option<NodeId>,

    /// Directory for this member's durable state. Created if missing; a
    /// directory of another cluster or member, or a damaged one, is refused.
    #[arg(long, env = "KUBERAFT_DATA_DIR", default_value = "kuberaft-data")]
    pub data_dir: PathBuf,

    /// Address for Raft traffic between members (kuberaft.raft.v1).
    #[arg(long, env = "KUBERAFT_PEER_LISTEN", default_value = "0.0.0.0:7000")]
    pub peer_listen: SocketAddr,

    /// Address for clients: kuberaft.kv.v1, the calls of kuberaft.admin.v1
    /// that only read (Status, WatchStatus, WatchEvents), grpc.health.v1 and
    /// server reflection.
    #[arg(long, env = "KUBERAFT_CLIENT_LISTEN", default_value = "0.0.0.0:7001")]
    pub client_listen: SocketAddr,

    /// Address for the calls that change the cluster (AddMember,
    /// PromoteMember, RemoveMember, TransferLeadership, Snapshot) and the rest
    /// of kuberaft.admin.v1, grpc.health.v1 and server reflection. Let only
    /// the members and the operator reach it; with peer TLS it accepts only
    /// certificates the peer CA signed.
    #[arg(long, env = "KUBERAFT_ADMIN_LISTEN", default_value = "0.0.0.0:7003")]
    pub admin_listen: SocketAddr,

    /// Address for HTTP: Prometheus /metrics, /livez and /readyz, and the
    /// web view /ui.
    #[arg(long, env = "KUBERAFT_HTTP_LISTEN", default_value = "0.0.0.0:7002")]
    pub http_listen: SocketAddr,

    /// The members that bootstrap a new cluster, comma-separated
    /// `ID=NAME@HOST:PEER_PORT/CLIENT_PORT`, e.g.
    /// `1=demo-0@demo-0.demo-peers:7000/7001,2=demo-1@demo-1.demo-peers:7000/7001`.
    /// Used only when the data dir is empty: a member listed here bootstraps
    /// with exactly this membership; one not listed waits to be added
    /// (AddMember). A member with data restarts from it and ignores this.
    #[arg(long, env = "KUBERAFT_INITIAL_MEMBERS", default_value = "")]
    pub initial_members: String,

    /// Lower bound of the randomized election timeout (§5.2 of the Raft paper).
    #[arg(long, env = "KUBERAFT_ELECTION_TIMEOUT_MIN_MS", default_value_t = 150)]
    pub election_timeout_min_ms: u32,

    /// Upper bound (exclusive) of the randomized election timeout.
    #[arg(long, env = "KUBERAFT_ELECTION_TIMEOUT_MAX_MS", default_value_t = 300)]
    pub election_timeout_max_ms: u32,

    /// How often a leader sends heartbeats; must be below the minimum
    /// election timeout.
    #[arg(long, env = "KUBERAFT_HEARTBEAT_INTERVAL_MS", default_value_t = 50)]
    pub heartbeat_interval_ms: u32,

    /// Take a snapshot and compact the log once this many entries were
    /// applied since the last snapshot.
    #[arg(
        long,
        env = "KUBERAFT_SNAPSHOT_THRESHOLD_ENTRIES",
        default_value_t = 10_000
    )]
    pub snapshot_threshold_entries: u64,

    /// ... or once the entries applied since the last snapshot hold this many
    /// bytes.
    #[arg(long, env = "KUBERAFT_SNAPSHOT_THRESHOLD_BYTES", default_value_t = 64 << 20)]
    pub snapshot_threshold_bytes: u64,

    /// Most bytes per second a leader streams to one follower when sending a
    /// snapshot (0: no limit), so catching up a member does not crowd out
    /// the log fsyncs and client writes on the network and the disks.
    #[arg(
        long,
        env = "KUBERAFT_SNAPSHOT_SEND_RATE",
        default_value_t = 150_000_000
    )]
    pub snapshot_send_rate: u64,

    /// Most bytes per second a member writes when it takes a snapshot
    /// (0: no limit), for the same reason: the snapshot file shares the disk
    /// with the log's fsyncs.
    #[arg(
        long,
        env = "KUBERAFT_SNAPSHOT_WRITE_RATE",
        default_value_t = 150_000_000
    )]
    pub snapshot_write_rate: u64,

    /// How long a leader waits on SIGTERM for a follower to take over before
    /// it exits anyway.
    #[arg(
        long,
        env = "KUBERAFT_SHUTDOWN_TRANSFER_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub shutdown_transfer_timeout_ms: u64,

    /// Log format.
    #[arg(long, env = "KUBERAFT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Let the web view (GET /ui on the HTTP port) act: write values, move
    /// leadership, cut this member off from its peers. Read-only without it.
    #[arg(long, env = "KUBERAFT_UI_ACTIONS")]
    pub ui_actions: bool,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration a member runs with.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub cluster: String,
    pub id: NodeId,
    pub name: String,
    pub data_dir: PathBuf,
    pub peer_listen: SocketAddr,
    pub client_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// Empty when this member is not among the initial members (join mode).
    pub initial_membership: Membership,
    /// Milliseconds per tick of the Raft core.
    pub tick_ms: u32,
    pub election_tick_min: u32,
    pub election_tick_max: u32,
    pub heartbeat_tick: u32,
    pub shutdown_transfer_timeout: Duration,
    pub snapshot_threshold_entries: u64,
    pub snapshot_threshold_bytes: u64,
    /// Bytes per second; 0 is unlimited.
    pub snapshot_send_rate: u64,
    /// Bytes per second; 0 is unlimited.
    pub snapshot_write_rate: u64,
    pub log_format: LogFormat,
    /// `--ui-actions`.
    pub ui_actions: bool,
    pub tls: crate::tls::TlsConfig,
}

impl NodeArgs {
    /// Checks the flags; the error is one line that names the flag.
    pub fn validate(&self) -> Result<NodeConfig, String> {
        if self.cluster.is_empty() {
            return Err("--cluster must not be empty".into());
        }
        let members = parse_initial_members(&self.initial_members)?;
        let id = match (self.id, &self.name) {
            (Some(0), _) => return Err("--id 0 is reserved; member ids start at 1".into()),
            (Some(id), _) => id,
            (None, Some(name)) => id_from_name(name).ok_or_else(|| {
                format!("--id is not set and --name {name:?} does not end in a StatefulSet ordinal (like demo-0); set --id")
            })?,
            (None, None) => return Err("set --id (or --name ending in an ordinal, like demo-0)".into()),
        };
        let listed = members.iter().find(|m| m.id == id);
        if let (Some(m), Some(name)) = (listed, &self.name)
            && &m.name != name
        {
            return Err(format!(
                "--initial-members names member {id} {:?}, but --name is {name:?}",
                m.name
            ));
        }
        let name = self
            .name
            .clone()
            .or_else(|| listed.map(|m| m.name.clone()))
            .unwrap_or_else(|| format!("member-{id}"));
        let (min, max, hb) = (
            self.election_timeout_min_ms,
            self.election_timeout_max_ms,
            self.heartbeat_interval_ms,
        );
        if min == 0 || min >= max {
            return Err(format!(
                "--election-timeout-min-ms ({min}) must be above 0 and below --election-timeout-max-ms ({max})"
            ));
        }
        if hb == 0 || hb >= min {
            return Err(format!(
                "--heartbeat-interval-ms ({hb}) must be above 0 and below --election-timeout-min-ms ({min})"
            ));
        }
        let tick_ms = tick_for(&[min, max, hb]);
        let initial_membership = if listed.is_some() {
            Membership::new(members)
        } else {
            Membership::default()
        };
        Ok(NodeConfig {
            cluster: self.cluster.clone(),
            id,
            name,
            data_dir: self.data_dir.clone(),
            peer_listen: self.peer_listen,
            client_listen: self.client_listen,
            admin_listen: self.admin_listen,
            http_listen: self.http_listen,
            initial_membership,
            tick_ms,
            election_tick_min: min / tick_ms,
            election_tick_max: max / tick_ms,
            heartbeat_tick: hb / tick_ms,
            shutdown_transfer_timeout: Duration::from_millis(self.shutdown_transfer_timeout_ms),
            snapshot_threshold_entries: self.snapshot_threshold_entries.max(1),
            snapshot_threshold_bytes: self.snapshot_threshold_bytes.max(1),
            snapshot_send_rate: self.snapshot_send_rate,
            snapshot_write_rate: self.snapshot_write_rate,
            log_format: self.log_format,
            ui_actions: self.ui_actions,
            tls: self.tls.validate()?,
        })
    }
}

/// The longest tick of at most 10 ms that divides every interval exactly, so
/// the timeouts the user asked for are kept to the millisecond.
fn tick_for(intervals_ms: &[u32]) -> u32 {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let g = intervals_ms.iter().fold(0, |acc, &x| gcd(acc, x));
    (1..=10.min(g)).rev().find(|t| g % t == 0).unwrap_or(1)
}

/// "demo-2" → 3: the StatefulSet ordinal plus one.
pub fn id_from_name(name: &str) -> Option<NodeId> {
    let (_, ordinal) = name.rsplit_once('-')?;
    let ordinal: u64 = ordinal.parse().ok()?;
    ordinal.checked_add(1)
}

/// Parses `ID=NAME@HOST:PEER_PORT/CLIENT_PORT,...`.
pub fn parse_initial_members(s: &str) -> Result<Vec<Member>, String> {
    let mut out: Vec<Member> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = |why: &str| {
            format!(
                "--initial-members: {item:?} {why}; expected ID=NAME@HOST:PEER_PORT/CLIENT_PORT"
            )
        };
        let (id, rest) = item.split_once('=').ok_or_else(|| bad("has no '='"))?;
        let id: NodeId = id.trim().parse().map_err(|_| bad("has no numeric id"))?;
        if id == 0 {
            return Err(bad("uses id 0, which is reserved"));
        }
        let (name, addr) = rest.split_once('@').ok_or_else(|| bad("has no '@'"))?;
        let (peer_addr, client_port) = addr
            .rsplit_once('/')
            .ok_or_else(|| bad("has no '/CLIENT_PORT'"))?;
        let (host, peer_port) = peer_addr
            .rsplit_once(':')
            .ok_or_else(|| bad("has no ':PEER_PORT'"))?;
        let peer_port: u16 = peer_port.parse().map_err(|_| bad("has a bad peer port"))?;
        let client_port: u16 = client_port
            .parse()
            .map_err(|_| bad("has a bad client port"))?;
        if name.is_empty() || host.is_empty() {
            return Err(bad("has an empty name or host"));
        }
        if out.iter().any(|m| m.id == id || m.name == name) {
            return Err(bad("repeats an id or a name"));
        }
        out.push(Member {
            id,
            name: name.to_string(),
            peer_addr: format!("{host}:{peer_port}"),
            client_addr: format!("{host}:{client_port}"),
            suffrage: Suffrage::Voter,
        });
    }
    Ok(out)
}

/// Formats members in the syntax `parse_initial_members` reads.
pub fn format_initial_members(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| {
            let (host, peer_port) = m.peer_addr.rsplit_once(':').unwrap_or((&m.peer_addr, ""));
            let client_port = m.client_addr.rsplit_once(':').map_or("", |(_, p)| p);
            format!("{}={}@{host}:{peer_port}/{client_port}", m.id, m.name)
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_members_round_trip() {
        let s = "1=demo-0@demo-0.demo-peers:7000/7001,2=demo-1@[::1]:7100/7101";
        let m = parse_initial_members(s).unwrap();
        assert_eq!(m[1].peer_addr, "[::1]:7100");
        assert_eq!(m[1].client_addr, "[::1]:7101");
        assert_eq!(format_initial_members(&m), s);
    }

    #[test]
    fn bad_initial_members_say_what_is_wrong() {
        for bad in [
            "x=a@h:1/2",
            "1=a@h:1",
            "1=a@h/2",
            "0=a@h:1/2",
            "1=a@h:1/2,1=b@h:3/4",
        ] {
            let e = parse_initial_members(bad).unwrap_err();
            assert!(e.contains("--initial-members"), "{e}");
        }
    }

    #[test]
    fn ids_come_from_statefulset_ordinals() {
        assert_eq!(id_from_name("demo-0"), Some(1));
        assert_eq!(id_from_name("my-cluster-12"), Some(13));
        assert_eq!(id_from_name("demo"), None);
    }

    #[test]
    fn ticks_keep_the_requested_timeouts() {
        assert_eq!(tick_for(&[150, 300, 50]), 10);
        assert_eq!(tick_for(&[100, 250, 25]), 5);
        assert_eq!(tick_for(&[151, 300, 50]), 1);
    }
}
