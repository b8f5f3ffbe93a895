//! Start-up: what fell due, exited or moved while the daemon was down.

use super::*;

#[test]
fn what_fell_due_while_down_is_removed_by_the_first_commit() {
    let mut rig = Rig::new();
    rig.create("short", "10s");
    rig.create("long", "1h");
    let disk = std::mem::take(&mut rig.disk);
    let rig = Rig::recovered(disk, T0.checked_add(secs(60)).unwrap());
    assert_eq!(rig.disk_names(), ["long"]);
    assert_eq!(rig.edges, [Edge::Held], "held from the previous run");
}

#[test]
fn what_fell_due_while_down_beyond_one_slice_expires_in_the_next_turns() {
    // A commit of every due row of a large state would not fit in the log
    // (100k expiries need about 40 MB): the daemon would not start.
    let mut rig = Rig::new();
    let count = MAX_EXPIRIES_PER_TURN + 10;
    for i in 0..count {
        assert_eq!(rig.create(&format!("t{i}"), "10s"), 201);
    }
    rig.create("long", "1h");
    let disk = std::mem::take(&mut rig.disk);
    let mut rig = Rig::recovered(disk, T0.checked_add(secs(60)).unwrap());
    assert_eq!(rig.disk.rows.len(), 11, "one slice in the first commit");
    assert_eq!(
        rig.core.poll_timeout(rig.now()),
        Some(rig.now().mono),
        "the rest is due at once"
    );
    rig.turn(&[]);
    assert_eq!(rig.disk_names(), ["long"]);
    assert_eq!(rig.names(), ["long"]);
}

#[test]
fn a_bound_process_gone_while_down_is_released_at_start() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    rig.ask(
        Method::Post,
        "/v1/tasks",
        r#"{"name":"job","expire":"1h","pid":77}"#,
    );
    let disk = std::mem::take(&mut rig.disk);
    // The new rig's machine runs nothing.
    let rig = Rig::recovered(disk, T0.checked_add(secs(5)).unwrap());
    assert!(rig.disk_names().is_empty());
    assert_eq!(rig.event_kinds().last(), Some(&EventKind::Idle));
}

#[test]
fn a_clock_set_back_while_down_moves_the_holds_back() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    let before = rig.disk.rows["a"].expires_at;
    let disk = std::mem::take(&mut rig.disk);
    let rig = Rig::recovered(disk, T0.saturating_sub(secs(3600)));
    assert_eq!(
        rig.disk.rows["a"].expires_at,
        before.saturating_sub(secs(3600))
    );
    assert_eq!(rig.core.metrics().clock_steps_backward, 1);
}
