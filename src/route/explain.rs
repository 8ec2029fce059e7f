//! Why a route did or did not fire: the condition tree evaluated with every field value it
//! saw, for `hookrouter route --explain` and for `check`'s one-line summaries.

use std::fmt;

use serde::Serialize;
use serde_json::Value as Json;

use super::condition::{Condition, FieldTest, Op, Scalar};
use super::Route;
use crate::event::EventKind;

/// One evaluated node of a condition tree.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Explanation {
    /// An AND of children (a `match:` map or `all:`).
    All {
        /// Did every child hold?
        held: bool,
        /// The children.
        children: Vec<Explanation>,
    },
    /// An OR of children (`any:`).
    Any {
        /// Did one child hold?
        held: bool,
        /// The children.
        children: Vec<Explanation>,
    },
    /// A negation (`not:`).
    Not {
        /// Did the negation hold?
        held: bool,
        /// The negated node.
        child: Box<Explanation>,
    },
    /// The operators on one field.
    Field {
        /// Did every operator hold?
        held: bool,
        /// The field as written.
        field: String,
        /// The value seen (`null` when missing).
        value: Json,
        /// Whether the field was present.
        present: bool,
        /// Each operator in readable form and whether it held.
        tests: Vec<(String, bool)>,
    },
}

impl Explanation {
    /// Did this node hold?
    pub fn held(&self) -> bool {
        match self {
            Explanation::All { held, .. }
            | Explanation::Any { held, .. }
            | Explanation::Not { held, .. }
            | Explanation::Field { held, .. } => *held,
        }
    }
}

/// A route's verdict with its reasons.
#[derive(Debug, Clone, Serialize)]
pub struct RouteExplanation {
    /// The route's name.
    pub route: String,
    /// Did the route match?
    pub matched: bool,
    /// Did the route apply to this kind of event?
    pub kind_matched: bool,
    /// The kinds the route accepts (empty: all).
    pub events: Vec<EventKind>,
    /// The conditions, evaluated (`None` when the kind already ruled the route out).
    pub conditions: Option<Explanation>,
    /// Destinations it names.
    pub to: Vec<String>,
    /// Whether it stops evaluation when it matches.
    pub stop: bool,
}

impl Condition {
    /// Evaluates the tree and records every step.
    pub fn explain(&self, payload: &Json) -> Explanation {
        match self {
            Condition::All(children) => {
                let children: Vec<_> = children.iter().map(|c| c.explain(payload)).collect();
                Explanation::All {
                    held: children.iter().all(Explanation::held),
                    children,
                }
            }
            Condition::Any(children) => {
                let children: Vec<_> = children.iter().map(|c| c.explain(payload)).collect();
                Explanation::Any {
                    held: children.iter().any(Explanation::held),
                    children,
                }
            }
            Condition::Not(child) => {
                let child = child.explain(payload);
                Explanation::Not {
                    held: !child.held(),
                    child: Box::new(child),
                }
            }
            Condition::Field(test) => test.explain(payload),
        }
    }
}

impl FieldTest {
    fn explain(&self, payload: &Json) -> Explanation {
        let found = self.lookup(payload);
        let value = found.filter(|v| !v.is_null());
        let tests: Vec<(String, bool)> = self
            .ops
            .iter()
            .map(|op| (self.show_op(op), op.holds(value)))
            .collect();
        Explanation::Field {
            held: tests.iter().all(|(_, h)| *h),
            field: self.path.clone(),
            value: if self.secret {
                Json::String("<secret>".into())
            } else {
                found.cloned().unwrap_or(Json::Null)
            },
            present: found.is_some(),
            tests,
        }
    }

    fn show_op(&self, op: &Op) -> String {
        if self.secret {
            return format!("{} <secret>", op_name(op));
        }
        format!("{} {}", op_name(op), op_operand(op))
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Eq(_) => "==",
        Op::Ne(_) => "!=",
        Op::In(_) => "in",
        Op::NotIn(_) => "not in",
        Op::Gt(_) => ">",
        Op::Gte(_) => ">=",
        Op::Lt(_) => "<",
        Op::Lte(_) => "<=",
        Op::Regex(_) => "matches",
        Op::StartsWith(_) => "starts with",
        Op::EndsWith(_) => "ends with",
        Op::Contains(_) => "contains",
        Op::Exists(true) => "exists",
        Op::Exists(false) => "is missing",
    }
}

fn scalar(s: &Scalar) -> String {
    match s {
        Scalar::Str(s, _) => format!("{s:?}"),
        Scalar::Num(n) => n.to_string(),
        Scalar::Bool(b) => b.to_string(),
    }
}

fn op_operand(op: &Op) -> String {
    match op {
        Op::Eq(s) | Op::Ne(s) => scalar(s),
        Op::In(l) | Op::NotIn(l) => {
            format!("[{}]", l.iter().map(scalar).collect::<Vec<_>>().join(", "))
        }
        Op::Gt(n) | Op::Gte(n) | Op::Lt(n) | Op::Lte(n) => n.to_string(),
        Op::Regex(re) => format!("/{}/", re.as_str()),
        Op::StartsWith(t) | Op::EndsWith(t) | Op::Contains(t) => {
            let case = if t.ignore_case { " (ignore case)" } else { "" };
            format!("{:?}{case}", t.value)
        }
        Op::Exists(_) => String::new(),
    }
}

impl fmt::Display for Condition {
    /// One line: `percentage >= 90 AND tag1 in ["a", "b"] AND (x == 1 OR NOT y == 2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, children: &[Condition], sep: &str| -> fmt::Result {
            for (i, c) in children.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                let nested = matches!(c, Condition::All(v) | Condition::Any(v) if v.len() > 1);
                if nested {
                    write!(f, "({c})")?;
                } else {
                    write!(f, "{c}")?;
                }
            }
            Ok(())
        };
        match self {
            Condition::All(c) if c.is_empty() => f.write_str("always"),
            Condition::All(c) => join(f, c, " AND "),
            Condition::Any(c) => join(f, c, " OR "),
            Condition::Not(c) => write!(f, "NOT ({c})"),
            Condition::Field(t) => {
                for (i, op) in t.ops.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" AND ")?;
                    }
                    write!(f, "{} {}", t.path, t.show_op(op).trim_end())?;
                }
                Ok(())
            }
        }
    }
}

impl Route {
    /// Evaluates this route for an event and records why it matched or not.
    pub fn explain(&self, kind: EventKind, payload: &Json) -> RouteExplanation {
        let kind_matched = self.events.as_ref().is_none_or(|k| k.contains(&kind));
        let conditions = kind_matched.then(|| self.condition.explain(payload));
        RouteExplanation {
            route: self.name.clone(),
            matched: kind_matched && conditions.as_ref().is_some_and(Explanation::held),
            kind_matched,
            events: self.events.clone().unwrap_or_default(),
            conditions,
            to: self.to.clone(),
            stop: self.stop,
        }
    }
}

/// Renders an explanation tree as indented text lines (`✓`/`✗` per node).
pub fn render_explanation(e: &Explanation, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    let mark = |held: bool| if held { "✓" } else { "✗" };
    match e {
        Explanation::All { held, children } | Explanation::Any { held, children } => {
            let label = if matches!(e, Explanation::All { .. }) {
                "all of"
            } else {
                "any of"
            };
            out.push_str(&format!("{pad}{} {label}:\n", mark(*held)));
            for c in children {
                render_explanation(c, depth + 1, out);
            }
        }
        Explanation::Not { held, child } => {
            out.push_str(&format!("{pad}{} not:\n", mark(*held)));
            render_explanation(child, depth + 1, out);
        }
        Explanation::Field {
            field,
            value,
            present,
            tests,
            ..
        } => {
            let seen = if *present {
                value.to_string()
            } else {
                "(missing)".to_string()
            };
            for (test, held) in tests {
                out.push_str(&format!(
                    "{pad}{} {field} {test}   (saw {seen})\n",
                    mark(*held)
                ));
            }
        }
    }
}
