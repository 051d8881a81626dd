//! etcd, kube-apiserver and kube-controller-manager, started for one test and stopped when the
//! [`ControlPlane`] is dropped (also when the test fails).
//!
//! The API server authorizes with RBAC; the test's admin (a static token in `system:masters`)
//! may do anything, everyone else (the operator's ServiceAccount above all) only what a Role
//! grants. It serves on `bind_ip`, the gateway of the tier's Docker network, with a certificate
//! of the tier's own CA that pods get as `ca.crt`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::pki::{self, Pki};
use super::tools::Tools;
use crate::cluster::free_port;

const ADMIN_TOKEN: &str = "kuberaft-journey-admin";
/// The Service CIDR; its first address is the `kubernetes` Service's (not routed here: no
/// kube-proxy).
const SERVICE_CIDR: &str = "10.96.0.0/24";
const SERVICE_IP: &str = "10.96.0.1";
/// Who issues service-account tokens (and the audience they are for).
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

pub struct ControlPlane {
    /// A client of the test's admin.
    pub client: Client,
    /// The admin's kubeconfig, for kubectl and helm (`KUBECONFIG`).
    pub kubeconfig: PathBuf,
    /// Where pods reach the API server: `KUBERNETES_SERVICE_HOST` and `_PORT`.
    pub host: String,
    pub port: u16,
    /// The cluster CA (PEM), as pods get it.
    pub ca_pem: String,
    dir: tempfile::TempDir,
    processes: Vec<(&'static str, Child)>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for (_, p) in self.processes.iter_mut().rev() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn spawn(name: &'static str, command: &mut Command, dir: &Path) -> Result<Child, String> {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    // Killed with the test process even when it dies without unwinding (a timeout's SIGKILL):
    // a leftover API server would hold its port and keep writing to a removed folder.
    // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))
}

impl ControlPlane {
    /// Starts the three and waits until the API server is ready and the controllers run.
    pub async fn start(tools: &Tools, bind_ip: &str) -> Result<ControlPlane, String> {
        let dir = tempfile::Builder::new()
            .prefix("kuberaft-control-plane-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let pki = pki::write(dir.path(), bind_ip, SERVICE_IP)?;
        let port = free_port();
        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, bind_ip, port, &pki)?;
        let mut plane = ControlPlane {
            client: admin_client(&kubeconfig).await?,
            kubeconfig,
            host: bind_ip.to_string(),
            port,
            ca_pem: pki.ca_pem.clone(),
            dir,
            processes: Vec::new(),
        };
        let etcd_port = free_port();
        plane.start_etcd(tools, etcd_port)?;
        plane.start_apiserver(tools, &pki, etcd_port)?;
        plane.wait_ready().await?;
        plane.start_controller_manager(tools, &pki)?;
        plane.wait_controllers().await?;
        Ok(plane)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_etcd(&mut self, tools: &Tools, port: u16) -> Result<(), String> {
        let peer = free_port();
        let child = spawn(
            "etcd",
            Command::new(&tools.etcd)
                .arg("--data-dir")
                .arg(self.path("etcd"))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{port}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{port}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
                // The API server's store is not what is tested; the members' fsyncs are.
                .arg("--unsafe-no-fsync"),
            self.dir.path(),
        )?;
        self.processes.push(("etcd", child));
        Ok(())
    }

    fn start_apiserver(&mut self, tools: &Tools, pki: &Pki, etcd_port: u16) -> Result<(), String> {
        let tokens = self.path("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{ADMIN_TOKEN},admin,admin,system:masters\n"),
        )
        .map_err(|e| format!("tokens file: {e}"))?;
        let child = spawn(
            "kube-apiserver",
            Command::new(&tools.kube_apiserver)
                .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
                .arg(format!("--bind-address={}", self.host))
                .arg(format!("--advertise-address={}", self.host))
                .arg(format!("--secure-port={}", self.port))
                .arg("--tls-cert-file")
                .arg(&pki.serving_cert)
                .arg("--tls-private-key-file")
                .arg(&pki.serving_key)
                .arg("--client-ca-file")
                .arg(&pki.ca_cert)
                .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
                .arg(format!("--service-account-issuer={SA_ISSUER}"))
                .arg("--service-account-key-file")
                .arg(&pki.sa_pub)
                .arg("--service-account-signing-key-file")
                .arg(&pki.sa_key)
                .arg("--token-auth-file")
                .arg(&tokens)
                .arg("--authorization-mode=RBAC")
                .arg("--profiling=false"),
            self.dir.path(),
        )?;
        self.processes.push(("kube-apiserver", child));
        Ok(())
    }

    fn start_controller_manager(&mut self, tools: &Tools, pki: &Pki) -> Result<(), String> {
        let port = free_port();
        let child = spawn(
            "kube-controller-manager",
            Command::new(&tools.kube_controller_manager)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                // Without a kubelet, the node-lifecycle controller would evict every pod of
                // the stand-in's Node; the other is OpenShift's and needs OpenShift's API.
                .arg("--controllers=*,-node-lifecycle-controller,-service-ca-certificate-publisher-controller")
                .arg("--root-ca-file")
                .arg(&pki.ca_cert)
                .arg("--service-account-private-key-file")
                .arg(&pki.sa_key)
                .arg("--use-service-account-credentials=false")
                .arg("--leader-elect=false")
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg("--pvclaimbinder-sync-period=2s")
                .arg("--profiling=false"),
            self.dir.path(),
        )?;
        self.processes.push(("kube-controller-manager", child));
        Ok(())
    }

    /// Fails with the log's tail when a process has exited.
    fn check_alive(&mut self) -> Result<(), String> {
        for (name, child) in &mut self.processes {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{name} exited ({status}); its log ends:\n{}",
                    tail(&self.dir.path().join(format!("{name}.log")), 30)
                ));
            }
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            if let Ok(text) = self.client.request_text(request).await
                && text.trim() == "ok"
            {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "kube-apiserver not ready within 60 s; its log ends:\n{}",
                    self.log_tail("kube-apiserver", 30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The ServiceAccount controller makes `default` in every namespace: once it exists in
    /// `default`, the controllers run.
    async fn wait_controllers(&mut self) -> Result<(), String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), "default");
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if let Ok(Some(_)) = api.get_opt("default").await {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "kube-controller-manager made no ServiceAccount within 60 s; its log ends:\n{}",
                    self.log_tail("kube-controller-manager", 30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last `lines` lines of `etcd`, `kube-apiserver` or `kube-controller-manager`'s log.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        tail(&self.dir.path().join(format!("{name}.log")), lines)
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The admin's kubeconfig: a token, and the CA that signed the API server's certificate.
fn write_kubeconfig(path: &Path, host: &str, port: u16, pki: &Pki) -> Result<(), String> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: journey\n  cluster:\n    server: https://{host}:{port}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\ncontexts:\n- name: journey\n  context: {{cluster: journey, user: admin, namespace: default}}\ncurrent-context: journey\n",
        pki.ca_cert.display()
    );
    std::fs::write(path, text).map_err(|e| format!("kubeconfig: {e}"))
}

async fn admin_client(kubeconfig: &Path) -> Result<Client, String> {
    let text = std::fs::read_to_string(kubeconfig).map_err(|e| e.to_string())?;
    let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|e| format!("kubeconfig: {e}"))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("client config: {e}"))?;
    Client::try_from(config).map_err(|e| format!("client: {e}"))
}
