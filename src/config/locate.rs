//! Where each node of `routes.yaml` sits in the file, so that every config problem can name
//! its line and column.
//!
//! serde_yaml's `Value` forgets positions, so the text is read a second time with
//! yaml-rust2's event parser, which reports a marker for every event. The index maps a
//! dotted path (`routes.0.match.percentage`) to the position of that mapping key or sequence
//! item.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column number.
    pub col: usize,
}

impl From<Marker> for Position {
    fn from(m: Marker) -> Self {
        Position {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// Positions of every mapping key and sequence item, by dotted path.
#[derive(Debug, Default)]
pub(crate) struct PositionIndex {
    positions: HashMap<String, Position>,
}

impl PositionIndex {
    /// Indexes `text`. A text that does not parse gives an empty index (the serde_yaml
    /// parse reports the syntax error with its own position).
    pub(crate) fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return PositionIndex::default();
        }
        PositionIndex {
            positions: builder.positions,
        }
    }

    /// The position of `path`, or of its nearest ancestor that has one (an unknown field is
    /// reported at the mapping that holds it when the field itself cannot be found).
    pub(crate) fn find(&self, path: &str) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(pos) = self.positions.get(path) {
                return Some(*pos);
            }
            let cut = path.rfind('.')?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    /// `pending_item`: this mapping is a sequence item whose position is taken from its
    /// first key (the parser marks a block mapping's start after that key).
    Mapping {
        path: String,
        key: Option<String>,
        pending_item: bool,
    },
    Sequence {
        path: String,
        index: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<String, Position>,
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

impl Builder {
    /// The path of the node that is starting now, recording sequence items' positions
    /// (unless `defer`, for a mapping item that records its first key's position instead).
    fn path_of_value(&mut self, mark: Marker, defer: bool) -> (String, bool) {
        match self.stack.last_mut() {
            None => (String::new(), false),
            Some(Frame::Mapping { path, key, .. }) => match key.take() {
                Some(k) => (join(path, &k), false),
                None => (path.clone(), false),
            },
            Some(Frame::Sequence { path, index }) => {
                let item = join(path, &index.to_string());
                *index += 1;
                if !defer {
                    self.positions.entry(item.clone()).or_insert(mark.into());
                }
                (item, defer)
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Mapping {
                    path,
                    key,
                    pending_item,
                }) = self.stack.last_mut()
                {
                    if key.is_none() {
                        if std::mem::take(pending_item) {
                            self.positions.entry(path.clone()).or_insert(mark.into());
                        }
                        let full = join(path, &value);
                        self.positions.entry(full).or_insert(mark.into());
                        *key = Some(value);
                        return;
                    }
                }
                self.path_of_value(mark, false);
            }
            Event::Alias(_) => {
                self.path_of_value(mark, false);
            }
            Event::MappingStart(..) => {
                let (path, pending_item) = self.path_of_value(mark, true);
                self.stack.push(Frame::Mapping {
                    path,
                    key: None,
                    pending_item,
                });
            }
            Event::SequenceStart(..) => {
                let (path, _) = self.path_of_value(mark, false);
                self.stack.push(Frame::Sequence { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_items_with_one_based_positions() {
        let text = "server:\n  listen: 127.0.0.1:8080\nroutes:\n  - name: a\n    match:\n      percentage: { gte: 90 }\n";
        let idx = PositionIndex::build(text);
        assert_eq!(
            idx.find("server.listen"),
            Some(Position { line: 2, col: 3 })
        );
        assert_eq!(idx.find("routes.0"), Some(Position { line: 4, col: 5 }));
        assert_eq!(
            idx.find("routes.0.match.percentage"),
            Some(Position { line: 6, col: 7 })
        );
        assert_eq!(
            idx.find("routes.0.match.percentage.gte"),
            Some(Position { line: 6, col: 21 })
        );
        // An unknown child falls back to its parent.
        assert_eq!(
            idx.find("routes.0.nope"),
            Some(Position { line: 4, col: 5 })
        );
    }
}
