//! Local delivery into Maildirs: the gateway's default when no next hop is
//! configured. One Maildir per recipient address, `root/<address lowercased>/`,
//! with `tmp/`, `new/`, `cur/` made on demand (mode 0700).
//!
//! Delivery follows the Maildir protocol: write to `tmp/` under a unique name,
//! fsync, link into `new/` (never replacing an existing file), fsync `new/`.
//! A reader never sees a partial message, and a message is on disk before
//! [`deliver`] returns.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest mailbox name (bytes) accepted; one path component on common file systems is 255.
pub const MAX_MAILBOX_LEN: usize = 254;

/// Delivers `message` (stored byte for byte) to the Maildir of `mailbox` under
/// `root`, and returns the path of the new file in `new/`.
///
/// `mailbox` is lowercased and must be a safe single path component: not empty,
/// at most [`MAX_MAILBOX_LEN`] bytes, no '/', NUL or other control character,
/// not starting with '.' (which also rules out "." and ".."). Anything else is
/// refused with `ErrorKind::InvalidInput`.
pub fn deliver(root: &Path, mailbox: &str, message: &[u8]) -> io::Result<PathBuf> {
    let name = mailbox_dir_name(mailbox)?;
    let dir = root.join(&name);
    let mut db = DirBuilder::new();
    db.recursive(true).mode(0o700);
    for sub in ["tmp", "new", "cur"] {
        db.create(dir.join(sub))?;
    }
    // Do not follow a symlink planted in place of the mailbox directory.
    if !fs::symlink_metadata(&dir)?.file_type().is_dir() {
        return Err(io::Error::other(format!(
            "maildir {} is not a directory",
            dir.display()
        )));
    }
    let tmp_dir = dir.join("tmp");
    let new_dir = dir.join("new");

    // A unique name cannot collide, but never overwrite should it happen.
    let mut last_err = None;
    for _ in 0..5 {
        let unique = unique_name();
        let tmp_path = tmp_dir.join(&unique);
        let new_path = new_dir.join(&unique);
        if let Err(e) = write_synced(&tmp_path, message) {
            let _ = fs::remove_file(&tmp_path);
            if e.kind() == io::ErrorKind::AlreadyExists {
                last_err = Some(e);
                continue;
            }
            return Err(e);
        }
        match publish(&tmp_path, &new_path) {
            Ok(()) => {
                File::open(&new_dir)?.sync_all()?;
                return Ok(new_path);
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                if e.kind() == io::ErrorKind::AlreadyExists {
                    last_err = Some(e);
                    continue;
                }
                return Err(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no unique maildir file name")))
}

/// Lowercases and validates a mailbox name (see [`deliver`]).
fn mailbox_dir_name(mailbox: &str) -> io::Result<String> {
    let name = mailbox.to_lowercase();
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_MAILBOX_LEN {
        Some("is too long")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else {
        None
    };
    match why {
        Some(why) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "invalid mailbox name {:?}: {why}",
                mailbox.chars().take(64).collect::<String>()
            ),
        )),
        None => Ok(name),
    }
}

/// Creates `path` (must not exist, mode 0600), writes `data`, fsyncs.
fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Moves `tmp` to `new` without ever replacing an existing `new`: a hard link
/// fails with AlreadyExists, unlike rename. Falls back to rename on file
/// systems without hard links (after checking the target is free).
fn publish(tmp: &Path, new: &Path) -> io::Result<()> {
    match fs::hard_link(tmp, new) {
        Ok(()) => fs::remove_file(tmp),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            if fs::symlink_metadata(new).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "maildir file exists",
                ));
            }
            fs::rename(tmp, new)
        }
    }
}

/// `<secs>.M<micros>P<pid>Q<counter>R<random hex>.<hostname>` (Maildir spec,
/// "modern" form): unique across processes, threads, hosts and clock jumps.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let q = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut rnd = [0u8; 8];
    if openssl::rand::rand_bytes(&mut rnd).is_err() {
        // The counter and pid still make the name unique within this host.
        rnd = (u64::from(now.subsec_nanos()) ^ q.rotate_left(32)).to_be_bytes();
    }
    let hex: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}.M{}P{}Q{}R{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        q,
        hex,
        hostname()
    )
}

/// The host name with '/' and ':' escaped as the Maildir spec asks ("\057", "\072").
fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let raw = fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| fs::read_to_string("/etc/hostname"))
            .unwrap_or_default();
        let raw = raw.trim();
        let raw = if raw.is_empty() { "localhost" } else { raw };
        raw.chars()
            .map(|c| match c {
                '/' => "\\057".to_string(),
                ':' => "\\072".to_string(),
                c if c.is_control() || c.is_whitespace() => "_".to_string(),
                c => c.to_string(),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            mailbox_dir_name("Bob@Example.ORG").unwrap(),
            "bob@example.org"
        );
        for bad in ["", ".", "..", ".x", "a/b", "a\0b", "a\nb"] {
            assert_eq!(
                mailbox_dir_name(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
        assert!(mailbox_dir_name(&"a".repeat(MAX_MAILBOX_LEN)).is_ok());
        assert!(mailbox_dir_name(&"a".repeat(MAX_MAILBOX_LEN + 1)).is_err());
        let u = unique_name();
        assert!(!u.contains('/') && u.contains(".M") && u.contains('R'));
        assert_ne!(u, unique_name());
    }
}
