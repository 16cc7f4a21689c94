//! A Rust source file as tidy reads it: comments blanked (and, in a second view, string and
//! character literals too) with every byte offset and line kept, the items that exist only in
//! tests, and the span of every function.
//!
//! This is a scanner, not a parser: it knows comments, string, raw-string and character
//! literals, lifetimes, attributes and balanced braces, which is all the checks need. Blanking
//! keeps offsets, so a position found in a view is a line of the file.

use std::ops::Range;

/// One source file, read once.
pub struct Source {
    /// Comments replaced by spaces; string and character literals kept (a crate named inside
    /// `#[serde(with = "time::serde::rfc3339")]` is still a use of that crate).
    pub with_strings: String,
    /// Comments and the contents of string and character literals replaced by spaces: the
    /// code alone, where braces balance and a word is a token.
    pub code: String,
    /// Byte ranges of items compiled only for tests (`#[cfg(test)]`, `#[test]`).
    pub test_ranges: Vec<Range<usize>>,
    /// Modules declared `#[cfg(test)] mod name;`, whose files are test code.
    pub test_modules: Vec<String>,
    line_starts: Vec<usize>,
}

/// A function with a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnSpan {
    pub name: String,
    /// 1-based line of the `fn` keyword.
    pub line: usize,
    /// Lines from the `fn` keyword to the closing brace of the body, both included.
    pub lines: usize,
    /// Inside an item compiled only for tests.
    pub test: bool,
}

impl Source {
    pub fn new(text: &str) -> Source {
        let (with_strings, code) = blank(text);
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let mut source = Source {
            with_strings,
            code,
            test_ranges: Vec::new(),
            test_modules: Vec::new(),
            line_starts,
        };
        source.find_test_items();
        source
    }

    /// The 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// Whether a byte offset is inside an item compiled only for tests.
    pub fn in_test(&self, offset: usize) -> bool {
        self.test_ranges.iter().any(|r| r.contains(&offset))
    }

    /// Offsets in the code view where the path segment `word` is used as a path: `word::…`,
    /// or `std::word` (so `use std::env;` and `env::var(…)` both count, `env!(…)` does not).
    pub fn path_uses(&self, word: &str) -> Vec<usize> {
        word_offsets(&self.code, word)
            .filter(|&at| {
                let after = self.code[at + word.len()..].trim_start();
                let before = self.code[..at].trim_end();
                after.starts_with("::") || before.ends_with("std::")
            })
            .collect()
    }

    /// Every function with a body, with its length.
    pub fn functions(&self) -> Vec<FnSpan> {
        let bytes = self.code.as_bytes();
        let mut spans = Vec::new();
        for at in word_offsets(&self.code, "fn") {
            let rest = &self.code[at + 2..];
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|&c| is_ident(c))
                .collect();
            // `fn(u32) -> u32` (a pointer type) and `fn $name` (a macro) are no functions.
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let Some(open) = body_start(bytes, at + 2) else {
                continue; // a declaration without a body
            };
            let Some(close) = matching_brace(bytes, open) else {
                continue;
            };
            let line = self.line_of(at);
            spans.push(FnSpan {
                name,
                line,
                lines: self.line_of(close) - line + 1,
                test: self.in_test(at),
            });
        }
        spans
    }

    /// Marks each item under a `#[cfg(test)]`-like or `#[test]`-like attribute.
    fn find_test_items(&mut self) {
        let bytes = self.code.as_bytes();
        let mut at = 0;
        while let Some(found) = self.code[at..].find("#[") {
            let start = at + found;
            let Some(end) = matching(bytes, start + 1, b'[', b']') else {
                break;
            };
            at = end + 1;
            if !is_test_attribute(&self.code[start + 2..end]) {
                continue;
            }
            let item = skip_attributes(bytes, end + 1);
            match item_end(bytes, item) {
                ItemEnd::Body(close) => {
                    self.test_ranges.push(start..close + 1);
                    at = close + 1;
                }
                ItemEnd::NoBody(end) => {
                    let decl = self.code[item..end].trim_end_matches(';');
                    if let [.., "mod", name] = decl.split_whitespace().collect::<Vec<_>>()[..] {
                        self.test_modules.push(name.to_owned());
                    }
                    self.test_ranges.push(start..end);
                    at = end;
                }
                ItemEnd::None => break,
            }
        }
    }
}

/// `cfg(test)`, `cfg(all(test, …))` (not `cfg(not(test))`), `test`, `tokio::test`, ….
fn is_test_attribute(inside: &str) -> bool {
    let inside: String = inside.chars().filter(|c| !c.is_whitespace()).collect();
    let (path, args) = inside.split_once('(').unwrap_or((&inside, ""));
    if path == "cfg" {
        return word_offsets(args, "test").next().is_some() && !args.contains("not(test)");
    }
    path == "test" || path.ends_with("::test")
}

enum ItemEnd {
    /// The closing brace of the item's body.
    Body(usize),
    /// Just past an item without a body: `mod tests;`, `use …;`, a field before `,` or `}`.
    NoBody(usize),
    None,
}

fn item_end(bytes: &[u8], from: usize) -> ItemEnd {
    let mut depth = 0usize;
    for (i, &b) in bytes.iter().enumerate().skip(from) {
        match b {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth = depth.saturating_sub(1),
            b';' if depth == 0 => return ItemEnd::NoBody(i + 1),
            b',' | b'}' if depth == 0 => return ItemEnd::NoBody(i),
            b'{' if depth == 0 => {
                return matching_brace(bytes, i).map_or(ItemEnd::None, ItemEnd::Body);
            }
            _ => {}
        }
    }
    ItemEnd::None
}

/// The `{` opening a function body after its signature, or `None` for `fn f();`. Commas do
/// not end a signature (`-> Result<A, B>`, `where T: X, U: Y`); only its body or a `;` does.
fn body_start(bytes: &[u8], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &b) in bytes.iter().enumerate().skip(from) {
        match b {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth = depth.saturating_sub(1),
            b';' if depth == 0 => return None,
            b'{' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// Skips whitespace and further attributes (`#[…]`) before an item.
fn skip_attributes(bytes: &[u8], mut at: usize) -> usize {
    loop {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if bytes.get(at) == Some(&b'#') && bytes.get(at + 1) == Some(&b'[') {
            match matching(bytes, at + 1, b'[', b']') {
                Some(end) => at = end + 1,
                None => return bytes.len(),
            }
        } else {
            return at;
        }
    }
}

fn matching_brace(bytes: &[u8], open: usize) -> Option<usize> {
    matching(bytes, open, b'{', b'}')
}

/// The offset of the bracket closing the one at `open`.
fn matching(bytes: &[u8], open: usize, left: u8, right: u8) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        if b == left {
            depth += 1;
        } else if b == right {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Offsets of `word` as a whole word in `text`.
pub fn word_offsets<'a>(text: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    text.match_indices(word).map(|(i, _)| i).filter(move |&i| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// The two views of `text`: comments blanked, and comments and literal contents blanked.
fn blank(text: &str) -> (String, String) {
    let bytes = text.as_bytes();
    let mut with_strings = bytes.to_vec();
    let mut code = bytes.to_vec();
    let mut i = 0;
    while i < bytes.len() {
        let literal = match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                let end = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
                spaces(&mut with_strings, i..end);
                spaces(&mut code, i..end);
                i = end;
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = block_comment_end(bytes, i);
                spaces(&mut with_strings, i..end);
                spaces(&mut code, i..end);
                i = end;
                continue;
            }
            b'"' => Some(string_end(bytes, i)),
            b'r' if starts_token(bytes, i) || prefixed_raw(bytes, i) => raw_string_end(bytes, i),
            b'\'' => char_literal_end(text, i),
            _ => None,
        };
        match literal {
            Some((contents, end)) => {
                spaces(&mut code, contents);
                i = end;
            }
            None => i += 1,
        }
    }
    let utf8 = |v: Vec<u8>| String::from_utf8(v).expect("only whole characters are blanked");
    (utf8(with_strings), utf8(code))
}

/// Replaces the bytes in `range` by spaces, keeping line breaks.
fn spaces(bytes: &mut [u8], range: Range<usize>) {
    for b in &mut bytes[range] {
        if *b != b'\n' {
            *b = b' ';
        }
    }
}

fn starts_token(bytes: &[u8], i: usize) -> bool {
    i == 0 || !is_ident(char::from(bytes[i - 1]))
}

/// `br"…"` or `cr"…"`: the `r` of a prefixed raw string.
fn prefixed_raw(bytes: &[u8], i: usize) -> bool {
    i >= 1 && matches!(bytes[i - 1], b'b' | b'c') && starts_token(bytes, i - 1)
}

fn block_comment_end(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// `(contents, end)` of the string literal whose opening quote is at `open`.
fn string_end(bytes: &[u8], open: usize) -> (Range<usize>, usize) {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return (open + 1..i, i + 1),
            _ => i += 1,
        }
    }
    (open + 1..bytes.len(), bytes.len())
}

/// A raw string starting at the `r` at `i` (`r"…"`, `r#"…"#`), or `None` for an identifier.
fn raw_string_end(bytes: &[u8], i: usize) -> Option<(Range<usize>, usize)> {
    let hashes = bytes[i + 1..].iter().take_while(|&&b| b == b'#').count();
    let quote = i + 1 + hashes;
    if bytes.get(quote) != Some(&b'"') {
        return None;
    }
    let mut close = Vec::with_capacity(hashes + 1);
    close.push(b'"');
    close.extend(std::iter::repeat_n(b'#', hashes));
    let end = bytes[quote + 1..]
        .windows(close.len())
        .position(|w| w == close.as_slice())
        .map_or(bytes.len(), |p| quote + 1 + p);
    Some((quote + 1..end, (end + close.len()).min(bytes.len())))
}

/// A character literal at the quote `open` (`'{'`, `'\n'`, `'\u{7b}'`), or `None` for a
/// lifetime or label (`'a`, `'static`).
fn char_literal_end(text: &str, open: usize) -> Option<(Range<usize>, usize)> {
    let rest = &text[open + 1..];
    if rest.starts_with('\\') {
        let close = rest[2.min(rest.len())..].find('\'')? + 2;
        return Some((open + 1..open + 1 + close, open + 2 + close));
    }
    let c = rest.chars().next()?;
    rest[c.len_utf8()..]
        .starts_with('\'')
        .then(|| (open + 1..open + 1 + c.len_utf8(), open + 2 + c.len_utf8()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_literals_are_blanked_in_place() {
        let text =
            "let a = \"{ // }\"; // a { comment\nlet b = '{'; /* { /* } */ */ let c = r#\"}\"#;";
        let s = Source::new(text);
        assert_eq!(s.code.len(), text.len());
        assert_eq!(s.code.lines().count(), 2);
        assert!(!s.code.contains('{') && !s.code.contains('}'), "{}", s.code);
        assert!(s.with_strings.contains("\"{ // }\""));
        assert!(!s.with_strings.contains("comment"));
    }

    #[test]
    fn lifetimes_are_not_character_literals() {
        let s = Source::new("fn f<'a>(x: &'a str) -> &'a str {\n    x\n}\n");
        assert_eq!(
            s.functions(),
            vec![FnSpan {
                name: "f".into(),
                line: 1,
                lines: 3,
                test: false
            }]
        );
    }

    #[test]
    fn functions_are_measured_from_fn_to_their_closing_brace() {
        let text = "/// doc\npub fn outer(f: fn(u8) -> u8) -> u8 {\n    fn inner() {}\n    let s = \"}\";\n    f(1)\n}\ntrait T { fn decl(&self); }\n";
        let spans = Source::new(text).functions();
        let names: Vec<_> = spans
            .iter()
            .map(|f| (f.name.as_str(), f.line, f.lines))
            .collect();
        assert_eq!(names, vec![("outer", 2, 5), ("inner", 3, 1)]);
    }

    #[test]
    fn a_comma_in_the_signature_does_not_hide_the_function() {
        // `Result<A, B>` and `where` clauses have commas outside any parenthesis; the
        // function was once skipped for it, and never measured.
        let text = "pub(crate) async fn run(
    a: u8,
) -> Result<u8, String> {
    Ok(a)
}
fn w<T, U>(t: T) -> T
where
    T: Clone,
    U: Copy,
{
    t
}
";
        let spans = Source::new(text).functions();
        let names: Vec<_> = spans
            .iter()
            .map(|f| (f.name.as_str(), f.line, f.lines))
            .collect();
        assert_eq!(names, vec![("run", 1, 5), ("w", 6, 7)]);
    }

    #[test]
    fn test_items_and_test_module_files_are_found() {
        let text = "fn real() {}\n#[cfg(test)]\nmod tests {\n    fn helper() {}\n}\n#[cfg(test)]\nmod more;\n#[tokio::test]\nasync fn t() {}\n#[cfg(not(test))]\nfn shipped() {}\n";
        let s = Source::new(text);
        let tests: Vec<_> = s
            .functions()
            .into_iter()
            .map(|f| (f.name, f.test))
            .collect();
        assert_eq!(
            tests,
            vec![
                ("real".into(), false),
                ("helper".into(), true),
                ("t".into(), true),
                ("shipped".into(), false)
            ]
        );
        assert_eq!(s.test_modules, vec!["more".to_owned()]);
    }

    #[test]
    fn env_paths_are_found_but_not_the_env_macro() {
        let s = Source::new(
            "use std::env;\nlet a = env::var(\"X\");\nlet b = env!(\"CARGO\");\n// std::env in a comment\nlet c = \"std::env\";\n",
        );
        let lines: Vec<_> = s
            .path_uses("env")
            .into_iter()
            .map(|at| s.line_of(at))
            .collect();
        assert_eq!(lines, vec![1, 2]);
    }
}
