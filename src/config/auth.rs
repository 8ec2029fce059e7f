//! `auth:` of a destination validated into an [`AuthSpec`]: exactly one of `bearer:`,
//! `basic:` or `oauth2:`. No message quotes a value: every one of them is a credential.

use serde::Deserialize;
use serde_yaml::Value;

use super::raw::OneOrMany;
use super::{deserialize_at, Problems, SecretString};
use crate::auth::{AuthSpec, OAuth2Spec};

/// `auth:` as written. `bearer:` stays YAML: it is `{ token: ... }`, or a string (what
/// `{ file: PATH }` and `"${VAR}"` become once expanded).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    bearer: Option<Value>,
    basic: Option<RawBasic>,
    oauth2: Option<RawOAuth2>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBearer {
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasic {
    user: String,
    password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth2 {
    token_url: String,
    client_id: String,
    client_secret: String,
    refresh_token: Option<String>,
    scopes: Option<OneOrMany>,
}

/// Validates `auth:` at `path` (`destinations.crm.auth`); `None` when absent or invalid.
pub(super) fn validate_auth(
    value: Option<&Value>,
    path: &str,
    problems: &mut Problems,
) -> Option<AuthSpec> {
    let value = value.filter(|v| !v.is_null())?;
    let raw: RawAuth = deserialize_at(value, path, problems)?;
    let given = [
        raw.bearer.is_some(),
        raw.basic.is_some(),
        raw.oauth2.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        problems.push(
            path,
            "expected exactly one of bearer: { token | file }, basic: { user, password } or oauth2: { token_url, client_id, client_secret, ... }",
        );
        return None;
    }
    if let Some(bearer) = raw.bearer {
        return validate_bearer(&bearer, &format!("{path}.bearer"), problems);
    }
    if let Some(basic) = raw.basic {
        let bpath = format!("{path}.basic");
        if basic.user.contains(':') || has_control(&basic.user) {
            problems.push(
                &format!("{bpath}.user"),
                "a basic user must not contain ':' or control characters",
            );
            return None;
        }
        if has_control(&basic.password) {
            problems.push(
                &format!("{bpath}.password"),
                "the password contains control characters (a trailing newline in its file is trimmed; others are not)",
            );
            return None;
        }
        return Some(AuthSpec::Basic {
            user: basic.user,
            password: SecretString::new(basic.password),
        });
    }
    let oauth2 = raw.oauth2?;
    validate_oauth2(oauth2, &format!("{path}.oauth2"), problems).map(AuthSpec::OAuth2)
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn validate_bearer(value: &Value, path: &str, problems: &mut Problems) -> Option<AuthSpec> {
    let token = match value {
        Value::String(s) => s.clone(),
        Value::Mapping(_) => deserialize_at::<RawBearer>(value, path, problems)?.token,
        _ => {
            problems.push(path, "expected { token: ... } or { file: PATH }");
            return None;
        }
    };
    // A token file may hold `Bearer <token>` or the token alone.
    let token = token
        .trim()
        .strip_prefix("Bearer ")
        .unwrap_or(token.trim())
        .trim()
        .to_string();
    if token.is_empty() || has_control(&token) || token.contains(' ') {
        problems.push(
            path,
            "the token is empty or contains spaces or control characters (the value is not shown)",
        );
        return None;
    }
    Some(AuthSpec::Bearer(SecretString::new(token)))
}

fn validate_oauth2(raw: RawOAuth2, path: &str, problems: &mut Problems) -> Option<OAuth2Spec> {
    let mut ok = true;
    let token_url = match reqwest::Url::parse(&raw.token_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
        _ => {
            problems.push(
                &format!("{path}.token_url"),
                "expected the token endpoint's http:// or https:// URL",
            );
            ok = false;
            None
        }
    };
    if raw.client_id.trim().is_empty() {
        problems.push(&format!("{path}.client_id"), "must not be empty");
        ok = false;
    }
    if raw.client_secret.is_empty() {
        problems.push(&format!("{path}.client_secret"), "must not be empty");
        ok = false;
    }
    if raw.refresh_token.as_deref().is_some_and(str::is_empty) {
        problems.push(
            &format!("{path}.refresh_token"),
            "must not be empty (leave it out for the client-credentials grant)",
        );
        ok = false;
    }
    let scopes = match raw.scopes {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(OneOrMany::Many(v)) => v,
    };
    if !ok {
        return None;
    }
    Some(OAuth2Spec {
        token_url: token_url?,
        client_id: raw.client_id,
        client_secret: SecretString::new(raw.client_secret),
        refresh_token: raw.refresh_token.map(SecretString::new),
        scopes,
    })
}

#[cfg(test)]
mod tests {
    use crate::auth::AuthSpec;
    use crate::config::{Config, ConfigError};
    use std::collections::HashMap;
    use std::path::Path;

    fn load(auth: &str) -> Result<Config, ConfigError> {
        let env = HashMap::from([("SECRET".to_string(), "s3cret-value".to_string())]);
        let text =
            format!("keys: [k]\ndestinations:\n  crm:\n    url: http://h/x\n    auth:\n{auth}");
        Config::from_yaml(&text, Path::new("routes.yaml"), &env)
    }

    #[test]
    fn each_kind_of_auth_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "Bearer from-file\n").unwrap();
        let c = load(&format!(
            "      bearer: {{ file: {:?} }}\n",
            file.display().to_string()
        ))
        .unwrap();
        let header = c.destinations["crm"].auth.as_ref().unwrap().static_header();
        assert_eq!(header.unwrap(), "Bearer from-file");
        let c = load("      bearer: { token: \"${SECRET}\" }\n").unwrap();
        assert!(matches!(
            c.destinations["crm"].auth.as_deref(),
            Some(AuthSpec::Bearer(_))
        ));
        let c = load("      basic: { user: api, password: \"${SECRET}\" }\n").unwrap();
        assert_eq!(c.destinations["crm"].auth.as_ref().unwrap().kind(), "basic");
        let c = load("      oauth2:\n        token_url: https://login.example.com/token\n        client_id: id\n        client_secret: \"${SECRET}\"\n        refresh_token: \"${SECRET}\"\n        scopes: \"a b\"\n").unwrap();
        let Some(AuthSpec::OAuth2(spec)) = c.destinations["crm"].auth.as_deref() else {
            panic!("not oauth2");
        };
        assert_eq!(spec.grant(), "refresh_token");
        assert_eq!(spec.scopes, ["a", "b"]);
        assert!(!format!("{:?}", c.destinations["crm"]).contains("s3cret"));
    }

    #[test]
    fn mistakes_are_reported_at_their_field_without_the_value() {
        let err = load("      bearer: { token: x }\n      basic: { user: u, password: p }\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routes.yaml:5:5: destination \"crm\": auth: expected exactly one of"),
            "{err}"
        );
        let err = load("      oauth2:\n        token_url: \"${SECRET}\"\n        client_id: \"\"\n        client_secret: \"${SECRET}\"\n        refresh_tokn: x\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.oauth2.refresh_tokn: unknown field"),
            "{err}"
        );
        let err = load("      oauth2:\n        token_url: \"${SECRET}\"\n        client_id: \"\"\n        client_secret: \"${SECRET}\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.oauth2.token_url: expected the token endpoint's"),
            "{err}"
        );
        assert!(
            err.contains("auth.oauth2.client_id: must not be empty"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }
}
