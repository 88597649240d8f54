//! Loading YAML from outside (job files, REST bodies, configuration files) in memory and
//! time bounded by the input's size.
//!
//! `yaml_rust2`'s loader resolves an alias by cloning the anchored node, so a few hundred
//! bytes of nested aliases ("billion laughs") expand into gigabytes. Neither job files nor
//! configuration files have a use for anchors and aliases, so [`load_plain`] first walks the
//! parser's event stream — which holds no document, only the current event — and refuses any
//! anchor, alias or nesting deeper than [`MAX_DEPTH`], naming the line; only then does it
//! build the document, whose size is then a small multiple of the text's.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::{Yaml, YamlLoader};

/// Deepest nesting of sequences and mappings accepted.
pub const MAX_DEPTH: usize = 64;

/// Why a YAML text was refused. Retrying the same text never helps.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum YamlInputError {
    #[error("{message} at line {line} column {column}")]
    Syntax { line: usize, column: usize, message: String },
    #[error("line {line}: {}", ANCHOR_REASON)]
    AnchorOrAlias { line: usize },
    #[error("line {line}: {}", depth_reason())]
    TooDeep { line: usize },
}

const ANCHOR_REASON: &str = "YAML anchors and aliases are not supported (write the value out)";

fn depth_reason() -> String {
    format!("nesting deeper than {MAX_DEPTH} levels")
}

impl YamlInputError {
    /// What is wrong, without the position.
    pub fn reason(&self) -> String {
        match self {
            YamlInputError::Syntax { message, .. } => message.clone(),
            YamlInputError::AnchorOrAlias { .. } => ANCHOR_REASON.to_owned(),
            YamlInputError::TooDeep { .. } => depth_reason(),
        }
    }

    /// The 1-based column (1 where only the line is known).
    pub fn column(&self) -> usize {
        match self {
            YamlInputError::Syntax { column, .. } => *column,
            _ => 1,
        }
    }

    /// The 1-based line the problem is on.
    pub fn line(&self) -> usize {
        match self {
            YamlInputError::Syntax { line, .. }
            | YamlInputError::AnchorOrAlias { line }
            | YamlInputError::TooDeep { line } => *line,
        }
    }
}

/// Parses `text` into its documents, refusing anchors, aliases and deep nesting.
pub fn load_plain(text: &str) -> Result<Vec<Yaml>, YamlInputError> {
    check_plain(text)?;
    YamlLoader::load_from_str(text).map_err(|e| YamlInputError::Syntax {
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_owned(),
    })
}

/// Walks the event stream once: constant memory besides the current event.
fn check_plain(text: &str) -> Result<(), YamlInputError> {
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| YamlInputError::Syntax {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_owned(),
        })?;
        let line = mark.line();
        match event {
            Event::StreamEnd => return Ok(()),
            Event::Alias(_) => return Err(YamlInputError::AnchorOrAlias { line }),
            Event::Scalar(_, _, anchor, _) if anchor != 0 => return Err(YamlInputError::AnchorOrAlias { line }),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if anchor != 0 {
                    return Err(YamlInputError::AnchorOrAlias { line });
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(YamlInputError::TooDeep { line });
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The "billion laughs" document of `levels` levels of nine aliases each.
    pub(crate) fn alias_bomb(levels: usize) -> String {
        let names: Vec<char> = ('a'..='z').take(levels).collect();
        let mut text = format!("{}: &{} [x,x,x,x,x,x,x,x,x]\n", names[0], names[0]);
        for pair in names.windows(2) {
            let refs = vec![format!("*{}", pair[0]); 9].join(",");
            text.push_str(&format!("{}: &{} [{refs}]\n", pair[1], pair[1]));
        }
        text
    }

    #[test]
    fn plain_yaml_loads() {
        let docs = load_plain("a: 1\nb: [x, {c: d}]\n").unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["b"][1]["c"].as_str(), Some("d"));
    }

    #[test]
    fn the_nine_level_alias_bomb_is_refused_at_once() {
        let text = alias_bomb(9);
        assert!(text.len() < 400, "{}", text.len());
        let started = Instant::now();
        let err = load_plain(&text).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(err, YamlInputError::AnchorOrAlias { line: 1 });
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn an_alias_alone_is_refused_with_its_line() {
        let err = load_plain("a: 1\nb: *x\n").unwrap_err();
        // An alias to an unknown anchor is a syntax error or an alias error; either names line 2.
        assert_eq!(err.line(), 2, "{err}");
        let err = load_plain("a: 1\nb: &x 2\nc: 3\n").unwrap_err();
        assert_eq!(err, YamlInputError::AnchorOrAlias { line: 2 });
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(matches!(load_plain(&text), Err(YamlInputError::TooDeep { .. })));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(load_plain(&ok).is_ok());
        let flow_bomb = "[".repeat(100_000);
        assert!(load_plain(&flow_bomb).is_err());
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = load_plain("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(matches!(err, YamlInputError::Syntax { .. }), "{err}");
    }
}
