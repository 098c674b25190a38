//! The demo data: the product catalog and the historical orders, generated once at
//! start-up ([`CATALOG`]) from a fixed seed with the tiny, fully specified PRNG
//! [`SplitMix64`] (from `service_kit::prng`; this module owns the draws over it). Only
//! integer arithmetic feeds the generator (no `rand`, no libm transcendental functions),
//! so the catalog is identical on every platform and never changes with a dependency
//! upgrade; the `golden_values` test pins it.
//!
//! This module also owns the value types shared by the rest of the crate
//! ([`Category`], [`Product`], [`Order`]) and their JSON shapes, plus the UTC
//! timestamp formatting used for `createdAt`.

use std::{
    collections::{HashMap, HashSet},
    sync::LazyLock,
};

use serde_json::{Value, json};
use service_kit::prng::SplitMix64;

/// Seed of the demo data. Changing it changes every product and order.
pub const SEED: u64 = 0x005E_ED0F_5A0B_2025;
/// Products per category; the catalog holds `8 * PRODUCTS_PER_CATEGORY` products.
pub const PRODUCTS_PER_CATEGORY: usize = 60;
/// Number of historical orders.
pub const HISTORY_ORDERS: usize = 600;
/// Historical orders reference user ids `"1"..="HISTORY_USERS"` (the ids user-service knows).
pub const HISTORY_USERS: u64 = 500;

/// The catalog and order history every part of the service reads.
pub static CATALOG: LazyLock<Catalog> = LazyLock::new(|| Catalog::generate(SEED));

// ---------------------------------------------------------------------------------------
// Value types
// ---------------------------------------------------------------------------------------

/// The product categories. The names are shared with user-service (preferences).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Electronics,
    Books,
    HomeKitchen,
    SportsOutdoors,
    Clothing,
    ToysGames,
    Beauty,
    Grocery,
}

impl Category {
    /// Every category, in catalog order.
    pub const ALL: [Category; 8] = [
        Category::Electronics,
        Category::Books,
        Category::HomeKitchen,
        Category::SportsOutdoors,
        Category::Clothing,
        Category::ToysGames,
        Category::Beauty,
        Category::Grocery,
    ];

    /// Every category name, in catalog order.
    pub const NAMES: [&'static str; 8] = [
        "Electronics",
        "Books",
        "Home & Kitchen",
        "Sports & Outdoors",
        "Clothing",
        "Toys & Games",
        "Beauty",
        "Grocery",
    ];

    /// The display name, as used on the wire.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The category with this name (ASCII case-insensitive).
    pub fn parse(name: &str) -> Option<Category> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

/// One product of the catalog. `stock` lives in the store (it changes at run time);
/// `initial_stock` is what the catalog starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    /// `"1"..="N"`, the product's position in the catalog plus one.
    pub id: String,
    pub name: String,
    pub category: Category,
    pub brand: &'static str,
    pub description: String,
    /// Price in US cents.
    pub price_cents: u64,
    pub initial_stock: u32,
    /// Rating in tenths of a star, 10..=50.
    pub rating_tenths: u32,
    pub review_count: u32,
    pub tags: Vec<&'static str>,
}

impl Product {
    /// Price in US dollars.
    pub fn price(&self) -> f64 {
        dollars(self.price_cents)
    }

    /// Rating, 1.0..=5.0 with one decimal.
    pub fn rating(&self) -> f64 {
        f64::from(self.rating_tenths) / 10.0
    }

    /// The product as tools return it, with the current `stock`.
    pub fn to_json(&self, stock: u32) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "category": self.category.as_str(),
            "brand": self.brand,
            "description": self.description,
            "price": self.price(),
            "stock": stock,
            "inStock": stock > 0,
            "rating": self.rating(),
            "reviewCount": self.review_count,
            "tags": self.tags,
        })
    }
}

/// One line of an order, self-contained (name and price as they were when ordered).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderLine {
    /// Index of the product in [`Catalog::products`].
    pub product_idx: usize,
    pub product_id: String,
    pub name: String,
    pub unit_cents: u64,
    pub quantity: u32,
}

impl OrderLine {
    pub fn line_cents(&self) -> u64 {
        self.unit_cents * u64::from(self.quantity)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "productId": self.product_id,
            "name": self.name,
            "unitPrice": dollars(self.unit_cents),
            "quantity": self.quantity,
            "lineTotal": dollars(self.line_cents()),
        })
    }
}

/// An order, historical or placed at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub lines: Vec<OrderLine>,
    pub total_cents: u64,
    pub status: &'static str,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
}

impl Order {
    pub fn to_json(&self) -> Value {
        json!({
            "orderId": self.id,
            "userId": self.user_id,
            "items": self.lines.iter().map(OrderLine::to_json).collect::<Vec<_>>(),
            "total": dollars(self.total_cents),
            "status": self.status,
            "createdAt": format_timestamp(self.created_at),
        })
    }
}

/// Cents to dollars (exact for any realistic amount: cents stay far below 2^53).
pub fn dollars(cents: u64) -> f64 {
    cents as f64 / 100.0
}

/// Dollars to cents, rounded to the nearest cent (for user-given price bounds).
pub fn cents(dollars: f64) -> u64 {
    if dollars <= 0.0 {
        0
    } else {
        (dollars * 100.0).round() as u64
    }
}

// ---------------------------------------------------------------------------------------
// The catalog
// ---------------------------------------------------------------------------------------

/// Products plus the order history, with the history's per-product aggregates.
#[derive(Debug, PartialEq)]
pub struct Catalog {
    /// `products[i].id == (i + 1).to_string()`.
    pub products: Vec<Product>,
    /// Historical orders, oldest first.
    pub history: Vec<Order>,
    /// Units of each product sold in the history (same indexing as `products`).
    pub history_units: Vec<u32>,
    /// Revenue of each product in the history, in cents.
    pub history_revenue: Vec<u64>,
    /// Historical orders by user id (indices into `history`).
    history_by_user: HashMap<String, Vec<usize>>,
}

impl Catalog {
    /// Generates the catalog and its history from `seed`.
    pub fn generate(seed: u64) -> Catalog {
        let mut rng = SplitMix64::new(seed);
        let (products, popularity) = generate_products(&mut rng);
        let history = generate_history(&mut rng, &products, &popularity);
        let mut history_units = vec![0u32; products.len()];
        let mut history_revenue = vec![0u64; products.len()];
        let mut history_by_user: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, order) in history.iter().enumerate() {
            for line in &order.lines {
                history_units[line.product_idx] += line.quantity;
                history_revenue[line.product_idx] += line.line_cents();
            }
            history_by_user
                .entry(order.user_id.clone())
                .or_default()
                .push(i);
        }
        Catalog {
            products,
            history,
            history_units,
            history_revenue,
            history_by_user,
        }
    }

    /// The index and product with this id. Only the canonical spelling matches
    /// (`"123"`, not `"0123"` or `" 123"`).
    pub fn get(&self, id: &str) -> Option<(usize, &Product)> {
        let n: usize = id.parse().ok()?;
        let idx = n.checked_sub(1)?;
        let product = self.products.get(idx)?;
        (product.id == id).then_some((idx, product))
    }

    /// Historical orders of a user, oldest first.
    pub fn history_of<'a>(&'a self, user_id: &str) -> impl Iterator<Item = &'a Order> + 'a {
        self.history_by_user
            .get(user_id)
            .into_iter()
            .flatten()
            .map(|&i| &self.history[i])
    }
}

// ---------------------------------------------------------------------------------------
// Draws
// ---------------------------------------------------------------------------------------

/// The catalog's draws over the shared [`SplitMix64`]. Every reduction to `0..n` is by
/// modulo ([`SplitMix64::below_modulo`]): the catalog was generated that way and the
/// `golden_values` test pins it.
trait CatalogRng {
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64;
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64;
    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool;
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T;
}

impl CatalogRng for SplitMix64 {
    fn below(&mut self, n: u64) -> u64 {
        self.below_modulo(n)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------
// Product generation
// ---------------------------------------------------------------------------------------

/// A kind of item sold in a category.
struct Item {
    noun: &'static str,
    /// Price range in whole dollars.
    price: (u64, u64),
    tags: &'static [&'static str],
    /// Completes "<Brand>'s <adjective> <noun> ..." in the description.
    blurb: &'static str,
}

struct CategorySpec {
    category: Category,
    brands: &'static [&'static str],
    adjectives: &'static [&'static str],
    items: &'static [Item],
    /// Appended as " (<variant>)" to tell apart products that would share a name.
    variants: &'static [&'static str],
}

const fn item(
    noun: &'static str,
    price: (u64, u64),
    tags: &'static [&'static str],
    blurb: &'static str,
) -> Item {
    Item {
        noun,
        price,
        tags,
        blurb,
    }
}

const EXTRA_TAGS: &[&str] = &[
    "bestseller",
    "new arrival",
    "gift idea",
    "eco-friendly",
    "limited edition",
    "staff pick",
];

const BOOK_TITLE_ADJECTIVES: &[&str] = &[
    "Silent",
    "Hidden",
    "Last",
    "Crimson",
    "Golden",
    "Forgotten",
    "Midnight",
    "Wandering",
    "Broken",
    "Distant",
    "Quiet",
    "Burning",
    "Northern",
    "Glass",
];
const BOOK_TITLE_NOUNS: &[&str] = &[
    "Orchard",
    "Harbor",
    "Kingdom",
    "Garden",
    "Signal",
    "River",
    "Library",
    "Empire",
    "Lighthouse",
    "Compass",
    "Winter",
    "Frontier",
    "Atlas",
    "Tide",
];

#[rustfmt::skip]
static SPECS: [CategorySpec; 8] = [
    CategorySpec {
        category: Category::Electronics,
        brands: &["Sonora", "Voltix", "Lumina", "Aerotech", "Kestrel"],
        adjectives: &["Pro", "Ultra", "Compact", "Slim", "Elite", "Studio", "Sport"],
        items: &[
            item("Wireless Headphones", (59, 349), &["audio", "wireless", "bluetooth", "headphones"], "with active noise cancelling and 30-hour battery life"),
            item("True Wireless Earbuds", (39, 249), &["audio", "wireless", "bluetooth", "earbuds"], "with a pocketable charging case and sweat resistance"),
            item("Bluetooth Speaker", (29, 199), &["audio", "bluetooth", "portable", "speaker"], "with 360-degree sound and an IPX7 waterproof shell"),
            item("Smartwatch", (129, 449), &["wearable", "fitness", "smartwatch"], "with heart-rate tracking, GPS and a week of battery"),
            item("4K Monitor", (229, 799), &["display", "monitor", "4k"], "with a 27-inch IPS panel and USB-C power delivery"),
            item("Mechanical Keyboard", (69, 219), &["keyboard", "gaming", "accessories"], "with hot-swappable switches and per-key backlighting"),
            item("Wireless Mouse", (19, 99), &["mouse", "wireless", "accessories"], "with an ergonomic shape and near-silent clicks"),
            item("Laptop", (599, 2199), &["laptop", "computer", "portable"], "with a 14-inch display, 16 GB of RAM and a 1 TB SSD"),
            item("Tablet", (199, 999), &["tablet", "portable", "display"], "with an 11-inch screen and stylus support"),
            item("Portable Charger", (19, 89), &["charger", "battery", "portable", "usb-c"], "with 20,000 mAh capacity and 65 W USB-C output"),
            item("Action Camera", (149, 499), &["camera", "video", "waterproof"], "that records stabilised 5K video down to 10 m underwater"),
            item("Smart Speaker", (39, 199), &["smart home", "speaker", "voice assistant"], "with a built-in voice assistant and room-filling sound"),
        ],
        variants: &["2nd Gen", "3rd Gen", "2025 Edition", "Special Edition"],
    },
    CategorySpec {
        category: Category::Books,
        brands: &["Northwind Press", "Harbor Lane Books", "Blue Finch Publishing", "Meridian House", "Oakleaf Editions"],
        adjectives: &[],
        items: &[
            item("mystery novel", (9, 28), &["fiction", "mystery", "thriller"], "set in a snowbound coastal town where nobody is who they seem"),
            item("science fiction novel", (9, 29), &["fiction", "science fiction", "space"], "about the first crew to cross the outer solar system"),
            item("fantasy novel", (9, 30), &["fiction", "fantasy", "adventure"], "following an apprentice cartographer through a world of shifting maps"),
            item("cookbook", (15, 45), &["cooking", "recipes", "food"], "with 120 weeknight recipes and step-by-step photos"),
            item("biography", (12, 35), &["non-fiction", "biography", "history"], "tracing the life of a pioneering 19th-century engineer"),
            item("self-help guide", (11, 28), &["non-fiction", "self-help", "productivity"], "on building habits that last"),
            item("history book", (14, 40), &["non-fiction", "history"], "retelling five centuries of maritime trade"),
            item("children's picture book", (6, 20), &["children", "picture book", "kids"], "with bright illustrations and a bedtime-friendly rhythm"),
            item("programming guide", (29, 69), &["programming", "technology", "reference"], "that teaches systems programming from first principles"),
            item("travel guide", (12, 30), &["travel", "guide", "maps"], "with itineraries, maps and local food tips"),
            item("poetry collection", (10, 24), &["poetry", "literature"], "of short poems about cities and seasons"),
            item("graphic novel", (14, 35), &["comics", "graphic novel", "fiction"], "in full colour about a detective in a floating city"),
        ],
        variants: &["Hardcover", "Paperback"],
    },
    CategorySpec {
        category: Category::HomeKitchen,
        brands: &["Hearthstone", "Copperleaf", "Casa Verde", "Northpeak Home", "Brightware"],
        adjectives: &["Classic", "Premium", "Everyday", "Signature", "Compact", "Deluxe", "Essential"],
        items: &[
            item("Chef's Knife", (29, 149), &["kitchen", "knives", "cooking"], "forged from high-carbon stainless steel with a full tang"),
            item("Nonstick Frying Pan", (24, 89), &["kitchen", "cookware", "nonstick"], "with a PFOA-free coating that works on induction hobs"),
            item("Cast Iron Dutch Oven", (49, 249), &["kitchen", "cookware", "cast iron"], "with a 5.5-quart enamelled interior for slow braises"),
            item("Espresso Machine", (149, 699), &["coffee", "appliances", "espresso"], "with a 15-bar pump and a steam wand for milk drinks"),
            item("Blender", (39, 299), &["appliances", "smoothies", "kitchen"], "with a 1,200 W motor and a 64-ounce jar"),
            item("Stand Mixer", (199, 499), &["appliances", "baking", "kitchen"], "with a 5-quart bowl and ten speeds"),
            item("Air Fryer", (59, 199), &["appliances", "air fryer", "healthy cooking"], "that crisps with little or no oil in a 6-quart basket"),
            item("Bath Towel Set", (24, 79), &["bath", "towels", "cotton"], "of six plush, quick-drying cotton towels"),
            item("Memory Foam Pillow", (29, 89), &["bedroom", "sleep", "pillow"], "with a cooling gel layer and washable cover"),
            item("Robot Vacuum", (179, 599), &["cleaning", "smart home", "vacuum"], "with lidar mapping and automatic dirt disposal"),
            item("Coffee Grinder", (29, 149), &["coffee", "grinder", "appliances"], "with conical burrs and 40 grind settings"),
            item("Glass Food Storage Set", (19, 59), &["kitchen", "storage", "meal prep"], "of ten oven-safe containers with locking lids"),
        ],
        variants: &["Large", "Set of 2", "Stainless", "Matte Black"],
    },
    CategorySpec {
        category: Category::SportsOutdoors,
        brands: &["Summit Gear", "TrailForge", "AquaPeak", "Ridgeback", "Velocity Sports"],
        adjectives: &["Ultralight", "All-Terrain", "Pro", "Trail", "Endurance", "Expedition", "Performance"],
        items: &[
            item("Yoga Mat", (19, 89), &["yoga", "fitness", "mat"], "with a non-slip surface and 6 mm of cushioning"),
            item("Hiking Backpack", (49, 229), &["hiking", "backpack", "camping"], "with a 40-litre main compartment and a ventilated back panel"),
            item("Camping Tent", (89, 499), &["camping", "tent", "outdoors"], "for two people that pitches in under five minutes"),
            item("Trail Running Shoes", (79, 179), &["running", "shoes", "trail"], "with a grippy lugged outsole and a rock plate"),
            item("Insulated Water Bottle", (15, 45), &["hydration", "bottle", "outdoors"], "that keeps drinks cold for 24 hours"),
            item("Adjustable Dumbbells", (99, 399), &["fitness", "weights", "home gym"], "adjustable from 5 to 52.5 lb with a twist of the handle"),
            item("Bike Helmet", (39, 199), &["cycling", "helmet", "safety"], "with MIPS impact protection and 18 vents"),
            item("Sleeping Bag", (49, 299), &["camping", "sleeping bag", "outdoors"], "rated to 20 F with a compressible synthetic fill"),
            item("Tennis Racket", (39, 249), &["tennis", "racket", "sports"], "with a 100-square-inch head for forgiving power"),
            item("Resistance Band Set", (12, 49), &["fitness", "resistance bands", "home gym"], "of five latex-free bands with door anchor and handles"),
            item("Camping Stove", (29, 149), &["camping", "stove", "cooking"], "that boils a litre of water in three minutes"),
            item("Fishing Rod", (29, 199), &["fishing", "rod", "outdoors"], "with a sensitive graphite blank and a smooth spinning reel"),
        ],
        variants: &["Large", "Women's", "Men's", "Kids'"],
    },
    CategorySpec {
        category: Category::Clothing,
        brands: &["Thread & Co.", "Northline", "Urban Fable", "Kinfolk Basics", "Alder Apparel"],
        adjectives: &["Classic", "Relaxed", "Modern", "Everyday", "Heritage", "Lightweight", "Tailored"],
        items: &[
            item("Cotton T-Shirt", (12, 35), &["tops", "t-shirt", "cotton"], "cut from soft combed cotton"),
            item("Slim Fit Jeans", (39, 119), &["denim", "jeans", "bottoms"], "in stretch denim that keeps its shape"),
            item("Wool Sweater", (49, 149), &["knitwear", "sweater", "wool"], "knitted from warm, breathable merino wool"),
            item("Rain Jacket", (59, 229), &["outerwear", "jacket", "waterproof"], "with taped seams and a packable hood"),
            item("Running Shorts", (19, 49), &["activewear", "shorts", "running"], "with a built-in liner and a zipped pocket"),
            item("Hooded Sweatshirt", (34, 89), &["tops", "hoodie", "fleece"], "in brushed-back fleece with a kangaroo pocket"),
            item("Oxford Shirt", (29, 89), &["tops", "shirt", "cotton"], "with a button-down collar for work or weekends"),
            item("Down Vest", (59, 179), &["outerwear", "vest", "down"], "filled with responsibly sourced 650-fill down"),
            item("Chino Pants", (39, 99), &["bottoms", "chinos", "cotton"], "in a comfortable stretch twill"),
            item("Merino Wool Socks", (12, 29), &["socks", "wool", "hiking"], "in a three-pack that resists odour"),
            item("Leather Belt", (19, 69), &["accessories", "belt", "leather"], "made of full-grain leather with a brushed buckle"),
            item("Linen Dress", (49, 139), &["dresses", "linen", "summer"], "in breathable European linen with a relaxed fit"),
        ],
        variants: &["Navy", "Charcoal", "Olive", "Sand", "Black", "White"],
    },
    CategorySpec {
        category: Category::ToysGames,
        brands: &["Brightblock", "Puzzlewood", "Starlight Toys", "Tinker & Twig", "Game Night Co."],
        adjectives: &["Classic", "Deluxe", "Junior", "Family", "Adventure", "Creative", "Mini"],
        items: &[
            item("Building Blocks Set", (19, 149), &["building", "construction", "kids"], "with 800 compatible bricks and idea cards"),
            item("Jigsaw Puzzle", (14, 34), &["puzzle", "1000 pieces", "family"], "of 1,000 pieces showing a hand-painted landscape"),
            item("Strategy Board Game", (24, 69), &["board game", "strategy", "family"], "for 2 to 5 players with 60-minute games"),
            item("Remote Control Car", (29, 129), &["rc", "car", "outdoor play"], "with four-wheel drive and a rechargeable battery"),
            item("Plush Teddy Bear", (12, 39), &["plush", "soft toy", "toddlers"], "made from ultra-soft, machine-washable fabric"),
            item("Card Game", (9, 24), &["card game", "party", "family"], "that plays in 15 minutes and fits in a pocket"),
            item("Wooden Train Set", (34, 119), &["wooden toys", "trains", "toddlers"], "with 52 pieces of solid beech track"),
            item("Science Experiment Kit", (24, 59), &["stem", "science", "educational"], "with 30 safe experiments and a lab guide"),
            item("Dollhouse", (59, 199), &["dollhouse", "pretend play", "kids"], "with three floors and 25 pieces of furniture"),
            item("Magnetic Tiles", (29, 89), &["stem", "building", "magnetic"], "in a 100-piece set of translucent colours"),
            item("Art Set", (14, 44), &["arts and crafts", "drawing", "kids"], "with crayons, markers, pastels and a carry case"),
            item("Mini Drone", (39, 99), &["drone", "rc", "stem"], "with prop guards and one-key take-off for beginners"),
        ],
        variants: &["Deluxe Set", "Travel Edition", "Junior", "Collector's Edition"],
    },
    CategorySpec {
        category: Category::Beauty,
        brands: &["Luxe Botanica", "Pure Petal", "Dermaglow", "Solstice Skin", "Velvet & Vine"],
        adjectives: &["Gentle", "Radiant", "Nourishing", "Daily", "Advanced", "Botanical", "Sensitive"],
        items: &[
            item("Vitamin C Serum", (14, 69), &["skincare", "serum", "brightening"], "with 15% vitamin C and ferulic acid for an even tone"),
            item("Face Moisturizer", (12, 59), &["skincare", "moisturizer", "hydrating"], "with hyaluronic acid and ceramides for 24-hour hydration"),
            item("Mineral Sunscreen SPF 50", (9, 34), &["skincare", "sunscreen", "spf"], "with zinc oxide and no white cast"),
            item("Argan Oil Shampoo", (8, 29), &["haircare", "shampoo", "argan oil"], "that cleans gently and leaves hair soft"),
            item("Matte Lipstick", (8, 32), &["makeup", "lipstick", "long-wearing"], "with a creamy, long-wearing matte finish"),
            item("Volumizing Mascara", (7, 28), &["makeup", "mascara", "eyes"], "that lifts and separates without clumping"),
            item("Clay Face Mask", (9, 39), &["skincare", "face mask", "pores"], "with kaolin clay to refine pores in ten minutes"),
            item("Eau de Parfum", (39, 149), &["fragrance", "perfume"], "with notes of bergamot, jasmine and cedar"),
            item("Hair Dryer", (39, 249), &["haircare", "hair dryer", "tools"], "with ionic technology and three heat settings"),
            item("Retinol Night Cream", (19, 79), &["skincare", "retinol", "anti-aging"], "with encapsulated retinol for overnight renewal"),
            item("Body Lotion", (7, 24), &["body care", "lotion", "hydrating"], "with shea butter that absorbs quickly"),
            item("Makeup Brush Set", (14, 59), &["makeup", "brushes", "tools"], "of twelve vegan brushes with a travel roll"),
        ],
        variants: &["Travel Size", "Value Pack", "Fragrance-Free", "Refill"],
    },
    CategorySpec {
        category: Category::Grocery,
        brands: &["Harvest Table", "Green Valley Farms", "Morning Ritual", "Pantry Select", "Wild Orchard"],
        adjectives: &["Organic", "Classic", "Artisan", "Single-Origin", "Natural", "Premium", "Farmhouse"],
        items: &[
            item("Ground Coffee", (7, 18), &["coffee", "beverages", "breakfast"], "in a 12-ounce bag, medium roast with notes of cocoa"),
            item("Green Tea", (5, 15), &["tea", "beverages"], "in a box of 100 bags of delicate sencha"),
            item("Extra Virgin Olive Oil", (9, 29), &["cooking oil", "pantry", "olive oil"], "in a 1-litre bottle, cold-pressed from a single harvest"),
            item("Dark Chocolate Bar", (2, 6), &["chocolate", "snacks", "sweets"], "with 72% cocoa and a pinch of sea salt"),
            item("Raw Honey", (6, 18), &["honey", "pantry", "sweeteners"], "in a 16-ounce jar, unfiltered and unheated"),
            item("Whole Almonds", (10, 22), &["nuts", "snacks", "protein"], "in a resealable 2-pound bag"),
            item("Marinara Sauce", (3, 9), &["pasta sauce", "pantry", "italian"], "slow-simmered from San Marzano-style tomatoes"),
            item("Granola", (4, 10), &["breakfast", "cereal", "snacks"], "with oats, almonds and a touch of maple"),
            item("Maple Syrup", (8, 22), &["breakfast", "sweeteners", "maple"], "in a 12-ounce bottle of grade A amber syrup"),
            item("Basmati Rice", (7, 16), &["rice", "pantry", "grains"], "in a 5-pound bag, aged for a fluffy texture"),
            item("Peanut Butter", (3, 9), &["spreads", "protein", "pantry"], "made from just peanuts and a little salt"),
            item("Sparkling Water", (4, 9), &["beverages", "sparkling water"], "in a 12-pack of cans with a hint of lime"),
        ],
        variants: &["Family Size", "Value Pack", "Decaf", "Twin Pack"],
    },
];

/// Generates the products (ids interleave the categories) and each product's weight
/// for drawing historical orders.
fn generate_products(rng: &mut SplitMix64) -> (Vec<Product>, Vec<u64>) {
    let total = SPECS.len() * PRODUCTS_PER_CATEGORY;
    let mut products = Vec::with_capacity(total);
    let mut popularity = Vec::with_capacity(total);
    let mut used_names: HashSet<String> = HashSet::new();
    for i in 0..total {
        let spec = &SPECS[i % SPECS.len()];
        let (name, brand, item) = unique_name(rng, spec, &mut used_names);
        let description = describe(spec.category, brand, &name, item);

        let span = item.price.1 - item.price.0;
        // The cheaper of two draws: most products sit in the lower half of the range.
        let dollars = item.price.0 + rng.range(0, span).min(rng.range(0, span));
        let cents = *rng.pick(&[99, 99, 99, 95, 49, 0]);
        let price_cents = dollars.max(1) * 100 + cents;

        let rating_tenths = if rng.chance(8) {
            rng.range(15, 34)
        } else {
            rng.range(35, 50).max(rng.range(35, 50))
        } as u32;
        let review_count = match rng.below(10) {
            0..=1 => rng.range(0, 20),
            2..=5 => rng.range(21, 400),
            6..=8 => rng.range(401, 3000),
            _ => rng.range(3001, 12000),
        } as u32;
        let initial_stock = if rng.chance(10) {
            0
        } else if rng.chance(15) {
            rng.range(1, 5)
        } else {
            rng.range(6, 250)
        } as u32;

        let mut tags: Vec<&'static str> = item.tags.to_vec();
        if rng.chance(35) {
            let extra = *rng.pick(EXTRA_TAGS);
            if !tags.contains(&extra) {
                tags.push(extra);
            }
        }

        let hot = if rng.chance(10) {
            25
        } else if rng.chance(25) {
            6
        } else {
            1
        };
        popularity.push(u64::from(rating_tenths.saturating_sub(10)) * hot);

        products.push(Product {
            id: (i + 1).to_string(),
            name,
            category: spec.category,
            brand,
            description,
            price_cents,
            initial_stock,
            rating_tenths,
            review_count,
            tags,
        });
    }
    (products, popularity)
}

/// Draws a name not used yet: a few fresh draws first, then a variant suffix.
fn unique_name(
    rng: &mut SplitMix64,
    spec: &'static CategorySpec,
    used: &mut HashSet<String>,
) -> (String, &'static str, &'static Item) {
    let mut last = None;
    for _ in 0..12 {
        let brand = *rng.pick(spec.brands);
        let item = rng.pick(spec.items);
        let name = if spec.category == Category::Books {
            // Books: a title plus the binding.
            format!(
                "The {} {} ({})",
                rng.pick(BOOK_TITLE_ADJECTIVES),
                rng.pick(BOOK_TITLE_NOUNS),
                rng.pick(spec.variants)
            )
        } else {
            format!("{brand} {} {}", rng.pick(spec.adjectives), item.noun)
        };
        if used.insert(name.clone()) {
            return (name, brand, item);
        }
        last = Some((name, brand, item));
    }
    let (base, brand, item) = last.expect("the loop runs at least once");
    let mut k = 2;
    loop {
        let suffix = spec
            .variants
            .get(k - 2)
            .map(|v| v.to_string())
            .unwrap_or_else(|| format!("No. {k}"));
        let name = format!("{base} ({suffix})");
        if used.insert(name.clone()) {
            return (name, brand, item);
        }
        k += 1;
    }
}

fn describe(category: Category, brand: &str, name: &str, item: &Item) -> String {
    if category == Category::Books {
        let article = if item.noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "An"
        } else {
            "A"
        };
        return format!(
            "{article} {} {}, published by {brand}.",
            item.noun, item.blurb
        );
    }
    // "Sonora Pro Wireless Headphones (2nd Gen)" -> "pro wireless headphones"
    let rest = name.strip_prefix(brand).unwrap_or(name);
    let rest = rest.split(" (").next().unwrap_or(rest).trim();
    let possessive = if brand.ends_with('s') { "'" } else { "'s" };
    format!(
        "{brand}{possessive} {} {}.",
        lowercase_words(rest),
        item.blurb
    )
}

/// Lower-cases words except those that look like model names or units (4K, SPF, USB-C).
fn lowercase_words(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            if w.chars().filter(|c| c.is_ascii_uppercase()).count() > 1
                || w.chars().any(|c| c.is_ascii_digit())
            {
                w.to_string()
            } else {
                w.to_lowercase()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------
// History generation
// ---------------------------------------------------------------------------------------

/// First and last instants of the order history (UTC).
pub fn history_window() -> (i64, i64) {
    (
        days_from_civil(2025, 1, 1) * 86_400,
        days_from_civil(2025, 11, 1) * 86_400,
    )
}

fn generate_history(rng: &mut SplitMix64, products: &[Product], popularity: &[u64]) -> Vec<Order> {
    let cumulative: Vec<u64> = popularity
        .iter()
        .scan(0u64, |acc, w| {
            *acc += (*w).max(1);
            Some(*acc)
        })
        .collect();
    let total_weight = cumulative.last().copied().unwrap_or(1);
    let (start, end) = history_window();
    let slot = (end - start) / HISTORY_ORDERS as i64;
    let shipped_after = end - 14 * 86_400;

    (0..HISTORY_ORDERS)
        .map(|k| {
            let created_at = start + k as i64 * slot + rng.below(slot as u64) as i64;
            let user_id = rng.range(1, HISTORY_USERS).to_string();
            let line_count = match rng.below(10) {
                0..=5 => 1,
                6..=8 => 2,
                _ => 3,
            };
            let mut lines: Vec<OrderLine> = Vec::with_capacity(line_count);
            while lines.len() < line_count {
                let draw = rng.below(total_weight);
                let idx = cumulative.partition_point(|&c| c <= draw);
                if lines.iter().any(|l| l.product_idx == idx) {
                    continue;
                }
                let quantity = match rng.below(100) {
                    0..=69 => 1,
                    70..=91 => 2,
                    _ => 3,
                };
                let p = &products[idx];
                lines.push(OrderLine {
                    product_idx: idx,
                    product_id: p.id.clone(),
                    name: p.name.clone(),
                    unit_cents: p.price_cents,
                    quantity,
                });
            }
            let total_cents = lines.iter().map(OrderLine::line_cents).sum();
            Order {
                id: order_id(k as u64),
                user_id,
                lines,
                total_cents,
                status: if created_at >= shipped_after {
                    "shipped"
                } else {
                    "delivered"
                },
                created_at,
            }
        })
        .collect()
}

/// The id of the `n`-th order ever (0-based): history first, then run-time orders.
pub fn order_id(n: u64) -> String {
    format!("ORD-{}", 100_001 + n)
}

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

/// Seconds since the Unix epoch, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_timestamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic() {
        let a = Catalog::generate(SEED);
        let b = Catalog::generate(SEED);
        assert_eq!(a, b);
        assert_eq!(*CATALOG, a);
        let other = Catalog::generate(SEED + 1);
        assert_ne!(a.products, other.products);
    }

    /// FNV-1a over every field of the generated data, in a fixed textual form.
    fn fingerprint(c: &Catalog) -> u64 {
        let mut text = String::new();
        for p in &c.products {
            text += &format!(
                "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}\n",
                p.id,
                p.name,
                p.category.as_str(),
                p.brand,
                p.description,
                p.price_cents,
                p.initial_stock,
                p.rating_tenths,
                p.review_count,
                p.tags.join(",")
            );
        }
        for o in &c.history {
            text += &format!(
                "{}|{}|{}|{}|{}",
                o.id, o.user_id, o.created_at, o.status, o.total_cents
            );
            for l in &o.lines {
                text += &format!("|{}x{}@{}", l.product_id, l.quantity, l.unit_cents);
            }
            text.push('\n');
        }
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// Pins the data: if this fails, the demo data changed (a generator edit, not an
    /// upgrade, since nothing outside this file feeds it). Update the expected values
    /// only on purpose.
    #[test]
    fn golden_values() {
        let p = &CATALOG.get("123").expect("product 123").1;
        assert_eq!(
            (p.name.as_str(), p.category, p.price_cents),
            (
                "Copperleaf Compact Nonstick Frying Pan",
                Category::HomeKitchen,
                3649
            )
        );
        let first = &CATALOG.history[0];
        assert_eq!(
            (first.id.as_str(), first.user_id.as_str()),
            ("ORD-100001", "31")
        );
        assert_eq!(fingerprint(&CATALOG), 0x70d4_a676_26bc_f3dc);
    }

    #[test]
    fn catalog_shape() {
        let c = &*CATALOG;
        assert!(c.products.len() >= 400);
        for (i, p) in c.products.iter().enumerate() {
            assert_eq!(p.id, (i + 1).to_string());
            assert!((10..=50).contains(&p.rating_tenths), "{p:?}");
            assert!(p.price_cents >= 100, "{p:?}");
            assert!(!p.tags.is_empty() && !p.description.is_empty());
            assert!(p.description.ends_with('.'), "{}", p.description);
        }
        let names: HashSet<&str> = c.products.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), c.products.len(), "product names are unique");
        for cat in Category::ALL {
            let n = c.products.iter().filter(|p| p.category == cat).count();
            assert_eq!(n, PRODUCTS_PER_CATEGORY, "{cat:?}");
            let brands: HashSet<&str> = c
                .products
                .iter()
                .filter(|p| p.category == cat)
                .map(|p| p.brand)
                .collect();
            assert!(brands.len() >= 3, "{cat:?} has a few brands");
        }
        assert!(c.products.iter().any(|p| p.initial_stock == 0));
        assert!(c.products.iter().filter(|p| p.initial_stock > 0).count() > 300);
    }

    #[test]
    fn product_123_exists_and_lookup_is_canonical() {
        let (idx, p) = CATALOG.get("123").expect("product 123");
        assert_eq!(idx, 122);
        assert_eq!(p.id, "123");
        assert!(CATALOG.get("0123").is_none());
        assert!(CATALOG.get(" 123").is_none());
        assert!(CATALOG.get("0").is_none());
        assert!(CATALOG.get("99999").is_none());
        assert!(CATALOG.get("abc").is_none());
        assert!(CATALOG.get("").is_none());
    }

    #[test]
    fn history_shape() {
        let c = &*CATALOG;
        assert_eq!(c.history.len(), HISTORY_ORDERS);
        let (start, end) = history_window();
        for pair in c.history.windows(2) {
            assert!(pair[0].created_at <= pair[1].created_at);
        }
        for o in &c.history {
            assert!((start..end).contains(&o.created_at));
            let uid: u64 = o.user_id.parse().expect("numeric user id");
            assert!((1..=HISTORY_USERS).contains(&uid));
            assert!(!o.lines.is_empty());
            assert_eq!(
                o.total_cents,
                o.lines.iter().map(OrderLine::line_cents).sum::<u64>()
            );
        }
        let units: u32 = c.history_units.iter().sum();
        let lines: u32 = c
            .history
            .iter()
            .flat_map(|o| &o.lines)
            .map(|l| l.quantity)
            .sum();
        assert_eq!(units, lines);
        // Skewed: the best seller sells clearly more than the median product.
        let mut sorted = c.history_units.clone();
        sorted.sort_unstable();
        assert!(sorted[sorted.len() - 1] >= 4 * sorted[sorted.len() / 2].max(1));
        let user_orders: usize = (1..=HISTORY_USERS)
            .map(|u| c.history_of(&u.to_string()).count())
            .sum();
        assert_eq!(user_orders, HISTORY_ORDERS);
    }

    #[test]
    fn categories_round_trip() {
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Some(c));
        }
        assert_eq!(
            Category::parse("home & kitchen"),
            Some(Category::HomeKitchen)
        );
        assert_eq!(Category::parse("Garden"), None);
    }

    #[test]
    fn timestamps() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_timestamp(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(format_timestamp(1_709_210_096), "2024-02-29T12:34:56Z");
        for days in [-1000, 0, 59, 60, 10_000, 20_000, 30_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn money() {
        assert_eq!(dollars(1999), 19.99);
        assert_eq!(cents(19.99), 1999);
        assert_eq!(cents(-3.0), 0);
    }
}
