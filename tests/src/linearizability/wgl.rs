//! The Wing–Gong linearizability search with Lowe's memoization ("WGL"):
//! is there an order of a key's operations that respects real time (an
//! operation that completed before another was invoked comes first) in which
//! every answer is what the register would have given?
//!
//! The history is a list of call and return events by time. The search
//! walks it: at a call it tries to linearize that operation now (apply it to
//! the register; if the answer fits, remove the operation from the list and
//! start over from the head); at a return it has met an operation that must
//! already have taken effect but could not be, so it backtracks to the last
//! choice. Each (set of linearized operations, register state) is explored
//! once; the set is kept as a 128-bit Zobrist hash (a collision, odds about
//! 2⁻¹⁰⁰ here, could only make the search miss a linearization and report a
//! violation that is not one, never the reverse).
//!
//! An operation with an unknown outcome returns at "the end of time": it may
//! be linearized anywhere after its call, or left for last, which is the
//! same as never having happened. Such writes whose value nobody ever
//! observed are dropped before the search (they cannot matter, and they would
//! multiply its states), and so are reads with an unknown outcome.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use super::history::Operation;
use super::register::{self, ABSENT, State, Step, Values};

/// The result for one key.
#[derive(Debug)]
pub struct KeyReport {
    pub key: String,
    pub operations: usize,
    pub unknown_outcomes: usize,
    /// Unknown writes dropped because nobody observed their value.
    pub dropped_unobserved: usize,
    pub verdict: Verdict,
}

#[derive(Debug)]
pub enum Verdict {
    Linearizable,
    NotLinearizable(Box<Violation>),
    /// The search took more than its budget of steps: no answer.
    GaveUp {
        steps: u64,
    },
}

/// Where the search got furthest before it had to give up on every order.
#[derive(Debug)]
pub struct Violation {
    pub key: String,
    /// How many operations the longest linearizable prefix held.
    pub linearized: usize,
    pub of: usize,
    /// The register after that prefix.
    pub state: Option<String>,
    /// The operation that had to take effect next and could not.
    pub stuck: Operation,
    /// Operations not yet linearized that were invoked before `stuck`
    /// returned: every one of them was tried first.
    pub candidates: Vec<Operation>,
    /// The end of the longest linearizable prefix, in linearization order.
    pub prefix_tail: Vec<Operation>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?} is not linearizable: the longest linearizable prefix holds {} of {} operations, \
             after which the register holds {}.",
            self.key,
            self.linearized,
            self.of,
            self.state
                .as_deref()
                .map_or("nothing (absent)".into(), |v| format!("{v:?}"))
        )?;
        writeln!(f, "  the prefix ends with (in linearization order):")?;
        for op in &self.prefix_tail {
            writeln!(f, "    {op}")?;
        }
        writeln!(
            f,
            "  no operation can come next, yet this one had completed:"
        )?;
        writeln!(f, "    {}", self.stuck)?;
        writeln!(
            f,
            "  other operations that could have come next (all tried):"
        )?;
        for op in &self.candidates {
            writeln!(f, "    {op}")?;
        }
        if self.candidates.is_empty() {
            writeln!(f, "    none")?;
        }
        Ok(())
    }
}

/// Checks every key of `history` separately (linearizability is
/// compositional: a history is linearizable iff each object's is).
pub fn check(history: &[Operation], budget_steps: u64) -> Vec<KeyReport> {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    by_key
        .into_iter()
        .map(|(key, ops)| check_key(key, &ops, budget_steps))
        .collect()
}

const NIL: usize = usize::MAX;

/// SplitMix64: a fixed sequence of well-mixed numbers for the hashes.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The history of one key, prepared for the search.
struct Search {
    ops: Vec<Operation>,
    steps: Vec<Step>,
    /// Events in time order: `events[e] = (op, is_call)`; event 0 is the head.
    events: Vec<(usize, bool)>,
    return_event: Vec<usize>,
    zobrist: Vec<(u64, u64)>,
    completed: usize,
}

/// Where a run of the search ended.
enum Outcome {
    Linearizable,
    Stuck,
    GaveUp(u64),
}

/// The deepest point a search reached: depth, state, the return event it
/// could not pass, and at which step.
#[derive(Clone, Copy)]
struct Deepest {
    depth: usize,
    state: State,
    stuck_op: usize,
    step: u64,
}

impl Search {
    fn new(ops: Vec<Operation>, steps: Vec<Step>) -> Search {
        let n = ops.len();
        // Returns at "the end of time" for unknown outcomes; at equal times
        // calls come first (the operations count as concurrent).
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.invoked_at, false, i));
            let at = op.completed.as_ref().map_or(u64::MAX, |(t, _)| *t);
            order.push((at, true, i));
        }
        order.sort();
        let mut events = vec![(NIL, false)];
        let mut return_event = vec![0; n];
        for (_, is_return, op) in order {
            if is_return {
                return_event[op] = events.len();
            }
            events.push((op, !is_return));
        }
        let zobrist = (0..n as u64)
            .map(|i| (mix(2 * i + 1), mix(2 * i + 2)))
            .collect();
        let completed = ops.iter().filter(|o| o.completed.is_some()).count();
        Search {
            ops,
            steps,
            events,
            return_event,
            zobrist,
            completed,
        }
    }

    /// The search proper. With `capture_at`, stops at that step and returns
    /// the linearized operations in order.
    fn run(&self, budget: u64, capture_at: Option<u64>) -> (Outcome, Option<Deepest>, Vec<usize>) {
        let len = self.events.len();
        let mut next: Vec<usize> = (1..=len).map(|i| if i == len { NIL } else { i }).collect();
        let mut prev: Vec<usize> = (0..len).map(|i| i.wrapping_sub(1)).collect();
        let unlink = |e: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
            next[prev[e]] = next[e];
            if next[e] != NIL {
                prev[next[e]] = prev[e];
            }
        };
        let relink = |e: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
            next[prev[e]] = e;
            if next[e] != NIL {
                prev[next[e]] = e;
            }
        };
        let value_hash = |s: State| mix(u64::from(s) ^ 0xA5A5_A5A5_0000_0000);

        let mut state = ABSENT;
        let mut hash = (0u64, 0u64);
        let mut linearized_completed = 0;
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let mut deepest: Option<Deepest> = None;
        let mut steps = 0u64;
        let mut event = next[0];
        loop {
            if linearized_completed == self.completed {
                // What is left has unknown outcomes: it goes last.
                return (Outcome::Linearizable, deepest, Vec::new());
            }
            steps += 1;
            if capture_at == Some(steps) {
                let order = stack.iter().map(|(e, _)| self.events[*e].0).collect();
                return (Outcome::Stuck, deepest, order);
            }
            if steps > budget {
                return (Outcome::GaveUp(steps), deepest, Vec::new());
            }
            if event == NIL {
                // Only unknown outcomes' returns are left, and they are never
                // reached before every completed operation is linearized.
                unreachable!("the event list ended before every completed operation was placed");
            }
            let (op, is_call) = self.events[event];
            if is_call {
                if let Some(new_state) = register::apply(state, self.steps[op]) {
                    let z = self.zobrist[op];
                    let h = (hash.0 ^ z.0, hash.1 ^ z.1);
                    if seen.insert((h.0 ^ value_hash(new_state), h.1)) {
                        stack.push((event, state));
                        state = new_state;
                        hash = h;
                        if self.ops[op].completed.is_some() {
                            linearized_completed += 1;
                        }
                        unlink(event, &mut next, &mut prev);
                        unlink(self.return_event[op], &mut next, &mut prev);
                        event = next[0];
                        continue;
                    }
                }
                event = next[event];
            } else {
                // `op` returned, yet no order so far lets it take effect.
                if deepest.is_none_or(|d| stack.len() > d.depth) {
                    deepest = Some(Deepest {
                        depth: stack.len(),
                        state,
                        stuck_op: op,
                        step: steps,
                    });
                }
                let Some((call, previous)) = stack.pop() else {
                    return (Outcome::Stuck, deepest, Vec::new());
                };
                let undone = self.events[call].0;
                state = previous;
                let z = self.zobrist[undone];
                hash = (hash.0 ^ z.0, hash.1 ^ z.1);
                if self.ops[undone].completed.is_some() {
                    linearized_completed -= 1;
                }
                relink(self.return_event[undone], &mut next, &mut prev);
                relink(call, &mut next, &mut prev);
                event = next[call];
            }
        }
    }
}

/// Checks one key's operations.
pub fn check_key(key: &str, ops: &[Operation], budget_steps: u64) -> KeyReport {
    let mut values = Values::default();
    let mut kept: Vec<(Operation, Step)> = ops
        .iter()
        .filter_map(|op| register::step_of(op, &mut values).map(|s| (op.clone(), s)))
        .collect();
    let unknown_outcomes = ops.iter().filter(|o| o.completed.is_none()).count();
    let observed: HashSet<State> = kept
        .iter()
        .flat_map(|(_, s)| register::observed(*s))
        .flatten()
        .collect();
    let before = kept.len();
    kept.retain(|(_, s)| register::unknown_write(*s).is_none_or(|v| observed.contains(&v)));
    let dropped_unobserved = before - kept.len();
    let (ops_kept, steps): (Vec<Operation>, Vec<Step>) = kept.into_iter().unzip();
    let search = Search::new(ops_kept, steps);
    let (outcome, deepest, _) = search.run(budget_steps, None);
    let verdict = match outcome {
        Outcome::Linearizable => Verdict::Linearizable,
        Outcome::GaveUp(steps) => Verdict::GaveUp { steps },
        Outcome::Stuck => {
            let deepest = deepest.expect("a search that got stuck met a return");
            // Run again to the deepest point (the search is deterministic)
            // to see which operations the longest prefix held.
            let (_, _, order) = search.run(budget_steps, Some(deepest.step));
            Verdict::NotLinearizable(Box::new(explain(key, &search, &values, deepest, &order)))
        }
    };
    KeyReport {
        key: key.to_string(),
        operations: ops.len(),
        unknown_outcomes,
        dropped_unobserved,
        verdict,
    }
}

fn explain(
    key: &str,
    search: &Search,
    values: &Values,
    deepest: Deepest,
    order: &[usize],
) -> Violation {
    let stuck = &search.ops[deepest.stuck_op];
    let stuck_at = stuck.completed.as_ref().map_or(u64::MAX, |(t, _)| *t);
    let in_prefix: HashSet<usize> = order.iter().copied().collect();
    let candidates = (0..search.ops.len())
        .filter(|i| {
            *i != deepest.stuck_op
                && !in_prefix.contains(i)
                && search.ops[*i].invoked_at <= stuck_at
        })
        .map(|i| search.ops[i].clone())
        .collect();
    let prefix_tail = order
        .iter()
        .skip(order.len().saturating_sub(12))
        .map(|i| search.ops[*i].clone())
        .collect();
    Violation {
        key: key.to_string(),
        linearized: deepest.depth,
        of: search.ops.len(),
        state: values.name(deepest.state),
        stuck: stuck.clone(),
        candidates,
        prefix_tail,
    }
}
