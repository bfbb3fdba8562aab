//! What every subcommand shares: failures with exit statuses, reading
//! input and writing output safely.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A failure with its exit status (1: the cryptography said no; 2: usage
/// or unreadable input).
pub struct Fail {
    pub code: u8,
    pub msg: String,
}

impl From<smime::Error> for Fail {
    fn from(e: smime::Error) -> Self {
        Fail {
            code: if e.is_crypto_failure() { 1 } else { 2 },
            msg: e.to_string(),
        }
    }
}

impl From<store::StoreError> for Fail {
    fn from(e: store::StoreError) -> Self {
        usage(e.to_string())
    }
}

impl From<ca::CaError> for Fail {
    fn from(e: ca::CaError) -> Self {
        usage(e.to_string())
    }
}

pub fn usage(msg: impl Into<String>) -> Fail {
    Fail {
        code: 2,
        msg: msg.into(),
    }
}

pub fn read_file(p: &Path) -> Result<Vec<u8>, Fail> {
    fs::read(p).map_err(|e| usage(format!("cannot read {}: {e}", p.display())))
}

pub fn read_input(p: &Option<PathBuf>) -> Result<Vec<u8>, Fail> {
    match p {
        Some(p) => read_file(p),
        None => {
            let mut v = Vec::new();
            io::stdin()
                .read_to_end(&mut v)
                .map_err(|e| usage(format!("cannot read standard input: {e}")))?;
            Ok(v)
        }
    }
}

/// Writes through a temporary file and a rename, so a failed run never
/// leaves half a message behind; special files (`/dev/null`, a FIFO, a
/// terminal, or a link to one) are written in place.
pub fn write_output(p: &Option<PathBuf>, data: &[u8]) -> Result<(), Fail> {
    match p {
        Some(p) => {
            write_atomic(p, data).map_err(|e| usage(format!("cannot write {}: {e}", p.display())))
        }
        None => {
            let mut out = io::stdout().lock();
            out.write_all(data)
                .and_then(|_| out.flush())
                .map_err(|e| usage(format!("cannot write standard output: {e}")))
        }
    }
}

pub fn write_atomic(p: &Path, data: &[u8]) -> io::Result<()> {
    write_via_temp(p, data, true)
}

/// Writes `data` to a temporary file beside `p`, then renames it over `p`:
/// readers see the old file or the whole new one. With `durable` the data
/// is on disk before the rename; bulk mode skips that, because its inputs
/// stay where they are and a crash loses nothing that cannot be redone.
/// A `p` that exists and is not a regular file is written in place.
///
/// A new file is written without a name (`O_TMPFILE`) and linked in under
/// `p` when complete: one directory operation instead of create, rename
/// (and unlink), which is what bulk mode's threads contended for. Where
/// that is not supported, or `p` exists, a named temporary and a rename.
pub fn write_via_temp(p: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    if tmpfile::write_new(p, data, durable)? {
        return Ok(());
    }
    let mut out = OutputFile::create(p)?;
    out.file().write_all(data)?;
    out.commit(durable)
}

/// An output file being written. A new or regular file is written under a
/// temporary name and only [`OutputFile::commit`] puts it in place (if it
/// is dropped uncommitted, the temporary goes away); a special file that
/// exists (a device, a FIFO, or a symbolic link to one) is written in
/// place, never replaced.
pub struct OutputFile {
    file: fs::File,
    target: PathBuf,
    /// The temporary name, `None` when writing in place.
    tmp: Option<PathBuf>,
}

impl OutputFile {
    pub fn create(p: &Path) -> io::Result<Self> {
        if let Some(file) = open_special(p)? {
            return Ok(OutputFile {
                file,
                target: p.to_path_buf(),
                tmp: None,
            });
        }
        let tmp = temp_name(p);
        let file = create_private(&tmp)?;
        Ok(OutputFile {
            file,
            target: p.to_path_buf(),
            tmp: Some(tmp),
        })
    }

    pub fn file(&mut self) -> &mut fs::File {
        &mut self.file
    }

    /// Puts the written file in place (with `durable`, synced first).
    pub fn commit(mut self, durable: bool) -> io::Result<()> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        let res = (|| {
            if durable {
                self.file.sync_all()?;
            }
            fs::rename(&tmp, &self.target)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

fn temp_name(p: &Path) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    p.with_file_name(format!(".{name}.sikkermail-tmp"))
}

/// Opens `p` for writing in place when it exists and, following symbolic
/// links, is not a regular file: renaming over `/dev/null` (or a link to
/// it, or a FIFO a reader waits on) would replace it with a plain file.
fn open_special(p: &Path) -> io::Result<Option<fs::File>> {
    match fs::metadata(p) {
        Ok(m) if !m.is_file() => {
            let f = fs::OpenOptions::new().write(true).open(p)?;
            // Replaced by a regular file between the two looks: do not
            // write into it in place (that would leave its old tail).
            if f.metadata()?.is_file() {
                return Ok(None);
            }
            Ok(Some(f))
        }
        _ => Ok(None),
    }
}

pub fn password(var: &Option<String>) -> Result<Option<String>, Fail> {
    match var {
        None => Ok(None),
        Some(v) => std::env::var(v)
            .map(Some)
            .map_err(|_| usage(format!("environment variable {v} is not set"))),
    }
}

/// Prints a failure as one line and turns the result into an exit status.
pub fn finish(res: Result<std::process::ExitCode, Fail>) -> std::process::ExitCode {
    match res {
        Ok(code) => code,
        Err(f) => {
            errln!("sikkermail: {}", f.msg);
            std::process::ExitCode::from(f.code)
        }
    }
}

/// Creates `path` for writing, readable by the owner only (decrypted mail,
/// PKCS#12 files), never through a symbolic link: a leftover file of that
/// name from an earlier crash is removed first, then the file is created
/// exclusively.
pub fn create_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Files without a name until they are complete (Linux `O_TMPFILE`).
mod tmpfile {
    use std::ffi::CString;
    use std::fs;
    use std::io::{self, Write};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Set once `O_TMPFILE` or the link through `/proc` failed for a reason
    /// other than the target existing: not tried again.
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

    /// Writes `data` to a new file `p`: an unnamed file in `p`'s directory,
    /// linked to `p` when complete, so readers never see part of it.
    /// `Ok(false)` when nothing was written because `p` exists or the file
    /// system cannot do it (the caller then uses a named temporary).
    pub fn write_new(p: &Path, data: &[u8], durable: bool) -> io::Result<bool> {
        if UNSUPPORTED.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut f = match fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(dir)
        {
            Ok(f) => f,
            // EOPNOTSUPP, EISDIR (kernel without O_TMPFILE), EINVAL, ...
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                UNSUPPORTED.store(true, Ordering::Relaxed);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        // linkat through /proc/self/fd needs no capability (AT_EMPTY_PATH
        // would need CAP_DAC_READ_SEARCH); it never replaces an existing name.
        let from = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))
            .map_err(|_| io::Error::other("bad descriptor path"))?;
        let to = CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        // SAFETY: both paths are NUL-terminated strings that live across
        // the call; the descriptor is open.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EEXIST) => Ok(false),
            // No /proc, or a file system that refuses the link.
            Some(libc::ENOENT | libc::EXDEV | libc::EPERM | libc::EOPNOTSUPP) => {
                UNSUPPORTED.store(true, Ordering::Relaxed);
                Ok(false)
            }
            _ => Err(e),
        }
    }
}
