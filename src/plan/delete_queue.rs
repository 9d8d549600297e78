//! Keys to delete, spilled to an unlinked temporary file as the join finds them.
//!
//! Deletions wait until both listings have completed without error (a key missing from
//! a failed listing is not absent), so they cannot run as the join goes; holding them in
//! memory would grow with the number of extra objects. Records are length-prefixed,
//! since keys may contain any character, newlines included; each keeps the object's
//! size, which a move to `--backup-dir` needs.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

pub struct DeleteQueue {
    writer: BufWriter<File>,
    len: u64,
}

impl DeleteQueue {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            writer: BufWriter::new(tempfile::tempfile()?),
            len: 0,
        })
    }

    pub fn push(&mut self, key: &str, size: u64) -> std::io::Result<()> {
        self.writer.write_all(&size.to_le_bytes())?;
        self.writer.write_all(&(key.len() as u32).to_le_bytes())?;
        self.writer.write_all(key.as_bytes())?;
        self.len += 1;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The queued keys, with their sizes, in the order they were pushed.
    pub fn into_keys(
        self,
    ) -> std::io::Result<impl Iterator<Item = std::io::Result<(String, u64)>>> {
        let mut file = self.writer.into_inner().map_err(|err| err.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        let mut reader = BufReader::new(file);
        let mut remaining = self.len;
        Ok(std::iter::from_fn(move || {
            if remaining == 0 {
                return None;
            }
            remaining -= 1;
            let (mut size, mut len) = ([0u8; 8], [0u8; 4]);
            let read = reader.read_exact(&mut size).and_then(|()| {
                reader.read_exact(&mut len)?;
                let mut key = vec![0; u32::from_le_bytes(len) as usize];
                reader.read_exact(&mut key)?;
                let key = String::from_utf8(key).map_err(std::io::Error::other)?;
                Ok((key, u64::from_le_bytes(size)))
            });
            Some(read)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_back_in_order_whatever_they_contain() {
        let mut queue = DeleteQueue::new().unwrap();
        let keys = ["a", "with\nnewline", "", "ü/ß", &"x".repeat(5000)];
        for (size, key) in keys.iter().enumerate() {
            queue.push(key, size as u64 * 1000).unwrap();
        }
        assert_eq!(queue.len(), 5);
        let back: Vec<(String, u64)> = queue.into_keys().unwrap().map(Result::unwrap).collect();
        let want: Vec<(String, u64)> = keys
            .iter()
            .enumerate()
            .map(|(size, key)| (key.to_string(), size as u64 * 1000))
            .collect();
        assert_eq!(back, want);
    }
}
