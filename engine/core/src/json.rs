//! A resolver's answer kept as JSON text: checked once to be one JSON
//! value, then read in place by the projector ([`crate::projection`]),
//! which takes apart only the objects and lists the selection walks into
//! and copies most leaves as they are. A component's answer arrives as
//! text; parsing it into a [`Value`] (an allocation for every key, string
//! and container, freed right after the projection) cost a third of a
//! small component call.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// Text checked to be exactly one JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText {
    text: String,
    /// Where the value is, without the whitespace around it.
    value: Span,
    /// An object's members, found while checking it: the projector reads
    /// them without scanning the text again.
    members: Option<Vec<Member>>,
}

/// A byte range of a value's text.
type Span = (usize, usize);

/// A member: where its name is (or the name, decoded, when it has an
/// escape), and where its value is, in its object's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    key: Key,
    value: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    At(Span),
    Decoded(Box<str>),
}

impl JsonText {
    /// `text` if it is one JSON value (whitespace around it allowed),
    /// else why not.
    pub fn parse(text: String) -> Result<JsonText, serde_json::Error> {
        let trimmed = text.trim_start_matches(is_whitespace);
        let start = text.len() - trimmed.len();
        let trimmed = trimmed.trim_end_matches(is_whitespace);
        let value = (start, start + trimmed.len());
        let members = if trimmed.starts_with('{') {
            Some(members_of(trimmed)?)
        } else {
            serde_json::from_str::<&RawValue>(trimmed)?;
            None
        };
        Ok(JsonText {
            text,
            value,
            members,
        })
    }

    /// The text as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value, parsed. Fails where the text is JSON that a [`Value`]
    /// cannot hold: a number beyond `f64`, a lone surrogate escape.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(&self.text)
    }

    /// The value to read in place.
    pub(crate) fn root(&self) -> Raw<'_> {
        Raw {
            text: &self.text[self.value.0..self.value.1],
            members: self.members.as_deref(),
        }
    }
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// The members of `object`, the whole text of one JSON object (checked
/// here, to its end).
fn members_of(object: &str) -> Result<Vec<Member>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(object);
    let members = MembersSeed(object).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(members)
}

/// One JSON value inside a [`JsonText`], as its text without surrounding
/// whitespace. Only ever made from checked text, so its first byte tells
/// its type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Raw<'v> {
    pub(crate) text: &'v str,
    /// The members, when the check found them already (the root object).
    members: Option<&'v [Member]>,
}

impl<'v> Raw<'v> {
    fn at(text: &'v str) -> Raw<'v> {
        Raw {
            text,
            members: None,
        }
    }

    pub(crate) fn is_null(self) -> bool {
        self.text == "null"
    }

    /// A list's items, or `None` for anything else.
    pub(crate) fn items(self) -> Option<Vec<Raw<'v>>> {
        if !self.text.starts_with('[') {
            return None;
        }
        let items: Vec<&'v RawValue> = serde_json::from_str(self.text).ok()?;
        Some(items.into_iter().map(|r| Raw::at(r.get())).collect())
    }

    /// An object's members, or `None` for anything else.
    pub(crate) fn members(self) -> Option<Members<'v>> {
        let members = match self.members {
            Some(members) => Cow::Borrowed(members),
            None if self.text.starts_with('{') => Cow::Owned(members_of(self.text).ok()?),
            None => return None,
        };
        Some(Members {
            object: self.text,
            members,
        })
    }

    /// A string's contents, or `None` for anything else.
    pub(crate) fn as_str(self) -> Option<Cow<'v, str>> {
        match self.plain_string() {
            Some(s) => Some(Cow::Borrowed(s)),
            None if self.text.starts_with('"') => serde_json::from_str::<String>(self.text)
                .ok()
                .map(Cow::Owned),
            None => None,
        }
    }

    /// A string with no escape: its contents, which are also its JSON text
    /// between the quotes (valid JSON holds no control character there).
    pub(crate) fn plain_string(self) -> Option<&'v str> {
        let inner = self.text.strip_prefix('"')?.strip_suffix('"')?;
        (!inner.contains('\\')).then_some(inner)
    }

    /// A number written without an exponent and short enough that an
    /// `f64` holds its magnitude (the largest has 309 integer digits).
    pub(crate) fn plain_number(self) -> Option<&'v str> {
        let b = self.text.as_bytes();
        let numeric = matches!(b.first(), Some(b'-' | b'0'..=b'9'));
        (numeric && b.len() <= 300 && !b.iter().any(|c| matches!(c, b'e' | b'E')))
            .then_some(self.text)
    }

    /// A number that is an integer in `i64`, without a fraction or exponent.
    pub(crate) fn plain_integer(self) -> Option<i64> {
        let digits = self.text.strip_prefix('-').unwrap_or(self.text);
        if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        self.text.parse().ok()
    }

    /// The value, parsed (see [`JsonText::to_value`]).
    pub(crate) fn to_value(self) -> Option<Value> {
        serde_json::from_str(self.text).ok()
    }
}

impl fmt::Display for Raw<'_> {
    /// As a [`Value`] displays, where it parses: error messages read alike
    /// whichever way the value came. Text no `Value` holds (nested past the
    /// parser's limit, say) is shown up to `SHOWN` bytes: a plugin's answer
    /// must not blow up every subscriber's error message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 200;
        match self.to_value() {
            Some(value) => value.fmt(f),
            None if self.text.len() <= SHOWN => f.write_str(self.text),
            None => {
                let end = (0..=SHOWN)
                    .rev()
                    .find(|&i| self.text.is_char_boundary(i))
                    .unwrap_or(0);
                write!(f, "{}... ({} bytes)", &self.text[..end], self.text.len())
            }
        }
    }
}

/// An object's members, in text order; a repeated name means its last
/// value, as in a parsed [`Value`].
#[derive(Debug)]
pub(crate) struct Members<'v> {
    object: &'v str,
    members: Cow<'v, [Member]>,
}

impl<'v> Members<'v> {
    pub(crate) fn get(&self, name: &str) -> Option<Raw<'v>> {
        let object = self.object;
        let text = |(start, end): Span| &object[start..end];
        self.members
            .iter()
            .rev()
            .find(|m| match &m.key {
                Key::At(span) => text(*span) == name,
                Key::Decoded(key) => &**key == name,
            })
            .map(|m| Raw::at(text(m.value)))
    }
}

/// Reads an object's members as spans of `.0`, the object's whole text.
struct MembersSeed<'v>(&'v str);

impl<'v> MembersSeed<'v> {
    fn span(&self, part: &str) -> Span {
        let start = part.as_ptr() as usize - self.0.as_ptr() as usize;
        (start, start + part.len())
    }
}

impl<'de> DeserializeSeed<'de> for MembersSeed<'de> {
    type Value = Vec<Member>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Member>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MembersSeed<'de> {
    type Value = Vec<Member>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Member>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(name) = map.next_key_seed(KeySeed)? {
            let value: &'de RawValue = map.next_value()?;
            let key = match name {
                Cow::Borrowed(name) => Key::At(self.span(name)),
                Cow::Owned(name) => Key::Decoded(name.into_boxed_str()),
            };
            members.push(Member {
                key,
                value: self.span(value.get()),
            });
        }
        Ok(members)
    }
}

/// A member's name: borrowed from the text unless it has an escape.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> JsonText {
        JsonText::parse(s.to_owned()).unwrap()
    }

    #[test]
    fn only_one_json_value_is_json_text() {
        for bad in [
            "",
            "{",
            "{\"a\":1",
            "[1,]",
            "1 2",
            "{\"a\":1}x",
            "nul",
            "'a'",
            "\"\u{1}\"",
        ] {
            assert!(JsonText::parse(bad.to_owned()).is_err(), "{bad:?}");
        }
        assert_eq!(text(" \n{\"a\": 1}\t").root().text, "{\"a\": 1}");
    }

    #[test]
    fn members_keep_the_last_of_a_repeated_key_and_decode_escaped_names() {
        let t = text(r#"{"a": 1, "b\u0021": [2], "a": {"c": null}}"#);
        let members = t.root().members().unwrap();
        assert_eq!(members.get("a").unwrap().text, r#"{"c": null}"#);
        assert_eq!(members.get("b!").unwrap().text, "[2]");
        assert!(members.get("c").is_none());
        assert!(t.root().items().is_none());
        // A nested object is read when asked for.
        let nested = members.get("a").unwrap().members().unwrap();
        assert_eq!(nested.get("c").unwrap().text, "null");
    }

    #[test]
    fn leaves_read_in_place_only_when_their_text_is_their_value() {
        let t = text(r#"["plain", "esc\"aped", -12, 1.50, 1e3, 123456789012345678901, null]"#);
        let items = t.root().items().unwrap();
        assert_eq!(items[0].plain_string(), Some("plain"));
        assert_eq!(items[1].plain_string(), None);
        assert_eq!(items[1].as_str().unwrap(), "esc\"aped");
        assert_eq!(items[2].plain_integer(), Some(-12));
        assert_eq!(items[3].plain_integer(), None);
        assert_eq!(items[3].plain_number(), Some("1.50"));
        assert_eq!(items[4].plain_number(), None);
        assert_eq!(items[5].plain_integer(), None);
        assert!(items[6].is_null());
        assert_eq!(items[4].to_string(), "1000.0");
    }

    #[test]
    fn json_a_value_cannot_hold_is_text_but_not_a_value() {
        for s in ["1e400", r#""\ud800""#] {
            let t = text(s);
            assert!(t.to_value().is_err(), "{s}");
            assert_eq!(t.root().to_string(), s);
        }
    }

    #[test]
    fn a_deeply_nested_answer_is_checked_without_recursing() {
        // What a hostile plugin may return: nesting far past serde_json's
        // recursion limit, which a `Value` refuses.
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        // Checking the text skips nested values without recursing: it is
        // JSON, taken apart one level at a time as a selection walks in.
        let t = JsonText::parse(deep).unwrap();
        assert!(t.to_value().is_err());
        let outer = t.root().members().unwrap().get("a").unwrap();
        let items = outer.items().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].items().unwrap().len(), 1);
        // Read as a whole (a custom scalar), it is refused, not overflowed,
        // and an error message shows only its start.
        assert!(items[0].to_value().is_none());
        let shown = items[0].to_string();
        assert!(
            shown.starts_with("[[[") && shown.ends_with("... (199998 bytes)"),
            "{shown}"
        );
        assert!(shown.len() < 250);
    }
}
