//! Parquet row groups are sized by their encoded bytes, not by the batches they are written in:
//! a small `batch_size` must not multiply row groups (each one adds footer metadata for every
//! column, which a part holds in memory until it closes), and every row still reads back.
//! Columns too sparse to gain from compression are written without a codec (each codec costs
//! memory per column writer).

use std::fs::File;

use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};
use posthog_core::{
    BatchBuilder, ColumnType, FieldSpec, FlattenMode, PartFormat, TableWriter, WriterOptions,
};
use serde_json::value::RawValue;

const ROWS: usize = 20_000;

/// Writes `ROWS` events in batches of `batch` rows; answers the row count of each row group.
fn row_groups(batch: usize, row_group_bytes: usize) -> Vec<i64> {
    let (_dir, reader) = write(batch, row_group_bytes);
    reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .collect()
}

/// Writes `ROWS` events (one in 500 with a `rare` property) in batches of `batch` rows.
fn write(batch: usize, row_group_bytes: usize) -> (tempfile::TempDir, SerializedFileReader<File>) {
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
        let mut props =
            serde_json::json!({"$browser": "Chrome", "token": format!("{i:x}-{}", i * 7919)});
        if i % 500 == 7 {
            props["rare"] = serde_json::json!(i);
        }
        let props = props.to_string();
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
    let rows: i64 = reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .sum();
    assert_eq!(rows, ROWS as i64, "every row is there");
    (dir, reader)
}

#[test]
fn sparse_columns_get_no_codec_and_dense_ones_zstd() {
    let (_dir, reader) = write(1_000, 64 * 1024);
    let group = &reader.metadata().row_groups()[0];
    let codec = |name: &str| {
        group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == name)
            .unwrap_or_else(|| {
                panic!(
                    "no column {name} in {:?}",
                    group
                        .columns()
                        .iter()
                        .map(|c| c.column_path().string())
                        .collect::<Vec<_>>()
                )
            })
            .compression()
    };
    assert_eq!(codec("properties_rare"), Compression::UNCOMPRESSED);
    for dense in ["uuid", "n", "properties_$browser", "properties_token"] {
        assert!(
            matches!(codec(dense), Compression::ZSTD(_)),
            "{dense}: {:?}",
            codec(dense)
        );
    }
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
