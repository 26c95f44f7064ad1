//! How numbers are written in the tables and on the charts.

/// `1234567.8` as `1,234,568`.
pub(crate) fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// Microseconds: whole with thousands separators from 100 up, one decimal below.
pub(crate) fn us(v: f64) -> String {
    if v >= 100.0 {
        thousands(v)
    } else {
        format!("{v:.1}")
    }
}

/// A share (`0.93`) as a percentage (`93 %`).
pub(crate) fn pct(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}

/// `v` written by `f`, or a dash when there is none.
pub(crate) fn opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map_or_else(|| "–".to_owned(), f)
}
