//! Masked variables in job logs: a [`Masker`] sits on a job's output on its way to the
//! server and writes `[MASKED]` wherever one of the job's masked values appears. Output
//! arrives in pieces cut anywhere, so the masker keeps back the end of what it was given
//! while that end could be the start of a value, and decides once the next piece (or the
//! end of the output) shows whether it was.

/// What a masked value is replaced with.
pub const MASK: &str = "[MASKED]";

/// The shortest value that may be masked (GitLab's rule too): shorter ones would hide
/// ordinary words of the log.
pub const MIN_MASKED_LEN: usize = 8;

/// Whether a value can be masked: long enough, and printed by a shell as it is. Blanks
/// (`echo $V` joins words with one space), quotes and backslashes (`set -x` and `printf
/// %q` escape them) would reach the log in a form that is not the value.
pub fn maskable(value: &str) -> bool {
    value.len() >= MIN_MASKED_LEN
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '\'' | '"' | '`' | '\\'))
}

/// Replaces masked values in a stream of text.
#[derive(Debug, Default)]
pub struct Masker {
    /// Longest first, so that a value containing another is masked whole.
    secrets: Vec<String>,
    pending: String,
}

impl Masker {
    /// A masker for these values (empty ones, and ones shorter than [`MIN_MASKED_LEN`],
    /// are ignored).
    pub fn new(values: impl IntoIterator<Item = String>) -> Masker {
        let mut secrets: Vec<String> = values.into_iter().filter(|v| v.len() >= MIN_MASKED_LEN).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Masker {
            secrets,
            pending: String::new(),
        }
    }

    /// Whether there is anything to mask.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The next piece of output; returns what can be passed on now.
    pub fn feed(&mut self, text: &str) -> String {
        if self.secrets.is_empty() {
            return text.to_string();
        }
        self.pending.push_str(text);
        let (out, held) = self.scan(false);
        self.pending.drain(..held);
        out
    }

    /// `text` whole, masked (a piece of text that is not part of a stream).
    pub fn mask(&self, text: &str) -> String {
        if self.secrets.is_empty() {
            return text.to_string();
        }
        let whole = Masker {
            secrets: self.secrets.clone(),
            pending: text.to_string(),
        };
        whole.scan(true).0
    }

    /// The end of the output: whatever was kept back, masked.
    pub fn finish(&mut self) -> String {
        let (out, _) = self.scan(true);
        self.pending.clear();
        out
    }

    /// Masks `pending` up to where a value might still be starting (everything when
    /// `all`); returns the masked text and how many bytes of `pending` it covers.
    fn scan(&self, all: bool) -> (String, usize) {
        let text = self.pending.as_str();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        while at < text.len() {
            let rest = &text[at..];
            // The rest could be the start of a value longer than what is here (perhaps a
            // longer one than a value matched here already): wait for more.
            if !all && self.secrets.iter().any(|s| s.len() > rest.len() && s.starts_with(rest)) {
                return (out, at);
            }
            if let Some(secret) = self.secrets.iter().find(|s| rest.starts_with(s.as_str())) {
                out.push_str(MASK);
                at += secret.len();
                continue;
            }
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            at += c.len_utf8();
        }
        (out, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(values: &[&str], pieces: &[&str]) -> String {
        let mut m = Masker::new(values.iter().map(|v| v.to_string()));
        let mut out: String = pieces.iter().map(|p| m.feed(p)).collect();
        out.push_str(&m.finish());
        out
    }

    #[test]
    fn a_value_is_masked_wherever_the_pieces_are_cut() {
        let log = "token=s3cr3t-value; again: s3cr3t-value\nbye\n";
        let want = "token=[MASKED]; again: [MASKED]\nbye\n";
        for cut in 0..=log.len() {
            assert_eq!(through(&["s3cr3t-value"], &[&log[..cut], &log[cut..]]), want, "cut at {cut}");
        }
        // One byte at a time.
        let bytes: Vec<String> = log.chars().map(|c| c.to_string()).collect();
        let pieces: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(through(&["s3cr3t-value"], &pieces), want);
    }

    #[test]
    fn only_what_could_start_a_value_is_held_back() {
        let mut m = Masker::new(["password-123".to_string()]);
        assert_eq!(m.feed("progress 10% pass"), "progress 10% ");
        assert_eq!(m.feed("ed the test\n"), "passed the test\n");
        assert_eq!(m.feed("the end: passw"), "the end: ");
        assert_eq!(m.finish(), "passw");
    }

    #[test]
    fn a_longer_value_is_masked_whole_wherever_the_pieces_are_cut() {
        let values = ["abcdefgh", "abcdefgh-prod-XYZ"];
        let log = "a abcdefgh-prod-XYZ b abcdefgh c\n";
        for cut in 0..=log.len() {
            assert_eq!(
                through(&values, &[&log[..cut], &log[cut..]]),
                "a [MASKED] b [MASKED] c\n",
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_whole_text_is_masked_at_once() {
        let m = Masker::new(["abcdefgh-secret".to_string()]);
        assert_eq!(
            m.mask("terraform destroy -var token=abcdefgh-secret"),
            "terraform destroy -var token=[MASKED]"
        );
        assert_eq!(Masker::new(Vec::new()).mask("plain"), "plain");
    }

    #[test]
    fn longer_values_first_short_ones_ignored_and_unicode_kept() {
        assert_eq!(through(&["abcdefgh", "abcdefgh-longer"], &["x abcdefgh-longer y"]), "x [MASKED] y");
        assert_eq!(through(&["short"], &["a short word"]), "a short word");
        assert_eq!(through(&["ключ-секрет"], &["é ключ-се", "крет ü"]), "é [MASKED] ü");
    }
}
