//! Unit tests of the health state machine: every transition, the probe gate and the hold
//! periods, on a clock the tests move.

use super::*;

/// The documented defaults: failing after 3, held after 10 over a minute, probes from
/// 30 s to 10 min.
fn policy() -> HealthPolicy {
    HealthPolicy::default()
}

fn fail(at_ms: u64) -> AttemptResult {
    AttemptResult {
        ok: false,
        status: Some(500),
        error: Some("HTTP 500".into()),
        at_ms,
        probe: false,
    }
}

fn ok(at_ms: u64) -> AttemptResult {
    AttemptResult {
        ok: true,
        status: Some(200),
        error: None,
        at_ms,
        probe: false,
    }
}

#[test]
fn three_failures_in_a_row_make_it_failing_and_a_success_heals_it() {
    let p = policy();
    let mut h = DestinationHealth::new(0);
    assert_eq!(h.record(&fail(1), &p), None);
    assert_eq!(h.record(&fail(2), &p), None);
    assert_eq!(h.record(&fail(3), &p), Some(Change::Failing));
    assert_eq!(h.state, HealthState::Failing);
    assert_eq!(h.record(&fail(4), &p), None, "failing is announced once");
    assert_eq!(
        h.record(&ok(5), &p),
        Some(Change::Recovered { by_operator: false })
    );
    assert_eq!(h.state, HealthState::Healthy);
    assert_eq!(h.last_success_ms, Some(5));
}

#[test]
fn an_error_share_over_the_window_makes_it_failing_without_a_streak() {
    let p = policy();
    let mut h = DestinationHealth::new(0);
    let mut changes = Vec::new();
    // Fail, ok, fail, ok...: never two failures in a row, half of them failed.
    for i in 0..40 {
        let a = if i % 2 == 0 { fail(i) } else { ok(i) };
        changes.extend(h.record(&a, &p));
    }
    assert_eq!(changes.first(), Some(&Change::Failing));
    // Attempts older than the window no longer count.
    let later = 1_000_000;
    for i in 0..30 {
        h.record(&ok(later + i), &p);
    }
    assert_eq!(h.state, HealthState::Healthy);
    assert!(h.error_share().unwrap() < 0.01);
}

#[test]
fn held_after_enough_failures_for_long_enough_then_probes_back_off() {
    let p = policy();
    let mut h = DestinationHealth::new(0);
    // Ten failures within one second are not yet "a minute of failure".
    for i in 0..10 {
        assert_ne!(
            h.record(&fail(i * 100), &p),
            Some(Change::Held { by_operator: false })
        );
    }
    assert_eq!(h.state, HealthState::Failing);
    assert_eq!(
        h.record(&fail(60_000), &p),
        Some(Change::Held { by_operator: false })
    );
    assert_eq!(
        h.gate(60_001),
        Gate::Closed(Some(Duration::from_millis(29_999)))
    );
    assert_eq!(h.gate(90_000), Gate::Probe);
    assert_eq!(
        h.gate(90_001),
        Gate::Closed(Some(Duration::from_millis(29_999)))
    );
    // The probe fails: the next one comes 60 s after it, then 120 s, ... up to 600 s.
    h.record(
        &AttemptResult {
            probe: true,
            ..fail(90_010)
        },
        &p,
    );
    assert_eq!(h.probe_interval_ms, 60_000);
    assert_eq!(h.next_probe_ms, 150_010);
    for n in 0..10 {
        let at = h.next_probe_ms;
        assert_eq!(h.gate(at), Gate::Probe, "probe {n}");
        h.record(
            &AttemptResult {
                probe: true,
                ..fail(at)
            },
            &p,
        );
    }
    assert_eq!(h.probe_interval_ms, 600_000, "capped at probe_max");
    // A failure from a delivery started before the hold does not move the probes.
    let next = h.next_probe_ms;
    h.record(&fail(next - 5), &p);
    assert_eq!(h.next_probe_ms, next);
    // A probe that succeeds resumes delivery.
    assert_eq!(h.gate(next), Gate::Probe);
    assert_eq!(
        h.record(
            &AttemptResult {
                probe: true,
                ..ok(next + 10)
            },
            &p
        ),
        Some(Change::Recovered { by_operator: false })
    );
    assert_eq!(h.gate(next + 11), Gate::Open);
    assert_eq!(h.consecutive_failures, 0);
}

#[test]
fn hold_after_failures_zero_never_holds() {
    let p = HealthPolicy {
        hold_after_failures: 0,
        ..policy()
    };
    let mut h = DestinationHealth::new(0);
    for i in 0..1000 {
        h.record(&fail(i * 1000), &p);
    }
    assert_eq!(h.state, HealthState::Failing);
}

#[test]
fn an_operator_hold_sends_no_probes_and_only_a_release_ends_it() {
    let p = policy();
    let mut h = DestinationHealth::new(0);
    assert_eq!(
        h.hold_by_operator(10, &p),
        Some(Change::Held { by_operator: true })
    );
    assert_eq!(h.hold_by_operator(11, &p), None);
    assert_eq!(h.gate(10_000_000), Gate::Closed(None));
    assert_eq!(
        h.record(&ok(20), &p),
        None,
        "a late success does not release"
    );
    assert_eq!(h.state, HealthState::Held);
    assert_eq!(
        h.release(5_000),
        Some(Change::Recovered { by_operator: true })
    );
    assert_eq!(h.release(5_001), None);
    assert_eq!(h.gate(5_002), Gate::Open);
    assert_eq!(
        h.holds.held_between(0, 10_000),
        Duration::from_millis(4_990)
    );
}

#[test]
fn held_time_counts_only_the_overlap_with_the_asked_interval() {
    let mut holds = HoldHistory::default();
    holds.start(1_000);
    holds.end(2_000);
    holds.start(5_000);
    // Open: counts up to the end of the interval asked about.
    assert_eq!(holds.held_between(0, 10_000), Duration::from_millis(6_000));
    assert_eq!(
        holds.held_between(1_500, 6_000),
        Duration::from_millis(1_500)
    );
    assert_eq!(holds.held_between(2_000, 5_000), Duration::ZERO);
    holds.end(7_000);
    assert_eq!(holds.held_between(0, 10_000), Duration::from_millis(3_000));
}

#[test]
fn the_persisted_form_keeps_the_hold_and_drops_the_window() {
    let p = policy();
    let mut h = DestinationHealth::new(0);
    for i in 0..10 {
        h.record(&fail(i * 10_000), &p);
    }
    h.record(&fail(100_000), &p);
    assert_eq!(h.state, HealthState::Held);
    let back: DestinationHealth = serde_json::from_slice(&serde_json::to_vec(&h).unwrap()).unwrap();
    assert_eq!(back.state, HealthState::Held);
    assert_eq!(back.next_probe_ms, h.next_probe_ms);
    assert_eq!(back.holds, h.holds);
    assert!(back.window.is_empty());
}
