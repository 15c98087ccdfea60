//! The archive's table: events as Arrow columns, written as Parquet and read back.
//!
//! One row per event, with the stream sequence number it had on the bus (`seq`). Columns
//! follow [`tocsin_model::Event`]; `at` is a UTC timestamp in milliseconds. `dt` and `hour`
//! are not stored in the file: they are the partition in its path.

use arrow_array::builder::{
    Int64Builder, StringBuilder, TimestampMillisecondBuilder, UInt16Builder, UInt32Builder,
    UInt64Builder,
};
use arrow_array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::sync::{Arc, OnceLock};
use tocsin_model::Event;

/// The archive's schema (version 1 of the event shape).
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
            Arc::new(Schema::new(vec![
                Field::new("seq", DataType::UInt64, false),
                text("id", false),
                Field::new("v", DataType::UInt16, false),
                Field::new(
                    "at",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ),
                text("kind", false),
                text("service", false),
                text("user", true),
                Field::new("silo", DataType::UInt32, true),
                text("source", true),
                text("notification", true),
                text("channel", true),
                text("destination", true),
                Field::new("latency_ms", DataType::Int64, true),
                Field::new("attempt", DataType::Int64, true),
                text("detail", true),
            ]))
        })
        .clone()
}

/// Events with their stream sequence numbers as one Arrow batch.
pub fn to_batch(events: &[(u64, &Event)]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = events.len();
    let mut seq = UInt64Builder::with_capacity(n);
    let mut id = StringBuilder::with_capacity(n, n * 32);
    let mut v = UInt16Builder::with_capacity(n);
    let mut at = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut kind = StringBuilder::with_capacity(n, n * 9);
    let mut service = StringBuilder::with_capacity(n, n * 8);
    let mut user = StringBuilder::with_capacity(n, n * 12);
    let mut silo = UInt32Builder::with_capacity(n);
    let mut source = StringBuilder::with_capacity(n, n * 8);
    let mut notification = StringBuilder::with_capacity(n, n * 33);
    let mut channel = StringBuilder::with_capacity(n, n * 5);
    let mut destination = StringBuilder::with_capacity(n, n * 8);
    let mut latency = Int64Builder::with_capacity(n);
    let mut attempt = Int64Builder::with_capacity(n);
    let mut detail = StringBuilder::with_capacity(n, n * 16);
    for (s, e) in events {
        seq.append_value(*s);
        id.append_value(&e.id);
        v.append_value(e.v);
        at.append_value(e.at_ms);
        kind.append_value(e.kind.as_str());
        service.append_value(&e.service);
        user.append_option(e.user.as_ref().map(|u| u.as_str()));
        silo.append_option(e.silo);
        source.append_option(e.source.as_deref());
        notification.append_option(e.notification.as_ref().map(|n| n.as_str()));
        channel.append_option(e.channel.map(|c| c.as_str()));
        destination.append_option(e.destination.as_deref());
        latency.append_option(e.latency_ms);
        attempt.append_option(e.attempt);
        detail.append_option((!e.detail.is_empty()).then_some(e.detail.as_str()));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(seq.finish()),
        Arc::new(id.finish()),
        Arc::new(v.finish()),
        Arc::new(at.finish()),
        Arc::new(kind.finish()),
        Arc::new(service.finish()),
        Arc::new(user.finish()),
        Arc::new(silo.finish()),
        Arc::new(source.finish()),
        Arc::new(notification.finish()),
        Arc::new(channel.finish()),
        Arc::new(destination.finish()),
        Arc::new(latency.finish()),
        Arc::new(attempt.finish()),
        Arc::new(detail.finish()),
    ];
    RecordBatch::try_new(schema(), columns)
}

/// A whole Parquet file of `batch` (Snappy-compressed, statistics on every column).
pub fn to_parquet(batch: &RecordBatch) -> Result<Bytes, parquet::errors::ParquetError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_created_by(format!("tocsin-archiver {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut out = Vec::with_capacity(batch.num_rows() * 48);
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(Bytes::from(out))
}

/// Why a file could not be read as part of the archive.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not a readable Parquet file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("not an archive file: {0}")]
    Schema(String),
}

/// The columns of an archive file a reader asks for, decoded.
#[derive(Debug, Default)]
pub struct Columns {
    pub rows: usize,
    pub seq: Option<UInt64Array>,
    pub at: Option<TimestampMillisecondArray>,
    pub text: Vec<(String, StringArray)>,
    pub ints: Vec<(String, Int64Array)>,
}

impl Columns {
    pub fn text(&self, name: &str) -> Option<&StringArray> {
        self.text.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    pub fn int(&self, name: &str) -> Option<&Int64Array> {
        self.ints.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
}

/// Read `names` from a Parquet file, checking each has the archive's type. Only those columns
/// are decoded.
pub fn read_columns(bytes: Bytes, names: &[&str]) -> Result<Vec<Columns>, ReadError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let file_schema = builder.schema().clone();
    let want = schema();
    let mut indices = Vec::with_capacity(names.len());
    for name in names {
        let expected = want
            .field_with_name(name)
            .map_err(|_| ReadError::Schema(format!("no column {name} in the archive schema")))?;
        let (i, f) = file_schema
            .column_with_name(name)
            .ok_or_else(|| ReadError::Schema(format!("it has no column {name:?}")))?;
        if f.data_type() != expected.data_type() {
            return Err(ReadError::Schema(format!(
                "column {name:?} is {} (expected {})",
                f.data_type(),
                expected.data_type()
            )));
        }
        indices.push(i);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| ReadError::Schema(e.to_string()))?;
        let mut c = Columns {
            rows: batch.num_rows(),
            ..Default::default()
        };
        for name in names {
            let col = batch
                .column_by_name(name)
                .ok_or_else(|| ReadError::Schema(format!("column {name:?} missing in a batch")))?;
            let any = col.as_any();
            match *name {
                "seq" => c.seq = any.downcast_ref::<UInt64Array>().cloned(),
                "at" => c.at = any.downcast_ref::<TimestampMillisecondArray>().cloned(),
                _ => {
                    if let Some(a) = any.downcast_ref::<StringArray>() {
                        c.text.push((name.to_string(), a.clone()));
                    } else if let Some(a) = any.downcast_ref::<Int64Array>() {
                        c.ints.push((name.to_string(), a.clone()));
                    } else {
                        return Err(ReadError::Schema(format!(
                            "column {name:?} cannot be read here ({})",
                            col.data_type()
                        )));
                    }
                }
            }
        }
        out.push(c);
    }
    Ok(out)
}

/// The stream sequence numbers in a file.
pub fn read_seqs(bytes: Bytes) -> Result<Vec<u64>, ReadError> {
    let mut out = Vec::new();
    for c in read_columns(bytes, &["seq"])? {
        if let Some(s) = c.seq {
            out.extend(s.iter().flatten());
        }
    }
    Ok(out)
}

/// The stream sequence number and event id of every row in a file.
pub fn read_seq_ids(bytes: Bytes) -> Result<Vec<(u64, String)>, ReadError> {
    let mut out = Vec::new();
    for c in read_columns(bytes, &["seq", "id"])? {
        let (Some(seqs), Some(ids)) = (&c.seq, c.text("id")) else {
            continue;
        };
        for i in 0..c.rows {
            if let Some(id) = text_at(ids, i) {
                out.push((seqs.value(i), id.to_owned()));
            }
        }
    }
    Ok(out)
}

/// Whether a text column's value at `i` is present.
pub fn text_at(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_model::{Channel, EventKind, NotificationId, UserId};

    fn event(i: i64) -> Event {
        let mut e = Event::new(
            EventKind::Delivered,
            &[&i.to_string()],
            1_700_000_000_000 + i,
        )
        .user(&UserId::parse("alice").unwrap())
        .notification(&NotificationId(format!("n{i}")))
        .channel(Some(Channel::Email))
        .destination("mail")
        .since(1_700_000_000_000)
        .attempt(1);
        e.service = "delivery".into();
        e.silo = Some(3);
        e
    }

    #[test]
    fn events_round_trip_through_parquet_and_projection_reads_only_what_is_asked() {
        let events: Vec<Event> = (0..1000).map(event).collect();
        let rows: Vec<(u64, &Event)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 10, e))
            .collect();
        let bytes = to_parquet(&to_batch(&rows).unwrap()).unwrap();
        assert!(
            bytes.len() < 1000 * 60,
            "{} bytes for 1000 events",
            bytes.len()
        );
        assert_eq!(
            read_seqs(bytes.clone()).unwrap(),
            (10..1010).collect::<Vec<u64>>()
        );
        let cols = read_columns(bytes, &["at", "kind", "channel", "latency_ms", "user"]).unwrap();
        let c = &cols[0];
        assert_eq!(c.rows, 1000);
        assert_eq!(c.text("kind").unwrap().value(5), "delivered");
        assert_eq!(c.text("channel").unwrap().value(5), "email");
        assert_eq!(c.int("latency_ms").unwrap().value(5), 5);
        assert_eq!(c.at.as_ref().unwrap().value(5), 1_700_000_000_005);
        assert!(c.text("detail").is_none());
    }

    #[test]
    fn foreign_and_corrupt_files_are_errors_not_panics() {
        assert!(matches!(
            read_seqs(Bytes::from_static(b"not parquet at all")),
            Err(ReadError::Parquet(_))
        ));
        // a valid Parquet file with another table in it
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("seq", DataType::Utf8, false)])),
            vec![Arc::new(StringArray::from(vec!["x"]))],
        )
        .unwrap();
        let bytes = to_parquet(&other).unwrap();
        let err = read_seqs(bytes).unwrap_err().to_string();
        assert!(err.contains("column \"seq\" is Utf8"), "{err}");
        // a truncated archive file
        let events: Vec<Event> = (0..10).map(event).collect();
        let rows: Vec<(u64, &Event)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64, e))
            .collect();
        let whole = to_parquet(&to_batch(&rows).unwrap()).unwrap();
        assert!(read_seqs(whole.slice(0..whole.len() / 2)).is_err());
    }
}
