//! gRPC channels to other members (and to the leader, for forwarded client
//! requests), with the timeouts that keep a vanished peer from hanging us.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::resolve::resolve;

/// How long to wait for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A lazily connected channel to `addr` (`host:port`). Every (re)connection
/// resolves the name again. HTTP/2 keep-alive notices a peer that vanished
/// without closing the connection (a killed container often sends no reset).
pub fn lazy_channel(addr: &str) -> Result<Channel, String> {
    lazy_channel_with_connect_timeout(addr, CONNECT_TIMEOUT)
}

/// [`lazy_channel`] with another connect timeout (raftctl's `--dial-timeout`).
pub fn lazy_channel_with_connect_timeout(
    addr: &str,
    connect_timeout: Duration,
) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20);
    let target = addr.to_string();
    let connector = tower::service_fn(move |_: Uri| {
        let target = target.clone();
        async move {
            let addrs = resolve(&target).await.map_err(std::io::Error::other)?;
            let mut last = None;
            for a in addrs {
                match TcpStream::connect(a).await {
                    Ok(s) => {
                        s.set_nodelay(true)?;
                        return Ok::<_, std::io::Error>(TokioIo::new(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| std::io::Error::other(format!("no address for {target}"))))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}
