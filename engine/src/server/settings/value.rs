//! The forms a value takes, the same in the file, in the environment and on the command
//! line: sizes (`16MiB`), durations (`10s`), counts, lists, rates and names read with
//! `FromStr` (backends, policies, addresses). Each form is parsed in one place, so a key
//! and its flag accept the same text and refuse it with the same words.
//!
//! The `deserialize` functions take whatever a deserializer offers: a TOML value, or the
//! text of an environment variable read as the field asks (`layer::EnvValue`).

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};

use crate::reactor::config::MAX_DURATION;

/// Parses a byte size: a number with an optional unit (B, K/KB/KiB, M/MB/MiB, G/GB/GiB;
/// all powers of 1024), e.g. `16MiB`, `64k`, `1000`.
///
/// # Errors
/// A message naming the text and the expected form.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let (n, unit) = number_and_unit(s, "a size (examples: 1000, 64KiB, 16MiB)")?;
    let n = usize::try_from(n).map_err(|_| format!("'{s}' is too large"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit '{other}' (use B, KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Parses a duration: a number with a unit (ms, s, m), or plain seconds, e.g. `500ms`,
/// `10s`, `2m`, `30`; at most [`MAX_DURATION`] (a year).
///
/// # Errors
/// A message naming the text and the expected form, or the limit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(s, "a duration (examples: 10s, 500ms, 2m)")?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        other => return Err(format!("unknown duration unit '{other}' (use ms, s or m)")),
    };
    at_most_a_year(d, s)
}

/// `d` (written `shown`) if it is at most [`MAX_DURATION`].
fn at_most_a_year(d: Duration, shown: impl fmt::Display) -> Result<Duration, String> {
    if d <= MAX_DURATION {
        Ok(d)
    } else {
        Err(format!(
            "'{shown}' is over {} days, the longest duration taken",
            MAX_DURATION.as_secs() / 86_400
        ))
    }
}

/// Parses a rate per second, above 0 and at most 1 000 000.
///
/// # Errors
/// A message naming the text and the range.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .map_err(|_| rate_error(s))
        .and_then(check_rate)
}

/// `rate` if it is above 0 and at most 1 000 000 per second.
pub(super) fn check_rate(rate: f64) -> Result<f64, String> {
    if rate > 0.0 && rate.is_finite() && rate <= 1_000_000.0 {
        Ok(rate)
    } else {
        Err(rate_error(rate))
    }
}

fn rate_error(shown: impl fmt::Display) -> String {
    format!("'{shown}' is not a rate between 0 and 1000000 per second")
}

/// Splits `12unit` into the number and the unit; `what` names the expected form.
fn number_and_unit<'a>(s: &'a str, what: &str) -> Result<(u64, &'a str), String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n = num.parse().map_err(|_| format!("'{s}' is not {what}"))?;
    Ok((n, unit))
}

/// A size: a whole number of bytes, or text with a unit.
pub(super) mod size {
    use super::*;

    pub(in crate::server::settings) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<usize, D::Error> {
        d.deserialize_any(Size)
    }

    /// An optional size: present means `Some`.
    pub(in crate::server::settings) fn option<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<usize>, D::Error> {
        deserialize(d).map(Some)
    }

    struct Size;

    impl Visitor<'_> for Size {
        type Value = usize;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(r#"a size such as "64KiB" or "16MiB", or a number of bytes"#)
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<usize, E> {
            usize::try_from(n).map_err(|_| E::invalid_value(Unexpected::Unsigned(n), &self))
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<usize, E> {
            u64::try_from(n)
                .map_err(|_| E::invalid_value(Unexpected::Signed(n), &self))
                .and_then(|n| self.visit_u64(n))
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<usize, E> {
            parse_size(s).map_err(E::custom)
        }
    }
}

/// A duration: text with a unit, or a whole number of seconds.
pub(super) mod duration {
    use super::*;

    pub(in crate::server::settings) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        d.deserialize_any(Span)
    }

    struct Span;

    impl Visitor<'_> for Span {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(r#"a duration such as "500ms", "10s" or "2m", or a number of seconds"#)
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
            at_most_a_year(Duration::from_secs(n), n).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
            let n = u64::try_from(n).map_err(|_| E::invalid_value(Unexpected::Signed(n), &self))?;
            self.visit_u64(n)
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            parse_duration(s).map_err(E::custom)
        }
    }
}

/// A count: a whole number that fits `T` (`usize`, `u32`).
pub(super) mod count {
    use super::*;

    pub(in crate::server::settings) fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        d.deserialize_u64(Count(PhantomData))
    }

    /// An optional count: present means `Some`.
    pub(in crate::server::settings) fn option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        deserialize(d).map(Some)
    }

    struct Count<T>(PhantomData<T>);

    impl<T: TryFrom<u64>> Visitor<'_> for Count<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number such as 64")
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
            T::try_from(n)
                .map_err(|_| E::invalid_value(Unexpected::Unsigned(n), &"a smaller number"))
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
            u64::try_from(n)
                .map_err(|_| E::invalid_value(Unexpected::Signed(n), &self))
                .and_then(|n| self.visit_u64(n))
        }
    }
}

/// A list of strings (`["a", "b"]`; comma-separated in an environment variable).
pub(super) fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct List;

    impl<'de> Visitor<'de> for List {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(r#"a list of strings such as ["a", "b"]"#)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                items.push(item);
            }
            Ok(items)
        }
    }

    d.deserialize_seq(List)
}

/// A rate per second (`check_rate`).
pub(super) fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct Rate;

    impl Visitor<'_> for Rate {
        type Value = f64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a rate per second such as 2 or 0.5")
        }

        fn visit_f64<E: de::Error>(self, r: f64) -> Result<f64, E> {
            check_rate(r).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, r: i64) -> Result<f64, E> {
            self.visit_f64(r as f64)
        }

        fn visit_u64<E: de::Error>(self, r: u64) -> Result<f64, E> {
            self.visit_f64(r as f64)
        }
    }

    d.deserialize_f64(Rate)
}

/// A name read with `FromStr`, whose error says what it accepts.
pub(super) fn parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    let s = <String as serde::Deserialize>::deserialize(d)?;
    s.parse().map_err(de::Error::custom)
}

/// A socket address such as `127.0.0.1:8080`.
pub(super) fn address<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
{
    let s = <String as serde::Deserialize>::deserialize(d)?;
    s.parse().map_err(|_| {
        de::Error::custom(format!(
            "'{s}' is not an address such as \"127.0.0.1:8080\" or \"[::1]:8080\""
        ))
    })
}

/// An optional string: present means `Some`.
pub(super) fn some_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    <String as serde::Deserialize>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_rates() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5TB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10h").is_err());
        assert_eq!(parse_duration("525600m"), Ok(MAX_DURATION));
        for over in [
            "525601m",
            "31536001",
            "18446744073709551615s",
            "18446744073709551615m",
        ] {
            let e = parse_duration(over).expect_err(over);
            assert_eq!(
                e,
                format!("'{over}' is over 365 days, the longest duration taken")
            );
        }
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("inf").is_err());
    }
}
