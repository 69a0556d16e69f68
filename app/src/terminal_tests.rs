use super::*;

fn text_of(html: &str) -> String {
    // The visible text: tags dropped, entities decoded, line numbers left out.
    let mut out = String::new();
    let mut rest = html;
    while let Some(start) = rest.find("<a class=\"ln\"") {
        let (before, after) = rest.split_at(start);
        out.push_str(before);
        rest = &after[after.find("</a>").unwrap() + 4..];
    }
    out.push_str(rest);
    let mut text = String::new();
    let mut in_tag = false;
    for c in out.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[test]
fn lines_are_numbered_links_and_markup_stays_text() {
    let (html, state) = render("one <b>&\"'\ntwo");
    assert!(
        html.starts_with(r##"<div class="chunk"><span class="line" id="L1"><a class="ln" href="#L1">1</a>one &lt;b&gt;&amp;&quot;&#39;"##),
        "{html}"
    );
    assert!(
        html.contains(r##"<span class="line partial" id="L2"><a class="ln" href="#L2">2</a>two</span>"##),
        "{html}"
    );
    assert!(!html.contains("<b>"));
    assert_eq!(text_of(&html), "one <b>&\"'\ntwo");
    assert_eq!(state.line, 1);
}

#[test]
fn sixteen_256_and_truecolour_foreground_and_background() {
    let (html, _) = render("\x1b[31mred\x1b[0m \x1b[92;44mbright on blue\x1b[0m \x1b[38;5;208morange\x1b[48;2;1;2;3m bg\x1b[0m\n");
    assert!(html.contains(r#"<span class="f1">red</span>"#), "{html}");
    assert!(html.contains(r#"<span class="f10 g4">bright on blue</span>"#), "{html}");
    assert!(html.contains(r#"<span style="color:#ff8700;">orange</span>"#), "{html}");
    assert!(
        html.contains(r#"<span style="color:#ff8700;background:#010203;"> bg</span>"#),
        "{html}"
    );
}

#[test]
fn bold_italic_underline_strike_dim_reverse() {
    let (html, _) = render("\x1b[1;3;4mx\x1b[22;23;24;2;9my\x1b[0;7;31mz\x1b[0m\n");
    assert!(html.contains(r#"<span class="b i u">x</span>"#), "{html}");
    assert!(html.contains(r#"<span class="d s">y</span>"#), "{html}");
    // Reverse: red becomes the background; the text takes the log's own background.
    assert!(html.contains(r#"<span class="r g1">z</span>"#), "{html}");
}

#[test]
fn carriage_return_overwrites_the_line_like_a_progress_bar() {
    let (html, _) = render("10%\r20%\r100% done\nnext\r\n\x1b[32mok\x1b[0m\rgo\n");
    assert_eq!(text_of(&html), "100% done\nnext\ngo\n");
    let (html, _) = render("downloading 50%\r\x1b[Kdone\n");
    assert_eq!(text_of(&html), "done\n");
    let (html, _) = render("abcdef\rXY\n");
    assert_eq!(text_of(&html), "XYcdef\n");
}

#[test]
fn pieces_give_the_same_lines_as_the_whole() {
    let log = "a\x1b[1;31mb\nc\x1b[38;2;10;20;30md\ne\r\x1b[Kf\ng\n";
    let (whole, _) = render(log);
    for cut in 0..=log.len() {
        let mut r = LogRenderer::default();
        let first = r.feed(&log[..cut]);
        // Resuming from the state, as the browser does after the server's render.
        let mut resumed = LogRenderer::resume(r.state().clone());
        let second = resumed.feed(&log[cut..]);
        let joined = [first.lines, second.lines, vec![second.partial]].concat().concat();
        assert_eq!(format!("{CHUNK_OPEN}{joined}</div>"), whole, "cut at {cut}");
    }
}

#[test]
fn an_escape_cut_in_half_is_completed_by_the_next_piece() {
    let mut r = LogRenderer::default();
    let a = r.feed("x\x1b[3");
    assert_eq!(text_of(&a.partial), "x");
    let b = r.feed("2mgreen\n");
    assert!(b.lines[0].contains(r#"<span class="f2">green</span>"#), "{b:?}");
}

#[test]
fn a_line_without_end_is_broken_and_a_partial_line_replaces_the_last() {
    let long = "y".repeat(MAX_LINE_CHARS + 10);
    let (html, state) = render(&format!("{long}\nnext\n"));
    // Broken in two under one number: the next line is still line 2.
    assert_eq!(html.matches("class=\"line\" id=\"L1\"").count(), 1, "{html}");
    assert_eq!(
        html.matches("class=\"line cont\"><span class=\"ln\"></span>yyyyyyyyyy\n").count(),
        1,
        "{html}"
    );
    assert!(html.contains(r##"id="L2"><a class="ln" href="#L2">2</a>next"##), "{html}");
    assert_eq!(state.line, 2);
    let mut r = LogRenderer::default();
    assert_eq!(text_of(&r.feed("50%").partial), "50%");
    let next = r.feed("\r75%");
    assert!(next.lines.is_empty());
    assert_eq!(text_of(&next.partial), "75%");
}

#[test]
fn colon_forms_empty_resets_and_skipped_underline_colours() {
    let (html, _) = render("\x1b[38:2::1:2:3mtrue\x1b[m \x1b[38:5:196mred\x1b[0m \x1b[58;5;3;4mline\x1b[4:0mplain\x1b[0m\n");
    assert!(html.contains(r#"<span style="color:#010203;">true</span>"#), "{html}");
    assert!(html.contains(r#"<span style="color:#ff0000;">red</span>"#), "{html}");
    // 58;5;3 is an underline colour (not shown); its 3 is not read as italic.
    assert!(html.contains(r#"<span class="u">line</span>plain"#), "{html}");
}

#[test]
fn backspace_and_tabs() {
    let (html, _) = render("ab\x08X\tc\n");
    assert_eq!(text_of(&html), "aX\tc\n");
}

#[test]
fn lines_come_in_chunks() {
    let log: String = (0..CHUNK_LINES * 2 + 3).map(|i| format!("{i}\n")).collect();
    let (html, _) = render(&log);
    assert_eq!(html.matches(CHUNK_OPEN).count(), 3);
    assert_eq!(html.matches("</div>").count(), 3);
    assert!(html.contains(&format!(
        "</span></div>{CHUNK_OPEN}<span class=\"line\" id=\"L{}\">",
        CHUNK_LINES + 1
    )));
    assert_eq!(render("").0, "");
}

#[test]
fn a_log_shown_from_a_later_line_keeps_its_line_numbers() {
    let (html, state) = render_from(41, "forty-two\nforty-three");
    assert!(html.contains(r##"id="L42"><a class="ln" href="#L42">42</a>forty-two"##), "{html}");
    assert!(html.contains(r#"<span class="line partial" id="L43">"#), "{html}");
    assert_eq!(state.line, 42);
    // The same lines as the whole log's.
    let whole: String = (1..=41).map(|n| format!("{n}\n")).collect::<String>() + "forty-two\n";
    let (all, _) = render(&whole);
    let line_42 = |h: &str| h[h.find(r#"id="L42""#).unwrap()..].split('\n').next().unwrap().to_string();
    assert_eq!(line_42(&all), line_42(&html));
}
