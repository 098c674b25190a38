//! Tool search: when a caller's catalog is too big for an agent to hold, `tools/list`
//! offers three meta-tools instead of it ([`SEARCH`], [`DESCRIBE`], [`CALL`]), and the
//! tools stay callable by name as well.
//!
//! [`Index`] ranks a catalog's tools for a query with BM25 (the `bm25` crate: Okapi
//! weights, an English tokenizer that stems and drops stop words) over each tool's name
//! (identifiers split on camelCase, snake_case and kebab-case, and weighted three times),
//! its title and description, its parameters' names and descriptions, and its service's
//! name. A query's words are widened with a short list of everyday synonyms ("cart" also
//! finds "basket"). [`describe`] writes the search tool's description from what the
//! caller may see: the services, what their tools are about, how many there are, so an
//! agent knows when to reach for it.
//!
//! Invariant: nothing here knows who asks. Callers pass what the credential may see (a
//! filter over catalog indices); a hidden tool is never ranked, counted or described.

use std::collections::{BTreeMap, HashMap, HashSet};

use bm25::{DefaultTokenizer, Embedder, EmbedderBuilder, Language, Scorer, Tokenizer};
use rmcp::model::Tool;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Ranks tools for a task described in words.
pub const SEARCH: &str = "search_tools";
/// Full definitions of tools named by the search.
pub const DESCRIBE: &str = "describe_tools";
/// Calls a tool by name with its arguments.
pub const CALL: &str = "call_tool";
/// The meta-tools' names: in search mode these are the gateway's, and a backend's tool
/// of the same name is reached by its qualified name.
pub const META: [&str; 3] = [SEARCH, DESCRIBE, CALL];

/// Results of one search, at most (and by default).
pub const MAX_LIMIT: usize = 50;
pub const DEFAULT_LIMIT: usize = 10;
/// Tools one `describe_tools` may name.
pub const MAX_DESCRIBE: usize = 50;
/// Longest query read, in bytes (the rest is ignored).
pub const MAX_QUERY_BYTES: usize = 1024;
/// Services the search tool's description names (the rest are counted).
const DESCRIBED_SERVICES: usize = 20;
/// Topics named per service in that description.
const TOPICS: usize = 5;

/// Whether `tools/list` offers the meta-tools instead of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Always the catalog.
    Off,
    /// Always the meta-tools.
    On,
    /// The meta-tools once what the caller may see passes a tool count or a size.
    #[default]
    Auto,
    /// Past that count or size, `tools/list` is refused with a clear error (for clients
    /// that would break on a long list; a limited credential sees fewer).
    Refuse,
}

/// Tool search as configured for an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    /// `auto` engages above this many tools...
    pub max_tools: usize,
    /// ...or above this many bytes of tool definitions (their JSON).
    pub max_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: Mode::Auto,
            max_tools: 128,
            max_bytes: 256 * 1024,
        }
    }
}

impl Settings {
    /// Whether a caller who may see `tools` tools of `bytes` bytes gets the meta-tools.
    pub fn engaged(&self, tools: usize, bytes: usize) -> bool {
        match self.mode {
            Mode::Off | Mode::Refuse => false,
            Mode::On => true,
            Mode::Auto => self.over(tools, bytes),
        }
    }

    /// Whether such a caller's `tools/list` is refused, and why.
    pub fn refusal(&self, tools: usize, bytes: usize) -> Option<String> {
        (self.mode == Mode::Refuse && self.over(tools, bytes)).then(|| {
            format!(
                "this endpoint lists {tools} tools ({bytes} bytes of definitions), past its \
                 limit of {} tools or {} bytes, and is configured to refuse such a list \
                 (tool_search = \"refuse\"): use a credential limited to fewer services",
                self.max_tools, self.max_bytes
            )
        })
    }

    /// The meta-tools answer (search is neither `off` nor `refuse`).
    pub fn offers_meta_tools(&self) -> bool {
        matches!(self.mode, Mode::On | Mode::Auto)
    }

    fn over(&self, tools: usize, bytes: usize) -> bool {
        tools > self.max_tools || bytes > self.max_bytes
    }
}

/// One tool as the index sees it.
pub struct Entry<'a> {
    pub tool: &'a Tool,
    pub service: &'a str,
}

/// A catalog's tools, ranked by BM25 for a query; positions are the catalog's.
pub struct Index {
    embedder: Embedder<u32, Words>,
    scorer: Scorer<usize, u32>,
    /// Each tool's service and its topic words (for [`describe`]).
    services: Vec<String>,
    topics: Vec<Vec<(String, usize)>>,
}

impl Index {
    pub fn build(entries: &[Entry<'_>]) -> Self {
        let documents: Vec<String> = entries.iter().map(document).collect();
        let corpus: Vec<&str> = documents.iter().map(String::as_str).collect();
        let embedder: Embedder<u32, Words> =
            EmbedderBuilder::with_tokenizer_and_fit_to_corpus(Words::new(), &corpus).build();
        let mut scorer = Scorer::new();
        for (i, text) in documents.iter().enumerate() {
            scorer.upsert(&i, embedder.embed(text));
        }
        Self {
            embedder,
            scorer,
            services: entries.iter().map(|e| e.service.to_string()).collect(),
            topics: entries.iter().map(topics_of).collect(),
        }
    }

    /// The `limit` best tools for `query` among those `visible` keeps, best first (ties
    /// in catalog order), with their scores; and how many matched in all.
    pub fn search(
        &self,
        query: &str,
        visible: impl Fn(usize) -> bool,
        limit: usize,
    ) -> (Vec<(usize, f32)>, usize) {
        let query = widened(truncated(query, MAX_QUERY_BYTES));
        let embedding = self.embedder.embed(&query);
        let mut hits: Vec<(usize, f32)> = self
            .scorer
            .matches(&embedding)
            .into_iter()
            .filter(|d| visible(d.id))
            .map(|d| (d.id, d.score))
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total = hits.len();
        hits.truncate(limit);
        (hits, total)
    }

    /// The search tool's description for a caller who sees the tools `visible` keeps:
    /// how many, from which services, about what.
    pub fn describe(&self, visible: impl Fn(usize) -> bool) -> String {
        let mut per_service: BTreeMap<&str, (usize, HashMap<&str, usize>)> = BTreeMap::new();
        let mut total = 0;
        for i in (0..self.services.len()).filter(|i| visible(*i)) {
            total += 1;
            let (count, words) = per_service.entry(&self.services[i]).or_default();
            *count += 1;
            for (w, weight) in &self.topics[i] {
                *words.entry(w.as_str()).or_default() += weight;
            }
        }
        // A topic says more the fewer services share it.
        let mut spread: HashMap<&str, usize> = HashMap::new();
        for (_, words) in per_service.values() {
            for w in words.keys() {
                *spread.entry(w).or_default() += 1;
            }
        }
        let services = per_service.len();
        let mut lines = Vec::new();
        for (service, (count, words)) in per_service.iter().take(DESCRIBED_SERVICES) {
            let mut ranked: Vec<(&str, f64)> = words
                .iter()
                .map(|(w, n)| {
                    let idf = ((services as f64 + 1.0) / (spread[w] as f64)).ln() + 1.0;
                    (*w, *n as f64 * idf)
                })
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            let topics: Vec<&str> = ranked.iter().take(TOPICS).map(|(w, _)| *w).collect();
            let tools = if *count == 1 { "tool" } else { "tools" };
            if topics.is_empty() {
                lines.push(format!("{service} ({count} {tools})"));
            } else {
                lines.push(format!(
                    "{service} ({count} {tools}: {})",
                    topics.join(", ")
                ));
            }
        }
        if services > DESCRIBED_SERVICES {
            lines.push(format!(
                "and {} more services",
                services - DESCRIBED_SERVICES
            ));
        }
        let service_word = if services == 1 { "service" } else { "services" };
        format!(
            "Finds the right tool among the {total} tools this gateway offers from {services} \
             {service_word}: {}. Describe the task in plain words (\"refund an order\", \
             \"files changed today\"); results are ranked, best first, with each tool's name, \
             service and one-line description. Use it whenever a task may need a tool you have \
             not seen, before concluding none exists; then call the tool by name (or through \
             {CALL}), after {DESCRIBE} if you need its parameters.",
            lines.join("; ")
        )
    }
}

/// The text a tool is found by: its name three times (a name is the densest
/// description), its title and description, its parameters' names and descriptions,
/// and its service's name.
fn document(e: &Entry<'_>) -> String {
    let name = split_identifiers(&e.tool.name);
    let mut text = format!("{name} {name} {name} {}", split_identifiers(e.service));
    if let Some(title) = &e.tool.title {
        text.push(' ');
        text.push_str(title);
    }
    if let Some(description) = &e.tool.description {
        text.push(' ');
        text.push_str(description);
    }
    if let Some(Value::Object(properties)) = e.tool.input_schema.get("properties") {
        for (param, schema) in properties {
            text.push(' ');
            text.push_str(&split_identifiers(param));
            if let Some(d) = schema.get("description").and_then(Value::as_str) {
                text.push(' ');
                text.push_str(d);
            }
        }
    }
    text
}

/// The words a tool's name and description are about, for the service summary, with
/// their weight (a name's words count twice): no stop words, no verbs every tool has,
/// no fragments.
fn topics_of(e: &Entry<'_>) -> Vec<(String, usize)> {
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .map(str::to_lowercase)
            .filter(|w| w.len() > 2 && !w.chars().all(|c| c.is_ascii_digit()))
            .filter(|w| !GENERIC.contains(&w.as_str()))
            .collect()
    };
    let mut weights: BTreeMap<String, usize> = BTreeMap::new();
    for w in words(&split_identifiers(&e.tool.name)) {
        weights.insert(w, 2);
    }
    if let Some(d) = &e.tool.description {
        // The first sentence says what the tool is about; the rest, how.
        for w in words(d.split(". ").next().unwrap_or(d)) {
            weights.entry(w).or_insert(1);
        }
    }
    weights.into_iter().collect()
}

/// Words that say nothing about what a tool is for.
const GENERIC: &[&str] = &[
    "the",
    "and",
    "for",
    "with",
    "from",
    "that",
    "this",
    "its",
    "into",
    "any",
    "all",
    "one",
    "get",
    "gets",
    "list",
    "lists",
    "set",
    "sets",
    "add",
    "adds",
    "create",
    "creates",
    "update",
    "updates",
    "delete",
    "deletes",
    "remove",
    "removes",
    "read",
    "reads",
    "write",
    "writes",
    "find",
    "finds",
    "search",
    "searches",
    "return",
    "returns",
    "returned",
    "given",
    "tool",
    "tools",
    "use",
    "used",
    "using",
    "can",
    "will",
    "may",
    "are",
    "was",
    "has",
    "have",
    "not",
    "new",
    "each",
    "per",
    "via",
    "about",
    "which",
    "when",
    "where",
    "what",
    "who",
    "how",
    "more",
    "also",
    "only",
    "like",
    "such",
    "other",
    "some",
    "them",
    "their",
    "your",
    "you",
    "our",
    "out",
    "but",
    "than",
    "then",
    "via",
    "test",
    "tests",
    "testing",
    "demo",
    "example",
    "call",
    "calls",
    "specified",
    "specific",
    "provided",
    "optional",
    "optionally",
    "multiple",
    "single",
    "based",
    "data",
    "information",
    "info",
    "details",
    "detail",
    "id",
    "ids",
];

/// `getUserById` → `get User By Id`; `read_text_file` → `read text file`; `HTTPServer` →
/// `HTTP Server`; digits apart from letters.
pub fn split_identifiers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' || c == '-' || c == '.' || c == '/' || c == ':' {
            out.push(' ');
            continue;
        }
        if i > 0 {
            let prev = chars[i - 1];
            let next = chars.get(i + 1).copied();
            let boundary = (c.is_uppercase() && prev.is_lowercase())
                || (c.is_uppercase()
                    && prev.is_uppercase()
                    && next.is_some_and(|n| n.is_lowercase()))
                || (c.is_ascii_digit() && prev.is_alphabetic())
                || (c.is_alphabetic() && prev.is_ascii_digit());
            if boundary {
                out.push(' ');
            }
        }
        out.push(c);
    }
    out
}

/// The English tokenizer over text whose identifiers were split first.
struct Words(DefaultTokenizer);

impl Words {
    fn new() -> Self {
        Words(
            DefaultTokenizer::builder()
                .language_mode(Language::English)
                .normalization(true)
                .stemming(true)
                .stopwords(true)
                .build(),
        )
    }
}

impl Tokenizer for Words {
    fn tokenize(&self, text: &str) -> Vec<String> {
        self.0.tokenize(&split_identifiers(text))
    }
}

/// Everyday words for what tools name otherwise: a query with one also asks, at half
/// the weight, for the others of its group. General task vocabulary (shopping, files,
/// people, notes, media), not any one server's names.
const SYNONYMS: &[&[&str]] = &[
    &["cart", "basket", "bag"],
    &["folder", "directory", "dir", "subfolder"],
    &[
        "remove", "delete", "erase", "forget", "drop", "discard", "wipe",
    ],
    &["find", "search", "locate", "lookup", "query"],
    &["show", "view", "display", "fetch", "see", "pull"],
    &["make", "create", "new", "start"],
    &[
        "change", "update", "edit", "modify", "replace", "fix", "tweak",
    ],
    &[
        "customer", "user", "account", "person", "people", "member", "shopper", "profile",
    ],
    &["buy", "purchase", "order", "checkout", "bought"],
    &["item", "product", "goods", "merchandise", "article"],
    &[
        "recommend",
        "suggest",
        "recommendation",
        "suggestion",
        "personalized",
        "taste",
        "preference",
        "favorite",
    ],
    &[
        "remember",
        "memory",
        "memorize",
        "recall",
        "knowledge",
        "know",
        "remembered",
    ],
    &[
        "link",
        "relation",
        "relationship",
        "connect",
        "associate",
        "related",
    ],
    &["note", "observation", "fact", "jot", "mention"],
    &["rename", "move", "relocate"],
    &["size", "metadata", "stat", "modified", "permissions"],
    &["tree", "structure", "hierarchy", "layout", "nested"],
    &["picture", "image", "photo", "media", "png", "jpg"],
    &["sum", "add", "plus", "total"],
    &["price", "cost", "money", "cheap", "expensive", "budget"],
    &["category", "kind", "type", "department"],
    &["save", "write", "store", "record", "keep"],
    &[
        "popular",
        "trending",
        "hot",
        "bestselling",
        "bestseller",
        "top",
        "most",
    ],
    &["similar", "alike", "comparable", "others", "alternative"],
    &["stock", "inventory", "available", "availability"],
    &[
        "stats",
        "statistics",
        "analytics",
        "sales",
        "revenue",
        "overall",
        "summary",
        "report",
    ],
    &["llm", "model", "sampling", "generate", "ai"],
    &["named", "pattern", "glob", "match", "matching", "wildcard"],
    &["say", "read", "contents", "text", "open"],
    &["entity", "entities", "node", "nodes", "thing", "things"],
    &["log", "logs", "logging", "messages"],
    &["wait", "slow", "long", "progress", "delay"],
    &["environment", "env", "variables", "config"],
    &["compress", "zip", "gzip", "archive"],
    &["ask", "prompt", "question", "elicit", "input"],
];

/// The query with each word's synonyms added (each once, at half the weight: the
/// query's own words count twice).
fn widened(query: &str) -> String {
    let mut out = format!("{query} {query}");
    let mut added = HashSet::new();
    for word in split_identifiers(query)
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
    {
        for group in SYNONYMS.iter().filter(|g| g.contains(&word.as_str())) {
            for other in group.iter().filter(|o| **o != word) {
                if added.insert(*other) {
                    out.push(' ');
                    out.push_str(other);
                }
            }
        }
    }
    out
}

fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The three meta-tools, `search_tools` described by `description`.
pub fn meta_tools(description: String) -> Vec<Tool> {
    let tool = |name: &str, description: String, input: Value, output: Option<Value>| {
        let mut value = json!({
            "name": name,
            "description": description,
            "inputSchema": input,
        });
        if let Some(output) = output {
            value["outputSchema"] = output;
            value["annotations"] = json!({"readOnlyHint": true, "openWorldHint": false});
        }
        serde_json::from_value::<Tool>(value).expect("a static tool definition")
    };
    vec![
        tool(
            SEARCH,
            description,
            json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "minLength": 1,
                              "description": "The task, in plain words."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                              "default": DEFAULT_LIMIT,
                              "description": "How many tools to return, best first."}
                },
                "required": ["query"],
                "additionalProperties": false
            }),
            Some(json!({
                "type": "object",
                "properties": {
                    "results": {"type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "service": {"type": "string"},
                            "tool": {"type": "string"},
                            "description": {"type": "string"},
                            "score": {"type": "number"}
                        },
                        "required": ["name", "service", "tool", "description", "score"]
                    }},
                    "total": {"type": "integer"}
                },
                "required": ["results", "total"]
            })),
        ),
        tool(
            DESCRIBE,
            format!(
                "Full definitions (description, input schema) of tools {SEARCH} found, by \
                 name (at most {MAX_DESCRIBE}), to call them with the right arguments."
            ),
            json!({
                "type": "object",
                "properties": {
                    "names": {"type": "array", "items": {"type": "string"},
                              "minItems": 1, "maxItems": MAX_DESCRIBE}
                },
                "required": ["names"],
                "additionalProperties": false
            }),
            Some(json!({
                "type": "object",
                "properties": {
                    "tools": {"type": "array", "items": {"type": "object"}},
                    "unknown": {"type": "array", "items": {"type": "string"}}
                },
                "required": ["tools", "unknown"]
            })),
        ),
        tool(
            CALL,
            format!(
                "Calls a tool by the name {SEARCH} gave, with its arguments (tools can also be \
                 called directly by that name)."
            ),
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "arguments": {"type": "object"}
                },
                "required": ["name"],
                "additionalProperties": false
            }),
            None,
        ),
    ]
}

/// Why a meta-tool's arguments are wrong, in the words a model can act on.
#[derive(Debug, PartialEq, Eq)]
pub struct BadArguments(pub String);

/// `search_tools`' arguments: the query and the limit.
pub fn search_arguments(
    arguments: Option<&serde_json::Map<String, Value>>,
) -> Result<(String, usize), BadArguments> {
    let empty = serde_json::Map::new();
    let arguments = arguments.unwrap_or(&empty);
    only(arguments, &["query", "limit"])?;
    let query = match arguments.get("query") {
        Some(Value::String(q)) if !q.trim().is_empty() => q.clone(),
        Some(Value::String(_)) => {
            return Err(BadArguments(
                "argument \"query\" is empty: describe the task in words".into(),
            ));
        }
        Some(_) => return Err(BadArguments("argument \"query\" must be a string".into())),
        None => {
            return Err(BadArguments(
                "missing argument \"query\" (the task, in words)".into(),
            ));
        }
    };
    let limit = match arguments.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIMIT,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
            _ => {
                return Err(BadArguments(format!(
                    "argument \"limit\" must be an integer from 1 to {MAX_LIMIT}"
                )));
            }
        },
    };
    Ok((query, limit))
}

/// `describe_tools`' names.
pub fn describe_arguments(
    arguments: Option<&serde_json::Map<String, Value>>,
) -> Result<Vec<String>, BadArguments> {
    let empty = serde_json::Map::new();
    let arguments = arguments.unwrap_or(&empty);
    only(arguments, &["names"])?;
    let wrong = || {
        BadArguments(format!(
            "argument \"names\" must be an array of 1 to {MAX_DESCRIBE} tool names"
        ))
    };
    let names = arguments
        .get("names")
        .and_then(Value::as_array)
        .ok_or_else(wrong)?;
    if names.is_empty() || names.len() > MAX_DESCRIBE {
        return Err(wrong());
    }
    names
        .iter()
        .map(|n| n.as_str().map(str::to_owned).ok_or_else(wrong))
        .collect()
}

/// `call_tool`'s tool name and arguments.
pub fn call_arguments(
    arguments: Option<&serde_json::Map<String, Value>>,
) -> Result<(String, Option<serde_json::Map<String, Value>>), BadArguments> {
    let empty = serde_json::Map::new();
    let arguments = arguments.unwrap_or(&empty);
    only(arguments, &["name", "arguments"])?;
    let name = match arguments.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => {
            return Err(BadArguments(
                "argument \"name\" must be the name of the tool to call".into(),
            ));
        }
    };
    if META.contains(&name.as_str()) {
        return Err(BadArguments(format!(
            "{CALL} calls the catalog's tools; call {name} directly"
        )));
    }
    let inner = match arguments.get("arguments") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o.clone()),
        Some(_) => {
            return Err(BadArguments(
                "argument \"arguments\" must be an object (the tool's own arguments)".into(),
            ));
        }
    };
    Ok((name, inner))
}

fn only(arguments: &serde_json::Map<String, Value>, known: &[&str]) -> Result<(), BadArguments> {
    match arguments.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(BadArguments(format!(
            "unknown argument \"{k}\" (expected {})",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, description: &str, params: Value) -> Tool {
        serde_json::from_value(json!({
            "name": name,
            "description": description,
            "inputSchema": {"type": "object", "properties": params}
        }))
        .expect("tool")
    }

    fn catalog() -> Vec<(Tool, &'static str)> {
        vec![
            (
                tool(
                    "getUserById",
                    "Look up one user's profile by id.",
                    json!({"id": {"type": "string", "description": "The user's id"}}),
                ),
                "user-service",
            ),
            (
                tool(
                    "getUserOrders",
                    "A user's past orders, newest first.",
                    json!({"userId": {"type": "string"}}),
                ),
                "shopping-service",
            ),
            (
                tool(
                    "addToBasket",
                    "Puts a product in the user's shopping basket.",
                    json!({"productId": {"type": "string"}, "quantity": {"type": "integer"}}),
                ),
                "shopping-service",
            ),
            (
                tool(
                    "read_text_file",
                    "Read the complete contents of a file as text.",
                    json!({"path": {"type": "string"}}),
                ),
                "files",
            ),
            (
                tool(
                    "directory_tree",
                    "A recursive tree view of files and directories.",
                    json!({"path": {"type": "string"}}),
                ),
                "files",
            ),
        ]
    }

    fn index(tools: &[(Tool, &'static str)]) -> Index {
        let entries: Vec<Entry<'_>> = tools
            .iter()
            .map(|(tool, service)| Entry { tool, service })
            .collect();
        Index::build(&entries)
    }

    fn best(index: &Index, tools: &[(Tool, &str)], query: &str) -> String {
        let (hits, _) = index.search(query, |_| true, 1);
        hits.first()
            .map(|(i, _)| tools[*i].0.name.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn identifiers_split_on_case_underscores_and_digits() {
        assert_eq!(split_identifiers("getUserById"), "get User By Id");
        assert_eq!(split_identifiers("read_text_file"), "read text file");
        assert_eq!(split_identifiers("HTTPServer2go"), "HTTP Server 2 go");
        assert_eq!(split_identifiers("list-allowed.dirs"), "list allowed dirs");
    }

    #[test]
    fn the_best_tool_for_a_task_in_plain_words_ranks_first() {
        let tools = catalog();
        let index = index(&tools);
        assert_eq!(best(&index, &tools, "what is in my cart"), "addToBasket");
        assert_eq!(
            best(&index, &tools, "show me the folder structure"),
            "directory_tree"
        );
        assert_eq!(
            best(&index, &tools, "open the notes file and read it"),
            "read_text_file"
        );
        assert_eq!(best(&index, &tools, "customer profile"), "getUserById");
        assert_eq!(
            best(&index, &tools, "orders a user placed"),
            "getUserOrders"
        );
        // Nothing matches: nothing is returned.
        assert_eq!(index.search("zebra xylophone", |_| true, 5).1, 0);
    }

    #[test]
    fn a_hidden_tool_is_never_ranked_counted_or_described() {
        let tools = catalog();
        let index = index(&tools);
        let hidden = |i: usize| tools[i].1 != "files";
        let (hits, total) = index.search("read a file", hidden, 10);
        assert!(hits.iter().all(|(i, _)| tools[*i].1 != "files"), "{hits:?}");
        assert!(hits.len() <= total);
        let description = index.describe(hidden);
        assert!(description.contains("3 tools"), "{description}");
        assert!(!description.contains("files ("), "{description}");
        let all = index.describe(|_| true);
        assert!(
            all.contains("5 tools") && all.contains("3 services"),
            "{all}"
        );
        assert!(all.contains("files (2 tools: "), "{all}");
    }

    #[test]
    fn auto_engages_above_either_threshold() {
        let s = Settings {
            mode: Mode::Auto,
            max_tools: 10,
            max_bytes: 1000,
        };
        assert!(!s.engaged(10, 1000));
        assert!(s.engaged(11, 10));
        assert!(s.engaged(1, 1001));
        assert!(
            Settings {
                mode: Mode::On,
                ..s
            }
            .engaged(0, 0)
        );
        assert!(
            !Settings {
                mode: Mode::Off,
                ..s
            }
            .engaged(1000, 1 << 30)
        );
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let args = |v: Value| v.as_object().cloned();
        assert_eq!(
            search_arguments(args(json!({"query": "refund", "limit": 3})).as_ref()),
            Ok(("refund".into(), 3))
        );
        assert!(
            search_arguments(None)
                .unwrap_err()
                .0
                .contains("missing argument \"query\"")
        );
        assert!(search_arguments(args(json!({"query": "x", "limit": 0})).as_ref()).is_err());
        assert!(search_arguments(args(json!({"query": "x", "limit": 51})).as_ref()).is_err());
        assert!(search_arguments(args(json!({"query": 3})).as_ref()).is_err());
        assert!(
            search_arguments(args(json!({"query": "x", "top": 3})).as_ref())
                .unwrap_err()
                .0
                .contains("unknown argument \"top\"")
        );
        assert!(describe_arguments(args(json!({"names": []})).as_ref()).is_err());
        assert!(describe_arguments(args(json!({"names": [1]})).as_ref()).is_err());
        assert_eq!(
            describe_arguments(args(json!({"names": ["a", "b"]})).as_ref()),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert!(call_arguments(args(json!({"name": CALL})).as_ref()).is_err());
        assert!(call_arguments(args(json!({"name": "x", "arguments": [1]})).as_ref()).is_err());
        assert_eq!(
            call_arguments(args(json!({"name": "x", "arguments": {"a": 1}})).as_ref()),
            Ok(("x".into(), args(json!({"a": 1}))))
        );
    }

    #[test]
    fn the_meta_tools_are_valid_definitions() {
        let tools = meta_tools("find things".into());
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, META);
        assert_eq!(tools[0].description.as_deref(), Some("find things"));
    }

    #[test]
    fn a_long_query_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_QUERY_BYTES);
        assert!(truncated(&long, MAX_QUERY_BYTES).len() <= MAX_QUERY_BYTES);
        let tools = catalog();
        let _ = index(&tools).search(&long, |_| true, 1);
    }
}
