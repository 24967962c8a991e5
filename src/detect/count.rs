//! Linear counting (Whang, Vander-Zanden and Taylor, 1990): how many distinct
//! items set the bits of a bitmap, from how many of its bits are still clear.
//! The window counts a domain's distinct names with it, the budget a domain's
//! clients.

/// The estimates for a bitmap of one size, worked out once: a `logf` per
/// estimate was about 35 instructions, and a scored query makes three.
pub(crate) struct LinearCount {
    by_zeros: Box<[f32]>,
}

impl LinearCount {
    /// The estimates for a bitmap of `bits` bits.
    pub(crate) fn new(bits: u32) -> Self {
        let m = bits as f32;
        let by_zeros = (0..=bits).map(|zeros| estimate(zeros as f32, m)).collect();
        Self { by_zeros }
    }

    /// Distinct items behind the bitmap when `zeros` of its bits are clear;
    /// with none clear, linear counting's ceiling.
    #[inline]
    pub(crate) fn of(&self, zeros: u32) -> f32 {
        self.by_zeros.get(zeros as usize).copied().unwrap_or(0.0)
    }
}

/// `-m ln(zeros / m)`, and `m ln m` for a saturated bitmap.
fn estimate(zeros: f32, m: f32) -> f32 {
    if zeros < 1.0 {
        m * m.ln()
    } else {
        -m * (zeros / m).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_formula() {
        for bits in [64u32, 1024] {
            let count = LinearCount::new(bits);
            let m = bits as f32;
            assert_eq!(count.of(bits), 0.0, "an empty bitmap counts nothing");
            assert_eq!(count.of(0), m * m.ln(), "saturated: the ceiling");
            for zeros in 1..=bits {
                let want = -m * (zeros as f32 / m).ln();
                assert_eq!(
                    count.of(zeros).to_bits(),
                    want.to_bits(),
                    "{bits} bits, {zeros} clear"
                );
            }
            // Half the bits set: about 0.69 items per bit.
            let half = count.of(bits / 2) / m;
            assert!((half - std::f32::consts::LN_2).abs() < 1e-5, "{half}");
        }
    }
}
