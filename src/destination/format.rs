//! A destination's body format (`format:`) and its headers, compiled: what `deliver/format.rs`
//! renders a request from.

use std::fmt;

use http::HeaderName;

use super::template::{Leaf, Node};
use crate::event::EventKind;

/// The body format of a destination (`format:`).
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// The original body, byte for byte.
    Raw,
    /// `{"text": ...}` with optional Block Kit `blocks`.
    Slack {
        /// The name of the compiled `template:`; `None` uses the built-in message of the
        /// event's kind.
        text: Option<String>,
        /// The compiled `blocks:` list.
        blocks: Option<Node>,
    },
    /// A JSON body from the `body:` tree.
    Json {
        /// The compiled tree.
        body: Node,
    },
}

/// One configured header: its value is either fixed or a template.
#[derive(Clone)]
pub struct HeaderSpec {
    /// The header name.
    pub name: HeaderName,
    /// The value: `Leaf::Literal` for a fixed one, `Leaf::Text` (a template name) otherwise.
    pub value: Leaf,
    /// Never shown: the value came from `${VAR}` or a file, or was written as a literal
    /// (where tokens usually are).
    pub sensitive: bool,
}

impl fmt::Debug for HeaderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value: &dyn fmt::Debug = if self.sensitive {
            &"<secret>"
        } else {
            &self.value
        };
        f.debug_struct("HeaderSpec")
            .field("name", &self.name)
            .field("value", value)
            .finish()
    }
}

/// The built-in Slack messages, used when a `format: slack` destination has no `template`.
/// Every field is optional in them, so they never fail on a sparse payload.
pub const BUILTIN_SLACK: [(EventKind, &str); 3] = [
    (
        EventKind::View,
        "{% if flag %}{{ flag | slack_escape }} {% endif %}*{{ viewer_name | default('Someone') | slack_escape }}* \
         watched *{{ video_title | default('a video') | slack_escape }}*\
         {% if percentage is number %} ({{ percentage }}%){% endif %}",
    ),
    (
        EventKind::Interaction,
        "*{{ viewer_name | default('Someone') | slack_escape }}* \
         {% if parent_type is defined and parent_type == 'question' %}answered \
         \u{201c}{{ parent_value | default('a question') | slack_escape }}\u{201d} with \
         *{{ value | default('(no answer)') | slack_escape }}*\
         {% else %}clicked *{{ value | default(parent_value) | default('something') | slack_escape }}*{% endif %} \
         in *{{ video_title | default('a video') | slack_escape }}*",
    ),
    (
        EventKind::Lead,
        "New lead: *{{ name | default('(no name)') | slack_escape }}*\
         {% if email %} ({{ email | slack_escape }}){% endif %} \
         from *{{ video_title | default('a video') | slack_escape }}*",
    ),
];

/// The template name of the built-in Slack message of `kind`.
pub fn builtin_slack_name(kind: EventKind) -> String {
    format!("builtin.slack.{kind}")
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Raw => "raw",
            Format::Slack { .. } => "slack",
            Format::Json { .. } => "json",
        })
    }
}
