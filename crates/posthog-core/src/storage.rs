//! Where part files are kept: the [`PartStore`] seam between the writers and a storage
//! backend, and [`LocalDir`], the local file system behind it.
//!
//! A store holds named objects in one place (a table's directory). A part is written through a
//! [`PartUpload`]: its bytes exist under their final name only once [`PartUpload::commit`]
//! returns, and an upload dropped before that leaves nothing under the name. `LocalDir` keeps
//! the local durability rules: a hidden temporary sibling, `fsync`, `rename`, then an `fsync`
//! of the directory. An object store (S3, GCS, Azure) is another implementation of the same
//! trait: a multipart upload completed on commit and aborted on drop.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::CoreError;

/// Named objects in one place, written whole or not at all.
pub trait PartStore: Send + Sync + std::fmt::Debug {
    /// Begins the object `name`. Its bytes are visible under `name` only once the upload is
    /// committed; dropping the upload discards them.
    fn create(&self, name: &str) -> Result<Box<dyn PartUpload>, CoreError>;

    /// The names of the objects in the store, temporary ones included (in no order).
    fn list(&self) -> Result<Vec<String>, CoreError>;

    /// Removes the objects `names` durably; a name that does not exist is not an error.
    /// Answers how many were removed.
    fn remove(&self, names: &[&str]) -> Result<usize, CoreError>;

    /// Where the object `name` is, as a user reads it (a path, or a URL).
    fn locate(&self, name: &str) -> PathBuf;
}

/// An object being written; see [`PartStore::create`].
pub trait PartUpload: Write + Send {
    /// Makes the bytes written durable under the object's final name.
    fn commit(self: Box<Self>) -> Result<(), CoreError>;
}

/// A directory on the local file system as a [`PartStore`].
#[derive(Debug, Clone)]
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    /// The store in `dir`. The directory is created when the first object is.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalDir { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> CoreError + 'p {
    move |source| CoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl PartStore for LocalDir {
    fn create(&self, name: &str) -> Result<Box<dyn PartUpload>, CoreError> {
        let final_path = self.dir.join(name);
        let parent = final_path.parent().unwrap_or(&self.dir).to_path_buf();
        fs::create_dir_all(&parent).map_err(io_err("create directory", &parent))?;
        let base = final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp_path = parent.join(format!(".{base}.tmp"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .map_err(io_err("create", &tmp_path))?;
        Ok(Box::new(LocalUpload {
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            final_path,
            tmp_path,
        }))
    }

    /// Every file in the directory and, one level down, in its subdirectories (a partitioned
    /// table's `date=…` directories), named `dir/file`; hidden directories are skipped.
    fn list(&self) -> Result<Vec<String>, CoreError> {
        let mut names = Vec::new();
        for (name, is_dir) in read_names(&self.dir)? {
            if !is_dir {
                names.push(name);
            } else if !name.starts_with('.') {
                let sub = self.dir.join(&name);
                for (inner, inner_is_dir) in read_names(&sub)? {
                    if !inner_is_dir {
                        names.push(format!("{name}/{inner}"));
                    }
                }
            }
        }
        Ok(names)
    }

    fn remove(&self, names: &[&str]) -> Result<usize, CoreError> {
        let mut removed = 0;
        let mut touched: Vec<PathBuf> = Vec::new();
        for name in names {
            let path = self.dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
            if !touched.iter().any(|t| Some(t.as_path()) == path.parent()) {
                touched.push(path.parent().unwrap_or(&self.dir).to_path_buf());
            }
        }
        for dir in &touched {
            sync_dir(&dir.join("."))?;
            // A partition directory left empty goes too (best effort: a run writing into it
            // again creates it again).
            if dir != &self.dir && fs::remove_dir(dir).is_ok() {
                sync_dir(dir)?;
            }
        }
        Ok(removed)
    }

    fn locate(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The entries of `dir` (none when it does not exist), each with whether it is a directory.
fn read_names(dir: &Path) -> Result<Vec<(String, bool)>, CoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if let Some(name) = entry.file_name().to_str() {
            names.push((name.to_owned(), is_dir));
        }
    }
    Ok(names)
}

/// A local part being written: a hidden temporary file, renamed over its final name on commit
/// and removed if dropped before.
struct LocalUpload {
    /// `None` once committed.
    file: Option<BufWriter<File>>,
    tmp_path: PathBuf,
    final_path: PathBuf,
}

impl Write for LocalUpload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(file) => file.write(buf),
            None => Err(io::Error::other("the part was already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl PartUpload for LocalUpload {
    fn commit(mut self: Box<Self>) -> Result<(), CoreError> {
        let Some(writer) = self.file.take() else {
            return Ok(());
        };
        let file = writer
            .into_inner()
            .map_err(|e| io_err("write", &self.tmp_path)(e.into_error()))?;
        file.sync_all().map_err(io_err("fsync", &self.tmp_path))?;
        drop(file);
        fs::rename(&self.tmp_path, &self.final_path).map_err(io_err("rename", &self.final_path))?;
        sync_dir(&self.final_path)
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Best effort: a leftover temporary file is also removed by the next run's cleanup.
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// Makes a rename or removal in `path`'s directory durable.
pub fn sync_dir(path: &Path) -> Result<(), CoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync directory", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_upload_appears_whole_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path().join("t"));
        assert!(
            store.list().unwrap().is_empty(),
            "a missing directory is empty"
        );
        let mut upload = store.create("part-1.csv").unwrap();
        upload.write_all(b"a,b\n").unwrap();
        assert!(
            !store.locate("part-1.csv").is_file(),
            "not visible before commit"
        );
        assert_eq!(store.list().unwrap(), vec![".part-1.csv.tmp".to_owned()]);
        upload.commit().unwrap();
        assert_eq!(fs::read(store.locate("part-1.csv")).unwrap(), b"a,b\n");
        assert_eq!(store.list().unwrap(), vec!["part-1.csv".to_owned()]);

        let mut dropped = store.create("part-2.csv").unwrap();
        dropped.write_all(b"x").unwrap();
        drop(dropped);
        assert_eq!(store.list().unwrap(), vec!["part-1.csv".to_owned()]);

        assert_eq!(store.remove(&["part-1.csv", "part-9.csv"]).unwrap(), 1);
        assert!(!store.locate("part-1.csv").is_file());
    }

    #[test]
    fn parts_in_partition_directories_are_listed_by_their_path_and_empty_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path().join("t"));
        let mut upload = store.create("date=2026-12-01/part-1.csv").unwrap();
        upload.write_all(b"x").unwrap();
        assert_eq!(
            store.list().unwrap(),
            vec!["date=2026-12-01/.part-1.csv.tmp".to_owned()],
            "the temporary file sits beside the part's final name"
        );
        upload.commit().unwrap();
        store.create("top.csv").unwrap().commit().unwrap();
        let mut names = store.list().unwrap();
        names.sort();
        assert_eq!(names, ["date=2026-12-01/part-1.csv", "top.csv"]);
        assert!(store.locate("date=2026-12-01/part-1.csv").is_file());
        assert_eq!(store.remove(&["date=2026-12-01/part-1.csv"]).unwrap(), 1);
        assert!(
            !dir.path().join("t/date=2026-12-01").exists(),
            "an emptied partition directory is removed"
        );
        assert_eq!(store.list().unwrap(), ["top.csv"]);
    }
}
