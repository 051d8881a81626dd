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
use super::resources::Run;

/// The repository's root (this crate is `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// What the suite needs to know of a Dockerfile.
#[derive(Debug, PartialEq, Eq)]
pub struct Dockerfile {
    /// The cargo package the builder compiles (`-p`).
    pub package: String,
    /// The binaries it builds (`--bin`), in order.
    pub binaries: Vec<String>,
    /// The runtime stage (with the global `ARG`s before it), its
    /// `COPY --from=builder /out/…` turned into `COPY out/…`.
    pub runtime_stage: String,
}

/// Dockerfile instructions with their continuation lines joined and
/// comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let done = std::mem::take(&mut current);
                if !done.trim().is_empty() {
                    out.push(done.trim().to_string());
                }
            }
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

fn keyword(instruction: &str) -> String {
    instruction
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// The name after `AS` in a `FROM` instruction.
fn stage_name(from: &str) -> Option<String> {
    let words: Vec<&str> = from.split_whitespace().collect();
    words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("as"))
        .and_then(|i| words.get(i + 1))
        .map(|s| s.to_ascii_lowercase())
}

/// The values of `flag` (`--bin x` or `--bin=x`) in a command line.
fn flag_values(command: &str, flags: &[&str]) -> Vec<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        for f in flags {
            if w == f {
                if let Some(v) = words.get(i + 1) {
                    out.push(v.to_string());
                }
            } else if let Some(v) = w.strip_prefix(&format!("{f}=")) {
                out.push(v.to_string());
            }
        }
    }
    out
}

/// `COPY [--chown=…] --from=builder /out/a /out/b DEST` → `COPY [--chown=…] out/a out/b DEST`.
fn rewrite_copy(instruction: &str) -> Result<String, String> {
    let words: Vec<&str> = instruction.split_whitespace().collect();
    if words.iter().any(|w| w.starts_with('[')) {
        return Err(format!(
            "{instruction:?}: use the plain form of COPY in the runtime stage"
        ));
    }
    let (flags, paths): (Vec<&str>, Vec<&str>) =
        words[1..].iter().partition(|w| w.starts_with("--"));
    let Some((dest, sources)) = paths.split_last() else {
        return Err(format!("{instruction:?} has no destination"));
    };
    let mut rewritten = vec!["COPY".to_string()];
    rewritten.extend(
        flags
            .iter()
            .filter(|f| !f.eq_ignore_ascii_case("--from=builder"))
            .map(|f| f.to_string()),
    );
    for src in sources {
        let Some(rel) = src.strip_prefix("/out/") else {
            return Err(format!(
                "{instruction:?} copies {src} from the builder; the suite stages only /out/…"
            ));
        };
        rewritten.push(format!("out/{rel}"));
    }
    rewritten.push(dest.to_string());
    Ok(rewritten.join(" "))
}

impl Dockerfile {
    pub fn parse(text: &str) -> Result<Dockerfile, String> {
        let all = instructions(text);
        let first_from = all
            .iter()
            .position(|i| keyword(i) == "FROM")
            .ok_or("the Dockerfile has no FROM")?;
        let global_args = &all[..first_from];
        if let Some(other) = global_args.iter().find(|i| keyword(i) != "ARG") {
            return Err(format!("{other:?} before the first FROM"));
        }
        // Stages: each FROM and the instructions after it.
        let mut stages: Vec<(Option<String>, Vec<&String>)> = Vec::new();
        for i in &all[first_from..] {
            if keyword(i) == "FROM" {
                stages.push((stage_name(i), vec![i]));
            } else if let Some(last) = stages.last_mut() {
                last.1.push(i);
            }
        }
        let stage = |name: &str| {
            stages
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name))
                .map(|(_, body)| body)
                .ok_or_else(|| format!("the Dockerfile has no stage named {name:?}"))
        };
        let builder = stage("builder")?;
        let cargo = builder
            .iter()
            .find(|i| keyword(i) == "RUN" && i.contains("cargo build"))
            .ok_or("the builder stage has no `RUN cargo build`")?;
        let package = flag_values(cargo, &["-p", "--package"])
            .into_iter()
            .next()
            .ok_or("the builder's cargo build names no package (-p)")?;
        let binaries = flag_values(cargo, &["--bin"]);
        if binaries.is_empty() {
            return Err("the builder's cargo build names no --bin".into());
        }
        let mut runtime = global_args.to_vec();
        for i in stage("runtime")? {
            match keyword(i).as_str() {
                "RUN" => {
                    return Err(format!(
                        "{i:?}: the runtime stage has no shell to RUN anything in"
                    ));
                }
                "COPY" if i.contains("--from=") => {
                    if !i.to_ascii_lowercase().contains("--from=builder") {
                        return Err(format!("{i:?}: copy only from the builder stage"));
                    }
                    runtime.push(rewrite_copy(i)?);
                }
                _ => runtime.push((*i).clone()),
            }
        }
        Ok(Dockerfile {
            package,
            binaries,
            runtime_stage: runtime.join("\n") + "\n",
        })
    }
}

/// The target directory this test binary was built in (`target/<profile>/deps/<test>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// Builds `binaries` of `package` with the release profile, as the builder
/// stage does, and returns their paths.
pub fn build_release_binaries(package: &str, binaries: &[String]) -> Vec<PathBuf> {
    let target = target_dir();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(repo_root())
        .args(["build", "--quiet", "--release", "--locked", "-p", package])
        .arg("--target-dir")
        .arg(&target);
    for b in binaries {
        cmd.args(["--bin", b]);
    }
    let status = cmd.status().expect("run cargo build");
    assert!(
        status.success(),
        "cargo build --release -p {package} {binaries:?} failed"
    );
    binaries
        .iter()
        .map(|b| target.join("release").join(b))
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

/// A locally built image and what `docker image inspect` says of it.
#[derive(Debug)]
pub struct Image {
    pub name: String,
    pub size_bytes: u64,
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
        // As the builder does: `strip --strip-debug`.
        let status = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(bin_dir.join(name))
            .arg(src)
            .status()
            .expect("run strip (binutils)");
        assert!(status.success(), "strip {} failed", src.display());
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
    inspect(&name)
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

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
# comment
ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kuberaft-node --bin kuberaft-node --bin=raftctl \
 && mkdir -p /out/bin /out/data \
 && cp target/release/kuberaft-node /out/bin/

FROM ${BASE_IMAGE} AS runtime
COPY --from=builder /out/bin/ /usr/local/bin/
# the data dir
COPY --from=builder --chown=65532:65532 /out/data /var/lib/kuberaft
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kuberaft-node"]
"#;

    #[test]
    fn the_runtime_stage_is_taken_with_its_copies_pointed_at_the_context() {
        let d = Dockerfile::parse(SAMPLE).expect("parses");
        assert_eq!(d.package, "kuberaft-node");
        assert_eq!(d.binaries, vec!["kuberaft-node", "raftctl"]);
        assert_eq!(
            d.runtime_stage,
            "ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot\n\
             FROM ${BASE_IMAGE} AS runtime\n\
             COPY out/bin/ /usr/local/bin/\n\
             COPY --chown=65532:65532 out/data /var/lib/kuberaft\n\
             USER 65532:65532\n\
             ENTRYPOINT [\"/usr/local/bin/kuberaft-node\"]\n"
        );
    }

    #[test]
    fn a_runtime_stage_the_suite_cannot_mirror_is_refused() {
        let run = SAMPLE.replace("USER 65532:65532", "RUN chown -R 1 /x");
        assert!(Dockerfile::parse(&run).unwrap_err().contains("no shell"));
        let outside = SAMPLE.replace("/out/data /var", "/etc/passwd /var");
        assert!(
            Dockerfile::parse(&outside)
                .unwrap_err()
                .contains("stages only /out/")
        );
        let no_bin = SAMPLE.replace(" --bin kuberaft-node --bin=raftctl", "");
        assert!(Dockerfile::parse(&no_bin).unwrap_err().contains("--bin"));
    }

    #[test]
    fn the_repository_dockerfiles_parse() {
        for (file, package) in [
            ("node.Dockerfile", "kuberaft-node"),
            ("operator.Dockerfile", "kuberaft-operator"),
        ] {
            let path = repo_root().join("deploy/docker").join(file);
            let text = std::fs::read_to_string(&path).expect("read Dockerfile");
            let d = Dockerfile::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(d.package, package);
            assert!(d.runtime_stage.contains("FROM ${BASE_IMAGE} AS runtime"));
        }
    }
}
