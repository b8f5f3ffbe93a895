//! What kept the machine awake: the usage report and the hold limit, across
//! restarts.

use super::*;

fn usage(rig: &mut Rig, query: &str) -> serde_json::Value {
    let response = rig.ask(Method::Get, &format!("/v1/usage?{query}"), "");
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    serde_json::from_slice(&response.body).expect("JSON")
}

fn limited(limit: u64) -> Settings {
    Settings {
        max_held_for: Some(secs(limit)),
        ..settings()
    }
}

#[test]
fn the_usage_report_adds_up_holds_and_survives_a_restart() {
    let mut rig = Rig::new();
    rig.create("a", "1h");
    rig.advance(secs(1));
    rig.create("b", "1h");
    rig.advance(secs(2));
    assert_eq!(rig.ask(Method::Delete, "/v1/tasks/a", "").status, 204);
    rig.advance(secs(3));
    let report = usage(&mut rig, "since=1h");
    assert_eq!(report["held_seconds"], 6.0);
    assert_eq!(report["held_now"], true);
    let rows = report["tasks"].as_array().unwrap();
    let figures: Vec<_> = rows
        .iter()
        .map(|row| {
            (
                row["name"].as_str().unwrap().to_owned(),
                row["held_seconds"].as_f64().unwrap(),
                row["sole_seconds"].as_f64().unwrap(),
                row["held_now"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        figures,
        [("b".into(), 5.0, 3.0, true), ("a".into(), 3.0, 1.0, false)]
    );
    assert_eq!(rows[0]["uid"], UID);
    // The history comes back from the disk: the same report, the live
    // hold still counting up to now.
    let disk = std::mem::take(&mut rig.disk);
    let mut rig = Rig::recovered(disk, rig.wall);
    let again = usage(&mut rig, "since=1h");
    assert_eq!(again["tasks"], report["tasks"]);
    assert_eq!(again["held_seconds"], 6.0);
}

#[test]
fn a_bad_window_is_a_400_with_a_sentence() {
    let mut rig = Rig::new();
    for query in [
        "since=yesterday",
        "since=1h&until=2h",
        "buckets=5000",
        "until=%zz",
    ] {
        let response = rig.ask(Method::Get, &format!("/v1/usage?{query}"), "");
        assert_eq!(response.status, 400, "{query}");
        assert!(!error_of(&response).is_empty(), "{query}");
    }
    assert_eq!(
        rig.ask(Method::Post, "/v1/usage", "{}").status,
        405,
        "the report is read-only"
    );
}

#[test]
fn a_tripped_name_stays_tripped_across_a_restart_until_deleted() {
    let mut rig = Rig::recovered_with(Disk::default(), T0, Machine::default(), limited(3));
    let refresh = r#"{"expire":"2s"}"#;
    assert_eq!(rig.ask(Method::Put, "/v1/tasks/loop", refresh).status, 200);
    for _ in 0..4 {
        rig.advance(Duration::from_millis(500));
        assert_eq!(rig.ask(Method::Put, "/v1/tasks/loop", refresh).status, 200);
    }
    rig.advance(secs(1));
    let refused = rig.ask(Method::Put, "/v1/tasks/loop", refresh);
    assert_eq!(refused.status, 409);
    assert!(
        error_of(&refused).contains("held for 3s"),
        "{}",
        error_of(&refused)
    );
    assert_eq!(rig.core.metrics().capped, 1);
    assert!(rig.event_kinds().contains(&EventKind::Capped));

    let disk = std::mem::take(&mut rig.disk);
    let mut rig = Rig::recovered_with(disk, rig.wall, Machine::default(), limited(3));
    assert_eq!(rig.ask(Method::Put, "/v1/tasks/loop", refresh).status, 409);
    let status = rig.ask(Method::Get, "/v1/status", "");
    let status: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(status["tripped_count"], 1);
    assert_eq!(status["tripped"][0]["task"], "loop");
    assert_eq!(status["tripped"][0]["limit_seconds"], 3.0);

    assert_eq!(rig.ask(Method::Delete, "/v1/tasks/loop", "").status, 204);
    assert_eq!(rig.event_kinds().last(), Some(&EventKind::Rearmed));
    let disk = std::mem::take(&mut rig.disk);
    let mut rig = Rig::recovered_with(disk, rig.wall, Machine::default(), limited(3));
    let r = rig.ask(Method::Put, "/v1/tasks/loop", refresh);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}
