//! Metadata every event carries. Values are strings (cqrs-es stores metadata as a string map).

use sha2::{Digest, Sha256};

pub const EVENT_ID: &str = "event_id";
pub const OCCURRED_AT: &str = "occurred_at";
pub const ACTOR: &str = "actor";
pub const REQUEST_ID: &str = "request_id";
pub const CORRELATION_ID: &str = "correlation_id";
pub const CAUSATION_ID: &str = "causation_id";
pub const IP: &str = "ip";
pub const PREV_HASH: &str = "prev_hash";
pub const HASH: &str = "hash";
/// Filled in on committed events only: the event's place in the global log.
pub const GLOBAL_POSITION: &str = "global_position";

/// The hash of the first event's predecessor.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `sha256(prev_hash ‖ event_type ‖ canonical payload)`, hex. The payload is canonicalised
/// (object keys sorted, no white space) so the hash survives a round trip through `jsonb`.
pub fn chain_hash(prev_hash: &str, event_type: &str, payload: &serde_json::Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\x1f");
    hasher.update(event_type.as_bytes());
    hasher.update(b"\x1f");
    let mut buf = Vec::with_capacity(256);
    write_canonical(payload, &mut buf);
    hasher.update(&buf);
    hex::encode(hasher.finalize())
}

fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(serde_json::to_string(key).unwrap_or_default().as_bytes());
                out.push(b':');
                write_canonical(&map[*key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_chain_hash_ignores_key_order() {
        let a = chain_hash(
            GENESIS_HASH,
            "cart/created",
            &json!({"a": 1, "b": [1, {"y": 2, "x": 1}]}),
        );
        let b = chain_hash(
            GENESIS_HASH,
            "cart/created",
            &json!({"b": [1, {"x": 1, "y": 2}], "a": 1}),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn the_chain_hash_depends_on_the_previous_hash_type_and_payload() {
        let base = chain_hash(GENESIS_HASH, "cart/created", &json!({"a": 1}));
        assert_ne!(base, chain_hash(&base, "cart/created", &json!({"a": 1})));
        assert_ne!(
            base,
            chain_hash(GENESIS_HASH, "cart/updated", &json!({"a": 1}))
        );
        assert_ne!(
            base,
            chain_hash(GENESIS_HASH, "cart/created", &json!({"a": 2}))
        );
    }
}
