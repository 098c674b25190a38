//! The set of services and their instances: registration, removal, persistence (through
//! [`crate::store`]) and the catalog snapshot derived from them. Every change rebuilds the
//! catalog and swaps it in atomically, then tells connected clients that the tool list
//! changed. It also counts calls in flight, so shutdown can drain them.
//!
//! Invariant: a registration is validated, connected and persisted before it is
//! published; a refused one changes nothing.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use rmcp::{Peer, RoleServer};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    catalog::Catalog,
    config::Config,
    servers::{Definition, VirtualServer},
    store::{Store, StoreError, StoredInstance, postgres::Event},
    upstream::{
        self, Instance, Listener, Origin, Service, ServiceView, Source, guard::Refusal,
        secret::UpstreamAuth,
    },
    vocab::Invalid,
    vocab::{normalize_url, now_ms, validate_name},
};

/// Who asks for a change of the registry: registrations belong to the identity that made
/// them, and only it or an operator may replace, extend or remove them.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: Arc<str>,
    /// Holds both `register` and `operate`: may change any registration.
    pub operator: bool,
}

impl Actor {
    /// May change a service whose instances are owned as given.
    fn may_change<'a>(&self, mut owners: impl Iterator<Item = Option<&'a str>>) -> bool {
        self.operator || owners.all(|o| o == Some(&*self.name))
    }
}

fn not_owner(name: &str) -> String {
    format!(
        "service \"{name}\" was registered by another identity: only that identity or an operator (scopes register and operate) may replace, extend or remove it"
    )
}

/// Why a registration was refused; each maps to an HTTP status in `http::admin`.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{0}")]
    Invalid(Invalid),
    #[error("cannot register \"{name}\": {why}")]
    NotAllowed { name: String, why: String },
    #[error("{0}")]
    NotOwner(String),
    /// The name is reserved for the identity that last registered it.
    #[error("{0}")]
    Reserved(String),
    /// The name is taken in a way this registration cannot change (another owner's
    /// service without `replace`, or a configured one).
    #[error("{0}")]
    Conflict(String),
    #[error("cannot register \"{name}\": {url} does not answer MCP: {cause}")]
    Unreachable {
        name: String,
        url: String,
        cause: String,
    },
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Why an unregistration was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnregisterError {
    #[error("no service \"{0}\" is registered")]
    UnknownService(String),
    #[error("service \"{name}\" has no instance {which}")]
    UnknownInstance { name: String, which: String },
    #[error("{0}")]
    NotOwner(String),
    /// The configuration defines it: only the configuration changes it.
    #[error("{0}")]
    Configured(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Internal(String),
}

/// A registration request, as `/register` received it.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub url: String,
    /// Share of calls under the `weighted` strategy (default 1).
    pub weight: Option<u32>,
    /// Deadline for this service's calls (default: the gateway's `call_timeout_ms`).
    pub call_timeout_ms: Option<u64>,
    /// Replace every existing instance of the service instead of adding one.
    pub replace: bool,
    /// The gateway's credential towards the service.
    pub auth: Option<UpstreamAuth>,
    /// A stdio server the gateway runs (then `url` is empty).
    pub command: Option<crate::upstream::stdio::Command>,
    /// Only as a new service: refused (409) when the name exists by the time the
    /// registration is made (an import's names, checked before and kept all or nothing).
    pub exclusive: bool,
    /// Who registers it.
    pub actor: Actor,
}

/// What an operator asks of a service's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Start,
    Stop,
    Restart,
}

/// What a registration did.
pub struct Registered {
    pub service: Arc<Service>,
    pub instance: Arc<Instance>,
    /// The service did not exist before.
    pub new_service: bool,
    /// An instance with this URL existed and was re-registered (refreshed).
    pub refreshed: bool,
}

/// One line of `/services`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntry {
    #[serde(flatten)]
    pub service: ServiceView,
    pub tool_count: usize,
    pub tools: Vec<ToolView>,
}

/// One line of `/health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceSummary {
    pub name: String,
    pub state: crate::upstream::health::State,
    #[serde(rename = "since")]
    pub since_ms: Option<u64>,
    pub instances: usize,
    pub tools: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolView {
    /// Name in the gateway's merged table.
    pub name: String,
    /// Name at the service (differs when qualified).
    #[serde(rename = "originalName")]
    pub original_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// With `inline_schema_refs`: why its schema kept its references (a recursive
    /// definition, say).
    #[serde(rename = "schemaNote", skip_serializing_if = "Option::is_none")]
    pub schema_note: Option<String>,
}

/// Why a virtual server was not defined or removed.
#[derive(Debug)]
pub enum ServerError {
    Invalid(String),
    Configured(String),
    NotFound(String),
    TooMany,
    Store(StoreError),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Invalid(why) => write!(f, "{why}"),
            ServerError::Configured(name) => write!(
                f,
                "the virtual server {name:?} is defined in the configuration; change it there"
            ),
            ServerError::NotFound(name) => write!(f, "no virtual server {name:?}"),
            ServerError::TooMany => write!(
                f,
                "the gateway has {} virtual servers, its most",
                crate::servers::MAX_SERVERS
            ),
            ServerError::Store(why) => write!(
                f,
                "the definition could not be saved ({why}); nothing was changed"
            ),
        }
    }
}

/// A replica's view of its cluster (`/health`, `gateway cluster`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// This replica's id.
    pub replica: String,
    /// Whether the store answers (while it does not, calls are served from memory and
    /// registrations get 503).
    pub store_available: bool,
    /// The replicas heard from in the last 10 s, oldest first (read every 2 s).
    pub replicas: Vec<ReplicaView>,
}

/// One live replica.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    pub id: String,
    /// Where the other replicas reach it (`cluster_address`, else its listen address).
    pub address: String,
    pub host: String,
    pub started_at_ms: i64,
    pub seen_at_ms: i64,
    /// Whether it is the replica answering.
    pub current: bool,
}

pub struct Registry {
    services: Mutex<BTreeMap<String, Arc<Service>>>,
    catalog: ArcSwap<Catalog>,
    store: Store,
    /// What each registered instance's stored row said when it was started (its
    /// [`StoredInstance::stamp`]), by service and URL: a replica reading the store again
    /// restarts only the instances whose rows changed.
    stamps: Mutex<std::collections::HashMap<(String, String), u64>>,
    /// Service names the configuration defines (the store does not change them).
    configured_names: std::collections::BTreeSet<String>,
    /// This process's id in the cluster, and when it started.
    replica: String,
    started_ms: i64,
    /// Whether the store answered the last heartbeat (a PostgreSQL store may be down).
    store_ready: std::sync::atomic::AtomicBool,
    /// The live replicas as the last heartbeat read them (`/health` reads this, never
    /// the store).
    peers: Mutex<Vec<crate::store::Replica>>,
    /// What other replicas did to shared MCP sessions (ended them, changed their
    /// level or subscriptions, relayed their clients' answers here): the endpoint
    /// follows it.
    session_news: tokio::sync::broadcast::Sender<Event>,
    options: upstream::Options,
    shutdown: CancellationToken,
    /// Connected client sessions (by the gateway's session number), told about list
    /// changes; a session removes itself when it ends.
    clients: Arc<Mutex<std::collections::HashMap<u64, Peer<RoleServer>>>>,
    /// Serializes registrations so two concurrent ones for one name cannot interleave.
    register_lock: tokio::sync::Mutex<()>,
    in_flight: Arc<AtomicUsize>,
    subscribers: Mutex<Subscribers>,
    /// List changes, for `subscriptions/listen` (2026-07-28 clients have no session to
    /// be notified on).
    changes: tokio::sync::broadcast::Sender<Changed>,
    limits: Arc<crate::limits::Limits>,
    /// Tool search on `/mcp`.
    search: crate::search::Settings,
    /// Tools' schemas made self-contained (`inline_schema_refs`).
    inline_schema_refs: bool,
    /// Virtual servers, by name.
    virtual_servers: std::sync::RwLock<BTreeMap<String, Arc<VirtualServer>>>,
    /// Those the configuration defines (not changed at run time).
    configured_servers: std::collections::BTreeSet<String>,
    observer: Arc<crate::observe::Observer>,
    calls: Option<Arc<crate::observe::calllog::CallLog>>,
    /// The call log's writer, which ends after writing what is queued at shutdown.
    log_writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// How long an unregistered name stays reserved for its owner.
    reservation_ms: i64,
    /// Programs `/register` may start as stdio servers (empty: none).
    allowed_commands: Vec<String>,
}

/// What can be checked of a registration without contacting anything; the URL in its
/// normal form.
pub fn validate(reg: &Registration) -> Result<String, Invalid> {
    validate_name(&reg.name)?;
    let url = match &reg.command {
        Some(command) => {
            if !reg.url.is_empty() {
                return Err(
                    "give either url (an HTTP server) or command (a stdio server), not both".into(),
                );
            }
            if reg.auth.is_some() {
                return Err("a stdio server takes its credentials in env, not auth".into());
            }
            command.validate()?;
            stdio_url(&reg.name, 0)
        }
        None if reg.url.trim().is_empty() => {
            return Err("url is required (or command, for a stdio server)".into());
        }
        None => normalize_url(&reg.url)?,
    };
    if reg.weight == Some(0) {
        return Err("weight must be at least 1".into());
    }
    if reg.call_timeout_ms == Some(0) {
        return Err("callTimeoutMs must be greater than 0".into());
    }
    if let Some(auth) = &reg.auth {
        auth.header()?;
    }
    Ok(url)
}

/// The URL a stdio server's `n`th process goes by (its instance's key).
pub fn stdio_url(service: &str, n: u32) -> String {
    format!("stdio:{service}/{n}")
}

/// Stored tools as many as a listing may have (a store written under a larger bound).
fn bounded(service: &str, mut tools: Vec<rmcp::model::Tool>, max: usize) -> Vec<rmcp::model::Tool> {
    if tools.len() > max {
        tracing::warn!(
            service,
            stored = tools.len(),
            max,
            "stored tools over max_list_items: only the first are restored"
        );
        tools.truncate(max);
    }
    tools
}

/// Forwards supervisor events to the registry without keeping it alive.
struct RegistryListener(std::sync::Weak<Registry>);

impl Listener for RegistryListener {
    fn tools_changed(&self, service: &str, instance: &Arc<Instance>) {
        if let Some(registry) = self.0.upgrade() {
            registry.on_tools_changed(service, instance);
        }
    }

    fn resource_updated(&self, service: &str, uri: &str) {
        if let Some(registry) = self.0.upgrade() {
            registry.on_resource_updated(service, uri);
        }
    }
}

/// Who is told of a resource's updates.
#[derive(Clone)]
pub enum Subscriber {
    /// A client session (`resources/subscribe`).
    Session(Peer<RoleServer>),
    /// A 2026-07-28 client's `subscriptions/listen` stream.
    Listen(rmcp::service::SubscriptionSink),
}

/// Who is subscribed to each public resource URI (by session, or listen stream, id).
type Subscribers = BTreeMap<String, Vec<(u64, Subscriber)>>;

/// Which merged lists a rebuild changed.
#[derive(Clone, Copy, Debug)]
pub struct Changed {
    pub tools: bool,
    pub prompts: bool,
    pub resources: bool,
}

/// Held while a call is in flight; shutdown waits for these to drop.
pub struct CallGuard(Arc<AtomicUsize>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registry {
    /// Opens the store and starts every persisted and configured upstream. Start-up never
    /// waits for a backend: unreachable ones are listed with their last-known tools and
    /// retried in the background.
    /// `address`: where the other replicas of a cluster reach this one.
    pub async fn start(
        config: &Config,
        address: String,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let replica = uuid::Uuid::new_v4().to_string();
        let store = Store::open(
            &config.store,
            config.cluster_key.as_ref().map(|k| k.expose()),
            &replica,
        )?;
        let (log, calls, log_writer) = if config.call_log {
            let retention = crate::observe::calllog::Retention {
                max_rows: config.call_log_max_rows,
                max_age: Duration::from_millis(config.call_log_max_age_ms),
            };
            let (tx, log, writer) = crate::observe::calllog::start(
                config.call_log_place(&replica),
                retention,
                shutdown.clone(),
            )?;
            (Some(tx), Some(log), Some(writer))
        } else {
            (None, None, None)
        };
        let registry = Arc::new(Self {
            services: Mutex::new(BTreeMap::new()),
            catalog: ArcSwap::from_pointee(Catalog::default()),
            store: store.clone(),
            stamps: Mutex::new(std::collections::HashMap::new()),
            configured_names: config.upstreams.iter().map(|u| u.name.clone()).collect(),
            replica,
            started_ms: now_ms(),
            store_ready: std::sync::atomic::AtomicBool::new(store.cluster().is_none()),
            peers: Mutex::new(Vec::new()),
            session_news: tokio::sync::broadcast::channel(256).0,
            options: config.upstream_options(),
            shutdown,
            clients: Arc::new(Mutex::new(std::collections::HashMap::new())),
            register_lock: tokio::sync::Mutex::new(()),
            in_flight: Arc::new(AtomicUsize::new(0)),
            subscribers: Mutex::new(BTreeMap::new()),
            changes: tokio::sync::broadcast::channel(64).0,
            limits: Arc::new(crate::limits::Limits::new(
                config.rate_limit_per_credential,
                config.rate_limit_per_tool,
            )),
            observer: Arc::new(crate::observe::Observer::new(
                config.call_log_payloads && config.call_log,
                &config.call_log_redact,
                log,
            )),
            calls,
            log_writer: Mutex::new(log_writer),
            reservation_ms: i64::try_from(config.name_reservation_ms).unwrap_or(i64::MAX),
            allowed_commands: config.allowed_commands.clone(),
            search: config.tool_search(),
            inline_schema_refs: config.inline_schema_refs,
            virtual_servers: std::sync::RwLock::new(BTreeMap::new()),
            configured_servers: config
                .virtual_servers
                .iter()
                .map(|d| d.name.clone())
                .collect(),
        });
        registry.restore_configured_servers(config)?;
        let mut configured: BTreeMap<&str, Vec<&crate::config::UpstreamSpec>> = BTreeMap::new();
        for spec in &config.upstreams {
            configured.entry(spec.name.as_str()).or_default().push(spec);
        }
        for (name, specs) in configured {
            let timeout = specs
                .iter()
                .find_map(|s| s.call_timeout_ms)
                .map(Duration::from_millis);
            let service = Service::new(name, &registry.options, timeout);
            let mut instances = Vec::new();
            let mut processes = 0;
            for spec in specs {
                // A stdio server runs `instances` processes, each an instance.
                let urls = match spec.stdio() {
                    Some(_) => (0..spec.instances.unwrap_or(1))
                        .map(|_| {
                            processes += 1;
                            stdio_url(name, processes - 1)
                        })
                        .collect(),
                    None => vec![normalize_url(&spec.url).map_err(anyhow::Error::msg)?],
                };
                for url in urls {
                    instances.push(Instance::new(
                        name,
                        &url,
                        spec.weight.unwrap_or(1),
                        Origin {
                            source: Source::Config,
                            registered_at_ms: now_ms() as u64,
                            owner: None,
                            auth: spec.auth.clone(),
                            command: spec.stdio(),
                        },
                        Vec::new(),
                        registry.options.clone(),
                        &registry.shutdown,
                    ));
                }
            }
            registry.add_service(service, instances);
        }
        match store.cluster() {
            // The file is here: what it holds is served from the first request on.
            None => registry.sync_all().await?,
            // The shared store may be down: the replica serves its configured upstreams
            // and joins the cluster when the store answers.
            Some(_) => {
                tokio::spawn(Arc::clone(&registry).join_cluster(address));
            }
        }
        registry.rebuild();
        Ok(registry)
    }

    /// Reads the store again and applies every service and virtual server it holds:
    /// at start-up, and whenever a replica may have missed notifications.
    async fn sync_all(self: &Arc<Self>) -> Result<(), StoreError> {
        let stored = self.store.load().await?;
        let servers = self.store.virtual_servers().await?;
        let _serial = self.register_lock.lock().await;
        let mut by_name: BTreeMap<String, Vec<StoredInstance>> = BTreeMap::new();
        for s in stored {
            by_name.entry(s.name.clone()).or_default().push(s);
        }
        let local: Vec<String> = self.lock().keys().cloned().collect();
        for name in local {
            by_name.entry(name).or_default();
        }
        let mut changed = false;
        for (name, rows) in by_name {
            changed |= self.apply_stored(&name, rows);
        }
        let servers_changed = self.apply_servers(servers);
        if changed {
            self.rebuild();
        }
        if servers_changed {
            self.announce_all();
        }
        Ok(())
    }

    /// Reads service `name` again from the store and applies it (another replica
    /// changed it).
    async fn sync_service(self: &Arc<Self>, name: &str) -> Result<(), StoreError> {
        let rows = self.store.load_service(name).await?;
        let _serial = self.register_lock.lock().await;
        if self.apply_stored(name, rows) {
            self.rebuild();
        }
        Ok(())
    }

    /// Makes service `name`'s registered instances what the store's `rows` say: an
    /// instance whose row is unchanged keeps running, a new or changed row starts one
    /// (with the row's last-known tools), an instance without a row is closed. A name
    /// the configuration defines is the configuration's; a stdio command off
    /// `allowed_commands` does not start (decisions fail closed; the row stays). Whether
    /// anything changed. The caller holds the registration lock and rebuilds.
    fn apply_stored(self: &Arc<Self>, name: &str, rows: Vec<StoredInstance>) -> bool {
        if self.configured_names.contains(name) {
            if !rows.is_empty() {
                tracing::warn!(service = %name,
                    "a stored registration is ignored: the configuration defines this service");
            }
            return false;
        }
        let rows: Vec<StoredInstance> = rows
            .into_iter()
            .filter(|s| match &s.command {
                Some(command)
                    if !self.allowed_commands.contains(&command.command)
                        || command.validate().is_err() =>
                {
                    tracing::warn!(service = %s.name, command = %command.command,
                        "a stored stdio server is not started: its program is not in allowed_commands");
                    false
                }
                _ => true,
            })
            .collect();
        let existing = self.lock().get(name).cloned();
        let current = existing.as_ref().map(|s| s.instances()).unwrap_or_default();
        let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Vec::with_capacity(rows.len());
        let mut started = Vec::new();
        for row in &rows {
            let stamp = row.stamp();
            let key = (name.to_string(), row.url.clone());
            let same = current
                .iter()
                .find(|i| *i.url == *row.url && stamps.get(&key) == Some(&stamp));
            match same {
                Some(i) => next.push(Arc::clone(i)),
                None => {
                    tracing::info!(service = %name, url = %row.url, tools = row.tools.len(),
                        "starting a registration from the store");
                    let instance = Instance::new(
                        name,
                        &row.url,
                        row.weight,
                        Origin {
                            source: Source::Registered,
                            registered_at_ms: row.registered_at_ms.max(0) as u64,
                            owner: row.owner.as_deref().map(Arc::from),
                            auth: row.auth.clone(),
                            command: row.command.clone(),
                        },
                        bounded(name, row.tools.clone(), self.options.list_bounds.items),
                        self.options.clone(),
                        &self.shutdown,
                    );
                    stamps.insert(key, stamp);
                    started.push(Arc::clone(&instance));
                    next.push(instance);
                }
            }
        }
        let gone: Vec<Arc<Instance>> = current
            .iter()
            .filter(|i| !next.iter().any(|n| Arc::ptr_eq(n, i)))
            .cloned()
            .collect();
        if started.is_empty() && gone.is_empty() {
            return false;
        }
        for i in &gone {
            if !next.iter().any(|n| n.url == i.url) {
                stamps.remove(&(name.to_string(), i.url.to_string()));
            }
        }
        drop(stamps);
        let timeout = rows
            .iter()
            .rev()
            .find_map(|s| s.call_timeout_ms)
            .map(Duration::from_millis);
        {
            let mut services = self.lock();
            if next.is_empty() {
                services.remove(name);
            } else {
                let service = services
                    .entry(name.to_string())
                    .or_insert_with(|| Service::new(name, &self.options, timeout))
                    .clone();
                if let Some(t) = timeout {
                    service.set_call_timeout(t);
                }
                service.set_instances(next);
            }
        }
        for i in started {
            tokio::spawn(i.supervise(self.listener()));
        }
        for i in gone {
            tokio::spawn(async move { i.close().await });
        }
        true
    }

    /// Joins the cluster of a shared store: waits for the store (saying so, and
    /// retrying, while it is down), reads it, then follows the other replicas' changes
    /// and heartbeats until shutdown.
    async fn join_cluster(self: Arc<Self>, address: String) {
        let Some(pg) = self.store.cluster().cloned() else {
            return;
        };
        let mut delay = Duration::from_millis(200);
        loop {
            match pg.ready().await {
                Ok(()) => break,
                Err(e) if e.unavailable() => {
                    tracing::warn!("{e}; serving the configured upstreams, retrying in {delay:?}");
                }
                Err(e) => {
                    // A wrong key or a newer schema: this replica must not write here.
                    tracing::error!("{e}; this replica stays out of the cluster");
                    return;
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        tracing::info!(store = %pg.display(), replica = %self.replica, "joined the cluster's store");
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        tokio::spawn({
            let (this, pg) = (Arc::clone(&self), Arc::clone(&pg));
            async move {
                let mut said = false;
                loop {
                    let beat = match pg.heartbeat(&address, &host, this.started_ms).await {
                        Ok(()) => pg.replicas().await,
                        Err(e) => Err(e),
                    };
                    match beat {
                        Ok(peers) => {
                            if said {
                                tracing::info!(store = %pg.display(), "the store answers again");
                            }
                            said = false;
                            this.store_ready.store(true, Ordering::Relaxed);
                            this.limits.share_among(peers.len());
                            *this.peers.lock().unwrap_or_else(|p| p.into_inner()) = peers;
                        }
                        Err(e) => {
                            if !said {
                                tracing::warn!("heartbeat not recorded: {e}");
                            }
                            said = true;
                            this.store_ready.store(false, Ordering::Relaxed);
                        }
                    }
                    tokio::select! {
                        _ = this.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(crate::store::postgres::HEARTBEAT) => {}
                    }
                }
                pg.leave().await;
            }
        });
        tokio::spawn(Arc::clone(&self).check_health(Arc::clone(&pg)));
        let mut events = pg.listen(self.shutdown.clone());
        let mut pending_resync = false;
        loop {
            let event = if pending_resync {
                // A read failed (the store went away meanwhile): try again shortly.
                tokio::select! {
                    e = events.recv() => e,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => Some(Event::Resync),
                }
            } else {
                events.recv().await
            };
            let Some(event) = event else { return };
            let done = match &event {
                Event::Resync => {
                    let _ = self.session_news.send(Event::Resync);
                    self.sync_all().await
                }
                Event::Change(crate::store::Change::Service(name)) => self.sync_service(name).await,
                Event::Change(crate::store::Change::Server(_)) => self.sync_servers().await,
                // Only the replica waiting for a change hears who followed it.
                Event::Change(crate::store::Change::Followed { ack, .. })
                    if ack.to != self.replica =>
                {
                    Ok(())
                }
                Event::Change(
                    crate::store::Change::SessionsEnded { .. }
                    | crate::store::Change::Followed { .. }
                    | crate::store::Change::Session { .. },
                ) => {
                    let _ = self.session_news.send(event.clone());
                    Ok(())
                }
                Event::Change(crate::store::Change::Relist(service)) => {
                    let service = self.lock().get(service).cloned();
                    if let Some(service) = service {
                        for instance in service.instances().iter() {
                            instance.request_relist();
                        }
                    }
                    Ok(())
                }
                Event::Change(crate::store::Change::Answers(to)) => {
                    if *to == self.replica {
                        let _ = self.session_news.send(event.clone());
                    }
                    Ok(())
                }
                Event::Change(crate::store::Change::Health(service)) => {
                    self.follow_health(&pg, service).await
                }
            };
            match done {
                Ok(()) => {
                    if matches!(event, Event::Resync) {
                        pending_resync = false;
                    }
                }
                Err(e) => {
                    tracing::warn!("applying the cluster's changes: {e}; reading everything again");
                    pending_resync = true;
                }
            }
        }
    }

    /// In a cluster, until shutdown: pings upstreams only while this replica is the
    /// cluster's health checker (or cannot hear the cluster, when every replica checks
    /// for itself), and as the checker writes every instance's state that changed, so
    /// the other replicas follow it. Stdio servers are each replica's own: left out.
    async fn check_health(self: Arc<Self>, pg: Arc<crate::store::postgres::Postgres>) {
        let mut published: std::collections::HashMap<(String, String), upstream::health::State> =
            std::collections::HashMap::new();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(crate::store::postgres::HEARTBEAT) => {}
            }
            let checker = pg.is_checker();
            self.options
                .pings
                .store(checker || !pg.is_listening(), Ordering::Relaxed);
            if !checker {
                published.clear();
                continue;
            }
            let services: Vec<Arc<Service>> = self.lock().values().cloned().collect();
            for service in services {
                let mut changed = Vec::new();
                let mut states = Vec::new();
                for i in service.instances().iter() {
                    if i.url.starts_with("stdio:") {
                        continue;
                    }
                    let state = i.state();
                    let key = (service.name.to_string(), i.url.to_string());
                    if published.get(&key) != Some(&state) {
                        changed.push((
                            i.url.to_string(),
                            state.as_str().to_string(),
                            i.last_error(),
                        ));
                        states.push((key, state));
                    }
                }
                if changed.is_empty() {
                    continue;
                }
                match pg.publish_health(&service.name, &changed).await {
                    Ok(()) => published.extend(states),
                    Err(e) => tracing::debug!("upstream health not shared: {e}"),
                }
            }
        }
    }

    /// The health checker's verdicts on `service`'s instances, applied here (a replica
    /// that is not the checker; the checker's own notices are not news to it).
    async fn follow_health(
        &self,
        pg: &crate::store::postgres::Postgres,
        service: &str,
    ) -> Result<(), StoreError> {
        let rows = pg.health_of(service).await?;
        let Some(local) = self.upstream(service) else {
            return Ok(());
        };
        for row in rows {
            if let Some(i) = local.instances().iter().find(|i| *i.url == *row.url) {
                i.agree(&row.state, row.why.as_deref());
            }
        }
        Ok(())
    }

    /// Where live replica `id` is reached (`host:port`), as its heartbeat says.
    pub fn replica_address(&self, id: &str) -> Option<String> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.iter().find(|r| r.id == id).map(|r| r.address.clone())
    }

    /// This replica's id (a cluster's; a lone gateway's too, unused).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The cluster's shared store, when this gateway is a replica of one.
    pub fn cluster_store(&self) -> Option<&Arc<crate::store::postgres::Postgres>> {
        self.store.cluster()
    }

    /// What other replicas do to shared MCP sessions from now on: sessions ended
    /// (`SessionsEnded`), a session's level or subscriptions changed (`Session`), a
    /// replica followed such a change (`Followed`), clients' answers waiting for this
    /// replica (`Answers`); `Resync` when some may have been missed.
    pub fn watch_sessions(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.session_news.subscribe()
    }

    /// This replica's id and the live replicas of its cluster, as the last heartbeat
    /// read them (`None` with a SQLite store).
    pub fn cluster(&self) -> Option<ClusterView> {
        self.store.cluster()?;
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(ClusterView {
            replica: self.replica.clone(),
            store_available: self.store_ready.load(Ordering::Relaxed),
            replicas: peers
                .into_iter()
                .map(|r| ReplicaView {
                    current: r.id == self.replica,
                    id: r.id,
                    address: r.address,
                    host: r.host,
                    started_at_ms: r.started_ms,
                    seen_at_ms: r.seen_ms,
                })
                .collect(),
        })
    }

    fn listener(self: &Arc<Self>) -> Arc<dyn Listener> {
        Arc::new(RegistryListener(Arc::downgrade(self)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Service>>> {
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add_service(self: &Arc<Self>, service: Arc<Service>, instances: Vec<Arc<Instance>>) {
        for i in &instances {
            tokio::spawn(Arc::clone(i).supervise(self.listener()));
        }
        service.set_instances(instances);
        self.lock().insert(service.name.to_string(), service);
    }

    fn on_tools_changed(&self, service: &str, instance: &Arc<Instance>) {
        // Ignore a supervisor that lost a race with removal or replacement.
        let current = self
            .lock()
            .get(service)
            .is_some_and(|s| s.instances().iter().any(|i| Arc::ptr_eq(i, instance)));
        if !current {
            return;
        }
        if let Some(pg) = self.store.cluster() {
            // The backend may have told only this replica's session (its list_changed
            // goes to the session that caused it): the others list it again.
            let (pg, change) = (
                Arc::clone(pg),
                crate::store::Change::Relist(service.to_string()),
            );
            tokio::spawn(async move {
                if let Err(e) = pg.announce(change).await {
                    tracing::debug!("a backend's list change not announced: {e}");
                }
            });
        }
        if instance.source == Source::Registered {
            let store = self.store.clone();
            let (name, url, tools) = (
                service.to_string(),
                instance.url.to_string(),
                instance.tools(),
            );
            tokio::spawn(async move {
                if let Err(e) = store.update_tools(&name, &url, &tools).await {
                    tracing::warn!("{e}");
                }
            });
        }
        self.rebuild();
    }

    /// Rebuilds the catalog from the current services and announces what changed.
    fn rebuild(&self) {
        let services: Vec<Arc<Service>> = self.lock().values().cloned().collect();
        let next = Catalog::build_with(&services, self.inline_schema_refs);
        let prev = self.catalog.load();
        let changed = Changed {
            tools: prev.tools() != next.tools(),
            prompts: prev.prompts().items() != next.prompts().items(),
            resources: prev.resources().items() != next.resources().items()
                || prev.templates().len() != next.templates().len(),
        };
        drop(prev);
        self.catalog.store(Arc::new(next));
        self.prune_metrics();
        if changed.tools || changed.prompts || changed.resources {
            let _ = self.changes.send(changed);
            self.notify_clients(changed);
        }
    }

    /// Drops the metric series of tools no longer callable by the name they were called
    /// by: a service's that left, a virtual server's composite that went, a name that
    /// leads elsewhere now (or nowhere) and that no virtual server gives a tool of that
    /// service.
    fn prune_metrics(&self) {
        let catalog = self.catalog.load();
        let servers = self.servers().clone();
        let services = self.lock();
        let composite = crate::servers::composite_server;
        self.observer.metrics.retain_tools(
            |service| match composite(service) {
                Some(server) => servers.contains_key(server),
                None => services.contains_key(service),
            },
            |service, tool| match composite(service) {
                Some(server) => servers
                    .get(server)
                    .is_some_and(|s| s.definition.composites.iter().any(|c| c.name == tool)),
                None => {
                    matches!(catalog.lookup(tool), crate::catalog::Lookup::Found(r) if &*r.service.name == service)
                        || servers.values().any(|s| {
                            s.view
                                .renamed(tool)
                                .is_some_and(|(of, _)| of.is_none_or(|of| of == service))
                        })
                }
            },
        );
    }

    /// List changes from now on.
    pub fn watch_changes(&self) -> tokio::sync::broadcast::Receiver<Changed> {
        self.changes.subscribe()
    }

    fn on_resource_updated(&self, service: &str, uri: &str) {
        let catalog = self.catalog();
        let public = catalog
            .resources()
            .public_key_of(service, uri)
            .unwrap_or(uri)
            .to_string();
        let told: Vec<Subscriber> = self
            .subs()
            .get(&public)
            .map(|v| v.iter().map(|(_, p)| p.clone()).collect())
            .unwrap_or_default();
        if told.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for subscriber in told {
                match subscriber {
                    Subscriber::Session(peer) => {
                        let updated =
                            rmcp::model::ResourceUpdatedNotificationParam::new(public.clone());
                        let _ = peer.notify_resource_updated(updated).await;
                    }
                    Subscriber::Listen(sink) => {
                        let _ = sink.notify_resource_updated(public.clone()).await;
                    }
                }
            }
        });
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a client session's subscription; true when it is the first for `uri`
    /// (the caller then subscribes upstream).
    pub fn subscribe(&self, uri: &str, session: u64, subscriber: Subscriber) -> bool {
        let mut subs = self.subs();
        let list = subs.entry(uri.to_string()).or_default();
        let first = list.is_empty();
        if !list.iter().any(|(id, _)| *id == session) {
            list.push((session, subscriber));
        }
        first
    }

    /// Removes a client session's subscription; true when nobody is left on `uri`
    /// (the caller then unsubscribes upstream).
    pub fn unsubscribe(&self, uri: &str, session: u64) -> bool {
        let mut subs = self.subs();
        let Some(list) = subs.get_mut(uri) else {
            return false;
        };
        let before = list.len();
        list.retain(|(id, _)| *id != session);
        let emptied = before > 0 && list.is_empty();
        if list.is_empty() {
            subs.remove(uri);
        }
        emptied
    }

    /// The URIs a client session is subscribed to.
    pub fn subscriptions_of(&self, session: u64) -> Vec<String> {
        self.subs()
            .iter()
            .filter(|(_, list)| list.iter().any(|(id, _)| *id == session))
            .map(|(uri, _)| uri.clone())
            .collect()
    }

    /// Forgets every subscription of a session that ended; returns the URIs nobody
    /// watches any more.
    pub fn forget_session(&self, session: u64) -> Vec<String> {
        let mut subs = self.subs();
        let mut emptied = Vec::new();
        subs.retain(|uri, list| {
            let before = list.len();
            list.retain(|(id, _)| *id != session);
            if list.is_empty() {
                if before > 0 {
                    emptied.push(uri.clone());
                }
                false
            } else {
                true
            }
        });
        emptied
    }

    /// The current merged table; cheap (an atomic load).
    pub fn catalog(&self) -> arc_swap::Guard<Arc<Catalog>> {
        self.catalog.load()
    }

    /// The registry as `/metrics` reads it: every instance's state, and sizes.
    pub fn metrics_snapshot(&self) -> crate::observe::metrics::Snapshot {
        let services: Vec<Arc<Service>> = self.lock().values().cloned().collect();
        let instances = services
            .iter()
            .flat_map(|s| {
                s.instances()
                    .iter()
                    .map(|i| {
                        (
                            Arc::clone(&s.name),
                            Arc::from(i.id.as_str()),
                            i.state().as_str(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let processes = services
            .iter()
            .flat_map(|s| {
                s.instances()
                    .iter()
                    .filter_map(|i| {
                        let view = i.process()?.view();
                        Some(crate::observe::metrics::ProcessSample {
                            service: Arc::clone(&s.name),
                            instance: Arc::from(i.id.as_str()),
                            running: view.pid.is_some(),
                            restarts: view.restarts,
                            cpu_ms: view.cpu_ms,
                            rss_bytes: view.rss_bytes,
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        crate::observe::metrics::Snapshot {
            processes,
            instances,
            services: services.len(),
            tools: self.catalog().tools().len(),
            sessions: 0,
            dormant_sessions: 0,
            in_flight: self.in_flight(),
        }
    }

    /// Waits (at most 5 s) for the call log's writer to finish, after shutdown.
    pub async fn flush_call_log(&self) {
        let writer = self
            .log_writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        }
    }

    pub fn observer(&self) -> &Arc<crate::observe::Observer> {
        &self.observer
    }

    /// The call log, when `call_log` is on.
    pub fn calls(&self) -> Option<&Arc<crate::observe::calllog::CallLog>> {
        self.calls.as_ref()
    }

    /// The rate limits.
    pub fn limits(&self) -> &Arc<crate::limits::Limits> {
        &self.limits
    }

    /// The configured virtual servers (a definition that does not compile stops
    /// start-up).
    fn restore_configured_servers(&self, config: &Config) -> anyhow::Result<()> {
        let mut servers = self.servers_mut();
        for definition in &config.virtual_servers {
            let server = definition
                .compile()
                .map_err(|e| anyhow::anyhow!("virtual server {}: {}", definition.name, e.0))?;
            servers.insert(definition.name.clone(), Arc::new(server));
        }
        Ok(())
    }

    /// Makes the run-time virtual servers what the store holds (the configured ones stay;
    /// a stored one that no longer compiles is left aside, and said so); whether any
    /// changed.
    fn apply_servers(&self, stored: Vec<(String, String)>) -> bool {
        let mut wanted: BTreeMap<String, VirtualServer> = BTreeMap::new();
        for (name, text) in stored {
            if self.configured_servers.contains(&name) {
                tracing::warn!(server = %name,
                    "a stored virtual server is ignored: the configuration defines it");
                continue;
            }
            let compiled = serde_json::from_str::<Definition>(&text)
                .map_err(|e| e.to_string())
                .and_then(|d| d.compile().map_err(|e| e.0));
            match compiled {
                Ok(server) => {
                    wanted.insert(name, server);
                }
                Err(why) => {
                    tracing::warn!(server = %name, "a stored virtual server is left aside: {why}")
                }
            }
        }
        let mut servers = self.servers_mut();
        let before = servers.len();
        servers.retain(|name, s| {
            self.configured_servers.contains(name)
                || wanted
                    .get(name)
                    .is_some_and(|w| w.definition == s.definition)
        });
        let mut changed = servers.len() != before;
        for (name, server) in wanted {
            if let std::collections::btree_map::Entry::Vacant(e) = servers.entry(name) {
                e.insert(Arc::new(server));
                changed = true;
            }
        }
        changed
    }

    /// Reads the virtual servers again (another replica changed one).
    async fn sync_servers(&self) -> Result<(), StoreError> {
        let stored = self.store.virtual_servers().await?;
        let _serial = self.register_lock.lock().await;
        if self.apply_servers(stored) {
            self.announce_all();
        }
        Ok(())
    }

    fn servers_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<VirtualServer>>> {
        self.virtual_servers
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn servers(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<VirtualServer>>> {
        self.virtual_servers
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The virtual server `name`.
    pub fn virtual_server(&self, name: &str) -> Option<Arc<VirtualServer>> {
        self.servers().get(name).cloned()
    }

    /// Every virtual server, by name, with whether the configuration defines it.
    pub fn virtual_servers(&self) -> Vec<(Arc<VirtualServer>, bool)> {
        self.servers()
            .values()
            .map(|s| {
                let configured = self.configured_servers.contains(&s.definition.name);
                (Arc::clone(s), configured)
            })
            .collect()
    }

    /// Defines (or redefines) a virtual server at run time, stored before it is live:
    /// whether it is new. Its clients hear that every list changed.
    pub async fn define_virtual_server(&self, definition: Definition) -> Result<bool, ServerError> {
        let server = definition
            .compile()
            .map_err(|e| ServerError::Invalid(e.0))?;
        let name = definition.name.clone();
        if self.configured_servers.contains(&name) {
            return Err(ServerError::Configured(name));
        }
        let _serial = self.register_lock.lock().await;
        let created = !self.servers().contains_key(&name);
        if created && self.servers().len() >= crate::servers::MAX_SERVERS {
            return Err(ServerError::TooMany);
        }
        let text = serde_json::to_string(&definition).expect("a definition serializes");
        self.store
            .put_virtual_server(&name, &text)
            .await
            .map_err(ServerError::Store)?;
        self.servers_mut().insert(name, Arc::new(server));
        self.announce_all();
        Ok(created)
    }

    /// Removes a run-time virtual server (stored first).
    pub async fn remove_virtual_server(&self, name: &str) -> Result<(), ServerError> {
        if self.configured_servers.contains(name) {
            return Err(ServerError::Configured(name.to_string()));
        }
        let _serial = self.register_lock.lock().await;
        if !self.servers().contains_key(name) {
            return Err(ServerError::NotFound(name.to_string()));
        }
        self.store
            .remove_virtual_server(name)
            .await
            .map_err(ServerError::Store)?;
        self.servers_mut().remove(name);
        self.announce_all();
        Ok(())
    }

    /// Every list may have changed (a virtual server's definition did): told to every
    /// client.
    fn announce_all(&self) {
        self.prune_metrics();
        let changed = Changed {
            tools: true,
            prompts: true,
            resources: true,
        };
        let _ = self.changes.send(changed);
        self.notify_clients(changed);
    }

    /// Tool search as configured for `/mcp`.
    pub fn tool_search(&self) -> crate::search::Settings {
        self.search
    }

    /// Tool search on the endpoint of the virtual server `server` (its own mode, the
    /// gateway's thresholds), or on `/mcp` (`None`).
    pub fn tool_search_on(&self, server: Option<&str>) -> crate::search::Settings {
        let Some(server) = server.and_then(|s| self.virtual_server(s)) else {
            return self.search;
        };
        crate::search::Settings {
            mode: server.definition.tool_search.unwrap_or(self.search.mode),
            max_tools: server.definition.max_tools.unwrap_or(self.search.max_tools),
            ..self.search
        }
    }

    /// Whether tools' schemas are served inlined on `server`'s endpoint but the catalog
    /// (built for `/mcp`) does not have them so.
    pub fn inline_on(&self, server: &str) -> bool {
        !self.inline_schema_refs
            && self
                .virtual_server(server)
                .is_some_and(|s| s.definition.inline_schema_refs == Some(true))
    }

    /// Counts a call in flight until the guard drops.
    pub fn call_started(&self) -> CallGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        CallGuard(Arc::clone(&self.in_flight))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Remembers a connected MCP client session to tell it about list changes.
    pub fn add_client(&self, session: u64, peer: Peer<RoleServer>) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session, peer);
    }

    /// Forgets a client session that ended.
    pub fn remove_client(&self, session: u64) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.remove(&session);
        // A map that once held thousands of sessions gives the room back.
        if clients.capacity() > 1024 && clients.len() < clients.capacity() / 8 {
            let keep = clients.len() * 2;
            clients.shrink_to(keep);
        }
    }

    fn notify_clients(&self, changed: Changed) {
        let peers: Vec<(u64, Peer<RoleServer>)> = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, p)| (*id, p.clone()))
            .collect();
        if peers.is_empty() {
            return;
        }
        let clients = Arc::clone(&self.clients);
        tokio::spawn(async move {
            let mut gone = Vec::new();
            for (id, peer) in peers {
                if peer.is_transport_closed() {
                    gone.push(id);
                    continue;
                }
                let mut ok = true;
                if changed.tools {
                    ok &= peer.notify_tool_list_changed().await.is_ok();
                }
                if changed.prompts && ok {
                    ok &= peer.notify_prompt_list_changed().await.is_ok();
                }
                if changed.resources && ok {
                    ok &= peer.notify_resource_list_changed().await.is_ok();
                }
                if !ok {
                    gone.push(id);
                }
            }
            let mut clients = clients.lock().unwrap_or_else(|p| p.into_inner());
            for id in gone {
                clients.remove(&id);
            }
        });
    }

    /// Registers an instance: connects, lists its tools, persists, publishes. The same
    /// name with a new URL adds an instance; the same name and URL refreshes it;
    /// `replace` drops every other instance. On any failure nothing changes.
    ///
    /// Who may: a new name, anyone with `register` (unless the name is reserved for its
    /// last owner); an existing service, its owner. An operator takes over another's
    /// service only with `replace` (instances of different owners are never merged).
    /// The backend is contacted without holding the registration lock, so a slow one
    /// holds up no other registration.
    pub async fn register(
        self: &Arc<Self>,
        reg: Registration,
    ) -> Result<Registered, RegisterError> {
        // Checked before the backend is contacted, and again before anything changes.
        let (url, reserved) = self.checked(&reg).await?;
        let registered_at = self.first_registered(&reg);
        let owner = Some(Arc::clone(&reg.actor.name));
        let instance = Instance::new(
            &reg.name,
            &url,
            reg.weight.unwrap_or(1),
            Origin {
                source: Source::Registered,
                registered_at_ms: registered_at as u64,
                owner: owner.clone(),
                auth: reg.auth.clone(),
                command: reg.command.clone(),
            },
            Vec::new(),
            self.options.clone(),
            &self.shutdown,
        );
        let tools = match instance.connect().await {
            Ok(tools) => tools,
            Err(cause) => {
                instance.close().await;
                return Err(RegisterError::Unreachable {
                    name: reg.name,
                    url,
                    cause,
                });
            }
        };
        let _serial = self.register_lock.lock().await;
        if let Err(refused) = self.may_claim(&reg, reserved.as_deref()) {
            instance.close().await;
            return Err(refused);
        }
        if reg.exclusive && self.lock().contains_key(&reg.name) {
            instance.close().await;
            return Err(RegisterError::Conflict(format!(
                "service \"{}\" was registered by someone else meanwhile",
                reg.name
            )));
        }
        let existing = self.lock().get(&reg.name).cloned();
        if let Some(existing) = existing
            && !reg.replace
            && !existing.instances().is_empty()
            && existing.stdio() != reg.command.is_some()
        {
            instance.close().await;
            let kind = if existing.stdio() {
                "a stdio server"
            } else {
                "an HTTP server"
            };
            return Err(RegisterError::Conflict(format!(
                "service \"{}\" is {kind}: a name is one kind of upstream; register with replace to change it",
                reg.name
            )));
        }
        let stored = StoredInstance {
            name: reg.name.clone(),
            url: url.clone(),
            weight: instance.weight,
            call_timeout_ms: reg.call_timeout_ms,
            tools,
            registered_at_ms: registered_at,
            owner: owner.as_deref().map(String::from),
            auth: reg.auth,
            command: reg.command.clone(),
        };
        let replace = reg.replace;
        if let Err(e) = self.store.register(&stored, replace).await {
            instance.close().await;
            return Err(e.into());
        }
        {
            let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            if replace {
                stamps.retain(|(n, _), _| *n != reg.name);
            }
            stamps.insert((reg.name.clone(), url.clone()), stored.stamp());
        }
        let (service, new_service, removed, refreshed) = {
            let mut services = self.lock();
            let new_service = !services.contains_key(&reg.name);
            let service = services
                .entry(reg.name.clone())
                .or_insert_with(|| Service::new(&reg.name, &self.options, None))
                .clone();
            if let Some(ms) = reg.call_timeout_ms {
                service.set_call_timeout(Duration::from_millis(ms));
            }
            let current = service.instances();
            let (removed, kept): (Vec<_>, Vec<_>) = current
                .iter()
                .cloned()
                .partition(|i| replace || *i.url == *url);
            let refreshed = removed.iter().any(|i| *i.url == *url);
            let mut next = kept;
            next.push(Arc::clone(&instance));
            service.set_instances(next);
            (service, new_service, removed, refreshed)
        };
        for old in removed {
            tokio::spawn(async move { old.close().await });
        }
        tokio::spawn(Arc::clone(&instance).supervise(self.listener()));
        self.rebuild();
        tracing::info!(service = %reg.name, url = %url, tools = instance.tools().len(),
            new_service, refreshed, "service registered");
        Ok(Registered {
            service,
            instance,
            new_service,
            refreshed,
        })
    }

    /// Whether `actor` may have the gateway run `command`: only an operator, only a
    /// program on `allowed_commands` (empty by default: starting a program an HTTP
    /// request names is remote code execution).
    fn may_run(
        &self,
        name: &str,
        command: &crate::upstream::stdio::Command,
        actor: &Actor,
    ) -> Result<(), RegisterError> {
        let why = if self.allowed_commands.is_empty() {
            "registering stdio servers is off (the gateway's allowed_commands is empty); configure them as [[upstreams]] with a command, or allow the program".to_string()
        } else if !actor.operator {
            "registering a stdio server takes the operate scope".to_string()
        } else if !self.allowed_commands.contains(&command.command) {
            format!(
                "command {:?} is not in the gateway's allowed_commands",
                command.command
            )
        } else {
            return Ok(());
        };
        Err(RegisterError::NotAllowed {
            name: name.to_string(),
            why,
        })
    }

    /// What [`Self::register`] checks before it contacts anything (the values, who may
    /// run a command, where the URL points, who may claim the name), without contacting
    /// the backend or changing anything: an import checks every registration it plans
    /// this way before it makes the first.
    pub async fn precheck(&self, reg: &Registration) -> Result<(), RegisterError> {
        self.checked(reg).await.map(|_| ())
    }

    /// The checks of [`Self::register`] and [`Self::precheck`]: the values, who may run
    /// a command, where the URL points, who may claim the name. The URL in its normal
    /// form and whom the name is reserved for.
    async fn checked(&self, reg: &Registration) -> Result<(String, Option<String>), RegisterError> {
        let url = validate(reg).map_err(RegisterError::Invalid)?;
        let max_timeout = self.options.max_call_timeout.as_millis() as u64;
        if reg.call_timeout_ms.is_some_and(|ms| ms > max_timeout) {
            return Err(RegisterError::Invalid(Invalid(format!(
                "callTimeoutMs must be at most {max_timeout} (the gateway's max_call_timeout_ms)"
            ))));
        }
        match &reg.command {
            Some(command) => self.may_run(&reg.name, command, &reg.actor)?,
            None => match self.options.guard.check_url(&url).await {
                Ok(()) => {}
                Err(Refusal::NotAllowed(why)) => {
                    return Err(RegisterError::NotAllowed {
                        name: reg.name.clone(),
                        why,
                    });
                }
                Err(Refusal::Unresolvable(cause)) => {
                    return Err(RegisterError::Unreachable {
                        name: reg.name.clone(),
                        url,
                        cause,
                    });
                }
            },
        }
        let reserved = self.reserved_for(&reg.name).await?;
        self.may_claim(reg, reserved.as_deref())?;
        Ok((url, reserved))
    }

    /// An operator's `start`, `stop` or `restart` of every instance of `name` (a
    /// restart gives a stdio server a fresh restart budget). `None`: no such service.
    pub async fn control(&self, name: &str, action: Control) -> Option<ServiceEntry> {
        let service = self.upstream(name)?;
        let instances = service.instances();
        if matches!(action, Control::Stop | Control::Restart) {
            futures::future::join_all(instances.iter().map(|i| i.stop())).await;
        }
        if matches!(action, Control::Start | Control::Restart) {
            futures::future::join_all(instances.iter().map(|i| i.start())).await;
        }
        tracing::info!(service = name, action = ?action, state = ?service.state(), "operator control");
        self.service(name)
    }

    /// The identity an unregistered service name is still reserved for, if any.
    async fn reserved_for(&self, name: &str) -> Result<Option<String>, RegisterError> {
        if self.lock().contains_key(name) {
            return Ok(None);
        }
        self.store
            .reservation(name, now_ms())
            .await
            .map_err(RegisterError::from)
    }

    /// Whether `reg`'s actor may register its name now (see [`Self::register`]).
    fn may_claim(&self, reg: &Registration, reserved: Option<&str>) -> Result<(), RegisterError> {
        let actor = &reg.actor;
        let Some(instances) = self.lock().get(&reg.name).map(|s| s.instances()) else {
            return match reserved {
                Some(holder) if holder != &*actor.name && !actor.operator => {
                    Err(RegisterError::Reserved(format!(
                        "service name \"{}\" was unregistered recently and stays reserved for the identity that registered it (name_reservation_ms); only that identity or an operator may register it",
                        reg.name
                    )))
                }
                _ => Ok(()),
            };
        };
        if instances.iter().any(|i| i.source == Source::Config) {
            return Err(RegisterError::Conflict(format!(
                "service \"{}\" is defined in the gateway's configuration; change it there",
                reg.name
            )));
        }
        let owners: Vec<Option<&str>> = instances.iter().map(|i| i.owner.as_deref()).collect();
        let mine = owners.iter().all(|o| *o == Some(&*actor.name));
        // Registrations stored before owners were recorded: an operator adopts them.
        let unowned = owners.iter().all(Option::is_none);
        if mine || (unowned && actor.operator) {
            return Ok(());
        }
        if !actor.operator {
            return Err(RegisterError::NotOwner(not_owner(&reg.name)));
        }
        if reg.replace {
            return Ok(());
        }
        let holder = owners
            .iter()
            .flatten()
            .next()
            .copied()
            .unwrap_or("another identity");
        Err(RegisterError::Conflict(format!(
            "service \"{}\" belongs to identity \"{holder}\": instances of different owners are never merged; an operator takes the service over with \"replace\": true",
            reg.name
        )))
    }

    /// When the service first offered what it offers, for the naming rule: a refreshed
    /// instance keeps its time, a new one of a service joins the service's.
    fn first_registered(&self, reg: &Registration) -> i64 {
        let now = now_ms();
        let Some(instances) = self.lock().get(&reg.name).map(|s| s.instances()) else {
            return now;
        };
        let same_owner = instances
            .iter()
            .all(|i| i.owner.as_deref() == Some(&*reg.actor.name));
        if !same_owner {
            return now;
        }
        let earliest = instances.iter().map(|i| i.registered_at_ms as i64).min();
        earliest.map_or(now, |t| t.min(now))
    }

    /// Removes a whole service, or one instance of it chosen by URL or instance id;
    /// returns the number of instances removed.
    pub async fn unregister(
        &self,
        name: &str,
        which: Option<&str>,
        actor: &Actor,
    ) -> Result<usize, UnregisterError> {
        let _serial = self.register_lock.lock().await;
        let service = self
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| UnregisterError::UnknownService(name.to_string()))?;
        let instances = service.instances();
        let normalized = which.and_then(|w| normalize_url(w).ok());
        let (gone, kept): (Vec<_>, Vec<_>) = instances.iter().cloned().partition(|i| match which {
            None => true,
            Some(w) => i.id == w || *i.url == *w || normalized.as_deref() == Some(&*i.url),
        });
        if gone.is_empty() {
            return Err(UnregisterError::UnknownInstance {
                name: name.to_string(),
                which: which.unwrap_or_default().to_string(),
            });
        }
        if gone.iter().any(|i| i.source == Source::Config) {
            return Err(UnregisterError::Configured(format!(
                "service \"{name}\" is defined in the gateway's configuration; change it there"
            )));
        }
        if !actor.may_change(gone.iter().map(|i| i.owner.as_deref())) {
            return Err(UnregisterError::NotOwner(not_owner(name)));
        }
        if kept.is_empty() {
            // The whole service goes: its name stays reserved for its owner a while, so
            // nobody else claims it while the service restarts.
            let owner = gone.iter().find_map(|i| i.owner.as_deref());
            let until = now_ms().saturating_add(self.reservation_ms);
            self.store.remove_reserving(name, owner, until).await?;
        } else {
            for i in gone.iter().filter(|i| i.source == Source::Registered) {
                self.store.remove(name, &i.url).await?;
            }
        }
        {
            let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            for i in &gone {
                stamps.remove(&(name.to_string(), i.url.to_string()));
            }
        }
        {
            let mut services = self.lock();
            if kept.is_empty() {
                services.remove(name);
            } else {
                service.set_instances(kept);
            }
        }
        let count = gone.len();
        for i in gone {
            tokio::spawn(async move { i.close().await });
        }
        self.rebuild();
        tracing::info!(service = %name, instances = count, "unregistered");
        Ok(count)
    }

    /// Every service, by name, as `/services` shows it.
    pub fn services(&self) -> Vec<ServiceEntry> {
        let catalog = self.catalog();
        let services: Vec<Arc<Service>> = self.lock().values().cloned().collect();
        services.iter().map(|s| entry(s, &catalog)).collect()
    }

    /// Every service's name, state, instance count, tool count and when its state last
    /// changed, as `/health` shows them: no tool is looked at.
    pub fn summary(&self) -> Vec<ServiceSummary> {
        let catalog = self.catalog();
        let services: Vec<Arc<Service>> = self.lock().values().cloned().collect();
        services
            .iter()
            .map(|s| {
                let instances = s.instances();
                ServiceSummary {
                    name: s.name.to_string(),
                    state: s.state(),
                    since_ms: instances.iter().map(|i| i.health_since_ms()).max(),
                    instances: instances.len(),
                    tools: catalog.tool_count(&s.name),
                }
            })
            .collect()
    }

    /// The service registered as `name`.
    pub fn upstream(&self, name: &str) -> Option<Arc<Service>> {
        self.lock().get(name).cloned()
    }

    /// One service as `/services` shows it.
    pub fn service(&self, name: &str) -> Option<ServiceEntry> {
        let service = self.lock().get(name).cloned()?;
        Some(entry(&service, &self.catalog()))
    }

    /// Closes every upstream session (gateway shutdown), bounded in time.
    pub async fn close_all(&self) {
        let services: Vec<Arc<Service>> = self.lock().values().cloned().collect();
        let closing = services
            .iter()
            .flat_map(|s| s.instances().iter().cloned().collect::<Vec<_>>())
            .map(|i| async move { i.close().await });
        // Long enough for a stdio child to be stopped in full (stdin closed, SIGTERM,
        // SIGKILL); one that outlasts it still dies with the gateway (PR_SET_PDEATHSIG).
        let limit = crate::upstream::stdio::EOF_GRACE
            + crate::upstream::stdio::STOP_GRACE
            + Duration::from_secs(1);
        let _ = tokio::time::timeout(limit, futures::future::join_all(closing)).await;
    }
}

/// A service as `/services` shows it: linear in its tools.
fn entry(service: &Arc<Service>, catalog: &Catalog) -> ServiceEntry {
    let mut tools = catalog
        .tools_of(&service.name)
        .map(|(tool, original)| ToolView {
            description: tool.description.as_ref().map(|d| d.to_string()),
            name: tool.name.to_string(),
            original_name: original.to_string(),
            schema_note: catalog
                .schema_note(&service.name, original)
                .map(str::to_owned),
        })
        .collect::<Vec<_>>();
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    ServiceEntry {
        service: service.view(),
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
