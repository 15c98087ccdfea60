//! Where archive files live: a local directory or an S3-compatible bucket, and how they are
//! named.
//!
//! A file is `dt=<YYYY-MM-DD>/hour=<HH>/events-<first>-<last>.parquet` under the archive's
//! root, Hive-style, so DuckDB, Spark and Trino read the whole archive as one table with
//! `dt` and `hour` columns. `<first>` and `<last>` are the lowest and highest stream sequence
//! numbers of the events in it (20 digits, so names sort by sequence): the same events
//! written again get the same name, and the write replaces the file instead of adding rows.
//!
//! Locally a file is written under a temporary name beginning with `.`, synced, renamed into
//! place, and its directory synced: a reader (and the archiver after a crash) sees whole files
//! only. An object store's PUT is atomic by itself.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path as ObjectPath};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An archive file's place, relative to the archive's root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileName {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// `00`-`23` (UTC).
    pub hour: String,
    pub first_seq: u64,
    pub last_seq: u64,
}

impl FileName {
    pub fn new(at_ms: i64, first_seq: u64, last_seq: u64) -> FileName {
        let t = chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default();
        FileName {
            date: t.format("%Y-%m-%d").to_string(),
            hour: t.format("%H").to_string(),
            first_seq,
            last_seq,
        }
    }

    /// The path relative to the root, with `/` separators.
    pub fn relative(&self) -> String {
        format!(
            "dt={}/hour={}/events-{:020}-{:020}.parquet",
            self.date, self.hour, self.first_seq, self.last_seq
        )
    }

    /// Parse a relative path written by [`FileName::relative`]; None for anything else.
    pub fn parse(relative: &str) -> Option<FileName> {
        let mut parts = relative.split('/');
        let date = parts.next()?.strip_prefix("dt=")?;
        let hour = parts.next()?.strip_prefix("hour=")?;
        let file = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let range = file.strip_prefix("events-")?.strip_suffix(".parquet")?;
        let (a, b) = range.split_once('-')?;
        let valid_date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok();
        let valid_hour = hour.len() == 2 && hour.parse::<u8>().is_ok_and(|h| h < 24);
        if !valid_date || !valid_hour || a.len() != 20 || b.len() != 20 {
            return None;
        }
        let (first_seq, last_seq) = (a.parse().ok()?, b.parse().ok()?);
        (first_seq <= last_seq).then(|| FileName {
            date: date.to_owned(),
            hour: hour.to_owned(),
            first_seq,
            last_seq,
        })
    }
}

/// One entry found under the archive's root.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// Relative to the root, `/`-separated.
    pub relative: String,
    pub size: u64,
    /// Parsed, when the name is an archive file's.
    pub name: Option<FileName>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("archive {target}: {message}")]
    Io { target: String, message: String },
    #[error("archiver.target {0:?}: expected a directory path or s3://bucket[/prefix]")]
    Target(String),
}

impl From<StoreError> for tocsin_runtime::ServiceError {
    fn from(e: StoreError) -> Self {
        tocsin_runtime::ServiceError::Store(Box::new(e))
    }
}

/// An archive: a local directory or a bucket (with an optional prefix).
#[derive(Clone, Debug)]
pub enum Archive {
    Local(PathBuf),
    Remote {
        store: Arc<dyn ObjectStore>,
        prefix: String,
        display: String,
    },
}

/// How to reach an S3-compatible store. Credentials left empty here come from the standard
/// `AWS_*` environment variables (or the instance's role).
#[derive(Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Options {
    /// The endpoint of an S3-compatible service (MinIO, Ceph, R2…); empty: AWS.
    pub endpoint: String,
    /// The region; empty: `AWS_REGION` from the environment, else `us-east-1`.
    pub region: String,
    /// Allow a plain-HTTP endpoint (a store on the same network).
    pub allow_http: bool,
    pub access_key_id: String,
    /// A secret: set it with `TOCSIN_ARCHIVER__S3__SECRET_ACCESS_KEY`, not in a file.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &if self.secret_access_key.is_empty() {
                    ""
                } else {
                    "<set>"
                },
            )
            .finish()
    }
}

impl Archive {
    /// Open `target`: `s3://bucket[/prefix]`, or a directory (created if missing).
    pub fn open(target: &str, s3: &S3Options) -> Result<Archive, StoreError> {
        let target = target.trim();
        if let Some(rest) = target.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StoreError::Target(target.to_owned()));
            }
            // the HTTP client's TLS needs a crypto provider (ring, as everywhere in tocsin)
            tocsin_runtime::install_crypto();
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_allow_http(s3.allow_http);
            if !s3.endpoint.is_empty() {
                b = b.with_endpoint(&s3.endpoint);
            }
            if !s3.region.is_empty() {
                b = b.with_region(&s3.region);
            }
            if !s3.access_key_id.is_empty() {
                b = b.with_access_key_id(&s3.access_key_id);
            }
            if !s3.secret_access_key.is_empty() {
                b = b.with_secret_access_key(&s3.secret_access_key);
            }
            let store = b.build().map_err(|e| StoreError::Io {
                target: target.to_owned(),
                message: e.to_string(),
            })?;
            return Ok(Archive::Remote {
                store: Arc::new(store),
                prefix: prefix.trim_matches('/').to_owned(),
                display: target.to_owned(),
            });
        }
        if target.is_empty() || target.contains("://") {
            return Err(StoreError::Target(target.to_owned()));
        }
        Ok(Archive::Local(PathBuf::from(target)))
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            target: self.to_string(),
            message: format!("{what}: {e}"),
        }
    }

    fn object_path(prefix: &str, relative: &str) -> ObjectPath {
        if prefix.is_empty() {
            ObjectPath::from(relative)
        } else {
            ObjectPath::from(format!("{prefix}/{relative}"))
        }
    }

    /// Write a whole file at `relative`, replacing one of the same name.
    pub async fn put(&self, relative: &str, bytes: Bytes) -> Result<(), StoreError> {
        match self {
            Archive::Local(root) => {
                let root = root.clone();
                let rel = relative.to_owned();
                tokio::task::spawn_blocking(move || write_local(&root, &rel, &bytes))
                    .await
                    .map_err(|e| self.err("write task", e))?
                    .map_err(|e| self.err(&format!("write {relative}"), e))
            }
            Archive::Remote { store, prefix, .. } => store
                .put(
                    &Self::object_path(prefix, relative),
                    PutPayload::from(bytes),
                )
                .await
                .map(drop)
                .map_err(|e| self.err(&format!("put {relative}"), e)),
        }
    }

    /// Read a whole file.
    pub async fn get(&self, relative: &str) -> Result<Bytes, StoreError> {
        match self {
            Archive::Local(root) => {
                let path = root.join(relative);
                tokio::fs::read(&path)
                    .await
                    .map(Bytes::from)
                    .map_err(|e| self.err(&format!("read {relative}"), e))
            }
            Archive::Remote { store, prefix, .. } => {
                let got = store
                    .get(&Self::object_path(prefix, relative))
                    .await
                    .map_err(|e| self.err(&format!("get {relative}"), e))?;
                got.bytes()
                    .await
                    .map_err(|e| self.err(&format!("get {relative}"), e))
            }
        }
    }

    /// Every file under the root, sorted by path. Temporary files of an interrupted write are
    /// not listed.
    pub async fn list(&self) -> Result<Vec<Listed>, StoreError> {
        let mut out = match self {
            Archive::Local(root) => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || list_local(&root))
                    .await
                    .map_err(|e| self.err("list task", e))?
                    .map_err(|e| self.err("list", e))?
            }
            Archive::Remote { store, prefix, .. } => {
                let base = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
                let metas: Vec<object_store::ObjectMeta> = store
                    .list(base.as_ref())
                    .try_collect()
                    .await
                    .map_err(|e| self.err("list", e))?;
                metas
                    .into_iter()
                    .map(|m| {
                        let full = m.location.to_string();
                        let relative = match prefix.is_empty() {
                            true => full,
                            false => full
                                .strip_prefix(&format!("{prefix}/"))
                                .map(str::to_owned)
                                .unwrap_or(full),
                        };
                        (relative, m.size)
                    })
                    .collect()
            }
        }
        .into_iter()
        .map(|(relative, size)| Listed {
            name: FileName::parse(&relative),
            relative,
            size,
        })
        .collect::<Vec<_>>();
        out.sort_by(|a, b| a.relative.cmp(&b.relative));
        Ok(out)
    }

    /// Remove what an interrupted local write left behind (temporary files).
    pub async fn clean_up(&self) -> Result<usize, StoreError> {
        match self {
            Archive::Local(root) => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || remove_temporaries(&root))
                    .await
                    .map_err(|e| self.err("clean-up task", e))?
                    .map_err(|e| self.err("clean up", e))
            }
            Archive::Remote { .. } => Ok(0),
        }
    }
}

impl std::fmt::Display for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Archive::Local(p) => write!(f, "{}", p.display()),
            Archive::Remote { display, .. } => f.write_str(display),
        }
    }
}

fn write_local(root: &Path, relative: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let path = root.join(relative);
    let dir = path.parent().unwrap_or(root);
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    // the rename is durable once the directory is
    std::fs::File::open(dir)?.sync_all()
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>, tmp: bool) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(root, &path, out, tmp)?;
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let temporary = name.starts_with('.') && name.ends_with(".tmp");
        if temporary != tmp {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        out.push((rel, entry.metadata()?.len()));
    }
    Ok(())
}

fn list_local(root: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    walk(root, root, &mut out, false)?;
    Ok(out)
}

fn remove_temporaries(root: &Path) -> std::io::Result<usize> {
    let mut out = Vec::new();
    walk(root, root, &mut out, true)?;
    for (rel, _) in &out {
        std::fs::remove_file(root.join(rel))?;
    }
    Ok(out.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_not_taken() {
        let n = FileName::new(1_700_000_000_000, 5, 17);
        assert_eq!(
            n.relative(),
            "dt=2023-11-14/hour=22/events-00000000000000000005-00000000000000000017.parquet"
        );
        assert_eq!(FileName::parse(&n.relative()), Some(n));
        for foreign in [
            "notes.txt",
            "dt=2023-11-14/hour=22/other.parquet",
            "dt=2023-13-14/hour=22/events-00000000000000000005-00000000000000000017.parquet",
            "dt=2023-11-14/hour=24/events-00000000000000000005-00000000000000000017.parquet",
            "dt=2023-11-14/hour=22/events-00000000000000000017-00000000000000000005.parquet",
            "dt=2023-11-14/hour=22/events-5-17.parquet",
        ] {
            assert_eq!(FileName::parse(foreign), None, "{foreign}");
        }
    }

    #[tokio::test]
    async fn local_files_are_written_whole_listed_and_temporaries_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::open(dir.path().to_str().unwrap(), &S3Options::default()).unwrap();
        let rel = FileName::new(0, 1, 2).relative();
        a.put(&rel, Bytes::from_static(b"one")).await.unwrap();
        a.put(&rel, Bytes::from_static(b"two")).await.unwrap();
        assert_eq!(a.get(&rel).await.unwrap(), Bytes::from_static(b"two"));
        let stray = dir.path().join("dt=1970-01-01/hour=00/.x.parquet.1.tmp");
        std::fs::write(&stray, b"half").unwrap();
        std::fs::write(dir.path().join("README"), b"foreign").unwrap();
        let listed = a.list().await.unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[0].relative, "README");
        assert!(listed[0].name.is_none());
        assert_eq!(listed[1].relative, rel);
        assert_eq!(listed[1].size, 3);
        assert_eq!(a.clean_up().await.unwrap(), 1);
        assert!(!stray.exists());
        assert!(Archive::open("http://x", &S3Options::default()).is_err());
        assert!(Archive::open("s3://", &S3Options::default()).is_err());
    }
}
