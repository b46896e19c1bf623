//! A small seeded pseudo-random generator (SplitMix64 seeding a xoshiro256** state).
//!
//! The simulator draws every random decision from one `Prng`, so a seed fixes the whole run.

/// A deterministic pseudo-random generator.
#[derive(Debug, Clone)]
pub struct Prng {
    state: [u64; 4],
}

impl Prng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Prng {
        let mut mix = seed;
        let mut state = [0u64; 4];
        for word in &mut state {
            mix = mix.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = mix;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *word = z ^ (z >> 31);
        }
        Prng { state }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.state[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let shifted = self.state[1] << 17;
        self.state[2] ^= self.state[0];
        self.state[3] ^= self.state[1];
        self.state[1] ^= self.state[2];
        self.state[0] ^= self.state[3];
        self.state[2] ^= shifted;
        self.state[3] = self.state[3].rotate_left(45);
        result
    }

    /// A value in `low..=high` (inclusive).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range {low}..={high}");
        let span = high - low;
        if span == u64::MAX {
            return self.next_u64();
        }
        low + self.next_u64() % (span + 1)
    }

    /// True with probability `numerator / 1000`.
    pub fn chance_per_mille(&mut self, numerator: u64) -> bool {
        self.next_u64() % 1000 < numerator
    }

    /// A uniformly chosen index below `length` (which must be positive).
    pub fn index(&mut self, length: usize) -> usize {
        assert!(length > 0, "choose from an empty set");
        (self.next_u64() % length as u64) as usize
    }

    /// A generator for an independent stream, derived from this one.
    pub fn fork(&mut self) -> Prng {
        Prng::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::Prng;

    #[test]
    fn same_seed_same_stream() {
        let mut first = Prng::new(7);
        let mut second = Prng::new(7);
        for _ in 0..100 {
            assert_eq!(first.next_u64(), second.next_u64());
        }
    }
}
