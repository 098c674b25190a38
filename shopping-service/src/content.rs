//! The shop's resources, prompts and completions, beside its tools: the catalog, the
//! categories and the order statistics as resources; a product, a user's basket and a
//! user's orders as resource templates; the prompts `recommend_for_user` and
//! `summarise_order_history`; and completions of their arguments (product ids,
//! categories, the user ids of the order history). Which resources a change touches
//! ([`basket_changed`], [`order_placed`]) is decided here too, for the subscriptions.
//!
//! URIs: `ecommerce://products/catalog`, `ecommerce://products/categories`,
//! `ecommerce://orders/stats`, `ecommerce://products/{id}`,
//! `ecommerce://users/{userId}/basket`, `ecommerce://users/{userId}/orders`.
//!
//! Invariant: a resource reads the same data as the tool that shows it (`getProductById`,
//! `listCategories`, `getBasket`, `getUserOrders`, `getOrderStats`), from the one
//! [`Shop`]; nothing here changes the shop.

use std::sync::LazyLock;

use rmcp::{
    ErrorData,
    model::{
        CompleteRequestParams, CompleteResult, ContentBlock, GetPromptResult, Prompt,
        PromptArgument, PromptMessage, ReadResourceResult, Reference, Resource, ResourceTemplate,
        Role,
    },
};
use serde_json::{Value, json};
use service_kit::mcp::{completion, json_contents, json_resource, resource_not_found};

use crate::{
    args::MAX_ID_LEN,
    data::{CATALOG, Category},
    search,
    tools::Shop,
};

pub const CATALOG_URI: &str = "ecommerce://products/catalog";
pub const CATEGORIES_URI: &str = "ecommerce://products/categories";
pub const ORDER_STATS_URI: &str = "ecommerce://orders/stats";
pub const PRODUCT_TEMPLATE: &str = "ecommerce://products/{id}";
pub const BASKET_TEMPLATE: &str = "ecommerce://users/{userId}/basket";
pub const ORDERS_TEMPLATE: &str = "ecommerce://users/{userId}/orders";

pub const RECOMMEND_PROMPT: &str = "recommend_for_user";
pub const ORDER_HISTORY_PROMPT: &str = "summarise_order_history";

/// One of the shop's resources, parsed from its URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uri<'a> {
    Catalog,
    Categories,
    OrderStats,
    Product(&'a str),
    Basket(&'a str),
    Orders(&'a str),
}

impl<'a> Uri<'a> {
    /// The resource `uri` names, or why it names none.
    pub fn parse(uri: &'a str) -> Result<Uri<'a>, &'static str> {
        match uri {
            CATALOG_URI => return Ok(Uri::Catalog),
            CATEGORIES_URI => return Ok(Uri::Categories),
            ORDER_STATS_URI => return Ok(Uri::OrderStats),
            _ => {}
        }
        if let Some(id) = uri.strip_prefix("ecommerce://products/") {
            return Ok(Uri::Product(segment(id).ok_or("not a product id")?));
        }
        if let Some(rest) = uri.strip_prefix("ecommerce://users/") {
            let (user, what) = rest.split_once('/').ok_or("no such resource of a user")?;
            let user = segment(user).ok_or("not a user id")?;
            return match what {
                "basket" => Ok(Uri::Basket(user)),
                "orders" => Ok(Uri::Orders(user)),
                _ => Err("a user has a basket and orders only"),
            };
        }
        Err("not a resource of this shop")
    }

    /// The URI of a user's basket.
    pub fn basket(user_id: &str) -> String {
        format!("ecommerce://users/{user_id}/basket")
    }

    /// The URI of a user's orders.
    pub fn orders(user_id: &str) -> String {
        format!("ecommerce://users/{user_id}/orders")
    }

    /// The URI of a product.
    pub fn product(id: &str) -> String {
        format!("ecommerce://products/{id}")
    }
}

/// One path segment usable as an id: non-empty, at most [`MAX_ID_LEN`] characters, no
/// `/`, `?`, `#`, blanks or control characters.
fn segment(s: &str) -> Option<&str> {
    let usable = !s.is_empty()
        && s.chars().count() <= MAX_ID_LEN
        && !s
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c.is_control());
    usable.then_some(s)
}

/// The fixed resources, in the order `resources/list` shows them.
pub fn resources() -> Vec<Resource> {
    vec![
        Resource::new(CATALOG_URI, "catalog")
            .with_title("Product catalog")
            .with_description(
                "Every product of the shop (480, in id order) with its current stock, as a \
                 JSON array of the objects getProductById returns.",
            )
            .with_mime_type(service_kit::mcp::JSON_MIME),
        Resource::new(CATEGORIES_URI, "categories")
            .with_title("Product categories")
            .with_description(
                "The 8 categories with product and in-stock counts, price ranges and average \
                 ratings (what listCategories returns).",
            )
            .with_mime_type(service_kit::mcp::JSON_MIME),
        Resource::new(ORDER_STATS_URI, "order-stats")
            .with_title("Order statistics")
            .with_description(
                "Shop-wide order analytics: order count, items sold, revenue, average order \
                 value, top products and revenue by category (what getOrderStats returns).",
            )
            .with_mime_type(service_kit::mcp::JSON_MIME),
    ]
}

/// The resource templates, in the order `resources/templates/list` shows them.
pub fn resource_templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(PRODUCT_TEMPLATE, "product")
            .with_title("Product")
            .with_description("One product by id (\"1\" to \"480\"), with its current stock.")
            .with_mime_type(service_kit::mcp::JSON_MIME),
        ResourceTemplate::new(BASKET_TEMPLATE, "basket")
            .with_title("User basket")
            .with_description(
                "A user's basket (what getBasket returns). Subscribe to it to be told \
                 (notifications/resources/updated) when addToBasket or placeOrder changes it.",
            )
            .with_mime_type(service_kit::mcp::JSON_MIME),
        ResourceTemplate::new(ORDERS_TEMPLATE, "orders")
            .with_title("User orders")
            .with_description(
                "A user's orders, historical and placed since the service started, newest \
                 first (what getUserOrders returns, without a limit).",
            )
            .with_mime_type(service_kit::mcp::JSON_MIME),
    ]
}

/// `resources/read`: the resource's current JSON, or resource-not-found (-32002).
pub fn read(shop: &Shop, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    Ok(json_resource(uri, &value(shop, uri)?))
}

/// Whether `uri` names a resource of the shop (which may then be subscribed to).
pub fn check(uri: &str) -> Result<(), ErrorData> {
    match Uri::parse(uri) {
        Ok(Uri::Product(id)) if CATALOG.get(id).is_none() => Err(resource_not_found(
            uri,
            &format!("no product with id \"{id}\""),
        )),
        Ok(_) => Ok(()),
        Err(why) => Err(resource_not_found(uri, why)),
    }
}

fn value(shop: &Shop, uri: &str) -> Result<Value, ErrorData> {
    check(uri)?;
    let store = shop.store();
    let catalog = store.catalog();
    Ok(match Uri::parse(uri) {
        Ok(Uri::Catalog) => {
            let stock = store.stock_snapshot();
            Value::Array(
                catalog
                    .products
                    .iter()
                    .zip(stock)
                    .map(|(p, s)| p.to_json(s))
                    .collect(),
            )
        }
        Ok(Uri::Categories) => json!({
            "totalProducts": catalog.products.len(),
            "categories": search::category_summaries(catalog, &store.stock_snapshot()),
        }),
        Ok(Uri::OrderStats) => store.stats().to_json(catalog, 10),
        Ok(Uri::Product(id)) => match catalog.get(id) {
            Some((idx, p)) => p.to_json(store.stock(idx)),
            None => return Err(resource_not_found(uri, "no such product")),
        },
        Ok(Uri::Basket(user)) => store.basket(user).to_json(),
        Ok(Uri::Orders(user)) => orders_json(shop, user),
        Err(why) => return Err(resource_not_found(uri, why)),
    })
}

fn orders_json(shop: &Shop, user: &str) -> Value {
    let (total, orders) = shop.store().orders_of(user, usize::MAX);
    json!({
        "userId": user,
        "total": total,
        "orders": orders.iter().map(|o| o.to_json()).collect::<Vec<_>>(),
    })
}

/// The resources a change to `user`'s basket touches.
pub fn basket_changed(user: &str) -> Vec<String> {
    vec![Uri::basket(user)]
}

/// The resources an order of `user` for `products` touches: the basket it emptied, the
/// user's orders, each product's stock, and the catalog, categories and statistics.
pub fn order_placed<'a>(user: &str, products: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut uris = vec![Uri::basket(user), Uri::orders(user)];
    uris.extend(products.into_iter().map(Uri::product));
    uris.extend([CATALOG_URI, CATEGORIES_URI, ORDER_STATS_URI].map(String::from));
    uris
}

// ---------------------------------------------------------------------------------------
// Prompts
// ---------------------------------------------------------------------------------------

/// The prompts, in the order `prompts/list` shows them.
pub fn prompts() -> Vec<Prompt> {
    let user = |what: &str| {
        PromptArgument::new("userId")
            .with_title("User id")
            .with_description(format!("The user {what}, e.g. \"456\"."))
            .with_required(true)
    };
    vec![
        Prompt::new(
            RECOMMEND_PROMPT,
            Some(
                "Recommend products for a user: asks the assistant to call \
                 getPersonalizedRecommendations (preferences read from user-service through \
                 the gateway), with the user's basket attached so it suggests something new.",
            ),
            Some(vec![
                user("to recommend products for"),
                PromptArgument::new("category")
                    .with_title("Category")
                    .with_description(format!(
                        "Only recommend from this category (one of {}).",
                        Category::NAMES.join(", ")
                    ))
                    .with_required(false),
            ]),
        )
        .with_title("Recommend for user"),
        Prompt::new(
            ORDER_HISTORY_PROMPT,
            Some(
                "Summarise a user's order history: the orders are attached, and the assistant \
                 is asked for spend, favourite categories and products, and habits.",
            ),
            Some(vec![user("whose orders to summarise")]),
        )
        .with_title("Summarise order history"),
    ]
}

/// `prompts/get`: an unknown prompt or a missing or bad argument is invalid params.
pub fn prompt(
    shop: &Shop,
    name: &str,
    arguments: Option<&serde_json::Map<String, Value>>,
) -> Result<GetPromptResult, ErrorData> {
    let argument = |key: &str| -> Result<Option<&str>, ErrorData> {
        match arguments.and_then(|a| a.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim())),
            Some(other) => Err(ErrorData::invalid_params(
                service_kit::tool_args::wrong_type(key, "a string", other),
                None,
            )),
        }
    };
    let user_id = |_: ()| -> Result<&str, ErrorData> {
        let id = argument("userId")?.ok_or_else(|| {
            ErrorData::invalid_params(service_kit::tool_args::missing("userId"), None)
        })?;
        segment(id).ok_or_else(|| {
            ErrorData::invalid_params(
                format!("argument \"userId\" must be an id of at most {MAX_ID_LEN} characters without '/', '?', '#' or blanks"),
                None,
            )
        })
    };
    match name {
        RECOMMEND_PROMPT => {
            let user = user_id(())?;
            let category = match argument("category")? {
                None => None,
                Some(c) => Some(Category::parse(c).ok_or_else(|| {
                    ErrorData::invalid_params(
                        service_kit::tool_args::one_of("category", &Category::NAMES, json!(c)),
                        None,
                    )
                })?),
            };
            let within = category.map_or(String::new(), |c| {
                format!(" in the category {}", c.as_str())
            });
            let basket = shop.store().basket(user).to_json();
            let text = format!(
                "Recommend products from the demo shop for user {user}{within}. Call the tool \
                 getPersonalizedRecommendations with userId \"{user}\" (it reads the user's \
                 preferences from user-service through the gateway){}. Leave out anything already \
                 in their basket, attached below. For each pick give its name, price in USD and \
                 one sentence on why it suits the user.",
                if category.is_some() {
                    ", then keep only the products of that category (use filterProducts or \
                     getTrendingProducts with the category if too few remain)"
                } else {
                    ""
                }
            );
            Ok(GetPromptResult::new(vec![
                PromptMessage::new_text(Role::User, text),
                PromptMessage::new(
                    Role::User,
                    ContentBlock::resource(json_contents(&Uri::basket(user), &basket)),
                ),
            ])
            .with_description(format!("Product recommendations for user {user}{within}")))
        }
        ORDER_HISTORY_PROMPT => {
            let user = user_id(())?;
            let orders = orders_json(shop, user);
            let count = orders["total"].as_u64().unwrap_or(0);
            let text = format!(
                "Summarise the order history of user {user} of the demo shop ({count} orders, \
                 attached below as JSON, newest first): how many orders and items, total and \
                 average spend in USD, the categories and products they buy most, and anything \
                 notable about when or how they order. Keep it to one short paragraph and a \
                 bullet list.{}",
                if count == 0 {
                    " The user has no orders yet: say so and suggest starting from the trending \
                     products (getTrendingProducts)."
                } else {
                    ""
                }
            );
            Ok(GetPromptResult::new(vec![
                PromptMessage::new_text(Role::User, text),
                PromptMessage::new(
                    Role::User,
                    ContentBlock::resource(json_contents(&Uri::orders(user), &orders)),
                ),
            ])
            .with_description(format!("Order history summary of user {user}")))
        }
        _ => Err(ErrorData::invalid_params(
            format!("unknown prompt \"{name}\""),
            Some(json!({"prompt": name})),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Completions
// ---------------------------------------------------------------------------------------

/// The user ids of the order history, in numeric order: what the shop knows of users.
static USER_IDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut ids: Vec<&'static str> = CATALOG.history.iter().map(|o| o.user_id.as_str()).collect();
    ids.sort_by_key(|id| (id.len(), *id));
    ids.dedup();
    ids
});

fn user_ids() -> impl Iterator<Item = &'static str> {
    USER_IDS.iter().copied()
}

fn product_ids() -> impl Iterator<Item = &'static str> {
    CATALOG.products.iter().map(|p| p.id.as_str())
}

/// `completion/complete` for the prompts' arguments and the templates' variables. An
/// unknown prompt or template is invalid params; an argument without completions gets
/// none.
pub fn complete(request: &CompleteRequestParams) -> Result<CompleteResult, ErrorData> {
    let argument = request.argument.name.as_str();
    let value = request.argument.value.as_str();
    let none = || completion(std::iter::empty(), value);
    match &request.r#ref {
        Reference::Prompt(p) => match (p.name.as_str(), argument) {
            (RECOMMEND_PROMPT | ORDER_HISTORY_PROMPT, "userId") => {
                Ok(completion(user_ids(), value))
            }
            (RECOMMEND_PROMPT, "category") => Ok(completion(Category::NAMES, value)),
            (RECOMMEND_PROMPT | ORDER_HISTORY_PROMPT, _) => Ok(none()),
            (name, _) => Err(ErrorData::invalid_params(
                format!("unknown prompt \"{name}\""),
                None,
            )),
        },
        Reference::Resource(r) => match (r.uri.as_str(), argument) {
            (PRODUCT_TEMPLATE, "id") => Ok(completion(product_ids(), value)),
            (BASKET_TEMPLATE | ORDERS_TEMPLATE, "userId") => Ok(completion(user_ids(), value)),
            (PRODUCT_TEMPLATE | BASKET_TEMPLATE | ORDERS_TEMPLATE, _) => Ok(none()),
            (uri, _) => Err(ErrorData::invalid_params(
                format!("no resource template \"{uri}\""),
                None,
            )),
        },
        _ => Ok(none()),
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::{ArgumentInfo, ErrorCode};

    use super::*;

    #[test]
    fn uris_parse_and_unknown_ones_are_not_found() {
        assert_eq!(Uri::parse(CATALOG_URI), Ok(Uri::Catalog));
        assert_eq!(
            Uri::parse("ecommerce://products/123"),
            Ok(Uri::Product("123"))
        );
        assert_eq!(
            Uri::parse("ecommerce://users/u1/basket"),
            Ok(Uri::Basket("u1"))
        );
        assert_eq!(
            Uri::parse("ecommerce://users/7/orders"),
            Ok(Uri::Orders("7"))
        );
        for bad in [
            "ecommerce://products/",
            "ecommerce://products/1/2",
            "ecommerce://users//basket",
            "ecommerce://users/1/wishlist",
            "ecommerce://users/1",
            "users://1/profile",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
            assert_eq!(
                check(bad).expect_err(bad).code,
                ErrorCode::RESOURCE_NOT_FOUND
            );
        }
        let e = check("ecommerce://products/99999").expect_err("unknown product");
        assert_eq!(e.code, ErrorCode::RESOURCE_NOT_FOUND);
        assert!(e.message.contains("99999"), "{}", e.message);
    }

    #[test]
    fn resources_read_what_the_tools_show() {
        let shop = Shop::new(None);
        let text = |uri: &str| -> Value {
            let result = read(&shop, uri).expect(uri);
            let rmcp::model::ResourceContents::TextResourceContents {
                text, mime_type, ..
            } = &result.contents[0]
            else {
                panic!("text contents")
            };
            assert_eq!(mime_type.as_deref(), Some("application/json"));
            serde_json::from_str(text).expect("JSON")
        };
        let catalog = text(CATALOG_URI);
        assert_eq!(catalog.as_array().map(Vec::len), Some(480));
        assert_eq!(catalog[122]["id"], "123");
        assert_eq!(text("ecommerce://products/123"), catalog[122]);
        assert_eq!(
            text(CATEGORIES_URI)["categories"].as_array().map(Vec::len),
            Some(8)
        );
        assert_eq!(text("ecommerce://users/nobody/basket")["itemCount"], 0);
        let orders = text(&Uri::orders(USER_IDS[0]));
        assert!(orders["total"].as_u64().expect("total") >= 1, "{orders}");
        assert!(text(ORDER_STATS_URI)["orderCount"].as_u64().expect("count") >= 600);
    }

    #[test]
    fn prompts_check_their_arguments() {
        let shop = Shop::new(None);
        let args = |v: Value| v.as_object().cloned().expect("object");
        let r = prompt(
            &shop,
            RECOMMEND_PROMPT,
            Some(&args(json!({"userId": "456", "category": "books"}))),
        )
        .expect("prompt");
        let text = r.messages[0].content.as_text().expect("text").text.clone();
        assert!(text.contains("456") && text.contains("Books"), "{text}");
        assert!(r.messages[1].content.as_resource().is_some());
        for (name, a, says) in [
            (
                RECOMMEND_PROMPT,
                json!({}),
                "missing required argument \"userId\"",
            ),
            (
                RECOMMEND_PROMPT,
                json!({"userId": "1", "category": "Garden"}),
                "must be one of",
            ),
            (
                ORDER_HISTORY_PROMPT,
                json!({"userId": 5}),
                "must be a string",
            ),
            ("nope", json!({}), "unknown prompt"),
        ] {
            let e = prompt(&shop, name, Some(&args(a))).expect_err(name);
            assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
            assert!(e.message.contains(says), "{}", e.message);
        }
    }

    #[test]
    fn completions_come_from_the_data() {
        let ask = |r: Reference, name: &str, value: &str| {
            complete(&CompleteRequestParams::new(
                r,
                ArgumentInfo::new(name, value),
            ))
        };
        let c = ask(Reference::for_prompt(RECOMMEND_PROMPT), "category", "b")
            .expect("completion")
            .completion;
        assert_eq!(c.values, ["Books", "Beauty"]);
        let c = ask(Reference::for_resource(PRODUCT_TEMPLATE), "id", "47")
            .expect("completion")
            .completion;
        assert_eq!(
            c.values,
            [
                "47", "470", "471", "472", "473", "474", "475", "476", "477", "478", "479"
            ]
        );
        let c = ask(Reference::for_prompt(ORDER_HISTORY_PROMPT), "userId", "")
            .expect("completion")
            .completion;
        assert_eq!(c.values.len(), 100);
        assert_eq!(c.total, Some(USER_IDS.len() as u32));
        assert!(c.values.iter().all(|id| USER_IDS.contains(&id.as_str())));
        assert!(ask(Reference::for_prompt("nope"), "userId", "").is_err());
        assert!(ask(Reference::for_resource("ecommerce://x/{y}"), "y", "").is_err());
    }
}
