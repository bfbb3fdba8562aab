//! Streaming output helpers: base64 in 76-column CRLF lines, written as the
//! ciphertext is produced, so a large message is never held twice.

use std::io::{self, Write};

use base64::Engine as _;

/// Input bytes per output line (57 bytes -> 76 base64 characters).
const LINE_IN: usize = 57;
/// Lines encoded per batch.
const BATCH_LINES: usize = 1024;

/// A writer that base64-encodes what it is given into CRLF-terminated
/// 76-character lines (RFC 2045 §6.8). Call [`Base64Lines::finish`] at the end.
#[derive(Debug)]
pub struct Base64Lines<W: Write> {
    out: W,
    /// Pending input shorter than one line.
    pending: Vec<u8>,
    /// Scratch for one batch of base64 without line breaks.
    flat: Vec<u8>,
    /// Scratch for one batch of encoded lines.
    enc: Vec<u8>,
}

impl<W: Write> Base64Lines<W> {
    /// Wraps `out`.
    pub fn new(out: W) -> Self {
        Base64Lines {
            out,
            pending: Vec::with_capacity(LINE_IN),
            flat: vec![0; BATCH_LINES * 76],
            enc: vec![0; BATCH_LINES * 78],
        }
    }

    /// Encodes whole lines: a batch in one call of the base64 engine, then
    /// the line breaks put in while copying out.
    fn encode_lines(&mut self, data: &[u8]) -> io::Result<()> {
        debug_assert_eq!(data.len() % LINE_IN, 0);
        for batch in data.chunks(LINE_IN * BATCH_LINES) {
            let n = base64::engine::general_purpose::STANDARD
                .encode_slice(batch, &mut self.flat)
                .map_err(io::Error::other)?;
            let mut w = 0;
            for line in self.flat[..n].chunks(76) {
                self.enc[w..w + line.len()].copy_from_slice(line);
                self.enc[w + line.len()..w + line.len() + 2].copy_from_slice(b"\r\n");
                w += line.len() + 2;
            }
            self.out.write_all(&self.enc[..w])?;
        }
        Ok(())
    }

    /// Writes the last partial line and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.pending.is_empty() {
            let s = base64::engine::general_purpose::STANDARD.encode(&self.pending);
            self.out.write_all(s.as_bytes())?;
            self.out.write_all(b"\r\n")?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Base64Lines<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let total = buf.len();
        if !self.pending.is_empty() {
            let take = (LINE_IN - self.pending.len()).min(buf.len());
            self.pending.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.pending.len() == LINE_IN {
                let line = std::mem::take(&mut self.pending);
                self.encode_lines(&line)?;
                self.pending = line;
                self.pending.clear();
            }
        }
        let whole = buf.len() / LINE_IN * LINE_IN;
        if whole > 0 {
            self.encode_lines(&buf[..whole])?;
        }
        self.pending.extend_from_slice(&buf[whole..]);
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_one_shot_encoding_for_any_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let expect = base64::engine::general_purpose::STANDARD.encode(&data);
        for split in [1, 2, 56, 57, 58, 113, 999] {
            let mut w = Base64Lines::new(Vec::new());
            for c in data.chunks(split) {
                w.write_all(c).unwrap();
            }
            let out = w.finish().unwrap();
            let lines: Vec<&[u8]> = out
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            assert!(lines.iter().all(|l| l.len() <= 77 && l.ends_with(b"\r")));
            let joined: Vec<u8> = out
                .iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect();
            assert_eq!(joined, expect.as_bytes(), "split {split}");
        }
    }
}
