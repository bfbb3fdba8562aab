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
/// leaves half a message behind.
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
pub fn write_via_temp(p: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = p.with_file_name(format!(".{name}.sikkermail-tmp"));
    let mut f = create_private(&tmp)?;
    f.write_all(data)?;
    if durable {
        f.sync_all()?;
    }
    fs::rename(&tmp, p)
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
            eprintln!("sikkermail: {}", f.msg);
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
