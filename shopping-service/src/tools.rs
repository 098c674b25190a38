//! The MCP surface: the tool table (names, descriptions, JSON-Schema input and output
//! schemas) and [`ShopServer`], a hand-written `rmcp::ServerHandler` that lists the
//! tools and dispatches `tools/call` by name, and serves the resources, prompts and
//! completions of [`crate::content`] and the resource subscriptions (a change made by a
//! tool is announced to the subscribers before the tool's result is returned).
//!
//! Arguments are validated by [`crate::args`], not by rmcp's `Parameters<T>` extractor,
//! so every bad argument becomes an `isError` tool result with a precise message that
//! the caller can read and fix. Only an unknown tool name is a JSON-RPC error
//! (`-32602`, invalid params). Successful results carry structured content plus the
//! same JSON as text.

use std::{
    sync::{Arc, LazyLock},
    time::{SystemTime, UNIX_EPOCH},
};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams,
        CompleteResult, ContentBlock, GetPromptRequestParams, GetPromptResponse, Implementation,
        JsonObject, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
        ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
        ServerCapabilities, ServerConfig, SubscribeRequestParams, SubscriptionFilter, Tool,
        ToolAnnotations, UnsubscribeRequestParams,
    },
    service::{RequestContext, SubscriptionContext},
};
use serde_json::{Value, json};
use service_kit::{
    mcp::tool,
    subscriptions::{SessionKey, Subscriptions},
};
use tokio_util::sync::CancellationToken;

use crate::{
    SERVICE_NAME,
    args::{ArgError, Args},
    content,
    data::{CATALOG, Catalog, Category},
    recommend::{self, GatewayClient, PreferencesError, Scored},
    search::{self, Filter, SearchIndex},
    store::{Store, StoreError},
};

/// Largest `limit` of the listing tools.
pub const MAX_LIMIT: u64 = 100;
/// Largest accepted price bound, in dollars.
const MAX_PRICE: f64 = 1_000_000.0;

// ---------------------------------------------------------------------------------------
// Tool table
// ---------------------------------------------------------------------------------------

/// Every tool, in the order `tools/list` shows them.
pub fn tools() -> &'static [Tool] {
    static TOOLS: LazyLock<Vec<Tool>> = LazyLock::new(build_tools);
    &TOOLS
}

fn input(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn limit_schema(default: u64, max: u64) -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": max, "default": default,
        "description": format!("Maximum number of results (1-{max}, default {default}).")})
}

fn id_schema(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": crate::args::MAX_ID_LEN, "description": description})
}

fn category_schema(description: &str) -> Value {
    json!({"type": "string", "enum": Category::NAMES, "description": description})
}

fn product_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "category": {"type": "string", "enum": Category::NAMES},
            "brand": {"type": "string"},
            "description": {"type": "string"},
            "price": {"type": "number", "description": "Price in US dollars."},
            "stock": {"type": "integer", "minimum": 0},
            "inStock": {"type": "boolean"},
            "rating": {"type": "number", "minimum": 1, "maximum": 5},
            "reviewCount": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["id", "name", "category", "brand", "description", "price", "stock",
            "inStock", "rating", "reviewCount", "tags"],
    })
}

fn products_schema() -> Value {
    json!({"type": "array", "items": product_schema()})
}

fn line_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "productId": {"type": "string"},
            "name": {"type": "string"},
            "unitPrice": {"type": "number"},
            "quantity": {"type": "integer", "minimum": 1},
            "lineTotal": {"type": "number"},
        },
        "required": ["productId", "name", "unitPrice", "quantity", "lineTotal"],
    })
}

fn basket_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "userId": {"type": "string"},
            "items": {"type": "array", "items": line_schema()},
            "itemCount": {"type": "integer", "minimum": 0},
            "total": {"type": "number"},
        },
        "required": ["userId", "items", "itemCount", "total"],
    })
}

fn order_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "orderId": {"type": "string"},
            "userId": {"type": "string"},
            "items": {"type": "array", "items": line_schema()},
            "total": {"type": "number"},
            "status": {"type": "string", "enum": ["confirmed", "shipped", "delivered"]},
            "createdAt": {"type": "string", "format": "date-time"},
        },
        "required": ["orderId", "userId", "items", "total", "status", "createdAt"],
    })
}

fn build_tools() -> Vec<Tool> {
    let read_only = ToolAnnotations::new().read_only(true).open_world(false);
    vec![
        tool(
            "getProductById",
            "Get product",
            "Get one product of the catalog by its id (\"1\" to \"480\"): name, category, brand, description, price in USD, current stock, rating, review count and tags.",
            input(json!({"id": id_schema("Product id, e.g. \"123\".")}), &["id"]),
            product_schema(),
        )
        .annotate(read_only.clone()),
        tool(
            "searchProducts",
            "Search products",
            "Full-text search over product names, brands, tags, categories and descriptions. Results are ranked: products matching more of the query words come first, name and brand matches weigh more than description matches.",
            input(
                json!({
                    "query": {"type": "string", "minLength": 1, "description": "Words to look for, e.g. \"wireless headphones\"."},
                    "limit": limit_schema(10, MAX_LIMIT),
                }),
                &["query"],
            ),
            json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "total": {"type": "integer", "description": "Number of matching products (before the limit)."},
                    "products": products_schema(),
                },
                "required": ["query", "total", "products"],
            }),
        )
        .annotate(read_only.clone()),
        tool(
            "listCategories",
            "List categories",
            "List the product categories with their product counts, in-stock counts, price ranges and average ratings.",
            input(json!({}), &[]),
            json!({
                "type": "object",
                "properties": {
                    "totalProducts": {"type": "integer"},
                    "categories": {"type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string", "enum": Category::NAMES},
                            "productCount": {"type": "integer"},
                            "inStockCount": {"type": "integer"},
                            "minPrice": {"type": "number"},
                            "maxPrice": {"type": "number"},
                            "averagePrice": {"type": "number"},
                            "averageRating": {"type": "number"},
                        },
                        "required": ["name", "productCount", "inStockCount", "minPrice", "maxPrice", "averagePrice", "averageRating"],
                    }},
                },
                "required": ["totalProducts", "categories"],
            }),
        )
        .annotate(read_only.clone()),
        tool(
            "filterProducts",
            "Filter products",
            "List products matching every given condition (category, price range in USD, stock, minimum rating), in id order, with paging (limit/offset).",
            input(
                json!({
                    "category": category_schema("Only products of this category."),
                    "minPrice": {"type": "number", "minimum": 0, "description": "Lowest price in USD (inclusive)."},
                    "maxPrice": {"type": "number", "minimum": 0, "description": "Highest price in USD (inclusive); must not be below minPrice."},
                    "inStock": {"type": "boolean", "description": "true: only products in stock; false: only sold-out products."},
                    "minRating": {"type": "number", "minimum": 0, "maximum": 5, "description": "Lowest rating (0-5)."},
                    "limit": limit_schema(20, MAX_LIMIT),
                    "offset": {"type": "integer", "minimum": 0, "default": 0, "description": "Number of matches to skip (for paging)."},
                }),
                &[],
            ),
            json!({
                "type": "object",
                "properties": {
                    "total": {"type": "integer", "description": "Number of matching products (before paging)."},
                    "offset": {"type": "integer"},
                    "limit": {"type": "integer"},
                    "products": products_schema(),
                },
                "required": ["total", "offset", "limit", "products"],
            }),
        )
        .annotate(read_only.clone()),
        tool(
            "getSimilarProducts",
            "Similar products",
            "Products similar to a given product: same category, closest in tags and price, in-stock products first.",
            input(
                json!({"id": id_schema("Id of the product to find similar products for."), "limit": limit_schema(5, 50)}),
                &["id"],
            ),
            json!({
                "type": "object",
                "properties": {
                    "productId": {"type": "string"},
                    "category": {"type": "string"},
                    "products": products_schema(),
                },
                "required": ["productId", "category", "products"],
            }),
        )
        .annotate(read_only.clone()),
        tool(
            "getTrendingProducts",
            "Trending products",
            "Best-selling products by order volume (historical and recent orders), weighted with their rating; optionally within one category.",
            input(
                json!({"category": category_schema("Only products of this category."), "limit": limit_schema(10, 50)}),
                &[],
            ),
            json!({
                "type": "object",
                "properties": {
                    "category": {"type": ["string", "null"]},
                    "products": products_schema(),
                },
                "required": ["category", "products"],
            }),
        )
        .annotate(read_only.clone()),
        tool(
            "getPersonalizedRecommendations",
            "Personalised recommendations",
            "Recommend in-stock products for a user from their preferences (favourite categories, preferred brands, price range), which are read from user-service through the gateway. Fails with a clear message if the gateway is not configured or unreachable, or if the user does not exist.",
            input(
                json!({"userId": id_schema("User id, e.g. \"456\"."), "limit": limit_schema(10, 50)}),
                &["userId"],
            ),
            json!({
                "type": "object",
                "properties": {
                    "userId": {"type": "string"},
                    "basedOn": {
                        "type": "object",
                        "description": "The preferences the recommendations are based on.",
                        "properties": {
                            "userId": {"type": "string"},
                            "favoriteCategories": {"type": "array", "items": {"type": "string"}},
                            "preferredBrands": {"type": "array", "items": {"type": "string"}},
                            "priceRange": {"type": ["object", "null"]},
                            "newsletter": {"type": "boolean"},
                        },
                    },
                    "products": products_schema(),
                },
                "required": ["userId", "basedOn", "products"],
            }),
        )
        .annotate(read_only.clone().open_world(true)),
        tool(
            "addToBasket",
            "Add to basket",
            "Add a quantity of a product to a user's basket and return the basket. The basket cannot hold more of a product than is in stock.",
            input(
                json!({
                    "userId": id_schema("User id."),
                    "productId": id_schema("Product id."),
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1, "description": "How many to add (1-100, default 1)."},
                }),
                &["userId", "productId"],
            ),
            basket_schema(),
        )
        .annotate(ToolAnnotations::new().read_only(false).destructive(false).idempotent(false).open_world(false)),
        tool(
            "getBasket",
            "Get basket",
            "Show a user's basket: items with unit price, quantity and line total, and the basket total in USD.",
            input(json!({"userId": id_schema("User id.")}), &["userId"]),
            basket_schema(),
        )
        .annotate(read_only.clone()),
        tool(
            "placeOrder",
            "Place order",
            "Order everything in a user's basket: checks and decrements stock for every item at once (all or nothing), empties the basket and returns the order. Fails, changing nothing, if the basket is empty or an item is short of stock.",
            input(json!({"userId": id_schema("User id.")}), &["userId"]),
            order_schema(),
        )
        .annotate(ToolAnnotations::new().read_only(false).destructive(false).idempotent(false).open_world(false)),
        tool(
            "getUserOrders",
            "User orders",
            "A user's orders, historical and placed since the service started, newest first.",
            input(
                json!({"userId": id_schema("User id."), "limit": limit_schema(20, MAX_LIMIT)}),
                &["userId"],
            ),
            json!({
                "type": "object",
                "properties": {
                    "userId": {"type": "string"},
                    "total": {"type": "integer", "description": "Number of orders of the user (before the limit)."},
                    "orders": {"type": "array", "items": order_schema()},
                },
                "required": ["userId", "total", "orders"],
            }),
        )
        .annotate(read_only.clone()),
        tool(
            "getOrderStats",
            "Order statistics",
            "Shop-wide order statistics: order count, items sold, revenue and average order value in USD, top products and revenue by category.",
            input(json!({}), &[]),
            json!({
                "type": "object",
                "properties": {
                    "orderCount": {"type": "integer"},
                    "historicalOrderCount": {"type": "integer"},
                    "runtimeOrderCount": {"type": "integer"},
                    "itemsSold": {"type": "integer"},
                    "revenue": {"type": "number"},
                    "averageOrderValue": {"type": "number"},
                    "topProducts": {"type": "array", "items": {"type": "object"}},
                    "revenueByCategory": {"type": "array", "items": {"type": "object"}},
                },
                "required": ["orderCount", "historicalOrderCount", "runtimeOrderCount", "itemsSold",
                    "revenue", "averageOrderValue", "topProducts", "revenueByCategory"],
            }),
        )
        .annotate(read_only),
    ]
}

// ---------------------------------------------------------------------------------------
// The handler
// ---------------------------------------------------------------------------------------

/// A tool-level failure: becomes an `isError` result with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError(pub String);

impl From<ArgError> for ToolError {
    fn from(e: ArgError) -> Self {
        ToolError(e.0)
    }
}

impl From<StoreError> for ToolError {
    fn from(e: StoreError) -> Self {
        ToolError(e.to_string())
    }
}

type Outcome = Result<Value, ToolError>;

/// Everything the tools work on; one per running service, shared by all sessions.
#[derive(Debug)]
pub struct Shop {
    store: Store,
    index: SearchIndex,
    gateway: Option<GatewayClient>,
    subscriptions: Subscriptions,
}

impl Shop {
    /// A shop over the demo catalog; `gateway` is used for personalised recommendations.
    pub fn new(gateway: Option<GatewayClient>) -> Shop {
        Shop::stopping_with(gateway, CancellationToken::new())
    }

    /// [`Shop::new`] whose open `subscriptions/listen` streams end when `shutdown` is
    /// cancelled.
    pub fn stopping_with(gateway: Option<GatewayClient>, shutdown: CancellationToken) -> Shop {
        Shop {
            store: Store::new(&CATALOG),
            index: SearchIndex::new(&CATALOG),
            gateway,
            subscriptions: Subscriptions::new(shutdown),
        }
    }

    fn catalog(&self) -> &'static Catalog {
        self.store.catalog()
    }

    /// The stock, baskets and orders (for [`crate::content`]).
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The resource subscribers of every session.
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    /// Runs tool `name` and then tells the subscribers of what it changed; `None` if
    /// there is no such tool.
    async fn call_and_announce(&self, name: &str, args: Option<&JsonObject>) -> Option<Outcome> {
        let outcome = self.call(name, args).await?;
        if let Ok(value) = &outcome {
            let user = value["userId"].as_str().unwrap_or_default();
            let changed = match name {
                "addToBasket" => content::basket_changed(user),
                "placeOrder" => content::order_placed(
                    user,
                    value["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|line| line["productId"].as_str()),
                ),
                _ => Vec::new(),
            };
            for uri in changed {
                self.subscriptions.updated(&uri).await;
            }
        }
        Some(outcome)
    }

    /// Runs tool `name`; `None` if there is no such tool.
    pub async fn call(&self, name: &str, args: Option<&JsonObject>) -> Option<Outcome> {
        Some(match name {
            "getProductById" => self.get_product_by_id(args),
            "searchProducts" => self.search_products(args),
            "listCategories" => self.list_categories(args),
            "filterProducts" => self.filter_products(args),
            "getSimilarProducts" => self.similar_products(args),
            "getTrendingProducts" => self.trending_products(args),
            "getPersonalizedRecommendations" => self.personalized(args).await,
            "addToBasket" => self.add_to_basket(args),
            "getBasket" => self.get_basket(args),
            "placeOrder" => self.place_order(args),
            "getUserOrders" => self.user_orders(args),
            "getOrderStats" => self.order_stats(args),
            _ => return None,
        })
    }

    fn product(&self, id: &str) -> Result<(usize, &'static crate::data::Product), ToolError> {
        self.catalog()
            .get(id)
            .ok_or_else(|| ToolError(format!("no product with id \"{id}\"")))
    }

    /// Products as JSON with their current stock, plus per-product extra fields.
    fn products_json(
        &self,
        picks: &[Scored],
        extra: impl Fn(&Scored) -> Vec<(&'static str, Value)>,
    ) -> Vec<Value> {
        let stock = self.store.stock_snapshot();
        picks
            .iter()
            .map(|s| {
                let mut v = self.catalog().products[s.idx].to_json(stock[s.idx]);
                if let Value::Object(map) = &mut v {
                    for (k, x) in extra(s) {
                        map.insert(k.to_string(), x);
                    }
                }
                v
            })
            .collect()
    }

    fn get_product_by_id(&self, args: Option<&JsonObject>) -> Outcome {
        let a = Args::new(args, &["id"])?;
        let (idx, p) = self.product(a.required_id("id")?)?;
        Ok(p.to_json(self.store.stock(idx)))
    }

    fn search_products(&self, args: Option<&JsonObject>) -> Outcome {
        let a = Args::new(args, &["query", "limit"])?;
        let query = a.required_str("query")?;
        let limit = a.optional_integer("limit", 1, MAX_LIMIT, 10)? as usize;
        if query.chars().count() > 200 {
            return Err(ToolError(
                "argument \"query\" must be at most 200 characters long".into(),
            ));
        }
        let (total, hits) = self
            .index
            .search(self.catalog(), query, limit)
            .ok_or_else(|| {
                ToolError("argument \"query\" must contain at least one letter or digit".into())
            })?;
        Ok(json!({
            "query": query,
            "total": total,
            "products": self.products_json(&hits, |_| vec![]),
        }))
    }

    fn list_categories(&self, args: Option<&JsonObject>) -> Outcome {
        Args::new(args, &[])?;
        let stock = self.store.stock_snapshot();
        Ok(json!({
            "totalProducts": self.catalog().products.len(),
            "categories": search::category_summaries(self.catalog(), &stock),
        }))
    }

    fn filter_products(&self, args: Option<&JsonObject>) -> Outcome {
        let a = Args::new(
            args,
            &[
                "category",
                "minPrice",
                "maxPrice",
                "inStock",
                "minRating",
                "limit",
                "offset",
            ],
        )?;
        let filter = Filter {
            category: a
                .optional_enum("category", &Category::NAMES)?
                .and_then(Category::parse),
            min_price: a.optional_number("minPrice", 0.0, MAX_PRICE)?,
            max_price: a.optional_number("maxPrice", 0.0, MAX_PRICE)?,
            in_stock: a.optional_bool("inStock")?,
            min_rating: a.optional_number("minRating", 0.0, 5.0)?,
        };
        let limit = a.optional_integer("limit", 1, MAX_LIMIT, 20)? as usize;
        let offset = a.optional_integer("offset", 0, 1_000_000, 0)? as usize;
        if let (Some(min), Some(max)) = (filter.min_price, filter.max_price)
            && min > max
        {
            return Err(ToolError(format!(
                "minPrice ({min}) must not be greater than maxPrice ({max})"
            )));
        }
        let stock = self.store.stock_snapshot();
        let hits = filter.apply(self.catalog(), &stock);
        let products: Vec<Value> = hits
            .iter()
            .skip(offset)
            .take(limit)
            .map(|&i| self.catalog().products[i].to_json(stock[i]))
            .collect();
        Ok(json!({"total": hits.len(), "offset": offset, "limit": limit, "products": products}))
    }

    fn similar_products(&self, args: Option<&JsonObject>) -> Outcome {
        let a = Args::new(args, &["id", "limit"])?;
        let (idx, p) = self.product(a.required_id("id")?)?;
        let limit = a.optional_integer("limit", 1, 50, 5)? as usize;
        let picks = recommend::similar(self.catalog(), &self.store.stock_snapshot(), idx, limit);
        Ok(json!({
            "productId": p.id,
            "category": p.category.as_str(),
            "products": self.products_json(&picks, |s| vec![("similarity", json!(recommend::round2(s.score)))]),
        }))
    }

    fn trending_products(&self, args: Option<&JsonObject>) -> Outcome {
        let a = Args::new(args, &["category", "limit"])?;
        let category = a
            .optional_enum("category", &Category::NAMES)?
            .and_then(Category::parse);
        let limit = a.optional_integer("limit", 1, 50, 10)? as usize;
        let units = self.store.units_sold();
        let picks = recommend::trending(self.catalog(), &units, category, limit);
        Ok(json!({
            "category": category.map(Category::as_str),
            "products": self.products_json(&picks, |s| vec![
                ("unitsSold", json!(units[s.idx])),
                ("trendScore", json!(recommend::round2(s.score))),
            ]),
        }))
    }

    async fn personalized(&self, args: Option<&JsonObject>) -> Outcome {
        let a = Args::new(args, &["userId", "limit"])?;
        let user_id = a.required_id("userId")?;
        let limit = a.optional_integer("limit", 1, 50, 10)? as usize;
        let prefs = match &self.gateway {
            None => Err(PreferencesError::NotConfigured),
            Some(gateway) => gateway.user_preferences(user_id).await,
        }
        .map_err(|e| ToolError(e.message(user_id)))?;
        let picks =
            recommend::personalized(self.catalog(), &self.store.stock_snapshot(), &prefs, limit);
        Ok(json!({
            "userId": user_id,
            "basedOn": recommend::preferences_json(&prefs),
            "products": self.products_json(&picks, |s| vec![
                ("score", json!(recommend::round2(s.score))),
                ("reasons", json!(s.reasons)),
            ]),
        }))
    }

    fn add_to_basket(&self, args: Option<&JsonObject>) -> Outcome {
        let a = Args::new(args, &["userId", "productId", "quantity"])?;
        let user_id = a.required_id("userId")?;
        let product_id = a.required_id("productId")?;
        let quantity = a.optional_integer("quantity", 1, 100, 1)? as u32;
        Ok(self
            .store
            .add_to_basket(user_id, product_id, quantity)?
            .to_json())
    }

    fn get_basket(&self, args: Option<&JsonObject>) -> Outcome {
        let a = Args::new(args, &["userId"])?;
        Ok(self.store.basket(a.required_id("userId")?).to_json())
    }

    fn place_order(&self, args: Option<&JsonObject>) -> Outcome {
        let a = Args::new(args, &["userId"])?;
        let user_id = a.required_id("userId")?;
        let order = self.store.place_order(user_id, now())?;
        tracing::info!(order = %order.id, user = %user_id, total_cents = order.total_cents, "order placed");
        Ok(order.to_json())
    }

    fn user_orders(&self, args: Option<&JsonObject>) -> Outcome {
        let a = Args::new(args, &["userId", "limit"])?;
        let user_id = a.required_id("userId")?;
        let limit = a.optional_integer("limit", 1, MAX_LIMIT, 20)? as usize;
        let (total, orders) = self.store.orders_of(user_id, limit);
        Ok(json!({
            "userId": user_id,
            "total": total,
            "orders": orders.iter().map(|o| o.to_json()).collect::<Vec<_>>(),
        }))
    }

    fn order_stats(&self, args: Option<&JsonObject>) -> Outcome {
        Args::new(args, &[])?;
        Ok(self.store.stats().to_json(self.catalog(), 10))
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The MCP server handler; cheap to clone (one per session), sharing one [`Shop`].
#[derive(Debug, Clone)]
pub struct ShopServer {
    shop: Arc<Shop>,
    /// This session, for its resource subscriptions.
    session: SessionKey,
}

impl ShopServer {
    /// The handler of a new session (each value is a session of its own for
    /// `resources/subscribe`).
    pub fn new(shop: Arc<Shop>) -> ShopServer {
        let session = shop.subscriptions.new_session();
        ShopServer { shop, session }
    }

    /// Runs a tool call: `Err` only for an unknown tool.
    pub async fn call(
        &self,
        name: &str,
        args: Option<&JsonObject>,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(outcome) = self.shop.call_and_announce(name, args).await else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool \"{name}\""),
                Some(json!({"tool": name})),
            ));
        };
        Ok(match outcome {
            Ok(value) => CallToolResult::structured(value),
            Err(ToolError(message)) => {
                tracing::debug!(tool = name, %message, "tool call refused");
                CallToolResult::error(vec![ContentBlock::text(message)])
            }
        })
    }
}

impl ServerHandler for ShopServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_completions()
            .enable_prompts()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_tools()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(
                Implementation::new(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
                    .with_title("Demo shop")
                    .with_description(
                        "Product catalog, baskets, orders and recommendations of a demo shop.",
                    ),
            )
            .with_instructions(
                "A demo shop with a catalog of 480 products in 8 categories (Electronics, Books, \
                 Home & Kitchen, Sports & Outdoors, Clothing, Toys & Games, Beauty, Grocery). \
                 Find products with searchProducts, filterProducts, listCategories, \
                 getTrendingProducts and getSimilarProducts; getPersonalizedRecommendations \
                 reads a user's preferences from user-service through the gateway. Shop with \
                 addToBasket, getBasket and placeOrder; getUserOrders and getOrderStats report \
                 on orders. Prices are in USD. Baskets and orders placed at run time are kept \
                 in memory only. Resources: ecommerce://products/catalog, \
                 ecommerce://products/categories, ecommerce://orders/stats and the templates \
                 ecommerce://products/{id}, ecommerce://users/{userId}/basket (subscribe to \
                 hear of its changes) and ecommerce://users/{userId}/orders. Prompts: \
                 recommend_for_user and summarise_order_history.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools().to_vec()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.call(&request.name, request.arguments.as_ref())
            .await
            .map(CallToolResponse::from)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(content::resources()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            content::resource_templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        content::read(&self.shop, &request.uri).map(ReadResourceResponse::from)
    }

    /// `resources/subscribe` (2025 revisions): any resource of the shop; the updates
    /// come from the tools that change it.
    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        content::check(&request.uri)?;
        self.shop
            .subscriptions
            .subscribe(&request.uri, self.session, context.peer.clone());
        tracing::debug!(uri = %request.uri, "subscribed");
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.shop
            .subscriptions
            .unsubscribe(&request.uri, self.session);
        Ok(())
    }

    /// `subscriptions/listen` (2026-07-28): the shop's resources among those asked for.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let uris: Vec<String> = requested
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|uri| content::check(uri).is_ok())
            .cloned()
            .collect();
        Some(
            SubscriptionFilter::builder()
                .resource_subscriptions(uris)
                .build(),
        )
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        self.shop.subscriptions.listen(context).await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(content::prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        content::prompt(&self.shop, &request.name, request.arguments.as_ref())
            .map(GetPromptResponse::from)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        content::complete(&request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ShopServer {
        ShopServer::new(Arc::new(Shop::new(None)))
    }

    fn args(v: Value) -> JsonObject {
        match v {
            Value::Object(m) => m,
            _ => panic!("arguments must be an object"),
        }
    }

    async fn call(s: &ShopServer, name: &str, a: Value) -> CallToolResult {
        s.call(name, Some(&args(a))).await.expect("known tool")
    }

    fn error_text(r: &CallToolResult) -> String {
        assert_eq!(r.is_error, Some(true), "expected isError: {r:?}");
        r.content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect()
    }

    /// Every `required` key of the output schema is present in the structured result.
    fn assert_conforms(name: &str, value: &Value) {
        let tool = tools().iter().find(|t| t.name == name).expect("tool");
        let schema = tool.output_schema.as_ref().expect("output schema");
        for key in schema["required"].as_array().expect("required") {
            let key = key.as_str().expect("key");
            assert!(value.get(key).is_some(), "{name}: missing {key} in {value}");
        }
        if let Some(products) = value.get("products").and_then(Value::as_array) {
            let required = product_schema()["required"].clone();
            for p in products {
                for key in required.as_array().expect("required") {
                    assert!(
                        p.get(key.as_str().expect("key")).is_some(),
                        "{name}: product lacks {key}"
                    );
                }
            }
        }
    }

    #[test]
    fn tool_table_is_well_formed() {
        let tools = tools();
        assert_eq!(tools.len(), 12);
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), tools.len());
        for t in tools {
            assert!(
                t.description.as_deref().is_some_and(|d| d.len() > 20),
                "{}",
                t.name
            );
            let s = &t.input_schema;
            assert_eq!(s["type"], "object");
            assert!(s["properties"].is_object());
            assert!(s["required"].is_array());
            assert_eq!(s["additionalProperties"], false);
            let out = t.output_schema.as_ref().expect("output schema");
            assert_eq!(out["type"], "object");
        }
    }

    /// Each tool refuses exactly the arguments its schema does not declare.
    #[tokio::test]
    async fn schemas_and_validation_agree() {
        let s = server();
        for t in tools() {
            let declared: Vec<String> = t.input_schema["properties"]
                .as_object()
                .expect("properties")
                .keys()
                .map(|k| format!("\"{k}\""))
                .collect();
            let r = call(&s, &t.name, json!({"bogus": 1})).await;
            let text = error_text(&r);
            if declared.is_empty() {
                assert_eq!(
                    text,
                    "unknown argument \"bogus\" (this tool takes no arguments)"
                );
            } else {
                assert_eq!(
                    text,
                    format!(
                        "unknown argument \"bogus\" (accepted: {})",
                        declared.join(", ")
                    ),
                    "{}",
                    t.name
                );
            }
        }
    }

    #[tokio::test]
    async fn product_lookup_and_errors() {
        let s = server();
        let r = call(&s, "getProductById", json!({"id": "123"})).await;
        let v = r.structured_content.clone().expect("structured");
        assert_eq!(v["id"], "123");
        assert_conforms("getProductById", &v);
        let text = r.content[0].as_text().expect("text").text.clone();
        assert_eq!(serde_json::from_str::<Value>(&text).expect("json"), v);
        assert_eq!(
            error_text(&call(&s, "getProductById", json!({})).await),
            "missing required argument \"id\""
        );
        assert_eq!(
            error_text(&call(&s, "getProductById", json!({"id": 123})).await),
            "argument \"id\" must be a string, got number"
        );
        assert_eq!(
            error_text(&call(&s, "getProductById", json!({"id": "99999"})).await),
            "no product with id \"99999\""
        );
        let e = s.call("noSuchTool", None).await.expect_err("unknown tool");
        assert_eq!(e.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        assert!(e.message.contains("noSuchTool"));
    }

    #[tokio::test]
    async fn listing_tools_conform_to_their_output_schemas() {
        let s = server();
        for (name, a) in [
            ("searchProducts", json!({"query": "coffee", "limit": 3})),
            ("listCategories", json!({})),
            (
                "filterProducts",
                json!({"category": "Books", "maxPrice": 20}),
            ),
            ("getSimilarProducts", json!({"id": "123"})),
            (
                "getTrendingProducts",
                json!({"category": "Beauty", "limit": 3}),
            ),
            ("getBasket", json!({"userId": "1"})),
            ("getUserOrders", json!({"userId": "1"})),
            ("getOrderStats", json!({})),
        ] {
            let r = call(&s, name, a).await;
            assert_eq!(r.is_error, Some(false), "{name}: {r:?}");
            assert_conforms(name, r.structured_content.as_ref().expect("structured"));
        }
    }

    #[tokio::test]
    async fn filter_validation() {
        let s = server();
        assert_eq!(
            error_text(
                &call(
                    &s,
                    "filterProducts",
                    json!({"minPrice": 50, "maxPrice": 10})
                )
                .await
            ),
            "minPrice (50) must not be greater than maxPrice (10)"
        );
        assert!(
            error_text(&call(&s, "filterProducts", json!({"category": "Garden"})).await)
                .starts_with("argument \"category\" must be one of \"Electronics\"")
        );
        assert_eq!(
            error_text(&call(&s, "filterProducts", json!({"limit": 101})).await),
            "argument \"limit\" must be between 1 and 100, got 101"
        );
        let r = call(
            &s,
            "filterProducts",
            json!({"category": "Books", "limit": 5, "offset": 5}),
        )
        .await;
        let v = r.structured_content.expect("structured");
        assert_eq!(v["total"], 60);
        assert_eq!(v["products"].as_array().map(Vec::len), Some(5));
        assert!(
            v["products"]
                .as_array()
                .expect("products")
                .iter()
                .all(|p| p["category"] == "Books")
        );
    }

    #[tokio::test]
    async fn basket_order_flow() {
        let s = server();
        let id = CATALOG
            .products
            .iter()
            .find(|p| p.initial_stock >= 3)
            .map(|p| p.id.clone())
            .expect("stocked product");
        let r = call(
            &s,
            "addToBasket",
            json!({"userId": "u1", "productId": id, "quantity": 2}),
        )
        .await;
        assert_conforms(
            "addToBasket",
            r.structured_content.as_ref().expect("basket"),
        );
        let r = call(&s, "placeOrder", json!({"userId": "u1"})).await;
        let order = r.structured_content.expect("order");
        assert_conforms("placeOrder", &order);
        assert_eq!(order["status"], "confirmed");
        assert!(
            error_text(&call(&s, "placeOrder", json!({"userId": "u1"})).await).contains("is empty")
        );
        let r = call(&s, "getUserOrders", json!({"userId": "u1"})).await;
        assert_eq!(
            r.structured_content.expect("orders")["orders"][0]["orderId"],
            order["orderId"]
        );
        assert_eq!(
            error_text(
                &call(
                    &s,
                    "addToBasket",
                    json!({"userId": "u1", "productId": id, "quantity": 0})
                )
                .await
            ),
            "argument \"quantity\" must be between 1 and 100, got 0"
        );
    }

    #[tokio::test]
    async fn recommendations_without_gateway_say_so() {
        let s = server();
        let text =
            error_text(&call(&s, "getPersonalizedRecommendations", json!({"userId": "1"})).await);
        assert!(text.contains("no gateway is configured"), "{text}");
    }
}
