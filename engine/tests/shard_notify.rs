//! Commit notifications reach subscribers on any shard.

#![allow(clippy::unwrap_used)]

mod shard_support;

use shard_support::{append_one, create_request, data_dir, ids_on_shard, test_config, TestNode};
use starcite_engine::api::{Notification, Service};

/// A tail subscribed on shard 0 to a session owned by shard 1 sees one notification per newly
/// stored event, and none for a dedupe.
#[test]
fn notifications_reach_subscriber() {
    let (_dir, path) = data_dir();
    let node = TestNode::start(test_config(&path, 2)).unwrap();
    let id = ids_on_shard("n", 1, 2, 1).remove(0);
    let received = node.run(0, move |engine| async move {
        engine.create_session(create_request(&id)).await.unwrap();
        let subscription = engine.subscribe(&id, 16);
        engine.append(append_one(&id, "p", 1, 1)).await.unwrap();
        engine.append(append_one(&id, "p", 1, 1)).await.unwrap();
        engine.append(append_one(&id, "p", 2, 2)).await.unwrap();
        let mut received = Vec::new();
        while let Some(notification) = subscription.try_recv() {
            received.push(notification);
        }
        received
    });
    assert_eq!(
        received,
        vec![
            Notification {
                seq: 1,
                last_seq: 1
            },
            Notification {
                seq: 2,
                last_seq: 2
            }
        ]
    );
    node.stop().unwrap();
}
