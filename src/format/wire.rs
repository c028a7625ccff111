//! Little-endian primitive encoding with bounds-checked decoding.
//!
//! Every length read from stored bytes is checked against what remains (and against an
//! explicit maximum) before anything is allocated for it.

use crate::id::ID_LEN;

/// Why bytes failed to decode; the caller names the object.
pub type DecodeResult<T> = Result<T, String>;

#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn id(&mut self, id: &[u8; ID_LEN]) {
        self.buf.extend_from_slice(id);
    }
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    /// u32 length, then the bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.u32(bytes.len() as u32);
        self.buf.extend_from_slice(bytes);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(format!(
                "truncated: needs {n} bytes at offset {}, only {} left",
                self.pos,
                self.remaining()
            ));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> DecodeResult<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> DecodeResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn id(&mut self) -> DecodeResult<[u8; ID_LEN]> {
        self.array()
    }

    /// u32 length (at most `max`), then that many bytes.
    pub fn bytes(&mut self, max: usize, what: &str) -> DecodeResult<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(format!(
                "{what} is {len} bytes long, more than the limit of {max}"
            ));
        }
        self.take(len)
    }

    pub fn string(&mut self, max: usize, what: &str) -> DecodeResult<String> {
        let bytes = self.bytes(max, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    /// A count of items that each take at least `min_item_len` bytes: checked against
    /// what remains so that a hostile count cannot make us reserve memory.
    pub fn count(&mut self, min_item_len: usize, what: &str) -> DecodeResult<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_len.max(1)) > self.remaining() {
            return Err(format!(
                "{what} count {n} exceeds the {} bytes that remain",
                self.remaining()
            ));
        }
        Ok(n)
    }

    pub fn finish(&self) -> DecodeResult<()> {
        if self.remaining() != 0 {
            return Err(format!(
                "{} unexpected bytes after the end",
                self.remaining()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_beyond_the_input_are_refused_before_allocating() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        assert!(Reader::new(&w.buf).bytes(usize::MAX, "field").is_err());
        assert!(Reader::new(&w.buf).count(1, "items").is_err());
        let mut w = Writer::new();
        w.u32(100);
        w.raw(&[0; 100]);
        assert!(
            Reader::new(&w.buf)
                .bytes(99, "field")
                .unwrap_err()
                .contains("limit")
        );
    }

    #[test]
    fn primitives_round_trip_little_endian() {
        let mut w = Writer::new();
        w.u16(0x0102);
        w.u32(0x03040506);
        w.i64(-2);
        w.str("hé");
        assert_eq!(&w.buf[..2], &[0x02, 0x01]);
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u16().unwrap(), 0x0102);
        assert_eq!(r.u32().unwrap(), 0x03040506);
        assert_eq!(r.i64().unwrap(), -2);
        assert_eq!(r.string(10, "s").unwrap(), "hé");
        r.finish().unwrap();
    }
}
