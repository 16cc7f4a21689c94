//! HogQL tokenizer: identifiers (with `$`), quoted identifiers, strings with backslash
//! escapes, numbers, `{placeholders}`, operators, and `--` / `/* */` comments.

use super::HogQlError;

/// A token kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A bare identifier or keyword (keywords are matched case-insensitively by the parser).
    Ident(String),
    /// A backtick- or double-quote-quoted identifier (never a keyword).
    Quoted(String),
    Str(String),
    Int(i64),
    Float(f64),
    Placeholder(String),
    Sym(&'static str),
    Eof,
}

/// A token and where it starts.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

impl Tok {
    /// How the token reads in an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Quoted(s) => format!("`{s}`"),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Int(i) => format!("'{i}'"),
            Tok::Float(f) => format!("'{f}'"),
            Tok::Placeholder(p) => format!("'{{{p}}}'"),
            Tok::Sym(s) => format!("'{s}'"),
            Tok::Eof => "end of input".to_owned(),
        }
    }
}

const SYMBOLS: &[&str] = &[
    "==", "!=", "<>", "<=", ">=", "(", ")", ",", ".", "*", "=", "<", ">", "+", "-", "/", "%", "[",
    "]", ";",
];

/// Splits `src` into tokens, ending with [`Tok::Eof`].
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, HogQlError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let mut line_start = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i - line_start + 1;
        let at = |tok| Token { tok, line, col };
        if c == '\n' {
            i += 1;
            line += 1;
            line_start = i;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                if chars[i] == '\n' {
                    line += 1;
                    line_start = i + 1;
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err(syntax(line, col, "unterminated comment"));
            }
            i += 2;
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            out.push(at(Tok::Ident(chars[start..i].iter().collect())));
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let (tok, next) =
                number(&chars, i).ok_or_else(|| syntax(line, col, "invalid number"))?;
            out.push(at(tok));
            i = next;
            continue;
        }
        if c == '\'' {
            let (s, next) =
                quoted(&chars, i, '\'').ok_or_else(|| syntax(line, col, "unterminated string"))?;
            out.push(at(Tok::Str(s)));
            i = next;
            continue;
        }
        if c == '`' || c == '"' {
            let (s, next) = quoted(&chars, i, c)
                .ok_or_else(|| syntax(line, col, "unterminated quoted identifier"))?;
            out.push(at(Tok::Quoted(s)));
            i = next;
            continue;
        }
        if c == '{' {
            let close = chars[i..].iter().position(|&ch| ch == '}').map(|p| p + i);
            let Some(close) = close else {
                return Err(syntax(line, col, "unterminated placeholder"));
            };
            let name: String = chars[i + 1..close]
                .iter()
                .collect::<String>()
                .trim()
                .to_owned();
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|ch| ch.is_alphanumeric() || ch == '_' || ch == '$' || ch == '.');
            if !valid {
                return Err(syntax(line, col, "invalid placeholder"));
            }
            out.push(at(Tok::Placeholder(name)));
            i = close + 1;
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        match SYMBOLS.iter().find(|s| rest.starts_with(**s)) {
            Some(sym) => {
                out.push(at(Tok::Sym(sym)));
                i += sym.chars().count();
            }
            None => return Err(syntax(line, col, &format!("unexpected character '{c}'"))),
        }
    }
    let col = chars.len() - line_start + 1;
    out.push(Token {
        tok: Tok::Eof,
        line,
        col,
    });
    Ok(out)
}

fn syntax(line: usize, col: usize, msg: &str) -> HogQlError {
    HogQlError::new(format!("Syntax error at line {line}, column {col}: {msg}"))
}

fn number(chars: &[char], start: usize) -> Option<(Tok, usize)> {
    let mut i = start;
    let mut is_float = false;
    while i < chars.len() && chars[i].is_ascii_digit() {
        i += 1;
    }
    if chars.get(i) == Some(&'.')
        && chars
            .get(i + 1)
            .is_none_or(|c| c.is_ascii_digit() || !c.is_alphabetic())
    {
        is_float = true;
        i += 1;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        if matches!(chars.get(j), Some('+' | '-')) {
            j += 1;
        }
        if chars.get(j).is_some_and(char::is_ascii_digit) {
            is_float = true;
            i = j;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    if chars.get(i).is_some_and(|c| c.is_alphabetic() || *c == '_') {
        return None;
    }
    let text: String = chars[start..i].iter().collect();
    if is_float {
        return text.parse().ok().map(|f| (Tok::Float(f), i));
    }
    match text.parse::<i64>() {
        Ok(n) => Some((Tok::Int(n), i)),
        Err(_) => text.parse().ok().map(|f| (Tok::Float(f), i)),
    }
}

/// Reads a quoted string or identifier starting at `start` (the opening quote). Backslash
/// escapes and a doubled quote are both accepted.
fn quoted(chars: &[char], start: usize, quote: char) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            let next = *chars.get(i + 1)?;
            out.push(match next {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '0' => '\0',
                'b' => '\u{8}',
                'f' => '\u{c}',
                other => other,
            });
            i += 2;
            continue;
        }
        if c == quote {
            if chars.get(i + 1) == Some(&quote) {
                out.push(quote);
                i += 2;
                continue;
            }
            return Some((out, i + 1));
        }
        out.push(c);
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        tokenize(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn tokenizes_the_keyset_query() {
        let t = toks(
            "SELECT `uuid`, properties.$browser FROM events -- c\nWHERE (timestamp, uuid) > ({ts}, 'a\\'b') LIMIT 10",
        );
        assert!(t.contains(&Tok::Quoted("uuid".into())));
        assert!(t.contains(&Tok::Ident("$browser".into())));
        assert!(t.contains(&Tok::Placeholder("ts".into())));
        assert!(t.contains(&Tok::Str("a'b".into())));
        assert!(t.contains(&Tok::Int(10)));
        assert!(!t.contains(&Tok::Ident("c".into())));
        assert_eq!(
            toks("1.5e3 .5 7"),
            vec![Tok::Float(1500.0), Tok::Float(0.5), Tok::Int(7), Tok::Eof]
        );
    }

    #[test]
    fn reports_position_of_bad_input() {
        let err = tokenize("SELECT 'open").unwrap_err();
        assert!(err.message.contains("line 1, column 8"), "{}", err.message);
        assert!(tokenize("SELECT #").is_err());
    }
}
