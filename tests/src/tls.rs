//! Certificates for TLS tests: a CA and member certificates written to a
//! directory laid out like a mounted Kubernetes Secret (`ca.crt`, `tls.crt`,
//! `tls.key` as symlinks through `..data`), so a rotation is the same atomic
//! symlink swap the kubelet does.

use std::path::{Path, PathBuf};

use kuberaft_node::tls::ClientTls;
use kuberaft_operator::certs::{self, CertPem, Validity};

/// A CA that signs member and client certificates.
pub struct TestCa {
    pub name: String,
    pub ca: CertPem,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let v = Validity::starting_now(time::Duration::days(30));
        TestCa {
            name: name.to_string(),
            ca: certs::new_ca(name, v).expect("make a CA"),
        }
    }

    /// A certificate for 127.0.0.1 and localhost, valid for a day.
    pub fn issue(&self) -> CertPem {
        self.issue_valid(Validity::starting_now(time::Duration::days(1)))
    }

    pub fn issue_valid(&self, validity: Validity) -> CertPem {
        let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        certs::issue(&self.ca, &self.name, &sans, validity).expect("issue a certificate")
    }

    /// A certificate that expired yesterday.
    pub fn issue_expired(&self) -> CertPem {
        let now = time::OffsetDateTime::now_utc();
        self.issue_valid(Validity {
            not_before: now - time::Duration::days(2),
            not_after: now - time::Duration::days(1),
        })
    }

    /// A client configuration that trusts this CA, presenting `cert`.
    pub fn client(&self, cert: Option<&CertPem>) -> ClientTls {
        ClientTls::from_pem(
            &self.name,
            self.ca.cert.as_bytes(),
            cert.map(|c| (c.cert.as_bytes(), c.key.as_bytes())),
        )
        .expect("client TLS")
    }
}

/// A directory shaped like a mounted Secret with keys ca.crt, tls.crt and
/// tls.key.
pub struct SecretDir {
    pub dir: PathBuf,
    generation: u32,
}

impl SecretDir {
    pub fn new(dir: &Path, ca: &CertPem, leaf: &CertPem) -> SecretDir {
        std::fs::create_dir_all(dir).expect("create secret dir");
        let mut s = SecretDir {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        s.write(ca, leaf);
        for key in ["ca.crt", "tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key))
                .expect("symlink a key");
        }
        s
    }

    /// Writes a new version and swaps `..data` to it in one rename, as the
    /// kubelet does.
    pub fn write(&mut self, ca: &CertPem, leaf: &CertPem) {
        self.generation += 1;
        let version = format!("..v{}", self.generation);
        let vdir = self.dir.join(&version);
        std::fs::create_dir_all(&vdir).expect("create version dir");
        std::fs::write(vdir.join("ca.crt"), &ca.cert).expect("write ca.crt");
        std::fs::write(vdir.join("tls.crt"), &leaf.cert).expect("write tls.crt");
        std::fs::write(vdir.join("tls.key"), &leaf.key).expect("write tls.key");
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    /// The member flags for mutual TLS on the peer port.
    pub fn peer_flags(&self) -> Vec<String> {
        vec![
            "--peer-cert-file".into(),
            self.cert().display().to_string(),
            "--peer-key-file".into(),
            self.key().display().to_string(),
            "--peer-trusted-ca-file".into(),
            self.ca().display().to_string(),
        ]
    }

    /// The member flags for TLS on the client port, with client certificate
    /// authentication when `cert_auth`.
    pub fn client_flags(&self, cert_auth: bool) -> Vec<String> {
        let mut f = vec![
            "--client-cert-file".into(),
            self.cert().display().to_string(),
            "--client-key-file".into(),
            self.key().display().to_string(),
            "--client-trusted-ca-file".into(),
            self.ca().display().to_string(),
        ];
        if cert_auth {
            f.push("--client-cert-auth".into());
        }
        f
    }
}
