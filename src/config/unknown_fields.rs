//! Every unknown field of a mapping, each with a "did you mean": serde stops at the first
//! one (`unknown field `retires`, expected one of ...`), which would make fixing a file a
//! loop of one typo per `check`.

use serde_yaml::Value;

use super::Problems;

/// If serde's `message` is about an unknown field of the mapping at `segments` (the path
/// serde reached, the unknown field last) inside `value`, reports every field of that
/// mapping serde does not accept, removes them from `value` so deserialization can go on,
/// and returns true. `base` is the dotted path of `value` in the file.
pub(super) fn report(
    value: &mut Value,
    segments: &[String],
    base: &str,
    message: &str,
    problems: &mut Problems,
) -> bool {
    let Some(expected) = expected_fields(message) else {
        return false;
    };
    let Some((_, parents)) = segments.split_last() else {
        return false;
    };
    let Some(map) = navigate(value, parents).and_then(Value::as_mapping_mut) else {
        return false;
    };
    let unknown: Vec<Value> = map
        .keys()
        .filter(|k| k.as_str().is_none_or(|k| !expected.contains(&k)))
        .cloned()
        .collect();
    if unknown.is_empty() {
        return false;
    }
    let mut parent = base.to_string();
    for seg in parents {
        if !parent.is_empty() {
            parent.push('.');
        }
        parent.push_str(seg);
    }
    let listed = match expected.as_slice() {
        [] => "no field is accepted here".to_string(),
        [one] => format!("expected `{one}`"),
        many => format!(
            "expected one of {}",
            many.iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    for key in unknown {
        let name = match &key {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        };
        let hint = crate::lint::did_you_mean(&name, expected.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        let path = if parent.is_empty() {
            name.clone()
        } else {
            format!("{parent}.{name}")
        };
        problems.push(&path, format!("unknown field `{name}`{hint}; {listed}"));
        map.remove(&key);
    }
    true
}

/// The fields serde lists in `unknown field `x`, expected one of `a`, `b``, `expected `a``
/// or `there are no fields`; `None` for any other message.
fn expected_fields(message: &str) -> Option<Vec<&str>> {
    let rest = message.strip_prefix("unknown field `")?;
    let (_, tail) = rest.split_once('`')?;
    if tail.contains("there are no fields") {
        return Some(Vec::new());
    }
    let list = tail.split_once("expected")?.1;
    Some(
        list.split('`')
            .skip(1)
            .step_by(2)
            .filter(|f| !f.is_empty())
            .collect(),
    )
}

fn navigate<'a>(value: &'a mut Value, segments: &[String]) -> Option<&'a mut Value> {
    let mut cur = value;
    for seg in segments {
        cur = match cur {
            Value::Mapping(m) => m.get_mut(seg.as_str())?,
            Value::Sequence(items) => items.get_mut(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::collections::HashMap;
    use std::path::Path;

    fn errors(text: &str) -> String {
        let env: HashMap<String, String> = HashMap::new();
        Config::from_yaml(text, Path::new("routes.yaml"), &env)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn every_unknown_field_is_reported_with_a_suggestion() {
        let err = errors(
            "keys: [k]\nserver:\n  listne: 127.0.0.1:1\n  colour: blue\n  data_dir: /x\n  max_body_bytes: 0\ndestinations:\n  d:\n    url: http://h/x\n    retires: 3\n    timout: 1s\n    sign: { secert: x }\nroutes:\n  - name: r\n    to: [d]\n    stpo: true\n",
        );
        for expected in [
            "routes.yaml:3:3: server.listne: unknown field `listne` (did you mean `listen`?); expected one of `listen`, `data_dir`",
            "routes.yaml:4:3: server.colour: unknown field `colour`; expected one of",
            // The other problems of the same section are still found.
            "routes.yaml:6:3: server.max_body_bytes: must be between 1",
            "routes.yaml:10:5: destination \"d\": retires: unknown field `retires` (did you mean `retry`?)",
            "routes.yaml:11:5: destination \"d\": timout: unknown field `timout` (did you mean `timeout`?)",
            "routes.yaml:12:13: destination \"d\": sign.secert: unknown field `secert` (did you mean `secret`?); expected `secret`",
            "routes.yaml:16:5: route \"r\": stpo: unknown field `stpo` (did you mean `stop`?)",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in\n{err}");
        }
        assert_eq!(err.lines().count(), 7, "{err}");
    }

    #[test]
    fn a_top_level_typo_gets_a_suggestion() {
        let err = errors("keys: [k]\nroute: []\n");
        assert!(
            err.contains("routes.yaml:2:1: route: unknown key \"route\" (did you mean \"routes\"?); expected one of"),
            "{err}"
        );
    }
}
