//! The operator's command line: `gateway services|tools|calls|call|register|import|unregister`,
//! talking to a running gateway over its HTTP API (URL and token from flags or the
//! environment). Tables by default, `--json` for scripts. Exit status: 0 done, 1 the
//! gateway or the tool said no (an error answer, a tool error), 2 the gateway could not
//! be reached or the command line was wrong.
//!
//! Whatever the gateway answers is partly written by others (upstreams name their tools
//! and describe them, JWTs name identities, errors quote backends), so every string this
//! prints goes through [`printable`] (or [`json_out`] for `--json`): a terminal shows
//! control and bidi characters as escapes, never obeys them.
//!
//! Invariant: the CLI is only an HTTP client of a running gateway; it reads no store and
//! shares no state with it.

use std::{borrow::Cow, time::Duration};

use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::{Value, json};

/// Where the gateway is and how to get in.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// The gateway's base URL.
    #[arg(
        long,
        env = "GATEWAY_URL",
        default_value = "http://127.0.0.1:3001",
        global = true
    )]
    pub url: String,
    /// Bearer token.
    #[arg(long, env = "MCP_BEARER_TOKEN", default_value = service_kit::DEFAULT_TOKEN, global = true, hide_default_value = true)]
    pub token: String,
    /// Print the gateway's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Registered services: state, instances, tools and call statistics.
    Services,
    /// Virtual servers: name, endpoint, what they expose, tools now, tool search.
    Servers,
    /// The live replicas of the gateway's cluster (a PostgreSQL store), and whether the
    /// store answers.
    Cluster,
    /// Every tool in the merged table, with its service.
    Tools {
        /// Only tools whose name or description contains this (any case).
        #[arg(long)]
        search: Option<String>,
    },
    /// Recent calls from the call log, newest first.
    Calls {
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        tool: Option<String>,
        #[arg(long)]
        identity: Option<String>,
        /// ok, tool_error, error, timeout, unavailable, circuit_open or cancelled.
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Calls a tool through the gateway and prints its result.
    Call {
        /// The tool's public name.
        tool: String,
        /// The arguments, a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
    },
    /// Registers an MCP server (POST /register).
    Register {
        name: String,
        /// Its MCP endpoint (`http://host:port/mcp`).
        #[arg(value_name = "URL")]
        endpoint: String,
        #[arg(long)]
        weight: Option<u32>,
        /// Replace every instance of the service with this one.
        #[arg(long)]
        replace: bool,
        /// A Bearer token the gateway presents to this server.
        #[arg(long)]
        upstream_bearer: Option<String>,
    },
    /// Registers the servers of an MCP registry `server.json` (a file) or of a registry
    /// URL (a server.json, or a `/v0.1/servers` listing the gateway fetches and pages
    /// through) (POST /registry/import): remotes as HTTP servers, npm and PyPI packages
    /// as stdio servers (npx, uvx); all or none.
    Import {
        /// A server.json file, or an http(s) URL the gateway fetches.
        #[arg(value_name = "FILE|URL")]
        source: String,
        /// A variable's value, `NAME=VALUE`; `NAME` alone takes the value of this
        /// environment variable (keeps a secret off the command line). Repeatable.
        #[arg(long = "var", value_name = "NAME[=VALUE]")]
        vars: Vec<String>,
        /// The service name (one server only).
        #[arg(long)]
        name: Option<String>,
        /// Check and show what would be registered; register nothing.
        #[arg(long)]
        dry_run: bool,
        /// Skip what the gateway cannot run (OCI packages, ...) instead of refusing.
        #[arg(long)]
        skip_unsupported: bool,
    },
    /// Removes a service, or one instance of it.
    Unregister {
        name: String,
        /// Only this instance (its URL or id).
        #[arg(long)]
        instance: Option<String>,
    },
    /// Starts a stopped or failed service (a stdio server with a fresh restart budget).
    Start { name: String },
    /// Stops a service: its stdio processes end; calls fail until it is started.
    Stop { name: String },
    /// Stops and starts a service (new stdio processes).
    Restart { name: String },
    /// What a stdio server's processes wrote to stderr (the last 200 lines each).
    Logs { name: String },
}

/// Why a command failed, and its exit status.
pub struct Failure {
    pub status: i32,
    pub message: String,
}

fn unreachable(remote: &Remote, e: reqwest::Error) -> Failure {
    Failure {
        status: 2,
        message: format!(
            "cannot reach the gateway at {}: {}",
            printable(&remote.url),
            printable(&service_kit::client::root_cause(&e))
        ),
    }
}

struct Client {
    http: reqwest::Client,
    remote: Remote,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.remote.url.trim_end_matches('/'))
    }

    /// Sends, and reads a JSON answer; a non-2xx answer is a failure with its message.
    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = rb
            .bearer_auth(&self.remote.token)
            .send()
            .await
            .map_err(|e| unreachable(&self.remote, e))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| unreachable(&self.remote, e))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(body);
        }
        let message = body["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| body.to_string());
        Err(Failure {
            status: 1,
            message: format!("the gateway answered {status}: {}", printable(&message)),
        })
    }

    async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send(self.http.get(self.url(path))).await
    }

    async fn rpc(&self, method: &str, params: Value) -> Result<Value, Failure> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let answer = self
            .send(self.http.post(self.url("/mcp")).json(&body))
            .await?;
        if let Some(e) = answer.get("error") {
            return Err(Failure {
                status: 1,
                message: format!(
                    "{method} failed: {} (code {})",
                    printable(e["message"].as_str().unwrap_or("no message")),
                    printable(&e["code"].to_string())
                ),
            });
        }
        Ok(answer["result"].clone())
    }
}

/// Whether `c` may not reach a terminal as itself: C0 and C1 controls and DEL (escape
/// sequences, CR/LF, NUL), the bidi embeddings, overrides, isolates and marks that make
/// text read differently from how it is stored, and the Unicode line separators.
fn hostile(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every [`hostile`] character but those `keep` allows written out by `write`
/// as an escape, so a terminal shows it as text instead of obeying it.
fn escape(s: &str, keep: impl Fn(char) -> bool, write: impl Fn(char, &mut String)) -> Cow<'_, str> {
    if !s.chars().any(|c| hostile(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if hostile(c) && !keep(c) {
            write(c, &mut out);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Rust's escape of `c`: `\u{1b}`.
fn rust_escape(c: char, out: &mut String) {
    out.extend(c.escape_unicode());
}

/// One line of text others wrote (a name, a table cell, an error message), safe to
/// print: no control or bidi character left, not even a line break; each is shown as
/// its escape (`\u{1b}`).
fn printable(s: &str) -> Cow<'_, str> {
    escape(s, |_| false, rust_escape)
}

/// Text others wrote that may run over lines (a tool's text result): as [`printable`],
/// but line feeds and tabs stay.
fn printable_lines(s: &str) -> Cow<'_, str> {
    escape(s, |c| c == '\n' || c == '\t', rust_escape)
}

/// `--json` output: the pretty JSON of `v`, with the characters serde_json leaves as they
/// are but a terminal might obey (DEL, C1 controls, bidi) written as JSON escapes
/// (`\u009b`): the same JSON, printed as text. (Outside strings serde_json writes no
/// such character, and inside one an escape means the same.)
fn json_out(v: &Value) -> String {
    let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
    let json_escape = |c: char, out: &mut String| {
        for unit in c.encode_utf16(&mut [0u16; 2]) {
            out.push_str(&format!("\\u{unit:04x}"));
        }
    };
    escape(&pretty, |c| c == '\n', json_escape).into_owned()
}

/// A table of `rows`, each cell made [`printable`].
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_header(headers.to_vec());
    for row in rows {
        t.add_row(row.iter().map(|cell| printable(cell).into_owned()));
    }
    t.to_string()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |m| format!("{m:.1} ms"))
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// Runs `command`; what to print on success.
pub async fn run(remote: Remote, command: Command) -> Result<String, Failure> {
    let http = service_kit::client::http_client_builder(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Failure {
            status: 2,
            message: e.to_string(),
        })?;
    let client = Client {
        http,
        remote: remote.clone(),
    };
    let json = remote.json;
    match command {
        Command::Services => {
            let body = client.get("/services").await?;
            if json {
                return Ok(json_out(&body));
            }
            Ok(services_table(&body))
        }
        Command::Cluster => {
            let body = client.get("/health").await?;
            if json {
                return Ok(json_out(&body["cluster"]));
            }
            Ok(cluster_table(&body))
        }
        Command::Servers => {
            let body = client.get("/virtual-servers").await?;
            if json {
                return Ok(json_out(&body));
            }
            Ok(servers_table(&body))
        }
        Command::Tools { search } => {
            let body = client.get("/services").await?;
            let tools = tools_matching(&body, search.as_deref());
            if json {
                return Ok(json_out(&json!({ "count": tools.len(), "tools": tools })));
            }
            Ok(tools_table(&tools))
        }
        Command::Calls {
            service,
            tool,
            identity,
            outcome,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("service", service),
                ("tool", tool),
                ("identity", identity),
                ("outcome", outcome),
            ] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            let body = client
                .send(client.http.get(with_query(&client.url("/calls"), &query)))
                .await?;
            if json {
                return Ok(json_out(&body));
            }
            Ok(calls_table(&body))
        }
        Command::Call { tool, args } => {
            let arguments: Value = serde_json::from_str(&args).map_err(|e| Failure {
                status: 2,
                message: format!("--args must be a JSON object: {e}"),
            })?;
            if !arguments.is_object() {
                return Err(Failure {
                    status: 2,
                    message: "--args must be a JSON object, like '{\"id\": \"p1\"}'".into(),
                });
            }
            let result = client
                .rpc("tools/call", json!({"name": tool, "arguments": arguments}))
                .await?;
            let failed = result["isError"] == true;
            let out = if json {
                json_out(&result)
            } else if let Some(structured) = result.get("structuredContent") {
                json_out(structured)
            } else {
                result["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| match c["type"].as_str() {
                        Some("text") => printable_lines(&text(&c["text"])).into_owned(),
                        _ => json_out(c),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            if failed {
                return Err(Failure {
                    status: 1,
                    message: format!("the tool reported an error:\n{out}"),
                });
            }
            Ok(out)
        }
        Command::Register {
            name,
            endpoint: url,
            weight,
            replace,
            upstream_bearer,
        } => {
            let mut body = json!({"name": name, "url": url, "replace": replace});
            if let Some(w) = weight {
                body["weight"] = json!(w);
            }
            if let Some(token) = upstream_bearer {
                body["auth"] = json!({"bearer": token});
            }
            let answer = client
                .send(client.http.post(client.url("/register")).json(&body))
                .await?;
            if json {
                return Ok(json_out(&answer));
            }
            let tools = answer["registered"]["toolCount"].as_u64().unwrap_or(0);
            Ok(format!(
                "registered {} ({}): instance {}, {tools} tools{}",
                printable(&name),
                printable(&url),
                printable(&text(&answer["instance"])),
                if answer["replaced"] == true {
                    ", refreshed"
                } else {
                    ""
                }
            ))
        }
        Command::Import {
            source,
            vars,
            name,
            dry_run,
            skip_unsupported,
        } => {
            let body = import_body(&source, &vars, name, dry_run, skip_unsupported)?;
            let answer = client
                .send(client.http.post(client.url("/registry/import")).json(&body))
                .await?;
            if json {
                return Ok(json_out(&answer));
            }
            Ok(import_summary(&answer))
        }
        Command::Unregister { name, instance } => {
            let mut url = client.url(&format!("/services/{name}"));
            if let Some(i) = &instance {
                url = with_query(&url, &[("url", i.clone())]);
            }
            let answer = client.send(client.http.delete(url)).await?;
            if json {
                return Ok(json_out(&answer));
            }
            Ok(format!(
                "unregistered {}: {} instance(s) removed",
                printable(&name),
                printable(&text(&answer["instances"]))
            ))
        }
        Command::Start { name } => control(&client, &name, "start", json).await,
        Command::Stop { name } => control(&client, &name, "stop", json).await,
        Command::Restart { name } => control(&client, &name, "restart", json).await,
        Command::Logs { name } => {
            let body = client.get(&format!("/services/{name}/logs")).await?;
            if json {
                return Ok(json_out(&body));
            }
            let instances = body["instances"].as_array().cloned().unwrap_or_default();
            let several = instances.len() > 1;
            let mut out = Vec::new();
            for i in &instances {
                for line in i["lines"].as_array().into_iter().flatten() {
                    let line = printable(&text(line)).into_owned();
                    out.push(if several {
                        format!("[{}] {line}", printable(&text(&i["url"])))
                    } else {
                        line
                    });
                }
            }
            Ok(out.join("\n"))
        }
    }
}

/// The body of `POST /registry/import`: a URL as is, a file's JSON inline.
fn import_body(
    source: &str,
    vars: &[String],
    name: Option<String>,
    dry_run: bool,
    skip_unsupported: bool,
) -> Result<Value, Failure> {
    let usage = |message: String| Failure { status: 2, message };
    let source = if source.starts_with("http://") || source.starts_with("https://") {
        Value::String(source.to_string())
    } else {
        let text = std::fs::read_to_string(source)
            .map_err(|e| usage(format!("cannot read {}: {e}", printable(source))))?;
        serde_json::from_str(&text)
            .map_err(|e| usage(format!("{} is not JSON: {e}", printable(source))))?
    };
    let mut variables = serde_json::Map::new();
    for var in vars {
        let (k, v) = match var.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => {
                let v = std::env::var(var).map_err(|_| {
                    usage(format!(
                        "--var {}: give NAME=VALUE, or set the environment variable {}",
                        printable(var),
                        printable(var)
                    ))
                })?;
                (var.clone(), v)
            }
        };
        variables.insert(k, Value::String(v));
    }
    let mut body = json!({
        "source": source,
        "variables": variables,
        "dryRun": dry_run,
        "skipUnsupported": skip_unsupported,
    });
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    Ok(body)
}

/// One line per server an import registered (or would), then what it skipped.
fn import_summary(answer: &Value) -> String {
    let dry = answer["dryRun"] == true;
    let mut out = Vec::new();
    for s in answer["servers"].as_array().into_iter().flatten() {
        let what = match s["url"].as_str() {
            Some(url) => url.to_string(),
            None => {
                let mut line = text(&s["command"]);
                for a in s["args"].as_array().into_iter().flatten() {
                    line.push(' ');
                    line.push_str(&text(a));
                }
                line
            }
        };
        out.push(format!(
            "{} {} ({} {}): {}",
            if dry { "would register" } else { "registered" },
            printable(&text(&s["name"])),
            printable(&text(&s["kind"])),
            printable(&text(&s["server"])),
            printable(&what)
        ));
    }
    for s in answer["skipped"].as_array().into_iter().flatten() {
        out.push(format!(
            "skipped {}: {}",
            printable(&text(&s["server"])),
            printable(&text(&s["reason"]))
        ));
    }
    out.join("\n")
}

/// `POST /services/{name}/{action}`, then the service's state and each instance's.
async fn control(client: &Client, name: &str, action: &str, json: bool) -> Result<String, Failure> {
    let url = client.url(&format!("/services/{name}/{action}"));
    let answer = client.send(client.http.post(url)).await?;
    if json {
        return Ok(json_out(&answer));
    }
    let mut out = vec![format!(
        "{} {}: {}",
        action,
        printable(name),
        printable(&text(&answer["state"]))
    )];
    for i in answer["instances"].as_array().into_iter().flatten() {
        let pid = &i["process"]["pid"];
        out.push(format!(
            "  {} {}{}{}",
            printable(&text(&i["url"])),
            printable(&text(&i["state"])),
            if pid.is_null() {
                String::new()
            } else {
                format!(" pid {pid}")
            },
            i["lastError"]
                .as_str()
                .map(|e| format!(" ({})", printable(e)))
                .unwrap_or_default()
        ));
    }
    Ok(out.join("\n"))
}

/// The `services` table of a `/services` answer.
fn services_table(body: &Value) -> String {
    let rows = body["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let stats = &s["stats"];
            vec![
                text(&s["name"]),
                text(&s["state"]),
                s["instances"].as_array().map_or(0, Vec::len).to_string(),
                text(&s["toolCount"]),
                stats["calls"]
                    .as_u64()
                    .map_or("-".into(), |c| c.to_string()),
                stats["errorRate"]
                    .as_f64()
                    .map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
                ms(&stats["p95Ms"]),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE",
            "STATE",
            "INSTANCES",
            "TOOLS",
            "CALLS",
            "ERRORS",
            "P95",
        ],
        rows,
    )
}

/// The tools of a `/services` answer whose name or description contains `search` (any
/// case), each with its `service`.
fn tools_matching(body: &Value, search: Option<&str>) -> Vec<Value> {
    let needle = search.map(str::to_lowercase);
    let mut tools: Vec<Value> = Vec::new();
    for s in body["services"].as_array().into_iter().flatten() {
        for t in s["tools"].as_array().into_iter().flatten() {
            let hay = format!("{} {}", text(&t["name"]), text(&t["description"])).to_lowercase();
            if needle.as_deref().is_none_or(|n| hay.contains(n)) {
                let mut t = t.clone();
                t["service"] = s["name"].clone();
                tools.push(t);
            }
        }
    }
    tools
}

/// The `tools` table.
fn tools_table(tools: &[Value]) -> String {
    let rows = tools
        .iter()
        .map(|t| {
            vec![
                text(&t["name"]),
                text(&t["service"]),
                shorten(&text(&t["description"]), 60),
            ]
        })
        .collect();
    table(&["TOOL", "SERVICE", "DESCRIPTION"], rows)
}

/// The `servers` table of a `/virtual-servers` answer.
fn servers_table(body: &Value) -> String {
    let list = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let rows = body["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let d = &s["definition"];
            let renamed = d["rename"].as_object().map_or(0, |r| r.len());
            vec![
                text(&s["name"]),
                text(&s["endpoint"]),
                shorten(&list(&d["tools"]), 50),
                s["toolCount"].as_u64().unwrap_or(0).to_string(),
                renamed.to_string(),
                d["tool_search"].as_str().unwrap_or("default").to_string(),
                if s["configured"] == true {
                    "config"
                } else {
                    "registered"
                }
                .to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SERVER", "ENDPOINT", "TOOLS", "NOW", "RENAMED", "SEARCH", "SOURCE",
        ],
        rows,
    )
}

/// The replicas of a `/health` answer's `cluster`, or why there are none.
fn cluster_table(body: &Value) -> String {
    let cluster = &body["cluster"];
    if cluster.is_null() {
        return "this gateway is not a replica of a cluster: its store is a SQLite file (set store to a postgres:// URL to share one)\n".into();
    }
    let rows = cluster["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                format!(
                    "{}{}",
                    text(&r["id"]),
                    if r["current"] == true { " *" } else { "" }
                ),
                text(&r["host"]),
                text(&r["address"]),
                format_time(r["startedAtMs"].as_i64().unwrap_or(0)),
                format_time(r["seenAtMs"].as_i64().unwrap_or(0)),
            ]
        })
        .collect();
    let store = if cluster["storeAvailable"] == true {
        "the store answers"
    } else {
        "the store is UNAVAILABLE: calls are served from memory, registrations get 503"
    };
    format!(
        "{}{store}; * marks the replica that answered\n",
        table(&["REPLICA", "HOST", "LISTEN", "STARTED", "LAST SEEN"], rows)
    )
}

/// The `calls` table of a `/calls` answer.
fn calls_table(body: &Value) -> String {
    let rows = body["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let at = c["at"].as_i64().unwrap_or(0);
            vec![
                format_time(at),
                text(&c["identity"]),
                text(&c["service"]),
                text(&c["tool"]),
                text(&c["outcome"]),
                ms(&c["durationMs"]),
                shorten(&text(&c["error"]), 50),
            ]
        })
        .collect();
    table(
        &[
            "TIME (UTC)",
            "IDENTITY",
            "SERVICE",
            "TOOL",
            "OUTCOME",
            "DURATION",
            "ERROR",
        ],
        rows,
    )
}

/// `base` with `pairs` as its (encoded) query.
fn with_query(base: &str, pairs: &[(&str, String)]) -> String {
    match url::Url::parse(base) {
        Ok(mut u) => {
            u.query_pairs_mut()
                .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
            u.to_string()
        }
        Err(_) => base.to_string(),
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time in ms.
fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// A string an upstream or a token could carry: a terminal title change and bell,
    /// a screen clear, CR/LF and NUL, DEL, an 8-bit CSI (C1), and bidi overrides,
    /// isolates and marks.
    const HOSTILE: &str = "ok\u{1b}]0;owned\u{7}\u{1b}[2J\r\nfake row\0\u{7f}\u{9b}31m\u{202e}gpj.exe\u{2066}\u{2069}\u{200e}\u{200f}\u{061c}\u{2028}\u{85}";

    /// Every character of `out` is shown as itself; the only line breaks are the table's.
    fn assert_inert(out: &str) {
        for c in out.chars() {
            assert!(
                c == '\n' || !hostile(c),
                "{:?} reached the terminal in {out:?}",
                c
            );
        }
    }

    #[test]
    fn import_sends_a_url_as_is_and_a_file_inline_with_its_variables() {
        let body = import_body(
            "http://127.0.0.1:9/v0.1/servers",
            &["port=8080".into(), "KEY=a=b".into()],
            None,
            true,
            false,
        )
        .unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(body["source"], "http://127.0.0.1:9/v0.1/servers");
        assert_eq!(body["variables"], json!({"port": "8080", "KEY": "a=b"}));
        assert_eq!(body["dryRun"], true);
        assert!(body.get("name").is_none());

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("server.json");
        std::fs::write(&file, r#"{"name": "a/b", "remotes": []}"#).expect("write");
        let path = file.to_string_lossy().into_owned();
        let body = import_body(&path, &[], Some("b".into()), false, true)
            .unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(body["source"]["name"], "a/b");
        assert_eq!(body["name"], "b");
        assert_eq!(body["skipUnsupported"], true);

        let unset = "GATEWAY_TEST_SURELY_UNSET_VARIABLE";
        let failure = import_body(&path, &[unset.into()], None, false, false)
            .expect_err("an unset variable is a usage error");
        assert_eq!(failure.status, 2);
        assert!(failure.message.contains(unset), "{}", failure.message);
        let failure = import_body("/nonexistent/server.json", &[], None, false, false)
            .expect_err("a missing file");
        assert_eq!(failure.status, 2);
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_time(1_795_340_186_632), "2026-11-22 09:36:26");
    }

    #[test]
    fn controls_and_bidi_characters_are_shown_as_escapes() {
        assert_eq!(
            printable("red\u{1b}[31m\r\n\0\u{7f}\u{9b}\u{202e}\u{2067}\u{200f}end"),
            "red\\u{1b}[31m\\u{d}\\u{a}\\u{0}\\u{7f}\\u{9b}\\u{202e}\\u{2067}\\u{200f}end"
        );
        for c in [
            '\u{0}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}', '\u{202a}', '\u{202e}',
        ]
        .into_iter()
        .chain([
            '\u{2066}', '\u{2069}', '\u{200e}', '\u{200f}', '\u{61c}', '\t',
        ]) {
            let shown = printable(&c.to_string()).into_owned();
            assert_eq!(shown, c.escape_unicode().to_string());
        }
        assert_inert(&printable(HOSTILE));
        // Everything else is left alone, borrowed.
        for fine in [
            "getProductById",
            "Prix: 12,50 € — 日本語 🚀",
            "a\\u{1b} typed out",
            "",
        ] {
            assert!(matches!(printable(fine), Cow::Borrowed(s) if s == fine));
        }
        // Multi-line text keeps its lines and tabs, nothing else.
        assert_eq!(
            printable_lines("a\tb\nc\r\u{1b}[1A"),
            "a\tb\nc\\u{d}\\u{1b}[1A"
        );
    }

    #[test]
    fn json_output_is_the_same_json_without_characters_a_terminal_obeys() {
        let v = json!({"description": HOSTILE, "nested": [HOSTILE, {"k": "plain"}]});
        let out = json_out(&v);
        assert_inert(&out);
        assert_eq!(serde_json::from_str::<Value>(&out).expect("still JSON"), v);
        assert!(out.contains("\\u009b") && out.contains("\\u202e"), "{out}");
        assert_eq!(json_out(&json!({"a": "b"})), "{\n  \"a\": \"b\"\n}");
    }

    #[test]
    fn tables_show_hostile_names_descriptions_identities_and_errors_as_text() {
        let services = json!({"services": [{
            "name": HOSTILE, "state": HOSTILE, "instances": [{}], "toolCount": 1,
            "stats": {"calls": 3, "errorRate": 0.5, "p95Ms": 1.5},
            "tools": [{"name": HOSTILE, "description": HOSTILE}],
        }]});
        let table = services_table(&services);
        assert_inert(&table);
        assert!(table.contains("ok\\u{1b}]0;owned\\u{7}"), "{table}");
        // One row: header, rule, row and the borders; no line was injected.
        assert_eq!(table.lines().count(), 5, "{table}");

        let tools = tools_matching(&services, Some("OWNED"));
        assert_eq!(tools.len(), 1);
        let table = tools_table(&tools);
        assert_inert(&table);
        assert!(table.contains("\\u{202e}gpj.exe"), "{table}");
        assert_eq!(table.lines().count(), 5, "{table}");
        // A long description is cut, then escaped: no escape is left half-written.
        let long = format!("{}\u{1b}[2J", "x".repeat(58));
        let table = tools_table(&[json!({"name": "t", "service": "s", "description": long})]);
        assert_inert(&table);
        assert!(table.contains("\\u{1b}…"), "{table}");

        let calls = json!({"calls": [{
            "at": 0, "identity": format!("jwt:{HOSTILE}"), "service": HOSTILE,
            "tool": HOSTILE, "outcome": "error", "durationMs": 2.0, "error": HOSTILE,
        }]});
        let table = calls_table(&calls);
        assert_inert(&table);
        assert!(table.contains("jwt:ok\\u{1b}"), "{table}");
        assert_eq!(table.lines().count(), 5, "{table}");
    }
}
