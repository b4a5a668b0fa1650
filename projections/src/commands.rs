//! Runs commands against aggregates over the event log (cqrs-es's plain event-store mode:
//! load every event, apply, handle, append). Unlike `CqrsFramework::execute` it returns the
//! committed events with their global positions, so a reply can carry them (read-your-writes),
//! and it retries a command that lost an optimistic-concurrency race.

use std::collections::HashMap;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use ocart_domain::metadata::{self, chain_hash, GENESIS_HASH};
use serde_json::value::RawValue;
use serde_json::Value;
use uuid::Uuid;

use crate::store::{AppendError, EventLog, NewEvent, StoredEvent};

/// Who asked, and why: copied into the metadata of every event the command emits.
#[derive(Debug, Clone)]
pub struct CommandMeta {
    /// A token id, `cli:<user>` or `system:<processor>`.
    pub actor: String,
    pub request_id: String,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub ip: Option<String>,
    pub at: DateTime<Utc>,
}

impl CommandMeta {
    /// Metadata for a command a process manager issues in reaction to an event.
    pub fn system(processor: &str, cause: Option<&StoredEvent>, at: DateTime<Utc>) -> Self {
        let request_id = Uuid::now_v7().to_string();
        Self {
            actor: format!("system:{processor}"),
            correlation_id: cause
                .and_then(|e| e.meta(metadata::CORRELATION_ID))
                .unwrap_or_else(|| request_id.clone()),
            causation_id: cause.map(|e| e.event_id.to_string()),
            request_id,
            ip: None,
            at,
        }
    }
}

/// A committed event as the command reports it.
#[derive(Debug, Clone)]
pub struct Emitted<E> {
    pub event: E,
    pub event_id: Uuid,
    pub sequence: i64,
    pub global_position: i64,
}

/// The result of one command.
#[derive(Debug)]
pub struct Outcome<A: Aggregate> {
    pub events: Vec<Emitted<A::Event>>,
    /// The aggregate after the command.
    pub aggregate: A,
}

impl<A: Aggregate> Outcome<A> {
    /// The global position of the last event, for read-your-writes.
    pub fn last_position(&self) -> Option<i64> {
        self.events.last().map(|e| e.global_position)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Rejected(E),
    /// Still conflicting after every retry.
    #[error("the {0} changed concurrently; try again")]
    Conflict(&'static str),
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
    #[error("a stored event cannot be read: {0}")]
    Corrupt(String),
}

/// How many times a conflicted command is retried before the caller hears of it.
pub const MAX_ATTEMPTS: usize = 5;

/// Executes commands of one aggregate type.
pub struct Commands<A: Aggregate> {
    log: EventLog,
    services: A::Services,
    /// Optional optimistic state cache (see [`Commands::with_cache`]), shared by clones.
    cache: Option<std::sync::Arc<StateCache<A>>>,
    _a: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Clone for Commands<A>
where
    A::Services: Clone,
{
    /// Commands on the same log that share the state cache.
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            services: self.services.clone(),
            cache: self.cache.clone(),
            _a: PhantomData,
        }
    }
}

/// Recently seen aggregate states: (state, last sequence, last hash).
struct StateCache<A> {
    capacity: usize,
    entries: std::sync::Mutex<HashMap<String, (A, i64, String)>>,
}

/// Where the state a command was handled against came from.
#[derive(PartialEq)]
enum Source {
    Store,
    Cache,
}

/// Rebuilds a typed event from its stored form: our events are tagged `{"type", "data"}`, and the
/// log keeps the tag in `event_type` and the data as the payload. The pair is presented to serde
/// as that map without copying the payload (the tag first, so serde decodes the data straight
/// into the variant instead of buffering it).
pub fn decode_event<E: DomainEvent>(
    event_type: &str,
    payload: &RawValue,
) -> Result<E, serde_json::Error> {
    E::deserialize(tagged::Tagged {
        event_type,
        payload,
    })
}

mod tagged {
    use serde::de::value::BorrowedStrDeserializer;
    use serde::de::{DeserializeSeed, MapAccess, Visitor};
    use serde::forward_to_deserialize_any;
    use serde_json::value::RawValue;

    /// `{"type": event_type, "data": payload}`, borrowed.
    pub(super) struct Tagged<'a> {
        pub event_type: &'a str,
        pub payload: &'a RawValue,
    }

    impl<'de> serde::Deserializer<'de> for Tagged<'de> {
        type Error = serde_json::Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            visitor.visit_map(TaggedMap {
                step: 0,
                tagged: self,
            })
        }

        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
        }
    }

    struct TaggedMap<'de> {
        step: u8,
        tagged: Tagged<'de>,
    }

    impl<'de> MapAccess<'de> for TaggedMap<'de> {
        type Error = serde_json::Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Self::Error> {
            let key = match self.step {
                0 => "type",
                1 => "data",
                _ => return Ok(None),
            };
            seed.deserialize(BorrowedStrDeserializer::<serde_json::Error>::new(key))
                .map(Some)
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, Self::Error> {
            self.step += 1;
            if self.step == 1 {
                seed.deserialize(BorrowedStrDeserializer::<serde_json::Error>::new(
                    self.tagged.event_type,
                ))
            } else {
                let mut de = serde_json::Deserializer::from_str(self.tagged.payload.get());
                let value = seed.deserialize(&mut de)?;
                de.end()?;
                Ok(value)
            }
        }
    }
}

fn encode_event<E: DomainEvent>(event: &E) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(event)?;
    Ok(value
        .get_mut("data")
        .map(Value::take)
        .unwrap_or(Value::Null))
}

impl<A> Commands<A>
where
    A: Aggregate + Clone,
    A::Command: Clone,
{
    pub fn new(log: EventLog, services: A::Services) -> Self {
        Self {
            log,
            services,
            cache: None,
            _a: PhantomData,
        }
    }

    /// Keeps up to `capacity` aggregate states in memory, and treats an aggregate not in the
    /// cache as new. This is safe because the state is only trusted when the append succeeds:
    /// a stale or wrongly-new state always collides with an existing sequence (a conflict, then
    /// a reload from the store), and a command that emits nothing or is refused on a cached
    /// state is handled again on the stored state before the answer is given.
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = Some(std::sync::Arc::new(StateCache {
            capacity,
            entries: std::sync::Mutex::new(HashMap::new()),
        }));
        self
    }

    /// The state last remembered for `id` by these commands or a clone of them (the state
    /// after a successful append, or a load), with its last sequence; `None` when not cached.
    /// It is a state the aggregate did reach, but maybe not its latest: another process may
    /// have appended since.
    pub fn peek(&self, id: &str) -> Option<(A, i64)> {
        let cache = self.cache.as_ref()?;
        let entries = cache.entries.lock().expect("state cache");
        entries
            .get(id)
            .map(|(state, sequence, _)| (state.clone(), *sequence))
    }

    fn cached(&self, id: &str) -> Option<(A, i64, String)>
    where
        A: Clone,
    {
        let cache = self.cache.as_ref()?;
        let entries = cache.entries.lock().expect("state cache");
        Some(
            entries
                .get(id)
                .cloned()
                .unwrap_or_else(|| (A::default(), 0, GENESIS_HASH.to_owned())),
        )
    }

    fn remember(&self, id: &str, state: &A, sequence: i64, hash: &str)
    where
        A: Clone,
    {
        if let Some(cache) = &self.cache {
            let mut entries = cache.entries.lock().expect("state cache");
            if entries.len() >= cache.capacity && !entries.contains_key(id) {
                // Cheap eviction: drop an arbitrary entry (the cache is only a shortcut).
                if let Some(key) = entries.keys().next().cloned() {
                    entries.remove(&key);
                }
            }
            entries.insert(id.to_owned(), (state.clone(), sequence, hash.to_owned()));
        }
    }

    fn forget(&self, id: &str) {
        if let Some(cache) = &self.cache {
            cache.entries.lock().expect("state cache").remove(id);
        }
    }

    /// The type of the aggregates these commands run on (their streams' `aggregate_type`).
    pub fn aggregate_type(&self) -> &'static str {
        A::TYPE
    }

    /// Loads the aggregate and the hash of its last event.
    pub async fn load(&self, id: &str) -> Result<(A, i64, String), CommandError<A::Error>> {
        let (aggregate, sequence, hash, _) = self.load_with_events(id).await?;
        Ok((aggregate, sequence, hash))
    }

    /// [`Self::load`], also answering the stored events; with a state cache, the loaded state
    /// is remembered, so the next command on it needs no second read (a state that is stale
    /// by then only collides on append and is read again).
    pub async fn load_with_events(
        &self,
        id: &str,
    ) -> Result<(A, i64, String, Vec<StoredEvent>), CommandError<A::Error>> {
        let stored = self
            .log
            .load(A::TYPE, id)
            .await
            .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        let (aggregate, sequence, last_hash) = self.fold(id, &stored)?;
        Ok((aggregate, sequence, last_hash, stored))
    }

    /// The aggregate `id` rebuilt from its stored events (all of them, in sequence order, as
    /// [`EventLog::load`] or [`EventLog::load_many`] answer them), with its last sequence and
    /// hash; with a state cache, remembered as [`Self::load`] does.
    pub fn fold(
        &self,
        id: &str,
        stored: &[StoredEvent],
    ) -> Result<(A, i64, String), CommandError<A::Error>> {
        let mut aggregate = A::default();
        let mut last_hash = GENESIS_HASH.to_owned();
        let mut sequence = 0;
        for event in stored {
            let typed: A::Event = decode_event(&event.event_type, &event.payload).map_err(|e| {
                CommandError::Corrupt(format!(
                    "{} {}#{}: {e}",
                    event.event_type, id, event.sequence
                ))
            })?;
            aggregate.apply(typed);
            sequence = event.sequence;
            if let Some(hash) = event.meta(metadata::HASH) {
                last_hash = hash;
            }
        }
        self.remember(id, &aggregate, sequence, &last_hash);
        Ok((aggregate, sequence, last_hash))
    }

    /// Handles `command` on aggregate `id` and appends what it emits, retrying on conflict.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        meta: &CommandMeta,
    ) -> Result<Outcome<A>, CommandError<A::Error>> {
        let mut use_cache = self.cache.is_some();
        for _ in 0..MAX_ATTEMPTS {
            let (source, (mut aggregate, sequence, mut prev_hash)) =
                match self.cached(id).filter(|_| use_cache) {
                    Some(state) => (Source::Cache, state),
                    None => (Source::Store, self.load(id).await?),
                };
            let sink = EventSink::<A>::default();
            let handled = aggregate
                .handle(command.clone(), &self.services, &sink)
                .await;
            let events = sink.collect().await;
            if source == Source::Cache && (handled.is_err() || events.is_empty()) {
                // Only a successful append validates a cached state: decide again on the store's.
                use_cache = false;
                continue;
            }
            handled.map_err(CommandError::Rejected)?;
            if events.is_empty() {
                return Ok(Outcome {
                    events: Vec::new(),
                    aggregate,
                });
            }
            let mut new_events = Vec::with_capacity(events.len());
            for (offset, event) in events.iter().enumerate() {
                let event_type = event.event_type();
                let payload =
                    encode_event(event).map_err(|e| CommandError::Corrupt(e.to_string()))?;
                let event_id = Uuid::now_v7();
                let hash = chain_hash(&prev_hash, &event_type, &payload);
                let metadata = metadata_for(meta, event_id, &prev_hash, &hash);
                prev_hash = hash;
                new_events.push(NewEvent {
                    event_id,
                    aggregate_type: A::TYPE.to_owned(),
                    aggregate_id: id.to_owned(),
                    sequence: sequence + 1 + offset as i64,
                    event_type,
                    event_version: event.event_version(),
                    payload,
                    metadata,
                });
            }
            match self.log.append(new_events).await {
                Ok(committed) => {
                    let last = sequence + events.len() as i64;
                    self.remember(id, &aggregate, last, &prev_hash);
                    let emitted = events
                        .into_iter()
                        .zip(committed)
                        .enumerate()
                        .map(|(offset, (event, c))| Emitted {
                            event,
                            event_id: c.event_id,
                            sequence: sequence + 1 + offset as i64,
                            global_position: c.global_position,
                        })
                        .collect();
                    return Ok(Outcome {
                        events: emitted,
                        aggregate,
                    });
                }
                Err(AppendError::Conflict) => {
                    self.forget(id);
                    use_cache = false;
                    metrics::counter!("ocart_command_conflicts_total", "aggregate" => A::TYPE)
                        .increment(1);
                    continue;
                }
                Err(other) => return Err(CommandError::Unavailable(other.to_string())),
            }
        }
        Err(CommandError::Conflict(A::TYPE))
    }
}

fn metadata_for(meta: &CommandMeta, event_id: Uuid, prev_hash: &str, hash: &str) -> Value {
    let mut map: HashMap<&str, Value> = HashMap::new();
    map.insert(metadata::EVENT_ID, event_id.to_string().into());
    map.insert(
        metadata::OCCURRED_AT,
        meta.at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into(),
    );
    map.insert(metadata::ACTOR, meta.actor.clone().into());
    map.insert(metadata::REQUEST_ID, meta.request_id.clone().into());
    map.insert(metadata::CORRELATION_ID, meta.correlation_id.clone().into());
    if let Some(causation) = &meta.causation_id {
        map.insert(metadata::CAUSATION_ID, causation.clone().into());
    }
    if let Some(ip) = &meta.ip {
        map.insert(metadata::IP, ip.clone().into());
    }
    map.insert(metadata::PREV_HASH, prev_hash.into());
    map.insert(metadata::HASH, hash.into());
    serde_json::to_value(map).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocart_domain::cart::{AbandonmentKind, CartEvent};

    #[test]
    fn stored_events_decode_back_to_the_typed_event() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let event = CartEvent::Abandoned {
            at,
            kind: AbandonmentKind::CheckoutAbandoned,
            last_activity_at: at,
            forced: false,
        };
        let payload = encode_event(&event).unwrap();
        assert!(
            payload.get("type").is_none(),
            "the payload is the data alone: {payload}"
        );
        let raw = RawValue::from_string(payload.to_string()).unwrap();
        let back: CartEvent = decode_event(&event.event_type(), &raw).unwrap();
        assert_eq!(back, event);
        assert!(decode_event::<CartEvent>("cart/nope", &raw).is_err());
        let wrong = RawValue::from_string(r#"{"at": 1}"#.to_owned()).unwrap();
        assert!(decode_event::<CartEvent>("cart/abandoned", &wrong).is_err());
    }
}
