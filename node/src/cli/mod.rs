//! raftctl, the command-line client in the etcdctl mould.
//!
//! - [`args`]: the command line.
//! - [`client`]: which endpoint to ask; [`error`]: what went wrong, in one line.
//! - [`kv`], [`admin`], [`watch`]: the commands that talk to a cluster.
//! - [`cluster`], [`live`], [`dev`]: a local cluster of `kuberaft-node`
//!   processes and its live view.
//! - [`bench`], [`failover`], [`report`]: the benchmarks.

pub mod admin;
pub mod admin_port;
pub mod args;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod dev;
pub mod dev_ui;
pub mod encoding;
pub mod error;
pub mod failover;
pub mod kv;
pub mod live;
pub mod members;
pub mod output;
pub mod report;
pub mod terminal;
pub mod watch;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, OutputFormat};
use client::Client;
use encoding::Encoding;
use error::CliError;

/// What every command that talks to a cluster needs.
pub struct Ctx {
    pub client: Client,
    /// `--admin-endpoints` (empty: ask the members, see admin_port.rs).
    pub admin_endpoints: Vec<String>,
    pub format: OutputFormat,
    pub enc: Encoding,
}

/// Parses the command line, runs the command, prints an error as one line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // SIGPIPE stays ignored (Rust's default): a closed stdout is handled
    // where output is written (`output::write_stdout`), and a socket closed
    // by a server must come back as an error to report, not kill raftctl
    // without a word.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("raftctl: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_ERROR);
        }
    };
    let result = runtime.block_on(run(cli));
    // Leave nothing running behind (watch streams, bench clients).
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftctl: {}", e.message);
            ExitCode::from(e.exit_code)
        }
    }
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let g = &cli.global;
    client::configure_tls(g)?;
    let ctx = || -> Result<Ctx, CliError> {
        Ok(Ctx {
            client: Client::new(&g.endpoints, g.dial_timeout, g.command_timeout)?,
            admin_endpoints: g.admin_endpoints.clone(),
            format: g.format(),
            enc: Encoding::from_hex_flag(g.hex),
        })
    };
    match &cli.command {
        Command::Put { key, value } => kv::put(&ctx()?, key, value).await,
        Command::Get { key, serializable } => kv::get(&ctx()?, key, *serializable).await,
        Command::Del { key } => kv::del(&ctx()?, key).await,
        Command::Scan {
            prefix,
            limit,
            start_after,
            serializable,
            count_only,
        } => {
            kv::scan(
                &ctx()?,
                kv::ScanOptions {
                    prefix,
                    limit: *limit,
                    start_after: start_after.as_deref(),
                    serializable: *serializable,
                    count_only: *count_only,
                },
            )
            .await
        }
        Command::Cas {
            key,
            new_value,
            expect,
            expect_absent: _,
        } => kv::cas(&ctx()?, key, new_value, expect.as_deref()).await,
        Command::Status { only_endpoints } => admin::status(&ctx()?, *only_endpoints).await,
        Command::TransferLeader { to } => admin::transfer_leader(&ctx()?, *to).await,
        Command::Member(m) => admin::member(&ctx()?, m).await,
        Command::Snapshot { all } => admin::snapshot(&ctx()?, *all).await,
        Command::Watch { all, interval_ms } => watch::run(&ctx()?, *all, *interval_ms).await,
        Command::Dev(a) => dev::run(a, g).await,
        Command::Bench(a) => bench::run(a, g).await,
        Command::FailoverBench(a) => failover::run(a, g).await,
    }
}
