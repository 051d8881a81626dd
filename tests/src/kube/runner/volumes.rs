//! Volumes: the storage provisioner's part (a pre-bound PersistentVolume, with a Docker volume
//! behind it, for each claim; the controller-manager's PV binder binds the pair) and the
//! kubelet's part (what each of a pod's volumes is on this host, and the files of Secret,
//! ConfigMap, projected and downward-API volumes, written the way a kubelet writes them).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
    Volume,
};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, watcher as watch_of};
use serde_json::json;

use super::Shared;
use super::env::field_value;
use super::status::Waiting;
use crate::docker::cli::docker_async;

/// On the runner's PersistentVolumes: the Docker volume behind it.
const DOCKER_VOLUME: &str = "journey.kuberaft.io/docker-volume";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const PROVISIONER: &str = "journey.kuberaft.io/pod-runner";

/// Makes a PersistentVolume for each pending claim.
pub(super) async fn provision(shared: Arc<Shared>) {
    let api: Api<PersistentVolumeClaim> = Api::all(shared.client.clone());
    let mut events = watch_of(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(pvc) => {
                if let Err(e) = ensure_volume(&shared, &pvc).await {
                    tracing::warn!(claim = %pvc.name_any(), error = %e, "pod runner: no volume");
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod runner: the claim watch failed; retrying"),
        }
    }
}

async fn ensure_volume(shared: &Shared, pvc: &PersistentVolumeClaim) -> Result<(), String> {
    let spec = pvc.spec.clone().unwrap_or_default();
    let pending = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
    if !pending || spec.volume_name.is_some() || pvc.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let uid = pvc.uid().ok_or("a claim without a UID")?;
    let pv_name = format!("pvc-{uid}");
    let volumes: Api<PersistentVolume> = Api::all(shared.client.clone());
    if volumes
        .get_opt(&pv_name)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(());
    }
    let docker_volume = shared.run.name_of(&format!("pv-{uid}"));
    shared.run.volume(&docker_volume);
    let mut args = vec!["volume".to_string(), "create".to_string()];
    args.extend(shared.run.label_args());
    args.push(docker_volume.clone());
    docker_async(&args).await.map_err(|e| e.to_string())?;
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map_or_else(|| "1Gi".to_string(), |q| q.0.clone());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": pv_name,
            "annotations": { DOCKER_VOLUME: docker_volume, PROVISIONED_BY: PROVISIONER },
        },
        "spec": {
            "capacity": { "storage": storage },
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "storageClassName": spec.storage_class_name.clone().unwrap_or_default(),
            // The runner deletes it once released (below): no plugin of the
            // controller-manager may act on a path of this host.
            "persistentVolumeReclaimPolicy": "Retain",
            "volumeMode": "Filesystem",
            // Nominal: the Docker volume above is what pods mount.
            "hostPath": { "path": format!("/var/lib/kuberaft-journey/{uid}") },
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": pvc.namespace(),
                "name": pvc.name_any(),
                "uid": uid,
            },
        },
    }))
    .map_err(|e| format!("the PersistentVolume object: {e}"))?;
    match volumes.create(&PostParams::default(), &pv).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(format!("cannot create PersistentVolume {pv_name}: {e}")),
    }
}

/// Deletes the runner's volumes whose claim is gone (what a `Delete` reclaim policy does). The
/// Docker volume stays until the run ends, unreachable: no claim can bind it again.
pub(super) async fn reclaim(shared: Arc<Shared>) {
    let api: Api<PersistentVolume> = Api::all(shared.client.clone());
    let mut events = watch_of(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        let Ok(pv) = event else { continue };
        let ours = pv.annotations().get(PROVISIONED_BY).map(String::as_str) == Some(PROVISIONER);
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        if ours && released {
            let _ = api.delete(&pv.name_any(), &DeleteParams::default()).await;
        }
    }
}

/// One volume of a pod as this host provides it.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A Docker volume (behind a PersistentVolumeClaim).
    Volume(String),
    /// A host folder (Secret, ConfigMap, projected, downward API, emptyDir on disk).
    Folder(PathBuf),
    /// emptyDir with `medium: Memory`.
    Tmpfs,
}

/// The pod's volumes by name, made ready: claims bound, files written. A volume that is not
/// ready yet is a [`Waiting`] that says why.
pub(super) async fn prepare(
    shared: &Shared,
    pod: &Pod,
    folder: &Path,
) -> Result<BTreeMap<String, Source>, Waiting> {
    let mut out = BTreeMap::new();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in &volumes {
        out.insert(v.name.clone(), prepare_one(shared, pod, v, folder).await?);
    }
    Ok(out)
}

/// Writes the files of the pod's file-backed volumes again (Secrets and ConfigMaps change;
/// tokens expire), as a kubelet does periodically.
pub(super) async fn refresh(shared: &Shared, pod: &Pod, folder: &Path) -> Result<(), Waiting> {
    prepare(shared, pod, folder).await.map(|_| ())
}

fn creating(message: String) -> Waiting {
    Waiting::new("ContainerCreating", message)
}

async fn prepare_one(
    shared: &Shared,
    pod: &Pod,
    v: &Volume,
    folder: &Path,
) -> Result<Source, Waiting> {
    let namespace = pod.namespace().unwrap_or_default();
    let dir = folder.join(&v.name);
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|c| c.fs_group);
    if let Some(claim) = &v.persistent_volume_claim {
        return claim_volume(shared, &namespace, &claim.claim_name).await;
    }
    if let Some(empty) = &v.empty_dir {
        if empty.medium.as_deref() == Some("Memory") {
            return Ok(Source::Tmpfs);
        }
        std::fs::create_dir_all(&dir).map_err(|e| creating(format!("emptyDir {}: {e}", v.name)))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| creating(format!("emptyDir {}: {e}", v.name)))?;
        return Ok(Source::Folder(dir));
    }
    let mut files = Files::default();
    let mode;
    if let Some(secret) = &v.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        mode = secret.default_mode.unwrap_or(0o644);
        if let Some(data) = secret_data(shared, &namespace, &name, secret.optional).await? {
            files.add(data, secret.items.as_deref(), mode);
        }
    } else if let Some(cm) = &v.config_map {
        mode = cm.default_mode.unwrap_or(0o644);
        if let Some(data) = config_map_data(shared, &namespace, &cm.name, cm.optional).await? {
            files.add(data, cm.items.as_deref(), mode);
        }
    } else if let Some(projected) = &v.projected {
        mode = projected.default_mode.unwrap_or(0o644);
        for source in projected.sources.iter().flatten() {
            if let Some(s) = &source.secret
                && let Some(data) = secret_data(shared, &namespace, &s.name, s.optional).await?
            {
                files.add(data, s.items.as_deref(), mode);
            }
            if let Some(c) = &source.config_map
                && let Some(data) = config_map_data(shared, &namespace, &c.name, c.optional).await?
            {
                files.add(data, c.items.as_deref(), mode);
            }
            if let Some(d) = &source.downward_api {
                for item in d.items.iter().flatten() {
                    files.put(&item.path, downward(pod, item)?, item.mode.unwrap_or(mode));
                }
            }
            if let Some(t) = &source.service_account_token {
                let token =
                    service_account_token(shared, pod, t.audience.as_deref(), t.expiration_seconds)
                        .await?;
                files.put(&t.path, token.into_bytes(), mode);
            }
        }
    } else if let Some(d) = &v.downward_api {
        mode = d.default_mode.unwrap_or(0o644);
        for item in d.items.iter().flatten() {
            files.put(&item.path, downward(pod, item)?, item.mode.unwrap_or(mode));
        }
    } else {
        return Err(Waiting::new(
            "CreateContainerConfigError",
            format!(
                "volume {}: the journey's pod runner provides PersistentVolumeClaims, emptyDir, Secrets, ConfigMaps, projected and downward-API volumes only",
                v.name
            ),
        ));
    }
    files
        .write(&dir, fs_group)
        .map_err(|e| creating(format!("volume {}: {e}", v.name)))?;
    Ok(Source::Folder(dir))
}

async fn claim_volume(shared: &Shared, namespace: &str, claim: &str) -> Result<Source, Waiting> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(shared.client.clone(), namespace);
    let pvc = claims
        .get_opt(claim)
        .await
        .map_err(|e| creating(format!("claim {claim}: {e}")))?
        .ok_or_else(|| creating(format!("persistentvolumeclaim \"{claim}\" not found")))?;
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let volume_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
    let (true, Some(volume_name)) = (bound, volume_name) else {
        return Err(creating(format!(
            "persistentvolumeclaim \"{claim}\" is not bound yet"
        )));
    };
    let volumes: Api<PersistentVolume> = Api::all(shared.client.clone());
    let pv = volumes
        .get(&volume_name)
        .await
        .map_err(|e| creating(format!("volume {volume_name}: {e}")))?;
    pv.annotations()
        .get(DOCKER_VOLUME)
        .map(|v| Source::Volume(v.clone()))
        .ok_or_else(|| {
            creating(format!(
                "volume {volume_name} was not made by the pod runner; it has nothing behind it here"
            ))
        })
}

fn missing(kind: &str, name: &str) -> Waiting {
    creating(format!("{kind} \"{name}\" not found"))
}

async fn secret_data(
    shared: &Shared,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Waiting> {
    let api: Api<Secret> = Api::namespaced(shared.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(s)) => Ok(Some(
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
        )),
        Ok(None) if optional == Some(true) => Ok(None),
        Ok(None) => Err(missing("secret", name)),
        Err(e) => Err(creating(format!("secret {name}: {e}"))),
    }
}

async fn config_map_data(
    shared: &Shared,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Waiting> {
    let api: Api<ConfigMap> = Api::namespaced(shared.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(c)) => {
            let mut data: BTreeMap<String, Vec<u8>> = c
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            data.extend(
                c.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            Ok(Some(data))
        }
        Ok(None) if optional == Some(true) => Ok(None),
        Ok(None) => Err(missing("configmap", name)),
        Err(e) => Err(creating(format!("configmap {name}: {e}"))),
    }
}

fn downward(
    pod: &Pod,
    item: &k8s_openapi::api::core::v1::DownwardAPIVolumeFile,
) -> Result<Vec<u8>, Waiting> {
    match &item.field_ref {
        Some(f) => field_value(pod, &f.field_path, None, None)
            .map(String::into_bytes)
            .map_err(|e| Waiting::new("CreateContainerConfigError", e)),
        None => Err(Waiting::new(
            "CreateContainerConfigError",
            format!(
                "downward-API file {}: only fieldRef is stood in for",
                item.path
            ),
        )),
    }
}

/// A token of the pod's ServiceAccount, bound to the pod (the TokenRequest API, as a kubelet
/// asks it).
async fn service_account_token(
    shared: &Shared,
    pod: &Pod,
    audience: Option<&str>,
    expiration_seconds: Option<i64>,
) -> Result<String, Waiting> {
    let namespace = pod.namespace().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
            "expirationSeconds": expiration_seconds.unwrap_or(3607),
            "boundObjectRef": {
                "apiVersion": "v1", "kind": "Pod",
                "name": pod.name_any(), "uid": pod.uid(),
            },
        },
    }))
    .map_err(|e| creating(format!("TokenRequest: {e}")))?;
    let api: Api<ServiceAccount> = Api::namespaced(shared.client.clone(), &namespace);
    let answer: TokenRequest = api
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await
        .map_err(|e| creating(format!("a token for serviceaccount {account}: {e}")))?;
    answer
        .status
        .map(|s| s.token)
        .ok_or_else(|| creating(format!("no token for serviceaccount {account}")))
}

/// A volume's files: relative path → (contents, mode).
#[derive(Default)]
struct Files(BTreeMap<String, (Vec<u8>, i32)>);

impl Files {
    fn put(&mut self, path: &str, contents: Vec<u8>, mode: i32) {
        self.0.insert(path.to_string(), (contents, mode));
    }

    /// Every key, or only the `items` named (each at its path, with its mode).
    fn add(&mut self, data: BTreeMap<String, Vec<u8>>, items: Option<&[KeyToPath]>, mode: i32) {
        match items {
            Some(items) => {
                for item in items {
                    if let Some(v) = data.get(&item.key) {
                        self.put(&item.path, v.clone(), item.mode.unwrap_or(mode));
                    }
                }
            }
            None => {
                for (k, v) in data {
                    self.put(&k, v, mode);
                }
            }
        }
    }

    /// Writes the files as a kubelet does, so that a change is one atomic swap for readers:
    /// the contents in a fresh `..<n>` folder, `..data` a link to it, and each top-level name
    /// a link through `..data`. Nothing is written when nothing changed.
    fn write(&self, dir: &Path, fs_group: Option<i64>) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        if self.unchanged(dir) {
            return Ok(());
        }
        let stamp = format!(
            "..{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let fresh = dir.join(&stamp);
        for (path, (contents, mode)) in &self.0 {
            let file = fresh.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&file, contents)?;
            let mut mode = *mode as u32 & 0o777;
            if let Some(gid) = fs_group {
                // As a kubelet with fsGroup: the group owns the file. Without the right to
                // chown (not root), readable by all instead.
                if std::os::unix::fs::chown(&file, Some(0), Some(gid as u32)).is_err() {
                    mode |= 0o444;
                }
            }
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
        }
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))?;
        let old = std::fs::read_link(dir.join("..data")).ok();
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&stamp, &tmp)?;
        std::fs::rename(&tmp, dir.join("..data"))?;
        for top in self.0.keys().filter_map(|p| p.split('/').next()) {
            let link = dir.join(top);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(top), &link)?;
            }
        }
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
        Ok(())
    }

    fn unchanged(&self, dir: &Path) -> bool {
        let data = dir.join("..data");
        data.exists()
            && self
                .0
                .iter()
                .all(|(p, (c, _))| std::fs::read(data.join(p)).is_ok_and(|old| &old == c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_swapped_in_through_the_data_link() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("tls");
        let mut files = Files::default();
        files.put("tls.crt", b"one".to_vec(), 0o440);
        files.put("ca.crt", b"ca".to_vec(), 0o440);
        files.write(&target, None).expect("write");
        assert_eq!(std::fs::read(target.join("tls.crt")).expect("read"), b"one");
        let first = std::fs::read_link(target.join("..data")).expect("..data");

        files.write(&target, None).expect("write again");
        assert_eq!(
            std::fs::read_link(target.join("..data")).expect("..data"),
            first,
            "unchanged contents are not written again"
        );

        files.put("tls.crt", b"two".to_vec(), 0o440);
        files.write(&target, None).expect("rewrite");
        assert_eq!(std::fs::read(target.join("tls.crt")).expect("read"), b"two");
        assert_ne!(
            std::fs::read_link(target.join("..data")).expect("..data"),
            first
        );
        assert!(
            !target.join(first).exists(),
            "the old generation is removed"
        );
        assert!(
            std::fs::symlink_metadata(target.join("tls.crt"))
                .expect("link")
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn items_pick_keys_and_paths() {
        let mut files = Files::default();
        let data: BTreeMap<String, Vec<u8>> = [
            ("ca.crt".to_string(), b"ca".to_vec()),
            ("other".to_string(), b"x".to_vec()),
        ]
        .into();
        let items = [KeyToPath {
            key: "ca.crt".into(),
            path: "certs/ca.pem".into(),
            mode: Some(0o400),
        }];
        files.add(data, Some(&items), 0o644);
        assert_eq!(files.0.len(), 1);
        assert_eq!(files.0["certs/ca.pem"], (b"ca".to_vec(), 0o400));
    }
}
