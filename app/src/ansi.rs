//! Job logs contain ANSI colour codes. This turns a log into runs of plain text, each
//! with the CSS classes of its colour and weight; the view renders them as text nodes,
//! so nothing in a log is ever interpreted as HTML. Other escape sequences are dropped.

/// A run of log text with the classes to style it (empty: default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub text: String,
    pub class: String,
}

#[derive(Clone, Copy, Default, PartialEq)]
struct Style {
    fg: Option<u8>,
    bold: bool,
}

impl Style {
    fn class(self) -> String {
        let mut c = Vec::new();
        if let Some(fg) = self.fg {
            c.push(format!("ansi-fg-{fg}"));
        }
        if self.bold {
            c.push("ansi-bold".to_string());
        }
        c.join(" ")
    }

    fn apply(&mut self, params: &str) {
        let codes: Vec<u32> = if params.is_empty() {
            vec![0]
        } else {
            params.split(';').filter_map(|p| p.parse().ok()).collect()
        };
        for code in codes {
            match code {
                0 => *self = Style::default(),
                1 => self.bold = true,
                22 => self.bold = false,
                30..=37 => self.fg = Some((code - 30) as u8),
                90..=97 => self.fg = Some((code - 90 + 8) as u8),
                39 => self.fg = None,
                _ => {}
            }
        }
    }
}

pub fn parse(log: &str) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut style = Style::default();
    let mut text = String::new();
    let mut chars = log.chars().peekable();
    let flush = |text: &mut String, style: Style, runs: &mut Vec<Run>| {
        if !text.is_empty() {
            runs.push(Run {
                text: std::mem::take(text),
                class: style.class(),
            });
        }
    };
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            text.push(c);
            continue;
        }
        if chars.peek() != Some(&'[') {
            continue;
        }
        chars.next();
        let mut params = String::new();
        let mut last = None;
        for n in chars.by_ref() {
            if n.is_ascii_digit() || n == ';' || n == '?' {
                params.push(n);
            } else {
                last = Some(n);
                break;
            }
        }
        if last == Some('m') {
            flush(&mut text, style, &mut runs);
            style.apply(&params);
        }
    }
    flush(&mut text, style, &mut runs);
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_become_classes_and_markup_stays_text() {
        let runs = parse("a\x1b[32;1mgreen <b>\x1b[0m\x1b[2Kz");
        assert_eq!(
            runs,
            vec![
                Run {
                    text: "a".into(),
                    class: "".into()
                },
                Run {
                    text: "green <b>".into(),
                    class: "ansi-fg-2 ansi-bold".into()
                },
                Run {
                    text: "z".into(),
                    class: "".into()
                },
            ]
        );
    }
}
