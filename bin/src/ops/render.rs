//! Text rendering of ops API answers (ops.md §5): strings unquoted, integers in decimal,
//! booleans `true`/`false`, `null` as nothing, lists comma-joined without spaces, nested objects
//! flattened with `.` between keys.
//!
//! JSON objects are parsed into sorted maps, so the status object's order is restored from the
//! contract's key order; keys the contract does not list follow in sorted order.

use serde_json::{Map, Value};

/// The key order of each object of the status object, by schema path (`*` stands for a node id).
const STATUS_KEY_ORDER: [(&str, &[&str]); 6] = [
    (
        "",
        &[
            "node",
            "local_write_node",
            "local_mode",
            "local_ready",
            "local_drained",
            "write_nodes",
            "write_replication_factor",
            "num_groups",
            "local_groups",
            "leader_groups",
            "drain",
            "raft_storage",
            "observer",
            "groups_without_leader",
            "archive",
        ],
    ),
    ("drain", &["draining", "reason"]),
    ("raft_storage", &["starcite_data_dir", "raft_data_dir"]),
    (
        "observer",
        &[
            "status",
            "visible_nodes",
            "ready_nodes",
            "node_statuses",
            "raft_ready_nodes",
        ],
    ),
    ("observer.node_statuses.*", &["status", "changed_at_ms"]),
    (
        "archive",
        &["adapter", "lag_events", "pending_sessions", "last_error"],
    ),
];

/// Objects whose keys are node ids rather than field names.
const NODE_KEYED_OBJECTS: [&str; 1] = ["observer.node_statuses"];

/// One value as text: the leaf rules of ops.md §5.
pub fn leaf_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::Array(items) => items.iter().map(leaf_text).collect::<Vec<_>>().join(","),
        // An object inside a list has no flattened form; keep it as compact JSON.
        Value::Object(_) => value.to_string(),
    }
}

/// `key=value` lines for every leaf of the status object, in the contract's order.
pub fn status_lines(status: &Map<String, Value>) -> Vec<String> {
    let mut lines = Vec::new();
    flatten("", "", status, &mut lines);
    lines
}

fn flatten(prefix: &str, schema: &str, object: &Map<String, Value>, lines: &mut Vec<String>) {
    let known: &[&str] = STATUS_KEY_ORDER
        .iter()
        .find(|(path, _)| *path == schema)
        .map_or(&[], |(_, keys)| keys);
    let mut keys: Vec<&String> = Vec::with_capacity(object.len());
    keys.extend(
        known
            .iter()
            .filter_map(|key| object.get_key_value(*key).map(|(key, _)| key)),
    );
    keys.extend(object.keys().filter(|key| !known.contains(&key.as_str())));
    for key in keys {
        let Some(value) = object.get(key) else {
            continue;
        };
        let name = join(prefix, key);
        match value {
            Value::Object(inner) => {
                let child_schema = if NODE_KEYED_OBJECTS.contains(&schema) {
                    join(schema, "*")
                } else {
                    join(schema, key)
                };
                flatten(&name, &child_schema, inner, lines);
            }
            leaf => lines.push(format!("{name}={}", leaf_text(leaf))),
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn leaves() {
        assert_eq!(leaf_text(&json!(null)), "");
        assert_eq!(leaf_text(&json!("a b")), "a b");
        assert_eq!(leaf_text(&json!(true)), "true");
        assert_eq!(leaf_text(&json!(1767225600123_u64)), "1767225600123");
        assert_eq!(leaf_text(&json!([])), "");
        assert_eq!(leaf_text(&json!(["n1@h", "n2@h"])), "n1@h,n2@h");
        assert_eq!(leaf_text(&json!([1, 2])), "1,2");
    }

    #[test]
    fn status_lines_follow_the_contract_order() {
        let status = json!({
            "archive": {"last_error": null, "adapter": "local", "lag_events": 0, "pending_sessions": 0},
            "node": "node1@node1",
            "groups_without_leader": 0,
            "local_ready": true,
            "drain": {"reason": null, "draining": false},
            "observer": {
                "status": "ok",
                "visible_nodes": ["node2@node2"],
                "ready_nodes": ["node1@node1", "node2@node2"],
                "node_statuses": {"node2@node2.example": {"status": "ready", "changed_at_ms": 5}},
                "raft_ready_nodes": []
            },
            "zz_future_key": 1,
            "local_groups": [0, 1]
        });
        let Value::Object(status) = status else {
            panic!("object")
        };
        assert_eq!(
            status_lines(&status),
            [
                "node=node1@node1",
                "local_ready=true",
                "local_groups=0,1",
                "drain.draining=false",
                "drain.reason=",
                "observer.status=ok",
                "observer.visible_nodes=node2@node2",
                "observer.ready_nodes=node1@node1,node2@node2",
                "observer.node_statuses.node2@node2.example.status=ready",
                "observer.node_statuses.node2@node2.example.changed_at_ms=5",
                "observer.raft_ready_nodes=",
                "groups_without_leader=0",
                "archive.adapter=local",
                "archive.lag_events=0",
                "archive.pending_sessions=0",
                "archive.last_error=",
                "zz_future_key=1",
            ]
        );
    }
}
