//! The server's event and person tables.
//!
//! Events are kept sorted by `(timestamp, uuid)` in ClickHouse UUID order, with a second
//! permutation sorted by `(created_at, uuid)`, so keyset pages are a binary search plus a short
//! scan. Generated events keep only their core columns; properties and elements chains are
//! regenerated on demand from the seed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::data::{CoreEvent, Event, GenSpec, Generator, Person};
use crate::timefmt::micros_of;

/// A UUID's position in ClickHouse's UUID order: the second 64-bit half, then the first.
pub(crate) type UuidKey = (u64, u64);

/// ClickHouse compares UUIDs by bytes 8..16 (big-endian) first, then bytes 0..8.
pub(crate) fn uuid_key(uuid: &Uuid) -> UuidKey {
    let (first, second) = uuid.as_u64_pair();
    (second, first)
}

/// Property maps and elements chain of an event that was handed to the server.
#[derive(Debug)]
pub(crate) struct ExplicitBody {
    pub properties: Map<String, Value>,
    pub elements_chain: String,
    pub person_properties: Map<String, Value>,
}

/// Where an event's properties come from.
#[derive(Debug)]
pub(crate) enum EventBody {
    /// Regenerated from the generator: generation index and person index (`u32::MAX` = none).
    /// The person's properties as of the event are borrowed from the generator's histories.
    Generated { index: u32, person: u32 },
    /// Stored as given.
    Explicit(Box<ExplicitBody>),
}

/// One row of the `events` table.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    /// Timestamp, µs since the epoch.
    pub ts: i64,
    /// Ingestion time, µs since the epoch.
    pub created: i64,
    pub uuid: Uuid,
    pub ukey: UuidKey,
    pub event: Arc<str>,
    pub distinct_id: Arc<str>,
    pub person_id: Option<Uuid>,
    pub body: EventBody,
}

/// Which sorted access path a scan uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortColumn {
    /// `(timestamp, uuid)`: the storage order.
    Timestamp,
    /// `(created_at, uuid)`: the secondary permutation.
    CreatedAt,
}

/// One row of the `sessions` table: the events sharing a `$session_id` property.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Session {
    pub id: String,
    /// The distinct id of the session's first event.
    pub distinct_id: Arc<str>,
    /// Timestamp of the first event, µs.
    pub start: i64,
    /// Timestamp of the last event, µs.
    pub end: i64,
    pub pageviews: u64,
    pub autocaptures: u64,
    /// `$current_url` of the first event, if it had one.
    pub entry_url: Option<String>,
    /// `$current_url` of the last event, if it had one.
    pub end_url: Option<String>,
}

impl Session {
    /// `$session_duration`: whole seconds between the first and the last event, counted as
    /// ClickHouse's `dateDiff('second', start, end)` counts them (second boundaries crossed).
    pub(crate) fn duration_seconds(&self) -> i64 {
        self.end.div_euclid(1_000_000) - self.start.div_euclid(1_000_000)
    }

    /// `$is_bounce`: at most one pageview and shorter than 10 seconds.
    pub(crate) fn is_bounce(&self) -> bool {
        self.pageviews <= 1 && self.duration_seconds() < 10
    }
}

/// The `events` table.
#[derive(Debug, Default)]
pub(crate) struct EventStore {
    events: Vec<StoredEvent>,
    by_created: Vec<u32>,
    generator: Option<Arc<Generator>>,
    /// The `sessions` table, derived on first use and dropped when events change.
    sessions: OnceLock<Vec<Session>>,
}

impl EventStore {
    /// Builds the table from explicit events plus, optionally, lazily generated ones.
    pub(crate) fn new(events: Vec<Event>, lazy: Option<GenSpec>) -> Self {
        let mut store = EventStore::default();
        if let Some(spec) = lazy {
            let generator = Generator::new(spec);
            store
                .events
                .extend(generator.cores().into_iter().map(stored_core));
            store.generator = Some(Arc::new(generator));
        }
        store.events.extend(events.into_iter().map(stored_explicit));
        store.reindex();
        store
    }

    /// Appends events (late or new arrivals) and restores the sort orders.
    pub(crate) fn insert(&mut self, events: Vec<Event>) {
        self.events.extend(events.into_iter().map(stored_explicit));
        self.reindex();
        self.sessions = OnceLock::new();
    }

    /// The `sessions` table, sorted by session id: the events with a non-empty string
    /// `$session_id` property, grouped by it. Computed once per version of the events
    /// (O(events); generated events need only their session id and URL, not all properties).
    pub(crate) fn sessions(&self) -> &[Session] {
        self.sessions.get_or_init(|| {
            let mut index: HashMap<String, usize> = HashMap::new();
            let mut sessions: Vec<Session> = Vec::new();
            // Storage order is (timestamp, uuid): the first event seen is a session's first.
            for e in &self.events {
                let Some((id, url)) = self.session_fields(e) else {
                    continue;
                };
                let i = match index.get(&id) {
                    Some(i) => *i,
                    None => {
                        index.insert(id.clone(), sessions.len());
                        sessions.push(Session {
                            id,
                            distinct_id: e.distinct_id.clone(),
                            start: e.ts,
                            end: e.ts,
                            pageviews: 0,
                            autocaptures: 0,
                            entry_url: url.clone(),
                            end_url: None,
                        });
                        sessions.len() - 1
                    }
                };
                let s = &mut sessions[i];
                s.end = e.ts;
                s.end_url = url;
                match &*e.event {
                    "$pageview" => s.pageviews += 1,
                    "$autocapture" => s.autocaptures += 1,
                    _ => {}
                }
            }
            sessions.sort_by(|a, b| a.id.cmp(&b.id));
            sessions
        })
    }

    /// The event's `$session_id` (when a non-empty string) and `$current_url` (when a string).
    fn session_fields(&self, e: &StoredEvent) -> Option<(String, Option<String>)> {
        match (&e.body, &self.generator) {
            (EventBody::Generated { index, person }, Some(g)) => {
                let (id, url) = g.session_fields(&self.core(e, *index, *person));
                Some((id, Some(url)))
            }
            (EventBody::Generated { .. }, None) => None,
            (EventBody::Explicit(b), _) => {
                let id = b
                    .properties
                    .get("$session_id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())?;
                let url = b
                    .properties
                    .get("$current_url")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                Some((id.to_owned(), url))
            }
        }
    }

    fn reindex(&mut self) {
        // Stable: exact duplicates (same timestamp and uuid) keep their arrival order.
        self.events.sort_by_key(|e| (e.ts, e.ukey));
        let mut by_created: Vec<u32> = (0..self.events.len())
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        by_created.sort_by_key(|&i| {
            let e = &self.events[i as usize];
            (e.created, e.ukey, i)
        });
        self.by_created = by_created;
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// The row at storage position `pos` (sorted by `(timestamp, uuid)`).
    pub(crate) fn get(&self, pos: usize) -> &StoredEvent {
        &self.events[pos]
    }

    /// Storage position of the `rank`-th row in the order of `column`.
    pub(crate) fn position(&self, column: SortColumn, rank: usize) -> usize {
        match column {
            SortColumn::Timestamp => rank,
            SortColumn::CreatedAt => self.by_created[rank] as usize,
        }
    }

    /// The first rank whose key is not before `pred` says it should be skipped.
    pub(crate) fn partition_point(
        &self,
        column: SortColumn,
        mut pred: impl FnMut((i64, UuidKey)) -> bool,
    ) -> usize {
        match column {
            SortColumn::Timestamp => self.events.partition_point(|e| pred((e.ts, e.ukey))),
            SortColumn::CreatedAt => self.by_created.partition_point(|&i| {
                let e = &self.events[i as usize];
                pred((e.created, e.ukey))
            }),
        }
    }

    fn core(&self, e: &StoredEvent, index: u32, person: u32) -> CoreEvent {
        CoreEvent {
            index,
            uuid: e.uuid,
            event: e.event.clone(),
            person: (person != u32::MAX).then_some(person),
            distinct_id: e.distinct_id.clone(),
            person_id: e.person_id,
            ts: e.ts,
            created: e.created,
        }
    }

    /// The event's properties, regenerated if needed.
    pub(crate) fn properties<'a>(&'a self, e: &'a StoredEvent) -> Cow<'a, Map<String, Value>> {
        match (&e.body, &self.generator) {
            (EventBody::Explicit(b), _) => Cow::Borrowed(&b.properties),
            (EventBody::Generated { index, person }, Some(g)) => {
                Cow::Owned(g.properties(&self.core(e, *index, *person)))
            }
            // A generated row always comes with its generator.
            (EventBody::Generated { .. }, None) => Cow::Owned(Map::new()),
        }
    }

    /// The event's elements chain, regenerated if needed.
    pub(crate) fn elements_chain<'a>(&'a self, e: &'a StoredEvent) -> Cow<'a, str> {
        match (&e.body, &self.generator) {
            (EventBody::Explicit(b), _) => Cow::Borrowed(&b.elements_chain),
            (EventBody::Generated { index, person }, Some(g)) => {
                Cow::Owned(g.elements_chain(&self.core(e, *index, *person)))
            }
            (EventBody::Generated { .. }, None) => Cow::Borrowed(""),
        }
    }

    /// The person's properties as of the event (`person.properties`): stored ones as given,
    /// generated ones from the person's history (borrowed, nothing is regenerated); empty for
    /// an event without a person.
    pub(crate) fn person_properties<'a>(
        &'a self,
        e: &'a StoredEvent,
    ) -> Cow<'a, Map<String, Value>> {
        match (&e.body, &self.generator) {
            (EventBody::Explicit(b), _) => Cow::Borrowed(&b.person_properties),
            (EventBody::Generated { person, .. }, Some(g)) if *person != u32::MAX => g
                .person_properties_at(*person, e.ts)
                .map_or_else(|| Cow::Owned(Map::new()), Cow::Borrowed),
            (EventBody::Generated { .. }, _) => Cow::Owned(Map::new()),
        }
    }

    /// The full event at storage position `pos`.
    #[cfg(test)]
    pub(crate) fn event(&self, pos: usize) -> Event {
        use crate::timefmt::datetime_of;
        let e = &self.events[pos];
        Event {
            uuid: e.uuid,
            event: e.event.to_string(),
            distinct_id: e.distinct_id.to_string(),
            timestamp: datetime_of(e.ts),
            created_at: datetime_of(e.created),
            person_id: e.person_id,
            properties: self.properties(e).into_owned(),
            elements_chain: self.elements_chain(e).into_owned(),
            person_properties: self.person_properties(e).into_owned(),
        }
    }
}

fn stored_core(core: CoreEvent) -> StoredEvent {
    StoredEvent {
        ts: core.ts,
        created: core.created,
        ukey: uuid_key(&core.uuid),
        uuid: core.uuid,
        event: core.event,
        distinct_id: core.distinct_id,
        person_id: core.person_id,
        body: EventBody::Generated {
            index: core.index,
            person: core.person.unwrap_or(u32::MAX),
        },
    }
}

fn stored_explicit(e: Event) -> StoredEvent {
    StoredEvent {
        ts: micros_of(e.timestamp),
        created: micros_of(e.created_at),
        ukey: uuid_key(&e.uuid),
        uuid: e.uuid,
        event: Arc::from(e.event.as_str()),
        distinct_id: Arc::from(e.distinct_id.as_str()),
        person_id: e.person_id,
        body: EventBody::Explicit(Box::new(ExplicitBody {
            properties: e.properties,
            elements_chain: e.elements_chain,
            person_properties: e.person_properties,
        })),
    }
}

/// One row of the `persons` table.
#[derive(Debug)]
pub(crate) struct StoredPerson {
    pub person: Person,
    pub created: i64,
}

/// The `persons` table, in the order given.
#[derive(Debug, Default)]
pub(crate) struct PersonStore {
    pub rows: Vec<StoredPerson>,
}

impl PersonStore {
    pub(crate) fn new(persons: Vec<Person>) -> Self {
        PersonStore {
            rows: persons
                .into_iter()
                .map(|person| StoredPerson {
                    created: micros_of(person.created_at),
                    person,
                })
                .collect(),
        }
    }

    /// The person a distinct id belongs to.
    pub(crate) fn by_distinct_id(&self, distinct_id: &str) -> Option<&Person> {
        self.rows
            .iter()
            .map(|r| &r.person)
            .find(|p| p.distinct_ids.iter().any(|d| d == distinct_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;

    #[test]
    fn lazy_store_serves_the_same_events_as_eager_generation() {
        let spec = GenSpec {
            events: 300,
            same_timestamp_cluster: 12,
            ..GenSpec::default()
        };
        let eager = EventStore::new(Dataset::generate(&spec).events, None);
        let lazy = EventStore::new(Vec::new(), Some(spec));
        assert_eq!(eager.len(), lazy.len());
        for pos in 0..eager.len() {
            assert_eq!(eager.event(pos), lazy.event(pos));
        }
    }

    #[test]
    fn generated_sessions_match_the_materialised_properties() {
        let spec = GenSpec {
            events: 400,
            persons: 10,
            ..GenSpec::default()
        };
        let eager = EventStore::new(Dataset::generate(&spec).events, None);
        let lazy = EventStore::new(Vec::new(), Some(spec));
        assert!(lazy.sessions().len() > 10);
        assert_eq!(eager.sessions(), lazy.sessions());
        assert!(lazy.sessions().iter().all(|s| s.start <= s.end));
        assert!(lazy.sessions().windows(2).all(|w| w[0].id < w[1].id));
    }

    #[test]
    fn inserting_events_refreshes_the_sessions() {
        let mut store = EventStore::default();
        assert!(store.sessions().is_empty());
        let mut e = Dataset::generate(&GenSpec {
            events: 1,
            persons: 1,
            ..GenSpec::default()
        })
        .events;
        e[0].properties
            .insert("$session_id".into(), Value::String("s-1".into()));
        store.insert(e);
        assert_eq!(store.sessions().len(), 1);
        assert_eq!(store.sessions()[0].id, "s-1");
    }

    #[test]
    fn uuid_key_orders_by_second_half_first() {
        let a = Uuid::parse_str("00000000-0000-0000-ffff-ffffffffffff").unwrap();
        let b = Uuid::parse_str("ffffffff-ffff-ffff-0000-000000000000").unwrap();
        assert!(a.to_string() < b.to_string());
        assert!(uuid_key(&a) > uuid_key(&b));
    }
}
