//! Little-endian byte writer and bounds-checked reader shared by the command and snapshot
//! encodings (docs/format.md).
//!
//! The reader never panics and never allocates more than the input can justify: every length
//! prefix is checked against the bytes that remain before anything is copied.

use serde_json::{Map, Value};

use super::json;

/// Why a byte sequence could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldDecodeError {
    /// The input ended inside a field.
    #[error("input ended inside field `{field}`")]
    Truncated {
        /// Field being read.
        field: &'static str,
    },
    /// A string field is not valid UTF-8.
    #[error("field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        /// Field being read.
        field: &'static str,
    },
    /// A JSON field is not a JSON object.
    #[error("field `{field}` is not a JSON object: {reason}")]
    InvalidJson {
        /// Field being read.
        field: &'static str,
        /// Parser message.
        reason: String,
    },
    /// An option tag or enumeration byte has an unknown value.
    #[error("field `{field}` has unknown tag {tag}")]
    UnknownTag {
        /// Field being read.
        field: &'static str,
        /// The tag byte found.
        tag: u8,
    },
}

/// Appends fixed-width little-endian integers and length-prefixed fields to a buffer.
#[derive(Default)]
pub(crate) struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Writer {
        Writer { bytes: Vec::new() }
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub(crate) fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// `u32` byte length followed by the bytes. Lengths above `u32::MAX` cannot occur: request
    /// bodies are bounded to 8,000,000 bytes and snapshots are written field by field.
    pub(crate) fn bytes(&mut self, value: &[u8]) {
        self.u32(length_u32(value.len()));
        self.bytes.extend_from_slice(value);
    }

    pub(crate) fn string(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    /// Tag `0` for `None`, tag `1` followed by the string for `Some`.
    pub(crate) fn optional_string(&mut self, value: Option<&str>) {
        match value {
            None => self.u8(0),
            Some(text) => {
                self.u8(1);
                self.string(text);
            }
        }
    }

    /// Tag `0` for `None`, tag `1` followed by the `u64` for `Some`.
    pub(crate) fn optional_u64(&mut self, value: Option<u64>) {
        match value {
            None => self.u8(0),
            Some(number) => {
                self.u8(1);
                self.u64(number);
            }
        }
    }

    /// A JSON object as length-prefixed compact JSON text (numbers keep their exact text).
    pub(crate) fn json_object(&mut self, value: &Map<String, Value>) {
        let mut text = Vec::new();
        json::write_compact_object(&mut text, value);
        self.bytes(&text);
    }
}

/// Saturating conversion used only for lengths that are bounded far below `u32::MAX`.
pub(crate) fn length_u32(length: usize) -> u32 {
    u32::try_from(length).unwrap_or(u32::MAX)
}

/// Reads the fields written by [`Writer`], checking every bound.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, count: usize, field: &'static str) -> Result<&'a [u8], FieldDecodeError> {
        if self.bytes.len() < count {
            return Err(FieldDecodeError::Truncated { field });
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FieldDecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, FieldDecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, FieldDecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, FieldDecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, FieldDecodeError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn fixed<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], FieldDecodeError> {
        self.array(field)
    }

    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], FieldDecodeError> {
        let length = self.u32(field)?;
        let length = usize::try_from(length).map_err(|_| FieldDecodeError::Truncated { field })?;
        self.take(length, field)
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, FieldDecodeError> {
        let bytes = self.bytes(field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| FieldDecodeError::InvalidUtf8 { field })
    }

    pub(crate) fn optional_string(
        &mut self,
        field: &'static str,
    ) -> Result<Option<String>, FieldDecodeError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => self.string(field).map(Some),
            tag => Err(FieldDecodeError::UnknownTag { field, tag }),
        }
    }

    pub(crate) fn optional_u64(
        &mut self,
        field: &'static str,
    ) -> Result<Option<u64>, FieldDecodeError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => self.u64(field).map(Some),
            tag => Err(FieldDecodeError::UnknownTag { field, tag }),
        }
    }

    pub(crate) fn json_object(
        &mut self,
        field: &'static str,
    ) -> Result<Map<String, Value>, FieldDecodeError> {
        let bytes = self.bytes(field)?;
        serde_json::from_slice::<Map<String, Value>>(bytes).map_err(|error| {
            FieldDecodeError::InvalidJson {
                field,
                reason: error.to_string(),
            }
        })
    }

    /// A count prefix, refused when the remaining input cannot hold `count` items of at least
    /// `item_bytes_min` bytes each, so that a corrupt count never drives a huge allocation.
    pub(crate) fn count(
        &mut self,
        field: &'static str,
        item_bytes_min: usize,
    ) -> Result<usize, FieldDecodeError> {
        let count =
            usize::try_from(self.u32(field)?).map_err(|_| FieldDecodeError::Truncated { field })?;
        let needed = count.checked_mul(item_bytes_min.max(1));
        match needed {
            Some(needed) if needed <= self.remaining() => Ok(count),
            _ => Err(FieldDecodeError::Truncated { field }),
        }
    }
}
