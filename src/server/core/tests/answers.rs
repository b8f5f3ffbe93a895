//! Answers and group commits, read-after-write, metrics.

use super::*;

#[test]
fn a_create_is_answered_201_once_committed_and_is_on_disk() {
    let mut rig = Rig::new();
    assert_eq!(rig.create("build", "10s"), 201);
    assert_eq!(rig.disk_names(), ["build"]);
    assert_eq!(rig.names(), ["build"]);
    assert_eq!(rig.disk.commits, 1);
}

#[test]
fn a_refused_change_commits_nothing() {
    let mut rig = Rig::new();
    assert_eq!(rig.create("build", "10s"), 201);
    assert_eq!(rig.create("build", "10s"), 409);
    assert_eq!(rig.disk.commits, 1, "a refusal costs no commit");
    assert_eq!(rig.core.metrics().commits(), 1);
}

#[test]
fn changes_that_arrive_together_share_one_commit() {
    let mut rig = Rig::new();
    let answers = rig.turn(&[
        (
            1,
            Method::Post,
            "/v1/tasks",
            r#"{"name":"a","expire":"10s"}"#,
        ),
        (
            2,
            Method::Post,
            "/v1/tasks",
            r#"{"name":"b","expire":"10s"}"#,
        ),
        (3, Method::Put, "/v1/tasks/c", r#"{"expire":"10s"}"#),
    ]);
    let statuses: Vec<u16> = answers
        .iter()
        .map(|answer| match answer {
            Answer::Response(response) => response.status,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(statuses, [201, 201, 200]);
    assert_eq!(rig.disk.commits, 1);
}

#[test]
fn a_read_behind_its_connections_change_waits_for_the_commit() {
    let mut rig = Rig::new();
    let answers = rig.turn(&[
        (
            1,
            Method::Post,
            "/v1/tasks",
            r#"{"name":"a","expire":"10s"}"#,
        ),
        (1, Method::Get, "/v1/tasks/a", ""),
        (2, Method::Get, "/v1/tasks/a", ""),
    ]);
    assert!(
        matches!(answers[1], Answer::AfterCommit),
        "{:?}",
        answers[1]
    );
    // Another connection's read is answered from the committed state,
    // which does not have the task yet.
    assert!(matches!(&answers[2], Answer::Response(r) if r.status == 404));
}

#[test]
fn reads_never_show_a_task_past_its_expiry_even_before_it_is_removed() {
    let mut rig = Rig::new();
    assert_eq!(rig.create("a", "2s"), 201);
    // The expiry is due but no turn has removed it: reads filter by now.
    rig.elapsed += secs(3);
    rig.wall = rig.wall.checked_add(secs(3)).unwrap();
    rig.core.observe_clock(rig.wall, rig.base + rig.elapsed);
    let now = rig.now();
    let request = Request {
        method: Method::Get,
        target: "/v1/tasks/a".into(),
        minor_version: 1,
        keep_alive: true,
        body: Vec::new(),
    };
    let handled = rig
        .core
        .handle(&mut rig.machine, ConnId(1), &request, false, &rig.date, now);
    assert!(matches!(handled, Handled::Answer(r) if r.status == 404));
}

#[test]
fn a_request_the_framer_refused_is_counted_and_answered() {
    let mut rig = Rig::new();
    let response = rig.core.refuse(HttpError {
        status: 431,
        message: "headers too large".into(),
    });
    assert_eq!(response.status, 431);
    assert_eq!(error_of(&response), "headers too large");
    assert_eq!(rig.core.metrics().requests(), 1);
}

#[test]
fn metrics_are_rendered_with_the_shells_figures() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    let page = rig.core.metrics_page(
        Outside {
            connections: 7,
            ..Outside::default()
        },
        rig.now(),
    );
    let text = String::from_utf8(page.body).unwrap();
    assert!(text.contains("sprite_tasks_connections 7"), "{text}");
    assert!(text.contains("sprite_tasks_held 1"), "{text}");
}
