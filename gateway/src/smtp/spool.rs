//! [`Spool`]: where a message's content goes while it arrives, so that
//! many large messages at once never sit in memory together.
//!
//! The first [`SPILL_AT`] octets stay in memory; past that, everything goes
//! to a file without a name (`O_TMPFILE` in the spool directory: nothing to
//! clean up after a crash, nothing for another process to open), encrypted
//! with AES-256-CTR under a key made for this message alone and kept only
//! in this process's memory. Queued mail is never readable at rest, not
//! even for the seconds before it is committed. The content is read back
//! once, whole, when the message is handed over ([`Received::into_bytes`]).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::symm::{Cipher, Crypter, Mode};

/// Content kept in memory before it goes to a file.
pub const SPILL_AT: usize = 256 * 1024;

/// A message's content as it arrives: in memory, then in an encrypted
/// unnamed file.
pub struct Spool {
    dir: Option<Arc<PathBuf>>,
    mem: Vec<u8>,
    file: Option<Spilled>,
    len: u64,
}

struct Spilled {
    file: File,
    key: [u8; 32],
    iv: [u8; 16],
    enc: Crypter,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("len", &self.len)
            .field("spilled", &self.file.is_some())
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// A spool that spills into `dir` (None: it stays in memory, as for
    /// tests that drive a session in memory).
    pub fn new(dir: Option<Arc<PathBuf>>) -> Spool {
        Spool {
            dir,
            mem: Vec::new(),
            file: None,
            len: 0,
        }
    }

    /// Octets so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True before any octet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `bytes`.
    pub fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.len += bytes.len() as u64;
        if let Some(s) = &mut self.file {
            return s.write(bytes);
        }
        match &self.dir {
            Some(dir) if self.mem.len() + bytes.len() > SPILL_AT => {
                let mut s = Spilled::create(dir)?;
                s.write(&std::mem::take(&mut self.mem))?;
                s.write(bytes)?;
                self.file = Some(s);
                Ok(())
            }
            _ => {
                self.mem.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// `prefix` and the content, in one allocation of exactly their size.
    pub fn into_bytes_after(self, prefix: &[u8]) -> io::Result<Vec<u8>> {
        let total = usize::try_from(self.len)
            .map_err(|_| io::Error::other("message too large for this machine"))?
            + prefix.len();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(prefix);
        match self.file {
            None => out.extend_from_slice(&self.mem),
            Some(s) => s.read_into(&mut out)?,
        }
        Ok(out)
    }
}

impl Spilled {
    fn create(dir: &Path) -> io::Result<Spilled> {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(dir)
        {
            Ok(f) => f,
            // A file system without O_TMPFILE: a named file, unlinked at
            // once.
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                let mut name = [0u8; 12];
                openssl::rand::rand_bytes(&mut name).map_err(io::Error::other)?;
                let path = dir.join(format!(
                    ".spool-{}",
                    name.iter().map(|b| format!("{b:02x}")).collect::<String>()
                ));
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                std::fs::remove_file(&path)?;
                f
            }
            Err(e) => return Err(e),
        };
        let mut key = [0u8; 32];
        let mut iv = [0u8; 16];
        openssl::rand::rand_bytes(&mut key).map_err(io::Error::other)?;
        openssl::rand::rand_bytes(&mut iv).map_err(io::Error::other)?;
        let enc = Crypter::new(Cipher::aes_256_ctr(), Mode::Encrypt, &key, Some(&iv))
            .map_err(io::Error::other)?;
        Ok(Spilled {
            file,
            key,
            iv,
            enc,
            buf: Vec::new(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buf.resize(bytes.len() + 16, 0);
        let n = self
            .enc
            .update(bytes, &mut self.buf)
            .map_err(io::Error::other)?;
        self.file.write_all(&self.buf[..n])
    }

    fn read_into(mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut dec = Crypter::new(
            Cipher::aes_256_ctr(),
            Mode::Decrypt,
            &self.key,
            Some(&self.iv),
        )
        .map_err(io::Error::other)?;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut plain = vec![0u8; 64 * 1024 + 16];
        loop {
            let n = self.file.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            let m = dec
                .update(&chunk[..n], &mut plain)
                .map_err(io::Error::other)?;
            out.extend_from_slice(&plain[..m]);
        }
        Ok(())
    }
}

impl Drop for Spilled {
    fn drop(&mut self) {
        // The key goes with the message.
        self.key.fill(0);
    }
}

/// A message received whole: the `Received:` field the session prepends and
/// the content as it arrived.
#[derive(Debug)]
pub struct Received {
    /// The `Received:` field, CRLF-terminated.
    pub trace: Vec<u8>,
    /// The content.
    pub content: Spool,
}

impl Received {
    /// Size in octets, the `Received:` field included.
    pub fn len(&self) -> u64 {
        self.trace.len() as u64 + self.content.len()
    }

    /// True for an empty message without a `Received:` field.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole message in memory (one allocation of its exact size).
    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        self.content.into_bytes_after(&self.trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_encrypted_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new(Some(Arc::new(dir.path().to_path_buf())));
        let piece: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        for _ in 0..10 {
            s.push(&piece).unwrap();
        }
        assert_eq!(s.len(), 1_000_000);
        assert!(s.file.is_some());
        // Nothing named in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let out = Received {
            trace: b"Received: x\r\n".to_vec(),
            content: s,
        }
        .into_bytes()
        .unwrap();
        assert_eq!(&out[..13], b"Received: x\r\n");
        assert_eq!(out.len(), 13 + 1_000_000);
        assert!(out[13..].chunks(100_000).all(|c| c == &piece[..]));
        assert_eq!(out.capacity(), out.len());
    }

    #[test]
    fn small_or_without_a_directory_stays_in_memory() {
        let mut s = Spool::new(None);
        s.push(&vec![b'a'; SPILL_AT * 3]).unwrap();
        assert!(s.file.is_none());
        assert_eq!(s.into_bytes_after(b"").unwrap().len(), SPILL_AT * 3);
    }
}
