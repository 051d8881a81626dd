//! A history of operations on registers as clients saw them: each with the
//! time it was invoked and the time and answer of its completion, or no
//! completion when its outcome is unknown.

use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// A register's value. The workload writes every value once, so a read
/// names the one write it observed.
pub type Value = String;

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Call {
    Put {
        value: Value,
    },
    Get,
    /// Set `new` if the register holds `expected` (absent when `None`).
    Cas {
        expected: Option<Value>,
        new: Value,
    },
}

/// What the system answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Return {
    Put,
    Get(Option<Value>),
    CasOk,
    /// The register did not hold `expected`; it held `current`.
    CasFailed {
        current: Option<Value>,
    },
}

/// One operation on one register (a key of the store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Operation {
    pub client: u32,
    pub key: String,
    pub call: Call,
    /// Nanoseconds from the start of the history, taken before the request
    /// was sent.
    pub invoked_at: u64,
    /// When the answer arrived (taken after it arrived) and what it was.
    /// `None` is an unknown outcome: the client gave up (a timeout, a lost
    /// connection, a member that stopped answering) after sending, so the
    /// operation may have taken effect at any time after its invocation,
    /// or never.
    pub completed: Option<(u64, Return)>,
}

impl Operation {
    pub fn is_write(&self) -> bool {
        !matches!(self.call, Call::Get)
    }
}

fn value(v: &Option<Value>) -> String {
    v.as_deref()
        .map_or_else(|| "∅".to_string(), |v| format!("{v:?}"))
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        let call = match &self.call {
            Call::Put { value: v } => format!("put {v:?}"),
            Call::Get => "get".to_string(),
            Call::Cas { expected, new } => format!("cas {} → {new:?}", value(expected)),
        };
        match &self.completed {
            Some((at, ret)) => {
                let ret = match ret {
                    Return::Put | Return::CasOk => "ok".to_string(),
                    Return::Get(v) => value(v),
                    Return::CasFailed { current } => format!("failed, held {}", value(current)),
                };
                write!(
                    f,
                    "[{:>10.3} ms … {:>10.3} ms] client {:>2} {} {call} ⇒ {ret}",
                    ms(self.invoked_at),
                    ms(*at),
                    self.client,
                    self.key
                )
            }
            None => write!(
                f,
                "[{:>10.3} ms …          ?   ] client {:>2} {} {call} ⇒ unknown outcome",
                ms(self.invoked_at),
                self.client,
                self.key
            ),
        }
    }
}

/// Collects the operations of concurrent clients against one clock.
pub struct Recorder {
    origin: Instant,
    ops: Mutex<Vec<Operation>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            origin: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }
}

impl Recorder {
    /// Nanoseconds since the recorder was made.
    pub fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    pub fn record(&self, op: Operation) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// The operations so far, by invocation time.
    pub fn history(&self) -> Vec<Operation> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ops.sort_by_key(|o| o.invoked_at);
        ops
    }
}
