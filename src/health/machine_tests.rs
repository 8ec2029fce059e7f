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
        h.gate(60_001, &p),
        Gate::Closed(Some(Duration::from_millis(29_999)))
    );
    assert_eq!(h.gate(90_000, &p), Gate::Probe);
    assert_eq!(
        h.gate(90_001, &p),
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
        assert_eq!(h.gate(at, &p), Gate::Probe, "probe {n}");
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
    assert_eq!(h.gate(next, &p), Gate::Probe);
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
    assert_eq!(h.gate(next + 11, &p), Gate::Open);
    assert_eq!(h.consecutive_failures, 0);
}

#[test]
fn a_streak_of_failures_paces_attempts_until_one_succeeds() {
    let p = policy();
    let mut h = DestinationHealth::new(0);
    h.record(&fail(0), &p);
    h.record(&fail(10), &p);
    assert_eq!(h.gate(20, &p), Gate::Open, "two failures: not a streak yet");
    h.record(&fail(20), &p);
    let paced = |fresh, ms| Gate::Paced {
        fresh,
        next_in: Duration::from_millis(ms),
    };
    assert_eq!(h.gate(30, &p), paced(true, 1_000), "one fresh job");
    assert_eq!(h.gate(31, &p), paced(false, 999), "then a second's wait");
    assert_eq!(h.gate(1_030, &p), paced(true, 1_000));
    h.record(&ok(1_040), &p);
    assert_eq!(h.gate(1_041, &p), Gate::Open, "a success ends the pacing");
    let unpaced = HealthPolicy {
        failing_pace: Duration::ZERO,
        ..policy()
    };
    for i in 0..5 {
        h.record(&fail(2_000 + i), &unpaced);
    }
    assert_eq!(h.gate(2_010, &unpaced), Gate::Open, "failing_pace: 0");
    // Refusals (a 4xx) are not paced: those jobs die at once, they do not pile up.
    let mut h = DestinationHealth::new(0);
    for i in 0..5 {
        h.record(
            &AttemptResult {
                status: Some(410),
                ..fail(i)
            },
            &p,
        );
    }
    assert_eq!(h.gate(10, &p), Gate::Open);
    h.record(
        &AttemptResult {
            status: Some(429),
            ..fail(11)
        },
        &p,
    );
    assert!(
        matches!(h.gate(12, &p), Gate::Paced { fresh: true, .. }),
        "429 is retried, so paced"
    );
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
fn refused_credentials_hold_without_probes_and_keep_the_refusal_as_last_error() {
    let p = policy();
    let mut h = DestinationHealth::new(0);
    let refusal = "the OAuth token endpoint refused the credentials (invalid_grant)";
    assert_eq!(
        h.hold_for_credentials(10, &p, refusal.into()),
        Some(Change::CredentialsRefused)
    );
    assert_eq!(h.state, HealthState::Held);
    assert!(h.held_by_operator);
    assert_eq!(h.last_error.as_deref(), Some(refusal));
    assert_eq!(h.gate(10_000_000, &p), Gate::Closed(None), "no probes");
    assert_eq!(h.hold_for_credentials(20, &p, refusal.into()), None);
    // An automatic hold becomes one without probes.
    let mut auto = DestinationHealth::new(0);
    auto.hold(0, false, &p);
    assert_eq!(
        auto.hold_for_credentials(5, &p, refusal.into()),
        Some(Change::CredentialsRefused)
    );
    assert_eq!(auto.gate(10_000_000, &p), Gate::Closed(None));
    assert_eq!(h.release(30), Some(Change::Recovered { by_operator: true }));
    assert_eq!(h.gate(31, &p), Gate::Open);
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
    assert_eq!(h.gate(10_000_000, &p), Gate::Closed(None));
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
    assert_eq!(h.gate(5_002, &p), Gate::Open);
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
