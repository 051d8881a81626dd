//! The serving side: a TLS acceptor in front of tonic's servers.
//!
//! Handshakes run concurrently, one task per connection, so a slow or
//! hostile client cannot hold up the accept loop; only finished handshakes
//! reach the gRPC server. A connection that does not start with a TLS record
//! is refused, never served in plaintext.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use futures::StreamExt;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::server::TcpIncoming;

use super::conn::Conn;
use super::pem::{self, CertSummary, Flags};
use super::reload::Reloading;
use super::{ALPN_H2, TlsFiles, explain};
use crate::transport::gather::Gathered;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The same refusal from the same address is logged at warn level at most
/// this often (a misconfigured peer retries every second).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(30);

/// When each (address, reason) refusal was last logged at warn level.
type Refusals = HashMap<(Option<IpAddr>, String), Instant>;

/// The TLS configuration of one port (`peer` or `client`), reloaded from its
/// files.
#[derive(Clone)]
pub struct ServerTls {
    port: &'static str,
    config: Reloading<ServerConfig>,
    refusals: Arc<Mutex<Refusals>>,
}

impl ServerTls {
    /// Loads the certificate and key (and, when `verify_clients`, the CA
    /// that must have signed every client's certificate).
    pub fn load(
        port: &'static str,
        files: TlsFiles,
        verify_clients: bool,
    ) -> Result<ServerTls, String> {
        let flags = Flags::for_port(port);
        let mut list = vec![
            (files.cert.clone(), flags.cert),
            (files.key.clone(), flags.key),
        ];
        if verify_clients {
            let ca = files
                .ca
                .clone()
                .ok_or_else(|| format!("verifying {port} clients needs {}", flags.ca))?;
            list.push((ca, flags.ca));
        }
        let what = format!("{port} port");
        let config = Reloading::new(what, list, move |contents| {
            build(port, &files, flags, verify_clients, contents)
        })?;
        Ok(ServerTls {
            port,
            config,
            refusals: Arc::default(),
        })
    }

    pub fn watch(&self, interval: Duration) {
        self.config.watch(interval);
    }

    /// Reads the files now (tests; the watch task does this periodically).
    pub fn reload(&self) -> bool {
        self.config.reload()
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.current()
    }

    /// Logs a refused connection, at warn level once per address and reason
    /// per [`REFUSAL_LOG_EVERY`].
    fn refused(&self, remote: Option<SocketAddr>, why: String) {
        let key = (remote.map(|a| a.ip()), why.clone());
        let now = Instant::now();
        let loud = {
            let mut seen = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() > 1024 {
                seen.clear();
            }
            match seen.get(&key) {
                Some(t) if now.duration_since(*t) < REFUSAL_LOG_EVERY => false,
                _ => {
                    seen.insert(key, now);
                    true
                }
            }
        };
        let remote = remote.map_or_else(|| "?".to_string(), |a| a.to_string());
        if loud {
            tracing::warn!(port = self.port, %remote, "refused a connection: {why}");
        } else {
            tracing::debug!(port = self.port, %remote, "refused a connection: {why}");
        }
    }
}

fn build(
    port: &'static str,
    files: &TlsFiles,
    flags: Flags,
    verify_clients: bool,
    contents: &[Vec<u8>],
) -> Result<(ServerConfig, String), String> {
    let (cert, key) = (&contents[0], &contents[1]);
    let certified = pem::certified_key(cert, key, &files.cert, &files.key, flags)?;
    let provider = super::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let builder = if verify_clients {
        let ca_path = files.ca.as_deref().unwrap_or(files.cert.as_path());
        let roots = pem::roots(&contents[2], ca_path, flags.ca)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| format!("{} {}: {e}", flags.ca, ca_path.display()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let leaf = certified.cert.first().and_then(CertSummary::of);
    let mut config = builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
        Arc::unwrap_or_clone(certified),
    )));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    let description = describe(port, &files.cert, leaf.as_ref(), verify_clients);
    Ok((config, description))
}

/// "peer certificate /etc/tls/tls.crt (CN=…, serial …, valid until …)", with
/// a warning when it is outside its validity.
pub(crate) fn describe(
    port: &str,
    path: &std::path::Path,
    leaf: Option<&CertSummary>,
    verify_clients: bool,
) -> String {
    let auth = if verify_clients {
        ", clients must present a certificate"
    } else {
        ""
    };
    match leaf {
        Some(s) => {
            if s.expired() {
                tracing::warn!(port, path = %path.display(), "the {port} certificate has EXPIRED; the other side will refuse it: renew it");
            } else if s.not_yet_valid() {
                tracing::warn!(port, path = %path.display(), "the {port} certificate is not valid yet; check the clock");
            }
            format!(
                "{port} certificate {} (subject {:?}, serial {}, valid until unix {}){auth}",
                path.display(),
                s.subject,
                s.serial,
                s.not_after
            )
        }
        None => format!("{port} certificate {}{auth}", path.display()),
    }
}

pub type Incoming = Pin<Box<dyn Stream<Item = Result<Gathered<Conn>, io::Error>> + Send>>;

/// Accepted connections of `listener`, with TCP_NODELAY (without it, an
/// answer written in two segments waits for the client's delayed ACK) and
/// keep-alive; through a TLS handshake when `tls` is set. Writes are
/// gathered ([`Gathered`]).
pub fn incoming(listener: TcpListener, tls: Option<ServerTls>) -> Incoming {
    let tcp = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)));
    let Some(tls) = tls else {
        return Box::pin(tcp.map(|r| r.map(|s| Gathered::new(Conn::Plain(s)))));
    };
    let (tx, rx) = mpsc::channel::<Result<Gathered<Conn>, io::Error>>(64);
    tokio::spawn(async move {
        let mut tcp = tcp;
        loop {
            let next = tokio::select! {
                next = tcp.next() => next,
                _ = tx.closed() => return,
            };
            let stream = match next {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    tracing::debug!(port = tls.port, error = %e, "accept failed");
                    continue;
                }
                None => return,
            };
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                if let Some(conn) = accept(&tls, stream).await {
                    let _ = tx.send(Ok(Gathered::new(conn))).await;
                }
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Runs the server side of the handshake; `None` (and a log line saying
/// why) when the connection is refused.
async fn accept(tls: &ServerTls, stream: TcpStream) -> Option<Conn> {
    let remote = stream.peer_addr().ok();
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    // Every TLS connection starts with a handshake record (content type 22).
    if first[0] != 0x16 {
        tls.refused(
            remote,
            format!(
                "it speaks plaintext, but the {} port requires TLS; configure the client with TLS (raftctl: https:// endpoints and --cacert)",
                tls.port
            ),
        );
        refuse_plaintext(stream, tls.port).await;
        return None;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(Conn::Tls(Box::new(s.into()))),
        Ok(Err(e)) => {
            tls.refused(remote, explain::accept_error(&e, tls.port));
            None
        }
        Err(_) => {
            tls.refused(remote, "the TLS handshake did not finish in time".into());
            None
        }
    }
}

/// Answers a plaintext gRPC client on a TLS port with an `UNAVAILABLE`
/// status that says what is wrong, instead of a bare connection reset; then
/// closes. Nothing is served.
async fn refuse_plaintext(stream: TcpStream, port: &'static str) {
    let message = format!(
        "this kuberaft {port} port requires TLS; this client connected in plaintext (raftctl: use https:// endpoints with --cacert)"
    );
    let service = hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
        let message = message.clone();
        async move {
            http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("grpc-status", "14")
                .header("grpc-message", message)
                .body(String::new())
        }
    });
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}
