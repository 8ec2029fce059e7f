//! `url:` with `{{ field }}`: the destination's URL rendered per event, each value
//! percent-encoded (`.../sobjects/Lead/Mindstamp_Id__c/{{ id }}`).
//!
//! Templates may appear only after the host (in the path or the query): the scheme, host
//! and port are fixed by the config, and encoding keeps every value inside its component,
//! so a payload can never send a request elsewhere.

use minijinja::value::Value as TValue;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::template::{is_template, Templates};

/// The name of the URL template in its own [`Templates`].
const NAME: &str = "url";

/// A compiled templated URL.
pub struct UrlTemplate {
    templates: Templates,
    /// The part before the first template, parsed: scheme, host and port every rendered
    /// URL must keep (and what summaries show).
    base: reqwest::Url,
}

impl std::fmt::Debug for UrlTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlTemplate")
            .field("host", &super::show_url(&self.base, super::UrlView::Host))
            .finish()
    }
}

/// The prefix of `source` before its first template tag.
fn prefix(source: &str) -> &str {
    let at = ["{{", "{%", "{#"]
        .iter()
        .filter_map(|t| source.find(t))
        .min()
        .unwrap_or(source.len());
    &source[..at]
}

impl UrlTemplate {
    /// Compiles `source` if it is a template (`Ok(None)` for a plain URL). The error says
    /// what is wrong without quoting the URL (it may hold a token).
    pub fn compile(source: &str) -> Result<Option<UrlTemplate>, String> {
        if !is_template(source) {
            return Ok(None);
        }
        let head = prefix(source);
        let authority_ends = head
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains('/'));
        let base = match reqwest::Url::parse(head) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() && authority_ends => u,
            _ => {
                return Err(
                    "a templated URL needs a fixed http:// or https:// scheme and host: templates may only appear after the host (in the path or the query)"
                        .into(),
                )
            }
        };
        let mut templates = Templates::url_encoding();
        templates.add(NAME, source)?;
        Ok(Some(UrlTemplate { templates, base }))
    }

    /// The fixed part: scheme, host, port and the path up to the first template.
    pub fn base(&self) -> &reqwest::Url {
        &self.base
    }

    /// The template's variables, for `check`'s lint.
    pub fn variables(&self) -> std::collections::HashSet<String> {
        self.templates.variables(NAME)
    }

    /// The URL for one event.
    pub fn render(&self, ctx: &TValue) -> Result<reqwest::Url, String> {
        let text = self
            .templates
            .render(NAME, ctx)
            .map_err(|e| super::template::describe(&e))?;
        let url = reqwest::Url::parse(&text)
            .map_err(|e| format!("the rendered URL is not valid ({e})"))?;
        if url.scheme() != self.base.scheme()
            || url.host_str() != self.base.host_str()
            || url.port_or_known_default() != self.base.port_or_known_default()
        {
            return Err("the rendered URL changed its scheme, host or port".into());
        }
        Ok(url)
    }
}

/// Every byte but the unreserved ones of RFC 3986 (`A-Z a-z 0-9 - . _ ~`) is
/// percent-encoded: a value put into a URL path segment, a query or a form cannot change
/// the structure around it (no `/`, `?`, `&`, `=`, `#` or `+` survives).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` percent-encoded as one URL component: every byte but `A-Z a-z 0-9 - . _ ~`.
pub fn encode_component(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: serde_json::Value) -> TValue {
        TValue::from(minijinja::value::Serde(v))
    }

    #[test]
    fn values_are_encoded_and_the_host_is_fixed() {
        let t = UrlTemplate::compile(
            "https://x.my.salesforce.com/services/data/v60.0/sobjects/Lead/Mindstamp_Id__c/{{ id }}?src={{ src }}",
        )
        .unwrap()
        .unwrap();
        let url = t
            .render(&ctx(json!({"id": "a/b?c#d", "src": "x&y=z"})))
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://x.my.salesforce.com/services/data/v60.0/sobjects/Lead/Mindstamp_Id__c/a%2Fb%3Fc%23d?src=x%26y%3Dz"
        );
        assert!(t.render(&ctx(json!({"src": "x"}))).is_err(), "undefined id");
        assert!(UrlTemplate::compile("https://{{ host }}/x").is_err());
        assert!(UrlTemplate::compile("https://h{{ path }}").is_err());
        assert!(UrlTemplate::compile("https://h/{{ x").is_err());
        assert!(UrlTemplate::compile("https://h/x").unwrap().is_none());
    }
}
