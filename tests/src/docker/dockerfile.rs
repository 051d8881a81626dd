//! Reading a Dockerfile of `deploy/docker/`: which package and binaries its
//! `builder` stage compiles, and its `runtime` stage with the copies from the
//! builder's `/out` pointed at a local build context instead.

/// What the suite needs to know of a Dockerfile.
#[derive(Debug, PartialEq, Eq)]
pub struct Dockerfile {
    /// The cargo package the builder compiles (`-p`).
    pub package: String,
    /// The binaries it builds (`--bin`), in order.
    pub binaries: Vec<String>,
    /// Symbolic links it makes in `/out/bin` (`ln -s TARGET /out/bin/NAME`),
    /// as (target, name).
    pub links: Vec<(String, String)>,
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

/// The `ln -s TARGET /out/bin/NAME` commands of a RUN, as (TARGET, NAME).
fn bin_links(run: &str) -> Vec<(String, String)> {
    run.split("&&")
        .filter_map(|command| {
            let words: Vec<&str> = command.split_whitespace().collect();
            match words.as_slice() {
                ["RUN", "ln", "-s", target, link] | ["ln", "-s", target, link] => link
                    .strip_prefix("/out/bin/")
                    .map(|name| (target.to_string(), name.to_string())),
                _ => None,
            }
        })
        .collect()
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
        let links = builder
            .iter()
            .filter(|i| keyword(i) == "RUN")
            .flat_map(|i| bin_links(i))
            .collect();
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
            links,
            runtime_stage: runtime.join("\n") + "\n",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::image::repo_root;

    const SAMPLE: &str = r#"
# comment
ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kuberaft-node --bin kuberaft-node --bin=raftctl \
 && mkdir -p /out/bin /out/data \
 && cp target/release/kuberaft-node /out/bin/ \
 && ln -s kuberaft-node /out/bin/raftctl

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
            d.links,
            vec![("kuberaft-node".to_string(), "raftctl".to_string())]
        );
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
