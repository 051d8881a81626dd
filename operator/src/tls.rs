//! TLS of a RaftCluster (`spec.tls`): the Secrets the members mount, and the same certificate
//! for the operator's own connections to the members.
//!
//! Without `secretName` the operator keeps a cluster CA in `<name>-ca` and the member
//! certificate it signs in `<name>-tls`, and issues a new member certificate when the old one
//! nears its end (checked on every reconcile, at least once a minute), names other SANs, or was
//! signed by another CA. The members re-read the mounted files, so no restart is needed. With
//! `secretName` the user's Secret (e.g. from cert-manager) is only read.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kuberaft_node::tls::ClientTls;
use time::Duration;

use crate::certs::{self, CertPem, Validity};
use crate::crd::RaftCluster;
use crate::error::{Error, Result};
use crate::resources::{FIELD_MANAGER, ca_secret_name, member_tls_secret, object_meta};

/// Lifetime of the cluster CA the operator makes.
pub const CA_LIFETIME: Duration = Duration::days(3650);
/// Lifetime of a member certificate the operator issues; renewed with a third left.
pub const MEMBER_CERT_LIFETIME: Duration = Duration::days(90);

/// Keys of a TLS Secret.
pub const CA_KEY: &str = "ca.crt";
pub const CERT_KEY: &str = "tls.crt";
pub const PRIVATE_KEY_KEY: &str = "tls.key";

/// The member certificate, its key and the CA, as the operator dials members with them.
#[derive(Clone)]
pub struct MemberTls {
    /// The Secret they came from.
    pub secret: String,
    pem: [String; 3],
    pub client: ClientTls,
}

impl std::fmt::Debug for MemberTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberTls")
            .field("secret", &self.secret)
            .finish()
    }
}

impl PartialEq for MemberTls {
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret && self.pem == other.pem
    }
}

impl MemberTls {
    /// From the PEM texts of `secret`.
    pub fn new(secret: &str, ca: String, cert: String, key: String) -> Result<MemberTls> {
        let client = ClientTls::from_pem(
            &format!("Secret {secret}"),
            ca.as_bytes(),
            Some((cert.as_bytes(), key.as_bytes())),
        )
        .map_err(|message| Error::TlsSecret {
            secret: secret.to_string(),
            message,
        })?;
        Ok(MemberTls {
            secret: secret.to_string(),
            pem: [ca, cert, key],
            client,
        })
    }
}

/// The value of `key` in a Secret, as text.
fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn invalid(secret: &str, message: impl Into<String>) -> Error {
    Error::TlsSecret {
        secret: secret.to_string(),
        message: message.into(),
    }
}

fn secret_object(rc: &RaftCluster, name: String, ca: &str, leaf: &CertPem) -> Secret {
    let data = BTreeMap::from([
        (CA_KEY.to_string(), ByteString(ca.as_bytes().to_vec())),
        (
            CERT_KEY.to_string(),
            ByteString(leaf.cert.as_bytes().to_vec()),
        ),
        (
            PRIVATE_KEY_KEY.to_string(),
            ByteString(leaf.key.as_bytes().to_vec()),
        ),
    ]);
    Secret {
        metadata: object_meta(rc, name),
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

async fn save(api: &Api<Secret>, secret: &Secret) -> Result<()> {
    api.patch(
        &secret.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(secret),
    )
    .await?;
    Ok(())
}

/// Why the member certificate in `existing` must be replaced, if it must.
pub fn reissue_reason(
    existing: Option<&Secret>,
    ca: &str,
    sans: &[String],
    now: i64,
) -> Option<String> {
    let Some(secret) = existing else {
        return Some("it does not exist".to_string());
    };
    let (Some(cert), Some(_), Some(secret_ca)) = (
        text(secret, CERT_KEY),
        text(secret, PRIVATE_KEY_KEY),
        text(secret, CA_KEY),
    ) else {
        return Some(format!(
            "it lacks {CA_KEY}, {CERT_KEY} or {PRIVATE_KEY_KEY}"
        ));
    };
    if secret_ca != ca {
        return Some("it was signed by another CA".to_string());
    }
    let info = match certs::inspect(&cert) {
        Ok(info) => info,
        Err(e) => return Some(format!("its certificate is unreadable: {e}")),
    };
    if info.sans != sans {
        return Some("its DNS names are not the current ones".to_string());
    }
    if certs::needs_renewal(&info, now) {
        return Some("it expires soon".to_string());
    }
    None
}

/// Makes sure the cluster's TLS Secrets exist and are current (unless `read_only`, e.g. a
/// paused cluster), and returns what the operator dials the members with. `None`: TLS is off.
pub async fn ensure(
    rc: &RaftCluster,
    client: &kube::Client,
    cluster_domain: &str,
    read_only: bool,
) -> Result<Option<Arc<MemberTls>>> {
    let Some(tls) = rc.spec.tls_enabled() else {
        return Ok(None);
    };
    let Some(secret_name) = member_tls_secret(rc) else {
        return Ok(None);
    };
    let name = rc.name_any();
    let namespace = rc
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(name.clone()))?;
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut member = api.get_opt(&secret_name).await?;

    if tls.secret_name.is_none() && !read_only {
        let ca_name = ca_secret_name(&name);
        let ca_common_name = format!("kuberaft {namespace}/{name} CA");
        let ca = match api.get_opt(&ca_name).await? {
            Some(secret) => {
                let (Some(cert), Some(key)) =
                    (text(&secret, CERT_KEY), text(&secret, PRIVATE_KEY_KEY))
                else {
                    return Err(invalid(
                        &ca_name,
                        format!(
                            "the cluster CA Secret lacks {CERT_KEY} or {PRIVATE_KEY_KEY}; delete it to have a new CA made (the members then get a new certificate)"
                        ),
                    ));
                };
                CertPem { cert, key }
            }
            None => {
                let ca = certs::new_ca(&ca_common_name, Validity::starting_now(CA_LIFETIME))
                    .map_err(|e| invalid(&ca_name, e))?;
                save(&api, &secret_object(rc, ca_name.clone(), &ca.cert, &ca)).await?;
                tracing::info!(cluster = %name, secret = %ca_name, "made the cluster CA");
                ca
            }
        };
        let sans = certs::member_sans(&name, &namespace, cluster_domain);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Some(reason) = reissue_reason(member.as_ref(), &ca.cert, &sans, now) {
            let leaf = certs::issue(
                &ca,
                &ca_common_name,
                &sans,
                Validity::starting_now(MEMBER_CERT_LIFETIME),
            )
            .map_err(|e| invalid(&secret_name, e))?;
            let secret = secret_object(rc, secret_name.clone(), &ca.cert, &leaf);
            save(&api, &secret).await?;
            tracing::info!(cluster = %name, secret = %secret_name, %reason, "issued the member certificate");
            member = Some(secret);
        }
    }

    let Some(secret) = member else {
        return Err(invalid(
            &secret_name,
            "not found: create it with ca.crt, tls.crt and tls.key (e.g. with cert-manager), or unset spec.tls.secretName to let the operator make one",
        ));
    };
    let (Some(ca), Some(cert), Some(key)) = (
        text(&secret, CA_KEY),
        text(&secret, CERT_KEY),
        text(&secret, PRIVATE_KEY_KEY),
    ) else {
        return Err(invalid(
            &secret_name,
            format!("it must hold {CA_KEY}, {CERT_KEY} and {PRIVATE_KEY_KEY} as PEM text"),
        ));
    };
    MemberTls::new(&secret_name, ca, cert, key).map(|t| Some(Arc::new(t)))
}
