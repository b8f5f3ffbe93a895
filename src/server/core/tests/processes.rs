//! Bound processes: watches, exits, heartbeats, refusals.

use super::*;

#[test]
fn a_bound_task_is_watched_and_released_when_its_process_exits() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    let body = r#"{"name":"job","expire":"1h","pid":77}"#;
    assert_eq!(rig.ask(Method::Post, "/v1/tasks", body).status, 201);
    let binding = Binding {
        pid: 77,
        start_time: 5,
    };
    assert_eq!(
        rig.watch_changes,
        [WatchChange::Watch(TaskName::parse("job").unwrap(), binding)]
    );
    rig.core
        .process_exited(TaskName::parse("job").unwrap(), binding);
    assert_eq!(rig.core.poll_timeout(rig.now()), Some(rig.now().mono));
    rig.turn(&[]);
    assert!(rig.disk_names().is_empty());
    assert_eq!(rig.event_kinds().last(), Some(&EventKind::Idle));
    assert_eq!(rig.core.metrics().released, 1);
}

#[test]
fn a_heartbeat_for_the_watched_process_asks_the_machine_nothing() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    let body = r#"{"expire":"1m","pid":77}"#;
    for _ in 0..3 {
        assert_eq!(rig.ask(Method::Put, "/v1/tasks/job", body).status, 200);
    }
    assert_eq!(rig.machine.binds, 1);
    assert_eq!(
        rig.machine.holders, 1,
        "the holder is read once a connection"
    );
}

#[test]
fn binding_a_process_the_machine_cannot_see_is_refused_with_its_sentence() {
    let mut rig = Rig::new();
    let response = rig.ask(
        Method::Post,
        "/v1/tasks",
        r#"{"name":"job","expire":"1m","pid":78}"#,
    );
    assert_eq!(response.status, 422);
    assert_eq!(error_of(&response), "no process 78");
    assert_eq!(rig.disk.commits, 0);
}

#[test]
fn deleting_a_bound_task_stops_its_watch() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    rig.ask(
        Method::Post,
        "/v1/tasks",
        r#"{"name":"job","expire":"1m","pid":77}"#,
    );
    rig.ask(Method::Delete, "/v1/tasks/job", "");
    assert_eq!(
        rig.watch_changes.last(),
        Some(&WatchChange::Unwatch(TaskName::parse("job").unwrap()))
    );
    assert_eq!(rig.core.watched_len(), 0);
}

#[test]
fn an_exit_reported_after_the_task_is_gone_is_dropped() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    rig.ask(
        Method::Post,
        "/v1/tasks",
        r#"{"name":"job","expire":"1m","pid":77}"#,
    );
    rig.ask(Method::Delete, "/v1/tasks/job", "");
    let commits = rig.disk.commits;
    rig.core.process_exited(
        TaskName::parse("job").unwrap(),
        Binding {
            pid: 77,
            start_time: 5,
        },
    );
    rig.turn(&[]);
    assert_eq!(rig.disk.commits, commits, "nothing to release");
    assert_eq!(
        rig.core.poll_timeout(rig.now()),
        None,
        "nothing keeps it awake"
    );
}

#[test]
fn a_process_that_cannot_be_watched_holds_until_its_expiry() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    rig.ask(
        Method::Post,
        "/v1/tasks",
        r#"{"name":"job","expire":"1m","pid":77}"#,
    );
    rig.core.watch_failed(&TaskName::parse("job").unwrap());
    assert_eq!(rig.core.watched_len(), 0);
    rig.advance(secs(59));
    assert_eq!(rig.disk_names(), ["job"]);
    rig.advance(secs(1));
    assert!(rig.disk_names().is_empty());
}

#[test]
fn a_bound_process_replaced_under_the_same_pid_is_released_at_the_next_load() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    rig.ask(
        Method::Post,
        "/v1/tasks",
        r#"{"name":"job","expire":"1h","pid":77}"#,
    );
    rig.machine.running.insert(77, 6);
    let disk = std::mem::take(&mut rig.disk);
    let mut restarted = Rig::recovered_on(disk, rig.wall, rig.machine);
    assert!(restarted.disk_names().is_empty());
    assert_eq!(restarted.create("job", "1m"), 201, "the name is free again");
}
