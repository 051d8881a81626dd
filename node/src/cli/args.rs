//! What raftctl accepts on its command line: every subcommand, its flags and
//! their environment variables, in the etcdctl mould.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "raftctl",
    version,
    about = "Talk to a kuberaft cluster: keys and values, status, membership; run a local cluster; benchmark it",
    after_help = "Exit status: 0 success, 1 error, 2 bad usage or a request the cluster refused as invalid, \
3 the answer is \"no\" (get: key not found; cas: the compare failed).\n\n\
Start here:  raftctl dev        (a local 3-member cluster with a live view)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Client addresses of members (host:port, comma-separated). Any member
    /// accepts every request (followers forward to the leader); the next
    /// endpoint is tried only when one cannot be reached.
    #[arg(
        long,
        global = true,
        env = "KUBERAFT_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001"
    )]
    pub endpoints: Vec<String>,

    /// Admin addresses of members (host:port, comma-separated), for the
    /// commands that change the cluster (member, transfer-leader, snapshot).
    /// By default each endpoint is asked where its admin port is.
    #[arg(
        long,
        global = true,
        env = "KUBERAFT_ADMIN_ENDPOINTS",
        value_delimiter = ','
    )]
    pub admin_endpoints: Vec<String>,

    /// How long to wait for a connection to one endpoint (e.g. 500ms, 2s).
    #[arg(long, global = true, env = "KUBERAFT_DIAL_TIMEOUT", value_parser = parse_duration, default_value = "2s")]
    pub dial_timeout: Duration,

    /// How long one command may take in all, over every endpoint it tries.
    #[arg(long, global = true, env = "KUBERAFT_COMMAND_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub command_timeout: Duration,

    /// Use TLS and trust this CA (PEM) for the members' certificates; implied
    /// by https:// endpoints, which need it.
    #[arg(long, global = true, env = "KUBERAFT_CACERT")]
    pub cacert: Option<std::path::PathBuf>,

    /// Client certificate (PEM) to present, for members started with
    /// --client-cert-auth; needs --key.
    #[arg(long = "cert", id = "tls_cert", global = true, env = "KUBERAFT_CERT")]
    pub cert: Option<std::path::PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(long = "key", id = "tls_key", global = true, env = "KUBERAFT_KEY")]
    pub key: Option<std::path::PathBuf>,

    /// Output format: a table for people, JSON for scripts.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Same as `-o json`.
    #[arg(long, global = true)]
    pub json: bool,

    /// Keys and values are hex on the command line and in the output
    /// (for binary data); otherwise they are UTF-8 text.
    #[arg(long, global = true)]
    pub hex: bool,
}

impl GlobalArgs {
    pub fn format(&self) -> OutputFormat {
        if self.json {
            OutputFormat::Json
        } else {
            self.output
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Set a key to a value (answers once the write is committed).
    Put {
        key: String,
        /// The value; `-` reads it from standard input.
        value: String,
    },
    /// Read a key (linearizable unless --serializable).
    Get {
        key: String,
        /// Answer from the member's own state machine: fast, possibly stale.
        #[arg(long)]
        serializable: bool,
    },
    /// Remove a key (not an error if it is absent).
    #[command(visible_alias = "delete")]
    Del { key: String },
    /// List keys with a prefix, in byte order.
    Scan {
        /// Only keys starting with this (all keys when omitted).
        #[arg(default_value = "")]
        prefix: String,
        /// At most this many keys (1 to 10,000).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Start after this key (to page through a long listing).
        #[arg(long)]
        start_after: Option<String>,
        /// Answer from the member's own state machine: fast, possibly stale.
        #[arg(long)]
        serializable: bool,
        /// Only count the keys (pages through all of them).
        #[arg(long)]
        count_only: bool,
    },
    /// Compare and swap: set KEY to NEW_VALUE only if it holds --expect
    /// (or, with --expect-absent, does not exist).
    Cas {
        key: String,
        new_value: String,
        /// The value the key must hold now.
        #[arg(
            long,
            required_unless_present = "expect_absent",
            conflicts_with = "expect_absent"
        )]
        expect: Option<String>,
        /// The key must not exist now.
        #[arg(long)]
        expect_absent: bool,
    },
    /// Every member's role, term, leader and indexes; the leader's view of
    /// replication (match index per member).
    Status {
        /// Ask only the --endpoints, not the other members they list.
        #[arg(long)]
        only_endpoints: bool,
    },
    /// Follow every member's status stream and print each change of role,
    /// term, leader or reachability.
    Watch {
        /// Also print commit index changes and periodic updates.
        #[arg(long)]
        all: bool,
        /// How often members send a status even when nothing changed (ms).
        #[arg(long, default_value_t = 1000)]
        interval_ms: u32,
    },
    /// Hand leadership to a member (or the most caught-up voter).
    TransferLeader {
        /// Member id of the new leader; omit for the most caught-up voter.
        #[arg(long)]
        to: Option<u64>,
    },
    /// Membership: list, add, promote, remove.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Snapshot a member's state machine and compact its log.
    Snapshot {
        /// Snapshot every member the endpoints reach (at its admin port), not just the first.
        #[arg(long)]
        all: bool,
    },
    /// Run a local cluster of kuberaft-node processes with a live view.
    Dev(DevArgs),
    /// Closed-loop load: C clients each send one request at a time.
    Bench(BenchArgs),
    /// Kill the leader of a local cluster N times while writing; measure the gap.
    FailoverBench(FailoverArgs),
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// The members of the cluster and their suffrage.
    List,
    /// Add a member: as a learner, then (unless --learner-only) as a voter
    /// once it has caught up. Start its kuberaft-node without --initial-members.
    Add {
        /// The new member's id (unused by any member, ever).
        id: u64,
        /// Its name, e.g. demo-3.
        name: String,
        /// host:port for Raft traffic.
        #[arg(long)]
        peer_addr: String,
        /// host:port for clients.
        #[arg(long)]
        client_addr: String,
        /// Stop after adding the learner; promote it later.
        #[arg(long)]
        learner_only: bool,
    },
    /// Make a caught-up learner a voter.
    Promote { id: u64 },
    /// Remove a member (removing the leader first moves leadership away).
    Remove { id: u64 },
}

/// The local cluster raftctl dev and failover-bench run.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Number of members [default: 3, or what --data-dir was created with].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=9))]
    pub nodes: Option<u16>,

    /// Where members keep their data (kept on exit, so a restart resumes);
    /// default: a fresh temporary directory, removed on exit.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// First port: member i (from 0) listens for peers on BASE+4i, clients on
    /// BASE+4i+1, HTTP (metrics, health) on BASE+4i+2 and admin calls on
    /// BASE+4i+3
    /// [default: 7100, or what --data-dir was created with].
    #[arg(long)]
    pub base_port: Option<u16>,

    /// The kuberaft-node executable; default: next to raftctl, else on PATH.
    #[arg(long, env = "KUBERAFT_NODE_BINARY")]
    pub node_binary: Option<PathBuf>,

    /// Passed to every member: lower bound of the randomized election
    /// timeout (ms) [node default: 150].
    #[arg(long)]
    pub election_timeout_min_ms: Option<u32>,
    /// Passed to every member: upper bound of the election timeout (ms)
    /// [node default: 300].
    #[arg(long)]
    pub election_timeout_max_ms: Option<u32>,
    /// Passed to every member: how often a leader sends heartbeats (ms)
    /// [node default: 50].
    #[arg(long)]
    pub heartbeat_interval_ms: Option<u32>,

    /// Ten times slower timeouts (1.5-3 s elections, 500 ms heartbeats), to
    /// watch candidates and votes happen.
    #[arg(long, conflicts_with_all = ["election_timeout_min_ms", "election_timeout_max_ms", "heartbeat_interval_ms"])]
    pub slow: bool,

    /// Start the members with --ui-actions (set by `raftctl dev --ui`).
    #[arg(skip)]
    pub ui_actions: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Serve a live web view of the cluster, with buttons to put values,
    /// kill, restart, pause or cut off members; prints the address to open.
    #[arg(long)]
    pub ui: bool,

    /// Where the web view listens (with --ui).
    #[arg(long, default_value = "127.0.0.1:7090", requires = "ui")]
    pub ui_listen: std::net::SocketAddr,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// How long to measure.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// Load before measuring, not counted.
    #[arg(long, default_value_t = 1)]
    pub warmup_seconds: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Number of distinct keys written or read.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Linearizable reads instead of writes (the keys are written first).
    #[arg(long)]
    pub read: bool,
    /// With --read: serializable reads, served by each member locally.
    #[arg(long, requires = "read")]
    pub serializable: bool,
    /// Where clients send: the leader, spread over every endpoint, or the first endpoint.
    #[arg(long, value_enum, default_value_t = Target::Leader)]
    pub target: Target,
    /// HTTP/2 connections per endpoint used (clients share them).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub conns: u32,
    /// Each client its own connection instead (client i to endpoint i mod N), as separate client
    /// processes have behind a Kubernetes Service and as ../shared/tools/etcd-bench's clients
    /// have; --conns is then unused.
    #[arg(long, conflicts_with = "conns")]
    pub conn_per_client: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Leader,
    Spread,
    First,
}

#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    /// How many times to stop the leader.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rounds: u32,
    /// SIGTERM (the leader hands over first) instead of SIGKILL.
    #[arg(long)]
    pub graceful: bool,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub writers: u32,
    /// Pause with a healthy cluster between rounds (ms).
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Parses `250ms`, `2s`, `1.5s`, `1m`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 500ms, 2s or 1m"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "{s:?} has an unknown unit {other:?}; use ms, s, m or h"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 {
        return Err(format!(
            "{s:?} is out of range; give a duration above 0 and at most a day"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("raftctl").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_read_like_etcdctl() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "fast", "5 parsecs", "0s", "-1s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(
                e.contains("500ms") || e.contains("unit") || e.contains("range"),
                "{e}"
            );
        }
    }

    #[test]
    fn tls_flags_do_not_clash_with_a_key_argument() {
        let cli = parse(&[
            "get", "k", "--cacert", "ca.crt", "--cert", "c.crt", "--key", "c.key",
        ])
        .unwrap();
        assert_eq!(
            cli.global.key.as_deref(),
            Some(std::path::Path::new("c.key"))
        );
        assert_eq!(
            cli.global.cacert.as_deref(),
            Some(std::path::Path::new("ca.crt"))
        );
    }

    #[test]
    fn endpoints_are_a_comma_list_and_flags_go_anywhere() {
        let cli = parse(&["get", "k", "--endpoints", "a:1,b:2", "--json"]).unwrap();
        assert_eq!(cli.global.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(cli.global.format(), OutputFormat::Json);
        let cli = parse(&["-o", "json", "status"]).unwrap();
        assert_eq!(cli.global.format(), OutputFormat::Json);
    }

    #[test]
    fn cas_needs_an_expectation() {
        let e = parse(&["cas", "k", "v"]).unwrap_err();
        assert!(e.to_string().contains("--expect"), "{e}");
        let e = parse(&["cas", "k", "v", "--expect", "a", "--expect-absent"]).unwrap_err();
        assert!(e.to_string().contains("cannot be used with"), "{e}");
        assert!(parse(&["cas", "k", "v", "--expect-absent"]).is_ok());
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_named() {
        let e = parse(&["get", "k", "--dial-timeout", "soon"]).unwrap_err();
        assert!(e.to_string().contains("--dial-timeout"), "{e}");
        let e = parse(&["bench", "--clients", "0"]).unwrap_err();
        assert!(e.to_string().contains("--clients"), "{e}");
        let e = parse(&["dev", "--nodes", "10"]).unwrap_err();
        assert!(e.to_string().contains("--nodes"), "{e}");
        let e = parse(&["dev", "--slow", "--heartbeat-interval-ms", "10"]).unwrap_err();
        assert!(e.to_string().contains("cannot be used with"), "{e}");
        let e = parse(&["bench", "--serializable"]).unwrap_err();
        assert!(e.to_string().contains("--read"), "{e}");
    }

    #[test]
    fn member_add_takes_both_addresses() {
        let cli = parse(&[
            "member",
            "add",
            "4",
            "demo-3",
            "--peer-addr",
            "h:7000",
            "--client-addr",
            "h:7001",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Member(MemberCommand::Add { id: 4, .. })
        ));
        assert!(parse(&["member", "add", "4", "demo-3", "--peer-addr", "h:7000"]).is_err());
    }
}
