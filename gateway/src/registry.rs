//! The set of upstreams: registration, replacement, removal, persistence (through
//! [`crate::store`]) and the catalog snapshot derived from them. Every change rebuilds the
//! catalog and swaps it in atomically, then tells connected clients that the tool list
//! changed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use rmcp::{Peer, RoleServer, model::Tool};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    catalog::{Catalog, SEPARATOR},
    config::Config,
    store::{Store, StoredService},
    upstream::{self, Listener, Source, Upstream},
};

/// Why a registration was refused; each maps to an HTTP status in `http::admin`.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot register \"{name}\": {url} does not answer MCP: {cause}")]
    Unreachable {
        name: String,
        url: String,
        cause: String,
    },
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

pub struct Registry {
    upstreams: Mutex<HashMap<String, Arc<Upstream>>>,
    catalog: ArcSwap<Catalog>,
    store: Arc<Store>,
    options: upstream::Options,
    shutdown: CancellationToken,
    clients: Arc<Mutex<Vec<Peer<RoleServer>>>>,
    /// Serializes registrations so two concurrent ones for one name cannot interleave.
    register_lock: tokio::sync::Mutex<()>,
}

/// One line of `/services`.
#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub url: String,
    pub source: Source,
    #[serde(flatten)]
    pub status: upstream::Status,
    pub tool_count: usize,
    pub tools: Vec<ToolView>,
}

#[derive(Debug, Serialize)]
pub struct ToolView {
    /// Name in the gateway's merged table.
    pub name: String,
    /// Name at the service (differs when qualified).
    #[serde(rename = "originalName")]
    pub original_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Service names: 1-64 of `[A-Za-z0-9_-]`, starting with a letter or digit, without the
/// qualifying separator `__` (so qualified tool names split unambiguously).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!(
            "service name must be 1-64 characters, got {}",
            name.len()
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "service name {name:?} may only contain letters, digits, '-' and '_'"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "service name {name:?} must start with a letter or digit"
        ));
    }
    if name.contains(SEPARATOR) {
        return Err(format!(
            "service name {name:?} must not contain \"{SEPARATOR}\" (it separates service and tool in qualified names)"
        ));
    }
    Ok(())
}

/// An http(s) URL; a URL without a path means the conventional `/mcp` endpoint.
pub fn normalize_url(raw: &str) -> Result<String, String> {
    let mut url = url::Url::parse(raw.trim()).map_err(|e| format!("invalid URL {raw:?}: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "URL {raw:?} must use http or https, not {}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL {raw:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("URL {raw:?} must not carry credentials in it"));
    }
    if url.fragment().is_some() {
        return Err(format!("URL {raw:?} must not have a fragment"));
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/mcp");
    }
    Ok(url.to_string())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Forwards supervisor events to the registry without keeping it alive.
struct RegistryListener(std::sync::Weak<Registry>);

impl Listener for RegistryListener {
    fn tools_changed(&self, upstream: &Arc<Upstream>) {
        if let Some(registry) = self.0.upgrade() {
            registry.on_tools_changed(upstream);
        }
    }
}

impl Registry {
    /// Opens the store and starts every persisted and configured upstream. Start-up never
    /// waits for a backend: unreachable ones are listed with their last-known tools and
    /// retried in the background.
    pub fn start(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Arc<Self>> {
        let store = Arc::new(Store::open(&config.store)?);
        let registry = Arc::new(Self {
            upstreams: Mutex::new(HashMap::new()),
            catalog: ArcSwap::from_pointee(Catalog::default()),
            store: Arc::clone(&store),
            options: upstream::Options {
                connect_timeout: config.connect_timeout(),
                call_timeout: config.call_timeout(),
                health_interval: config.health_interval(),
            },
            shutdown,
            clients: Arc::new(Mutex::new(Vec::new())),
            register_lock: tokio::sync::Mutex::new(()),
        });
        let stored = store.load()?;
        let stored_names: std::collections::HashSet<String> =
            stored.iter().map(|s| s.name.clone()).collect();
        for s in stored {
            tracing::info!(service = %s.name, url = %s.url, tools = s.tools.len(),
                "restoring registration from store");
            let up = Upstream::new(
                &s.name,
                &s.url,
                Source::Registered,
                s.tools,
                registry.options.clone(),
                &registry.shutdown,
            );
            registry.insert(up);
        }
        for spec in &config.upstreams {
            if stored_names.contains(&spec.name) {
                // A registration made at run time is newer than the file: it wins.
                continue;
            }
            let url = normalize_url(&spec.url).map_err(anyhow::Error::msg)?;
            let up = Upstream::new(
                &spec.name,
                &url,
                Source::Config,
                Vec::new(),
                registry.options.clone(),
                &registry.shutdown,
            );
            registry.insert(up);
        }
        registry.rebuild();
        Ok(registry)
    }

    fn listener(self: &Arc<Self>) -> Arc<dyn Listener> {
        Arc::new(RegistryListener(Arc::downgrade(self)))
    }

    /// Puts `up` in the map (closing any previous one of that name) and supervises it.
    fn insert(self: &Arc<Self>, up: Arc<Upstream>) -> Option<Arc<Upstream>> {
        let old = self
            .upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(up.name.to_string(), Arc::clone(&up));
        if let Some(old) = &old {
            old.close();
        }
        tokio::spawn(Arc::clone(&up).supervise(self.listener()));
        old
    }

    fn on_tools_changed(&self, up: &Arc<Upstream>) {
        // Ignore a supervisor that lost a race with replacement.
        let current = self
            .upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&*up.name)
            .is_some_and(|u| Arc::ptr_eq(u, up));
        if !current {
            return;
        }
        if up.source == Source::Registered {
            let store = Arc::clone(&self.store);
            let name = up.name.to_string();
            let tools = up.tools();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.update_tools(&name, &tools) {
                    tracing::warn!("{e}");
                }
            });
        }
        self.rebuild();
    }

    /// Rebuilds the catalog from the current upstreams and announces the change.
    fn rebuild(&self) {
        let ups: Vec<Arc<Upstream>> = self
            .upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let next = Catalog::build(&ups);
        let changed = {
            let prev = self.catalog.load();
            prev.tools() != next.tools()
        };
        self.catalog.store(Arc::new(next));
        if changed {
            self.notify_clients();
        }
    }

    /// The current merged table; cheap (an atomic load).
    pub fn catalog(&self) -> arc_swap::Guard<Arc<Catalog>> {
        self.catalog.load()
    }

    /// Remembers a connected MCP client session to tell it about tool list changes.
    pub fn add_client(&self, peer: Peer<RoleServer>) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(peer);
    }

    fn notify_clients(&self) {
        let peers: Vec<Peer<RoleServer>> =
            std::mem::take(&mut *self.clients.lock().unwrap_or_else(|p| p.into_inner()));
        if peers.is_empty() {
            return;
        }
        let clients = Arc::clone(&self.clients);
        tokio::spawn(async move {
            let mut alive = Vec::with_capacity(peers.len());
            for peer in peers {
                if peer.is_transport_closed() {
                    continue;
                }
                if peer.notify_tool_list_changed().await.is_ok() {
                    alive.push(peer);
                }
            }
            clients
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(alive);
        });
    }

    /// Registers (or replaces) a service: connects, lists its tools, persists, publishes.
    /// On any failure nothing changes.
    pub async fn register(
        self: &Arc<Self>,
        name: &str,
        url: &str,
    ) -> Result<(Arc<Upstream>, bool), RegisterError> {
        validate_name(name).map_err(RegisterError::Invalid)?;
        let url = normalize_url(url).map_err(RegisterError::Invalid)?;
        let _serial = self.register_lock.lock().await;
        let up = Upstream::new(
            name,
            &url,
            Source::Registered,
            Vec::new(),
            self.options.clone(),
            &self.shutdown,
        );
        let tools: Vec<Tool> = up.connect().await.map_err(|cause| {
            up.close();
            RegisterError::Unreachable {
                name: name.to_string(),
                url: url.clone(),
                cause,
            }
        })?;
        let stored = StoredService {
            name: name.to_string(),
            url: url.clone(),
            tools,
            registered_at_ms: now_ms(),
        };
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.upsert(&stored))
            .await
            .map_err(|e| RegisterError::Invalid(format!("store task failed: {e}")))
            .and_then(|r| r.map_err(RegisterError::from))
            .inspect_err(|_| up.close())?;
        let replaced = self.insert(Arc::clone(&up)).is_some();
        self.rebuild();
        tracing::info!(service = %name, url = %url, tools = up.tools().len(), replaced, "service registered");
        Ok((up, replaced))
    }

    /// Every upstream, by name, as `/services` shows it.
    pub fn services(&self) -> Vec<ServiceView> {
        let catalog = self.catalog();
        let mut ups: Vec<Arc<Upstream>> = self
            .upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        ups.sort_by(|a, b| a.name.cmp(&b.name));
        ups.iter().map(|u| view(u, &catalog)).collect()
    }

    /// One upstream as `/services` shows it.
    pub fn service(&self, name: &str) -> Option<ServiceView> {
        let up = self
            .upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()?;
        Some(view(&up, &self.catalog()))
    }

    /// Closes every upstream session (gateway shutdown).
    pub fn close_all(&self) {
        for up in self
            .upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            up.close();
        }
    }
}

fn view(up: &Arc<Upstream>, catalog: &Catalog) -> ServiceView {
    let defs = up.tools();
    let tools = catalog
        .names_of(&up.name)
        .into_iter()
        .map(|(public, original)| ToolView {
            description: defs
                .iter()
                .find(|t| t.name == original)
                .and_then(|t| t.description.as_ref().map(|d| d.to_string())),
            name: public,
            original_name: original,
        })
        .collect::<Vec<_>>();
    ServiceView {
        name: up.name.to_string(),
        url: up.url.to_string(),
        source: up.source,
        status: up.status(),
        tool_count: tools.len(),
        tools,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_path_mean_mcp() {
        assert_eq!(
            normalize_url("http://custom-service:3000").unwrap(),
            "http://custom-service:3000/mcp"
        );
        assert_eq!(
            normalize_url("http://127.0.0.1:3002/mcp").unwrap(),
            "http://127.0.0.1:3002/mcp"
        );
        assert_eq!(
            normalize_url("https://x.example/custom/path").unwrap(),
            "https://x.example/custom/path"
        );
        assert!(
            normalize_url("file:///etc/passwd")
                .unwrap_err()
                .contains("http or https")
        );
        assert!(normalize_url("not a url").is_err());
        assert!(normalize_url("http://user:pw@host/").is_err());
    }

    #[test]
    fn service_names_are_checked() {
        assert!(validate_name("shopping-service").is_ok());
        assert!(validate_name("svc_2").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("a__b").is_err());
        assert!(validate_name("-a").is_err());
        assert!(validate_name(&"a".repeat(65)).is_err());
    }
}
