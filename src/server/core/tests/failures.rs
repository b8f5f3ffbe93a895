//! Failed commits, a full log, reloads and the retry timer.

use super::*;

#[test]
fn a_lost_commit_is_503_and_memory_does_not_run_ahead_of_disk() {
    let mut rig = Rig::new();
    rig.disk.faults.push_back(Fault::Lost);
    let response = rig.ask(Method::Post, "/v1/tasks", r#"{"name":"a","expire":"10s"}"#);
    assert_eq!(response.status, 503);
    assert!(error_of(&response).contains("could not be confirmed"));
    assert_eq!(rig.disk.loads, 2, "reloaded at once after the failure");
    assert!(rig.names().is_empty());
    assert!(rig.edges.is_empty(), "no hold was taken");
    assert_eq!(rig.core.metrics().commit_failures, 1);
}

#[test]
fn a_torn_commit_is_503_and_memory_follows_what_reached_the_disk() {
    let mut rig = Rig::new();
    rig.disk.faults.push_back(Fault::Torn);
    assert_eq!(rig.create("a", "10s"), 503);
    assert_eq!(rig.names(), ["a"], "the reload found it on disk");
    assert_eq!(rig.edges, [Edge::Held]);
}

#[test]
fn a_full_log_is_503_with_its_reason_and_needs_no_reload() {
    let mut rig = Rig::new();
    rig.disk.faults.push_back(Fault::Full);
    let response = rig.ask(Method::Post, "/v1/tasks", r#"{"name":"a","expire":"10s"}"#);
    assert_eq!(response.status, 503);
    assert_eq!(error_of(&response), "the log is full");
    assert_eq!(rig.disk.loads, 1, "only the start-up's");
    assert!(rig.core.in_step_with_disk());
    assert_eq!(rig.create("a", "10s"), 201, "the next turn commits again");
}

#[test]
fn after_a_failed_commit_due_expiries_wait_for_the_retry_time() {
    let mut rig = Rig::new();
    rig.create("a", "2s");
    rig.advance(Duration::from_millis(1500));
    rig.disk.faults.push_back(Fault::Full);
    assert_eq!(rig.create("b", "10s"), 503);
    let failed_at = rig.now().mono;
    assert_eq!(
        rig.core.poll_timeout(rig.now()),
        Some(failed_at + STORE_RETRY),
        "the retry, not a busy loop"
    );
    rig.advance(Duration::from_millis(500));
    assert_eq!(rig.disk_names(), ["a"], "expiry waits for the retry time");
    rig.advance(Duration::from_millis(500));
    assert!(rig.disk_names().is_empty());
}

#[test]
fn while_the_disk_cannot_be_read_every_change_is_503_and_reads_still_answer() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    rig.disk
        .faults
        .extend([Fault::Lost, Fault::Unreadable, Fault::Unreadable]);
    assert_eq!(rig.create("b", "60s"), 503);
    assert!(!rig.core.in_step_with_disk());
    // Clients waiting make the turn try to reload: it fails again.
    assert_eq!(rig.create("c", "60s"), 503);
    assert_eq!(rig.ask(Method::Get, "/v1/tasks/a", "").status, 200);
    assert_eq!(rig.disk.commits, 2, "nothing written while in doubt");
    assert_eq!(
        rig.disk.loads, 3,
        "the start-up's, the failure's, the waiting client's"
    );
    rig.advance(STORE_RETRY);
    assert!(rig.core.in_step_with_disk(), "reloaded at the retry time");
    assert_eq!(rig.create("c", "60s"), 201);
}

#[test]
fn a_failed_commit_sends_no_events_to_the_streams() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    assert_eq!(rig.core.take_event_lines().len(), 1);
    rig.disk.faults.push_back(Fault::Lost);
    rig.create("b", "10s");
    assert!(rig.core.take_event_lines().is_empty());
}
