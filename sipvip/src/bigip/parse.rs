//! The tmsh configuration grammar (bigip.conf): statements of words, each optionally followed
//! by a `{ ... }` block; quoted strings with escapes and newlines; `#` comments; iRule bodies
//! kept as raw text. Errors carry the line and column; no input makes it panic.

/// One statement: its words and, if it has one, its block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub words: Vec<String>,
    pub body: Option<Body>,
    pub line: usize,
}

/// Keys whose next word is their value (so that value is not mistaken for a flag).
const VALUE_KEYS: &[&str] = &[
    "translate-address",
    "translate-port",
    "source-port",
    "state",
    "mode",
    "description",
    "ip-protocol",
    "destination",
    "pool",
    "mask",
    "source",
    "type",
    "address",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Nodes(Vec<Node>),
    /// The text of an iRule (`ltm rule NAME { ... }`), braces balanced, without the outer pair.
    Raw(String),
}

impl Node {
    /// The nested statements (empty for none or a raw body).
    pub fn children(&self) -> &[Node] {
        match &self.body {
            Some(Body::Nodes(n)) => n,
            _ => &[],
        }
    }

    /// The first child statement whose first word is `key`.
    pub fn child(&self, key: &str) -> Option<&Node> {
        self.children()
            .iter()
            .find(|n| n.words.first().map(String::as_str) == Some(key))
    }

    /// The value of a `key value` child, in the multi-line form (one child per line) or the
    /// one-line form (`{ address 1.2.3.4 monitor /Common/icmp }`, one child of many words).
    pub fn value(&self, key: &str) -> Option<&str> {
        if let Some(v) = self.child(key).and_then(|n| n.words.get(1)) {
            return Some(v);
        }
        self.children().iter().find_map(|n| {
            let i = n.words.iter().position(|w| w == key)?;
            n.words.get(i + 1).map(String::as_str)
        })
    }

    /// Whether a bare `key` is present (`disabled`, `ip-forward`, ...), in either form.
    pub fn flag(&self, key: &str) -> bool {
        self.children().iter().any(|n| {
            n.words.iter().enumerate().any(|(i, w)| {
                w == key
                    && (i == 0 || !VALUE_KEYS.contains(&n.words[i - 1].as_str()))
                    && (n.words.len() == 1 || i > 0 || n.body.is_none())
            })
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {col}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

struct P {
    s: Vec<char>,
    i: usize,
    line: usize,
    col: usize,
}

impl P {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.s.get(self.i).copied()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn err(&self, line: usize, col: usize, msg: impl Into<String>) -> ParseError {
        ParseError {
            line,
            col,
            msg: msg.into(),
        }
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
            self.bump();
        }
        // A backslash-newline continues a statement.
        while self.peek() == Some('\\') && self.s.get(self.i + 1) == Some(&'\n') {
            self.bump();
            self.bump();
            while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
                self.bump();
            }
        }
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' {
                break;
            }
            self.bump();
        }
    }

    /// Statements until the end of input (`top`) or the closing brace of an open block.
    fn block(
        &mut self,
        top: bool,
        open: (usize, usize),
        depth: usize,
    ) -> Result<Vec<Node>, ParseError> {
        if depth > 64 {
            return Err(self.err(open.0, open.1, "blocks nested more than 64 deep"));
        }
        let mut nodes = Vec::new();
        loop {
            self.skip_blanks();
            match self.peek() {
                None if top => return Ok(nodes),
                None => return Err(self.err(open.0, open.1, "this `{` is never closed")),
                Some('\n') | Some(';') => {
                    self.bump();
                }
                Some('#') => self.skip_comment(),
                Some('}') if top => {
                    return Err(self.err(self.line, self.col, "`}` without a matching `{`"))
                }
                Some('}') => {
                    self.bump();
                    return Ok(nodes);
                }
                Some(_) => nodes.push(self.statement(depth)?),
            }
        }
    }

    fn statement(&mut self, depth: usize) -> Result<Node, ParseError> {
        let line = self.line;
        let mut words: Vec<String> = Vec::new();
        loop {
            self.skip_blanks();
            match self.peek() {
                None | Some('\n') | Some(';') | Some('}') => {
                    return Ok(Node {
                        words,
                        body: None,
                        line,
                    })
                }
                Some('{') => {
                    let open = (self.line, self.col);
                    self.bump();
                    let raw = matches!(
                        words.first().map(String::as_str),
                        Some("ltm") | Some("rule")
                    ) && words.iter().any(|w| w == "rule");
                    let body = if raw {
                        Body::Raw(self.raw(open)?)
                    } else {
                        Body::Nodes(self.block(false, open, depth + 1)?)
                    };
                    return Ok(Node {
                        words,
                        body: Some(body),
                        line,
                    });
                }
                Some('"') => words.push(self.quoted()?),
                Some(_) => words.push(self.bare()),
            }
        }
    }

    fn bare(&mut self) -> String {
        let mut w = String::new();
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == '{' || c == '}' || c == '"' || c == ';' {
                break;
            }
            w.push(c);
            self.bump();
        }
        w
    }

    fn quoted(&mut self) -> Result<String, ParseError> {
        let (l, c) = (self.line, self.col);
        self.bump();
        let mut w = String::new();
        loop {
            match self.bump() {
                None => return Err(self.err(l, c, "this quoted string is never closed")),
                Some('"') => return Ok(w),
                Some('\\') => match self.bump() {
                    None => return Err(self.err(l, c, "this quoted string is never closed")),
                    Some('n') => w.push('\n'),
                    Some('r') => w.push('\r'),
                    Some('t') => w.push('\t'),
                    Some(x) => w.push(x),
                },
                Some(x) => w.push(x),
            }
        }
    }

    /// Raw text up to the brace that closes `open`, counting nested braces outside quotes.
    fn raw(&mut self, open: (usize, usize)) -> Result<String, ParseError> {
        let mut depth = 1usize;
        let mut out = String::new();
        let mut in_quote = false;
        loop {
            let Some(c) = self.bump() else {
                return Err(self.err(open.0, open.1, "this iRule's `{` is never closed"));
            };
            match c {
                '\\' => {
                    out.push(c);
                    if let Some(n) = self.bump() {
                        out.push(n);
                    }
                    continue;
                }
                '"' => in_quote = !in_quote,
                '{' if !in_quote => depth += 1,
                '}' if !in_quote => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(out);
                    }
                }
                _ => {}
            }
            out.push(c);
        }
    }
}

/// Parses a whole bigip.conf.
pub fn parse(text: &str) -> Result<Vec<Node>, ParseError> {
    let mut p = P {
        s: text.chars().collect(),
        i: 0,
        line: 1,
        col: 1,
    };
    p.block(true, (1, 1), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_blocks_quotes_comments_and_raw_rules() {
        let text = "# a comment\nltm node /Common/n1 {\n    address 198.18.2.11%2\n    description \"a \\\"quoted\\\"\nline\"\n}\n\
                    ltm pool /Common/p { members { /Common/n1:5060 { address 198.18.2.11 } } monitor min 1 of { /Common/a /Common/b } }\n\
                    ltm rule /Common/r {\nwhen CLIENT_ACCEPTED { if { 1 } { snatpool x } }\n}\n";
        let nodes = parse(text).unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].words, ["ltm", "node", "/Common/n1"]);
        assert_eq!(nodes[0].value("address"), Some("198.18.2.11%2"));
        assert_eq!(nodes[0].value("description"), Some("a \"quoted\"\nline"));
        let pool = &nodes[1];
        let m = &pool.child("members").unwrap().children()[0];
        assert_eq!(m.words, ["/Common/n1:5060"]);
        assert_eq!(m.value("address"), Some("198.18.2.11"));
        let mon = pool.child("monitor").unwrap();
        assert_eq!(mon.words, ["monitor", "min", "1", "of"]);
        assert_eq!(mon.children()[0].words, ["/Common/a", "/Common/b"]);
        match &nodes[2].body {
            Some(Body::Raw(r)) => {
                assert!(r.contains("when CLIENT_ACCEPTED { if { 1 } { snatpool x } }"))
            }
            b => panic!("{b:?}"),
        }
    }

    #[test]
    fn errors_have_line_and_column() {
        assert_eq!(
            parse("ltm pool p {\n  members {\n")
                .unwrap_err()
                .to_string(),
            "line 2, column 11: this `{` is never closed"
        );
        assert_eq!(
            parse("ltm node n }\n").unwrap_err().to_string(),
            "line 1, column 12: `}` without a matching `{`"
        );
        assert_eq!(
            parse("x \"abc\n").unwrap_err().to_string(),
            "line 1, column 3: this quoted string is never closed"
        );
        assert_eq!(
            parse("ltm rule r {\n when X {\n").unwrap_err().to_string(),
            "line 1, column 12: this iRule's `{` is never closed"
        );
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        use rand::{rngs::SmallRng, Rng, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(0xb16);
        let alphabet: Vec<char> = "ltm pool {}\"\\#\n\r\t ;:/%.0123456789abc[]ü"
            .chars()
            .collect();
        for _ in 0..20_000 {
            let n = rng.gen_range(0..200);
            let s: String = (0..n)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let _ = parse(&s);
        }
        let deep = "a {".repeat(1000);
        assert!(parse(&deep).is_err());
    }
}
