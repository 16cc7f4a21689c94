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

/// Writes `ROWS` events in batches of `batch` rows.
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
    let rows: i64 = reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .sum();
    assert_eq!(rows, ROWS as i64, "every row is there");
    (dir, reader)
}

/// The codec of each column of a part's first row group, by name.
fn codecs(path: &std::path::Path) -> std::collections::HashMap<String, Compression> {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    reader.metadata().row_groups()[0]
        .columns()
        .iter()
        .map(|c| (c.column_path().string(), c.compression()))
        .collect()
}

/// Writes 40 000 rows in batches of 5 000 into parts: each row carries `wide` keys (one of
/// `k000`…, so `wide` sparse columns) and a URL in `x` — on one row of the first batch only when
/// `x_late`, else on every row. Answers the parts.
fn wide_parts(wide: usize, x_late: bool) -> (tempfile::TempDir, Vec<posthog_core::PartFile>) {
    parts_of(5_000, |i| {
        let mut props = serde_json::json!({});
        // Every wide key appears in the first batch, so the schema is whole from the start.
        props[format!("k{:03}", i % wide)] = serde_json::json!(i);
        if !x_late || i >= 5_000 || i == 3 {
            props["x"] = serde_json::json!(format!(
                "https://app.example.com/project/{}/insights/{}",
                i % 97,
                i % 1013
            ));
        }
        props
    })
}

/// Writes 40 000 rows, row `i` with the properties `props(i)`, in batches of `batch` into
/// parts. Answers the parts.
fn parts_of(
    batch: usize,
    props: impl Fn(usize) -> serde_json::Value,
) -> (tempfile::TempDir, Vec<posthog_core::PartFile>) {
    let dir = tempfile::tempdir().unwrap();
    let fields = vec![
        FieldSpec::fixed("uuid", ColumnType::Utf8),
        FieldSpec::flatten("properties"),
    ];
    let mut builder = BatchBuilder::new(&fields, FlattenMode::Flatten, &[]).unwrap();
    let options = WriterOptions {
        format: PartFormat::Parquet,
        row_group_rows: 1_000_000,
        row_group_bytes: 1 << 20,
        max_part_rows: u64::MAX,
        zstd_level: 1,
    };
    let mut writer = TableWriter::new(dir.path(), "part", options).unwrap();
    let mut parts = Vec::new();
    for i in 0..40_000usize {
        let cells = [
            format!("\"{i:032x}\""),
            serde_json::to_string(&props(i).to_string()).unwrap(),
        ];
        let raw: Vec<Box<RawValue>> = cells
            .iter()
            .map(|c| RawValue::from_string(c.clone()).unwrap())
            .collect();
        let row: Vec<&RawValue> = raw.iter().map(|r| r.as_ref()).collect();
        builder.append_array_row(&row).unwrap();
        if builder.len() == batch {
            let batch = builder.finish_batch().unwrap().unwrap();
            parts.extend(writer.write(&batch, &builder.schema().to_specs()).unwrap());
        }
    }
    parts.extend(writer.close_part().unwrap());
    (dir, parts)
}

#[test]
fn a_wide_parts_sparse_columns_get_no_codec_and_dense_ones_zstd() {
    let (_dir, parts) = wide_parts(300, false);
    assert_eq!(parts.len(), 1);
    let codecs = codecs(&parts[0].path);
    assert_eq!(codecs["properties_k007"], Compression::UNCOMPRESSED);
    for dense in ["uuid", "properties_x"] {
        assert!(matches!(codecs[dense], Compression::ZSTD(_)), "{dense}");
    }
}

#[test]
fn a_narrow_part_compresses_every_column() {
    let (_dir, parts) = wide_parts(20, true);
    let codecs = codecs(&parts[0].path);
    assert!(
        codecs.values().all(|c| matches!(c, Compression::ZSTD(_))),
        "{codecs:?}"
    );
}

/// A column rare in the part's first batch and dense after: left uncompressed for the whole
/// part it made the part 8–12× larger. The dense batch starts a new part that compresses it.
#[test]
fn a_sparse_column_that_turns_dense_starts_a_part_that_compresses_it() {
    let (_a, dense) = wide_parts(300, false);
    let (late_dir, late) = wide_parts(300, true);
    assert_x_compressed_from_the_second_part(&late);
    let bytes = |parts: &[posthog_core::PartFile]| parts.iter().map(|p| p.bytes).sum::<u64>();
    let (dense, late) = (bytes(&dense), bytes(&late));
    assert!(
        (late as f64) < dense as f64 * 1.5,
        "{late} bytes against {dense} with x dense from the start"
    );
    let rows: u64 = parts_rows(&late_dir);
    assert_eq!(rows, 40_000);
}

/// In small batches, one batch's share of a sparse column says little: here every tenth batch
/// of 100 rows holds one of the 300 sparse keys on 30 of its rows (2.4 bytes a row in that
/// batch, past the threshold), while over the part it stays at ~0.3. Judged batch by batch,
/// nearly every burst closed the part (a 1 M-event wide run in batches of 100 wrote 5 344
/// parts); judged over the part, it is one part.
#[test]
fn a_burst_in_one_small_batch_does_not_close_the_part() {
    let (dir, parts) = parts_of(100, |i| {
        let mut props = serde_json::json!({"x": format!("https://app.example.com/{}", i % 97)});
        // Three keys a row, so the first batch of 100 rows holds all 300: the schema is whole
        // from the start, and each key is sparse (one value in 100 rows).
        for k in 0..3 {
            props[format!("k{:03}", (3 * i + k) % 300)] = serde_json::json!(i);
        }
        if (i / 100) % 10 == 9 && i % 100 < 30 {
            props[format!("k{:03}", (7 * (i / 1_000) + 1) % 300)] = serde_json::json!(i);
        }
        props
    });
    assert_eq!(parts.len(), 1, "{} parts", parts.len());
    let codecs = codecs(&parts[0].path);
    assert_eq!(codecs["properties_k008"], Compression::UNCOMPRESSED);
    assert_eq!(parts_rows(&dir), 40_000);
}

/// Judged over the part, a column that turns dense still starts a new part in small batches:
/// here it comes on every row from row 5 000 on, batches of 100.
#[test]
fn a_column_turning_dense_in_small_batches_still_starts_a_part() {
    let (dir, parts) = parts_of(100, |i| {
        let mut props = serde_json::json!({});
        for k in 0..3 {
            props[format!("k{:03}", (3 * i + k) % 300)] = serde_json::json!(i);
        }
        if i >= 5_000 || i == 3 {
            props["x"] = serde_json::json!(format!("https://app.example.com/{}", i % 97));
        }
        props
    });
    assert_x_compressed_from_the_second_part(&parts);
    assert!(
        parts[0].rows < 6_000,
        "{} rows before the new part",
        parts[0].rows
    );
    assert_eq!(parts_rows(&dir), 40_000);
}

/// Two parts: the first writes `properties_x` without a codec (sparse when it began), the
/// second, begun when `x` turned dense, compresses it.
fn assert_x_compressed_from_the_second_part(parts: &[posthog_core::PartFile]) {
    assert_eq!(
        parts.len(),
        2,
        "{} parts: the first dense batch starts a new one",
        parts.len()
    );
    assert_eq!(
        codecs(&parts[0].path)["properties_x"],
        Compression::UNCOMPRESSED
    );
    assert!(matches!(
        codecs(&parts[1].path)["properties_x"],
        Compression::ZSTD(_)
    ));
}

fn parts_rows(dir: &tempfile::TempDir) -> u64 {
    std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| {
            let reader = SerializedFileReader::new(File::open(p).unwrap()).unwrap();
            reader.metadata().file_metadata().num_rows() as u64
        })
        .sum()
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

/// Writes `batches` one-row batches of `columns` Int64 columns (`value(batch, column)`), one
/// row group each, and returns the parts, each with its row-group count, and the rows all
/// parts hold.
fn parts_of_one_row_groups(
    columns: usize,
    batches: usize,
    value: impl Fn(usize, usize) -> Option<i64>,
) -> (Vec<(posthog_core::PartFile, usize)>, i64, tempfile::TempDir) {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use posthog_core::ColumnSpec;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let options = WriterOptions {
        format: PartFormat::Parquet,
        // One row group per batch, so the footer grows by `columns` chunks per batch.
        row_group_rows: 1,
        row_group_bytes: 1,
        max_part_rows: u64::MAX,
        zstd_level: 1,
    };
    let schema = Arc::new(Schema::new(
        (0..columns)
            .map(|c| Field::new(format!("c{c}"), DataType::Int64, true))
            .collect::<Vec<_>>(),
    ));
    let specs: Vec<ColumnSpec> = (0..columns)
        .map(|c| ColumnSpec {
            name: format!("c{c}"),
            data_type: ColumnType::Int64,
            field: format!("c{c}"),
            key: None,
            fallback: false,
            rest: false,
        })
        .collect();
    let mut writer = TableWriter::new(dir.path(), "part", options).unwrap();
    let mut parts = Vec::new();
    for b in 0..batches {
        let arrays: Vec<ArrayRef> = (0..columns)
            .map(|c| Arc::new(Int64Array::from(vec![value(b, c)])) as ArrayRef)
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
        parts.extend(writer.write(&batch, &specs).unwrap());
    }
    parts.extend(writer.close_part().unwrap());
    let mut rows = 0;
    let parts = parts
        .into_iter()
        .map(|part| {
            let reader = SerializedFileReader::new(File::open(&part.path).unwrap()).unwrap();
            rows += reader.metadata().file_metadata().num_rows();
            let groups = reader.metadata().num_row_groups();
            (part, groups)
        })
        .collect();
    (parts, rows, dir)
}

/// A part's footer metadata (row groups × columns) is held until the part closes; the table
/// writer closes the part once it reaches `footer_column_chunks(columns)` and goes on in a new
/// one: 4 096 chunks for a narrow table, but never fewer than 16 row groups for a wide one, and
/// a budget of at most 16 384 chunks.
#[test]
fn a_part_closes_before_its_footer_passes_the_column_chunk_budget() {
    use posthog_core::writer::{
        FOOTER_COLUMN_CHUNKS, MAX_FOOTER_COLUMN_CHUNKS, MIN_PART_ROW_GROUPS, footer_column_chunks,
    };

    // (columns, the budget, row groups a full part holds): a part closes after the row group
    // that reaches its budget, so where the columns do not divide it, one row group past it
    // (76: 4 104 chunks; 3 000: 18 000). Default events with person properties have 76.
    let widths = [
        (64, FOOTER_COLUMN_CHUNKS, FOOTER_COLUMN_CHUNKS / 64),
        (76, FOOTER_COLUMN_CHUNKS, 54),
        (512, 512 * MIN_PART_ROW_GROUPS, MIN_PART_ROW_GROUPS),
        (
            2_048,
            MAX_FOOTER_COLUMN_CHUNKS,
            MAX_FOOTER_COLUMN_CHUNKS / 2_048,
        ),
        (3_000, MAX_FOOTER_COLUMN_CHUNKS, 6),
    ];
    for (columns, budget, full) in widths {
        assert_eq!(footer_column_chunks(columns), budget, "{columns}");
        assert!(
            (full - 1) * columns < budget && full * columns < budget + columns,
            "{columns}: {full} row groups overshoot by less than one"
        );
        let batches = 2 * full + 3;
        let (parts, rows, _dir) =
            parts_of_one_row_groups(columns, batches, |b, c| Some((b * columns + c) as i64));
        let groups: Vec<usize> = parts.iter().map(|(_, g)| *g).collect();
        assert_eq!(
            groups,
            vec![full, full, 3],
            "{batches} row groups of {columns} columns"
        );
        assert_eq!(rows, batches as i64, "every row in some part");
    }
}

/// A wide part's first batch decides which columns go uncompressed. A column that was dense in
/// an earlier part's first batch stays compressed in later parts even when their first batch
/// lacks it: otherwise the next batch holding it closes the part after one batch (1 M wide
/// events wrote 11 such parts of one or two row groups in 29). Here `c0` is on every row but
/// the one that opens the second part (closed for its footer after 16 row groups of 300
/// columns); the other 299 columns are always empty.
#[test]
fn a_column_dense_in_an_earlier_part_is_compressed_from_the_start_of_the_next() {
    use posthog_core::writer::MIN_PART_ROW_GROUPS;

    let full = MIN_PART_ROW_GROUPS;
    let (parts, rows, _dir) = parts_of_one_row_groups(300, 2 * full + 2, |b, c| {
        (c == 0 && b != full).then_some(b as i64)
    });
    let groups: Vec<usize> = parts.iter().map(|(_, g)| *g).collect();
    assert_eq!(groups, vec![full, full, 2], "no part of one row group");
    assert_eq!(rows, (2 * full + 2) as i64);
    for (part, _) in &parts {
        let codecs = codecs(&part.path);
        assert!(
            matches!(codecs["c0"], Compression::ZSTD(_)),
            "{}: {:?}",
            part.name,
            codecs["c0"]
        );
        assert_eq!(codecs["c1"], Compression::UNCOMPRESSED, "{}", part.name);
    }
}

/// Columns whose values are mostly distinct in the part's first batch (ids, counters) get no
/// dictionary: the writer would intern every value for a dictionary as large as the data. A
/// column of few values keeps its dictionary. Every value reads back either way (`write`).
#[test]
fn distinct_columns_get_no_dictionary_and_repetitive_ones_keep_it() {
    let (_dir, reader) = write(5_000, 1 << 20);
    let group = &reader.metadata().row_groups()[0];
    let dictionary = |name: &str| {
        group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .dictionary_page_offset()
            .is_some()
    };
    for distinct in ["uuid", "n", "properties_token"] {
        assert!(!dictionary(distinct), "{distinct} has a dictionary");
    }
    assert!(dictionary("properties_$browser"), "one repeated value");
}
