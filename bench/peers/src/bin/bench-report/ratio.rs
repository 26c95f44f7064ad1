//! Ratios of medians between implementations on each scenario's headline metrics,
//! oriented so that above 1 means the subject did better.

use crate::model::Scenario;
use crate::stats::{Cells, METRICS};

/// The implementation the window matrix measures ringcast against: one contiguous write
/// per subscriber per turn, the best a coalescing server can do on loopback.
pub(crate) const CEILING: &str = "raw-batch";
/// The io_uring ceiling: `raw-batch --sends uring`, the same server whose pass writes are
/// io_uring sends.
pub(crate) const URING_CEILING: &str = "raw-batch-uring";

/// "`subject` is `value`× better than `versus`" on `metric` (higher-is-better metrics:
/// subject ÷ versus; lower-is-better: versus ÷ subject).
#[derive(Debug)]
pub(crate) struct Ratio {
    pub(crate) scenario: String,
    pub(crate) metric: &'static str,
    pub(crate) subject: String,
    pub(crate) versus: String,
    pub(crate) value: f64,
}

/// The headline metric of a scenario: deliveries/s under `--rate max`, p99 at a fixed
/// rate, connections/s and bytes per connection for connect runs.
pub(crate) fn headline(s: &Scenario) -> Vec<&'static str> {
    match (s.kind.as_str(), s.rate) {
        ("connect", _) => vec!["conn_per_sec", "bytes_per_conn"],
        (_, None) => vec!["deliveries_per_sec", "p99_us"],
        (_, Some(_)) => vec!["p50_us", "p99_us"],
    }
}

/// Whether a larger `metric` is better (per [`METRICS`]; unknown metrics are not).
fn higher_is_better(metric: &str) -> bool {
    METRICS
        .iter()
        .find(|(k, _)| *k == metric)
        .is_some_and(|(_, h)| *h)
}

/// The ratios of every headline metric of every scenario, for the pairs compared:
/// ringcast-epoll against each non-ringcast implementation but the io_uring ceiling;
/// ringcast-uring against the ceiling, the io_uring ceiling and ringcast-epoll; the
/// io_uring ceiling against the ceiling.
pub(crate) fn ratios(scenarios: &[Scenario], impls: &[String], cells: &Cells) -> Vec<Ratio> {
    let mut out = Vec::new();
    let has = |name: &str| impls.iter().any(|i| i == name);
    let pairs: Vec<(String, String)> = {
        let mut p = Vec::new();
        if has("ringcast-epoll") {
            for i in impls
                .iter()
                .filter(|i| !i.starts_with("ringcast-") && *i != URING_CEILING)
            {
                p.push(("ringcast-epoll".to_owned(), i.clone()));
            }
        }
        if has("ringcast-uring") {
            for versus in [CEILING, URING_CEILING, "ringcast-epoll"] {
                if has(versus) {
                    p.push(("ringcast-uring".to_owned(), versus.to_owned()));
                }
            }
        }
        if has(URING_CEILING) && has(CEILING) {
            p.push((URING_CEILING.to_owned(), CEILING.to_owned()));
        }
        p
    };
    for s in scenarios {
        for metric in headline(s) {
            for (a, b) in &pairs {
                let get = |i: &str| {
                    cells
                        .get(&(s.id.clone(), i.to_owned()))
                        .and_then(|c| c.median.get(metric).copied())
                };
                if let (Some(x), Some(y)) = (get(a), get(b)) {
                    let value = if higher_is_better(metric) {
                        x / y
                    } else {
                        y / x
                    };
                    if value.is_finite() {
                        out.push(Ratio {
                            scenario: s.id.clone(),
                            metric,
                            subject: a.clone(),
                            versus: b.clone(),
                            value,
                        });
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Cell;

    #[test]
    fn each_backend_is_set_against_its_own_ceiling() {
        let s = Scenario {
            id: "win-10k-w16".to_owned(),
            label: String::new(),
            kind: "fanout".to_owned(),
            rate: None,
            matrix: Some((10_000, 16)),
        };
        let impls: Vec<String> = ["ringcast-epoll", "ringcast-uring", CEILING, URING_CEILING]
            .map(str::to_owned)
            .to_vec();
        let mut cells = Cells::new();
        for (i, dps) in impls.iter().zip([7.0, 6.0, 8.0, 7.5]) {
            let mut c = Cell::default();
            c.median.insert("deliveries_per_sec".to_owned(), dps);
            cells.insert((s.id.clone(), i.clone()), c);
        }
        let got: Vec<(String, String, f64)> = ratios(std::slice::from_ref(&s), &impls, &cells)
            .into_iter()
            .map(|r| (r.subject, r.versus, (r.value * 1000.0).round() / 1000.0))
            .collect();
        let want = [
            ("ringcast-epoll", CEILING, 0.875),
            ("ringcast-uring", CEILING, 0.75),
            ("ringcast-uring", URING_CEILING, 0.8),
            ("ringcast-uring", "ringcast-epoll", 0.857),
            (URING_CEILING, CEILING, 0.938),
        ]
        .map(|(a, b, v)| (a.to_owned(), b.to_owned(), v));
        assert_eq!(got, want, "no ringcast-epoll / raw-batch-uring");
    }
}
