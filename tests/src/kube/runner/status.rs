//! What a kubelet reports of a pod: its phase, addresses, conditions and the state of its
//! container, built from what the worker saw, and written only when it changed.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Why a container is not running (yet): a kubelet's waiting reason and message.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

impl Waiting {
    pub fn new(reason: &str, message: impl Into<String>) -> Waiting {
        Waiting {
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Waiting(Waiting),
    Running { started_at: Timestamp },
    Terminated(Terminated),
}

/// The worker's view of its pod.
#[derive(Clone, Debug)]
pub struct PodState {
    pub pod_ip: String,
    pub host_ip: String,
    pub start_time: Timestamp,
    pub container: String,
    pub image: String,
    pub container_id: Option<String>,
    pub state: State,
    pub last_state: Option<Terminated>,
    pub restart_count: i32,
    /// The startup probe passed (or there is none) since the container last started.
    pub started: bool,
    pub ready: bool,
    ready_changed: Timestamp,
    /// The network and volumes are set up.
    sandbox_ready: bool,
}

fn time(t: Timestamp) -> Option<Time> {
    Some(Time(t))
}

fn condition(type_: &str, status: bool, since: Timestamp) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        last_transition_time: time(since),
        ..PodCondition::default()
    }
}

impl PodState {
    pub fn new(pod_ip: String, host_ip: String, container: String, image: String) -> PodState {
        let now = Timestamp::now();
        PodState {
            pod_ip,
            host_ip,
            start_time: now,
            container,
            image,
            container_id: None,
            state: State::Waiting(Waiting::new("ContainerCreating", "")),
            last_state: None,
            restart_count: 0,
            started: false,
            ready: false,
            ready_changed: now,
            sandbox_ready: false,
        }
    }

    pub fn set_ready(&mut self, ready: bool) {
        if self.ready != ready {
            self.ready = ready;
            self.ready_changed = Timestamp::now();
        }
    }

    pub fn waiting(&mut self, w: Waiting) {
        self.set_ready(false);
        self.state = State::Waiting(w);
    }

    pub fn running(&mut self, container_id: String) {
        self.sandbox_ready = true;
        self.container_id = Some(container_id);
        self.started = false;
        self.set_ready(false);
        self.state = State::Running {
            started_at: Timestamp::now(),
        };
    }

    /// The container exited with `exit_code`.
    pub fn exited(&mut self, exit_code: i32) {
        let started_at = match &self.state {
            State::Running { started_at } => *started_at,
            _ => Timestamp::now(),
        };
        let t = Terminated {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.to_string(),
            started_at,
            finished_at: Timestamp::now(),
        };
        self.started = false;
        self.set_ready(false);
        self.last_state = Some(t.clone());
        self.state = State::Terminated(t);
    }

    /// The pod's status as the API shows it.
    pub fn render(&self) -> PodStatus {
        let running = matches!(self.state, State::Running { .. });
        let ever_ran = self.container_id.is_some();
        let phase = if ever_ran { "Running" } else { "Pending" };
        let state = match &self.state {
            State::Waiting(w) => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(w.reason.clone()),
                    message: (!w.message.is_empty()).then(|| w.message.clone()),
                }),
                ..ContainerState::default()
            },
            State::Running { started_at } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(*started_at),
                }),
                ..ContainerState::default()
            },
            State::Terminated(t) => ContainerState {
                terminated: Some(terminated(t, self.container_id.clone())),
                ..ContainerState::default()
            },
        };
        let last_state = match (&self.state, &self.last_state) {
            // The state now is the last termination itself: nothing older is known apart.
            (State::Terminated(_), _) | (_, None) => None,
            (_, Some(t)) => Some(ContainerState {
                terminated: Some(terminated(t, self.container_id.clone())),
                ..ContainerState::default()
            }),
        };
        let status = ContainerStatus {
            name: self.container.clone(),
            image: self.image.clone(),
            image_id: String::new(),
            container_id: self
                .container_id
                .as_ref()
                .map(|id| format!("docker://{id}")),
            ready: self.ready,
            started: Some(running && self.started),
            restart_count: self.restart_count,
            state: Some(state),
            last_state,
            ..ContainerStatus::default()
        };
        let ready = self.ready;
        let since = self.ready_changed;
        PodStatus {
            phase: Some(phase.to_string()),
            host_ip: Some(self.host_ip.clone()),
            host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP {
                ip: self.host_ip.clone(),
            }]),
            pod_ip: self.sandbox_ready.then(|| self.pod_ip.clone()),
            pod_ips: self.sandbox_ready.then(|| {
                vec![PodIP {
                    ip: self.pod_ip.clone(),
                }]
            }),
            start_time: time(self.start_time),
            conditions: Some(vec![
                condition(
                    "PodReadyToStartContainers",
                    self.sandbox_ready,
                    self.start_time,
                ),
                condition("Initialized", true, self.start_time),
                condition("Ready", ready, since),
                condition("ContainersReady", ready, since),
                condition("PodScheduled", true, self.start_time),
            ]),
            container_statuses: Some(vec![status]),
            ..PodStatus::default()
        }
    }
}

fn terminated(t: &Terminated, container_id: Option<String>) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        reason: Some(t.reason.clone()),
        started_at: time(t.started_at),
        finished_at: time(t.finished_at),
        container_id: container_id.map(|id| format!("docker://{id}")),
        ..ContainerStateTerminated::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_condition(s: &PodStatus) -> (String, String) {
        let c = s
            .conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .expect("a Ready condition");
        (c.type_.clone(), c.status.clone())
    }

    #[test]
    fn a_crash_shows_as_a_restart_with_the_last_termination() {
        let mut p = PodState::new(
            "10.0.0.7".into(),
            "10.0.0.1".into(),
            "kuberaft-node".into(),
            "kuberaft-node:0.1.0".into(),
        );
        let s = p.render();
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(s.pod_ip, None, "no IP before the sandbox exists");

        p.running("abc".into());
        p.started = true;
        p.set_ready(true);
        let s = p.render();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(ready_condition(&s), ("Ready".into(), "True".into()));

        p.exited(137);
        let s = p.render();
        assert_eq!(ready_condition(&s), ("Ready".into(), "False".into()));
        let c = &s.container_statuses.as_ref().expect("statuses")[0];
        let t = c
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("terminated");
        assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("Error")));

        p.restart_count += 1;
        p.running("abc".into());
        let s = p.render();
        let c = &s.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(c.restart_count, 1);
        assert!(c.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
        let last = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("the last termination");
        assert_eq!(last.exit_code, 137);
        assert!(!c.ready, "not ready again until its probe passes");
    }
}
