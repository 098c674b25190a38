//! The operator's command line: `gateway services|tools|calls|call|register|unregister`,
//! talking to a running gateway over its HTTP API (URL and token from flags or the
//! environment). Tables by default, `--json` for scripts. Exit status: 0 done, 1 the
//! gateway or the tool said no (an error answer, a tool error), 2 the gateway could not
//! be reached or the command line was wrong.

use std::time::Duration;

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
    /// Removes a service, or one instance of it.
    Unregister {
        name: String,
        /// Only this instance (its URL or id).
        #[arg(long)]
        instance: Option<String>,
    },
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
            remote.url,
            service_kit::client::root_cause(&e)
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
            message: format!("the gateway answered {status}: {message}"),
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
                    e["message"].as_str().unwrap_or("no message"),
                    e["code"]
                ),
            });
        }
        Ok(answer["result"].clone())
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_header(headers.to_vec());
    for row in rows {
        t.add_row(row);
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
    let json_out = remote.json;
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    match command {
        Command::Services => {
            let body = client.get("/services").await?;
            if json_out {
                return Ok(pretty(&body));
            }
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
            Ok(table(
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
            ))
        }
        Command::Tools { search } => {
            let body = client.get("/services").await?;
            let needle = search.as_deref().map(str::to_lowercase);
            let mut tools: Vec<Value> = Vec::new();
            for s in body["services"].as_array().into_iter().flatten() {
                for t in s["tools"].as_array().into_iter().flatten() {
                    let hay =
                        format!("{} {}", text(&t["name"]), text(&t["description"])).to_lowercase();
                    if needle.as_deref().is_none_or(|n| hay.contains(n)) {
                        let mut t = t.clone();
                        t["service"] = s["name"].clone();
                        tools.push(t);
                    }
                }
            }
            if json_out {
                return Ok(pretty(&json!({ "count": tools.len(), "tools": tools })));
            }
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
            Ok(table(&["TOOL", "SERVICE", "DESCRIPTION"], rows))
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
            if json_out {
                return Ok(pretty(&body));
            }
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
            Ok(table(
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
            ))
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
            let out = if json_out {
                pretty(&result)
            } else if let Some(structured) = result.get("structuredContent") {
                pretty(structured)
            } else {
                result["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| match c["type"].as_str() {
                        Some("text") => text(&c["text"]),
                        _ => pretty(c),
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
            if json_out {
                return Ok(pretty(&answer));
            }
            let tools = answer["registered"]["toolCount"].as_u64().unwrap_or(0);
            Ok(format!(
                "registered {name} ({url}): instance {}, {tools} tools{}",
                text(&answer["instance"]),
                if answer["replaced"] == true {
                    ", refreshed"
                } else {
                    ""
                }
            ))
        }
        Command::Unregister { name, instance } => {
            let mut url = client.url(&format!("/services/{name}"));
            if let Some(i) = &instance {
                url = with_query(&url, &[("url", i.clone())]);
            }
            let answer = client.send(client.http.delete(url)).await?;
            if json_out {
                return Ok(pretty(&answer));
            }
            Ok(format!(
                "unregistered {name}: {} instance(s) removed",
                text(&answer["instances"])
            ))
        }
    }
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
    #[test]
    fn times_are_utc() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_time(1_795_340_186_632), "2026-11-22 09:36:26");
    }
}
