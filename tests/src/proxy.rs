//! A TCP proxy that can hold traffic: what a stalled connection looks like to both of its ends
//! (a congested or half-partitioned link whose packets are retransmitted and arrive late, in
//! order). While held, bytes already sent wait in the proxy and the sockets; on release they
//! arrive as they were sent.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    /// Where to connect instead of the target (`127.0.0.1:<port>`).
    pub addr: String,
    held: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction, waiting while the link is held.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut held: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if held.wait_for(|h| !h).await.is_err() {
            return;
        }
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            let _ = to.shutdown().await;
            return;
        }
    }
}

impl Proxy {
    /// Listens on 127.0.0.1:`port` and relays each connection to `target`.
    pub async fn start(port: u16, target: String) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("proxy cannot listen on {port}: {e}"));
        let (held, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                pumps.spawn(pump(cr, sw, rx.clone()));
                pumps.spawn(pump(sr, cw, rx.clone()));
            }
        });
        Proxy {
            addr: format!("127.0.0.1:{port}"),
            held,
            task,
        }
    }

    /// Stops delivering, both ways, until [`release`](Self::release).
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    pub fn release(&self) {
        self.held.send_replace(false);
    }
}
