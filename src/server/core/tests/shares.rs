//! Each uid's share of connections and streams; event replay.

use super::*;

#[test]
fn a_uid_past_its_share_is_refused_with_a_503_that_says_so() {
    let mut rig = Rig::new();
    let now = rig.now();
    // Connections 1 to 3 are the uid's whole share.
    let refused = rig
        .core
        .connect(ConnId(4), Some(credentials(UID)), now)
        .expect_err("past the share");
    assert_eq!(refused.status, 503);
    assert!(
        error_of(&refused).contains("uid 1000"),
        "{}",
        error_of(&refused)
    );
    assert!(
        rig.core
            .connect(ConnId(5), Some(credentials(OTHER_UID)), now)
            .is_ok(),
        "another uid has its own share"
    );
    rig.core.disconnect(ConnId(1));
    assert!(
        rig.core
            .connect(ConnId(6), Some(credentials(UID)), now)
            .is_ok()
    );
}

#[test]
fn the_reserve_is_kept_for_root_and_the_daemons_uid() {
    let mut rig = Rig::new();
    let now = rig.now();
    assert!(
        rig.core
            .connect(ConnId(4), Some(credentials(OTHER_UID)), now)
            .is_ok()
    );
    // Four of six are taken; the last two are the reserve.
    assert!(
        rig.core
            .connect(ConnId(5), Some(credentials(2000)), now)
            .is_err()
    );
    assert!(
        rig.core
            .connect(ConnId(6), Some(credentials(0)), now)
            .is_ok()
    );
    assert!(
        rig.core
            .connect(ConnId(7), Some(credentials(DAEMON_UID)), now)
            .is_ok()
    );
    assert!(
        rig.core
            .connect(ConnId(8), Some(credentials(0)), now)
            .is_err(),
        "full"
    );
}

#[test]
fn a_uid_past_its_streams_is_refused_and_a_closed_stream_frees_its_place() {
    let mut rig = Rig::new();
    let answers = rig.turn(&[
        (1, Method::Get, "/v1/events", ""),
        (2, Method::Get, "/v1/events", ""),
    ]);
    assert!(matches!(answers[0], Answer::Stream(_)));
    assert!(matches!(&answers[1], Answer::Response(r) if r.status == 503));
    rig.core.disconnect(ConnId(1));
    let answers = rig.turn(&[(2, Method::Get, "/v1/events", "")]);
    assert!(matches!(answers[0], Answer::Stream(_)));
}

#[test]
fn a_stream_replays_what_came_after_since() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    rig.create("b", "10s");
    let answers = rig.turn(&[(1, Method::Get, "/v1/events?since=1", "")]);
    let Answer::Stream(head) = &answers[0] else {
        panic!("{:?}", answers[0]);
    };
    let text = String::from_utf8_lossy(head);
    assert!(text.contains(r#""task":"b""#), "{text}");
    assert!(!text.contains(r#""task":"a""#), "{text}");
}
