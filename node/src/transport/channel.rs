//! gRPC channels to other members (and to the leader, for forwarded client
//! requests), with the timeouts that keep a vanished peer from hanging us,
//! and TLS when the member (or raftctl) is configured with it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::gather::Gathered;
use super::resolve::resolve;
use crate::tls::ClientTls;
use crate::tls::conn::Conn;

/// How long to wait for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The same TLS failure to the same address is logged at warn level at most
/// this often.
const TLS_FAILURE_LOG_EVERY: Duration = Duration::from_secs(30);

/// A lazily connected channel to `addr` (`host:port`). Every (re)connection
/// resolves the name again. Writes are gathered ([`Gathered`]). HTTP/2 keep-alive notices a peer that vanished
/// without closing the connection (a killed container often sends no reset).
pub fn lazy_channel(addr: &str) -> Result<Channel, String> {
    lazy_channel_with(addr, CONNECT_TIMEOUT, None)
}

/// [`lazy_channel`] with another connect timeout (raftctl's `--dial-timeout`).
pub fn lazy_channel_with_connect_timeout(
    addr: &str,
    connect_timeout: Duration,
) -> Result<Channel, String> {
    lazy_channel_with(addr, connect_timeout, None)
}

/// [`lazy_channel`] with a connect timeout and, when `tls` is set, a TLS
/// handshake on every connection with the configuration current at that
/// moment (so a rotated certificate is used from the next connection on).
pub fn lazy_channel_with(
    addr: &str,
    connect_timeout: Duration,
    tls: Option<ClientTls>,
) -> Result<Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20);
    let target = addr.to_string();
    let last_failure: Arc<Mutex<Option<(String, Instant)>>> = Arc::default();
    let connector = tower::service_fn(move |_: Uri| {
        let target = target.clone();
        let tls = tls.clone();
        let last_failure = last_failure.clone();
        async move {
            let addrs = resolve(&target).await.map_err(std::io::Error::other)?;
            let mut last = None;
            let mut stream = None;
            for a in addrs {
                match TcpStream::connect(a).await {
                    Ok(s) => {
                        s.set_nodelay(true)?;
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let Some(tcp) = stream else {
                return Err(last
                    .unwrap_or_else(|| std::io::Error::other(format!("no address for {target}"))));
            };
            let Some(tls) = tls else {
                return Ok::<_, std::io::Error>(TokioIo::new(Gathered::new(Conn::Plain(tcp))));
            };
            let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
            match tls.connect(tcp, host).await {
                Ok(conn) => Ok(TokioIo::new(Gathered::new(conn))),
                Err(e) => {
                    log_tls_failure(&last_failure, &target, &e);
                    Err(e)
                }
            }
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// A failed handshake is a configuration problem a person must fix: say so
/// at warn level, but not on every retry.
fn log_tls_failure(last: &Mutex<Option<(String, Instant)>>, target: &str, e: &std::io::Error) {
    let message = e.to_string();
    let now = Instant::now();
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    let loud = match &*last {
        Some((m, t)) => *m != message || now.duration_since(*t) >= TLS_FAILURE_LOG_EVERY,
        None => true,
    };
    if loud {
        *last = Some((message.clone(), now));
        tracing::warn!(%target, "cannot connect: {message}");
    } else {
        tracing::debug!(%target, "cannot connect: {message}");
    }
}
