//! `reader::for_each_part_key` gives back, for every row of a part this crate wrote, exactly the
//! id and incremental time that went in, in all three formats, across row groups and next to
//! values that stress each format (quotes, commas and newlines in CSV, escaped keys in JSONL);
//! and a damaged part is an error naming the file, never a silent short read.

use std::path::Path;

use posthog_core::reader::{file_sha256, for_each_part_key};
use posthog_core::{
    BatchBuilder, ColumnType, FieldSpec, FlattenMode, PartFile, PartFormat, TableWriter,
    WriterOptions, format_timestamp,
};
use serde_json::value::RawValue;
use uuid::Uuid;

fn fields() -> Vec<FieldSpec> {
    vec![
        FieldSpec::fixed("uuid", ColumnType::Utf8),
        FieldSpec::fixed("event", ColumnType::Utf8),
        FieldSpec::fixed("timestamp", ColumnType::Timestamp),
        FieldSpec::flatten("properties"),
    ]
}

/// `n` rows: distinct UUIDs, times with and without fractions, properties that need quoting.
fn rows(n: usize) -> Vec<(Uuid, i64, String)> {
    (0..n)
        .map(|i| {
            let id = Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0000_0000 + i as u128 * 7919);
            let at = 1_735_689_600_000_000 + i as i64 * 1_000_003 - (i as i64 % 3) * 3;
            let props = serde_json::json!({
                "text": format!("line one, \"quoted\"\nline {i}"),
                "a\"key": i,
                "$browser": "Chrome",
            })
            .to_string();
            (id, at, props)
        })
        .collect()
}

/// Appends `rows` to the batch being built, as a HogQL page holds them.
fn append(builder: &mut BatchBuilder, rows: &[(Uuid, i64, String)]) {
    for (id, at, props) in rows {
        let mut ts = String::new();
        format_timestamp(*at, &mut ts);
        let cells = [
            serde_json::to_string(&id.to_string()).unwrap(),
            "\"$pageview\"".into(),
            serde_json::to_string(&ts).unwrap(),
            serde_json::to_string(props).unwrap(),
        ];
        let raw: Vec<Box<RawValue>> = cells
            .iter()
            .map(|c| RawValue::from_string(c.clone()).unwrap())
            .collect();
        let row: Vec<&RawValue> = raw.iter().map(|r| r.as_ref()).collect();
        builder.append_array_row(&row).unwrap();
    }
}

fn write(dir: &Path, format: PartFormat, rows: &[(Uuid, i64, String)]) -> PartFile {
    let mut builder = BatchBuilder::new(&fields(), FlattenMode::Flatten, &[]).unwrap();
    let mut writer = TableWriter::new(
        dir,
        "part",
        WriterOptions {
            format,
            row_group_rows: 100,
            row_group_bytes: posthog_core::DEFAULT_ROW_GROUP_BYTES,
            max_part_rows: u64::MAX,
            zstd_level: 1,
        },
    )
    .unwrap();
    for chunk in rows.chunks(100) {
        append(&mut builder, chunk);
        let batch = builder.finish_batch().unwrap().unwrap();
        let specs = builder.schema().to_specs();
        assert!(writer.write(&batch, &specs).unwrap().is_none());
    }
    writer.close_part().unwrap().expect("one part")
}

#[test]
fn every_format_gives_back_each_rows_id_and_time_in_order() {
    let source = rows(1_234);
    for format in [PartFormat::Parquet, PartFormat::Jsonl, PartFormat::Csv] {
        let dir = tempfile::tempdir().unwrap();
        let part = write(dir.path(), format, &source);
        let mut read = Vec::new();
        for_each_part_key(&part.path, "uuid", "timestamp", |id, at| {
            read.push((id, at))
        })
        .unwrap();
        let expected: Vec<(Uuid, i64)> = source.iter().map(|(id, at, _)| (*id, *at)).collect();
        assert_eq!(read.len(), expected.len(), "{format:?}: every row");
        assert_eq!(read, expected, "{format:?}: the same ids and times");
    }
}

#[test]
fn a_missing_key_column_or_a_truncated_file_is_an_error_naming_the_file() {
    let source = rows(500);
    for format in [PartFormat::Parquet, PartFormat::Jsonl, PartFormat::Csv] {
        let dir = tempfile::tempdir().unwrap();
        let part = write(dir.path(), format, &source);
        let err = for_each_part_key(&part.path, "id", "timestamp", |_, _| {}).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&part.path.display().to_string()),
            "{format:?}: {msg}"
        );

        assert_eq!(file_sha256(&part.path).unwrap(), part.sha256, "{format:?}");
        let bytes = std::fs::read(&part.path).unwrap();
        std::fs::write(&part.path, &bytes[..bytes.len() * 2 / 3]).unwrap();
        // A cut file is either refused or reads short (CSV and JSONL cannot tell a cut at a
        // row boundary): never as many rows as were written. Its hash tells it apart always.
        match for_each_part_key(&part.path, "uuid", "timestamp", |_, _| {}) {
            Err(e) => assert!(
                e.to_string().contains(&part.path.display().to_string()),
                "{format:?}: {e}"
            ),
            Ok(rows) => assert!(rows < part.rows, "{format:?}: a cut part read {rows} rows"),
        }
        assert_ne!(file_sha256(&part.path).unwrap(), part.sha256, "{format:?}");
    }
}

#[test]
fn an_unknown_extension_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("part-00001.txt");
    std::fs::write(&path, "x").unwrap();
    let err = for_each_part_key(&path, "uuid", "timestamp", |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("not a part file"), "{err}");
}

/// A partitioned table's parts are named `date=…/part-<n>-<token>.<ext>`: a change of
/// directory closes the open part, the sequence runs on across directories, and the name the
/// part reports is the one it has in its store.
#[test]
fn parts_change_directory_with_the_partition_and_carry_the_name_token() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(10);
    let mut builder = BatchBuilder::new(&fields(), FlattenMode::Flatten, &[]).unwrap();
    let mut writer = TableWriter::new(dir.path(), "part", WriterOptions::default())
        .unwrap()
        .starting_at(7)
        .with_name_token("1a2b3c4d");
    let mut batch_of = |rows: &[(Uuid, i64, String)]| {
        append(&mut builder, rows);
        (
            builder.finish_batch().unwrap().unwrap(),
            builder.schema().to_specs(),
        )
    };
    assert!(
        writer
            .set_directory(Some("date=2025-01-01".into()))
            .unwrap()
            .is_none()
    );
    let (batch, specs) = batch_of(&rows[..5]);
    assert!(writer.write(&batch, &specs).unwrap().is_none());
    assert!(
        writer
            .set_directory(Some("date=2025-01-01".into()))
            .unwrap()
            .is_none(),
        "the same directory keeps the part open"
    );
    let first = writer
        .set_directory(Some("date=2025-01-02".into()))
        .unwrap()
        .expect("a new directory closes the open part");
    assert_eq!(first.name, "date=2025-01-01/part-00007-1a2b3c4d.parquet");
    assert_eq!(first.rows, 5);
    assert!(dir.path().join(&first.name).is_file());
    let (batch, specs) = batch_of(&rows[5..]);
    writer.write(&batch, &specs).unwrap();
    let second = writer.close_part().unwrap().unwrap();
    assert_eq!(second.name, "date=2025-01-02/part-00008-1a2b3c4d.parquet");
    assert_eq!(second.path, dir.path().join(&second.name));
    assert_eq!(file_sha256(&second.path).unwrap(), second.sha256);
}
