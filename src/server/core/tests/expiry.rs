//! Expiry: to its deadline and not a turn longer, in slices.

use super::*;

#[test]
fn the_poll_timeout_is_the_next_expiry() {
    let mut rig = Rig::new();
    assert_eq!(rig.core.poll_timeout(rig.now()), None);
    rig.create("a", "30s");
    rig.create("b", "10s");
    let now = rig.now();
    assert_eq!(rig.core.poll_timeout(now), Some(now.mono + secs(10)));
}

#[test]
fn a_task_lives_until_its_expiry_and_not_a_turn_longer() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    rig.advance(Duration::from_millis(9_999));
    assert_eq!(rig.disk_names(), ["a"], "gone before its expiry");
    rig.advance(Duration::from_millis(1));
    assert!(rig.disk_names().is_empty(), "live past its expiry");
    assert_eq!(rig.event_kinds().last(), Some(&EventKind::Idle));
    assert_eq!(rig.core.metrics().expired, 1);
}

#[test]
fn a_refresh_moves_the_expiry() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    rig.advance(secs(8));
    assert_eq!(
        rig.ask(Method::Put, "/v1/tasks/a", r#"{"expire":"10s"}"#)
            .status,
        200
    );
    rig.advance(secs(8));
    assert_eq!(rig.disk_names(), ["a"]);
    rig.advance(secs(2));
    assert!(rig.disk_names().is_empty());
}

#[test]
fn expiries_falling_due_together_are_committed_in_slices() {
    let mut rig = Rig::new();
    let count = MAX_EXPIRIES_PER_TURN + 10;
    let now = rig.now();
    for i in 0..count {
        let body = format!(r#"{{"name":"t{i}","expire":"5s"}}"#);
        let request = Request {
            method: Method::Post,
            target: "/v1/tasks".into(),
            minor_version: 1,
            keep_alive: true,
            body: body.into_bytes(),
        };
        rig.core.start_turn(now);
        let handled = rig
            .core
            .handle(&mut rig.machine, ConnId(1), &request, false, &rig.date, now);
        assert!(matches!(handled, Handled::Planned(_)));
        rig.core.seal_turn(now);
        rig.settle();
        rig.core.finish_turn();
    }
    assert_eq!(rig.disk.rows.len(), count);
    rig.advance(secs(5));
    assert_eq!(rig.disk.rows.len(), 10, "one slice per turn");
    assert_eq!(
        rig.core.poll_timeout(rig.now()),
        Some(rig.now().mono),
        "the rest is due at once"
    );
    rig.turn(&[]);
    assert!(rig.disk.rows.is_empty());
}
