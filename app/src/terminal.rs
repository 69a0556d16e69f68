//! Job logs as a terminal would show them, in HTML. A log is text with ANSI escape
//! sequences; alacritty's `vte` parser (its `ansi` layer) reads the sequences and this
//! module keeps what a terminal line would hold: 16, 256 and truecolour foreground and
//! background, bold, dim, italic, underline, strike, reverse and hidden; `\r` moves back to
//! the start of the line so progress lines overwrite themselves; `ESC[K` clears. Other
//! sequences (cursor movement beyond the line, titles) are dropped.
//!
//! It works incrementally: [`LogRenderer::feed`] takes the next piece of a log and gives
//! the HTML of the lines it completed plus the line still being written, so the job page
//! appends output without touching what it already shows. The server renders a log's
//! first part the same way and hands the browser the small [`LogState`] at its end, so the
//! browser continues where the server stopped without the log's text.
//!
//! Every character of the log becomes escaped text: nothing in a log is markup.

use serde::{Deserialize, Serialize};
use vte::ansi::{Attr, Color, Handler, LineClearMode, NamedColor, Processor, Timeout};

/// A line longer than this is broken, so a log without newlines cannot make one line
/// that holds megabytes of cells.
pub const MAX_LINE_CHARS: usize = 8192;
/// A trailing escape sequence longer than this is not waited for.
const MAX_PENDING_BYTES: usize = 256;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Colour {
    #[default]
    Default,
    /// The 16 named colours, styled by the page's palette (classes `f0`…`f15`, `g0`…).
    Palette(u8),
    Rgb(u8, u8, u8),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Style {
    fg: Colour,
    bg: Colour,
    /// Bit set of the `FLAG_*` attributes.
    flags: u8,
}

const BOLD: u8 = 1;
const DIM: u8 = 2;
const ITALIC: u8 = 4;
const UNDERLINE: u8 = 8;
const STRIKE: u8 = 16;
const REVERSE: u8 = 32;
const HIDDEN: u8 = 64;
const FLAG_CLASSES: [(u8, &str); 7] = [
    (BOLD, "b"),
    (DIM, "d"),
    (ITALIC, "i"),
    (UNDERLINE, "u"),
    (STRIKE, "s"),
    (REVERSE, "r"),
    (HIDDEN, "h"),
];

/// Where a log's rendering stopped: the style in force, the line being written and the
/// cursor in it, the number of that line, and an escape sequence cut off by the end of
/// the text so far. Small: it is sent with the page instead of the log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogState {
    style: Style,
    cells: Vec<(char, Style)>,
    column: usize,
    /// The 0-based index of the line being written (shown as 1-based).
    line: u64,
    pending: String,
}

/// HTML produced by one [`LogRenderer::feed`].
#[derive(Debug, Default, PartialEq)]
pub struct LogHtml {
    /// Lines completed by this piece, each a `<span class="line" id="L…">`.
    pub lines: String,
    /// The line still being written (`class="line partial"`), or empty. It replaces the
    /// partial line of the previous feed.
    pub partial: String,
}

/// Turns a log into HTML lines, one piece at a time.
#[derive(Default)]
pub struct LogRenderer {
    state: LogState,
    processor: Processor<NoSync>,
    out: String,
}

impl LogRenderer {
    /// Continues from where a previous renderer (perhaps on the server) stopped.
    pub fn resume(state: LogState) -> LogRenderer {
        LogRenderer {
            state,
            ..LogRenderer::default()
        }
    }

    pub fn state(&self) -> &LogState {
        &self.state
    }

    /// How many lines are complete.
    pub fn lines(&self) -> u64 {
        self.state.line
    }

    pub fn feed(&mut self, text: &str) -> LogHtml {
        let mut input = std::mem::take(&mut self.state.pending);
        input.push_str(text);
        let cut = incomplete_escape_at(&input);
        let mut screen = Screen {
            state: &mut self.state,
            out: &mut self.out,
        };
        self.processor.advance(&mut screen, &input.as_bytes()[..cut]);
        self.state.pending = input[cut..].to_string();
        LogHtml {
            lines: std::mem::take(&mut self.out),
            partial: if self.state.cells.is_empty() {
                String::new()
            } else {
                line_html(self.state.line, &self.state.cells, false)
            },
        }
    }
}

/// The whole of `text` as HTML, and the state at its end.
pub fn render(text: &str) -> (String, LogState) {
    let mut renderer = LogRenderer::default();
    let html = renderer.feed(text);
    (html.lines + &html.partial, renderer.state)
}

/// Where a trailing, unfinished escape sequence starts (to be completed by the next
/// piece), or the text's length.
fn incomplete_escape_at(text: &str) -> usize {
    let Some(esc) = text.rfind('\x1b') else { return text.len() };
    let rest = &text.as_bytes()[esc + 1..];
    let complete = match rest.first() {
        None => false,
        Some(b'[') => rest[1..].iter().any(|b| (0x40..=0x7e).contains(b)),
        Some(b']') => rest.contains(&0x07) || rest.windows(2).any(|w| w == b"\x1b\\"),
        Some(_) => true,
    };
    if complete || text.len() - esc > MAX_PENDING_BYTES {
        text.len()
    } else {
        esc
    }
}

/// Logs are not interactive: synchronized-update mode is ignored (vte's default timer
/// would read the clock, which WASM has not).
#[derive(Default)]
struct NoSync;

impl Timeout for NoSync {
    fn set_timeout(&mut self, _: std::time::Duration) {}
    fn clear_timeout(&mut self) {}
    fn pending_timeout(&self) -> bool {
        false
    }
}

/// The handler vte calls: one line of cells, completed lines written out as HTML.
struct Screen<'a> {
    state: &'a mut LogState,
    out: &'a mut String,
}

impl Screen<'_> {
    fn end_line(&mut self) {
        self.out.push_str(&line_html(self.state.line, &self.state.cells, true));
        self.state.cells.clear();
        self.state.column = 0;
        self.state.line += 1;
    }
}

impl Handler for Screen<'_> {
    fn input(&mut self, c: char) {
        if self.state.column >= MAX_LINE_CHARS {
            self.end_line();
        }
        let cell = (c, self.state.style);
        match self.state.cells.get_mut(self.state.column) {
            Some(existing) => *existing = cell,
            None => {
                // A cursor moved past the end (it cannot here, but stay safe): pad.
                while self.state.cells.len() < self.state.column {
                    self.state.cells.push((' ', Style::default()));
                }
                self.state.cells.push(cell);
            }
        }
        self.state.column += 1;
    }

    fn put_tab(&mut self, count: u16) {
        for _ in 0..count {
            self.input('\t');
        }
    }

    fn backspace(&mut self) {
        self.state.column = self.state.column.saturating_sub(1);
    }

    fn carriage_return(&mut self) {
        self.state.column = 0;
    }

    fn linefeed(&mut self) {
        self.end_line();
    }

    fn newline(&mut self) {
        self.end_line();
    }

    fn clear_line(&mut self, mode: LineClearMode) {
        let column = self.state.column.min(self.state.cells.len());
        match mode {
            LineClearMode::Right => self.state.cells.truncate(column),
            LineClearMode::Left => {
                for cell in &mut self.state.cells[..column] {
                    *cell = (' ', Style::default());
                }
            }
            LineClearMode::All => {
                self.state.cells.clear();
                self.state.column = 0;
            }
        }
    }

    fn terminal_attribute(&mut self, attr: Attr) {
        let style = &mut self.state.style;
        match attr {
            Attr::Reset => *style = Style::default(),
            Attr::Bold => style.flags |= BOLD,
            Attr::Dim => style.flags |= DIM,
            Attr::Italic => style.flags |= ITALIC,
            Attr::Underline | Attr::DoubleUnderline | Attr::Undercurl | Attr::DottedUnderline | Attr::DashedUnderline => {
                style.flags |= UNDERLINE
            }
            Attr::Reverse => style.flags |= REVERSE,
            Attr::Hidden => style.flags |= HIDDEN,
            Attr::Strike => style.flags |= STRIKE,
            Attr::CancelBold => style.flags &= !BOLD,
            Attr::CancelBoldDim => style.flags &= !(BOLD | DIM),
            Attr::CancelItalic => style.flags &= !ITALIC,
            Attr::CancelUnderline => style.flags &= !UNDERLINE,
            Attr::CancelReverse => style.flags &= !REVERSE,
            Attr::CancelHidden => style.flags &= !HIDDEN,
            Attr::CancelStrike => style.flags &= !STRIKE,
            Attr::Foreground(c) => style.fg = colour(c),
            Attr::Background(c) => style.bg = colour(c),
            Attr::BlinkSlow | Attr::BlinkFast | Attr::CancelBlink | Attr::UnderlineColor(_) => {}
        }
    }
}

fn colour(c: Color) -> Colour {
    match c {
        Color::Named(n) => match n as usize {
            i @ 0..16 => Colour::Palette(i as u8),
            _ => match n {
                NamedColor::DimBlack => Colour::Palette(0),
                NamedColor::DimRed => Colour::Palette(1),
                NamedColor::DimGreen => Colour::Palette(2),
                NamedColor::DimYellow => Colour::Palette(3),
                NamedColor::DimBlue => Colour::Palette(4),
                NamedColor::DimMagenta => Colour::Palette(5),
                NamedColor::DimCyan => Colour::Palette(6),
                NamedColor::DimWhite => Colour::Palette(7),
                _ => Colour::Default,
            },
        },
        Color::Indexed(i) if i < 16 => Colour::Palette(i),
        Color::Indexed(i) => {
            let (r, g, b) = xterm_rgb(i);
            Colour::Rgb(r, g, b)
        }
        Color::Spec(rgb) => Colour::Rgb(rgb.r, rgb.g, rgb.b),
    }
}

/// Colours 16–255 of the xterm palette: a 6×6×6 cube, then 24 greys.
fn xterm_rgb(i: u8) -> (u8, u8, u8) {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    if i >= 232 {
        let v = 8 + 10 * (i - 232);
        return (v, v, v);
    }
    let i = i - 16;
    (LEVELS[(i / 36) as usize], LEVELS[(i / 6 % 6) as usize], LEVELS[(i % 6) as usize])
}

/// One line: its number as a link to itself, then its text in styled runs.
fn line_html(index: u64, cells: &[(char, Style)], complete: bool) -> String {
    use std::fmt::Write;
    let number = index + 1;
    let mut html = String::with_capacity(48 + cells.len() * 2);
    let class = if complete { "line" } else { "line partial" };
    let _ = write!(
        html,
        r##"<span class="{class}" id="L{number}"><a class="ln" href="#L{number}">{number}</a>"##
    );
    let mut rest = cells;
    while let Some(&(_, style)) = rest.first() {
        let run = rest.iter().take_while(|(_, s)| *s == style).count();
        let styled = style != Style::default();
        if styled {
            open_span(&mut html, style);
        }
        for &(c, _) in &rest[..run] {
            escape_into(&mut html, c);
        }
        if styled {
            html.push_str("</span>");
        }
        rest = &rest[run..];
    }
    if complete {
        html.push('\n');
    }
    html.push_str("</span>");
    html
}

fn open_span(html: &mut String, style: Style) {
    use std::fmt::Write;
    let mut classes: Vec<String> = FLAG_CLASSES
        .iter()
        .filter(|(flag, _)| style.flags & flag != 0)
        .map(|(_, c)| c.to_string())
        .collect();
    let mut css = String::new();
    // Reverse swaps the colours; class `r` stands for the log's own two where unset.
    let (fg, bg) = if style.flags & REVERSE != 0 {
        (style.bg, style.fg)
    } else {
        (style.fg, style.bg)
    };
    for (colour, class, property) in [(fg, 'f', "color"), (bg, 'g', "background")] {
        match colour {
            Colour::Default => {}
            Colour::Palette(i) => classes.push(format!("{class}{i}")),
            Colour::Rgb(r, g, b) => {
                let _ = write!(css, "{property}:#{r:02x}{g:02x}{b:02x};");
            }
        }
    }
    html.push_str("<span");
    if !classes.is_empty() {
        let _ = write!(html, r#" class="{}""#, classes.join(" "));
    }
    if !css.is_empty() {
        let _ = write!(html, r#" style="{css}""#);
    }
    html.push('>');
}

fn escape_into(html: &mut String, c: char) {
    match c {
        '&' => html.push_str("&amp;"),
        '<' => html.push_str("&lt;"),
        '>' => html.push_str("&gt;"),
        '"' => html.push_str("&quot;"),
        '\'' => html.push_str("&#39;"),
        c => html.push(c),
    }
}

#[cfg(test)]
#[path = "terminal_tests.rs"]
mod tests;
