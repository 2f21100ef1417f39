//! A reader for D. J. Bernstein's constant database (cdb), as qmail-newu
//! writes `users/cdb` and vpopmail writes `vpasswd.cdb`.
//!
//! Owns: the on-disk format (a 2048-byte header of 256 little-endian
//! `(position, slots)` pairs, then records `klen, dlen, key, data`, then the
//! hash tables of `(hash, position)` pairs) and the hash
//! `h = 5381; h = (h * 33) ^ byte`. Lookups seek and read with plain std I/O
//! (no mmap), so a file replaced by `rename()` while open is harmless: an open
//! handle keeps reading the old, complete file.
//!
//! Does not: know what keys and values mean, or cache anything. Every
//! position and length is checked against the file size, so a corrupt or
//! truncated file is an `InvalidData` error, never a panic or a huge
//! allocation.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

const HEADER: u64 = 2048;

/// An open cdb file.
pub struct Cdb {
    file: File,
    len: u64,
    header: Box<[(u32, u32); 256]>,
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt cdb: {what}"))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// cdb's hash function.
pub fn hash(key: &[u8]) -> u32 {
    key.iter().fold(5381u32, |h, &b| (h << 5).wrapping_add(h) ^ u32::from(b))
}

impl Cdb {
    /// Opens `path`; `Ok(None)` when it does not exist.
    pub fn open(path: &Path) -> io::Result<Option<Cdb>> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        let len = meta.len();
        if len < HEADER {
            return Err(corrupt("shorter than its 2048-byte header"));
        }
        let mut raw = [0u8; HEADER as usize];
        file.read_exact(&mut raw)?;
        let mut header = Box::new([(0u32, 0u32); 256]);
        for (i, slot) in header.iter_mut().enumerate() {
            *slot = (u32_at(&raw, i * 8), u32_at(&raw, i * 8 + 4));
        }
        Ok(Some(Cdb { file, len, header }))
    }

    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        if pos.checked_add(buf.len() as u64).filter(|&end| end <= self.len).is_none() {
            return Err(corrupt("a position points past the end of the file"));
        }
        self.file.seek(SeekFrom::Start(pos))?;
        self.file.read_exact(buf)
    }

    /// The data of the first record with `key`, if any.
    pub fn get(&mut self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let h = hash(key);
        let (table, slots) = self.header[(h & 0xff) as usize];
        if slots == 0 {
            return Ok(None);
        }
        let mut slot = (h >> 8) % slots;
        for _ in 0..slots {
            let mut entry = [0u8; 8];
            self.read_at(u64::from(table) + u64::from(slot) * 8, &mut entry)?;
            let (entry_hash, pos) = (u32_at(&entry, 0), u32_at(&entry, 4));
            if pos == 0 {
                return Ok(None);
            }
            if entry_hash == h {
                let mut lens = [0u8; 8];
                self.read_at(u64::from(pos), &mut lens)?;
                let (klen, dlen) = (u64::from(u32_at(&lens, 0)), u64::from(u32_at(&lens, 4)));
                if klen == key.len() as u64 {
                    let start = u64::from(pos) + 8;
                    let mut found = vec![0u8; key.len()];
                    self.read_at(start, &mut found)?;
                    if found == key {
                        if start + klen + dlen > self.len {
                            return Err(corrupt("a record runs past the end of the file"));
                        }
                        let mut data = vec![0u8; dlen as usize];
                        self.read_at(start + klen, &mut data)?;
                        return Ok(Some(data));
                    }
                }
            }
            slot = (slot + 1) % slots;
        }
        Ok(None)
    }

    /// Calls `each(key, data)` for every record, in file order.
    pub fn for_each(&mut self, mut each: impl FnMut(&[u8], &[u8])) -> io::Result<()> {
        // The records end where the first hash table begins.
        let end = self.header.iter().map(|&(pos, _)| u64::from(pos)).min().unwrap_or(HEADER);
        if end < HEADER || end > self.len {
            return Err(corrupt("the hash tables are outside the file"));
        }
        self.file.seek(SeekFrom::Start(HEADER))?;
        let mut reader = BufReader::new(&mut self.file);
        let mut pos = HEADER;
        let (mut key, mut data) = (Vec::new(), Vec::new());
        while pos < end {
            let mut lens = [0u8; 8];
            if pos + 8 > end {
                return Err(corrupt("a record header crosses the hash tables"));
            }
            reader.read_exact(&mut lens)?;
            let (klen, dlen) = (u64::from(u32_at(&lens, 0)), u64::from(u32_at(&lens, 4)));
            pos += 8;
            if pos + klen + dlen > end {
                return Err(corrupt("a record crosses the hash tables"));
            }
            key.resize(klen as usize, 0);
            data.resize(dlen as usize, 0);
            reader.read_exact(&mut key)?;
            reader.read_exact(&mut data)?;
            pos += klen + dlen;
            each(&key, &data);
        }
        Ok(())
    }
}
