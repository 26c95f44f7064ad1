//! The layers under the command line, file then environment, read into one [`Settings`] in
//! a single pass: each entry knows where it came from (a line of the file, a variable), so
//! every error names the key, and the line or the variable.
//!
//! The file is parsed with spans (`toml::de::DeTable`); an environment variable is text,
//! read as its field asks ([`EnvValue`]). An entry of the environment replaces the file's
//! entry for the same key; keys in neither keep their defaults (`#[serde(default)]`).

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::value::SeqDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{Settings, SettingsError, keys};

/// Prefix of the environment variables that set keys: `max-message` is
/// `RINGCAST_MAX_MESSAGE`.
pub(super) const ENV_PREFIX: &str = "RINGCAST_";

/// One key's value and where it came from.
pub(super) struct Entry<'i> {
    key: String,
    origin: Origin<'i>,
}

enum Origin<'i> {
    File {
        line: usize,
        value: Spanned<DeValue<'i>>,
    },
    Env {
        var: String,
        value: String,
    },
}

/// The entries of a TOML document, in the order of their lines.
pub(super) fn file_entries<'i>(
    text: &'i str,
    path: Option<&Path>,
) -> Result<Vec<Entry<'i>>, SettingsError> {
    let table = DeTable::parse(text).map_err(|e| SettingsError::Syntax {
        path: path.map(Path::to_path_buf),
        line: line_of(text, e.span().map_or(0, |s| s.start)),
        message: e.message().trim_end().to_owned(),
    })?;
    let mut entries: Vec<Entry<'i>> = table
        .into_inner()
        .into_iter()
        .map(|(key, value)| Entry {
            origin: Origin::File {
                line: line_of(text, key.span().start),
                value,
            },
            key: key.into_inner().into_owned(),
        })
        .collect();
    entries.sort_by_key(|e| match e.origin {
        Origin::File { line, .. } => line,
        Origin::Env { .. } => 0,
    });
    Ok(entries)
}

/// The entries of the `RINGCAST_*` variables that name a key; other variables are left
/// alone (`RINGCAST_URING` is the engine's own, for instance).
pub(super) fn env_entries<'i>(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Entry<'i>> {
    let mut entries: Vec<Entry<'i>> = vars
        .into_iter()
        .filter_map(|(var, value)| {
            let key = env_key(&var)?;
            Some(Entry {
                key,
                origin: Origin::Env { var, value },
            })
        })
        .collect();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    entries
}

/// The key a variable sets, if it sets one.
pub(super) fn env_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix(ENV_PREFIX)?;
    // Upper case only, so that two variables never name the same key.
    if !rest.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        return None;
    }
    let key = rest.to_ascii_lowercase().replace('_', "-");
    keys().contains(&key.as_str()).then_some(key)
}

/// Reads the entries (the file's, then the environment's, which win) over the defaults.
pub(super) fn read(
    file: Vec<Entry<'_>>,
    env: Vec<Entry<'_>>,
    path: Option<&Path>,
) -> Result<Settings, SettingsError> {
    let mut entries: Vec<Entry<'_>> = file
        .into_iter()
        .filter(|f| !env.iter().any(|e| e.key == f.key))
        .collect();
    entries.extend(env);
    let layers = Layers {
        entries: entries.into_iter(),
        value: None,
        at: None,
        path,
    };
    Settings::deserialize(layers).map_err(|e| match e.located {
        Some(located) => located,
        // Every error passes through an entry; this is for one that would not.
        None => SettingsError::Invalid {
            key: String::new(),
            message: e.message,
        },
    })
}

/// The 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key closest to an unknown `key` (a typo, `_` for `-`), if one is close.
fn closest(key: &str) -> Option<&'static str> {
    let dashed = key.replace('_', "-");
    keys()
        .iter()
        .map(|k| (edit_distance(&dashed, k), *k))
        .filter(|&(d, _)| d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diag + usize::from(ca != cb));
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Where the entry being read came from.
struct At {
    key: String,
    /// The file's line, or the variable.
    place: Result<usize, String>,
}

/// The entries as a map, for `Settings`' derived `Deserialize`.
struct Layers<'i, 'p> {
    entries: std::vec::IntoIter<Entry<'i>>,
    /// The value of the key just read.
    value: Option<Origin<'i>>,
    at: Option<At>,
    path: Option<&'p Path>,
}

impl Layers<'_, '_> {
    /// `e` with the place of the entry being read, unless it already has one.
    fn locate(&self, e: DeError) -> DeError {
        if e.located.is_some() {
            return e;
        }
        let Some(at) = &self.at else {
            return e;
        };
        let located = match &at.place {
            Ok(line) => SettingsError::Key {
                path: self.path.map(Path::to_path_buf),
                line: *line,
                key: at.key.clone(),
                message: e.message.clone(),
            },
            Err(var) => SettingsError::Env {
                var: var.clone(),
                key: at.key.clone(),
                message: e.message.clone(),
            },
        };
        DeError {
            located: Some(located),
            message: e.message,
        }
    }
}

impl<'de> Deserializer<'de> for Layers<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de> MapAccess<'de> for Layers<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.at = Some(At {
            key: entry.key.clone(),
            place: match &entry.origin {
                Origin::File { line, .. } => Ok(*line),
                Origin::Env { var, .. } => Err(var.clone()),
            },
        });
        if !keys().contains(&entry.key.as_str()) {
            let hint = match closest(&entry.key) {
                Some(k) => format!("did you mean `{k}`? "),
                None => String::new(),
            };
            return Err(self.locate(de::Error::custom(format_args!(
                "unknown key ({hint}`ringcast config default` lists every key)"
            ))));
        }
        self.value = Some(entry.origin);
        let key: de::value::StringDeserializer<DeError> = entry.key.into_deserializer();
        seed.deserialize(key).map(Some).map_err(|e| self.locate(e))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let read = match self.value.take() {
            Some(Origin::File { value, .. }) => seed
                .deserialize(ValueDeserializer::from(value))
                .map_err(|e| de::Error::custom(e.message().trim_end())),
            Some(Origin::Env { value, .. }) => seed.deserialize(EnvValue(&value)),
            None => Err(de::Error::custom("a value without its key")),
        };
        read.map_err(|e| self.locate(e))
    }
}

/// An error on the way, and once known, the place it belongs to.
#[derive(Debug)]
pub(super) struct DeError {
    located: Option<SettingsError>,
    message: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            located: None,
            message: msg.to_string(),
        }
    }
}

/// The text of an environment variable, read as the field asks: a number, a boolean, a
/// comma-separated list, or text (sizes, durations, names).
struct EnvValue<'a>(&'a str);

impl EnvValue<'_> {
    fn parse<T: std::str::FromStr, E: de::Error>(&self, what: &dyn de::Expected) -> Result<T, E> {
        self.0
            .trim()
            .parse()
            .map_err(|_| E::invalid_value(de::Unexpected::Str(self.0), what))
    }
}

impl<'de> Deserializer<'de> for EnvValue<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let v = self.parse(&visitor)?;
        visitor.visit_bool(v)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let v = self.parse(&visitor)?;
        visitor.visit_u64(v)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let v = self.parse(&visitor)?;
        visitor.visit_i64(v)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let v = self.parse(&visitor)?;
        visitor.visit_f64(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let items = self
            .0
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        visitor.visit_seq(SeqDeserializer::new(items))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u128 f32 char str string bytes byte_buf unit unit_struct
        tuple tuple_struct map struct enum identifier ignored_any
    }
}
