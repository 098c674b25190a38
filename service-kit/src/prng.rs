//! The deterministic generator the demo services build their embedded data sets from:
//! [`SplitMix64`], fully specified here rather than taken from `rand`, so a seed gives
//! the same sequence on every platform, in every build, after any dependency upgrade.
//!
//! It owns the generator core and the two ways the services reduce a draw to `0..n`
//! ([`SplitMix64::below_modulo`], [`SplitMix64::below_multiply_high`]). They give
//! different sequences for the same seed, and each service's data set is pinned to the
//! one it was generated with, so neither may be changed or swapped for the other.
//! Higher-level helpers (ranges, chances, picks) stay with each service's data.

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, fast, well-mixed 64-bit generator.
/// Its output for a given seed is fixed forever.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` by modulo (`n == 0` counts as 1; the modulo bias is irrelevant
    /// for demo data). shopping-service's catalog is generated with this one.
    pub fn below_modulo(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `0..n` (`n > 0`) by multiply-high (Lemire) without rejection: the bias
    /// is below 2^-50 for small ranges. user-service's directory is generated with this one.
    pub fn below_multiply_high(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // Reference values of SplitMix64 seeded with 0.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn the_two_reductions_stay_in_range_and_differ() {
        let (mut a, mut b) = (SplitMix64::new(7), SplitMix64::new(7));
        let modulo: Vec<u64> = (0..64).map(|_| a.below_modulo(10)).collect();
        let high: Vec<u64> = (0..64).map(|_| b.below_multiply_high(10)).collect();
        assert!(modulo.iter().chain(&high).all(|&x| x < 10));
        assert_ne!(modulo, high);
        assert_eq!(SplitMix64::new(1).below_modulo(0), 0);
    }
}
