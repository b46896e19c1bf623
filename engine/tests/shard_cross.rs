//! Two shards: requests for sessions owned by the other shard cross over and behave exactly
//! like local ones; listing merges every shard.

#![allow(clippy::unwrap_used)]

mod shard_support;

use shard_support::{append_one, create_request, data_dir, ids_on_shard, test_config, TestNode};
use starcite_engine::api::{ListQuery, Service, ServiceError};

fn query(limit: u32, cursor: Option<String>) -> ListQuery {
    ListQuery {
        limit,
        cursor,
        metadata_filters: Vec::new(),
        creator_id: None,
        creator_tenant_id: None,
    }
}

/// Sessions owned by shard 1 are created, appended to and read from shard 0, and the reverse.
#[test]
fn requests_cross_to_the_owning_shard() {
    let (_dir, path) = data_dir();
    let node = TestNode::start(test_config(&path, 2)).unwrap();
    let on_zero = ids_on_shard("a", 0, 2, 3);
    let on_one = ids_on_shard("b", 1, 2, 3);
    let (zero, one) = (on_zero.clone(), on_one.clone());
    node.run(0, move |engine| async move {
        assert_eq!(engine.shard_index(), 0);
        for id in &one {
            assert_eq!(engine.owner_of(id).1, 1);
            engine.create_session(create_request(id)).await.unwrap();
            engine.append(append_one(id, "p", 1, 1)).await.unwrap();
        }
        for id in &zero {
            engine.create_session(create_request(id)).await.unwrap();
        }
        assert_eq!(
            engine.create_session(create_request(&one[0])).await,
            Err(ServiceError::SessionExists)
        );
    });
    let (zero, one) = (on_zero.clone(), on_one.clone());
    node.run(1, move |engine| async move {
        for id in &one {
            let batch = engine.read_events(id, 0, 10).await.unwrap();
            assert_eq!(batch.events.len(), 1);
        }
        for id in &zero {
            let reply = engine.append(append_one(id, "p", 1, 2)).await.unwrap();
            assert_eq!(reply.last_seq, 1);
            assert_eq!(engine.get_session(id).await.unwrap().last_seq, 1);
        }
        assert_eq!(
            engine.get_session("nope").await,
            Err(ServiceError::SessionNotFound)
        );
    });
    let mut expected: Vec<String> = on_zero.iter().chain(on_one.iter()).cloned().collect();
    expected.sort();
    let listed = node.run(1, |engine| async move {
        let mut ids = Vec::new();
        let mut cursor = None;
        loop {
            let page = engine.list_sessions(query(2, cursor)).await.unwrap();
            assert!(page.sessions.len() <= 2);
            ids.extend(page.sessions.iter().map(|session| session.id.clone()));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        ids
    });
    assert_eq!(listed, expected);
    node.stop().unwrap();
}
