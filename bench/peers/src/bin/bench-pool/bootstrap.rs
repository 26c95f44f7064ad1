//! How sure a pooled ratio is: the geometric mean of paired ratios, with a confidence
//! interval from a two-stage (cluster) bootstrap.
//!
//! The repetitions of one benchmark run share the machine's state of the day (what the
//! hypervisor takes, how the closed loop settles), so they are not independent draws: a
//! bootstrap that resampled them as if they were would claim more than the data hold.
//! Each resample draws the runs (files) with replacement first, then the repetitions
//! within each drawn run, so the interval is as wide as the scatter between runs makes
//! it.

/// One paired ratio: the run (file) it comes from and `ln(a / b)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub(crate) run: usize,
    pub(crate) log_ratio: f64,
}

/// A pooled ratio: geometric mean and the central interval of the bootstrap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Estimate {
    pub(crate) mean: f64,
    pub(crate) low: f64,
    pub(crate) high: f64,
    /// Paired ratios pooled.
    pub(crate) n: usize,
    /// Runs they come from.
    pub(crate) runs: usize,
    /// Paired ratios below 1.
    pub(crate) below: usize,
}

/// The geometric mean of the ratios of `samples`, and the `level` (e.g. 0.95) interval of
/// `resamples` cluster-bootstrap means, drawn with a generator seeded by `seed` (the
/// same inputs always give the same interval). `None` without samples.
pub(crate) fn estimate(
    samples: &[Sample],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<Estimate> {
    if samples.is_empty() {
        return None;
    }
    let mut runs: Vec<usize> = samples.iter().map(|s| s.run).collect();
    runs.sort_unstable();
    runs.dedup();
    let clusters: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| {
            samples
                .iter()
                .filter(|s| s.run == *r)
                .map(|s| s.log_ratio)
                .collect()
        })
        .collect();
    let all: Vec<f64> = samples.iter().map(|s| s.log_ratio).collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut means = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let (mut sum, mut count) = (0.0, 0usize);
        for _ in 0..clusters.len() {
            let c = &clusters[rng.usize(..clusters.len())];
            for _ in 0..c.len() {
                sum += c[rng.usize(..c.len())];
            }
            count += c.len();
        }
        means.push(sum / count as f64);
    }
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    let at = |q: f64| means[((q * resamples as f64) as usize).min(resamples.saturating_sub(1))];
    let (low, high) = if resamples == 0 {
        (f64::NAN, f64::NAN)
    } else {
        (at(tail), at(1.0 - tail))
    };
    Some(Estimate {
        mean: (all.iter().sum::<f64>() / all.len() as f64).exp(),
        low: low.exp(),
        high: high.exp(),
        n: all.len(),
        runs: clusters.len(),
        below: all.iter().filter(|x| **x < 0.0).count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(runs: &[&[f64]]) -> Vec<Sample> {
        runs.iter()
            .enumerate()
            .flat_map(|(run, ratios)| {
                ratios.iter().map(move |r| Sample {
                    run,
                    log_ratio: r.ln(),
                })
            })
            .collect()
    }

    #[test]
    fn the_mean_is_geometric_and_the_interval_holds_it() {
        let s = samples(&[&[0.9, 1.1, 1.0], &[1.2, 0.8, 1.05], &[0.95, 1.0, 1.1]]);
        let e = estimate(&s, 2000, 0.95, 7).unwrap();
        let want = s.iter().map(|x| x.log_ratio).sum::<f64>() / 9.0;
        assert!((e.mean - want.exp()).abs() < 1e-12);
        assert!(e.low < e.mean && e.mean < e.high, "{e:?}");
        assert_eq!((e.n, e.runs, e.below), (9, 3, 3));
        // Deterministic for a seed.
        assert_eq!(estimate(&s, 2000, 0.95, 7), Some(e));
    }

    #[test]
    fn a_clear_gap_is_told_apart_from_scatter_around_one() {
        // Every run 10 % under, scatter ±3 %: the interval stays under 1.
        let gap = samples(&[&[0.88, 0.91, 0.9], &[0.87, 0.9, 0.93], &[0.9, 0.92, 0.89]]);
        let e = estimate(&gap, 4000, 0.95, 1).unwrap();
        assert!(e.high < 1.0, "{e:?}");
        // Runs on both sides of 1: the interval spans it.
        let noise = samples(&[&[0.9, 0.95, 0.92], &[1.08, 1.1, 1.05], &[1.0, 0.98, 1.02]]);
        let e = estimate(&noise, 4000, 0.95, 1).unwrap();
        assert!(e.low < 1.0 && e.high > 1.0, "{e:?}");
    }

    #[test]
    fn runs_not_repetitions_set_the_width() {
        // The same 12 ratios, as 4 runs of 3 alike repetitions or as 12 runs of one: the
        // runs' scatter is all there is in both, but only 4 runs back the first.
        let grouped = samples(&[
            &[0.9, 0.9, 0.9],
            &[1.1, 1.1, 1.1],
            &[0.95, 0.95, 0.95],
            &[1.05, 1.05, 1.05],
        ]);
        let flat: Vec<Sample> = grouped
            .iter()
            .enumerate()
            .map(|(i, s)| Sample { run: i, ..*s })
            .collect();
        let g = estimate(&grouped, 4000, 0.95, 3).unwrap();
        let f = estimate(&flat, 4000, 0.95, 3).unwrap();
        assert!(g.high - g.low > f.high - f.low, "{g:?} {f:?}");
    }

    #[test]
    fn nothing_to_pool_is_no_estimate() {
        assert_eq!(estimate(&[], 100, 0.95, 0), None);
    }
}
