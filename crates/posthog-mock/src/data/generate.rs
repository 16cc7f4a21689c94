//! The deterministic event and person generator.
//!
//! Generation has two layers so that a million events can be served without materialising a
//! million property maps: a sequential pass draws each event's *core* (uuid, name, person,
//! timestamps) from one RNG seeded with `seed`, and each event's properties and elements chain
//! come from an RNG seeded with `(seed, index)` alone, so they can be produced on demand, in any
//! order, and always come out the same.
//!
//! Persons change over time, so that "the person as of the event" (persons-on-events) is
//! observable: most persons have one change instant inside the span at which `visits` grows and
//! either `plan` is upgraded (free → pro, pro → enterprise) or `last_seen_browser` changes.
//! A person's properties at an instant are therefore a function of (person, instant) alone, and
//! an event's `person_properties` can be produced on demand like its other columns.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

use super::{Event, Person};
use crate::timefmt::{datetime_of, micros_of};

/// What [`crate::Dataset::generate`] produces.
#[derive(Debug, Clone, PartialEq)]
pub struct GenSpec {
    /// RNG seed; the same spec always yields the same data.
    pub seed: u64,
    /// Number of events.
    pub events: usize,
    /// Earliest event timestamp.
    pub start: OffsetDateTime,
    /// Timestamps fall in `start .. start + span`.
    pub span: Duration,
    /// Size of one cluster of events sharing one exact timestamp (0 for none).
    pub same_timestamp_cluster: usize,
    /// Number of persons; events pick their distinct ids from them (a few stay anonymous).
    pub persons: usize,
    /// What the events' properties look like beyond the default ~30–35 keys (benchmarks
    /// measure more than one shape of data).
    pub shape: DataShape,
}

/// The shape of the generated event properties. Every shape keeps the default properties
/// exactly as they are (the extra keys come from a random stream of their own), so the same
/// seed yields the same events plus the shape's extra keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataShape {
    /// The default properties only.
    #[default]
    Default,
    /// A wide project: every event also carries [`WIDE_KEYS_PER_EVENT`] keys drawn from a pool
    /// of `keys` names (`wide_00000` …), so a run sees up to `keys` distinct columns while most
    /// rows hold few of them.
    Wide {
        /// Distinct extra keys.
        keys: u32,
    },
    /// Heavy values: every other event also carries `heavy_text`, a text of `bytes` characters
    /// (mostly ASCII, some multi-byte).
    Heavy {
        /// Characters in each heavy value.
        bytes: u32,
    },
}

impl std::fmt::Display for DataShape {
    /// The form [`DataShape::parse`] reads: `default`, `wide:KEYS`, `heavy:CHARS`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataShape::Default => f.write_str("default"),
            DataShape::Wide { keys } => write!(f, "wide:{keys}"),
            DataShape::Heavy { bytes } => write!(f, "heavy:{bytes}"),
        }
    }
}

/// Extra keys per event of [`DataShape::Wide`].
pub const WIDE_KEYS_PER_EVENT: usize = 4;

impl DataShape {
    /// Parses `default`, `wide[:KEYS]` (3 000 keys) or `heavy[:CHARS]` (10 240 characters).
    pub fn parse(text: &str) -> Result<DataShape, String> {
        let (name, given) = match text.split_once(':') {
            Some((name, size)) => (name, Some(size)),
            None => (text, None),
        };
        let size = |default: u32| -> Result<u32, String> {
            match given {
                None => Ok(default),
                Some(s) => s
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("`{s}` is not a positive number")),
            }
        };
        match name {
            "default" if given.is_none() => Ok(DataShape::Default),
            "wide" => Ok(DataShape::Wide { keys: size(3_000)? }),
            "heavy" => Ok(DataShape::Heavy {
                bytes: size(10_240)?,
            }),
            _ => Err(format!(
                "`{text}` is not a data shape: default, wide[:KEYS] or heavy[:CHARS]"
            )),
        }
    }

    /// Adds the shape's extra properties of event `index` to `p`.
    fn extend(self, seed: u64, index: u32, p: &mut Map<String, Value>) {
        let mut rng = event_rng(seed, index, 9);
        match self {
            DataShape::Default => {}
            DataShape::Wide { keys } => {
                for _ in 0..WIDE_KEYS_PER_EVENT {
                    let key = rng.u32(..keys.max(1));
                    p.insert(format!("wide_{key:05}"), json!(rng.u32(..1000)));
                }
            }
            DataShape::Heavy { bytes } => {
                if rng.bool() {
                    let text: String = LOREM.chars().cycle().take(bytes as usize).collect();
                    p.insert("heavy_text".into(), json!(text));
                }
            }
        }
    }
}

impl Default for GenSpec {
    /// Seed 42, 1 000 events over 7 days from 2025-01-01T00:00:00Z, 50 persons, no cluster.
    fn default() -> Self {
        GenSpec {
            seed: 42,
            events: 1_000,
            start: datetime!(2025-01-01 0:00 UTC),
            span: Duration::from_secs(7 * 86_400),
            same_timestamp_cluster: 0,
            persons: 50,
            shape: DataShape::Default,
        }
    }
}

impl GenSpec {
    /// The spec of `fixtures/events.sample.jsonl`: seed 42, 200 events over 2 days from
    /// 2025-01-01, 20 persons, a cluster of 8 events sharing one timestamp.
    pub fn sample() -> Self {
        GenSpec {
            seed: 42,
            events: 200,
            start: datetime!(2025-01-01 0:00 UTC),
            span: Duration::from_secs(2 * 86_400),
            same_timestamp_cluster: 8,
            persons: 20,
            shape: DataShape::Default,
        }
    }
}

/// The columns of a generated event that are drawn sequentially.
#[derive(Debug, Clone)]
pub(crate) struct CoreEvent {
    /// Generation index: the key of the per-event RNG.
    pub index: u32,
    pub uuid: Uuid,
    pub event: Arc<str>,
    pub person: Option<u32>,
    pub distinct_id: Arc<str>,
    pub person_id: Option<Uuid>,
    /// Timestamp, µs since the epoch.
    pub ts: i64,
    /// Ingestion time, µs since the epoch.
    pub created: i64,
}

/// A generator bound to one spec; persons are generated eagerly (they are few).
#[derive(Debug, Clone)]
pub(crate) struct Generator {
    spec: GenSpec,
    persons: Vec<Person>,
    distinct_ids: Vec<Vec<Arc<str>>>,
    /// Per person (same index as `persons`): its properties over time.
    histories: Vec<PersonHistory>,
}

/// One person's properties over time: `before` until `change_at`, then the person's current
/// properties (`Person::properties`, what the `persons` table serves). Without a change
/// instant the properties never change within the span and `before` equals the current ones.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PersonHistory {
    /// The properties before `change_at`.
    pub before: Map<String, Value>,
    /// The instant (µs) from which the current properties apply.
    pub change_at: Option<i64>,
}

const EVENT_NAMES: &[(&str, u8)] = &[
    ("$pageview", 42),
    ("$autocapture", 18),
    ("$pageleave", 8),
    ("feature_used", 7),
    ("$screen", 5),
    ("purchase", 4),
    ("$identify", 4),
    ("user_signup", 4),
    ("button clicked", 4),
    ("$exception", 2),
    ("Événement spécial 🎉", 2),
];

const HOSTS: &[&str] = &["app.example.com", "www.example.com", "docs.example.com"];
const PATHS: &[&str] = &[
    "/",
    "/pricing",
    "/signup",
    "/dashboard",
    "/settings/billing",
    "/blog/keyset-pagination",
    "/docs/api/queries",
    "/products/データ",
    "/search",
];
const BROWSERS: &[&str] = &[
    "Chrome",
    "Safari",
    "Firefox",
    "Edge",
    "Opera",
    "Samsung Internet",
];
const OSES: &[(&str, &str)] = &[
    ("Mac OS X", "Desktop"),
    ("Windows", "Desktop"),
    ("Linux", "Desktop"),
    ("iOS", "Mobile"),
    ("Android", "Mobile"),
    ("iPadOS", "Tablet"),
];
const LIBS: &[(&str, &str)] = &[
    ("web", "1.236.1"),
    ("web", "1.241.0"),
    ("posthog-python", "3.7.4"),
    ("posthog-node", "4.2.1"),
    ("posthog-ios", "3.13.0"),
];
const GEO: &[(&str, &str)] = &[
    ("US", "San Francisco"),
    ("IN", "Bengaluru"),
    ("DE", "München"),
    ("BR", "São Paulo"),
    ("JP", "東京"),
    ("IL", "תל אביב"),
    ("EG", "القاهرة"),
    ("GB", "London"),
];
const TITLES: &[&str] = &[
    "Dashboard | Example",
    "Pricing 🚀 | Example",
    "価格とプラン | Example",
    "مرحبا بكم — Example",
    "Sign up — it's free!",
    "Blog: \"Keyset\" pagination, explained",
    "Settings\tBilling",
];
const CAMPAIGNS: &[&str] = &[
    "spring_sale_🌸",
    "launch-week",
    "促销活动",
    "newsletter 2025/01",
];
const PLANS: &[&str] = &["free", "pro", "enterprise"];
const NAMES: &[&str] = &[
    "Zoë Müller",
    "李雷",
    "أحمد علي",
    "Ana María Núñez",
    "Ωmega Test",
    "O'Brien, Pat",
    "Jürgen \"JJ\" Schmidt",
    "Siddharth Rao",
];
const NICKNAMES: &[&str] = &["Zo", "小李", "أبو علي", "J-J", "Ωmega 🚀"];
const COLOURS: &[&str] = &["teal", "bleu ciel", "赤", "أخضر", "mauve 💜"];
const COUNTRIES: &[&str] = &["España", "日本", "Deutschland", "Brasil", "مصر", "Ελλάδα"];
const THEMES: &[&str] = &["dark", "light", "system"];
const LANGUAGES: &[&str] = &["en", "de", "ja", "ar", "pt-BR"];
const LOREM: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit — 日本語のテキスト — \
    نص عربي — emoji 🚀🔥 — sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ";

impl Generator {
    pub(crate) fn new(spec: GenSpec) -> Self {
        let (persons, histories) = generate_persons(&spec);
        let distinct_ids = persons
            .iter()
            .map(|p| {
                p.distinct_ids
                    .iter()
                    .map(|d| Arc::<str>::from(d.as_str()))
                    .collect()
            })
            .collect();
        Generator {
            spec,
            persons,
            distinct_ids,
            histories,
        }
    }

    pub(crate) fn persons(&self) -> &[Person] {
        &self.persons
    }

    /// Person `person`'s properties as of `ts` (µs): the current ones from its change instant
    /// on, the earlier ones before it. `None` for an unknown person index.
    pub(crate) fn person_properties_at(&self, person: u32, ts: i64) -> Option<&Map<String, Value>> {
        let i = person as usize;
        let history = self.histories.get(i)?;
        match history.change_at {
            Some(at) if ts < at => Some(&history.before),
            _ => self.persons.get(i).map(|p| &p.properties),
        }
    }

    /// The `person_properties` of one event: its person's properties as of its timestamp, or
    /// nothing (`{}`) for a personless event.
    pub(crate) fn person_properties(&self, core: &CoreEvent) -> Option<&Map<String, Value>> {
        core.person
            .and_then(|p| self.person_properties_at(p, core.ts))
    }

    /// Every event, fully materialised, in generation order.
    pub(crate) fn events(&self) -> Vec<Event> {
        self.cores()
            .iter()
            .map(|core| Event {
                uuid: core.uuid,
                event: core.event.to_string(),
                distinct_id: core.distinct_id.to_string(),
                timestamp: datetime_of(core.ts),
                created_at: datetime_of(core.created),
                person_id: core.person_id,
                properties: self.properties(core),
                elements_chain: self.elements_chain(core),
                person_properties: self.person_properties(core).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// The sequentially drawn columns of every event, in generation order.
    pub(crate) fn cores(&self) -> Vec<CoreEvent> {
        let spec = &self.spec;
        let mut rng = fastrand::Rng::with_seed(spec.seed);
        let start = micros_of(spec.start);
        let span = u64::try_from(spec.span.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let cluster_ts = offset(start, rng.u64(..span));
        let names: Vec<(Arc<str>, u8)> = EVENT_NAMES
            .iter()
            .map(|(n, w)| (Arc::from(*n), *w))
            .collect();
        let mut out: Vec<CoreEvent> = Vec::with_capacity(spec.events);
        for i in 0..spec.events {
            let ts = if i < spec.same_timestamp_cluster {
                cluster_ts
            } else if !out.is_empty() && rng.u8(..100) < 2 {
                // Share a timestamp with an earlier event, outside the deliberate cluster.
                out[rng.usize(..out.len())].ts
            } else {
                let t = offset(start, rng.u64(..span));
                if rng.u8(..10) == 0 {
                    t - t.rem_euclid(1_000_000)
                } else {
                    t
                }
            };
            let event = pick_weighted(&mut rng, &names);
            let (person, distinct_id, person_id) = if !self.persons.is_empty() && rng.u8(..100) >= 4
            {
                // Skewed towards low indexes: some persons are far more active.
                let f = rng.f64();
                let p = ((f * f) * self.persons.len() as f64) as usize;
                let p = p.min(self.persons.len() - 1);
                let ids = &self.distinct_ids[p];
                let d = ids[rng.usize(..ids.len())].clone();
                (Some(p as u32), d, Some(self.persons[p].id))
            } else {
                let anon = uuid_v7(ts, &mut rng);
                (None, Arc::from(anon.to_string().as_str()), None)
            };
            let lag = match rng.u8(..100) {
                0..90 => rng.u64(50_000..5_000_000),
                90..98 => rng.u64(5_000_000..120_000_000),
                _ => rng.u64(3_600_000_000..30 * 3_600_000_000),
            };
            out.push(CoreEvent {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                uuid: uuid_v7(ts, &mut rng),
                event,
                person,
                distinct_id,
                person_id,
                ts,
                created: offset(ts, lag),
            });
        }
        out
    }

    /// The event's `$session_id` and `$current_url` properties, without generating the rest
    /// (the `sessions` table needs only these).
    pub(crate) fn session_fields(&self, core: &CoreEvent) -> (String, String) {
        let mut rng = event_rng(self.spec.seed, core.index, 1);
        (
            session_id(&core.distinct_id, core.ts).to_string(),
            head(&mut rng).current_url,
        )
    }

    /// The properties of one event: ~30–35 keys, messy on purpose.
    pub(crate) fn properties(&self, core: &CoreEvent) -> Map<String, Value> {
        let mut rng = event_rng(self.spec.seed, core.index, 1);
        let person = core.person.and_then(|p| self.persons.get(p as usize));
        // The person as of the event: its plan may have changed since.
        let person_now = self.person_properties(core);
        let mut p = Map::new();
        let Head {
            host,
            path,
            os,
            device,
            lib,
            lib_version,
            country,
            city,
            browser,
            current_url,
        } = head(&mut rng);
        p.insert("$current_url".into(), json!(current_url));
        p.insert("$host".into(), json!(host));
        p.insert("$pathname".into(), json!(path));
        p.insert("$browser".into(), json!(browser));
        p.insert("$browser_version".into(), json!(rng.u32(110..132)));
        p.insert("$os".into(), json!(os));
        p.insert("$device_type".into(), json!(device));
        p.insert("$lib".into(), json!(lib));
        p.insert("$lib_version".into(), json!(lib_version));
        let (width, height) = if device == "Desktop" {
            (
                pick(&mut rng, &[1280u32, 1440, 1920, 2560]),
                900 + rng.u32(..500),
            )
        } else {
            (
                pick(&mut rng, &[375u32, 390, 412, 768, 820]),
                640 + rng.u32(..400),
            )
        };
        p.insert("$screen_width".into(), json!(width));
        p.insert("$screen_height".into(), json!(height));
        p.insert(
            "$session_id".into(),
            json!(session_id(&core.distinct_id, core.ts).to_string()),
        );
        p.insert(
            "$window_id".into(),
            json!(uuid_v7(core.ts, &mut rng).to_string()),
        );
        let (referrer, referring_domain) = match rng.u8(..4) {
            0 => ("https://www.google.com/", "www.google.com"),
            1 => (
                "https://news.ycombinator.com/item?id=1",
                "news.ycombinator.com",
            ),
            _ => ("$direct", "$direct"),
        };
        p.insert("$referrer".into(), json!(referrer));
        p.insert("$referring_domain".into(), json!(referring_domain));
        match rng.u8(..5) {
            0 => {}
            1 => {
                p.insert("utm_source".into(), Value::Null);
            }
            _ => {
                p.insert(
                    "utm_source".into(),
                    json!(pick(&mut rng, &["google", "newsletter", "twitter"])),
                );
                p.insert(
                    "utm_medium".into(),
                    json!(pick(&mut rng, &["cpc", "email", "social"])),
                );
                p.insert("utm_campaign".into(), json!(pick(&mut rng, CAMPAIGNS)));
            }
        }
        p.insert("$geoip_country_code".into(), json!(country));
        p.insert("$geoip_city_name".into(), json!(city));
        p.insert(
            "$ip".into(),
            json!(format!("203.0.{}.{}", rng.u8(..255), rng.u8(1..255))),
        );
        p.insert("$insert_id".into(), json!(random_token(&mut rng, 16)));
        p.insert("$time".into(), json!(core.ts as f64 / 1e6));
        p.insert(
            "$process_person_profile".into(),
            json!(core.person.is_some()),
        );
        // One key with a different JSON type from row to row.
        let plan_price = match rng.u8(..6) {
            0 => json!(42),
            1 => json!("42"),
            2 => json!(42.5),
            3 => json!(true),
            4 => Value::Null,
            _ => json!(rng.u32(..1000)),
        };
        p.insert("plan_price".into(), plan_price);
        let plan = person_now
            .and_then(|p| p.get("plan").cloned())
            .unwrap_or_else(|| json!(pick(&mut rng, PLANS)));
        p.insert("plan".into(), plan.clone());
        p.insert("key with spaces".into(), json!("value with spaces"));
        p.insert("dotted.key".into(), json!(rng.u32(..100)));
        p.insert("dash-key".into(), json!(format!("x-{}", rng.u8(..10))));
        let tags: Vec<Value> = (0..rng.usize(..4))
            .map(|_| json!(pick(&mut rng, &["alpha", "beta", "ga", "ünïcödé", "🚀"])))
            .collect();
        p.insert("tags".into(), Value::Array(tags));
        p.insert("title".into(), json!(pick(&mut rng, TITLES)));
        let flag_value = match rng.u8(..3) {
            0 => json!("test"),
            1 => json!("control"),
            _ => json!(false),
        };
        p.insert("$feature/new-onboarding".into(), flag_value);
        p.insert(
            "$set".into(),
            json!({
                "plan": plan,
                "last_browser": browser,
                "nested": {"depth": 2, "list": [1, "two", null, {"three": 3.0}]},
            }),
        );
        self.event_specific(core, person, &mut rng, &mut p);
        if rng.u8(..100) == 0 {
            let repeat = 20 + rng.usize(..60);
            p.insert("long_text".into(), json!(LOREM.repeat(repeat)));
        }
        self.spec.shape.extend(self.spec.seed, core.index, &mut p);
        p
    }

    fn event_specific(
        &self,
        core: &CoreEvent,
        person: Option<&Person>,
        rng: &mut fastrand::Rng,
        p: &mut Map<String, Value>,
    ) {
        match &*core.event {
            "$pageview" => {
                p.insert("$prev_pageview_pathname".into(), json!(pick(rng, PATHS)));
            }
            "$autocapture" => {
                p.insert(
                    "$event_type".into(),
                    json!(pick(rng, &["click", "submit", "change"])),
                );
                p.insert(
                    "$el_text".into(),
                    json!(pick(rng, &["Sign up", "Buy now", "Jetzt kaufen", "購入"])),
                );
            }
            "$identify" => {
                let email = person
                    .and_then(|p| p.properties.get("email").cloned())
                    .unwrap_or(Value::Null);
                p.insert(
                    "$anon_distinct_id".into(),
                    json!(uuid_v7(core.ts, rng).to_string()),
                );
                p.insert(
                    "$set_once".into(),
                    json!({"initial_referrer": "$direct", "email": email}),
                );
            }
            "user_signup" => {
                p.insert(
                    "signup_method".into(),
                    json!(pick(rng, &["email", "google", "github"])),
                );
                let code = if rng.bool() {
                    json!(random_token(rng, 6))
                } else {
                    Value::Null
                };
                p.insert("referral_code".into(), code);
            }
            "purchase" => {
                let items: Vec<Value> = (0..1 + rng.usize(..3))
                    .map(|_| {
                        json!({
                            "sku": format!("SKU-{}", rng.u16(..9999)),
                            "qty": 1 + rng.u8(..4),
                            "price": f64::from(rng.u32(100..20_000)) / 100.0,
                        })
                    })
                    .collect();
                let total: f64 = items
                    .iter()
                    .map(|i| i["price"].as_f64().unwrap_or(0.0) * i["qty"].as_f64().unwrap_or(0.0))
                    .sum();
                let total = (total * 100.0).round() / 100.0;
                p.insert("revenue".into(), json!(total));
                p.insert(
                    "currency".into(),
                    json!(pick(rng, &["USD", "EUR", "INR", "JPY"])),
                );
                p.insert("cart".into(), json!({"items": items, "total": total}));
            }
            "feature_used" => {
                p.insert(
                    "feature".into(),
                    json!(pick(rng, &["export", "dashboards", "sql-editor"])),
                );
                p.insert("duration_ms".into(), json!(rng.u32(..60_000)));
            }
            "$exception" => {
                p.insert("$exception_type".into(), json!("TypeError"));
                p.insert(
                    "$exception_message".into(),
                    json!("Cannot read properties of undefined (reading 'map')\n    at render (app.js:1:2345)"),
                );
            }
            _ => {
                p.insert("source".into(), json!(pick(rng, &["web", "api", "import"])));
            }
        }
    }

    /// The autocapture elements chain of one event (empty for other events).
    pub(crate) fn elements_chain(&self, core: &CoreEvent) -> String {
        if &*core.event != "$autocapture" {
            return String::new();
        }
        let mut rng = event_rng(self.spec.seed, core.index, 2);
        let (tag, text) = pick(
            &mut rng,
            &[
                ("button", "Sign up"),
                ("a", "Pricing"),
                ("input", ""),
                ("span", "購入 🚀"),
            ],
        );
        format!(
            "{tag}.btn.btn-primary:attr__class=\"btn btn-primary\"attr__href=\"/pricing\"nth-child=\"{}\"nth-of-type=\"1\"text=\"{text}\";div.hero:nth-child=\"1\"nth-of-type=\"1\";body:nth-child=\"2\"nth-of-type=\"1\"",
            1 + rng.u8(..5)
        )
    }
}

/// The first draws of an event's property stream: everything `$current_url` depends on.
/// Shared by [`Generator::properties`] and [`Generator::session_fields`] so they cannot drift.
struct Head {
    host: &'static str,
    path: &'static str,
    os: &'static str,
    device: &'static str,
    lib: &'static str,
    lib_version: &'static str,
    country: &'static str,
    city: &'static str,
    browser: &'static str,
    current_url: String,
}

fn head(rng: &mut fastrand::Rng) -> Head {
    let host = pick(rng, HOSTS);
    let path = pick(rng, PATHS);
    let (os, device) = pick(rng, OSES);
    let (lib, lib_version) = pick(rng, LIBS);
    let (country, city) = pick(rng, GEO);
    let browser = pick(rng, BROWSERS);
    let query = match rng.u8(..4) {
        0 => format!("?utm_source=newsletter&q={}", rng.u16(..1000)),
        1 => "?ref=%E2%9C%93&lang=ja".to_owned(),
        _ => String::new(),
    };
    Head {
        host,
        path,
        os,
        device,
        lib,
        lib_version,
        country,
        city,
        browser,
        current_url: format!("https://{host}{path}{query}"),
    }
}

fn generate_persons(spec: &GenSpec) -> (Vec<Person>, Vec<PersonHistory>) {
    let mut rng = fastrand::Rng::with_seed(spec.seed ^ 0x9E37_79B9_7F4A_7C15);
    let start = micros_of(spec.start);
    (0..spec.persons)
        .map(|i| {
            let created = start - i64::try_from(rng.u64(..90 * 86_400_000_000)).unwrap_or(0);
            let identified = rng.u8(..10) < 7;
            let anon = uuid_v7(created, &mut rng).to_string();
            let mut distinct_ids = vec![anon];
            let mut props = Map::new();
            let name = pick(&mut rng, NAMES);
            props.insert("name".into(), json!(name));
            props.insert("plan".into(), json!(pick(&mut rng, PLANS)));
            props.insert("$initial_browser".into(), json!(pick(&mut rng, BROWSERS)));
            props.insert("$initial_os".into(), json!(pick(&mut rng, OSES).0));
            props.insert("$geoip_country_code".into(), json!(pick(&mut rng, GEO).0));
            props.insert(
                "company".into(),
                json!({"name": format!("Company {}", i % 7), "size": 10 * (1 + i % 5)}),
            );
            props.insert(
                "age".into(),
                if rng.bool() {
                    json!(18 + rng.u8(..50))
                } else {
                    json!("unknown")
                },
            );
            if identified {
                let email = format!("user{i}@example.com");
                props.insert("email".into(), json!(email));
                distinct_ids.push(email);
            }
            if rng.u8(..10) < 3 {
                distinct_ids.push(format!("device-{}", random_token(&mut rng, 10)));
            }
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&rng.u64(..).to_be_bytes());
            bytes[8..].copy_from_slice(&rng.u64(..).to_be_bytes());
            let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
            // The draws above are the persons' original ones; what follows comes from a
            // per-person stream, so adding it changed no existing person or event core.
            let history = person_history(spec, i, created, &mut props);
            let person = Person {
                id,
                created_at: datetime_of(created),
                properties: props,
                is_identified: identified,
                distinct_ids,
            };
            (person, history)
        })
        .unzip()
}

/// Adds the typed and time-varying properties to a person's current properties `props` and
/// returns its history: properties of every JSON type (bool, null, a nested object with an
/// array, a float, an ISO date-time string), a key with a space and a non-ASCII key, and, for
/// about three persons in four, a change instant inside the span at which `visits` grows and
/// either `plan` is upgraded (the earlier plan is one step lower) or `last_seen_browser`
/// changes. `props` ends as the properties at the end of the span.
fn person_history(
    spec: &GenSpec,
    index: usize,
    created: i64,
    props: &mut Map<String, Value>,
) -> PersonHistory {
    let key = spec.seed.wrapping_mul(0xA076_1D64_78BD_642F)
        ^ (index as u64 + 1).wrapping_mul(0xE703_7ED1_A0B4_28DB);
    let mut rng = fastrand::Rng::with_seed(key);
    props.insert("is_beta".into(), json!(rng.u8(..4) == 0));
    props.insert(
        "nickname".into(),
        if rng.bool() {
            Value::Null
        } else {
            json!(pick(&mut rng, NICKNAMES))
        },
    );
    let languages: Vec<Value> = (0..1 + rng.usize(..3))
        .map(|_| json!(pick(&mut rng, LANGUAGES)))
        .collect();
    props.insert(
        "preferences".into(),
        json!({
            "theme": pick(&mut rng, THEMES),
            "notifications": {"email": rng.bool(), "push": rng.bool()},
            "languages": languages,
        }),
    );
    props.insert("favourite colour".into(), json!(pick(&mut rng, COLOURS)));
    props.insert("país".into(), json!(pick(&mut rng, COUNTRIES)));
    props.insert(
        "lifetime_value".into(),
        json!(f64::from(rng.u32(..100_000)) / 100.0),
    );
    props.insert(
        "signed_up_at".into(),
        json!(crate::timefmt::isoformat(created, time::UtcOffset::UTC)),
    );
    let visits = 2 + rng.u32(..200);
    let browser = pick(&mut rng, BROWSERS);
    props.insert("visits".into(), json!(visits));
    props.insert("last_seen_browser".into(), json!(browser));

    let mut before = props.clone();
    let changes = rng.u8(..4) != 0;
    if !changes {
        return PersonHistory {
            before,
            change_at: None,
        };
    }
    let span = u64::try_from(spec.span.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let change_at = offset(micros_of(spec.start), rng.u64(..span));
    before.insert("visits".into(), json!(visits - 1 - rng.u32(..visits - 1)));
    let earlier_plan = match props.get("plan").and_then(Value::as_str) {
        Some("pro") => Some("free"),
        Some("enterprise") => Some("pro"),
        _ => None,
    };
    match earlier_plan {
        Some(plan) => {
            before.insert("plan".into(), json!(plan));
        }
        None => {
            let others: Vec<&str> = BROWSERS.iter().copied().filter(|b| *b != browser).collect();
            before.insert("last_seen_browser".into(), json!(pick(&mut rng, &others)));
        }
    }
    PersonHistory {
        before,
        change_at: Some(change_at),
    }
}

fn offset(base: i64, delta: u64) -> i64 {
    base.saturating_add(i64::try_from(delta).unwrap_or(i64::MAX))
}

fn event_rng(seed: u64, index: u32, stream: u64) -> fastrand::Rng {
    let key = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (u64::from(index) + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
        ^ stream.wrapping_mul(0xA076_1D64_78BD_642F);
    fastrand::Rng::with_seed(key)
}

/// A UUIDv7 for the instant `ts` (µs) with random bits from `rng`.
fn uuid_v7(ts: i64, rng: &mut fastrand::Rng) -> Uuid {
    let ms = (ts.div_euclid(1000) as u64) & 0xFFFF_FFFF_FFFF;
    let rand_a = u64::from(rng.u16(..)) & 0x0FFF;
    let rand_b = rng.u64(..) & 0x3FFF_FFFF_FFFF_FFFF;
    Uuid::from_u64_pair((ms << 16) | 0x7000 | rand_a, 0x8000_0000_0000_0000 | rand_b)
}

/// A session id shared by one distinct id's events within a 30-minute bucket.
fn session_id(distinct_id: &str, ts: i64) -> Uuid {
    let bucket = ts.div_euclid(30 * 60 * 1_000_000);
    let mut rng = fastrand::Rng::with_seed(stable_hash(distinct_id.as_bytes()) ^ bucket as u64);
    uuid_v7(bucket * 30 * 60 * 1_000_000, &mut rng)
}

/// FNV-1a, 64 bit: a hash that never changes between releases or platforms.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

fn random_token(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len).map(|_| rng.alphanumeric()).collect()
}

fn pick<T: Copy>(rng: &mut fastrand::Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

fn pick_weighted(rng: &mut fastrand::Rng, items: &[(Arc<str>, u8)]) -> Arc<str> {
    let total: u32 = items.iter().map(|(_, w)| u32::from(*w)).sum();
    let mut r = rng.u32(..total);
    for (name, w) in items {
        if r < u32::from(*w) {
            return name.clone();
        }
        r -= u32::from(*w);
    }
    items[0].0.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn shaped(shape: DataShape, events: usize) -> Vec<Event> {
        Generator::new(GenSpec {
            events,
            shape,
            ..GenSpec::default()
        })
        .events()
    }

    /// The shape's extra keys removed, an event is the default shape's event.
    fn without(mut events: Vec<Event>, extra: impl Fn(&str) -> bool) -> Vec<Event> {
        for e in &mut events {
            e.properties.retain(|k, _| !extra(k));
        }
        events
    }

    #[test]
    fn a_wide_shape_adds_sparse_keys_from_its_pool_and_nothing_else() {
        let plain = shaped(DataShape::Default, 2_000);
        let wide = shaped(DataShape::Wide { keys: 3_000 }, 2_000);
        let mut distinct = std::collections::HashSet::new();
        for e in &wide {
            let keys: Vec<&String> = e
                .properties
                .keys()
                .filter(|k| k.starts_with("wide_"))
                .collect();
            assert!(!keys.is_empty() && keys.len() <= WIDE_KEYS_PER_EVENT);
            distinct.extend(keys.into_iter().cloned());
        }
        assert!(
            distinct.len() >= 2_000,
            "{} distinct wide keys",
            distinct.len()
        );
        assert_eq!(without(wide, |k| k.starts_with("wide_")), plain);
    }

    #[test]
    fn a_heavy_shape_puts_a_long_text_on_every_other_event() {
        let plain = shaped(DataShape::Default, 1_000);
        let heavy = shaped(DataShape::Heavy { bytes: 10_240 }, 1_000);
        let long: Vec<usize> = heavy
            .iter()
            .filter_map(|e| e.properties.get("heavy_text"))
            .map(|v| v.as_str().unwrap().chars().count())
            .collect();
        assert!(
            (400..=600).contains(&long.len()),
            "{} heavy events",
            long.len()
        );
        assert!(long.iter().all(|n| *n == 10_240));
        assert_eq!(without(heavy, |k| k == "heavy_text"), plain);
    }

    #[test]
    fn shapes_parse_with_their_sizes_and_refuse_the_rest() {
        assert_eq!(DataShape::parse("default"), Ok(DataShape::Default));
        assert_eq!(
            DataShape::parse("wide"),
            Ok(DataShape::Wide { keys: 3_000 })
        );
        assert_eq!(
            DataShape::parse("wide:2500"),
            Ok(DataShape::Wide { keys: 2_500 })
        );
        assert_eq!(
            DataShape::parse("heavy:100"),
            Ok(DataShape::Heavy { bytes: 100 })
        );
        for bad in ["", "tall", "wide:0", "wide:x", "default:3", "heavy:-1"] {
            assert!(DataShape::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn same_seed_same_events_different_seed_different_events() {
        let a = Generator::new(GenSpec::sample()).events();
        let b = Generator::new(GenSpec::sample()).events();
        assert_eq!(a, b);
        let c = Generator::new(GenSpec {
            seed: 7,
            ..GenSpec::sample()
        })
        .events();
        assert_ne!(a, c);
    }

    #[test]
    fn events_are_messy_enough() {
        let spec = GenSpec {
            events: 2_000,
            same_timestamp_cluster: 25,
            ..GenSpec::default()
        };
        let events = Generator::new(spec).events();
        let mut per_ts: HashMap<OffsetDateTime, usize> = HashMap::new();
        for e in &events {
            *per_ts.entry(e.timestamp).or_default() += 1;
            assert!(
                (30..=37).contains(&e.properties.len()),
                "{}",
                e.properties.len()
            );
            assert!(e.created_at >= e.timestamp);
        }
        assert!(per_ts.values().any(|n| *n >= 25), "cluster present");
        assert!(
            per_ts.values().filter(|n| **n >= 2).count() > 2,
            "incidental shared timestamps"
        );
        let kinds: std::collections::HashSet<&str> = events
            .iter()
            .filter_map(|e| e.properties.get("plan_price"))
            .map(|v| match v {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(n) if n.is_f64() => "float",
                Value::Number(_) => "int",
                Value::String(_) => "string",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        assert!(events.iter().any(|e| e.timestamp.microsecond() == 0));
        assert!(
            events
                .iter()
                .any(|e| e.created_at - e.timestamp > time::Duration::hours(1))
        );
        assert!(
            events
                .iter()
                .any(|e| e.properties.contains_key("long_text"))
        );
        assert!(events.iter().any(|e| !e.elements_chain.is_empty()));
    }

    #[test]
    fn events_carry_their_persons_properties_as_of_the_event() {
        let spec = GenSpec::default();
        let generator = Generator::new(spec.clone());
        let events = generator.events();
        let cores = generator.cores();
        let end = micros_of(spec.start) + i64::try_from(spec.span.as_micros()).unwrap();
        let mut states: HashMap<u32, std::collections::HashSet<String>> = HashMap::new();
        for (event, core) in events.iter().zip(&cores) {
            match core.person {
                None => assert!(event.person_properties.is_empty(), "personless → {{}}"),
                Some(p) => {
                    let history = &generator.histories[p as usize];
                    let current = &generator.persons[p as usize].properties;
                    let expected = match history.change_at {
                        Some(at) if core.ts < at => &history.before,
                        _ => current,
                    };
                    assert_eq!(&event.person_properties, expected);
                    // The event's own `plan` is the person's plan at that time.
                    assert_eq!(event.properties.get("plan"), expected.get("plan"));
                    states
                        .entry(p)
                        .or_default()
                        .insert(Value::Object(event.person_properties.clone()).to_string());
                }
            }
        }
        assert!(
            states.values().filter(|s| s.len() == 2).count() >= 5,
            "several persons are seen both before and after their change"
        );
        // The `persons` table serves the properties as of the end of the span.
        for (i, person) in generator.persons.iter().enumerate() {
            let at_end = generator.person_properties_at(i as u32, end).unwrap();
            assert_eq!(at_end, &person.properties);
        }
    }

    #[test]
    fn person_changes_grow_visits_and_upgrade_the_plan_or_switch_browser() {
        let generator = Generator::new(GenSpec {
            persons: 200,
            ..GenSpec::default()
        });
        let (mut changed, mut unchanged, mut upgrades, mut browser_switches) = (0, 0, 0, 0);
        let start = micros_of(GenSpec::default().start);
        for (person, history) in generator.persons.iter().zip(&generator.histories) {
            let now = &person.properties;
            let Some(at) = history.change_at else {
                assert_eq!(&history.before, now);
                unchanged += 1;
                continue;
            };
            changed += 1;
            assert!((start..start + 7 * 86_400_000_000).contains(&at));
            assert!(history.before["visits"].as_u64() < now["visits"].as_u64());
            let differing: Vec<&String> = now
                .keys()
                .filter(|k| history.before.get(*k) != now.get(*k))
                .collect();
            assert_eq!(differing.len(), 2, "{differing:?}");
            match (history.before["plan"].as_str(), now["plan"].as_str()) {
                (Some("free"), Some("pro")) | (Some("pro"), Some("enterprise")) => upgrades += 1,
                (a, b) if a == b => {
                    assert_ne!(
                        history.before["last_seen_browser"],
                        now["last_seen_browser"]
                    );
                    browser_switches += 1;
                }
                other => panic!("unexpected plan change {other:?}"),
            }
        }
        assert!(changed > 100 && unchanged > 20, "{changed} / {unchanged}");
        assert!(upgrades > 20 && browser_switches > 20);
    }

    #[test]
    fn person_properties_mix_every_json_type_and_awkward_keys() {
        let generator = Generator::new(GenSpec::default());
        let all: Vec<&Map<String, Value>> =
            generator.persons.iter().map(|p| &p.properties).collect();
        let has = |f: &dyn Fn(&Map<String, Value>) -> bool| all.iter().any(|m| f(m));
        assert!(has(&|m| m.get("is_beta").is_some_and(Value::is_boolean)));
        assert!(has(&|m| m.get("nickname").is_some_and(Value::is_null)));
        assert!(has(&|m| m.get("preferences").is_some_and(Value::is_object)));
        assert!(has(&|m| m.get("visits").is_some_and(Value::is_u64)));
        assert!(has(&|m| m.get("lifetime_value").is_some_and(Value::is_f64)));
        assert!(has(&|m| m.get("age").is_some_and(Value::is_string)));
        assert!(all.iter().all(|m| m.contains_key("$initial_browser")
            && m.contains_key("favourite colour")
            && m.contains_key("país")));
        assert!(has(&|m| m
            .get("favourite colour")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_ascii())));
    }
}
