//! Every problem of a config file in one pass, each with its line and column.
//!
//! serde stops at the first error. To go on, the text is mended where the error points and
//! parsed again, up to `MAX_PROBLEMS` times: an unknown key is blanked out (with spaces, so
//! every other position stays where it was), a bad value is replaced by a placeholder of the
//! type the error asked for, and a missing key is added with a placeholder. Semantic checks
//! then run on the mended config; a semantic problem at a mended place is a consequence of
//! the placeholder and is not reported. Key paths of semantic problems are located in the
//! document (toml_edit keeps spans) to give them a line and column too.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table};

use super::{Config, Problem};

/// More problems than this in one file stops the search.
const MAX_PROBLEMS: usize = 64;

/// Placeholders tried, in order, for a value of unknown type.
const PLACEHOLDERS: &[&str] = &["\"1s\"", "\"198.18.0.1\"", "\"x\"", "1", "true", "[]"];

/// A parsed-and-mended file: the text serde finally accepted, and where it was changed.
struct Work {
    text: String,
    /// Lines (1-based, in `text`) that were inserted and are not in the original.
    inserted_lines: Vec<usize>,
    /// Byte ranges in `text` that hold placeholders or blanks.
    mended: Vec<Range<usize>>,
}

impl Work {
    /// Line and column (1-based) of a byte offset, as in the original text.
    fn position(&self, at: usize) -> (usize, usize) {
        let before = &self.text[..at.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.chars().count()
            - before
                .rfind('\n')
                .map_or(0, |i| before[..=i].chars().count())
            + 1;
        let shift = self.inserted_lines.iter().filter(|l| **l < line).count();
        (line - shift, col)
    }

    fn location(&self, at: usize) -> String {
        let (line, col) = self.position(at);
        format!("line {line}, column {col}")
    }

    fn replace(&mut self, span: Range<usize>, with: &str) {
        // Pad with spaces to the old length, so that later offsets do not move.
        let old_len = span.end - span.start;
        let mut new = with.to_string();
        if new.len() < old_len {
            new.push_str(&" ".repeat(old_len - new.len()));
        }
        let delta = new.len() as isize - old_len as isize;
        self.text.replace_range(span.clone(), &new);
        for r in &mut self.mended {
            if r.start >= span.end {
                r.start = (r.start as isize + delta) as usize;
                r.end = (r.end as isize + delta) as usize;
            }
        }
        self.mended.push(span.start..span.start + new.len());
    }

    /// Blanks a range out, newlines kept.
    fn blank(&mut self, span: Range<usize>) {
        let blank: String = self.text[span.clone()]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        self.text.replace_range(span.clone(), &blank);
        self.mended.push(span);
    }

    fn parses_past(&self, at: usize, message: &str) -> bool {
        match toml::from_str::<Config>(&self.text) {
            Ok(_) => true,
            Err(e) => {
                let same_place = e.span().is_some_and(|s| s.contains(&at) || s.start == at);
                !(same_place && e.message() == message)
            }
        }
    }
}

/// Parses `text`, returning the config (if serde could finally read it, possibly with
/// placeholders) and every problem found, syntax and semantic, in file order per kind.
pub fn diagnose(text: &str) -> (Option<Config>, Vec<Problem>) {
    let mut w = Work {
        text: text.to_string(),
        inserted_lines: Vec::new(),
        mended: Vec::new(),
    };
    let mut problems = Vec::new();
    let cfg = loop {
        if problems.len() >= MAX_PROBLEMS {
            problems.push(Problem {
                location: "file".into(),
                message: format!("more than {MAX_PROBLEMS} problems; stopped looking"),
            });
            return (None, problems);
        }
        let e = match toml::from_str::<Config>(&w.text) {
            Ok(cfg) => break cfg,
            Err(e) => e,
        };
        let message = e.message().trim().to_string();
        let Some(span) = e.span() else {
            problems.push(Problem {
                location: "file".into(),
                message,
            });
            return (None, problems);
        };
        if ImDocument::parse(w.text.as_str()).is_err() {
            // A syntax error: nothing after it can be read.
            problems.push(Problem {
                location: w.location(span.start),
                message,
            });
            return (None, problems);
        }
        if !mend(&mut w, span, &message, &mut problems) {
            return (None, problems);
        }
    };
    // Semantic checks, located; those at a mended place are consequences of a placeholder.
    let doc = ImDocument::parse(w.text.as_str()).ok();
    for p in cfg.validate() {
        let at = doc.as_ref().and_then(|d| locate(d, &p.location));
        if let Some(at) = at {
            if w.mended.iter().any(|r| r.contains(&at)) {
                continue;
            }
        }
        let location = match at {
            Some(at) => format!("{}, {}", w.location(at), p.location),
            None => p.location.clone(),
        };
        problems.push(Problem {
            location,
            message: p.message,
        });
    }
    (Some(cfg), problems)
}

/// Records the problem serde reported at `span` and mends the text so that parsing can go
/// on. Returns false when it cannot be mended.
fn mend(w: &mut Work, span: Range<usize>, message: &str, problems: &mut Vec<Problem>) -> bool {
    if let Some(key) = between(message, "unknown field `", "`") {
        let expected = backticked(message.split_once("expected").map_or("", |(_, e)| e));
        let Some(key_span) = find_key(&w.text, span.clone(), &key) else {
            problems.push(Problem {
                location: w.location(span.start),
                message: message.to_string(),
            });
            return false;
        };
        let mut m = format!("unknown key `{key}`");
        if let Some(near) = nearest(&key, &expected) {
            m.push_str(&format!("; did you mean `{near}`?"));
        }
        if !expected.is_empty() {
            m.push_str(&format!(" (expected one of: {})", expected.join(", ")));
        }
        problems.push(Problem {
            location: w.location(key_span.start),
            message: m,
        });
        let whole = entry_span(&w.text, key_span.start).unwrap_or(key_span);
        w.blank(whole);
        return true;
    }
    if let Some(key) = between(message, "missing field `", "`") {
        // serde may point at a whole array of tables: the table is the first in it that
        // lacks the key.
        let table = lacking(&w.text, span.clone(), &key).unwrap_or(span.start);
        problems.push(Problem {
            location: w.location(table),
            message: format!("missing key `{key}`"),
        });
        // Insert `key = placeholder` after the table's header line.
        let Some(nl) = w.text[table..].find('\n').map(|i| table + i + 1) else {
            return false;
        };
        let line = w.text[..nl].matches('\n').count() + 1;
        let saved = (w.text.clone(), w.mended.clone());
        for cand in placeholders(message) {
            let ins = format!("{key} = {cand}\n");
            w.text.insert_str(nl, &ins);
            if w.parses_past(span.start, message) {
                w.inserted_lines.push(line);
                w.mended.push(nl..nl + ins.len());
                return true;
            }
            (w.text, w.mended) = saved.clone();
        }
        return false;
    }
    // A bad value: narrow a wide span (serde's buffered enums report the whole table) to
    // the offending literal when the message quotes it.
    let value = if w.text[span.clone()].contains('\n') {
        match quoted_in(message).and_then(|q| {
            w.text[span.clone()]
                .find(&q)
                .map(|i| span.start + i..span.start + i + q.len())
        }) {
            Some(v) => v,
            None => {
                problems.push(Problem {
                    location: w.location(span.start),
                    message: message.to_string(),
                });
                return false;
            }
        }
    } else {
        span.clone()
    };
    let line_start = w.text[..value.start].rfind('\n').map_or(0, |i| i + 1);
    let message_with_key = match w.text[line_start..value.start].split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => {
            format!("{}: {message}", key.trim())
        }
        _ => message.to_string(),
    };
    problems.push(Problem {
        location: w.location(value.start),
        message: message_with_key,
    });
    let saved = (w.text.clone(), w.mended.clone());
    for cand in placeholders(message) {
        w.replace(value.clone(), &cand);
        if w.parses_past(value.start, message) {
            return true;
        }
        (w.text, w.mended) = saved.clone();
    }
    false
}

/// Placeholders for what the message says was expected, best first.
fn placeholders(message: &str) -> Vec<String> {
    let expected = message.split_once("expected").map_or("", |(_, e)| e).trim();
    let mut out = Vec::new();
    if let Some(first) = backticked(expected).first() {
        out.push(format!("\"{first}\""));
    }
    if expected.starts_with('i') || expected.starts_with('u') && !expected.starts_with("un") {
        out.push("1".into());
    }
    if expected.contains("boolean") {
        out.push("true".into());
    }
    if expected.contains("sequence") {
        out.push("[]".into());
    }
    if expected.contains("IPv4") {
        out.push("\"198.18.0.1\"".into());
    }
    out.extend(PLACEHOLDERS.iter().map(|s| s.to_string()));
    out
}

fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(rest[..rest.find(end)?].to_string())
}

/// Every `word` in backticks.
fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The first double-quoted literal in a message, with its quotes.
fn quoted_in(message: &str) -> Option<String> {
    between(message, "\"", "\"").map(|q| format!("\"{q}\""))
}

/// The valid key closest to `key`, if it is close enough to be a typo.
fn nearest(key: &str, valid: &[String]) -> Option<String> {
    valid
        .iter()
        .map(|v| (strsim::damerau_levenshtein(key, v), v))
        .filter(|(d, v)| *d <= (v.len().max(key.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v.clone())
}

/// Where `key` is written inside `span`: the span itself, a `key =` line, or a table
/// header naming it.
fn find_key(text: &str, span: Range<usize>, key: &str) -> Option<Range<usize>> {
    let inside = &text[span.clone()];
    if inside == key {
        return Some(span);
    }
    let mut at = 0;
    for line in inside.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let bare = trimmed.trim_start_matches('[').trim_start();
        let lead = trimmed.len() - bare.len();
        let header = lead > 0;
        // `key = ...`, or a header whose last dotted part is the key.
        let name_end = bare
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .unwrap_or(bare.len());
        let name = &bare[..name_end];
        let last = name.rsplit('.').next().unwrap_or(name);
        if last == key && (header || bare[name_end..].trim_start().starts_with('=')) {
            let start = span.start + at + indent + lead + (name.len() - last.len());
            return Some(start..start + key.len());
        }
        at += line.len();
    }
    None
}

/// The start of the first table header within `span` whose table has no `key`.
fn lacking(text: &str, span: Range<usize>, key: &str) -> Option<usize> {
    fn walk(t: &Table, span: &Range<usize>, key: &str) -> Option<usize> {
        for (_, item) in t.iter() {
            let subs: Vec<&Table> = match item {
                Item::Table(sub) => vec![sub],
                Item::ArrayOfTables(a) => a.iter().collect(),
                _ => continue,
            };
            for sub in subs {
                if let Some(h) = sub.span() {
                    if span.contains(&h.start) && !sub.contains_key(key) {
                        return Some(h.start);
                    }
                }
                if let Some(at) = walk(sub, span, key) {
                    return Some(at);
                }
            }
        }
        None
    }
    let doc = ImDocument::parse(text).ok()?;
    walk(doc.as_table(), &span, key)
}

/// The whole entry (key and value, or a table with its body) whose key starts at `at`.
fn entry_span(text: &str, at: usize) -> Option<Range<usize>> {
    let doc = ImDocument::parse(text).ok()?;
    find_entry(doc.as_table(), at, text.len())
}

fn find_entry(t: &Table, at: usize, text_len: usize) -> Option<Range<usize>> {
    for (key, item) in t.iter() {
        let key_span = t.key(key).and_then(|k| k.span());
        match item {
            Item::Value(v) => {
                if key_span.as_ref().is_some_and(|s| s.start == at) {
                    return Some(at..v.span()?.end);
                }
            }
            Item::Table(sub) => {
                if let Some(r) = find_entry(sub, at, text_len) {
                    return Some(r);
                }
                let hdr = sub.span();
                if key_span.as_ref().is_some_and(|s| s.start == at)
                    || hdr.as_ref().is_some_and(|h| h.contains(&at))
                {
                    let start = hdr.map_or(at, |h| h.start);
                    return Some(start..table_end(sub).unwrap_or(start + 1).min(text_len));
                }
            }
            Item::ArrayOfTables(a) => {
                for sub in a.iter() {
                    if let Some(r) = find_entry(sub, at, text_len) {
                        return Some(r);
                    }
                    if let Some(h) = sub.span() {
                        if h.contains(&at) {
                            return Some(h.start..table_end(sub).unwrap_or(h.end).min(text_len));
                        }
                    }
                }
            }
            Item::None => {}
        }
    }
    None
}

/// The end of a table's last entry.
fn table_end(t: &Table) -> Option<usize> {
    let mut end = t.span().map(|s| s.end);
    for (_, item) in t.iter() {
        let e = match item {
            Item::Value(v) => v.span().map(|s| s.end),
            Item::Table(sub) => table_end(sub),
            Item::ArrayOfTables(a) => a.iter().filter_map(table_end).max(),
            Item::None => None,
        };
        end = end.max(e);
    }
    end
}

/// Where the item at a key path such as `vip[0] (vsVipHa01).member[1] (b).address` is
/// written (the deepest part of the path that is, when the rest was left to defaults).
fn locate(doc: &ImDocument<&str>, path: &str) -> Option<usize> {
    let mut table: &Table = doc.as_table();
    let mut found = None;
    for part in split_path(path) {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part.as_str(), None),
        };
        let Some(item) = table.get(key) else {
            break;
        };
        found = table
            .key(key)
            .and_then(|k| k.span())
            .map(|s| s.start)
            .or(found);
        match (item, index) {
            (Item::ArrayOfTables(a), Some(i)) => {
                let Some(t) = a.get(i) else { break };
                found = t.span().map(|s| s.start).or(found);
                table = t;
            }
            (Item::Value(v), Some(i)) => {
                found = v
                    .as_array()
                    .and_then(|a| a.get(i))
                    .and_then(|e| e.span())
                    .map(|s| s.start)
                    .or(found);
                break;
            }
            (Item::Value(v), None) => {
                found = v.span().map(|s| s.start).or(found);
                break;
            }
            (Item::Table(t), None) => table = t,
            _ => break,
        }
    }
    found
}

/// The parts of a key path, labels in parentheses dropped: `vip[0] (v).member[1].address` is
/// `vip[0]`, `member[1]`, `address`.
fn split_path(path: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '.' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            c if depth == 0 && c != ' ' => cur.push(c),
            _ => {}
        }
    }
    parts.push(cur);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_without_labels() {
        assert_eq!(
            split_path("vip[0] (vs.Vip).member[1] (b).address"),
            vec!["vip[0]", "member[1]", "address"]
        );
    }

    #[test]
    fn typos_find_their_key() {
        let valid: Vec<String> = ["name", "address", "priority", "monitors"]
            .map(String::from)
            .to_vec();
        assert_eq!(nearest("prority", &valid).as_deref(), Some("priority"));
        assert_eq!(nearest("adress", &valid).as_deref(), Some("address"));
        assert_eq!(nearest("weight", &valid), None);
    }
}
