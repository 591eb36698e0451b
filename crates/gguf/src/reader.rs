//! A little-endian cursor that refuses to read, or allocate for, bytes the file does not have.

use std::io::Read;

use crate::GgufError;

pub(crate) struct Reader<R> {
    inner: R,
    pos: u64,
    len: u64,
    /// Reused for strings inside arrays, which are checked but not kept.
    scratch: Vec<u8>,
}

impl<R: Read> Reader<R> {
    pub(crate) fn new(inner: R, len: u64) -> Self {
        Self {
            inner,
            pos: 0,
            len,
            scratch: Vec::new(),
        }
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    /// Fails unless `n` more bytes exist; called before every read and allocation.
    pub(crate) fn need(&self, n: u64, what: impl FnOnce() -> String) -> Result<(), GgufError> {
        if n <= self.remaining() {
            Ok(())
        } else {
            Err(GgufError::Truncated {
                what: what(),
                offset: self.pos,
                needed: n,
                file_size: self.len,
            })
        }
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), GgufError> {
        self.need(buf.len() as u64, || what.to_string())?;
        self.inner.read_exact(buf).map_err(|err| match err.kind() {
            // The length we were given was a lie (file shrank under us).
            std::io::ErrorKind::UnexpectedEof => GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos,
                needed: buf.len() as u64,
                file_size: self.len,
            },
            _ => GgufError::Io(err),
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a length-prefixed UTF-8 string of at most `limit` bytes.
    pub(crate) fn string(&mut self, what: &str, limit: u64) -> Result<String, GgufError> {
        let start = self.pos;
        let len = self.string_len(what, limit)?;
        let mut buf = vec![0u8; len as usize];
        self.fill(&mut buf, what)?;
        String::from_utf8(buf).map_err(|_| GgufError::InvalidUtf8 {
            what: what.to_string(),
            offset: start,
        })
    }

    /// Validates a string like [`Reader::string`] without keeping it.
    pub(crate) fn skip_string(&mut self, what: &str, limit: u64) -> Result<(), GgufError> {
        let start = self.pos;
        let len = self.string_len(what, limit)?;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(len as usize, 0);
        let result = self.fill(&mut buf, what).and_then(|()| {
            std::str::from_utf8(&buf)
                .map(|_| ())
                .map_err(|_| GgufError::InvalidUtf8 {
                    what: what.to_string(),
                    offset: start,
                })
        });
        self.scratch = buf;
        result
    }

    fn string_len(&mut self, what: &str, limit: u64) -> Result<u64, GgufError> {
        let offset = self.pos;
        let len = self.u64(&format!("length of {what}"))?;
        if len > limit {
            return Err(GgufError::StringTooLong {
                what: what.to_string(),
                offset,
                len,
                limit,
            });
        }
        self.need(len, || format!("{what} of {len} bytes"))?;
        Ok(len)
    }

    /// Skips `n` bytes of fixed-size data the caller has already bounded.
    pub(crate) fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        self.need(n, || what.to_string())?;
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())?;
        if copied != n {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos + copied,
                needed: n - copied,
                file_size: self.len,
            });
        }
        self.pos += n;
        Ok(())
    }
}
