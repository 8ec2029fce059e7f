//! Templates for what a destination receives: Slack text, JSON body trees and header values.
//!
//! Templates use minijinja (Jinja syntax, which operators already know from Ansible and
//! Home Assistant). Every template of a destination is compiled into that destination's
//! own [`Templates`] when the config loads, so a syntax error is a config problem with its
//! line and column, and nothing is parsed on the delivery path.
//!
//! Choices made for webhook payloads, where missing and `null` fields are normal:
//! - Undefined values are semi-strict: printing one, or passing one to a filter that needs a
//!   value, fails the render (a permanent failure of that job, dead-lettered with the
//!   reason), but `{% if field %}` and `default(...)` work on them.
//! - `null` prints as an empty string, not `none`.
//! - `default(x)` also replaces `null` (Jinja replaces only undefined), so
//!   `{{ viewer_name | default('Someone') }}` does what it says for a viewer with no name.
//! - No HTML auto-escaping: the output is JSON or Slack mrkdwn, not HTML. The
//!   `slack_escape` filter escapes `&`, `<` and `>` as Slack asks.

use minijinja::value::{Rest, Value as TValue};
use minijinja::{Environment, Error as TError, ErrorKind, UndefinedBehavior};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

/// The compiled templates of one destination.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Sources may hold secrets (header values from `${VAR}`): show the names only.
        let names: Vec<_> = self.env.templates().map(|(name, _)| name).collect();
        f.debug_struct("Templates").field("names", &names).finish()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

/// Is `s` a template at all? Plain strings are kept as literals, so a secret with a stray
/// brace is never parsed, and nothing is rendered that does not need to be.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// If `s` is exactly one `{{ expression }}` (surrounding blanks allowed), the expression.
/// Such a JSON leaf keeps the JSON type of its value.
pub fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner).trim();
    if inner.is_empty() || is_template(inner) || inner.contains("}}") || inner.contains("%}") {
        return None;
    }
    Some(inner)
}

/// Instructions one render may run. A message or CRM body needs a few hundred; the bound
/// stops an operator's runaway loop from holding a delivery worker (the render fails, and
/// the job is dead-lettered with the reason).
const RENDER_FUEL: u64 = 100_000;

impl Templates {
    /// An empty set with hookrouter's settings and filters.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_fuel(Some(RENDER_FUEL));
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_formatter(|out, state, value| {
            if value.is_none() {
                Ok(())
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        env.add_filter("default", default_filter);
        env.add_filter("d", default_filter);
        env.add_filter("slack_escape", slack_escape);
        env.add_filter("__hookrouter_json", typed_json);
        Templates { env }
    }

    /// A set for URL templates: every printed value is percent-encoded as one URL
    /// component ([`super::url_template::encode_component`]), so a field holding `/`, `?` or `&`
    /// stays inside its path segment or query value.
    pub fn url_encoding() -> Self {
        let mut t = Templates::new();
        t.env.set_formatter(|out, _state, value| {
            if !value.is_none() {
                let text = value.to_string();
                out.write_str(&super::url_template::encode_component(&text))?;
            }
            Ok(())
        });
        t
    }

    /// Compiles `source` under `name` (the field's path, which render errors then name).
    /// The error is minijinja's description, with the line inside the template.
    pub fn add(&mut self, name: &str, source: &str) -> Result<(), String> {
        self.env
            .add_template_owned(name.to_string(), source.to_string())
            .map_err(|e| describe(&e))
    }

    /// Renders the template `name` with `ctx`.
    pub fn render(&self, name: &str, ctx: &TValue) -> Result<String, TError> {
        self.env.get_template(name)?.render(ctx)
    }

    /// The names of every compiled template (`template`, `body.x`, `headers.X-Key`,
    /// `builtin.slack.view`...), for `check`, which renders each against sample payloads.
    pub fn names(&self) -> Vec<String> {
        self.env
            .templates()
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The variables template `name` reads from its context, dotted where it reaches into
    /// one (`viewer_name`, `variables.plan`, `payload.tag1`); loop variables and `set`s are
    /// not included.
    pub fn variables(&self, name: &str) -> std::collections::HashSet<String> {
        self.env
            .get_template(name)
            .map(|t| t.undeclared_variables(true))
            .unwrap_or_default()
    }

    /// Compiles one string leaf: a literal, a text template, or a single expression whose
    /// value keeps its JSON type.
    pub fn leaf(&mut self, name: &str, source: &str) -> Result<Leaf, String> {
        if !is_template(source) {
            return Ok(Leaf::Literal(source.to_string()));
        }
        if let Some(expr) = single_expression(source) {
            // Check the expression as the operator wrote it, so the error reads naturally.
            self.env
                .compile_expression(expr)
                .map_err(|e| describe(&e))?;
            self.add(name, &format!("{{{{ ({expr}) | __hookrouter_json }}}}"))?;
            return Ok(Leaf::Typed(name.to_string()));
        }
        self.add(name, source)?;
        Ok(Leaf::Text(name.to_string()))
    }

    /// Compiles a YAML tree whose string leaves are templates (a JSON body, Slack blocks).
    /// `name` is the tree's dotted path; problems are returned with the leaf's full path.
    pub fn tree(&mut self, name: &str, value: &Yaml, problems: &mut Vec<(String, String)>) -> Node {
        match value {
            Yaml::Null => Node::Literal(Json::Null),
            Yaml::Bool(b) => Node::Literal(Json::Bool(*b)),
            Yaml::Number(n) => Node::Literal(serde_json::to_value(n).unwrap_or(Json::Null)),
            Yaml::String(s) => match self.leaf(name, s) {
                Ok(leaf) => Node::Leaf(leaf),
                Err(e) => {
                    problems.push((name.to_string(), e));
                    Node::Literal(Json::Null)
                }
            },
            Yaml::Sequence(items) => Node::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.tree(&format!("{name}.{i}"), v, problems))
                    .collect(),
            ),
            Yaml::Mapping(map) => {
                let mut fields = Vec::with_capacity(map.len());
                for (k, v) in map {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Number(n) => n.to_string(),
                        Yaml::Bool(b) => b.to_string(),
                        _ => {
                            problems.push((
                                name.to_string(),
                                "a key must be a plain string; an unquoted {{ ... }} is read as \
                                 YAML, so quote templates: \"{{ field }}\""
                                    .into(),
                            ));
                            continue;
                        }
                    };
                    let node = self.tree(&format!("{name}.{key}"), v, problems);
                    fields.push((key, node));
                }
                Node::Object(fields)
            }
            Yaml::Tagged(_) => {
                problems.push((name.to_string(), "YAML tags are not supported here".into()));
                Node::Literal(Json::Null)
            }
        }
    }

    /// Renders a compiled leaf to JSON: text as a string, a typed leaf as its value.
    pub fn render_leaf(&self, leaf: &Leaf, ctx: &TValue) -> Result<Json, TError> {
        match leaf {
            Leaf::Literal(s) => Ok(Json::String(s.clone())),
            Leaf::Text(name) => self.render(name, ctx).map(Json::String),
            Leaf::Typed(name) => {
                let text = self.render(name, ctx)?;
                serde_json::from_str(&text).map_err(|e| {
                    TError::new(ErrorKind::BadSerialization, "value is not JSON").with_source(e)
                })
            }
        }
    }

    /// Renders a compiled tree to JSON.
    pub fn render_tree(&self, node: &Node, ctx: &TValue) -> Result<Json, TError> {
        Ok(match node {
            Node::Literal(v) => v.clone(),
            Node::Leaf(leaf) => self.render_leaf(leaf, ctx)?,
            Node::Array(items) => Json::Array(
                items
                    .iter()
                    .map(|n| self.render_tree(n, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Object(fields) => {
                let mut map = serde_json::Map::with_capacity(fields.len());
                for (k, n) in fields {
                    map.insert(k.clone(), self.render_tree(n, ctx)?);
                }
                Json::Object(map)
            }
        })
    }
}

/// One compiled string value.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    /// Not a template: used as written.
    Literal(String),
    /// A template rendered to a string; the template's name.
    Text(String),
    /// Exactly one `{{ expression }}`: its value keeps its JSON type; the template's name.
    Typed(String),
}

/// A compiled JSON tree whose string leaves are templates.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A constant (numbers, booleans, null from the YAML).
    Literal(Json),
    /// A string leaf.
    Leaf(Leaf),
    /// A list.
    Array(Vec<Node>),
    /// A mapping, in the order written.
    Object(Vec<(String, Node)>),
}

/// A compile error as one line: kind and detail, plus the line when the template has more
/// than one (the template's source is never included: it may hold a secret).
pub fn describe(e: &TError) -> String {
    let mut msg = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line().filter(|l| *l > 1) {
        msg.push_str(&format!(" (template line {line})"));
    }
    msg
}

/// `default` that treats `null` like undefined (see the module doc).
fn default_filter(value: &TValue, args: Rest<TValue>) -> Result<TValue, TError> {
    if args.len() > 2 {
        return Err(TError::from(ErrorKind::TooManyArguments));
    }
    let other = args.first().cloned().unwrap_or_else(|| TValue::from(""));
    let lax = args.get(1).is_some_and(TValue::is_true);
    if value.is_undefined() || value.is_none() || (lax && !value.is_true()) {
        Ok(other)
    } else {
        Ok(value.clone())
    }
}

/// Escapes `&`, `<` and `>` as Slack's mrkdwn requires for text that is not markup.
fn slack_escape(value: &TValue) -> Result<String, TError> {
    if value.is_undefined() {
        return Err(TError::new(
            ErrorKind::UndefinedError,
            "slack_escape of an undefined value",
        ));
    }
    let text = if value.is_none() {
        String::new()
    } else {
        value.to_string()
    };
    Ok(text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;"))
}

/// The value of a single-expression leaf as JSON text; undefined is an error (a body field
/// silently becoming `null` would be worse than a dead letter that says why).
fn typed_json(value: &TValue) -> Result<String, TError> {
    if value.is_undefined() {
        return Err(TError::new(
            ErrorKind::UndefinedError,
            "the value is undefined",
        ));
    }
    serde_json::to_string(value).map_err(|e| {
        TError::new(ErrorKind::BadSerialization, "cannot serialize to JSON").with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: Json) -> TValue {
        TValue::from(minijinja::value::Serde(v))
    }

    #[test]
    fn single_expressions_are_recognised() {
        assert_eq!(single_expression("{{ percentage }}"), Some("percentage"));
        assert_eq!(single_expression(" {{- a | b(1) -}} "), Some("a | b(1)"));
        assert_eq!(single_expression("{{ a }} {{ b }}"), None);
        assert_eq!(single_expression("x {{ a }}"), None);
        assert_eq!(single_expression("{{ }}"), None);
    }

    #[test]
    fn typed_leaves_keep_their_json_type_and_text_stays_text() {
        let mut t = Templates::new();
        let body: Yaml = serde_yaml::from_str(
            "n: \"{{ percentage }}\"\ns: \"{{ percentage }}%\"\nfirst: \"{{ viewer_name | split(' ') | first }}\"\n\
             missing: \"{{ tag2 }}\"\nlist: \"{{ answers }}\"\nplain: hello\nnum: 3\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        let node = t.tree("body", &body, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let out = t
            .render_tree(
                &node,
                &ctx(json!({"percentage": 95, "viewer_name": "John Doe", "tag2": null, "answers": ["a", "b"]})),
            )
            .unwrap();
        assert_eq!(
            out,
            json!({"n": 95, "s": "95%", "first": "John", "missing": null, "list": ["a", "b"], "plain": "hello", "num": 3})
        );
    }

    #[test]
    fn a_runaway_loop_fails_instead_of_holding_the_worker() {
        let mut t = Templates::new();
        t.add(
            "loop",
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap();
        let started = std::time::Instant::now();
        let err = t.render("loop", &ctx(json!({}))).unwrap_err();
        assert!(err.to_string().contains("fuel"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // An ordinary template stays far below the bound.
        t.add(
            "msg",
            "{% for a in answers %}{{ a }}, {% endfor %}{{ viewer_name }}",
        )
        .unwrap();
        let answers: Vec<String> = (0..200).map(|i| format!("answer {i}")).collect();
        assert!(t
            .render("msg", &ctx(json!({"answers": answers, "viewer_name": "J"})))
            .is_ok());
    }

    #[test]
    fn null_prints_empty_and_default_covers_null() {
        let mut t = Templates::new();
        t.add(
            "x",
            "[{{ a }}] {{ a | default('Someone') }} {{ b | default('B') }}",
        )
        .unwrap();
        let out = t.render("x", &ctx(json!({"a": null}))).unwrap();
        assert_eq!(out, "[] Someone B");
    }

    #[test]
    fn syntax_errors_fail_at_compile_time_and_undefined_fails_at_render_time() {
        let mut t = Templates::new();
        assert!(t
            .add("bad", "{{ a | }}")
            .unwrap_err()
            .contains("syntax error"));
        assert!(t.leaf("bad2", "{{ (a }}").is_err());
        t.add("split", "{{ missing | split(' ') | first }}")
            .unwrap();
        assert!(t.render("split", &ctx(json!({}))).is_err());
        t.add("print", "{{ missing }}").unwrap();
        assert!(t.render("print", &ctx(json!({}))).is_err());
        let leaf = t.leaf("typed", "{{ missing }}").unwrap();
        assert!(t.render_leaf(&leaf, &ctx(json!({}))).is_err());
        t.add("if", "{% if missing %}yes{% else %}no{% endif %}")
            .unwrap();
        assert_eq!(t.render("if", &ctx(json!({}))).unwrap(), "no");
    }

    #[test]
    fn an_unquoted_template_in_yaml_is_explained() {
        let mut t = Templates::new();
        let body: Yaml = serde_yaml::from_str("email: {{ viewer_email }}\n").unwrap();
        let mut problems = Vec::new();
        t.tree("body", &body, &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].1.contains("quote templates"), "{problems:?}");
    }

    #[test]
    fn slack_escape_escapes_markup() {
        let mut t = Templates::new();
        t.add("x", "{{ a | slack_escape }}").unwrap();
        assert_eq!(
            t.render("x", &ctx(json!({"a": "<b> & c"}))).unwrap(),
            "&lt;b&gt; &amp; c"
        );
    }
}
