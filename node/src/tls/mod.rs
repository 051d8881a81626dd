//! TLS for the peer, client and admin ports.
//!
//! Members talk mutual TLS on the peer port: each presents its member
//! certificate and accepts only certificates signed by the cluster's peer CA
//! (`--peer-trusted-ca-file`). The client port serves TLS with its own
//! certificate and, with `--client-cert-auth`, accepts only clients whose
//! certificate the client CA signed. The admin port, where the cluster is
//! changed, serves the peer port's mutual TLS when there is one.
//!
//! Certificates and keys are read from files and read again every
//! `--tls-reload-interval-ms`: Kubernetes rotates a mounted Secret by swapping
//! a symlink, so a changed file is noticed by its contents, not by an inotify
//! event. New connections use the new certificates; a broken file keeps the
//! last good configuration and is logged. There is no plaintext fallback: a
//! TLS port refuses plaintext connections (a plaintext gRPC client gets an
//! `UNAVAILABLE` answer that says so), and a TLS client fails on a plaintext
//! port.

pub mod client;
pub mod conn;
pub mod explain;
pub mod pem;
pub mod reload;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

pub use client::ClientTls;
pub use server::ServerTls;

/// The protocol name both sides agree on: gRPC is HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider kuberaft uses everywhere (ring, already built for kube).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS flags of a member, modelled on etcd's names.
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// The member's certificate (PEM, leaf first) for the peer port; it is
    /// both the server certificate and the client certificate members
    /// present to each other. Turns on mutual TLS between members.
    #[arg(long, env = "KUBERAFT_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,

    /// The private key (PEM) of --peer-cert-file.
    #[arg(long, env = "KUBERAFT_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,

    /// The cluster's peer CA (PEM): only members whose certificate it signed
    /// may talk to this member, and this member only talks to such members.
    #[arg(long, env = "KUBERAFT_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// The certificate (PEM) the client port serves. Turns on TLS for
    /// clients (raftctl, the operator, members forwarding to the leader).
    #[arg(long, env = "KUBERAFT_CLIENT_CERT_FILE")]
    pub client_cert_file: Option<PathBuf>,

    /// The private key (PEM) of --client-cert-file.
    #[arg(long, env = "KUBERAFT_CLIENT_KEY_FILE")]
    pub client_key_file: Option<PathBuf>,

    /// The CA (PEM) that signs client certificates (with --client-cert-auth)
    /// and the other members' client-port certificates (a follower forwards
    /// to the leader's client port). Defaults to --peer-trusted-ca-file.
    #[arg(long, env = "KUBERAFT_CLIENT_TRUSTED_CA_FILE")]
    pub client_trusted_ca_file: Option<PathBuf>,

    /// Accept only clients that present a certificate signed by
    /// --client-trusted-ca-file.
    #[arg(long, env = "KUBERAFT_CLIENT_CERT_AUTH")]
    pub client_cert_auth: bool,

    /// How often the certificate, key and CA files are read again to pick
    /// up a rotation.
    #[arg(long, env = "KUBERAFT_TLS_RELOAD_INTERVAL_MS", default_value_t = 5000)]
    pub tls_reload_interval_ms: u64,
}

/// A certificate, its key and the CA to verify the other side with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

/// The validated TLS settings of a member.
#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    /// Mutual TLS between members (the CA is always set).
    pub peer: Option<TlsFiles>,
    /// TLS on the client port (the CA is set when clients are verified or
    /// the client port's certificates have their own CA).
    pub client: Option<TlsFiles>,
    pub client_cert_auth: bool,
    pub reload_interval: Duration,
}

impl TlsArgs {
    /// Checks which flags go together; one line naming the flags on error.
    pub fn validate(&self) -> Result<TlsConfig, String> {
        let peer = match (
            &self.peer_cert_file,
            &self.peer_key_file,
            &self.peer_trusted_ca_file,
        ) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: Some(ca.clone()),
            }),
            _ => {
                return Err(
                    "peer TLS needs all of --peer-cert-file, --peer-key-file and --peer-trusted-ca-file (members verify each other: mutual TLS)"
                        .into(),
                );
            }
        };
        let client = match (&self.client_cert_file, &self.client_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: self
                    .client_trusted_ca_file
                    .clone()
                    .or_else(|| self.peer_trusted_ca_file.clone()),
            }),
            _ => {
                return Err(
                    "client TLS needs both --client-cert-file and --client-key-file".into(),
                );
            }
        };
        if client.is_none() && (self.client_cert_auth || self.client_trusted_ca_file.is_some()) {
            return Err(
                "--client-cert-auth and --client-trusted-ca-file need TLS on the client port: set --client-cert-file and --client-key-file"
                    .into(),
            );
        }
        if self.client_cert_auth && self.client_trusted_ca_file.is_none() {
            return Err(
                "--client-cert-auth needs --client-trusted-ca-file, the CA that signs client certificates"
                    .into(),
            );
        }
        if let Some(c) = &client
            && c.ca.is_none()
        {
            return Err(
                "client TLS needs --client-trusted-ca-file (or --peer-trusted-ca-file): a follower verifies the leader's client port with it when it forwards a request"
                    .into(),
            );
        }
        if self.tls_reload_interval_ms == 0 {
            return Err("--tls-reload-interval-ms must be above 0".into());
        }
        Ok(TlsConfig {
            peer,
            client,
            client_cert_auth: self.client_cert_auth,
            reload_interval: Duration::from_millis(self.tls_reload_interval_ms),
        })
    }
}

/// The live TLS state of a running member: server configurations for the
/// two ports and client configurations for outgoing connections, each kept
/// fresh by a background reload task.
#[derive(Clone, Default)]
pub struct MemberTls {
    pub peer_server: Option<ServerTls>,
    pub peer_client: Option<ClientTls>,
    pub client_server: Option<ServerTls>,
    /// For forwarding to the leader's client port.
    pub forward_client: Option<ClientTls>,
}

impl MemberTls {
    /// Loads every configured file once (an error names the file and what
    /// is wrong with it) and starts the reload tasks. Needs a tokio runtime.
    pub fn start(cfg: &TlsConfig) -> Result<MemberTls, String> {
        let mut tls = MemberTls::default();
        if let Some(files) = &cfg.peer {
            let server = ServerTls::load("peer", files.clone(), true)?;
            server.watch(cfg.reload_interval);
            let client = ClientTls::load("peer", files.clone())?;
            client.watch(cfg.reload_interval);
            tls.peer_server = Some(server);
            tls.peer_client = Some(client);
        }
        if let Some(files) = &cfg.client {
            let server = ServerTls::load("client", files.clone(), cfg.client_cert_auth)?;
            server.watch(cfg.reload_interval);
            let client = ClientTls::load("client", files.clone())?;
            client.watch(cfg.reload_interval);
            tls.client_server = Some(server);
            tls.forward_client = Some(client);
        }
        Ok(tls)
    }

    /// What the admin port serves: with peer TLS, the peer port's mutual TLS, so only holders
    /// of a certificate the peer CA signed (the members, the operator) may change the cluster;
    /// else the client port's TLS, if any.
    pub fn admin_server(&self) -> Option<ServerTls> {
        self.peer_server
            .clone()
            .or_else(|| self.client_server.clone())
    }

    /// How this member dials another member's admin port (see [`MemberTls::admin_server`]).
    pub fn admin_client(&self) -> Option<ClientTls> {
        self.peer_client
            .clone()
            .or_else(|| self.forward_client.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut TlsArgs)) -> TlsArgs {
        let mut a = TlsArgs {
            tls_reload_interval_ms: 5000,
            ..TlsArgs::default()
        };
        f(&mut a);
        a
    }

    #[test]
    fn no_flags_is_plaintext() {
        let c = args(|_| {}).validate().unwrap();
        assert!(c.peer.is_none() && c.client.is_none());
    }

    #[test]
    fn peer_tls_is_all_three_files_or_none() {
        let e = args(|a| a.peer_cert_file = Some("c".into()))
            .validate()
            .unwrap_err();
        assert!(e.contains("--peer-trusted-ca-file"), "{e}");
        let c = args(|a| {
            a.peer_cert_file = Some("c".into());
            a.peer_key_file = Some("k".into());
            a.peer_trusted_ca_file = Some("ca".into());
        })
        .validate()
        .unwrap();
        assert_eq!(c.peer.unwrap().ca, Some("ca".into()));
    }

    #[test]
    fn client_cert_auth_needs_a_client_ca() {
        let e = args(|a| {
            a.client_cert_file = Some("c".into());
            a.client_key_file = Some("k".into());
            a.client_cert_auth = true;
        })
        .validate()
        .unwrap_err();
        assert!(e.contains("--client-trusted-ca-file"), "{e}");
        let e = args(|a| a.client_cert_auth = true).validate().unwrap_err();
        assert!(e.contains("--client-cert-file"), "{e}");
    }

    #[test]
    fn client_port_ca_defaults_to_the_peer_ca() {
        let c = args(|a| {
            a.peer_cert_file = Some("c".into());
            a.peer_key_file = Some("k".into());
            a.peer_trusted_ca_file = Some("ca".into());
            a.client_cert_file = Some("c".into());
            a.client_key_file = Some("k".into());
        })
        .validate()
        .unwrap();
        assert_eq!(c.client.unwrap().ca, Some("ca".into()));
    }
}
