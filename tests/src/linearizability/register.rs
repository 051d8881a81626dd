//! The sequential specification the store must look like, per key: a
//! register that starts absent, with put, get and compare-and-swap.
//!
//! Values are interned to small integers for the search (`ABSENT` is 0).

use std::collections::HashMap;

use super::history::{Call, Operation, Return, Value};

pub type State = u32;
pub const ABSENT: State = 0;

/// An operation as the search applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Put(State),
    /// A read that returned this.
    Get(State),
    CasOk {
        expected: State,
        new: State,
    },
    CasFailed {
        expected: State,
        current: State,
    },
    /// Outcome unknown: if it is linearized, it did take effect. (Not taking
    /// effect at all is the same as being linearized after everything else:
    /// nothing observes it there.)
    UnknownPut(State),
    UnknownCas {
        expected: State,
        new: State,
    },
}

/// The state after applying `step` to `state`, or `None` if the answer the
/// client got is impossible in `state`.
pub fn apply(state: State, step: Step) -> Option<State> {
    match step {
        Step::Put(v) | Step::UnknownPut(v) => Some(v),
        Step::Get(v) => (state == v).then_some(state),
        Step::CasOk { expected, new } => (state == expected).then_some(new),
        Step::CasFailed { expected, current } => {
            (state != expected && state == current).then_some(state)
        }
        Step::UnknownCas { expected, new } => Some(if state == expected { new } else { state }),
    }
}

/// Interns a key's values.
#[derive(Default)]
pub struct Values {
    ids: HashMap<Value, State>,
    names: Vec<Value>,
}

impl Values {
    pub fn id(&mut self, v: &Option<Value>) -> State {
        let Some(v) = v else { return ABSENT };
        if let Some(id) = self.ids.get(v) {
            return *id;
        }
        self.names.push(v.clone());
        let id = self.names.len() as State;
        self.ids.insert(v.clone(), id);
        id
    }

    pub fn name(&self, s: State) -> Option<Value> {
        match s {
            ABSENT => None,
            n => self.names.get(n as usize - 1).cloned(),
        }
    }
}

/// The search's view of `op`; `None` for a read whose outcome is unknown
/// (it constrains nothing).
pub fn step_of(op: &Operation, values: &mut Values) -> Option<Step> {
    let put = |v: &Value, values: &mut Values| values.id(&Some(v.clone()));
    Some(match (&op.call, op.completed.as_ref().map(|(_, r)| r)) {
        (Call::Get, None) => return None,
        (Call::Get, Some(Return::Get(v))) => Step::Get(values.id(v)),
        (Call::Put { value }, None) => Step::UnknownPut(put(value, values)),
        (Call::Put { value }, Some(Return::Put)) => Step::Put(put(value, values)),
        (Call::Cas { expected, new }, None) => Step::UnknownCas {
            expected: values.id(expected),
            new: put(new, values),
        },
        (Call::Cas { expected, new }, Some(Return::CasOk)) => Step::CasOk {
            expected: values.id(expected),
            new: put(new, values),
        },
        (Call::Cas { expected, .. }, Some(Return::CasFailed { current })) => Step::CasFailed {
            expected: values.id(expected),
            current: values.id(current),
        },
        (call, Some(ret)) => panic!("answer {ret:?} does not fit call {call:?}"),
    })
}

/// The values an operation shows to have been in the register: what a read
/// or a failed compare-and-swap returned, and what any compare-and-swap
/// expected.
pub fn observed(step: Step) -> [Option<State>; 2] {
    match step {
        Step::Get(v) => [Some(v), None],
        Step::CasOk { expected, .. } | Step::UnknownCas { expected, .. } => [Some(expected), None],
        Step::CasFailed { expected, current } => [Some(expected), Some(current)],
        Step::Put(_) | Step::UnknownPut(_) => [None, None],
    }
}

/// The value a write with an unknown outcome would have written.
pub fn unknown_write(step: Step) -> Option<State> {
    match step {
        Step::UnknownPut(v) | Step::UnknownCas { new: v, .. } => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_register_answers_as_specified() {
        assert_eq!(apply(ABSENT, Step::Put(3)), Some(3));
        assert_eq!(apply(3, Step::Get(3)), Some(3));
        assert_eq!(apply(3, Step::Get(ABSENT)), None);
        assert_eq!(
            apply(
                ABSENT,
                Step::CasOk {
                    expected: ABSENT,
                    new: 1
                }
            ),
            Some(1)
        );
        assert_eq!(
            apply(
                2,
                Step::CasOk {
                    expected: 1,
                    new: 4
                }
            ),
            None
        );
        assert_eq!(
            apply(
                2,
                Step::CasFailed {
                    expected: 1,
                    current: 2
                }
            ),
            Some(2)
        );
        // A failed swap must report the value that made it fail…
        assert_eq!(
            apply(
                2,
                Step::CasFailed {
                    expected: 1,
                    current: 5
                }
            ),
            None
        );
        // …and cannot fail when the register held what it expected.
        assert_eq!(
            apply(
                1,
                Step::CasFailed {
                    expected: 1,
                    current: 1
                }
            ),
            None
        );
        assert_eq!(
            apply(
                1,
                Step::UnknownCas {
                    expected: 1,
                    new: 2
                }
            ),
            Some(2)
        );
        assert_eq!(
            apply(
                3,
                Step::UnknownCas {
                    expected: 1,
                    new: 2
                }
            ),
            Some(3)
        );
    }
}
