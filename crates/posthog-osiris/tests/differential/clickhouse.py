"""Runs ClickHouse SQL over the differential test's data in chdb (an in-process ClickHouse) and
prints every result rendered the way PostHog's query API renders a HogQL result.

Input, one JSON document on stdin:
  {"databases": [{"name": "fixed", "events": "/abs/events.jsonl", "persons": "/abs/persons.jsonl",
                  "project_tz": "Asia/Kolkata"}, ...],
   "queries": [{"id": "...", "sql": "..."}, ...]}
Output, one JSON document on stdout:
  {"engine": "chdb 4.4.0 / ClickHouse 26.9.2.1",
   "results": [{"id": "...", "columns": [...], "types": [...], "rows": [[...], ...]}
               or {"id": "...", "error": "..."}, ...]}

Each database gets the tables `events` and `persons` (loaded from the JSONL files the test wrote
from the mock's own dataset), the view `sessions` (see SESSIONS below), and `events_tz`,
`persons_tz`, `sessions_tz`: the same with every DateTime64 column in the project time zone,
which is what HogQL's `toTimeZone(column, project_tz)` does when
`modifiers.convertToProjectTimezone` is true.

Rendering (PostHog: clickhouse-driver values, then DRF's JSON encoder):
  DateTime/DateTime64 -> datetime.isoformat() in the column's zone, "+00:00" -> "Z", the
  fraction omitted when it is zero, else 6 digits; Date -> "YYYY-MM-DD"; UUID -> its string;
  integers -> JSON numbers; floats -> JSON numbers (NaN/inf -> null); Bool -> true/false;
  NULL -> null; String -> the string; Array(T) -> a list of its items, each rendered as a T
  (clickhouse-driver gives a list, which the encoder writes item by item).
"""

import json
import math
import re
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

import chdb
from chdb import session as chs

EVENTS_FILE_SCHEMA = (
    "uuid String, event String, properties String, timestamp_us Int64, distinct_id String, "
    "person_id Nullable(String), created_at_us Int64, elements_chain String, "
    "person_properties String"
)
PERSONS_FILE_SCHEMA = (
    "id String, created_at_us Int64, properties String, is_identified Bool"
)

# The mock's `sessions` table, as the mock README defines it. This is OUR understanding of a
# sessions table (PostHog's real one is an aggregating table fed at ingestion, with many more
# columns); comparing against it checks that the mock computes what we think it computes, not
# that PostHog computes the same.
#   events with a non-empty string `$session_id`, grouped by it; distinct_id and
#   $entry_current_url of the first event, $end_current_url of the last (first/last by
#   (timestamp, uuid)); duration = dateDiff('second', start, end); bounce = at most one
#   pageview and shorter than 10 s.
SESSIONS = """
CREATE VIEW {db}.sessions AS
SELECT
    sid AS session_id,
    sid AS id,
    argMin(distinct_id, (timestamp, uuid)) AS distinct_id,
    min(timestamp) AS `$start_timestamp`,
    max(timestamp) AS `$end_timestamp`,
    toInt64(dateDiff('second', min(timestamp), max(timestamp))) AS `$session_duration`,
    toInt64(dateDiff('second', min(timestamp), max(timestamp))) AS duration,
    countIf(event = '$pageview') AS `$pageview_count`,
    countIf(event = '$autocapture') AS `$autocapture_count`,
    argMin(url, (timestamp, uuid)) AS `$entry_current_url`,
    argMax(url, (timestamp, uuid)) AS `$end_current_url`,
    (countIf(event = '$pageview') <= 1 AND dateDiff('second', min(timestamp), max(timestamp)) < 10)::Bool AS `$is_bounce`
FROM (
    SELECT
        uuid, event, timestamp, distinct_id,
        JSONExtractString(properties, '$session_id') AS sid,
        if(JSONType(properties, '$current_url') = 'String',
           JSONExtractString(properties, '$current_url'), NULL) AS url
    FROM {db}.events
    WHERE JSONType(properties, '$session_id') = 'String' AND sid != ''
)
GROUP BY sid
"""

OUTPUT_SETTINGS = (
    "output_format_json_quote_64bit_integers = 0, output_format_json_quote_64bit_floats = 0, "
    "output_format_json_quote_denormals = 1, output_format_json_escape_forward_slashes = 0, "
    "output_format_json_quote_decimals = 0"
)


def load(sess, db):
    name, tz = db["name"], db["project_tz"]
    sess.query(f"CREATE DATABASE {name}")
    sess.query(
        f"""CREATE TABLE {name}.events (
            uuid UUID, event String, properties String, timestamp DateTime64(6, 'UTC'),
            distinct_id String, person_id Nullable(UUID), created_at DateTime64(6, 'UTC'),
            elements_chain String, person_properties String
        ) ENGINE = MergeTree ORDER BY (timestamp, uuid)"""
    )
    sess.query(
        f"""INSERT INTO {name}.events SELECT
            toUUID(uuid), event, properties, fromUnixTimestamp64Micro(timestamp_us, 'UTC'),
            distinct_id, toUUIDOrNull(person_id), fromUnixTimestamp64Micro(created_at_us, 'UTC'),
            elements_chain, person_properties
        FROM file('{db["events"]}', 'JSONEachRow', '{EVENTS_FILE_SCHEMA}')"""
    )
    sess.query(
        f"""CREATE TABLE {name}.persons (
            id UUID, created_at DateTime64(6, 'UTC'), properties String, is_identified Bool
        ) ENGINE = MergeTree ORDER BY id"""
    )
    sess.query(
        f"""INSERT INTO {name}.persons SELECT
            toUUID(id), fromUnixTimestamp64Micro(created_at_us, 'UTC'), properties, is_identified
        FROM file('{db["persons"]}', 'JSONEachRow', '{PERSONS_FILE_SCHEMA}')"""
    )
    sess.query(SESSIONS.format(db=name))
    q = lambda s: s.replace("'", "\\'")
    z = q(tz)
    sess.query(
        f"""CREATE VIEW {name}.events_tz AS SELECT uuid, event, properties,
            toTimeZone(timestamp, '{z}') AS timestamp, distinct_id, person_id,
            toTimeZone(created_at, '{z}') AS created_at, elements_chain, person_properties
        FROM {name}.events"""
    )
    sess.query(
        f"""CREATE VIEW {name}.persons_tz AS SELECT id, toTimeZone(created_at, '{z}') AS created_at,
            properties, is_identified FROM {name}.persons"""
    )
    sess.query(
        f"""CREATE VIEW {name}.sessions_tz AS SELECT * REPLACE (
            toTimeZone(`$start_timestamp`, '{z}') AS `$start_timestamp`,
            toTimeZone(`$end_timestamp`, '{z}') AS `$end_timestamp`)
        FROM {name}.sessions"""
    )


ZONE_OF_TYPE = re.compile(r"DateTime(?:64)?\((?:\d+\s*,\s*)?'([^']+)'\)")


def renderer(ch_type):
    inner = ch_type
    while True:
        m = re.fullmatch(r"(?:Nullable|LowCardinality)\((.*)\)", inner)
        if not m:
            break
        inner = m.group(1)
    m = re.fullmatch(r"Array\((.*)\)", inner)
    if m:
        render_item = renderer(m.group(1))
        return lambda v: [None if x is None else render_item(x) for x in v]
    if inner.startswith("DateTime"):
        m = ZONE_OF_TYPE.search(inner)
        zone = ZoneInfo(m.group(1) if m else "UTC")

        def render_datetime(v):
            fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in v else "%Y-%m-%d %H:%M:%S"
            d = datetime.strptime(v, fmt).replace(tzinfo=zone)
            text = d.isoformat()
            if text.endswith("+00:00"):
                text = text[:-6] + "Z"
            return text

        return render_datetime
    if inner.startswith("Float") or inner.startswith("Decimal"):

        def render_float(v):
            if isinstance(v, str):  # quoted denormals: nan, inf, -inf
                return None
            v = float(v)
            return None if math.isnan(v) or math.isinf(v) else v

        return render_float
    if re.fullmatch(r"U?Int\d+", inner):
        return int
    return lambda v: v


def run(sess, sql):
    text = sess.query(f"{sql}\nSETTINGS {OUTPUT_SETTINGS}", "JSONCompact").bytes().decode()
    doc = json.loads(text) if text.strip() else {"meta": [], "data": []}
    columns = [c["name"] for c in doc["meta"]]
    types = [c["type"] for c in doc["meta"]]
    renders = [renderer(t) for t in types]
    rows = [
        [None if v is None else r(v) for r, v in zip(renders, row)] for row in doc["data"]
    ]
    return {"columns": columns, "types": types, "rows": rows}


def main():
    request = json.load(sys.stdin)
    sess = chs.Session()
    sess.query("SET session_timezone = 'UTC'")
    for db in request["databases"]:
        load(sess, db)
    version = sess.query("SELECT version()", "TSVRaw").bytes().decode().strip()
    results = []
    for q in request["queries"]:
        try:
            out = run(sess, q["sql"])
        except Exception as e:  # a ClickHouse error is an answer too: the test reports it
            out = {"error": str(e).strip()}
        out["id"] = q["id"]
        results.append(out)
    json.dump(
        {"engine": f"chdb {chdb.__version__} / ClickHouse {version}", "results": results},
        sys.stdout,
        ensure_ascii=False,
    )


if __name__ == "__main__":
    main()
