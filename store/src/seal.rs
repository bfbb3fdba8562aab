//! Private keys sealed at rest: AES-256-GCM under a key-encryption key
//! (KEK) that never enters the database, with the key's `key_uid` as
//! associated data so a sealed blob cannot be moved to another row.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};

use crate::error::StoreError;

/// A key-encryption key.
#[derive(Clone)]
pub struct Kek {
    key: [u8; 32],
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek({})", self.id())
    }
}

impl Kek {
    /// A fresh random KEK.
    pub fn generate() -> Result<Self, StoreError> {
        let mut key = [0u8; 32];
        openssl::rand::rand_bytes(&mut key).map_err(|e| StoreError::Seal(e.to_string()))?;
        Ok(Kek { key })
    }

    /// From base64 text (the master.key file, or `SIKKERMAIL_MASTER_KEY`).
    pub fn from_base64(text: &str) -> Result<Self, StoreError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| StoreError::Seal("master key is not base64".into()))?;
        let key: [u8; 32] = raw.try_into().map_err(|_| {
            StoreError::Seal("master key must be 32 bytes (base64 of 32 random bytes)".into())
        })?;
        Ok(Kek { key })
    }

    /// The base64 text form.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key)
    }

    /// A short public identifier: the first 8 bytes of SHA-256 of the key, hex.
    pub fn id(&self) -> String {
        let h = openssl::sha::sha256(&self.key);
        h[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Seals `plain` for the row `key_uid`: nonce (12) || ciphertext || tag (16).
    pub fn seal(&self, key_uid: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; 12];
        openssl::rand::rand_bytes(&mut nonce).map_err(|e| StoreError::Seal(e.to_string()))?;
        let mut tag = [0u8; 16];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.key,
            Some(&nonce),
            key_uid.as_bytes(),
            plain,
            &mut tag,
        )
        .map_err(|e| StoreError::Seal(e.to_string()))?;
        Ok([&nonce[..], &ct, &tag].concat())
    }

    /// Opens what [`Kek::seal`] made for the same `key_uid`.
    pub fn unseal(&self, key_uid: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < 28 {
            return Err(StoreError::Seal(format!(
                "sealed key {key_uid} is truncated"
            )));
        }
        let (nonce, rest) = sealed.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        decrypt_aead(Cipher::aes_256_gcm(), &self.key, Some(nonce), key_uid.as_bytes(), ct, tag).map_err(|_| {
            StoreError::Seal(format!("sealed key {key_uid} does not open with master key {} (wrong master key, or tampered)", self.id()))
        })
    }
}

/// Where the KEKs come from.
#[derive(Debug, Clone)]
pub struct MasterKeys {
    /// The current KEK.
    pub current: Kek,
    /// During a rotation: the new KEK (`master.key.new`), which some rows may
    /// already be sealed under if a rotation was interrupted.
    pub next: Option<Kek>,
    /// The file `current` was read from, if any.
    pub file: Option<PathBuf>,
    /// Older master keys given to recover keys still sealed under them
    /// (`SIKKERMAIL_EXTRA_MASTER_KEYS`); used to open, never to seal.
    pub extra: Vec<Kek>,
}

/// The environment variable that may hold the master key (base64).
pub const MASTER_KEY_ENV: &str = "SIKKERMAIL_MASTER_KEY";
/// The new master key during a rotation of an environment key.
pub const NEW_MASTER_KEY_ENV: &str = "SIKKERMAIL_NEW_MASTER_KEY";
/// Older master keys (base64, separated by commas), to open keys that a
/// rotation could not re-seal because their master key was not loaded.
pub const EXTRA_MASTER_KEYS_ENV: &str = "SIKKERMAIL_EXTRA_MASTER_KEYS";
/// Set to 1 to start although `master.key` is readable by group or others.
pub const ALLOW_LOOSE_ENV: &str = "SIKKERMAIL_ALLOW_LOOSE_MASTER_KEY";
/// Set to 1 to use a data directory that group or others may enter.
pub const ALLOW_LOOSE_DIR_ENV: &str = "SIKKERMAIL_ALLOW_LOOSE_DATA_DIR";

fn extra_from_env() -> Result<Vec<Kek>, StoreError> {
    match std::env::var(EXTRA_MASTER_KEYS_ENV) {
        Ok(v) => v
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Kek::from_base64)
            .collect(),
        Err(_) => Ok(Vec::new()),
    }
}

impl MasterKeys {
    /// Just this key (tests, and callers that manage keys themselves).
    pub fn single(current: Kek) -> Self {
        MasterKeys {
            current,
            next: None,
            file: None,
            extra: Vec::new(),
        }
    }

    /// Loads `SIKKERMAIL_MASTER_KEY`, or `<data_dir>/master.key` (and
    /// `master.key.new` when a rotation was interrupted). A `master.key`
    /// that group or others can read is refused, as ssh refuses loose key
    /// files, unless `SIKKERMAIL_ALLOW_LOOSE_MASTER_KEY=1`.
    pub fn load(data_dir: &Path) -> Result<Self, StoreError> {
        check_private_dir(data_dir)?;
        let extra = extra_from_env()?;
        if let Ok(v) = std::env::var(MASTER_KEY_ENV) {
            // During a rotation of an environment key, nodes that still run
            // with the old one must open rows already re-sealed.
            let next = match std::env::var(NEW_MASTER_KEY_ENV) {
                Ok(n) => Some(Kek::from_base64(&n)?),
                Err(_) => None,
            };
            return Ok(MasterKeys {
                current: Kek::from_base64(&v)?,
                next,
                file: None,
                extra,
            });
        }
        let file = data_dir.join("master.key");
        check_private(&file)?;
        let text = fs::read_to_string(&file).map_err(|e| {
            StoreError::Seal(format!(
                "cannot read master key {} ({e}); run `sikkermail init` or set {MASTER_KEY_ENV}",
                file.display()
            ))
        })?;
        let next_file = data_dir.join("master.key.new");
        let next = match fs::read_to_string(&next_file) {
            Ok(t) => Some(Kek::from_base64(&t)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(StoreError::Seal(format!(
                    "cannot read {} ({e})",
                    next_file.display()
                )));
            }
        };
        Ok(MasterKeys {
            current: Kek::from_base64(&text)?,
            next,
            file: Some(file),
            extra,
        })
    }

    /// Loads the keys again from where they came from (after another
    /// process rotated the master key). Keys from the environment cannot
    /// change, so they are returned as they are.
    pub fn reload(&self) -> Result<Self, StoreError> {
        match self.file.as_ref().and_then(|f| f.parent()) {
            Some(dir) => {
                let mut fresh = Self::load(dir)?;
                // Keep what this process knew: a key it held must stay openable.
                for k in [Some(&self.current), self.next.as_ref()]
                    .into_iter()
                    .flatten()
                    .chain(&self.extra)
                {
                    if fresh.by_id(&k.id()).is_none() {
                        fresh.extra.push(k.clone());
                    }
                }
                Ok(fresh)
            }
            None => Ok(self.clone()),
        }
    }

    /// Creates `<data_dir>/master.key` with mode 0600 unless the key comes
    /// from the environment or the file exists. The file is created
    /// exclusively: of two processes racing, one creates it and the other
    /// reads what the first wrote.
    pub fn create(data_dir: &Path) -> Result<(Self, bool), StoreError> {
        let path = data_dir.join("master.key");
        if std::env::var(MASTER_KEY_ENV).is_ok() || path.exists() {
            return Ok((Self::load(data_dir)?, false));
        }
        let kek = Kek::generate()?;
        write_secret_new(&path, &kek.to_base64())?;
        Ok((
            MasterKeys {
                current: kek,
                next: None,
                file: Some(path),
                extra: extra_from_env()?,
            },
            true,
        ))
    }

    /// The KEK with this id, if held.
    pub fn by_id(&self, id: &str) -> Option<&Kek> {
        if self.current.id() == id {
            return Some(&self.current);
        }
        self.next
            .as_ref()
            .filter(|k| k.id() == id)
            .or_else(|| self.extra.iter().find(|k| k.id() == id))
    }

    /// The ids of every key held, for messages.
    pub fn ids(&self) -> Vec<String> {
        [Some(&self.current), self.next.as_ref()]
            .into_iter()
            .flatten()
            .chain(&self.extra)
            .map(Kek::id)
            .collect()
    }
}

/// Refuses a data directory that group or others may enter: it holds the
/// database (sealed keys, the queue), the master key and the Maildirs.
/// A directory that does not exist yet is for its creator to make 0700.
/// root is refused a directory that belongs to another user (the
/// package's `sikkermail`): the files it made there would be root's.
pub fn check_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = fs::metadata(dir) else {
        return Ok(());
    };
    // root working in a directory that belongs to the service's user would
    // leave files there (the database's journal, lock files, a rotated
    // key) that the service can no longer open.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 && meta.is_dir() && meta.uid() != 0 {
        let owner = user_name(meta.uid()).unwrap_or_else(|| format!("uid {}", meta.uid()));
        return Err(StoreError::Seal(format!(
            "the data directory {} belongs to {owner}, and this command runs as root: files it \
             made there would be root's and the service could not open them; run it as \
             {owner} (`runuser -u {owner} -- sikkermail ...`)",
            dir.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_dir()
        && mode & 0o077 != 0
        && std::env::var(ALLOW_LOOSE_DIR_ENV).as_deref() != Ok("1")
    {
        return Err(StoreError::Seal(format!(
            "the data directory {} is open to group or others (mode {mode:03o}): run `chmod 700 {}` \
             (or set {ALLOW_LOOSE_DIR_ENV}=1 to use it anyway)",
            dir.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// The login name of `uid`, from /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?.parse::<u32>().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// Refuses a key file that group or others may read or write.
fn check_private(file: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::metadata(file) else {
        return Ok(()); // reading it reports the real problem
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 && std::env::var(ALLOW_LOOSE_ENV).as_deref() != Ok("1") {
        return Err(StoreError::Seal(format!(
            "{} is readable by others (mode {mode:03o}): run `chmod 600 {}` (or set {ALLOW_LOOSE_ENV}=1 to start anyway)",
            file.display(),
            file.display()
        )));
    }
    Ok(())
}

/// Writes `text` to a fresh temporary file beside `path`, mode 0600, on
/// disk; returns its name.
fn write_temp_secret(path: &Path, text: &str) -> Result<PathBuf, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| StoreError::Seal(format!("cannot write {}: {e}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::Seal(format!("cannot write {}: {e}", tmp.display())))?;
    Ok(tmp)
}

/// Writes a new secret file with mode 0600, durably; fails if it exists.
pub fn write_secret_new(path: &Path, text: &str) -> Result<(), StoreError> {
    let tmp = write_temp_secret(path, text)?;
    // link(2) never replaces: the whole file appears under its name, or
    // the call fails because another process made it first.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked.map_err(|e| StoreError::Seal(format!("cannot create {}: {e}", path.display())))?;
    sync_dir(path)
}

/// Makes a rename in `path`'s directory durable (the directory entry itself
/// must reach the disk, not only the file's data).
pub fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Seal(format!("cannot sync {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_binds_the_key_uid() {
        let k = Kek::generate().unwrap();
        let s = k.seal("uid-1", b"secret").unwrap();
        assert_eq!(k.unseal("uid-1", &s).unwrap(), b"secret");
        assert!(k.unseal("uid-2", &s).is_err());
        assert!(Kek::generate().unwrap().unseal("uid-1", &s).is_err());
        let mut t = s.clone();
        t[14] ^= 1;
        assert!(k.unseal("uid-1", &t).is_err());
        assert!(k.unseal("uid-1", &s[..10]).is_err());
        assert_eq!(Kek::from_base64(&k.to_base64()).unwrap().id(), k.id());
        assert!(Kek::from_base64("c2hvcnQ=").is_err());
    }
}
