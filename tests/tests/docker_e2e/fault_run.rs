//! The fault run: clients put, get and compare-and-swap on a few keys while
//! the nemesis kills, stops, pauses and partitions members (one member cut
//! off from its peers, or several cut off together, while clients still reach
//! every member); then the history is checked for linearizability, key by key,
//! every acknowledged write of a unique key must be there at the end, none
//! refused as never applied may be, and no write whose client gave up may take
//! effect later than its deadline plus kv.proto's bound (issue 22, lateness.rs).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kuberaft_tests::cluster::wait_for_leader;
use kuberaft_tests::docker::cluster::{DockerCluster, Spec};
use kuberaft_tests::docker::{nemesis, report};
use kuberaft_tests::lateness;
use kuberaft_tests::linearizability::{self as lin, Recorder, Verdict};
use kuberaft_tests::workload::{self, UNIQUE_PREFIX};

use crate::support::{ELECTION, runtime, turn, wait_ready};

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
    )
}

/// Search steps allowed per key before the checker gives up (and the test
/// fails: an unchecked history proves nothing).
const CHECK_BUDGET: u64 = 50_000_000;

/// How long after its client's deadline a write may still take effect while a majority of the
/// members reach each other (kv.proto): 500 ms of clock skew, then electing a leader that holds
/// the entry (a few election timeouts of 150-300 ms) on a busy machine.
const LATE_BOUND: Duration = Duration::from_secs(4);

#[test]
fn fault_run_of_five_members_is_linearizable_and_loses_no_acknowledged_write() {
    let Some(_turn) = turn() else { return };
    let seconds = env_u64("DOCKER_E2E_SECONDS").unwrap_or(120);
    let seed = env_u64("DOCKER_E2E_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let c = DockerCluster::start(Spec::demo(5));
    let rt = runtime();
    let all = c.client_addrs();
    rt.block_on(wait_for_leader(&all, ELECTION));
    rt.block_on(wait_ready(&all, ELECTION));

    let keys: Vec<String> = (0..6).map(|i| format!("register-{i}")).collect();
    let recorder = Arc::new(Recorder::default());
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let clients = rt.spawn(workload::run(
        all.clone(),
        workload::Config {
            clients: 8,
            keys: keys.clone(),
            request_timeout: Duration::from_millis(1500),
            unique_share: 0.1,
            max_think: Duration::from_millis(10),
            seed,
        },
        tokio::time::Instant::from_std(until),
        recorder.clone(),
    ));
    let scans = rt.spawn(lateness::poll(
        all.clone(),
        UNIQUE_PREFIX,
        Duration::from_millis(250),
        Duration::from_millis(1500),
        tokio::time::Instant::from_std(until),
        recorder.clone(),
    ));
    let faults = nemesis::run(
        &c,
        &nemesis::Config {
            max_faulty: 2,
            hold: (Duration::from_millis(1500), Duration::from_secs(4)),
            settle: (Duration::from_secs(1), Duration::from_secs(3)),
            seed,
        },
        until,
        &recorder,
        rt.handle(),
    );
    let unique = rt.block_on(clients).expect("the clients finished");
    let scans = rt.block_on(scans).expect("the scans finished");

    // Healed: every member follows one leader again; read the final state.
    rt.block_on(wait_for_leader(&all, Duration::from_secs(60)));
    rt.block_on(wait_ready(&all, Duration::from_secs(60)));
    rt.block_on(workload::final_reads(
        &all,
        &keys,
        &recorder,
        Duration::from_secs(30),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let present: HashSet<String> = rt
        .block_on(workload::scan_all(&all[0], UNIQUE_PREFIX))
        .unwrap_or_else(|e| panic!("scan of the unique keys: {e}"))
        .into_iter()
        .collect();
    let lost: Vec<&String> = unique
        .acknowledged
        .iter()
        .filter(|k| !present.contains(*k))
        .collect();
    let attempted: HashSet<&String> = unique
        .acknowledged
        .iter()
        .chain(&unique.unknown)
        .chain(&unique.refused)
        .collect();
    let invented: Vec<&String> = present.iter().filter(|k| !attempted.contains(k)).collect();
    let resurrected: Vec<&String> = unique
        .refused
        .iter()
        .filter(|k| present.contains(*k))
        .collect();
    let bound = LATE_BOUND.as_nanos() as u64;
    let absences = lateness::absences(
        &unique.timed_out,
        &scans,
        &present,
        &faults.no_quorum,
        bound,
    );
    let late: Vec<&lateness::Late> = absences.iter().filter(|l| l.absent_after > bound).collect();
    let latest_absence = absences.iter().map(|l| l.absent_after).max().unwrap_or(0);

    let history = recorder.history();
    let check_started = Instant::now();
    let reports = lin::check(&history, CHECK_BUDGET);
    let check_time = check_started.elapsed();
    let unknown = history.iter().filter(|o| o.completed.is_none()).count();
    let violations: Vec<&lin::Violation> = reports
        .iter()
        .filter_map(|r| match &r.verdict {
            Verdict::NotLinearizable(v) => Some(&**v),
            _ => None,
        })
        .collect();
    let gave_up: Vec<&str> = reports
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::GaveUp { .. }))
        .map(|r| r.key.as_str())
        .collect();
    let anomalies = violations.len()
        + gave_up.len()
        + lost.len()
        + invented.len()
        + resurrected.len()
        + late.len();
    assert!(
        lateness_check_catches_a_planted_late_write(&scans, &present, bound),
        "the lateness check found nothing wrong with a write planted as late in this run's scans"
    );
    assert!(
        checker_catches_a_planted_anomaly(&history),
        "the checker accepted this history with a read of a value nobody wrote planted in it"
    );

    report(&format!(
        "fault run ({seconds} s, seed {seed}, 5 members, 8 clients): {} operations on {} keys \
         ({unknown} unknown outcomes, {} unobserved unknown writes dropped), \
         {} faults {:?}, unique writes {} acknowledged / {} unknown / {} present, \
         {} refused as never applied; of {} that timed out, {} took effect ({} outside rounds \
         without a quorum, seen absent at most {:.2} s after their deadline; bound {:.1} s, \
         {} linearizable scans); checked in {:.2} s: {anomalies} anomalies",
        history.len(),
        reports.len(),
        reports.iter().map(|r| r.dropped_unobserved).sum::<usize>(),
        faults.faults(),
        faults.counts,
        unique.acknowledged.len(),
        unique.unknown.len(),
        present.len(),
        unique.refused.len(),
        unique.timed_out.len(),
        unique
            .timed_out
            .iter()
            .filter(|w| present.contains(&w.key))
            .count(),
        absences.len(),
        latest_absence as f64 / 1e9,
        LATE_BOUND.as_secs_f64(),
        scans.len(),
        check_time.as_secs_f64(),
    ));
    for r in &reports {
        report(&format!(
            "  {}: {} operations, {} unknown, {}",
            r.key,
            r.operations,
            r.unknown_outcomes,
            match &r.verdict {
                Verdict::Linearizable => "linearizable".to_string(),
                Verdict::NotLinearizable(_) => "NOT LINEARIZABLE".to_string(),
                Verdict::GaveUp { steps } => format!("checker gave up after {steps} steps"),
            }
        ));
    }
    if anomalies == 0 {
        return;
    }
    let saved = save_history(&history);
    let mut why = String::new();
    for v in &violations {
        why.push_str(&format!("{v}\n"));
    }
    if !gave_up.is_empty() {
        why.push_str(&format!(
            "the checker gave up on keys {gave_up:?}: no verdict\n"
        ));
    }
    if !lost.is_empty() {
        why.push_str(&format!(
            "{} acknowledged writes are missing at the end, e.g. {:?}\n",
            lost.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    if !resurrected.is_empty() {
        why.push_str(&format!(
            "{} writes refused as never applied exist at the end, e.g. {:?}\n",
            resurrected.len(),
            &resurrected[..resurrected.len().min(10)]
        ));
    }
    for l in &late {
        why.push_str(&format!("took effect too late: {l}\n"));
    }
    if !invented.is_empty() {
        why.push_str(&format!(
            "{} keys exist that no client wrote, e.g. {:?}\n",
            invented.len(),
            &invented[..invented.len().min(10)]
        ));
    }
    panic!(
        "{anomalies} anomalies in the fault run (seed {seed}; history saved to {saved}):\n{why}\nfaults:\n{faults}"
    );
}

/// A checker that cannot fail proves nothing: on a copy of this very
/// history whose last successful read returns a value nobody wrote, it must
/// report a violation.
fn checker_catches_a_planted_anomaly(history: &[lin::Operation]) -> bool {
    let mut planted = history.to_vec();
    let Some(read) = planted
        .iter()
        .rposition(|o| matches!(o.completed, Some((_, lin::Return::Get(_)))))
    else {
        return false;
    };
    let key = planted[read].key.clone();
    if let Some((at, _)) = planted[read].completed.clone() {
        planted[read].completed = Some((at, lin::Return::Get(Some("planted".into()))));
    }
    let ops: Vec<lin::Operation> = planted.into_iter().filter(|o| o.key == key).collect();
    matches!(
        lin::wgl::check_key(&key, &ops, CHECK_BUDGET).verdict,
        Verdict::NotLinearizable(_)
    )
}

/// The lateness check on this run's own scans: a key the scans saw appear, planted as a put that
/// timed out `bound` before the last scan that did not see it, must be reported late (so the scans
/// did run through the faults and their answers mean something).
fn lateness_check_catches_a_planted_late_write(
    scans: &[lateness::Scan],
    present: &HashSet<String>,
    bound: u64,
) -> bool {
    // A pair later than `bound` into the run, so that the planted deadline is after its start.
    let later = scans
        .iter()
        .position(|s| s.sent_at > bound + 1)
        .unwrap_or(scans.len());
    let Some((absent_in, key)) = scans[later..].windows(2).find_map(|pair| {
        pair[1]
            .keys
            .iter()
            .find(|k| !pair[0].keys.contains(*k) && present.contains(*k))
            .map(|k| (pair[0].sent_at, k.clone()))
    }) else {
        return false;
    };
    let Some(deadline) = absent_in.checked_sub(bound + 1) else {
        return false;
    };
    let planted = lateness::TimedOut {
        key,
        sent_at: deadline.saturating_sub(1),
        deadline,
    };
    !lateness::late_writes(&[planted], scans, present, &[], bound).is_empty()
}

/// Writes the history as JSON lines under tests/artifacts/ for a closer look.
fn save_history(history: &[lin::Operation]) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    let path = dir.join(format!("docker-e2e-history-{}.jsonl", std::process::id()));
    let lines: String = history
        .iter()
        .filter_map(|op| serde_json::to_string(op).ok())
        .map(|l| l + "\n")
        .collect();
    match std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, lines)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(not saved: {e})"),
    }
}
