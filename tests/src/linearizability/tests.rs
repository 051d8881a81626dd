//! The checker against histories whose answer is known: it must accept the
//! linearizable ones and catch each kind of anomaly (a checker that cannot
//! fail proves nothing).

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::history::{Call, Operation, Return};
use super::wgl::{Verdict, check, check_key};

const MS: u64 = 1_000_000;
const BUDGET: u64 = 10_000_000;

fn v(s: &str) -> Option<String> {
    Some(s.to_string())
}

fn done(client: u32, from_ms: u64, to_ms: u64, call: Call, ret: Return) -> Operation {
    Operation {
        client,
        key: "k".into(),
        call,
        invoked_at: from_ms * MS,
        completed: Some((to_ms * MS, ret)),
    }
}

fn unknown(client: u32, from_ms: u64, call: Call) -> Operation {
    Operation {
        client,
        key: "k".into(),
        call,
        invoked_at: from_ms * MS,
        completed: None,
    }
}

fn put(s: &str) -> Call {
    Call::Put { value: s.into() }
}

fn cas(expected: Option<String>, new: &str) -> Call {
    Call::Cas {
        expected,
        new: new.into(),
    }
}

fn got(s: Option<String>) -> Return {
    Return::Get(s)
}

fn linearizable(ops: &[Operation]) -> bool {
    match check_key("k", ops, BUDGET).verdict {
        Verdict::Linearizable => true,
        Verdict::NotLinearizable(_) => false,
        Verdict::GaveUp { steps } => panic!("gave up after {steps} steps"),
    }
}

#[test]
fn sequential_operations_that_agree_with_a_register_are_linearizable() {
    assert!(linearizable(&[
        done(1, 0, 1, Call::Get, got(None)),
        done(1, 2, 3, put("a"), Return::Put),
        done(2, 4, 5, Call::Get, got(v("a"))),
        done(2, 6, 7, cas(v("a"), "b"), Return::CasOk),
        done(
            1,
            8,
            9,
            cas(v("a"), "c"),
            Return::CasFailed { current: v("b") }
        ),
        done(1, 10, 11, Call::Get, got(v("b"))),
    ]));
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    let write = done(1, 0, 10, put("a"), Return::Put);
    assert!(linearizable(&[
        write.clone(),
        done(2, 1, 2, Call::Get, got(None))
    ]));
    assert!(linearizable(&[
        write.clone(),
        done(2, 1, 2, Call::Get, got(v("a")))
    ]));
    // Once one read saw the new value, a later read may not see the old one.
    assert!(!linearizable(&[
        write,
        done(2, 1, 2, Call::Get, got(v("a"))),
        done(3, 3, 4, Call::Get, got(None)),
    ]));
}

#[test]
fn concurrent_writes_may_take_effect_in_either_order_but_only_one() {
    let a = done(1, 0, 10, put("a"), Return::Put);
    let b = done(2, 0, 10, put("b"), Return::Put);
    for last in ["a", "b"] {
        assert!(linearizable(&[
            a.clone(),
            b.clone(),
            done(3, 11, 12, Call::Get, got(v(last))),
            done(3, 13, 14, Call::Get, got(v(last))),
        ]));
    }
    // a, then b, then a again: a was written once.
    assert!(!linearizable(&[
        a,
        b,
        done(3, 11, 12, Call::Get, got(v("a"))),
        done(3, 13, 14, Call::Get, got(v("b"))),
        done(3, 15, 16, Call::Get, got(v("a"))),
    ]));
}

#[test]
fn a_stale_read_is_caught() {
    assert!(!linearizable(&[
        done(1, 0, 1, put("a"), Return::Put),
        done(1, 2, 3, put("b"), Return::Put),
        done(2, 4, 5, Call::Get, got(v("a"))),
    ]));
}

#[test]
fn a_lost_acknowledged_write_is_caught() {
    assert!(!linearizable(&[
        done(1, 0, 1, put("a"), Return::Put),
        done(2, 2, 3, Call::Get, got(None)),
    ]));
}

#[test]
fn a_value_nobody_wrote_is_caught() {
    assert!(!linearizable(&[
        done(1, 0, 1, put("a"), Return::Put),
        done(2, 2, 3, Call::Get, got(v("zzz"))),
    ]));
}

#[test]
fn two_swaps_from_the_same_value_cannot_both_succeed() {
    assert!(!linearizable(&[
        done(1, 0, 1, put("x"), Return::Put),
        done(2, 2, 10, cas(v("x"), "y"), Return::CasOk),
        done(3, 2, 10, cas(v("x"), "z"), Return::CasOk),
    ]));
    assert!(linearizable(&[
        done(1, 0, 1, put("x"), Return::Put),
        done(2, 2, 10, cas(v("x"), "y"), Return::CasOk),
        done(
            3,
            2,
            10,
            cas(v("x"), "z"),
            Return::CasFailed { current: v("y") }
        ),
    ]));
}

#[test]
fn a_swap_must_fail_exactly_when_the_register_differs() {
    // Succeeded although the register held something else.
    assert!(!linearizable(&[
        done(1, 0, 1, put("x"), Return::Put),
        done(2, 2, 3, cas(v("y"), "z"), Return::CasOk),
    ]));
    // Failed although the register held what it expected.
    assert!(!linearizable(&[
        done(1, 0, 1, put("x"), Return::Put),
        done(
            2,
            2,
            3,
            cas(v("x"), "z"),
            Return::CasFailed { current: v("x") }
        ),
    ]));
    // Failed, but reported a value the register did not hold.
    assert!(!linearizable(&[
        done(1, 0, 1, put("x"), Return::Put),
        done(
            2,
            2,
            3,
            cas(v("y"), "z"),
            Return::CasFailed { current: None }
        ),
    ]));
    // A swap from "absent" creates the key.
    assert!(linearizable(&[
        done(1, 0, 1, cas(None, "x"), Return::CasOk),
        done(2, 2, 3, Call::Get, got(v("x"))),
    ]));
}

#[test]
fn an_unknown_outcome_may_have_taken_effect_or_not() {
    let lost = unknown(1, 0, put("u"));
    // Observed later: it took effect.
    assert!(linearizable(&[
        lost.clone(),
        done(2, 5, 6, Call::Get, got(v("u")))
    ]));
    // Never observed: it did not (or was overwritten unseen).
    assert!(linearizable(&[
        lost.clone(),
        done(2, 5, 6, Call::Get, got(None))
    ]));
    // Taking effect late, after other reads.
    assert!(linearizable(&[
        lost.clone(),
        done(2, 5, 6, Call::Get, got(None)),
        done(2, 7, 8, Call::Get, got(v("u"))),
    ]));
    // But once seen, it cannot be undone.
    assert!(!linearizable(&[
        lost,
        done(2, 5, 6, Call::Get, got(v("u"))),
        done(2, 7, 8, Call::Get, got(None)),
    ]));
}

#[test]
fn an_unknown_outcome_cannot_take_effect_before_it_was_invoked() {
    assert!(!linearizable(&[
        done(1, 0, 1, Call::Get, got(v("u"))),
        unknown(2, 2, put("u")),
    ]));
}

#[test]
fn an_unknown_swap_takes_effect_only_from_what_it_expected() {
    let base = done(1, 0, 1, put("x"), Return::Put);
    assert!(linearizable(&[
        base.clone(),
        unknown(2, 2, cas(v("x"), "y")),
        done(3, 5, 6, Call::Get, got(v("y"))),
    ]));
    assert!(!linearizable(&[
        base,
        unknown(2, 2, cas(v("q"), "y")),
        done(3, 5, 6, Call::Get, got(v("y"))),
    ]));
}

#[test]
fn unobserved_unknown_writes_are_dropped_and_the_rest_still_checked() {
    let mut ops: Vec<Operation> = (0..40)
        .map(|i| unknown(i, i as u64, put(&format!("lost-{i}"))))
        .collect();
    ops.push(done(50, 100, 101, put("a"), Return::Put));
    ops.push(done(50, 102, 103, Call::Get, got(v("a"))));
    let report = check_key("k", &ops, BUDGET);
    assert_eq!(report.dropped_unobserved, 40);
    assert_eq!(report.unknown_outcomes, 40);
    assert!(matches!(report.verdict, Verdict::Linearizable));
    ops.push(done(50, 104, 105, Call::Get, got(None)));
    assert!(matches!(
        check_key("k", &ops, BUDGET).verdict,
        Verdict::NotLinearizable(_)
    ));
}

#[test]
fn keys_are_checked_separately_and_the_violation_names_the_culprit() {
    let mut ops = vec![
        done(1, 0, 1, put("a"), Return::Put),
        done(1, 2, 3, put("b"), Return::Put),
        done(2, 4, 5, Call::Get, got(v("a"))),
    ];
    // The same pattern on another key, where it is fine.
    let mut fine = ops.clone();
    fine[2].completed = Some((5 * MS, got(v("b"))));
    for op in &mut fine {
        op.key = "other".into();
    }
    ops.extend(fine);
    let reports = check(&ops, BUDGET);
    assert_eq!(reports.len(), 2);
    let other = reports.iter().find(|r| r.key == "other").expect("other");
    assert!(matches!(other.verdict, Verdict::Linearizable));
    let k = reports.iter().find(|r| r.key == "k").expect("k");
    let Verdict::NotLinearizable(violation) = &k.verdict else {
        panic!("k must not be linearizable: {:?}", k.verdict);
    };
    assert_eq!(violation.linearized, 2);
    assert_eq!(violation.state.as_deref(), Some("b"));
    assert_eq!(violation.stuck.call, Call::Get);
    assert_eq!(violation.prefix_tail.len(), 2);
    let text = violation.to_string();
    assert!(text.contains("get ⇒ \"a\""), "{text}");
}

#[test]
fn the_search_gives_up_visibly_when_out_of_budget() {
    let ops: Vec<Operation> = (0..12)
        .map(|i| done(i, 0, 100, put(&format!("w{i}")), Return::Put))
        .chain([done(99, 101, 102, Call::Get, got(v("nobody")))])
        .collect();
    assert!(matches!(
        check_key("k", &ops, 50).verdict,
        Verdict::GaveUp { .. }
    ));
}

/// Simulates clients against a true register: each operation takes effect
/// at a random instant inside its interval, some answers are lost. Whatever
/// the interleaving, the history must be accepted; changing one read's answer
/// to a value the register never held must be caught.
#[test]
fn random_histories_of_a_true_register_are_linearizable() {
    for seed in 0..200u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        // (effect time, op index)
        let mut ops: Vec<Operation> = Vec::new();
        let mut effects: Vec<(u64, usize)> = Vec::new();
        let clients = rng.random_range(1..6u32);
        for c in 0..clients {
            let mut t = rng.random_range(0..5u64);
            for n in 0..rng.random_range(1..15u32) {
                let len = rng.random_range(1..20u64);
                let call = match rng.random_range(0..3u8) {
                    0 => Call::Get,
                    1 => put(&format!("{c}.{n}")),
                    _ => cas(
                        if rng.random_bool(0.3) {
                            None
                        } else {
                            v(&format!(
                                "{}.{}",
                                rng.random_range(0..clients),
                                rng.random_range(0..4u32)
                            ))
                        },
                        &format!("{c}.{n}"),
                    ),
                };
                effects.push((t * 100 + rng.random_range(1..len * 100), ops.len()));
                ops.push(Operation {
                    client: c,
                    key: "k".into(),
                    call,
                    invoked_at: t * 100,
                    completed: Some(((t + len) * 100, Return::Put)),
                });
                t += len + rng.random_range(0..3u64);
            }
        }
        effects.sort();
        let mut register: Option<String> = None;
        for (_, i) in effects {
            let ret = match &ops[i].call {
                Call::Get => got(register.clone()),
                Call::Put { value } => {
                    register = Some(value.clone());
                    Return::Put
                }
                Call::Cas { expected, new } => {
                    if &register == expected {
                        register = Some(new.clone());
                        Return::CasOk
                    } else {
                        Return::CasFailed {
                            current: register.clone(),
                        }
                    }
                }
            };
            let at = ops[i].completed.as_ref().map_or(0, |(t, _)| *t);
            // Some writes lose their answer: the outcome becomes unknown.
            ops[i].completed = if ops[i].is_write() && rng.random_bool(0.15) {
                None
            } else {
                Some((at, ret))
            };
        }
        assert!(
            linearizable(&ops),
            "seed {seed}: a true register's history was rejected:\n{}",
            ops.iter().map(|o| format!("{o}\n")).collect::<String>()
        );
        if let Some(read) = ops
            .iter()
            .position(|o| matches!(o.completed, Some((_, Return::Get(_)))))
        {
            let mut bad = ops.clone();
            if let Some((at, _)) = bad[read].completed.clone() {
                bad[read].completed = Some((at, got(v("never-written"))));
            }
            assert!(
                !linearizable(&bad),
                "seed {seed}: a read of a value never written passed"
            );
        }
    }
}
