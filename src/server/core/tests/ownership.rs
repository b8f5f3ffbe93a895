//! Ownership, as the core passes the peer's uid on.

use super::*;

#[test]
fn another_uid_cannot_delete_a_task_it_does_not_own() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    let now = rig.now();
    rig.core
        .connect(ConnId(9), Some(credentials(OTHER_UID)), now)
        .unwrap();
    let answers = rig.turn(&[(9, Method::Delete, "/v1/tasks/a", "")]);
    assert!(matches!(&answers[0], Answer::Response(r) if r.status == 403));
    assert_eq!(rig.disk_names(), ["a"]);
}
