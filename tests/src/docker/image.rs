//! Building an image from a Dockerfile of `deploy/docker/` on a machine with
//! no registry.
//!
//! The Dockerfiles are multi-stage for users: a `builder` stage compiles in
//! the Rust image, a `runtime` stage copies the results from its `/out` onto
//! `${BASE_IMAGE}`. Here neither the Rust image nor the distroless base can be
//! pulled, and Docker's legacy builder would build every stage anyway. So the
//! suite builds the *same* runtime stage, unchanged but for where its files
//! come from:
//!
//! - the binaries named by the builder's `cargo build --bin …` are built on
//!   this host (and stripped as the builder strips them) into a temporary
//!   build context laid out like the builder's `/out`;
//! - `COPY --from=builder /out/…` becomes `COPY out/…`;
//! - `BASE_IMAGE` is a base made here with `docker import`: the glibc files
//!   the binaries link (from `ldd`; the host is Debian 12, as is
//!   distroless/cc-debian12), `/etc/passwd` and `/etc/group` with the
//!   `nonroot` user 65532, `/etc/nsswitch.conf` and `/tmp`, as in distroless.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::cli::{docker, must};
use super::dockerfile::Dockerfile;
use super::resources::Run;

/// The repository's root (this crate is `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The release binaries `binaries` (of `package`), as the builder stage builds them.
pub fn build_release_binaries(package: &str, binaries: &[String]) -> Vec<PathBuf> {
    crate::cluster::build_workspace_binaries(true);
    let exe = std::env::current_exe().expect("test executable path");
    let release = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .join("release");
    binaries
        .iter()
        .map(|b| {
            let bin = release.join(b);
            assert!(bin.exists(), "{} of {package} was not built", bin.display());
            bin
        })
        .collect()
}

/// The shared libraries `binary` loads, as `ldd` lists them (the dynamic
/// loader included; none for a static binary).
fn linked_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("run ldd (the image's base is made from the libraries it lists)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vDSO has no file.
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn write(path: &Path, contents: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create dir");
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Makes a distroless-like base for `binaries` with `docker import`; returns
/// its name.
fn import_base(run: &Run, work: &Path, binaries: &[PathBuf]) -> String {
    let root = work.join("base");
    let mut libs: Vec<PathBuf> = binaries.iter().flat_map(|b| linked_libraries(b)).collect();
    libs.sort();
    libs.dedup();
    for lib in &libs {
        // The file at the path the binary asks for (symlinks followed): the
        // loader finds it by that path.
        let dest = root.join(lib.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("create lib dir");
        std::fs::copy(lib, &dest)
            .unwrap_or_else(|e| panic!("copy {} into the base: {e}", lib.display()));
    }
    write(
        &root.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    );
    write(&root.join("etc/group"), "root:x:0:\nnonroot:x:65532:\n");
    write(&root.join("etc/nsswitch.conf"), "hosts: files dns\n");
    std::fs::create_dir_all(root.join("home/nonroot")).expect("create home");
    std::fs::create_dir_all(root.join("tmp")).expect("create tmp");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod /tmp");
    }
    let tarball = work.join("base.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(status.success(), "tar of the base image failed");
    let name = run.name_of("base");
    run.image(&name);
    let [_, label] = run.label_args();
    must(&[
        "import".to_string(),
        "--change".into(),
        format!("LABEL {label}"),
        tarball.display().to_string(),
        name.clone(),
    ]);
    name
}

/// What `gcr.io/distroless/cc-debian12` weighs, estimated (it cannot be
/// pulled here to weigh): it holds the Debian 12 packages libc6, libssl3,
/// libgcc-s1, libgomp1, libstdc++6, base-files, netbase, tzdata,
/// ca-certificates and media-types, whose files (documentation aside) take
/// 22.86 MB on this Debian 12 host, plus the generated CA bundle.
pub const DISTROLESS_CC_DEBIAN12_BYTES: u64 = 23_100_000;

/// A locally built image and what `docker image inspect` says of it.
#[derive(Debug)]
pub struct Image {
    pub name: String,
    pub size_bytes: u64,
    /// What the image adds to its base (the Dockerfile's own layers).
    pub layers_bytes: u64,
    pub user: String,
    pub entrypoint: Vec<String>,
    pub exposed_ports: Vec<String>,
}

/// Builds the runtime stage of `deploy/docker/<file>` as described in the
/// module documentation; the image is removed with `run`.
pub fn build(run: &Run, file: &str, what: &str) -> Image {
    let path = repo_root().join("deploy/docker").join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let dockerfile = Dockerfile::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let built = build_release_binaries(&dockerfile.package, &dockerfile.binaries);

    let work = tempfile::tempdir().expect("temp dir");
    let context = work.path().join("context");
    let bin_dir = context.join("out/bin");
    std::fs::create_dir_all(&bin_dir).expect("create out/bin");
    std::fs::create_dir_all(context.join("out/data")).expect("create out/data");
    for (name, src) in dockerfile.binaries.iter().zip(&built) {
        // As the builder does: `strip --strip-all`.
        let status = Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(bin_dir.join(name))
            .arg(src)
            .status()
            .expect("run strip (binutils)");
        assert!(status.success(), "strip {} failed", src.display());
    }
    for (target, name) in &dockerfile.links {
        std::os::unix::fs::symlink(target, bin_dir.join(name))
            .unwrap_or_else(|e| panic!("link out/bin/{name} -> {target}: {e}"));
    }
    write(&context.join("Dockerfile"), &dockerfile.runtime_stage);
    let base = import_base(run, work.path(), &built);

    let name = run.name_of(what);
    run.image(&name);
    let mut args: Vec<String> = vec!["build".into(), "--quiet".into()];
    args.extend(run.label_args());
    args.extend([
        "--build-arg".into(),
        format!("BASE_IMAGE={base}"),
        "--tag".into(),
        name.clone(),
        context.display().to_string(),
    ]);
    must(&args);
    let base_size = inspect(&base).size_bytes;
    let mut image = inspect(&name);
    image.layers_bytes = image.size_bytes.saturating_sub(base_size);
    image
}

impl Image {
    /// The size the image would have on its default base.
    pub fn size_on_distroless(&self) -> u64 {
        self.layers_bytes + DISTROLESS_CC_DEBIAN12_BYTES
    }
}

/// What `docker image inspect` says of `name`.
pub fn inspect(name: &str) -> Image {
    let json = must(&["image", "inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("image inspect is JSON");
    let img = &v[0];
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut exposed_ports: Vec<String> = img["Config"]["ExposedPorts"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    exposed_ports.sort();
    Image {
        name: name.to_string(),
        size_bytes: img["Size"].as_u64().unwrap_or(0),
        layers_bytes: 0,
        user: img["Config"]["User"].as_str().unwrap_or("").to_string(),
        entrypoint: strings(&img["Config"]["Entrypoint"]),
        exposed_ports,
    }
}

/// Whether the workspace has a binary target `name` in `package` yet (some
/// images are written before their program lands).
pub fn workspace_has_binary(package: &str, name: &str) -> bool {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(repo_root())
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .expect("run cargo metadata");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    v["packages"].as_array().into_iter().flatten().any(|p| {
        p["name"] == package
            && p["targets"].as_array().into_iter().flatten().any(|t| {
                t["name"] == name
                    && t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "bin"))
            })
    })
}

/// Does the engine know an image of this name?
pub fn exists(name: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", name]).is_ok()
}
