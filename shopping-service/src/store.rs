//! The mutable state of the shop: current stock, one basket per user id, and the
//! orders placed at run time. Everything sits behind ONE `std::sync::Mutex`, so placing
//! an order checks and decrements the stock of every line atomically (all or nothing)
//! and empties the basket in the same critical section. The lock is never held across
//! an `.await` (no method here is async) and critical sections only touch memory.
//!
//! Nothing here is persisted: a restart brings back the catalog's initial stock, empty
//! baskets and only the historical orders.

use std::{
    collections::HashMap,
    fmt,
    sync::{Mutex, MutexGuard, PoisonError},
};

use serde_json::{Value, json};

use crate::data::{Catalog, Category, Order, OrderLine, dollars, order_id};

/// Most distinct baskets kept at once (a bound on memory, not a business rule).
pub const MAX_BASKETS: usize = 10_000;
/// Most distinct products in one basket.
pub const MAX_BASKET_LINES: usize = 50;

/// Why a basket or order operation was refused. Display gives the caller's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    UnknownProduct(String),
    OutOfStock {
        product_id: String,
        name: String,
    },
    ExceedsStock {
        product_id: String,
        name: String,
        requested: u32,
        in_basket: u32,
        stock: u32,
    },
    EmptyBasket(String),
    InsufficientStock(Vec<Shortage>),
    TooManyBaskets,
    BasketFull,
}

/// One basket line that cannot be ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub product_id: String,
    pub name: String,
    pub requested: u32,
    pub stock: u32,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::UnknownProduct(id) => write!(f, "no product with id \"{id}\""),
            StoreError::OutOfStock { product_id, name } => {
                write!(f, "product \"{product_id}\" ({name}) is out of stock")
            }
            StoreError::ExceedsStock {
                product_id,
                name,
                requested,
                in_basket,
                stock,
            } => {
                write!(
                    f,
                    "cannot add {requested} of product \"{product_id}\" ({name}): only {stock} in stock"
                )?;
                if *in_basket > 0 {
                    write!(f, " and {in_basket} already in the basket")?;
                }
                Ok(())
            }
            StoreError::EmptyBasket(user) => {
                write!(
                    f,
                    "the basket of user \"{user}\" is empty; add products with addToBasket first"
                )
            }
            StoreError::InsufficientStock(shortages) => {
                f.write_str("cannot place the order, not enough stock for: ")?;
                let parts: Vec<String> = shortages
                    .iter()
                    .map(|s| {
                        format!(
                            "product \"{}\" ({}): {} requested, {} in stock",
                            s.product_id, s.name, s.requested, s.stock
                        )
                    })
                    .collect();
                write!(f, "{}; nothing was ordered", parts.join("; "))
            }
            StoreError::TooManyBaskets => {
                write!(f, "too many open baskets ({MAX_BASKETS}); try again later")
            }
            StoreError::BasketFull => {
                write!(
                    f,
                    "a basket holds at most {MAX_BASKET_LINES} different products"
                )
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// A basket as shown to the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Basket {
    pub user_id: String,
    pub lines: Vec<OrderLine>,
}

impl Basket {
    pub fn total_cents(&self) -> u64 {
        self.lines.iter().map(OrderLine::line_cents).sum()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "userId": self.user_id,
            "items": self.lines.iter().map(OrderLine::to_json).collect::<Vec<_>>(),
            "itemCount": self.lines.iter().map(|l| l.quantity).sum::<u32>(),
            "total": dollars(self.total_cents()),
        })
    }
}

/// Order statistics over the history and the run-time orders.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderStats {
    pub order_count: usize,
    pub runtime_order_count: usize,
    pub units: Vec<u32>,
    pub revenue: Vec<u64>,
}

impl OrderStats {
    pub fn to_json(&self, catalog: &Catalog, top: usize) -> Value {
        let total_revenue: u64 = self.revenue.iter().sum();
        let items_sold: u64 = self.units.iter().map(|&u| u64::from(u)).sum();
        let average = if self.order_count == 0 {
            0.0
        } else {
            (dollars(total_revenue) / self.order_count as f64 * 100.0).round() / 100.0
        };
        let mut ranked: Vec<usize> = (0..self.units.len())
            .filter(|&i| self.units[i] > 0)
            .collect();
        ranked.sort_by(|&a, &b| {
            self.units[b]
                .cmp(&self.units[a])
                .then(self.revenue[b].cmp(&self.revenue[a]))
                .then(a.cmp(&b))
        });
        let top_products: Vec<Value> = ranked
            .into_iter()
            .take(top)
            .map(|i| {
                let p = &catalog.products[i];
                json!({
                    "productId": p.id,
                    "name": p.name,
                    "category": p.category.as_str(),
                    "unitsSold": self.units[i],
                    "revenue": dollars(self.revenue[i]),
                })
            })
            .collect();
        let by_category: Vec<Value> = Category::ALL
            .iter()
            .map(|&c| {
                let (units, revenue) = catalog
                    .products
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.category == c)
                    .fold((0u64, 0u64), |(u, r), (i, _)| {
                        (u + u64::from(self.units[i]), r + self.revenue[i])
                    });
                json!({"category": c.as_str(), "unitsSold": units, "revenue": dollars(revenue)})
            })
            .collect();
        json!({
            "orderCount": self.order_count,
            "historicalOrderCount": self.order_count - self.runtime_order_count,
            "runtimeOrderCount": self.runtime_order_count,
            "itemsSold": items_sold,
            "revenue": dollars(total_revenue),
            "averageOrderValue": average,
            "topProducts": top_products,
            "revenueByCategory": by_category,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BasketLine {
    product_idx: usize,
    quantity: u32,
}

#[derive(Debug)]
struct Inner {
    stock: Vec<u32>,
    baskets: HashMap<String, Vec<BasketLine>>,
    orders: Vec<Order>,
    runtime_units: Vec<u32>,
    runtime_revenue: Vec<u64>,
}

/// Stock, baskets and run-time orders over a catalog.
#[derive(Debug)]
pub struct Store {
    catalog: &'static Catalog,
    inner: Mutex<Inner>,
}

impl Store {
    /// A store with the catalog's initial stock, no baskets and no run-time orders.
    pub fn new(catalog: &'static Catalog) -> Store {
        let n = catalog.products.len();
        Store {
            catalog,
            inner: Mutex::new(Inner {
                stock: catalog.products.iter().map(|p| p.initial_stock).collect(),
                baskets: HashMap::new(),
                orders: Vec::new(),
                runtime_units: vec![0; n],
                runtime_revenue: vec![0; n],
            }),
        }
    }

    pub fn catalog(&self) -> &'static Catalog {
        self.catalog
    }

    /// The state stays consistent even if a holder panicked: every critical section
    /// validates before it mutates.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Current stock of every product (indexed like the catalog).
    pub fn stock_snapshot(&self) -> Vec<u32> {
        self.lock().stock.clone()
    }

    /// Current stock of one product.
    pub fn stock(&self, product_idx: usize) -> u32 {
        self.lock().stock.get(product_idx).copied().unwrap_or(0)
    }

    #[cfg(test)]
    fn set_stock(&self, product_idx: usize, stock: u32) {
        self.lock().stock[product_idx] = stock;
    }

    /// Adds `quantity` of a product to the user's basket; the basket may not hold more
    /// of a product than is in stock.
    pub fn add_to_basket(
        &self,
        user_id: &str,
        product_id: &str,
        quantity: u32,
    ) -> Result<Basket, StoreError> {
        let (idx, product) = self
            .catalog
            .get(product_id)
            .ok_or_else(|| StoreError::UnknownProduct(product_id.to_string()))?;
        let mut inner = self.lock();
        let stock = inner.stock[idx];
        if stock == 0 {
            return Err(StoreError::OutOfStock {
                product_id: product.id.clone(),
                name: product.name.clone(),
            });
        }
        if !inner.baskets.contains_key(user_id) && inner.baskets.len() >= MAX_BASKETS {
            return Err(StoreError::TooManyBaskets);
        }
        let lines = inner.baskets.entry(user_id.to_string()).or_default();
        let in_basket = lines
            .iter()
            .find(|l| l.product_idx == idx)
            .map_or(0, |l| l.quantity);
        if u64::from(in_basket) + u64::from(quantity) > u64::from(stock) {
            let error = StoreError::ExceedsStock {
                product_id: product.id.clone(),
                name: product.name.clone(),
                requested: quantity,
                in_basket,
                stock,
            };
            if lines.is_empty() {
                inner.baskets.remove(user_id);
            }
            return Err(error);
        }
        if let Some(line) = lines.iter_mut().find(|l| l.product_idx == idx) {
            line.quantity += quantity;
        } else if lines.len() >= MAX_BASKET_LINES {
            return Err(StoreError::BasketFull);
        } else {
            lines.push(BasketLine {
                product_idx: idx,
                quantity,
            });
        }
        let lines = lines.clone();
        drop(inner);
        Ok(self.basket_view(user_id, &lines))
    }

    /// The user's basket (empty if they have none).
    pub fn basket(&self, user_id: &str) -> Basket {
        let lines = self
            .lock()
            .baskets
            .get(user_id)
            .cloned()
            .unwrap_or_default();
        self.basket_view(user_id, &lines)
    }

    fn basket_view(&self, user_id: &str, lines: &[BasketLine]) -> Basket {
        Basket {
            user_id: user_id.to_string(),
            lines: lines.iter().map(|l| self.order_line(l)).collect(),
        }
    }

    fn order_line(&self, line: &BasketLine) -> OrderLine {
        let p = &self.catalog.products[line.product_idx];
        OrderLine {
            product_idx: line.product_idx,
            product_id: p.id.clone(),
            name: p.name.clone(),
            unit_cents: p.price_cents,
            quantity: line.quantity,
        }
    }

    /// Turns the user's basket into an order: every line's stock is checked and
    /// decremented, and the basket emptied, in one critical section. On any shortage
    /// nothing changes.
    pub fn place_order(&self, user_id: &str, now: i64) -> Result<Order, StoreError> {
        let mut inner = self.lock();
        let lines = match inner.baskets.get(user_id) {
            Some(lines) if !lines.is_empty() => lines.clone(),
            _ => return Err(StoreError::EmptyBasket(user_id.to_string())),
        };
        let shortages: Vec<Shortage> = lines
            .iter()
            .filter(|l| inner.stock[l.product_idx] < l.quantity)
            .map(|l| {
                let p = &self.catalog.products[l.product_idx];
                Shortage {
                    product_id: p.id.clone(),
                    name: p.name.clone(),
                    requested: l.quantity,
                    stock: inner.stock[l.product_idx],
                }
            })
            .collect();
        if !shortages.is_empty() {
            return Err(StoreError::InsufficientStock(shortages));
        }
        let order_lines: Vec<OrderLine> = lines.iter().map(|l| self.order_line(l)).collect();
        for line in &order_lines {
            inner.stock[line.product_idx] -= line.quantity;
            inner.runtime_units[line.product_idx] += line.quantity;
            inner.runtime_revenue[line.product_idx] += line.line_cents();
        }
        inner.baskets.remove(user_id);
        let number = (self.catalog.history.len() + inner.orders.len()) as u64;
        let order = Order {
            id: order_id(number),
            user_id: user_id.to_string(),
            total_cents: order_lines.iter().map(OrderLine::line_cents).sum(),
            lines: order_lines,
            status: "confirmed",
            created_at: now,
        };
        inner.orders.push(order.clone());
        Ok(order)
    }

    /// The user's orders (historical and run-time), newest first: the total count and
    /// the first `limit`.
    pub fn orders_of(&self, user_id: &str, limit: usize) -> (usize, Vec<Order>) {
        let mut orders: Vec<Order> = self.catalog.history_of(user_id).cloned().collect();
        orders.extend(
            self.lock()
                .orders
                .iter()
                .filter(|o| o.user_id == user_id)
                .cloned(),
        );
        // Order ids grow with time, so they break ties between equal timestamps.
        orders.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| order_number(&b.id).cmp(&order_number(&a.id)))
        });
        let total = orders.len();
        orders.truncate(limit);
        (total, orders)
    }

    /// Units sold per product, history plus run time.
    pub fn units_sold(&self) -> Vec<u32> {
        let inner = self.lock();
        self.catalog
            .history_units
            .iter()
            .zip(&inner.runtime_units)
            .map(|(h, r)| h + r)
            .collect()
    }

    /// Statistics over every order, history plus run time.
    pub fn stats(&self) -> OrderStats {
        let inner = self.lock();
        let units = self
            .catalog
            .history_units
            .iter()
            .zip(&inner.runtime_units)
            .map(|(h, r)| h + r)
            .collect();
        let revenue = self
            .catalog
            .history_revenue
            .iter()
            .zip(&inner.runtime_revenue)
            .map(|(h, r)| h + r)
            .collect();
        OrderStats {
            order_count: self.catalog.history.len() + inner.orders.len(),
            runtime_order_count: inner.orders.len(),
            units,
            revenue,
        }
    }
}

fn order_number(id: &str) -> u64 {
    id.strip_prefix("ORD-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;
    use crate::data::CATALOG;

    fn in_stock_product(min_stock: u32) -> (usize, &'static str) {
        let (idx, p) = CATALOG
            .products
            .iter()
            .enumerate()
            .find(|(_, p)| p.initial_stock >= min_stock)
            .expect("a product with stock");
        (idx, p.id.as_str())
    }

    #[test]
    fn basket_accumulates_and_totals() {
        let store = Store::new(&CATALOG);
        let (_, a) = in_stock_product(10);
        let basket = store.add_to_basket("7", a, 2).expect("add");
        assert_eq!(basket.lines.len(), 1);
        let basket = store.add_to_basket("7", a, 3).expect("add again");
        assert_eq!(basket.lines[0].quantity, 5);
        let unit = CATALOG.get(a).expect("product").1.price_cents;
        assert_eq!(basket.total_cents(), 5 * unit);
        assert_eq!(store.basket("7"), basket);
        assert!(store.basket("8").lines.is_empty());
        let json = basket.to_json();
        assert_eq!(json["userId"], "7");
        assert_eq!(json["items"][0]["productId"], a);
        assert_eq!(json["itemCount"], 5);
    }

    #[test]
    fn basket_refuses_unknown_out_of_stock_and_too_many() {
        let store = Store::new(&CATALOG);
        assert_eq!(
            store
                .add_to_basket("1", "99999", 1)
                .expect_err("unknown")
                .to_string(),
            "no product with id \"99999\""
        );
        let (idx, id) = in_stock_product(1);
        store.set_stock(idx, 0);
        assert!(matches!(
            store.add_to_basket("1", id, 1),
            Err(StoreError::OutOfStock { .. })
        ));
        store.set_stock(idx, 3);
        store.add_to_basket("1", id, 2).expect("two fit");
        let e = store.add_to_basket("1", id, 2).expect_err("four do not");
        assert_eq!(
            e,
            StoreError::ExceedsStock {
                product_id: id.to_string(),
                name: CATALOG.products[idx].name.clone(),
                requested: 2,
                in_basket: 2,
                stock: 3,
            }
        );
        assert!(
            e.to_string()
                .contains("only 3 in stock and 2 already in the basket")
        );
        // A refused first add leaves no empty basket behind.
        assert!(store.add_to_basket("2", id, 10).is_err());
        assert!(!store.lock().baskets.contains_key("2"));
    }

    #[test]
    fn placing_an_order_decrements_stock_and_empties_basket() {
        let store = Store::new(&CATALOG);
        let (idx, id) = in_stock_product(5);
        let before = store.stock(idx);
        store.add_to_basket("42", id, 2).expect("add");
        let order = store.place_order("42", 1_800_000_000).expect("order");
        assert_eq!(order.user_id, "42");
        assert_eq!(order.status, "confirmed");
        assert_eq!(order.id, order_id(CATALOG.history.len() as u64));
        assert_eq!(order.lines[0].quantity, 2);
        assert_eq!(store.stock(idx), before - 2);
        assert!(store.basket("42").lines.is_empty());
        assert_eq!(
            store.place_order("42", 0).expect_err("empty"),
            StoreError::EmptyBasket("42".into())
        );
        let (total, orders) = store.orders_of("42", 100);
        assert_eq!(orders[0], order, "newest first");
        assert_eq!(total, CATALOG.history_of("42").count() + 1);
        let stats = store.stats();
        assert_eq!(stats.runtime_order_count, 1);
        assert_eq!(stats.order_count, CATALOG.history.len() + 1);
        assert_eq!(stats.units[idx], CATALOG.history_units[idx] + 2);
    }

    #[test]
    fn an_order_with_a_shortage_changes_nothing() {
        let store = Store::new(&CATALOG);
        let (a_idx, a) = in_stock_product(5);
        let (b_idx, b) = CATALOG
            .products
            .iter()
            .enumerate()
            .find(|(i, p)| *i != a_idx && p.initial_stock >= 5)
            .map(|(i, p)| (i, p.id.as_str()))
            .expect("second product");
        store.add_to_basket("9", a, 2).expect("add a");
        store.add_to_basket("9", b, 4).expect("add b");
        // Someone else buys b down to 1 in the meantime.
        store.set_stock(b_idx, 1);
        let a_before = store.stock(a_idx);
        let e = store.place_order("9", 0).expect_err("shortage");
        assert!(
            matches!(&e, StoreError::InsufficientStock(s) if s.len() == 1 && s[0].product_id == b)
        );
        assert!(e.to_string().contains("4 requested, 1 in stock"));
        assert_eq!(store.stock(a_idx), a_before);
        assert_eq!(store.stock(b_idx), 1);
        assert_eq!(store.basket("9").lines.len(), 2, "basket kept");
        assert_eq!(store.stats().runtime_order_count, 0);
    }

    #[test]
    fn user_orders_are_newest_first_and_limited() {
        let store = Store::new(&CATALOG);
        let user = (1..=500)
            .map(|u| u.to_string())
            .find(|u| CATALOG.history_of(u).count() >= 3)
            .expect("a user with three historical orders");
        let (total, orders) = store.orders_of(&user, 2);
        assert_eq!(total, CATALOG.history_of(&user).count());
        assert_eq!(orders.len(), 2);
        assert!(orders[0].created_at >= orders[1].created_at);
        assert_eq!(store.orders_of("nobody", 10), (0, vec![]));
    }

    /// Many threads race to buy a product with limited stock: stock never goes
    /// negative and exactly `stock` single-unit orders succeed.
    #[test]
    fn concurrent_orders_never_oversell() {
        const STOCK: u32 = 25;
        const BUYERS: usize = 64;
        let store = Arc::new(Store::new(&CATALOG));
        let (idx, id) = in_stock_product(1);
        store.set_stock(idx, STOCK);
        // Every buyer fills a basket first (each basket alone fits the stock).
        for b in 0..BUYERS {
            store
                .add_to_basket(&format!("buyer-{b}"), id, 1)
                .expect("basket");
        }
        let successes = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(BUYERS));
        let threads: Vec<_> = (0..BUYERS)
            .map(|b| {
                let (store, successes, barrier) =
                    (store.clone(), successes.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    match store.place_order(&format!("buyer-{b}"), 0) {
                        Ok(_) => {
                            successes.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(StoreError::InsufficientStock(_)) => {}
                        Err(other) => panic!("unexpected error {other}"),
                    }
                    let stock = store.stock(idx);
                    assert!(stock <= STOCK);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("buyer thread");
        }
        assert_eq!(successes.load(Ordering::SeqCst), STOCK as usize);
        assert_eq!(store.stock(idx), 0);
        let stats = store.stats();
        assert_eq!(stats.runtime_order_count, STOCK as usize);
        assert_eq!(stats.units[idx], CATALOG.history_units[idx] + STOCK);
        // Order ids are unique.
        let inner = store.lock();
        let mut ids: Vec<&str> = inner.orders.iter().map(|o| o.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), STOCK as usize);
    }

    /// Multi-line orders racing on overlapping products stay all-or-nothing.
    #[test]
    fn concurrent_multi_line_orders_are_atomic() {
        let store = Arc::new(Store::new(&CATALOG));
        let (a_idx, a) = in_stock_product(1);
        let (b_idx, b) = CATALOG
            .products
            .iter()
            .enumerate()
            .find(|(i, p)| *i != a_idx && p.initial_stock >= 1)
            .map(|(i, p)| (i, p.id.as_str()))
            .expect("second product");
        store.set_stock(a_idx, 10);
        store.set_stock(b_idx, 6);
        for u in 0..40 {
            let user = format!("u{u}");
            store.add_to_basket(&user, a, 1).expect("a");
            store.add_to_basket(&user, b, 1).expect("b");
        }
        let threads: Vec<_> = (0..40)
            .map(|u| {
                let store = store.clone();
                std::thread::spawn(move || store.place_order(&format!("u{u}"), 0).is_ok())
            })
            .collect();
        let ok = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .filter(|&ok| ok)
            .count();
        // b runs out after 6 orders; a must have lost exactly as many units.
        assert_eq!(ok, 6);
        assert_eq!(store.stock(b_idx), 0);
        assert_eq!(store.stock(a_idx), 4);
    }
}
