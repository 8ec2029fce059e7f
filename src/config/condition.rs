//! A route's `match:` compiled from YAML into a [`Condition`] once at load: every problem
//! goes to the file's problem list with its dotted path, so `check` reports them all. What
//! the compiled condition means, and how it is evaluated, is [`crate::route::condition`].

use serde_yaml::{Mapping, Value as Yaml};

use super::Ctx;
use crate::route::condition::{Condition, FieldTest, Op, Scalar, Text};

/// The operators a field's map may hold, for the error that names an unknown one.
const OPERATORS: &[&str] = &[
    "eq",
    "ne",
    "in",
    "not_in",
    "gt",
    "gte",
    "lt",
    "lte",
    "regex",
    "starts_with",
    "ends_with",
    "contains",
    "exists",
    "ignore_case",
];

/// Compiles a `match:` mapping found at `path` (an `All` of its keys); problems go to
/// `ctx`.
pub fn compile_map(map: &Mapping, path: &str, ctx: &mut Ctx<'_>) -> Condition {
    let mut all = Vec::with_capacity(map.len());
    for (key, value) in map {
        let Some(key) = key.as_str() else {
            ctx.problems.push(path, "condition keys must be strings");
            continue;
        };
        let kpath = format!("{path}.{key}");
        match key {
            "any" | "all" => {
                if let Some(children) = compile_list(key, value, &kpath, ctx) {
                    all.push(if key == "any" {
                        Condition::Any(children)
                    } else {
                        Condition::All(children)
                    });
                }
            }
            "not" => match value.as_mapping() {
                Some(m) => all.push(Condition::Not(Box::new(unwrap_single(compile_map(
                    m, &kpath, ctx,
                ))))),
                None => ctx.problems.push(&kpath, "not expects a condition map"),
            },
            field => {
                if let Some(test) = compile_field(field, value, &kpath, ctx) {
                    all.push(Condition::Field(test));
                }
            }
        }
    }
    Condition::All(all)
}

/// The children of `any:` or `all:` (`key`) at `path`; `None` when it is not a list.
fn compile_list(key: &str, value: &Yaml, path: &str, ctx: &mut Ctx<'_>) -> Option<Vec<Condition>> {
    let Some(items) = value.as_sequence() else {
        ctx.problems
            .push(path, format!("{key} expects a list of condition maps"));
        return None;
    };
    let mut children = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}.{i}");
        match item.as_mapping() {
            Some(m) => children.push(unwrap_single(compile_map(m, &ipath, ctx))),
            None => ctx.problems.push(&ipath, "expected a condition map"),
        }
    }
    // An empty list is a problem of its own, whatever else the file has wrong (a list of
    // invalid maps has had each map reported already).
    if items.is_empty() {
        ctx.problems
            .push(path, format!("{key} needs at least one condition map"));
    }
    Some(children)
}

/// A map of one condition is that condition: nested `any:`/`all:`/`not:` items are
/// usually one-key maps, and unwrapping them saves a level of evaluation per item.
fn unwrap_single(condition: Condition) -> Condition {
    match condition {
        Condition::All(mut v) if v.len() == 1 => v.pop().unwrap_or(Condition::All(Vec::new())),
        other => other,
    }
}

/// The tests on `field` (possibly dotted) given by `value`: a scalar is equality, a list
/// any-of, a map operators.
fn compile_field(field: &str, value: &Yaml, path: &str, ctx: &mut Ctx<'_>) -> Option<FieldTest> {
    if field.is_empty() || field.split('.').any(str::is_empty) {
        ctx.problems.push(
            path,
            "a field name must not be empty or have empty dotted parts",
        );
        return None;
    }
    let ops = match value {
        Yaml::Mapping(m) => compile_ops(m, path, ctx)?,
        Yaml::Sequence(items) => vec![Op::In(scalars(items, path, ctx)?)],
        Yaml::Null => {
            ctx.problems.push(
                path,
                "a null value matches nothing; use `{ exists: false }` for a missing field",
            );
            return None;
        }
        other => match scalar_of(other) {
            Some(s) => vec![Op::Eq(s)],
            None => {
                ctx.problems
                    .push(path, "expected a value, a list or a map of operators");
                return None;
            }
        },
    };
    let secret = ctx
        .secrets
        .iter()
        .any(|s| s == path || s.starts_with(&format!("{path}.")));
    Some(FieldTest::new(field, ops, secret))
}

fn scalar_of(value: &Yaml) -> Option<Scalar> {
    match value {
        Yaml::String(s) => Some(Scalar::text(s)),
        Yaml::Number(n) => n.as_f64().map(Scalar::Num),
        Yaml::Bool(b) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

fn number_of(value: &Yaml) -> Option<f64> {
    match value {
        Yaml::Number(n) => n.as_f64(),
        Yaml::String(s) => crate::route::condition::parse_number(s),
        _ => None,
    }
}

fn scalars(items: &[Yaml], path: &str, ctx: &mut Ctx<'_>) -> Option<Vec<Scalar>> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match scalar_of(item) {
            Some(s) => out.push(s),
            None => {
                ctx.problems.push(
                    &format!("{path}.{i}"),
                    "expected a string, number or boolean",
                );
                return None;
            }
        }
    }
    if out.is_empty() {
        ctx.problems.push(path, "an empty list matches nothing");
        return None;
    }
    Some(out)
}

/// A field's operator map at `path`: every operator compiled, each problem reported;
/// `None` when any operator is wrong.
fn compile_ops(map: &Mapping, path: &str, ctx: &mut Ctx<'_>) -> Option<Vec<Op>> {
    let ignore_case = match map.get("ignore_case") {
        None => false,
        Some(Yaml::Bool(b)) => *b,
        Some(_) => {
            ctx.problems
                .push(&format!("{path}.ignore_case"), "expected true or false");
            false
        }
    };
    let mut ops = Vec::new();
    let mut ok = true;
    for (key, value) in map {
        let name = key.as_str().unwrap_or("?");
        if name == "ignore_case" {
            continue;
        }
        let operand = Operand {
            path: format!("{path}.{name}"),
            value,
            ignore_case,
        };
        match operand.compile(name, ctx) {
            Some(op) => ops.push(op),
            None => ok = false,
        }
    }
    if ops.is_empty() && ok {
        ctx.problems
            .push(path, "an operator map needs at least one operator");
        return None;
    }
    ok.then_some(ops)
}

/// One operator's operand, where it is and whether its field compares without case.
struct Operand<'v> {
    path: String,
    value: &'v Yaml,
    ignore_case: bool,
}

impl Operand<'_> {
    /// The operator `name` on this operand; `None` (reported) when either is wrong.
    fn compile(&self, name: &str, ctx: &mut Ctx<'_>) -> Option<Op> {
        match name {
            "eq" => self.scalar(ctx).map(Op::Eq),
            "ne" => self.scalar(ctx).map(Op::Ne),
            "in" => self.list(ctx).map(Op::In),
            "not_in" => self.list(ctx).map(Op::NotIn),
            "gt" => self.number(ctx).map(Op::Gt),
            "gte" => self.number(ctx).map(Op::Gte),
            "lt" => self.number(ctx).map(Op::Lt),
            "lte" => self.number(ctx).map(Op::Lte),
            "regex" => self.regex(ctx),
            "starts_with" => self.text(ctx).map(Op::StartsWith),
            "ends_with" => self.text(ctx).map(Op::EndsWith),
            "contains" => self.text(ctx).map(Op::Contains),
            "exists" => match self.value {
                Yaml::Bool(b) => Some(Op::Exists(*b)),
                _ => self.wrong("true or false", ctx),
            },
            other => {
                let hint = crate::lint::did_you_mean(other, OPERATORS.iter().copied())
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default();
                ctx.problems.push(
                    &self.path,
                    format!(
                        "unknown operator {other:?}{hint}; expected one of {}",
                        OPERATORS.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// Reports that the operand is not `expected` (the value shown unless secret).
    fn wrong<T>(&self, expected: &str, ctx: &mut Ctx<'_>) -> Option<T> {
        let shown = ctx.show(&self.path, self.value);
        ctx.problems
            .push(&self.path, format!("expected {expected}, found {shown}"));
        None
    }

    fn scalar(&self, ctx: &mut Ctx<'_>) -> Option<Scalar> {
        scalar_of(self.value).or_else(|| self.wrong("a string, number or boolean", ctx))
    }

    fn list(&self, ctx: &mut Ctx<'_>) -> Option<Vec<Scalar>> {
        match self.value.as_sequence() {
            Some(items) => scalars(items, &self.path, ctx),
            None => self.wrong("a list", ctx),
        }
    }

    fn number(&self, ctx: &mut Ctx<'_>) -> Option<f64> {
        number_of(self.value).or_else(|| self.wrong("a number", ctx))
    }

    fn text(&self, ctx: &mut Ctx<'_>) -> Option<Text> {
        let value = match self.value {
            Yaml::String(s) if self.ignore_case => s.to_lowercase(),
            Yaml::String(s) => s.clone(),
            Yaml::Number(n) => n.to_string(),
            _ => return self.wrong("a string", ctx),
        };
        Some(Text {
            value,
            ignore_case: self.ignore_case,
        })
    }

    fn regex(&self, ctx: &mut Ctx<'_>) -> Option<Op> {
        let Some(pattern) = self.value.as_str() else {
            return self.wrong("a regex string", ctx);
        };
        match regex::RegexBuilder::new(pattern)
            .case_insensitive(self.ignore_case)
            .size_limit(1 << 20)
            .build()
        {
            Ok(re) => Some(Op::Regex(re)),
            Err(e) => {
                let detail = crate::lint::regex_error(&e, !ctx.secrets.contains(&self.path));
                ctx.problems
                    .push(&self.path, format!("invalid regex: {detail}"));
                None
            }
        }
    }
}
