//! A real API server for tests, in the envtest convention: `KUBEBUILDER_ASSETS` names a folder
//! holding `kube-apiserver` and `etcd`. Both run on loopback ports in a temporary folder and are
//! killed when the [`TestApiServer`] is dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

const TOKEN: &str = "kuberaft-envtest-token";

pub struct TestApiServer {
    pub client: Client,
    /// A kubeconfig file for processes (such as the operator binary) to use.
    pub kubeconfig: PathBuf,
    processes: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        for p in self.processes.iter_mut().rev() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// The folder with the binaries, or why this tier cannot run.
pub fn assets() -> Result<PathBuf, String> {
    let dir = std::env::var_os("KUBEBUILDER_ASSETS")
        .map(PathBuf::from)
        .ok_or(
            "KUBEBUILDER_ASSETS is not set (point it at a folder with kube-apiserver and etcd)",
        )?;
    for binary in ["kube-apiserver", "etcd"] {
        if !dir.join(binary).is_file() {
            return Err(format!(
                "KUBEBUILDER_ASSETS={} has no {binary}",
                dir.display()
            ));
        }
    }
    Ok(dir)
}

/// A loopback port that binds now, from 61000–64999: above the kernel's ephemeral range
/// (32768–60999 here) and apart from the ranges kuberaft-tests uses (10000–32000). A port
/// released from the ephemeral range can be taken, before etcd or the API server binds it,
/// as the local port of any outgoing connection on the machine; these cannot. Each test
/// process starts at its own offset and never hands out a port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 61_000;
    const COUNT: u32 = 4_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT);
}

fn spawn(command: &mut Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    command
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"))
}

impl TestApiServer {
    /// Starts etcd and a kube-apiserver that allows every request.
    pub async fn start(assets: &Path) -> TestApiServer {
        Self::start_with_authorization(assets, "AlwaysAllow").await
    }

    /// Starts them with this `--authorization-mode` (`RBAC` to check what Roles grant; the
    /// client's user is in `system:masters`, so it may still do anything).
    pub async fn start_with_authorization(assets: &Path, mode: &str) -> TestApiServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let etcd_port = free_port();
        let peer_port = free_port();
        let api_port = free_port();
        let mut processes = Vec::new();
        processes.push(spawn(
            Command::new(assets.join("etcd"))
                .arg("--data-dir")
                .arg(dir.path().join("etcd"))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
                .arg(format!(
                    "--advertise-client-urls=http://127.0.0.1:{etcd_port}"
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
                ))
                .arg(format!(
                    "--initial-cluster=default=http://127.0.0.1:{peer_port}"
                ))
                .arg("--unsafe-no-fsync"),
            &dir.path().join("etcd.log"),
        ));
        let key = dir.path().join("sa.key");
        let status = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .expect("openssl makes the service-account key");
        assert!(status.success(), "openssl genrsa failed");
        let tokens = dir.path().join("tokens.csv");
        std::fs::write(&tokens, format!("{TOKEN},admin,admin,system:masters\n")).expect("tokens");
        processes.push(spawn(
            Command::new(assets.join("kube-apiserver"))
                .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
                .arg(format!("--secure-port={api_port}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg("--cert-dir")
                .arg(dir.path().join("certs"))
                .arg("--service-cluster-ip-range=10.0.0.0/24")
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg("--service-account-key-file")
                .arg(&key)
                .arg("--service-account-signing-key-file")
                .arg(&key)
                .arg("--token-auth-file")
                .arg(&tokens)
                .arg(format!("--authorization-mode={mode}"))
                .arg("--disable-admission-plugins=ServiceAccount"),
            &dir.path().join("kube-apiserver.log"),
        ));
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: envtest\n  context: {{cluster: envtest, user: admin, namespace: default}}\ncurrent-context: envtest\n"
        );
        let kubeconfig_path = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig_path, &kubeconfig).expect("kubeconfig file");
        let kubeconfig = Kubeconfig::from_yaml(&kubeconfig).expect("kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("client config");
        let client = Client::try_from(config).expect("client");
        let server = TestApiServer {
            client,
            kubeconfig: kubeconfig_path,
            processes,
            _dir: dir,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request");
            if let Ok(text) = self.client.request_text(request).await
                && text.trim() == "ok"
            {
                return;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(self._dir.path().join("kube-apiserver.log"))
                    .unwrap_or_default();
                let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
                panic!(
                    "kube-apiserver not ready within 60 s; its last log lines (newest first):\n{tail}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
