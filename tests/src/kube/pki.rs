//! The control plane's keys: a cluster CA, the API server's serving certificate (signed by it,
//! naming the address the containers dial), and the service-account signing key.

use std::path::{Path, PathBuf};

use kuberaft_operator::certs::{self, Validity};

/// The files the control plane is started with.
pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// Private key (PKCS#8) that signs service-account tokens.
    pub sa_key: PathBuf,
    /// Its public half, for verifying them.
    pub sa_pub: PathBuf,
    /// The CA certificate, as pods get it in `ca.crt`.
    pub ca_pem: String,
}

const CA_NAME: &str = "kuberaft-journey-ca";

/// Writes a new CA, a serving certificate for `api_ip` and the usual in-cluster names of the
/// API server, and a service-account key pair into `dir`.
pub fn write(dir: &Path, api_ip: &str, service_ip: &str) -> Result<Pki, String> {
    let validity = Validity::starting_now(time::Duration::days(2));
    let ca = certs::new_ca(CA_NAME, validity)?;
    let sans: Vec<String> = [
        api_ip,
        "127.0.0.1",
        service_ip,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let serving = certs::issue(&ca, CA_NAME, &sans, validity)?;
    let sa = rcgen::KeyPair::generate().map_err(|e| format!("service-account key: {e}"))?;
    let file = |name: &str, contents: &str| -> Result<PathBuf, String> {
        let path = dir.join(name);
        std::fs::write(&path, contents)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    };
    Ok(Pki {
        ca_cert: file("ca.crt", &ca.cert)?,
        serving_cert: file("apiserver.crt", &serving.cert)?,
        serving_key: file("apiserver.key", &serving.key)?,
        sa_key: file("sa.key", &sa.serialize_pem())?,
        sa_pub: file("sa.pub", &sa.public_key_pem())?,
        ca_pem: ca.cert,
    })
}
