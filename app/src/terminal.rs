//! Job logs as a terminal would show them, in HTML. A log is text with ANSI escape
//! sequences; alacritty's `vte` parser (the state machine of Paul Williams' DEC parser,
//! which every escape sequence passes through) splits them out, and this module keeps
//! what a terminal line would hold: SGR's 16, 256 and truecolour foreground and
//! background (`;` and `:` forms), bold, dim, italic, underline, strike, reverse and
//! hidden; `\r` moves back to the start of the line so progress lines overwrite
//! themselves; backspace; `ESC[K` clears. Other sequences (cursor movement beyond the
//! line, titles) are dropped. vte's own `ansi` layer would interpret SGR too, but it
//! brings a whole terminal's interface (and `log`, `bitflags`, `cursor-icon`) for the
//! few sequences a log uses.
//!
//! It works incrementally: [`LogRenderer::feed`] takes the next piece of a log and gives
//! the HTML of the lines it completed plus the line still being written, so the job page
//! appends output without touching what it already shows. The server renders a log's
//! first part the same way and hands the browser the small [`LogState`] at its end, so the
//! browser continues where the server stopped without the log's text.
//!
//! Every character of the log becomes escaped text: nothing in a log is markup.

use serde::{Deserialize, Serialize};
use vte::{Params, Parser, Perform};

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
    /// The 0-based index of the line being written (shown as 1-based): the number of
    /// newlines before it, so that any part of a log is numbered as the whole is.
    line: u64,
    /// The line being written continues one broken on the screen (too long, or a
    /// vertical tab or form feed): it shows no number of its own.
    #[serde(default)]
    continued: bool,
    pending: String,
}

/// HTML produced by one [`LogRenderer::feed`].
#[derive(Debug, Default, PartialEq)]
pub struct LogHtml {
    /// Lines completed by this piece, each a `<span class="line" id="L…">`.
    pub lines: Vec<String>,
    /// The line still being written (`class="line partial"`), or empty. It replaces the
    /// partial line of the previous feed.
    pub partial: String,
}

/// Turns a log into HTML lines, one piece at a time.
#[derive(Default)]
pub struct LogRenderer {
    state: LogState,
    parser: Parser,
    out: Vec<String>,
}

impl LogState {
    /// The state at the start of line `index` (0-based), with the default style: where
    /// a log shown from a line's start begins.
    pub fn at_line(index: u64) -> LogState {
        LogState {
            line: index,
            ..LogState::default()
        }
    }
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
        self.parser.advance(&mut screen, &input.as_bytes()[..cut]);
        self.state.pending = input[cut..].to_string();
        LogHtml {
            lines: std::mem::take(&mut self.out),
            partial: if self.state.cells.is_empty() {
                String::new()
            } else {
                line_html(self.state.line, self.state.continued, &self.state.cells, false)
            },
        }
    }
}

/// Lines are grouped in blocks of this many (`<div class="chunk">`), which the page
/// styles with `content-visibility: auto`: the browser lays out only the blocks in view,
/// so a 40,000-line log scrolls and grows as smoothly as a short one.
pub const CHUNK_LINES: usize = 256;

/// The whole of `text` as HTML, in chunks, and the state at its end.
pub fn render(text: &str) -> (String, LogState) {
    render_from(0, text)
}

/// `text`, the part of a log that follows its first `lines_before` lines, as HTML in
/// chunks (numbered from line `lines_before + 1`), and the state at its end.
pub fn render_from(lines_before: u64, text: &str) -> (String, LogState) {
    let mut renderer = LogRenderer::resume(LogState::at_line(lines_before));
    let html = renderer.feed(text);
    let mut out = String::with_capacity(text.len() * 2);
    let mut lines = html
        .lines
        .iter()
        .chain((!html.partial.is_empty()).then_some(&html.partial))
        .peekable();
    while lines.peek().is_some() {
        out.push_str(CHUNK_OPEN);
        lines.by_ref().take(CHUNK_LINES).for_each(|l| out.push_str(l));
        out.push_str("</div>");
    }
    (out, renderer.state)
}

/// How a chunk of lines opens.
pub const CHUNK_OPEN: &str = r#"<div class="chunk">"#;

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

/// What vte calls: one line of cells, completed lines written out as HTML.
struct Screen<'a> {
    state: &'a mut LogState,
    out: &'a mut Vec<String>,
}

impl Screen<'_> {
    /// A newline: the next line gets the next number.
    fn end_line(&mut self) {
        self.break_line();
        self.state.line += 1;
        self.state.continued = false;
    }

    /// The line goes on below, under the same number.
    fn break_line(&mut self) {
        self.out
            .push(line_html(self.state.line, self.state.continued, &self.state.cells, true));
        self.state.cells.clear();
        self.state.column = 0;
        self.state.continued = true;
    }

    /// `ESC[nK`: 0 clears from the cursor on, 1 up to it, 2 the whole line.
    fn clear_line(&mut self, mode: u16) {
        let column = self.state.column.min(self.state.cells.len());
        match mode {
            0 => self.state.cells.truncate(column),
            1 => self.state.cells[..column].fill((' ', Style::default())),
            2 => {
                self.state.cells.clear();
                self.state.column = 0;
            }
            _ => {}
        }
    }

    /// `ESC[…m`, Select Graphic Rendition.
    fn select_graphic_rendition(&mut self, params: &Params) {
        let style = &mut self.state.style;
        if params.is_empty() {
            *style = Style::default();
        }
        let mut params = params.iter();
        while let Some(param) = params.next() {
            match param[0] {
                0 => *style = Style::default(),
                1 => style.flags |= BOLD,
                2 => style.flags |= DIM,
                3 => style.flags |= ITALIC,
                // `4:0` is "no underline"; every other form underlines.
                4 if param.get(1) == Some(&0) => style.flags &= !UNDERLINE,
                4 | 21 => style.flags |= UNDERLINE,
                7 => style.flags |= REVERSE,
                8 => style.flags |= HIDDEN,
                9 => style.flags |= STRIKE,
                22 => style.flags &= !(BOLD | DIM),
                23 => style.flags &= !ITALIC,
                24 => style.flags &= !UNDERLINE,
                27 => style.flags &= !REVERSE,
                28 => style.flags &= !HIDDEN,
                29 => style.flags &= !STRIKE,
                n @ 30..=37 => style.fg = Colour::Palette((n - 30) as u8),
                n @ 40..=47 => style.bg = Colour::Palette((n - 40) as u8),
                n @ 90..=97 => style.fg = Colour::Palette((n - 90 + 8) as u8),
                n @ 100..=107 => style.bg = Colour::Palette((n - 100 + 8) as u8),
                39 => style.fg = Colour::Default,
                49 => style.bg = Colour::Default,
                38 => style.fg = extended_colour(param, &mut params).unwrap_or(style.fg),
                48 => style.bg = extended_colour(param, &mut params).unwrap_or(style.bg),
                // The underline colour is not shown, but its arguments must be skipped.
                58 => {
                    extended_colour(param, &mut params);
                }
                _ => {}
            }
        }
    }
}

/// The colour of `38`/`48`: `5;n` (256 colours) or `2;r;g;b`, as following parameters
/// or as `:` sub-parameters of `param` (`38:2::r:g:b` may name a colour space first).
fn extended_colour<'a>(param: &[u16], rest: &mut impl Iterator<Item = &'a [u16]>) -> Option<Colour> {
    let byte = |v: u16| v.min(255) as u8;
    if param.len() > 1 {
        return match param[1] {
            5 => param.get(2).map(|&i| indexed(byte(i))),
            2 => {
                let rgb = if param.len() >= 6 { &param[3..6] } else { param.get(2..5)? };
                Some(Colour::Rgb(byte(rgb[0]), byte(rgb[1]), byte(rgb[2])))
            }
            _ => None,
        };
    }
    match rest.next()?[0] {
        5 => Some(indexed(byte(rest.next()?[0]))),
        2 => {
            let (r, g, b) = (rest.next()?[0], rest.next()?[0], rest.next()?[0]);
            Some(Colour::Rgb(byte(r), byte(g), byte(b)))
        }
        _ => None,
    }
}

fn indexed(i: u8) -> Colour {
    if i < 16 {
        Colour::Palette(i)
    } else {
        let (r, g, b) = xterm_rgb(i);
        Colour::Rgb(r, g, b)
    }
}

impl Perform for Screen<'_> {
    fn print(&mut self, c: char) {
        if self.state.column >= MAX_LINE_CHARS {
            self.break_line();
        }
        let cell = (c, self.state.style);
        match self.state.cells.get_mut(self.state.column) {
            Some(existing) => *existing = cell,
            None => self.state.cells.push(cell),
        }
        self.state.column += 1;
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' => self.end_line(),
            0x0b | 0x0c => self.break_line(),
            b'\r' => self.state.column = 0,
            0x08 => self.state.column = self.state.column.saturating_sub(1),
            b'\t' => self.print('\t'),
            _ => {}
        }
    }

    fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], ignore: bool, action: char) {
        if ignore || !intermediates.is_empty() {
            return;
        }
        match action {
            'm' => self.select_graphic_rendition(params),
            'K' => self.clear_line(params.iter().next().map_or(0, |p| p[0])),
            _ => {}
        }
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
fn line_html(index: u64, continued: bool, cells: &[(char, Style)], complete: bool) -> String {
    use std::fmt::Write;
    let number = index + 1;
    let mut html = String::with_capacity(48 + cells.len() * 2);
    let class = if complete { "line" } else { "line partial" };
    let _ = if continued {
        write!(html, r#"<span class="{class} cont"><span class="ln"></span>"#)
    } else {
        write!(
            html,
            r##"<span class="{class}" id="L{number}"><a class="ln" href="#L{number}">{number}</a>"##
        )
    };
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
