//! `${VAR}` substitution and `{ file: PATH }` values, applied to the parsed YAML tree.
//!
//! Substitution happens per string value after parsing, never on the raw text, so a
//! variable whose value contains a newline or a colon cannot inject YAML keys. Every path
//! whose value came from the environment or a file is remembered as secret, so error
//! messages and `check` output never print it.

use std::collections::HashSet;

use serde_yaml::Value;

use super::Problems;

/// Where substituted values come from; tests pass a map instead of the process environment.
pub trait Env {
    /// The value of variable `name`, if set.
    fn var(&self, name: &str) -> Option<String>;

    /// `Some` for `check --no-environment`: every variable and every secret file stands
    /// for this text, nothing is read, and problems with those values are not reported.
    fn placeholder(&self) -> Option<&str> {
        None
    }
}

/// `check --no-environment`: validates a config whose secrets exist only where it runs
/// (systemd credentials, an env file only root reads). Each `${VAR}`, `${file:PATH}` and
/// `{ file: PATH }` becomes [`NoEnvironment::PLACEHOLDER`] (a URL, so a whole-URL variable
/// still parses).
pub struct NoEnvironment;

impl NoEnvironment {
    /// What every variable and secret file stands for.
    pub const PLACEHOLDER: &'static str = "https://value-not-read.invalid/";
}

impl Env for NoEnvironment {
    fn var(&self, _name: &str) -> Option<String> {
        Some(Self::PLACEHOLDER.to_string())
    }

    fn placeholder(&self) -> Option<&str> {
        Some(Self::PLACEHOLDER)
    }
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: std::hash::BuildHasher> Env for std::collections::HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Expands every string in `value` in place; returns the paths whose values are secret.
pub(crate) fn expand_tree(
    value: &mut Value,
    env: &dyn Env,
    problems: &mut Problems,
) -> HashSet<String> {
    let mut secrets = HashSet::new();
    walk(value, "", env, problems, &mut secrets);
    secrets
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(
    value: &mut Value,
    path: &str,
    env: &dyn Env,
    problems: &mut Problems,
    secrets: &mut HashSet<String>,
) {
    match value {
        Value::String(s) => match expand_vars(s, env) {
            Ok(Some((expanded, vars))) => {
                *s = expanded;
                secrets.insert(path.to_string());
                let origin = vars
                    .iter()
                    .map(|(name, _)| format!("${{{name}}}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                for (name, value) in vars {
                    problems.secret_value(value, format!("${{{name}}}"));
                }
                // `$$` alone substitutes nothing: no variable to name.
                if !origin.is_empty() {
                    problems.secret_path(path, origin);
                }
            }
            Ok(None) => {}
            Err(message) => problems.push(path, message),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &child(path, &i.to_string()), env, problems, secrets);
            }
        }
        Value::Mapping(map) => {
            // `{ file: PATH }` stands for the file's contents, except inside `match`, where a
            // mapping is a condition on payload fields.
            if let Some(file_path) = file_reference(map) {
                if !path.split('.').any(|seg| seg == "match") {
                    match read_secret_file(&file_path, env) {
                        Ok(contents) => {
                            let origin = format!("the file {file_path}");
                            problems.secret_value(contents.clone(), origin.clone());
                            problems.secret_path(path, origin);
                            *value = Value::String(contents);
                            secrets.insert(path.to_string());
                        }
                        Err(message) => problems.push(path, message),
                    }
                    return;
                }
            }
            for (k, v) in map.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                walk(v, &child(path, &key), env, problems, secrets);
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, env, problems, secrets),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn file_reference(map: &serde_yaml::Mapping) -> Option<String> {
    if map.len() != 1 {
        return None;
    }
    match map.get("file") {
        Some(Value::String(p)) => Some(p.clone()),
        _ => None,
    }
}

/// A secret file is a token or a URL; anything bigger is a mistake (`/dev/zero` would
/// otherwise be read until memory runs out).
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

fn read_secret_file(raw_path: &str, env: &dyn Env) -> Result<String, String> {
    use std::io::Read;
    if let Some(placeholder) = env.placeholder() {
        return Ok(placeholder.to_string());
    }
    let path = expand_str(raw_path, env)?.unwrap_or_else(|| raw_path.to_string());
    let cannot = |e: std::io::Error| format!("cannot read secret file {path}: {e}");
    let file = std::fs::File::open(&path).map_err(cannot)?;
    let mut contents = String::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut contents)
        .map_err(cannot)?;
    if contents.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "secret file {path} is larger than {MAX_SECRET_FILE_BYTES} bytes"
        ));
    }
    let trimmed = contents
        .strip_suffix("\r\n")
        .or_else(|| contents.strip_suffix('\n'))
        .unwrap_or(&contents);
    Ok(trimmed.to_string())
}

/// Where the `}` closing `${` is in `body` (what follows `${`): the first one, except in
/// `${file:...}`, whose path may itself hold `${CREDENTIALS_DIRECTORY}`.
fn closing_brace(body: &str) -> Option<usize> {
    if !body.starts_with("file:") {
        return body.find('}');
    }
    let mut depth = 0usize;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Expands `${VAR}`, `${VAR:-default}`, `${file:PATH}` and `$$` in `s`. Returns `None` when `s` has nothing
/// to expand, so untouched values are not marked secret.
pub(crate) fn expand_str(s: &str, env: &dyn Env) -> Result<Option<String>, String> {
    Ok(expand_vars(s, env)?.map(|(expanded, _)| expanded))
}

/// An expanded string, and each variable in it with the text it put in.
type Expanded = (String, Vec<(String, String)>);

/// [`expand_str`], also returning each variable substituted with the text it put in (its
/// value or its default), so errors can name the variable and hide that text.
fn expand_vars(s: &str, env: &dyn Env) -> Result<Option<Expanded>, String> {
    if !s.contains('$') {
        return Ok(None);
    }
    let mut vars = Vec::new();
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut substituted = false;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body).ok_or_else(|| {
                "unterminated \"${\" (write \"$$\" for a literal \"$\")".to_string()
            })?;
            let spec = &body[..end];
            // `${file:/run/credentials/hookrouter/token}`: the file's contents, inline.
            if let Some(file) = spec.strip_prefix("file:") {
                let contents = read_secret_file(file, env)?;
                out.push_str(&contents);
                vars.push((spec.to_string(), contents));
                substituted = true;
                rest = &body[end + 1..];
                continue;
            }
            let (name, default) = match spec.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (spec, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name {name:?} in \"${{...}}\""));
            }
            match (env.var(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => {
                    out.push_str(&v);
                    vars.push((name.to_string(), v));
                }
                (None, Some(d)) => {
                    out.push_str(d);
                    vars.push((name.to_string(), d.to_string()));
                }
                (None, None) => {
                    return Err(format!("environment variable {name} is not set"));
                }
            }
            substituted = true;
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(if substituted || out != s {
        Some((out, vars))
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env() -> HashMap<String, String> {
        HashMap::from([("TOKEN".to_string(), "s3cret".to_string())])
    }

    #[test]
    fn expands_variables_defaults_and_dollars() {
        let e = env();
        assert_eq!(expand_str("plain", &e).unwrap(), None);
        assert_eq!(
            expand_str("Bearer ${TOKEN}", &e).unwrap().as_deref(),
            Some("Bearer s3cret")
        );
        assert_eq!(
            expand_str("${MISSING:-fallback}", &e).unwrap().as_deref(),
            Some("fallback")
        );
        assert_eq!(
            expand_str("cost $$5", &e).unwrap().as_deref(),
            Some("cost $5")
        );
        assert!(expand_str("${MISSING}", &e)
            .unwrap_err()
            .contains("MISSING is not set"));
        assert!(expand_str("${TOKEN", &e)
            .unwrap_err()
            .contains("unterminated"));
    }

    #[test]
    fn an_inline_file_reference_is_expanded_and_named_as_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "tok-from-file\n").unwrap();
        let text = format!("Bearer ${{file:{}}}", file.display());
        assert_eq!(
            expand_str(&text, &env()).unwrap().as_deref(),
            Some("Bearer tok-from-file")
        );
        let mut v: Value = serde_yaml::from_str(&format!("a: {text:?}")).unwrap();
        let mut problems = Problems::default();
        let secrets = expand_tree(&mut v, &env(), &mut problems);
        assert!(secrets.contains("a"));
        assert_eq!(
            problems.secret_origin("a"),
            Some(format!("${{file:{}}}", file.display()).as_str())
        );
        // The path may name systemd's credentials directory by its variable.
        let e = HashMap::from([(
            "CREDENTIALS_DIRECTORY".to_string(),
            dir.path().display().to_string(),
        )]);
        assert_eq!(
            expand_str("Bearer ${file:${CREDENTIALS_DIRECTORY}/t}!", &e)
                .unwrap()
                .as_deref(),
            Some("Bearer tok-from-file!")
        );
        let missing = format!("${{file:{}/nope}}", dir.path().display());
        assert!(expand_str(&missing, &env())
            .unwrap_err()
            .contains("cannot read secret file"));
        // --no-environment: nothing is read.
        assert_eq!(
            expand_str(&missing, &NoEnvironment).unwrap().as_deref(),
            Some(NoEnvironment::PLACEHOLDER)
        );
    }

    #[test]
    fn an_injected_newline_stays_inside_the_value() {
        let e = HashMap::from([("X".to_string(), "a\nkeys: [evil]".to_string())]);
        let mut v: Value = serde_yaml::from_str("keys: [\"${X}\"]").unwrap();
        let mut problems = Problems::default();
        let secrets = expand_tree(&mut v, &e, &mut problems);
        assert!(problems.is_empty());
        assert_eq!(v["keys"][0].as_str(), Some("a\nkeys: [evil]"));
        assert!(secrets.contains("keys.0"));
    }
}
