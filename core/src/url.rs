//! Percent-encoding for the URLs Usher builds (a ref in a list's query, the `next` of a
//! login redirect, an artifact's path) and decoding for the credentials a repository URL
//! may carry. One rule everywhere: unreserved characters and `/` stay, every other byte
//! of the UTF-8 is escaped.

/// `text` with every byte but `A-Z a-z 0-9 - _ . ~ /` written as `%XX`.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `%XX` sequences turned back into bytes (invalid ones are kept as they are).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok())) {
            (b'%', Some(hex)) if u8::from_str_radix(hex, 16).is_ok() => {
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_keeps_slashes() {
        let text = "feature/ä b?c#d%e&f=g";
        let encoded = percent_encode(text);
        assert_eq!(encoded, "feature/%C3%A4%20b%3Fc%23d%25e%26f%3Dg");
        assert_eq!(percent_decode(&encoded), text);
        assert_eq!(percent_decode("100%"), "100%");
    }
}
