//! Steps of the wall clock, forward and back, on a healthy and a failing disk.

use super::*;

#[test]
fn a_forward_step_expires_what_it_passed_in_one_commit() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    rig.create("b", "1h");
    let commits = rig.disk.commits;
    rig.step_wall(true, secs(120));
    assert_eq!(rig.disk_names(), ["b"]);
    assert_eq!(rig.disk.commits, commits + 1);
    assert!(rig.event_kinds().contains(&EventKind::Expired));
    assert_eq!(rig.core.metrics().clock_steps_forward, 1);
}

#[test]
fn a_step_back_moves_every_hold_with_it_and_keeps_its_remaining_time() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    let before = rig.disk.rows["a"].expires_at;
    rig.step_wall(false, secs(600));
    assert_eq!(
        rig.disk.rows["a"].expires_at,
        before.saturating_sub(secs(600))
    );
    assert_eq!(
        rig.now().wall,
        rig.wall,
        "the timeline follows the wall clock"
    );
    rig.advance(secs(59));
    assert_eq!(rig.disk_names(), ["a"], "not shortened");
    rig.advance(secs(1));
    assert!(rig.disk_names().is_empty(), "not stretched");
    assert_eq!(rig.core.metrics().clock_steps_backward, 1);
}

#[test]
fn a_small_disagreement_of_the_clocks_is_no_step() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    let commits = rig.disk.commits;
    rig.step_wall(false, Duration::from_millis(500));
    assert_eq!(rig.disk.commits, commits);
    assert_eq!(rig.core.metrics().clock_steps_backward, 0);
}

#[test]
fn a_step_back_on_a_failing_disk_stretches_nothing_and_is_taken_once_it_heals() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    let before = rig.disk.rows["a"].expires_at;
    rig.disk.faults.push_back(Fault::Full);
    rig.step_wall(false, secs(600));
    assert_eq!(rig.disk.rows["a"].expires_at, before, "not moved yet");
    assert!(
        rig.now().wall > rig.wall,
        "the old timeline holds meanwhile"
    );
    rig.advance(STORE_RETRY);
    assert_eq!(
        rig.disk.rows["a"].expires_at,
        before.saturating_sub(secs(600))
    );
    assert_eq!(rig.now().wall, rig.wall);
}

#[test]
fn a_step_back_whose_commit_tore_is_taken_when_the_reload_finds_it() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    let before = rig.disk.rows["a"].expires_at;
    rig.disk.faults.push_back(Fault::Torn);
    rig.step_wall(false, secs(600));
    assert_eq!(
        rig.disk.rows["a"].expires_at,
        before.saturating_sub(secs(600))
    );
    assert_eq!(rig.now().wall, rig.wall, "followed after the reload");
    assert_eq!(rig.core.metrics().clock_steps_backward, 1);
}
