//! Which member to ask. Any member accepts every request (followers forward
//! to the leader), so the endpoints are tried in order and the next one only
//! when one cannot be reached. A write whose connection broke after it was
//! sent is not retried elsewhere: its outcome is unknown.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

use super::args::GlobalArgs;
use super::error::{self, CliError, Effect, Failure};
use crate::tls::ClientTls;
use crate::transport::channel::lazy_channel_with;

/// One member's client address and a lazily connected channel to it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: String,
    pub channel: Channel,
}

/// The endpoints of a command, with its timeouts.
#[derive(Clone, Debug)]
pub struct Client {
    endpoints: Vec<Endpoint>,
    pub dial_timeout: Duration,
    pub command_timeout: Duration,
}

/// A call that did not succeed.
#[derive(Debug)]
pub enum CallError {
    /// A member answered with an error status.
    Answered { endpoint: String, status: Status },
    /// raftctl gave up: nothing reachable, no time left, or a write lost.
    Failed(CliError),
}

impl CallError {
    pub fn into_cli(self, effect: Effect, timeout: Duration) -> CliError {
        match self {
            CallError::Answered { endpoint, status } => {
                error::from_status(&status, &endpoint, effect, timeout)
            }
            CallError::Failed(e) => e,
        }
    }
}

/// How this raftctl process dials members: one setting for all of them,
/// from `--cacert`, `--cert` and `--key` (set once, at start).
static TLS: OnceLock<Option<ClientTls>> = OnceLock::new();
/// Whether TLS is on without a client certificate (`--cert`/`--key`).
static TLS_WITHOUT_CERT: OnceLock<bool> = OnceLock::new();

/// Reads `--cacert`, `--cert` and `--key`; https:// endpoints need
/// `--cacert`, and TLS flags never go with http:// endpoints.
pub fn configure_tls(g: &GlobalArgs) -> Result<(), CliError> {
    let https = g.endpoints.iter().any(|e| e.trim().starts_with("https://"));
    let http = g.endpoints.iter().any(|e| e.trim().starts_with("http://"));
    let tls = match (&g.cacert, &g.cert, &g.key) {
        (None, None, None) if https => {
            return Err(CliError::usage(
                "https:// endpoints need --cacert, the CA that signed the members' certificates",
            ));
        }
        (None, None, None) => None,
        (None, _, _) => {
            return Err(CliError::usage(
                "--cert and --key need --cacert too, the CA that signed the members' certificates",
            ));
        }
        (Some(_), Some(_), None) | (Some(_), None, Some(_)) => {
            return Err(CliError::usage("--cert and --key go together"));
        }
        (Some(_), _, _) if http => {
            return Err(CliError::usage(
                "--cacert means TLS, but an endpoint says http://; use https:// (or no scheme)",
            ));
        }
        (Some(ca), cert, key) => {
            let pair = cert.clone().zip(key.clone());
            let _ = TLS_WITHOUT_CERT.set(pair.is_none());
            Some(ClientTls::from_files(ca, pair).map_err(CliError::usage)?)
        }
    };
    let _ = TLS.set(tls);
    Ok(())
}

/// With TLS 1.3 a server refuses a missing client certificate only after
/// the handshake, by closing the connection; say what is likely missing.
fn hint(why: String) -> String {
    let closed = why.contains("closed") || why.contains("reset");
    if closed && TLS_WITHOUT_CERT.get().copied().unwrap_or(false) {
        format!(
            "{why}; the member may require a client certificate (started with --client-cert-auth): give --cert and --key"
        )
    } else {
        why
    }
}

fn tls() -> Option<ClientTls> {
    TLS.get().cloned().flatten()
}

/// Checks that an endpoint is `host:port` (an `http://` or `https://`
/// prefix is tolerated; TLS is decided by `--cacert`).
pub fn parse_endpoint(s: &str) -> Result<String, CliError> {
    let s = s.trim();
    let s = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s)
        .trim_end_matches('/');
    let bad = || {
        CliError::usage(format!(
            "--endpoints: {s:?} is not host:port (e.g. 127.0.0.1:7001)"
        ))
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// A channel to one member.
pub fn channel(addr: &str, dial_timeout: Duration) -> Result<Channel, CliError> {
    lazy_channel_with(addr, dial_timeout, tls())
        .map_err(|e| CliError::usage(format!("--endpoints: {e}")))
}

/// A request that carries the time left as its gRPC deadline, so the member
/// stops working on it when raftctl stops waiting.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(timeout);
    r
}

impl Client {
    pub fn new(
        addrs: &[String],
        dial_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Client, CliError> {
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for a in addrs.iter().filter(|a| !a.trim().is_empty()) {
            let addr = parse_endpoint(a)?;
            if endpoints.iter().any(|e| e.addr == addr) {
                continue;
            }
            let channel = channel(&addr, dial_timeout)?;
            endpoints.push(Endpoint { addr, channel });
        }
        if endpoints.is_empty() {
            return Err(CliError::usage(
                "--endpoints is empty; give host:port of at least one member",
            ));
        }
        Ok(Client {
            endpoints,
            dial_timeout,
            command_timeout,
        })
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// A client for other addresses with the same timeouts.
    pub fn with_endpoints(&self, addrs: &[String]) -> Result<Client, CliError> {
        Client::new(addrs, self.dial_timeout, self.command_timeout)
    }

    /// Calls `f` on the endpoints in order until one answers. `f` gets the
    /// channel and the time left. Returns the endpoint that answered.
    pub async fn call<T, F, Fut>(&self, effect: Effect, mut f: F) -> Result<(String, T), CallError>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.command_timeout;
        let mut unreachable: Vec<(String, String)> = Vec::new();
        for ep in &self.endpoints {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let status = match tokio::time::timeout(left, f(ep.channel.clone(), left)).await {
                Ok(Ok(v)) => return Ok((ep.addr.clone(), v)),
                Ok(Err(status)) => status,
                Err(_) => {
                    return Err(CallError::Failed(error::deadline_exceeded(
                        effect,
                        self.command_timeout,
                    )));
                }
            };
            match error::classify(&status) {
                Failure::Answered => {
                    return Err(CallError::Answered {
                        endpoint: ep.addr.clone(),
                        status,
                    });
                }
                Failure::Unreachable(why) => unreachable.push((ep.addr.clone(), hint(why))),
                Failure::Lost(why) => match effect {
                    Effect::Read => unreachable.push((ep.addr.clone(), hint(why))),
                    Effect::Write => {
                        return Err(CallError::Failed(error::lost(&ep.addr, &hint(why))));
                    }
                },
            }
        }
        if unreachable.is_empty() {
            return Err(CallError::Failed(error::deadline_exceeded(
                effect,
                self.command_timeout,
            )));
        }
        Err(CallError::Failed(error::all_unreachable(&unreachable)))
    }

    /// [`Client::call`] with errors turned into one line for the user.
    pub async fn call_cli<T, F, Fut>(&self, effect: Effect, f: F) -> Result<(String, T), CliError>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let timeout = self.command_timeout;
        self.call(effect, f)
            .await
            .map_err(|e| e.into_cli(effect, timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuberaft_proto::kv;
    use kuberaft_proto::kv::kv_client::KvClient;
    use kuberaft_proto::kv::kv_server::{Kv, KvServer};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::net::TcpListener;
    use tonic::{Request, Response};

    /// A KV member that answers Get with its own name, or fails as told.
    struct FakeMember {
        name: &'static str,
        fail: Option<Status>,
        calls: Arc<AtomicU32>,
    }

    #[tonic::async_trait]
    impl Kv for FakeMember {
        async fn put(
            &self,
            _: Request<kv::PutRequest>,
        ) -> Result<Response<kv::PutResponse>, Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match &self.fail {
                Some(s) => Err(s.clone()),
                None => Ok(Response::new(kv::PutResponse {
                    header: None,
                    index: 7,
                })),
            }
        }
        async fn get(
            &self,
            _: Request<kv::GetRequest>,
        ) -> Result<Response<kv::GetResponse>, Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(s) = &self.fail {
                return Err(s.clone());
            }
            Ok(Response::new(kv::GetResponse {
                header: None,
                kv: Some(kv::KeyValue {
                    key: b"k".to_vec(),
                    value: self.name.as_bytes().to_vec(),
                    mod_index: 1,
                }),
            }))
        }
        async fn delete(
            &self,
            _: Request<kv::DeleteRequest>,
        ) -> Result<Response<kv::DeleteResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn scan(
            &self,
            _: Request<kv::ScanRequest>,
        ) -> Result<Response<kv::ScanResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn compare_and_swap(
            &self,
            _: Request<kv::CompareAndSwapRequest>,
        ) -> Result<Response<kv::CompareAndSwapResponse>, Status> {
            Err(Status::unimplemented(""))
        }
    }

    async fn serve(member: FakeMember) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(KvServer::new(member))
                .serve_with_incoming(incoming),
        );
        addr
    }

    /// An address where nothing listens (bound, then closed).
    async fn dead_addr() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    }

    fn client(addrs: &[String]) -> Client {
        Client::new(addrs, Duration::from_millis(300), Duration::from_secs(3)).unwrap()
    }

    async fn get(c: &Client) -> Result<(String, String), CallError> {
        c.call(Effect::Read, |ch, left| async move {
            let r = KvClient::new(ch)
                .get(request(kv::GetRequest::default(), left))
                .await?
                .into_inner();
            Ok(String::from_utf8_lossy(&r.kv.unwrap_or_default().value).into_owned())
        })
        .await
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_skipped() {
        let dead = dead_addr().await;
        let calls = Arc::new(AtomicU32::new(0));
        let b = serve(FakeMember {
            name: "b",
            fail: None,
            calls: calls.clone(),
        })
        .await;
        let (answered_by, name) = get(&client(&[dead, b.clone()])).await.unwrap();
        assert_eq!(answered_by, b);
        assert_eq!(name, "b");
    }

    #[tokio::test]
    async fn the_first_reachable_endpoint_answers() {
        let calls_a = Arc::new(AtomicU32::new(0));
        let calls_b = Arc::new(AtomicU32::new(0));
        let a = serve(FakeMember {
            name: "a",
            fail: None,
            calls: calls_a.clone(),
        })
        .await;
        let b = serve(FakeMember {
            name: "b",
            fail: None,
            calls: calls_b.clone(),
        })
        .await;
        let (_, name) = get(&client(&[a, b])).await.unwrap();
        assert_eq!(name, "a");
        assert_eq!(calls_b.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_answer_is_final_even_an_error() {
        // A member that answers "no leader" is reachable: asking the next one
        // would only ask the same cluster again (followers forward).
        let calls_b = Arc::new(AtomicU32::new(0));
        let a = serve(FakeMember {
            name: "a",
            fail: Some(Status::unavailable("no leader")),
            calls: Arc::new(AtomicU32::new(0)),
        })
        .await;
        let b = serve(FakeMember {
            name: "b",
            fail: None,
            calls: calls_b.clone(),
        })
        .await;
        match get(&client(&[a.clone(), b])).await {
            Err(CallError::Answered { endpoint, status }) => {
                assert_eq!(endpoint, a);
                assert_eq!(status.message(), "no leader");
            }
            other => panic!("expected the member's answer, got {other:?}"),
        }
        assert_eq!(calls_b.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn nothing_reachable_names_every_endpoint_and_what_to_do() {
        let (a, b) = (dead_addr().await, dead_addr().await);
        match get(&client(&[a.clone(), b.clone()])).await {
            Err(CallError::Failed(e)) => {
                assert!(e.message.starts_with("cannot reach any endpoint"), "{e}");
                assert!(e.message.contains(&a) && e.message.contains(&b), "{e}");
                assert!(e.message.contains("--endpoints"), "{e}");
            }
            other => panic!("expected unreachable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_slow_cluster_runs_out_the_command_timeout() {
        let c = Client::new(
            &[dead_addr().await],
            Duration::from_millis(300),
            Duration::from_millis(200),
        )
        .unwrap();
        let r = c
            .call(Effect::Write, |_, _| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            .await;
        match r {
            Err(CallError::Failed(e)) => assert!(e.message.contains("outcome unknown"), "{e}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[test]
    fn endpoints_must_be_host_and_port() {
        assert_eq!(parse_endpoint("http://h:1/").unwrap(), "h:1");
        assert_eq!(parse_endpoint("[::1]:7001").unwrap(), "[::1]:7001");
        for bad in ["h", "h:", ":1", "h:99999", "h:0"] {
            let e = parse_endpoint(bad).unwrap_err();
            assert!(e.message.contains("host:port"), "{e}");
        }
    }
}
