use super::*;
use crate::events::EndedHold;

const MS: u64 = 1_000_000;

fn at_ms(ms: u64) -> Timestamp {
    Timestamp::from_nanos(1_000_000 * 1_000 * MS + ms * MS)
}

fn name(text: &str) -> TaskName {
    TaskName::parse(text).unwrap()
}

fn ended(kind: EventKind, task: &str, from_ms: u64, to_ms: u64) -> Event {
    Event {
        seq: 1,
        at: at_ms(to_ms),
        kind,
        task: Some(name(task)),
        expires_at: None,
        step_ns: None,
        reason: None,
        pid: None,
        ended: Some(EndedHold {
            started_at: at_ms(from_ms),
            ended_at: at_ms(to_ms),
            uid: Some(1000),
            command: Some(Arc::from("curl")),
            parent_command: None,
        }),
        limit: (kind == EventKind::Capped).then(|| Duration::from_millis(to_ms - from_ms)),
    }
}

/// The history a restart recovers from `events` at `now`, with the
/// default limits and no floor stored.
fn recovered(events: &[Event], now: Timestamp) -> History {
    History::recovered(
        DEFAULT_USAGE_RETENTION,
        DEFAULT_MAX_USAGE_HOLDS,
        Timestamp::from_nanos(0),
        events,
        now,
    )
}

fn window(since_ms: u64, until_ms: u64) -> Window {
    Window {
        since: at_ms(since_ms),
        until: at_ms(until_ms),
    }
}

fn live(task: &str, from_ms: u64, expires_ms: u64) -> Hold {
    Hold {
        name: name(task),
        uid: Some(1000),
        command: None,
        parent_command: None,
        started_at: at_ms(from_ms),
        ended_at: at_ms(expires_ms),
    }
}

fn row<'a>(report: &'a Report, task: &str) -> &'a TaskUsage {
    report
        .tasks
        .iter()
        .find(|row| row.name == task)
        .unwrap_or_else(|| panic!("no row for {task} in {report:?}"))
}

/// a 0–2 s, b 0.5–4 s, c 5–6 s, d 6.5–7.5 s (expired on its own).
fn the_issues_holds() -> History {
    let mut history = History::new(DEFAULT_USAGE_RETENTION);
    history.record(&ended(EventKind::Deleted, "a", 0, 2000));
    history.record(&ended(EventKind::Deleted, "b", 500, 4000));
    history.record(&ended(EventKind::Deleted, "c", 5000, 6000));
    history.record(&ended(EventKind::Expired, "d", 6500, 7500));
    history
}

#[test]
fn overlapping_holds_add_up_to_their_union_and_each_ones_sole_time() {
    let report = report(
        &the_issues_holds(),
        std::iter::empty(),
        window(0, 10_000),
        0,
        at_ms(10_000),
    );
    assert_eq!(report.held_seconds, 6.0);
    assert!(!report.held_now);
    let names: Vec<&str> = report.tasks.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["b", "a", "c", "d"],
        "longest held first, then by name"
    );
    let figures = |task| {
        let r = row(&report, task);
        (r.held_seconds, r.sole_seconds, r.holds)
    };
    assert_eq!(figures("a"), (2.0, 0.5, 1));
    assert_eq!(figures("b"), (3.5, 2.0, 1));
    assert_eq!(figures("c"), (1.0, 1.0, 1));
    assert_eq!(figures("d"), (1.0, 1.0, 1));
    assert_eq!(row(&report, "a").first_held_at, at_ms(0).to_string());
    assert_eq!(row(&report, "b").last_held_at, at_ms(4000).to_string());
    assert_eq!(row(&report, "a").command.as_deref(), Some("curl"));
}

#[test]
fn a_window_cuts_holds_at_its_edges() {
    let report = report(
        &the_issues_holds(),
        std::iter::empty(),
        window(1000, 3000),
        0,
        at_ms(10_000),
    );
    assert_eq!(report.held_seconds, 2.0);
    assert_eq!(report.tasks.len(), 2, "c and d lie outside: {report:?}");
    assert_eq!(row(&report, "a").held_seconds, 1.0);
    assert_eq!(row(&report, "a").sole_seconds, 0.0);
    assert_eq!(row(&report, "b").held_seconds, 2.0);
    assert_eq!(row(&report, "b").sole_seconds, 1.0);
    assert_eq!(row(&report, "a").first_held_at, at_ms(1000).to_string());
    assert_eq!(row(&report, "b").last_held_at, at_ms(3000).to_string());
}

#[test]
fn a_live_hold_counts_up_to_until_and_is_held_now() {
    let history = the_issues_holds();
    let report = report(
        &history,
        [live("e", 9000, 3_600_000)].into_iter(),
        window(8000, 10_000),
        0,
        at_ms(10_000),
    );
    assert_eq!(report.held_seconds, 1.0);
    assert!(report.held_now);
    let e = row(&report, "e");
    assert_eq!(
        (e.held_seconds, e.sole_seconds, e.held_now),
        (1.0, 1.0, true)
    );
    assert_eq!(e.last_held_at, at_ms(10_000).to_string());
    // A window that ends before now says nothing is held now.
    let past = super::report(
        &history,
        [live("e", 9000, 3_600_000)].into_iter(),
        window(8000, 9500),
        0,
        at_ms(10_000),
    );
    assert_eq!(row(&past, "e").held_seconds, 0.5);
    assert!(!past.held_now && !row(&past, "e").held_now);
}

#[test]
fn a_stored_task_past_its_deadline_counts_to_its_deadline_only() {
    // Due but not yet removed (the expiry batch has not run): not held now.
    let report = report(
        &History::new(DEFAULT_USAGE_RETENTION),
        [live("late", 0, 1500)].into_iter(),
        window(0, 4000),
        0,
        at_ms(4000),
    );
    assert_eq!(report.held_seconds, 1.5);
    assert!(!report.held_now);
}

#[test]
fn holds_of_one_name_and_owner_make_one_row_and_count_each_time_taken() {
    let mut history = History::new(DEFAULT_USAGE_RETENTION);
    for i in 0..3 {
        history.record(&ended(EventKind::Expired, "loop", i * 1000, i * 1000 + 500));
    }
    let mut other_owner = ended(EventKind::Deleted, "loop", 0, 100);
    if let Some(hold) = &mut other_owner.ended {
        hold.uid = Some(0);
    }
    history.record(&other_owner);
    let report = report(
        &history,
        std::iter::empty(),
        window(0, 5000),
        0,
        at_ms(5000),
    );
    assert_eq!(report.tasks.len(), 2);
    let mine = &report.tasks[0];
    assert_eq!(
        (mine.uid, mine.holds, mine.held_seconds),
        (Some(1000), 3, 1.5)
    );
    assert_eq!(
        mine.sole_seconds, 1.4,
        "root's hold overlapped its first 0.1 s"
    );
    assert_eq!(report.tasks[1].uid, Some(0));
    assert_eq!(report.held_seconds, 1.5);
}

#[test]
fn buckets_split_the_held_time_over_the_window() {
    let report = report(
        &the_issues_holds(),
        std::iter::empty(),
        window(0, 8000),
        8,
        at_ms(8000),
    );
    assert_eq!(report.bucket_seconds, Some(1.0));
    assert_eq!(report.buckets, [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.5, 0.5]);
    assert_eq!(
        row(&report, "b").buckets,
        [0.5, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    );
    let no_buckets = super::report(
        &the_issues_holds(),
        std::iter::empty(),
        window(0, 8000),
        0,
        at_ms(8000),
    );
    assert!(no_buckets.buckets.is_empty());
    assert!(no_buckets.tasks[0].buckets.is_empty());
}

#[test]
fn nothing_held_is_an_empty_report() {
    let report = report(
        &History::new(DEFAULT_USAGE_RETENTION),
        std::iter::empty(),
        window(0, 1000),
        4,
        at_ms(1000),
    );
    assert_eq!(report.held_seconds, 0.0);
    assert!(report.tasks.is_empty());
    assert_eq!(report.buckets, [0.0; 4]);
}

#[test]
fn a_capped_hold_trips_its_name_until_rearmed() {
    let capped = ended(EventKind::Capped, "loop", 0, 3000);
    let trip = tripped(std::slice::from_ref(&capped))[&name("loop")];
    assert_eq!(trip.held, Duration::from_secs(3));
    assert_eq!(trip.limit, Duration::from_secs(3));
    assert_eq!(trip.owner, Some(1000));
    assert_eq!(trip.at, at_ms(3000));
    let mut rearmed = ended(EventKind::Rearmed, "loop", 0, 0);
    rearmed.ended = None;
    let events = [capped, rearmed];
    assert!(tripped(&events).is_empty());
    let history = recovered(&events, at_ms(3000));
    assert_eq!(history.len(), 1, "the capped hold stays in the history");
}

#[test]
fn holds_past_the_retention_are_pruned_and_their_texts_dropped() {
    let retention = Duration::from_secs(10);
    let mut history = History::new(retention);
    // Names longer than a name held in place, whose texts the set shares.
    history.record(&ended(
        EventKind::Deleted,
        "old-agent-with-a-long-name",
        0,
        1000,
    ));
    history.record(&ended(
        EventKind::Deleted,
        "new-agent-with-a-long-name",
        5000,
        12_000,
    ));
    history.prune(at_ms(11_500));
    assert_eq!(history.len(), 1);
    assert_eq!(history.horizon(at_ms(11_500)), at_ms(1500));
    assert_eq!(history.names.len(), 1, "the old name is no longer kept");
    assert_eq!(
        history.texts.len(),
        1,
        "\"curl\" is still shared by \"new\""
    );
    let report = report(
        &history,
        std::iter::empty(),
        window(0, 12_000),
        0,
        at_ms(12_000),
    );
    assert_eq!(report.tasks.len(), 1);
    assert_eq!(report.history_from, at_ms(2000).to_string());
    // The last hold gone, its command line goes too: no copy outlives it.
    history.prune(at_ms(30_000));
    assert_eq!((history.len(), history.texts.len()), (0, 0));
}

#[test]
fn recovery_shares_one_copy_of_each_name_and_command() {
    let events: Vec<Event> = (0..3)
        .map(|i| {
            ended(
                EventKind::Expired,
                "a-refresh-loop-with-a-long-name",
                i * 10,
                i * 10 + 5,
            )
        })
        .collect();
    let history = recovered(&events, at_ms(100));
    assert_eq!(history.len(), 3);
    assert_eq!((history.names.len(), history.texts.len()), (1, 1));
    // A short name is held in place: no set keeps a copy of it.
    let short: Vec<Event> = (0..3)
        .map(|i| ended(EventKind::Expired, "loop", i * 10, i * 10 + 5))
        .collect();
    let history = recovered(&short, at_ms(100));
    assert_eq!((history.len(), history.names.len()), (3, 0));
    let commands: Vec<Arc<str>> = history
        .holds
        .iter()
        .filter_map(|h| h.command.clone())
        .collect();
    assert_eq!(commands.len(), 3);
    assert!(commands.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
}

#[test]
fn holds_from_alternating_holders_share_the_copies_in_the_set() {
    // Two holders' lines, each event with a copy of its own (as each
    // connection has): the last one is tried first, the set otherwise.
    let mut history = History::new(DEFAULT_USAGE_RETENTION);
    let line =
        |i: u64| -> Arc<str> { Arc::from(format!("bash ./loop-{}.sh --long --args", i % 2)) };
    for i in 0..6 {
        let mut event = ended(EventKind::Deleted, "a", i * 10, i * 10 + 5);
        event.ended.as_mut().unwrap().parent_command = Some(line(i));
        history.record(&event);
    }
    assert_eq!(history.texts.len(), 3, "curl and the two lines");
    let parents: Vec<Arc<str>> = history
        .holds
        .iter()
        .filter_map(|h| h.parent_command.clone())
        .collect();
    assert_eq!(parents.len(), 6);
    for (i, parent) in parents.iter().enumerate() {
        assert_eq!(&**parent, &*line(i as u64));
        assert!(Arc::ptr_eq(parent, &parents[i % 2]), "hold {i}");
    }
}

#[test]
fn events_without_a_hold_are_ignored() {
    let mut history = History::new(DEFAULT_USAGE_RETENTION);
    let mut created = ended(EventKind::Created, "a", 0, 10);
    history.record(&created);
    created.kind = EventKind::Deleted;
    created.ended = None;
    history.record(&created);
    assert!(history.is_empty());
}

#[test]
fn past_its_holds_limit_the_history_keeps_the_latest_and_says_where_it_begins() {
    // A queue worker's holds, one a second, long names so the set keeps
    // their texts: with a limit of 8, at most 8 + 1 stay, the latest.
    let max = 8;
    let mut history = History::with_max_holds(DEFAULT_USAGE_RETENTION, max);
    assert_eq!(history.floor(), Timestamp::from_nanos(0));
    for i in 0..40 {
        let task = format!("job-{i:03}-with-a-long-name");
        history.record(&ended(EventKind::Deleted, &task, i * 1000, i * 1000 + 500));
        assert!(history.len() <= max + max / 8, "{}", history.len());
    }
    assert!(history.len() >= max);
    let kept: Vec<&str> = history.holds.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(kept.last(), Some(&"job-039-with-a-long-name"));
    // The floor is the latest end dropped: every kept hold ended after it,
    // and the names of dropped holds are no longer kept.
    let floor = history.floor();
    assert!(history.holds.iter().all(|h| h.ended_at > floor));
    let first_kept = history.holds[0].ended_at;
    assert_eq!(
        floor,
        Timestamp::from_nanos(first_kept.as_nanos() - 1000 * MS)
    );
    assert_eq!(history.names.len(), history.len());
    // A report says the history begins at the floor, not 35 days back.
    let now = at_ms(41_000);
    assert_eq!(history.horizon(now), floor);
    let report = report(&history, std::iter::empty(), window(0, 41_000), 0, now);
    assert_eq!(report.history_from, floor.to_string());
    assert_eq!(report.tasks.len(), history.len());
    // A restart recovers the same latest holds from the same events.
    let events: Vec<Event> = (0..40)
        .map(|i| {
            let task = format!("job-{i:03}-with-a-long-name");
            ended(EventKind::Deleted, &task, i * 1000, i * 1000 + 500)
        })
        .collect();
    let recovered = History::recovered(
        DEFAULT_USAGE_RETENTION,
        max,
        Timestamp::from_nanos(0),
        &events,
        now,
    );
    assert!((max..=max + max / 8).contains(&recovered.len()));
    assert_eq!(
        recovered.holds.last().map(|h| h.name.as_str()),
        Some("job-039-with-a-long-name")
    );
    assert!(
        recovered
            .holds
            .iter()
            .all(|h| h.ended_at > recovered.floor())
    );
}

#[test]
fn a_clock_set_back_never_puts_the_floor_past_a_kept_hold() {
    // Holds end at 100..110 s, the clock is set back, and later holds end
    // at 50..70 s: the dropped holds ended after the kept ones.
    let max = 8;
    let mut history = History::with_max_holds(DEFAULT_USAGE_RETENTION, max);
    for i in 0..10 {
        history.record(&ended(
            EventKind::Deleted,
            &format!("before-{i}"),
            0,
            100_000 + i * 1000,
        ));
    }
    for i in 0..20 {
        history.record(&ended(
            EventKind::Deleted,
            &format!("after-{i}"),
            0,
            50_000 + i * 1000,
        ));
        let floor = history.floor();
        assert!(history.holds.iter().all(|h| h.ended_at >= floor), "{i}");
        // Pruned at the stepped-back clock, nothing recent goes.
        let now = at_ms(50_000 + i * 1000);
        let before = history.len();
        history.prune(now);
        assert_eq!(history.len(), before, "{i}");
        assert!(history.horizon(now) <= now);
    }
    // The latest holds recorded are the ones kept.
    assert_eq!(
        history.holds.last().map(|h| h.name.as_str()),
        Some("after-19")
    );
}

#[test]
fn a_restart_recovers_no_hold_from_before_the_floor_and_only_the_limit() {
    let events: Vec<Event> = (0..12)
        .map(|i| {
            ended(
                EventKind::Deleted,
                &format!("job-{i:02}"),
                0,
                1000 + i * 1000,
            )
        })
        .collect();
    let now = at_ms(20_000);
    // The store kept holds from 4 s on beside a chunk it still holds.
    let history = History::recovered(DEFAULT_USAGE_RETENTION, 100, at_ms(4000), &events, now);
    let names: Vec<&str> = history.holds.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"job-03"));
    assert_eq!((history.len(), history.floor()), (9, at_ms(4000)));
    assert_eq!(history.horizon(now), at_ms(4000));
    // With no floor stored (a crash before the checkpoint), the limit
    // itself, not its slack, is what a restart keeps.
    let history = History::recovered(
        DEFAULT_USAGE_RETENTION,
        10,
        Timestamp::from_nanos(0),
        &events,
        now,
    );
    assert_eq!(history.len(), 10);
    assert_eq!(history.floor(), at_ms(2000));
}
