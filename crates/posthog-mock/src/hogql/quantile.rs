//! `quantile(level)(x)` and `quantiles(level, …)(x)`: ClickHouse's default quantile (the
//! reservoir sampler, `quantileReservoirSampler`) with its linear interpolation.
//!
//! ClickHouse keeps a reservoir of at most 8192 values per group. Up to 8192 values the
//! reservoir holds every value and the answer is deterministic; the mock computes exactly that
//! answer: the non-NULL, non-NaN values sorted in their own type (integers, DateTime64
//! microseconds and Date days as integers, floats as floats), then for each level
//! `index = clamp(level * (n - 1), 0, n - 1)`, `left = ⌊index⌋`, `f = index - left`, and
//! `v[left] * (left + 1 - index) + v[left + 1] * f` in Float64 (or `v[left]` when `left` is the
//! last index). Numbers give that Float64; Date gives it truncated to a day. DateTime64 is a
//! decimal in ClickHouse (26.9) and is interpolated exactly instead: `f` taken as the exact
//! binary fraction it is, `v[left] + (v[left + 1] - v[left]) * f` truncated toward zero to a
//! microsecond (through Float64 the products round, and a bound can be 1 µs off). Over no
//! values: nan for numbers, the epoch (0) for DateTime64 and Date.
//!
//! Above 8192 values ClickHouse answers from a pseudo-random sample (and from the order in
//! which threads merge their reservoirs), so no two servers need agree. The mock keeps every
//! value and applies the same interpolation to all of them: the exact quantile that
//! ClickHouse's sample estimates. That is the model the mock offers for large inputs; a client
//! must treat quantiles there as estimates (the extractor's slice planning does: a slice
//! boundary only needs to split the range, not to split it evenly).

use super::value::{Kind, Ty, Val};

/// One group's values for a quantile, in the type ClickHouse sorts them in.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    /// Integers, DateTime64 microseconds and Date days (ClickHouse sorts these as integers).
    ints: Vec<i64>,
    /// Floats other than NaN (ClickHouse's sampler skips NaN).
    floats: Vec<f64>,
}

impl Samples {
    /// Adds one value; NULL and NaN are skipped, as ClickHouse skips them.
    pub(crate) fn push(&mut self, v: &Val<'_>) {
        match v {
            Val::Int(i) | Val::DateTime(i) | Val::Date(i) => self.ints.push(*i),
            Val::Bool(b) => self.ints.push(i64::from(*b)),
            Val::Float(f) if !f.is_nan() => self.floats.push(*f),
            _ => {}
        }
    }

    /// The quantile at each of `levels`: an array for `quantiles` (`many`), else the one value.
    /// `ty` is the aggregate's result type (its item type for an array).
    pub(crate) fn finish(self, levels: &[f64], ty: &Ty, many: bool) -> Val<'static> {
        let item = match &ty.kind {
            Kind::Array(item) => &item.kind,
            other => other,
        };
        let sorted = self.sorted();
        let at = |level: f64| match &sorted {
            Sorted::Ints(v) if v.is_empty() && ty.nullable && !many => Val::Null,
            Sorted::Ints(v) => match item {
                Kind::DateTime => Val::DateTime(exact_decimal(v, level)),
                // ClickHouse converts the Float64 back to a day count, truncating.
                Kind::Date => Val::Date(interpolate(v.len(), |i| v[i] as f64, level) as i64),
                _ => Val::Float(interpolate(v.len(), |i| v[i] as f64, level)),
            },
            Sorted::Floats(v) if v.is_empty() && ty.nullable && !many => Val::Null,
            Sorted::Floats(v) => Val::Float(interpolate(v.len(), |i| v[i], level)),
        };
        if many {
            Val::Array(levels.iter().map(|l| at(*l)).collect())
        } else {
            levels.first().map_or(Val::Null, |l| at(*l))
        }
    }

    fn sorted(self) -> Sorted {
        let Samples {
            mut ints,
            mut floats,
        } = self;
        if floats.is_empty() {
            ints.sort_unstable();
            return Sorted::Ints(ints);
        }
        // Only an argument whose static type mixes the two could get here with both.
        floats.extend(ints.iter().map(|i| *i as f64));
        floats.sort_unstable_by(f64::total_cmp);
        Sorted::Floats(floats)
    }
}

enum Sorted {
    Ints(Vec<i64>),
    Floats(Vec<f64>),
}

/// Where `level` falls among `n` sorted values: ClickHouse's
/// `index = max(0, min(n - 1, level * (n - 1)))`, and its whole part.
fn position(level: f64, n: usize) -> (f64, usize) {
    let last = (n - 1) as f64;
    let index = (level * last).min(last).max(0.0);
    (index, index as usize)
}

/// ClickHouse's `quantileInterpolated` over `n` sorted values, `value(i)` being the `i`-th
/// converted to Float64: nan over none.
fn interpolate(n: usize, value: impl Fn(usize) -> f64, level: f64) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    let (index, left) = position(level, n);
    if left + 1 >= n {
        return value(n - 1);
    }
    let left_coef = (left + 1) as f64 - index;
    let right_coef = index - left as f64;
    value(left) * left_coef + value(left + 1) * right_coef
}

/// ClickHouse's `quantileInterpolatedDecimal` for DateTime64 (a Decimal64 of microseconds):
/// `v[left] + (v[left + 1] - v[left]) * f`, where `f = index - left` is taken as the exact
/// binary fraction `m / 2^s` it is, truncated toward zero. 0 (the epoch) over no values.
fn exact_decimal(sorted: &[i64], level: f64) -> i64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0;
    };
    let (index, left) = position(level, sorted.len());
    if left >= last {
        return sorted[last];
    }
    let fraction = index - left as f64;
    let (l, r) = (sorted[left], sorted[left + 1]);
    if fraction == 0.0 {
        return l;
    }
    // `fraction` in (0, 1) is `mantissa / 2^shift` exactly, with shift ≥ 53.
    let bits = fraction.to_bits();
    let exponent = (bits >> 52) & 0x7ff;
    let mantissa = bits & ((1 << 52) - 1);
    let (numerator, shift) = if exponent == 0 {
        (mantissa, 1074)
    } else {
        (mantissa | (1 << 52), 1075 - exponent)
    };
    // `r ≥ l` (sorted), so the step is a non-negative whole number below 2^64 and the product
    // is below 2^117: exact in u128.
    let step = u128::from(r.abs_diff(l)) * u128::from(numerator);
    let (whole, rest) = if shift >= 128 {
        (0, step != 0)
    } else {
        (step >> shift, step & ((1u128 << shift) - 1) != 0)
    };
    let whole = i128::try_from(whole).unwrap_or(i128::MAX);
    // l + step / 2^shift, truncated toward zero: rounding down a positive result, up a
    // negative one.
    let exact_floor = i128::from(l) + whole;
    let result = if exact_floor < 0 && rest {
        exact_floor + 1
    } else {
        exact_floor
    };
    i64::try_from(result).unwrap_or(if result < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float_quantile(values: &[f64], level: f64) -> f64 {
        let mut s = Samples::default();
        for v in values {
            s.push(&Val::Float(*v));
        }
        match s.finish(&[level], &Ty::of(Kind::Float), false) {
            Val::Float(f) => f,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn interpolates_between_neighbours_and_clamps_at_the_ends() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(float_quantile(&v, 0.0), 1.0);
        assert_eq!(float_quantile(&v, 1.0), 4.0);
        // index 1.5: halfway between 2 and 3.
        assert_eq!(float_quantile(&v, 0.5), 2.5);
        // index 0.75: a quarter of 1 plus three quarters of 2.
        assert_eq!(float_quantile(&v, 0.25), 1.75);
        assert_eq!(float_quantile(&[7.0], 0.3), 7.0);
        assert!(float_quantile(&[], 0.5).is_nan());
        assert_eq!(float_quantile(&[f64::NAN, 5.0, f64::NAN], 0.9), 5.0);
    }

    #[test]
    fn exact_decimal_truncates_toward_zero() {
        // index 1/3 * 1 between 0 and 10: 3.333… → 3; between -10 and 0: -6.666… → -6.
        assert_eq!(exact_decimal(&[0, 10], 1.0 / 3.0), 3);
        assert_eq!(exact_decimal(&[-10, 0], 1.0 / 3.0), -6);
        assert_eq!(exact_decimal(&[-10, 0], 0.5), -5);
        assert_eq!(exact_decimal(&[5, 9], 1.0), 9);
        assert_eq!(exact_decimal(&[], 0.5), 0);
        // Microseconds of 2025 are far above 2^50; the step is still exact.
        let t = 1_735_689_600_000_000;
        assert_eq!(exact_decimal(&[t, t + 3], 0.5), t + 1);
        assert_eq!(exact_decimal(&[t, t + 1_000_001], 0.25), t + 250_000);
        assert_eq!(exact_decimal(&[i64::MIN, i64::MAX], 1.0), i64::MAX);
    }
}
