//! What one test creates in the Docker engine (containers, networks, volumes,
//! images), so that all of it is removed when the test ends, also when it
//! fails, and what a crashed earlier run left behind is removed next time.
//!
//! Every object gets the label [`LABEL`] and a name starting with
//! `kre2e-<pid>-`, the id of the test process that owns it. A sweep removes
//! the labelled objects whose owner process is gone, and never those of a
//! run still going on (another suite may share the engine).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::cli::docker;

/// The label on everything the suite creates; its value is the run's name.
pub const LABEL: &str = "io.kuberaft.e2e.run";

/// Prefix of every name, followed by the owner's pid and a dash.
const PREFIX: &str = "kre2e-";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    // Declared in the order they must be removed: a network or a volume
    // cannot go while a container uses it, an image while a container runs it.
    Container,
    Network,
    Volume,
    Image,
}

/// One test's Docker objects. Dropping it removes them all.
pub struct Run {
    /// `kre2e-<pid>-<n>`: unique among the runs of this engine.
    pub name: String,
    created: Mutex<Vec<(Kind, String)>>,
}

impl Run {
    /// A new run; first removes what crashed runs left behind.
    pub fn new() -> Run {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        sweep_leftovers();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Run {
            name: format!("{PREFIX}{}-{n}", std::process::id()),
            created: Mutex::new(Vec::new()),
        }
    }

    /// `<run>-<what>`: the name of one of this run's objects.
    pub fn name_of(&self, what: &str) -> String {
        format!("{}-{what}", self.name)
    }

    /// `--label io.kuberaft.e2e.run=<run>`, for `docker create/build/…`.
    pub fn label_args(&self) -> [String; 2] {
        ["--label".into(), format!("{LABEL}={}", self.name)]
    }

    fn remember(&self, kind: Kind, name: &str) {
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        if !created.iter().any(|(k, n)| *k == kind && n == name) {
            created.push((kind, name.to_string()));
        }
    }

    /// Records a container (call before creating it, so that a creation that
    /// half-failed is cleaned up too).
    pub fn container(&self, name: &str) {
        self.remember(Kind::Container, name);
    }
    pub fn network(&self, name: &str) {
        self.remember(Kind::Network, name);
    }
    pub fn volume(&self, name: &str) {
        self.remember(Kind::Volume, name);
    }
    pub fn image(&self, name: &str) {
        self.remember(Kind::Image, name);
    }
}

impl Default for Run {
    fn default() -> Run {
        Run::new()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let mut created =
            std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        // Newest first within a kind: an image built on a base goes before it.
        created.reverse();
        created.sort_by_key(|(kind, _)| *kind);
        for (kind, name) in created {
            if let Err(e) = remove(kind, &name) {
                // Cleanup must not panic (we may be unwinding already); the
                // next run's sweep retries.
                eprintln!("cleanup: {e}");
            }
        }
    }
}

fn remove(kind: Kind, name: &str) -> Result<(), super::cli::DockerError> {
    let result = match kind {
        // A paused container must be unpaused to be killed on cgroup v1; -f
        // handles that. -v removes anonymous volumes (the suite makes none).
        Kind::Container => docker(&["rm", "-f", "-v", name]),
        Kind::Network => docker(&["network", "rm", name]),
        Kind::Volume => docker(&["volume", "rm", "-f", name]),
        Kind::Image => docker(&["image", "rm", "-f", name]),
    };
    match result {
        Err(e) if is_missing(&e.stderr) => Ok(()),
        other => other.map(|_| ()),
    }
}

fn is_missing(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("no such") || s.contains("not found")
}

/// The pid in a name `kre2e-<pid>-…`.
fn owner_of(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    rest.split('-').next()?.parse().ok()
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes every labelled object whose owning test process has exited.
pub fn sweep_leftovers() {
    let filter = format!("label={LABEL}");
    let listings: [(Kind, Vec<&str>); 4] = [
        (Kind::Container, vec!["ps", "-a", "--format", "{{.Names}}"]),
        (
            Kind::Network,
            vec!["network", "ls", "--format", "{{.Name}}"],
        ),
        (Kind::Volume, vec!["volume", "ls", "--format", "{{.Name}}"]),
        (
            Kind::Image,
            vec!["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
        ),
    ];
    for (kind, mut args) in listings {
        args.extend(["--filter", &filter]);
        let Ok(names) = docker(&args) else { continue };
        for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
            let Some(pid) = owner_of(name) else { continue };
            if pid != std::process::id() as i32 && !process_alive(pid) {
                super::report(&format!(
                    "removing {kind:?} {name}, left behind by test process {pid}"
                ));
                if let Err(e) = remove(kind, name) {
                    eprintln!("sweep: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_read_from_names() {
        assert_eq!(owner_of("kre2e-4242-0-demo-0"), Some(4242));
        assert_eq!(owner_of("kre2e-4242-1-node:latest"), Some(4242));
        assert_eq!(owner_of("demo-0"), None);
        assert_eq!(owner_of("kre2e-x-0"), None);
    }

    #[test]
    fn removal_order_puts_containers_first() {
        let mut v = vec![Kind::Image, Kind::Volume, Kind::Container, Kind::Network];
        v.sort();
        assert_eq!(
            v,
            vec![Kind::Container, Kind::Network, Kind::Volume, Kind::Image]
        );
    }
}
