//! Parquet row groups are sized by their encoded bytes, not by the batches they are written in:
//! a small `batch_size` must not multiply row groups (each one adds footer metadata for every
//! column, which a part holds in memory until it closes), and every row still reads back.

use std::fs::File;

use parquet::file::reader::{FileReader, SerializedFileReader};
use posthog_core::{
    BatchBuilder, ColumnType, FieldSpec, FlattenMode, PartFormat, TableWriter, WriterOptions,
};
use serde_json::value::RawValue;

const ROWS: usize = 20_000;

/// Writes `ROWS` events in batches of `batch` rows; answers the row count of each row group.
fn row_groups(batch: usize, row_group_bytes: usize) -> Vec<i64> {
    let dir = tempfile::tempdir().unwrap();
    let fields = vec![
        FieldSpec::fixed("uuid", ColumnType::Utf8),
        FieldSpec::fixed("n", ColumnType::Int64),
        FieldSpec::flatten("properties"),
    ];
    let mut builder = BatchBuilder::new(&fields, FlattenMode::Flatten, &[]).unwrap();
    let options = WriterOptions {
        format: PartFormat::Parquet,
        row_group_rows: 1_000_000,
        row_group_bytes,
        max_part_rows: u64::MAX,
        zstd_level: 1,
    };
    let mut writer = TableWriter::new(dir.path(), "part", options).unwrap();
    for i in 0..ROWS {
        let props =
            serde_json::json!({"$browser": "Chrome", "token": format!("{i:x}-{}", i * 7919)})
                .to_string();
        let cells = [
            format!("\"{i:08}-0000-7000-8000-000000000000\""),
            i.to_string(),
            serde_json::to_string(&props).unwrap(),
        ];
        let raw: Vec<Box<RawValue>> = cells
            .iter()
            .map(|c| RawValue::from_string(c.clone()).unwrap())
            .collect();
        let row: Vec<&RawValue> = raw.iter().map(|r| r.as_ref()).collect();
        builder.append_array_row(&row).unwrap();
        if builder.len() == batch {
            let batch = builder.finish_batch().unwrap().unwrap();
            writer.write(&batch, &builder.schema().to_specs()).unwrap();
        }
    }
    let part = writer.close_part().unwrap().expect("one part");
    let reader = SerializedFileReader::new(File::open(&part.path).unwrap()).unwrap();
    let groups: Vec<i64> = reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .collect();
    assert_eq!(
        groups.iter().sum::<i64>(),
        ROWS as i64,
        "every row is there"
    );
    groups
}

#[test]
fn small_batches_do_not_multiply_row_groups() {
    let bytes = 64 * 1024;
    let small = row_groups(100, bytes);
    assert!(
        small.len() * 4 < ROWS / 100,
        "{} row groups for {} batches of 100: they follow the batches",
        small.len(),
        ROWS / 100
    );
    assert!(small.len() > 1, "row groups close at {bytes} bytes");
    let full = &small[..small.len() - 1];
    assert!(
        full.iter().all(|rows| *rows >= 500),
        "each row group but the last gathers batches until its bytes are reached: {small:?}"
    );
    // A larger threshold gathers more: the bytes decide, not the batch size.
    let fewer = row_groups(100, 4 * bytes);
    assert!(fewer.len() * 2 <= small.len(), "{fewer:?} vs {small:?}");
}
