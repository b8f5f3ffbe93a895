//! Held and idle edges, and the status line.

use super::*;

#[test]
fn the_edges_alternate_with_the_first_and_last_task() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    rig.create("b", "10s");
    assert_eq!(rig.edges, [Edge::Held]);
    assert_eq!(rig.ask(Method::Delete, "/v1/tasks/a", "").status, 204);
    assert_eq!(rig.edges, [Edge::Held], "b still holds");
    assert_eq!(rig.ask(Method::Delete, "/v1/tasks/b", "").status, 204);
    let idle_at = rig.now().wall;
    assert_eq!(rig.edges, [Edge::Held, Edge::Idle { at: idle_at }]);
    assert_eq!(rig.core.idle_since(), Some(idle_at));
    rig.create("c", "10s");
    assert_eq!(rig.edges.last(), Some(&Edge::Held));
    assert_eq!(rig.core.idle_since(), None);
}

#[test]
fn an_expiry_that_empties_the_machine_is_an_idle_edge() {
    let mut rig = Rig::new();
    rig.create("a", "3s");
    rig.advance(secs(3));
    assert!(matches!(
        rig.edges.as_slice(),
        [Edge::Held, Edge::Idle { .. }]
    ));
    assert!(!rig.core.is_held());
}

#[test]
fn the_status_line_says_who_holds() {
    let mut rig = Rig::new();
    assert_eq!(rig.core.status_line(), "idle");
    rig.create("a", "10s");
    assert_eq!(rig.core.status_line(), "held by 1 task");
    rig.create("b", "10s");
    assert_eq!(rig.core.status_line(), "held by 2 tasks");
    rig.ask(Method::Delete, "/v1/tasks/a", "");
    rig.ask(Method::Delete, "/v1/tasks/b", "");
    assert!(rig.core.status_line().starts_with("idle since "));
}
