//! Paths and query strings as the engine reads them, and the canonical forms the policy
//! forwards instead of the client's bytes.
//!
//! The engine's router percent-decodes the path *before* it routes, so
//! `/containers%2Fcreate` is `/containers/create` to it; this module decodes first too,
//! and refuses what has no single reading: an encoded `/`, `.` or `..` segments, empty
//! segments (`//`, a trailing `/`), NUL and control characters, bad `%` escapes, bytes
//! that are not UTF-8, and version prefixes other than `/v1.N` (N ≥ 24).
//!
//! Query strings are read as Go's `net/url` reads them: `&` separates, `+` is a space,
//! the first of repeated keys is the one `Get` returns; a `;` (which old Go treated as a
//! separator and new Go rejects) or a bad escape refuses the request.

use super::Refusal;

/// The lowest API version the proxy forwards (older ones read bodies differently; the
/// engine itself has refused them for years).
const MIN_MINOR: u32 = 24;

/// A decoded request path.
#[derive(Debug)]
pub(crate) struct Target {
    /// `v1.45`, if the path had a version prefix.
    pub version: Option<String>,
    /// The decoded segments after it.
    pub segments: Vec<String>,
}

fn malformed(why: &str) -> Refusal {
    Refusal::bad(format!("usher: malformed request path ({why})"))
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set); None on a bad escape
/// or a result that is not UTF-8.
fn unescape(s: &str, plus: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Whether a decoded string holds a control character (NUL included).
fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Decodes and checks a request path (see the module comment).
pub(crate) fn parse_path(raw: &str) -> Result<Target, Refusal> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(malformed("it must start with /"));
    };
    let mut segments = Vec::new();
    for part in rest.split('/') {
        if part.is_empty() {
            return Err(malformed("empty segment"));
        }
        if part.to_ascii_lowercase().contains("%2f") {
            return Err(malformed("encoded /"));
        }
        let decoded = unescape(part, false).ok_or_else(|| malformed("bad %-escape or not UTF-8"))?;
        if decoded == "." || decoded == ".." {
            return Err(malformed(". or .. segment"));
        }
        if has_control(&decoded) || decoded.contains('/') || decoded.contains('\\') {
            return Err(malformed("control character or separator in a segment"));
        }
        segments.push(decoded);
    }
    let mut version = None;
    // The engine's router takes `/v{version:[0-9.]+}` as the version.
    if let Some(first) = segments.first()
        && let Some(number) = first.strip_prefix('v')
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        let minor = number
            .strip_prefix("1.")
            .filter(|m| (1..=3).contains(&m.len()) && m.bytes().all(|b| b.is_ascii_digit()) && !m.starts_with('0'))
            .and_then(|m| m.parse::<u32>().ok());
        match minor {
            Some(m) if m >= MIN_MINOR => version = Some(first.clone()),
            _ => {
                return Err(Refusal::bad(format!(
                    "usher: API version {number} is not supported (1.{MIN_MINOR} or newer)"
                )));
            }
        }
        segments.remove(0);
    }
    Ok(Target { version, segments })
}

/// Percent-encodes all but unreserved characters (and, in paths, `:` and `@`).
fn escape(s: &str, in_path: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (in_path && b"@:".contains(&b)) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical path for `segments` under the request's version prefix; image names
/// (which contain `/`) are passed as several segments.
pub(crate) fn path(version: Option<&str>, segments: &[&str]) -> String {
    let mut out = String::new();
    for segment in version.into_iter().chain(segments.iter().copied()) {
        out.push('/');
        out.push_str(&escape(segment, true));
    }
    out
}

/// A decoded query string: its pairs in order.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pub pairs: Vec<(String, String)>,
}

impl Query {
    /// Reads `raw` as Go's `url.ParseQuery` does, refusing what it would reject.
    pub(crate) fn parse(raw: &str) -> Result<Query, Refusal> {
        let bad = |why: &str| Refusal::bad(format!("usher: malformed query string ({why})"));
        let mut pairs = Vec::new();
        for pair in raw.split('&') {
            if pair.contains(';') {
                return Err(bad("; is not a separator"));
            }
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = unescape(key, true).ok_or_else(|| bad("bad %-escape or not UTF-8"))?;
            let value = unescape(value, true).ok_or_else(|| bad("bad %-escape or not UTF-8"))?;
            if has_control(&key) || key.contains('\0') || value.contains('\0') {
                return Err(bad("control character"));
            }
            pairs.push((key, value));
        }
        Ok(Query { pairs })
    }

    /// The first value of `key`, as Go's `Values.Get`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, as Go's `Values[key]`.
    pub(crate) fn all(&self, key: &str) -> Vec<&str> {
        self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// The first parameter not among `allowed`.
    pub(crate) fn unknown(&self, allowed: &[&str]) -> Option<&str> {
        self.pairs.iter().map(|(k, _)| k.as_str()).find(|k| !allowed.contains(k))
    }
}

/// The query string the policy forwards: built pair by pair, canonically encoded.
#[derive(Debug, Default)]
pub(crate) struct OutQuery(Vec<(String, String)>);

impl OutQuery {
    pub(crate) fn push(&mut self, key: &str, value: &str) {
        self.0.push((key.to_string(), value.to_string()));
    }

    /// The first value of each of `keys` that the client gave (Go's `Get`), and every
    /// value of each of `multi` (Go's `Values[key]`).
    pub(crate) fn copied(q: &Query, keys: &[&str], multi: &[&str]) -> OutQuery {
        let mut out = OutQuery::default();
        for key in keys {
            if let Some(v) = q.get(key) {
                out.push(key, v);
            }
        }
        for key in multi {
            for v in q.all(key) {
                out.push(key, v);
            }
        }
        out
    }

    pub(crate) fn encode(&self) -> String {
        let pairs: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k, false), escape(v, false)))
            .collect();
        pairs.join("&")
    }
}
