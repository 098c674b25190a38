//! Recommendations: similar products, trending products, and personalised picks, plus
//! the service-to-service MCP client that personalisation needs.
//!
//! Personalised recommendations read the user's preferences from user-service *through
//! the gateway*, as an MCP client: [`GatewayClient`] keeps one cached client session
//! (opened with `service_kit::client::connect`) and calls the `getUserPreferences`
//! tool on it. The session lives in a `tokio::sync::Mutex` that is held only to get or
//! open the session and clone its `Peer`; the call itself runs without the lock, so
//! concurrent recommendations share one multiplexed session. On a transport failure
//! the cached session is dropped (if no one replaced it already) and the call retried
//! once on a fresh session, which covers a gateway restart.

use std::{
    cmp::Ordering,
    collections::HashSet,
    sync::atomic::{AtomicU64, Ordering as AtomicOrdering},
    time::Duration,
};

use rmcp::{
    RoleClient, ServiceError,
    model::{CallToolRequestParams, CallToolResponse, CallToolResult, JsonObject},
    service::Peer,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use service_kit::client::{ClientOptions, ClientSession, connect};

use crate::data::{Catalog, Category, Product};

/// Upper bound for one `getUserPreferences` call through the gateway.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The user-service tool that gives a user's preferences.
pub const PREFERENCES_TOOL: &str = "getUserPreferences";

/// A product picked by a recommender, with its score and, for personalised picks, why.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub idx: usize,
    pub score: f64,
    pub reasons: Vec<String>,
}

fn by_score_then_id(a: &Scored, b: &Scored) -> Ordering {
    b.score
        .partial_cmp(&a.score)
        .unwrap_or(Ordering::Equal)
        .then(a.idx.cmp(&b.idx))
}

/// Rounds a score for display.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---------------------------------------------------------------------------------------
// Similar and trending
// ---------------------------------------------------------------------------------------

/// Products of the same category as `catalog.products[idx]`, closest first in tags and
/// price; in-stock products are preferred.
pub fn similar(catalog: &Catalog, stock: &[u32], idx: usize, limit: usize) -> Vec<Scored> {
    let base = &catalog.products[idx];
    let base_tags: HashSet<&str> = base.tags.iter().copied().collect();
    let mut picks: Vec<Scored> = catalog
        .products
        .iter()
        .enumerate()
        .filter(|(i, p)| *i != idx && p.category == base.category)
        .map(|(i, p)| {
            let tags: HashSet<&str> = p.tags.iter().copied().collect();
            let union = base_tags.union(&tags).count().max(1) as f64;
            let overlap = base_tags.intersection(&tags).count() as f64 / union;
            let (a, b) = (base.price_cents as f64, p.price_cents as f64);
            let closeness = 1.0 - ((a - b).abs() / a.max(b).max(1.0)).min(1.0);
            let mut score = 2.0 * overlap + 1.5 * closeness + 0.5 * p.rating() / 5.0;
            if p.brand == base.brand {
                score += 0.3;
            }
            if stock.get(i).copied().unwrap_or(0) > 0 {
                score += 1.0;
            }
            Scored {
                idx: i,
                score,
                reasons: Vec::new(),
            }
        })
        .collect();
    picks.sort_by(by_score_then_id);
    picks.truncate(limit);
    picks
}

/// Best sellers (history plus run-time orders), weighted with the rating; optionally
/// within one category.
pub fn trending(
    catalog: &Catalog,
    units: &[u32],
    category: Option<Category>,
    limit: usize,
) -> Vec<Scored> {
    let candidates: Vec<(usize, &Product)> = catalog
        .products
        .iter()
        .enumerate()
        .filter(|(_, p)| category.is_none_or(|c| p.category == c))
        .collect();
    let max_units = candidates
        .iter()
        .map(|(i, _)| units.get(*i).copied().unwrap_or(0))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut picks: Vec<Scored> = candidates
        .into_iter()
        .map(|(i, p)| {
            let sold = f64::from(units.get(i).copied().unwrap_or(0));
            Scored {
                idx: i,
                score: 0.7 * sold / max_units + 0.3 * p.rating() / 5.0,
                reasons: Vec::new(),
            }
        })
        .collect();
    picks.sort_by(by_score_then_id);
    picks.truncate(limit);
    picks
}

// ---------------------------------------------------------------------------------------
// Personalised
// ---------------------------------------------------------------------------------------

/// A user's shopping preferences, as user-service's `getUserPreferences` returns them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    pub user_id: String,
    #[serde(default)]
    pub favorite_categories: Vec<String>,
    #[serde(default)]
    pub preferred_brands: Vec<String>,
    #[serde(default)]
    pub price_range: Option<PriceRange>,
    #[serde(default)]
    pub newsletter: bool,
}

/// Preferred price range in US dollars.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriceRange {
    pub min: f64,
    pub max: f64,
}

/// In-stock products scored against the preferences: favourite category (earlier
/// favourites weigh more), preferred brand, price inside the range (outside costs in
/// proportion to the distance), and rating.
pub fn personalized(
    catalog: &Catalog,
    stock: &[u32],
    prefs: &Preferences,
    limit: usize,
) -> Vec<Scored> {
    let mut picks: Vec<Scored> = catalog
        .products
        .iter()
        .enumerate()
        .filter(|(i, _)| stock.get(*i).copied().unwrap_or(0) > 0)
        .map(|(i, p)| {
            let mut score = 0.0;
            let mut reasons = Vec::new();
            if let Some(rank) = prefs
                .favorite_categories
                .iter()
                .position(|c| c.trim().eq_ignore_ascii_case(p.category.as_str()))
            {
                score += 4.0 - 0.5 * rank.min(3) as f64;
                reasons.push(format!("favourite category {}", p.category.as_str()));
            }
            if prefs
                .preferred_brands
                .iter()
                .any(|b| b.trim().eq_ignore_ascii_case(p.brand))
            {
                score += 2.5;
                reasons.push(format!("preferred brand {}", p.brand));
            }
            if let Some(range) = prefs.price_range {
                let price = p.price();
                if price >= range.min && price <= range.max {
                    score += 1.5;
                    reasons.push("within your price range".to_string());
                } else {
                    let distance = if price < range.min {
                        (range.min - price) / range.min.max(1.0)
                    } else {
                        (price - range.max) / range.max.max(1.0)
                    };
                    score -= distance.min(2.0);
                }
            }
            score += 0.8 * (p.rating() - 3.0);
            score += 0.3 * f64::from(p.review_count.min(5000)) / 5000.0;
            if p.rating_tenths >= 45 {
                reasons.push(format!("rated {:.1}", p.rating()));
            }
            Scored {
                idx: i,
                score,
                reasons,
            }
        })
        .collect();
    picks.sort_by(by_score_then_id);
    picks.truncate(limit);
    picks
}

// ---------------------------------------------------------------------------------------
// The gateway client
// ---------------------------------------------------------------------------------------

/// Why preferences could not be read. Display completes
/// `cannot read preferences of user "X" through the gateway: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreferencesError {
    /// No gateway URL is configured.
    NotConfigured,
    /// The gateway could not be reached or the session broke.
    Unreachable(String),
    /// The tool answered `isError` (e.g. unknown user) or the gateway refused the call
    /// with a JSON-RPC error; the message is passed along as is.
    Refused(String),
    /// The answer did not have the expected shape.
    Malformed(String),
}

impl PreferencesError {
    /// The message for the caller.
    pub fn message(&self, user_id: &str) -> String {
        match self {
            PreferencesError::NotConfigured => format!(
                "cannot read preferences of user \"{user_id}\": no gateway is configured \
                 (start shopping-service with --gateway-url to enable personalised recommendations)"
            ),
            PreferencesError::Unreachable(why)
            | PreferencesError::Refused(why)
            | PreferencesError::Malformed(why) => {
                format!("cannot read preferences of user \"{user_id}\" through the gateway: {why}")
            }
        }
    }
}

#[derive(Default)]
struct Cached {
    /// Bumped each time a session is opened, so a failing caller only drops the
    /// session it used, never a fresh one another caller just opened.
    generation: u64,
    session: Option<ClientSession>,
    /// Why the last connection attempt failed.
    last_error: Option<String>,
}

/// An MCP client of the gateway with one cached, shared session.
pub struct GatewayClient {
    mcp_url: String,
    options: ClientOptions,
    cached: tokio::sync::Mutex<Cached>,
    /// Failed connection attempts so far (written under the lock, read before it), so
    /// calls that queued behind a failing attempt share its outcome instead of each
    /// waiting out a connect timeout in turn.
    connect_failures: AtomicU64,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClient")
            .field("mcp_url", &self.mcp_url)
            .finish_non_exhaustive()
    }
}

impl GatewayClient {
    /// A client for the gateway at `base_url` (e.g. `http://127.0.0.1:3001`); the MCP
    /// endpoint is `{base_url}/mcp`. Nothing is connected until the first call.
    pub fn new(base_url: &str, token: &str, client_name: &str) -> GatewayClient {
        GatewayClient {
            mcp_url: format!("{}/mcp", base_url.trim_end_matches('/')),
            options: ClientOptions {
                client_name: client_name.to_string(),
                bearer: Some(token.to_string()),
                ..Default::default()
            },
            cached: tokio::sync::Mutex::new(Cached::default()),
            connect_failures: AtomicU64::new(0),
        }
    }

    /// The cached session's peer, opening a session first if there is none. Opening
    /// happens under the lock so concurrent first calls open one session, not many.
    async fn peer(&self) -> Result<(u64, Peer<RoleClient>), PreferencesError> {
        let failures_before = self.connect_failures.load(AtomicOrdering::Acquire);
        let mut cached = self.cached.lock().await;
        if let Some(session) = &cached.session
            && !session.is_closed()
        {
            return Ok((cached.generation, session.peer().clone()));
        }
        if self.connect_failures.load(AtomicOrdering::Acquire) != failures_before
            && let Some(error) = &cached.last_error
        {
            // An attempt failed while this call waited for the lock: share its outcome.
            return Err(PreferencesError::Unreachable(error.clone()));
        }
        match connect(&self.mcp_url, &self.options).await {
            Ok(session) => {
                cached.generation += 1;
                cached.last_error = None;
                let peer = session.peer().clone();
                cached.session = Some(session);
                tracing::info!(gateway = %self.mcp_url, "opened MCP session with the gateway");
                Ok((cached.generation, peer))
            }
            Err(e) => {
                let error = format!("{e:#}");
                cached.last_error = Some(error.clone());
                self.connect_failures.fetch_add(1, AtomicOrdering::Release);
                Err(PreferencesError::Unreachable(error))
            }
        }
    }

    /// Drops the cached session if it is still the one of `generation`.
    async fn forget(&self, generation: u64) {
        let mut cached = self.cached.lock().await;
        if cached.generation == generation && cached.session.take().is_some() {
            tracing::info!(gateway = %self.mcp_url, "dropped broken MCP session with the gateway");
        }
    }

    /// Calls `getUserPreferences` {"id": user_id} through the gateway.
    pub async fn user_preferences(&self, user_id: &str) -> Result<Preferences, PreferencesError> {
        let mut arguments = JsonObject::new();
        arguments.insert("id".into(), Value::String(user_id.to_string()));
        let params = CallToolRequestParams::new(PREFERENCES_TOOL).with_arguments(arguments);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (generation, peer) = self.peer().await?;
            // The lock is released: the call runs concurrently with others.
            let outcome =
                tokio::time::timeout(CALL_TIMEOUT, peer.call_tool_once(params.clone())).await;
            let error = match outcome {
                Ok(Ok(CallToolResponse::Complete(result))) => return parse_preferences(result),
                Ok(Ok(_)) => {
                    return Err(PreferencesError::Malformed(format!(
                        "{PREFERENCES_TOOL} did not return a final result"
                    )));
                }
                Ok(Err(ServiceError::McpError(e))) => {
                    return Err(PreferencesError::Refused(format!(
                        "the gateway refused the call: {} (code {})",
                        e.message, e.code.0
                    )));
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => {
                    // A hung session is not retried (that would double the wait), but
                    // the next call starts on a fresh one.
                    self.forget(generation).await;
                    return Err(PreferencesError::Unreachable(format!(
                        "no answer from {} within {} s",
                        self.mcp_url,
                        CALL_TIMEOUT.as_secs()
                    )));
                }
            };
            tracing::warn!(gateway = %self.mcp_url, attempt, error = %error,
                "calling {PREFERENCES_TOOL} through the gateway failed");
            self.forget(generation).await;
            if attempt >= 2 {
                return Err(PreferencesError::Unreachable(format!(
                    "the MCP session with {} failed: {error}",
                    self.mcp_url
                )));
            }
        }
    }
}

/// Reads the preferences out of a tool result: `isError` passes the tool's message on;
/// otherwise the structured content (or, failing that, the text as JSON) must have the
/// preferences shape.
pub fn parse_preferences(result: CallToolResult) -> Result<Preferences, PreferencesError> {
    let text: Vec<&str> = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    if result.is_error == Some(true) {
        let message = if text.is_empty() {
            format!("{PREFERENCES_TOOL} failed without a message")
        } else {
            text.join("\n")
        };
        return Err(PreferencesError::Refused(message));
    }
    let value = match (&result.structured_content, text.first()) {
        (Some(v), _) => v.clone(),
        (None, Some(t)) => serde_json::from_str(t).map_err(|e| {
            PreferencesError::Malformed(format!("{PREFERENCES_TOOL} returned no JSON: {e}"))
        })?,
        (None, None) => {
            return Err(PreferencesError::Malformed(format!(
                "{PREFERENCES_TOOL} returned nothing"
            )));
        }
    };
    serde_json::from_value(value).map_err(|e| {
        PreferencesError::Malformed(format!(
            "{PREFERENCES_TOOL} returned an unexpected shape: {e}"
        ))
    })
}

/// The preferences as echoed in `basedOn`.
pub fn preferences_json(prefs: &Preferences) -> Value {
    json!({
        "userId": prefs.user_id,
        "favoriteCategories": prefs.favorite_categories,
        "preferredBrands": prefs.preferred_brands,
        "priceRange": prefs.price_range.map(|r| json!({"min": r.min, "max": r.max})),
        "newsletter": prefs.newsletter,
    })
}

#[cfg(test)]
mod tests {
    use rmcp::model::ContentBlock;

    use super::*;
    use crate::data::CATALOG;

    fn stock() -> Vec<u32> {
        CATALOG.products.iter().map(|p| p.initial_stock).collect()
    }

    #[test]
    fn similar_stays_in_category_and_excludes_self() {
        let (idx, p) = CATALOG.get("123").expect("123");
        let picks = similar(&CATALOG, &stock(), idx, 5);
        assert_eq!(picks.len(), 5);
        for s in &picks {
            assert_ne!(s.idx, idx);
            assert_eq!(CATALOG.products[s.idx].category, p.category);
        }
        assert!(picks.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn trending_follows_sales() {
        let units = CATALOG.history_units.clone();
        let picks = trending(&CATALOG, &units, None, 10);
        let best = (0..units.len()).max_by_key(|&i| (units[i], std::cmp::Reverse(i)));
        assert!(picks.iter().take(3).any(|s| Some(s.idx) == best));
        let books = trending(&CATALOG, &units, Some(Category::Books), 5);
        assert!(
            books
                .iter()
                .all(|s| CATALOG.products[s.idx].category == Category::Books)
        );
        // Boosting a product's sales pushes it to the top.
        let mut boosted = units.clone();
        boosted[400] += 10_000;
        assert_eq!(trending(&CATALOG, &boosted, None, 1)[0].idx, 400);
    }

    #[test]
    fn personalized_favours_preferences_and_skips_out_of_stock() {
        let prefs = Preferences {
            user_id: "456".into(),
            favorite_categories: vec!["Books".into(), "Grocery".into()],
            preferred_brands: vec!["Northwind Press".into()],
            price_range: Some(PriceRange {
                min: 5.0,
                max: 40.0,
            }),
            newsletter: true,
        };
        let mut stock = stock();
        let picks = personalized(&CATALOG, &stock, &prefs, 10);
        assert_eq!(picks.len(), 10);
        for s in &picks {
            let p = &CATALOG.products[s.idx];
            assert!(
                matches!(p.category, Category::Books | Category::Grocery),
                "{p:?}"
            );
            assert!(stock[s.idx] > 0);
            assert!(!s.reasons.is_empty());
        }
        // The top pick becomes unavailable: it disappears.
        let top = picks[0].idx;
        stock[top] = 0;
        let again = personalized(&CATALOG, &stock, &prefs, 10);
        assert!(again.iter().all(|s| s.idx != top));
    }

    #[test]
    fn preferences_parse_from_structured_text_and_error() {
        let v = json!({"userId": "456", "favoriteCategories": ["Books"], "preferredBrands": [],
            "priceRange": {"min": 10, "max": 50}, "newsletter": false});
        let p = parse_preferences(CallToolResult::structured(v.clone())).expect("structured");
        assert_eq!(p.favorite_categories, vec!["Books"]);
        let echoed = preferences_json(&p);
        assert_eq!(echoed["favoriteCategories"], json!(["Books"]));
        assert_eq!(echoed["priceRange"]["max"], json!(50.0));
        let text_only = CallToolResult::success(vec![ContentBlock::text(v.to_string())]);
        assert_eq!(parse_preferences(text_only).expect("text"), p);
        let err = CallToolResult::error(vec![ContentBlock::text("no user with id \"99999\"")]);
        let e = parse_preferences(err).expect_err("isError");
        assert_eq!(
            e.message("99999"),
            "cannot read preferences of user \"99999\" through the gateway: no user with id \"99999\""
        );
        let bad = CallToolResult::structured(json!({"favoriteCategories": "Books"}));
        assert!(matches!(
            parse_preferences(bad),
            Err(PreferencesError::Malformed(_))
        ));
        assert!(
            PreferencesError::NotConfigured
                .message("1")
                .contains("gateway")
        );
    }

    #[tokio::test]
    async fn unreachable_gateway_is_reported() {
        // Port 9 (discard) on loopback: nothing listens there in a test environment.
        let client = GatewayClient::new("http://127.0.0.1:9", "t", "test");
        let e = client.user_preferences("1").await.expect_err("unreachable");
        assert!(matches!(e, PreferencesError::Unreachable(_)), "{e:?}");
        assert!(e.message("1").contains("through the gateway"));
    }
}
