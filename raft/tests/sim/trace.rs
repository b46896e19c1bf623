//! The run's event log: always hashed, kept as text only when asked for.
//!
//! The hash makes the determinism check cheap (the same seed must give the same hash); the text
//! is what a replay prints.

use std::fmt::Write;

/// FNV-1a offset basis.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes bytes with FNV-1a, continuing from `hash`.
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// Hash of an entry payload, used by the checker to compare commands.
pub fn payload_hash(data: &[u8]) -> u64 {
    fnv1a(FNV_OFFSET_BASIS, data)
}

/// The event log of one run.
#[derive(Debug)]
pub struct Trace {
    hash: u64,
    text: Option<String>,
    /// Also print each line as it is recorded.
    echo: bool,
}

impl Trace {
    /// A trace that keeps text if `keep_text`, and prints it live if `echo`.
    pub fn new(keep_text: bool, echo: bool) -> Trace {
        Trace {
            hash: FNV_OFFSET_BASIS,
            text: keep_text.then(String::new),
            echo,
        }
    }

    /// Records one event: `fields` go into the hash; `describe` is called only for text.
    pub fn record(&mut self, time_us: u64, fields: &[u64], describe: impl FnOnce() -> String) {
        self.hash = fnv1a(self.hash, &time_us.to_le_bytes());
        for field in fields {
            self.hash = fnv1a(self.hash, &field.to_le_bytes());
        }
        if self.text.is_none() && !self.echo {
            return;
        }
        let line = format!("{time_us:>10} {}", describe());
        if self.echo {
            println!("{line}");
        }
        if let Some(text) = &mut self.text {
            let _ = writeln!(text, "{line}");
        }
    }

    /// The hash of everything recorded so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The recorded text, if kept.
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }
}
