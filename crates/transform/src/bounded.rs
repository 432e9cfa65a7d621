//! An output buffer that refuses to grow past its bound, so a writer stops
//! at the first byte too many instead of after building the whole body.

use std::io;

pub(crate) struct BoundedBuf {
    buf: Vec<u8>,
    max: usize,
    overflowed: bool,
}

impl BoundedBuf {
    pub(crate) fn new(max: usize, size_hint: usize) -> Self {
        BoundedBuf { buf: Vec::with_capacity(size_hint.min(max)), max, overflowed: false }
    }

    /// The write failed because of the bound, not the writer.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub(crate) fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

impl io::Write for BoundedBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            self.overflowed = true;
            return Err(io::Error::other("output bound reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_write_past_the_bound_fails_and_keeps_nothing_of_it() {
        let mut b = BoundedBuf::new(4, 16);
        b.write_all(b"abc").unwrap();
        assert!(b.write_all(b"de").is_err());
        assert!(b.overflowed());
        assert_eq!(b.into_inner(), b"abc");
    }
}
