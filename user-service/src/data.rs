//! The demo user directory: its record types, the deterministic generator that builds it
//! once at start-up, and the look-ups the tools run against it.
//!
//! The directory is generated from a fixed seed with the small, fully specified PRNG
//! [`SplitMix64`] (from `service_kit::prng`; this module owns the draws over it) rather
//! than `rand`, so the data set is part of this crate's contract:
//! user `"456"` is the same person on every machine, in every build, after any crate
//! upgrade. Ids are the decimal strings `"1"` to `"500"`, in order.

use std::{collections::HashMap, sync::LazyLock};

use serde::Serialize;
use service_kit::prng::SplitMix64;

/// How many users the directory holds.
pub const USER_COUNT: usize = 500;

/// The seed the directory is generated from. Changing it changes every record.
const SEED: u64 = 0x5EED_0FDE_2024_0456;

/// Product categories a user can favour. These are exactly the category names of the
/// shopping-service catalog, which matches preferences against them.
pub const CATEGORIES: [&str; 8] = [
    "Electronics",
    "Books",
    "Home & Kitchen",
    "Sports & Outdoors",
    "Clothing",
    "Toys & Games",
    "Beauty",
    "Grocery",
];

/// Loyalty tier of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Bronze,
    Silver,
    Gold,
    Platinum,
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 4] = [Tier::Bronze, Tier::Silver, Tier::Gold, Tier::Platinum];

    /// The tier's wire name (`"bronze"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Bronze => "bronze",
            Tier::Silver => "silver",
            Tier::Gold => "gold",
            Tier::Platinum => "platinum",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// One user of the directory, serialized as the tools return it (camelCase).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub name: String,
    pub email: String,
    pub city: &'static str,
    pub country: &'static str,
    /// ISO 8601 calendar date (`YYYY-MM-DD`).
    pub joined_at: String,
    pub membership_tier: Tier,
    pub preferences: Preferences,
}

/// What a user likes to buy; shopping-service personalizes results with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    /// A subset of [`CATEGORIES`], in catalog order.
    pub favorite_categories: Vec<&'static str>,
    pub preferred_brands: Vec<&'static str>,
    pub price_range: PriceRange,
    pub newsletter: bool,
}

/// Price band a user usually shops in, in whole US dollars, `min < max`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PriceRange {
    pub min: u32,
    pub max: u32,
}

static USERS: LazyLock<Vec<User>> = LazyLock::new(|| generate(SEED, USER_COUNT));

/// Every user, ordered by id.
pub fn users() -> &'static [User] {
    &USERS
}

/// The user with exactly this id (`"456"`, not `"0456"` or `" 456"`).
pub fn user_by_id(id: &str) -> Option<&'static User> {
    let index = id.parse::<usize>().ok()?.checked_sub(1)?;
    users().get(index).filter(|u| u.id == id)
}

/// Users whose name, email or city contains `query`, ignoring case, in id order.
/// Returns the total number of matches and at most `limit` of them.
pub fn search(query: &str, limit: usize) -> (usize, Vec<&'static User>) {
    let needle = query.to_lowercase();
    let mut matches = users().iter().filter(|u| {
        [u.name.as_str(), u.email.as_str(), u.city]
            .iter()
            .any(|field| field.to_lowercase().contains(&needle))
    });
    let page: Vec<_> = matches.by_ref().take(limit).collect();
    let total = page.len() + matches.count();
    (total, page)
}

/// Which users [`list`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter<'a> {
    pub tier: Option<Tier>,
    /// Country name, compared ignoring case.
    pub country: Option<&'a str>,
}

/// One page (`offset`, `limit`) of the users matching `filter`, in id order, with the
/// total number of matches.
pub fn list(filter: &ListFilter<'_>, offset: usize, limit: usize) -> (usize, Vec<&'static User>) {
    let mut matches = users().iter().filter(|u| {
        filter.tier.is_none_or(|t| u.membership_tier == t)
            && filter
                .country
                .is_none_or(|c| u.country.eq_ignore_ascii_case(c))
    });
    let skipped = matches.by_ref().take(offset).count();
    let page: Vec<_> = matches.by_ref().take(limit).collect();
    let total = skipped + page.len() + matches.count();
    (total, page)
}

// ---------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------

#[rustfmt::skip]
const FIRST_NAMES: &[&str] = &[
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Oliver", "Sophia", "Elijah", "Isabella", "James",
    "Mia", "William", "Amelia", "Benjamin", "Harper", "Lucas", "Evelyn", "Henry", "Abigail",
    "Alexander", "Emily", "Daniel", "Ella", "Mateo", "Sofia", "Jackson", "Camila", "Sebastian",
    "Aria", "Jack", "Scarlett", "Aiden", "Chloe", "Samuel", "Layla", "David", "Nora", "Joseph",
    "Lily", "Carter", "Hannah", "Wyatt", "Zoe", "Julian", "Leah", "Gabriel", "Hazel", "Anthony",
    "Aurora", "Isaac", "Grace", "Luca", "Priya", "Arjun", "Mei", "Hiroshi", "Yuki", "Chen",
    "Fatima", "Omar", "Amara", "Kwame", "Ingrid", "Lars", "Elena", "Diego", "Lucia", "Mateus",
    "Aisha", "Tariq", "Siobhan", "Niamh", "Freya", "Sven", "Anika", "Ravi", "Sara", "Jonas",
];

#[rustfmt::skip]
const LAST_NAMES: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera",
    "Campbell", "Mitchell", "Carter", "Roberts", "Patel", "Kim", "Tanaka", "Suzuki", "Wang",
    "Zhang", "Singh", "Kumar", "Okafor", "Mensah", "Müller", "Schmidt", "Fischer", "Rossi",
    "Bianchi", "Dubois", "Moreau", "Silva", "Santos", "Kowalski", "Novak", "Andersson",
    "Johansson", "Nielsen", "Murphy", "O'Brien", "Kelly", "Haddad", "Cohen", "Ivanova",
];

/// Cities users live in, with their countries.
const PLACES: &[(&str, &str)] = &[
    ("New York", "United States"),
    ("San Francisco", "United States"),
    ("Chicago", "United States"),
    ("Austin", "United States"),
    ("Seattle", "United States"),
    ("Boston", "United States"),
    ("Denver", "United States"),
    ("Miami", "United States"),
    ("Toronto", "Canada"),
    ("Vancouver", "Canada"),
    ("Montreal", "Canada"),
    ("Mexico City", "Mexico"),
    ("São Paulo", "Brazil"),
    ("Buenos Aires", "Argentina"),
    ("London", "United Kingdom"),
    ("Manchester", "United Kingdom"),
    ("Edinburgh", "United Kingdom"),
    ("Dublin", "Ireland"),
    ("Paris", "France"),
    ("Lyon", "France"),
    ("Berlin", "Germany"),
    ("Munich", "Germany"),
    ("Hamburg", "Germany"),
    ("Amsterdam", "Netherlands"),
    ("Madrid", "Spain"),
    ("Barcelona", "Spain"),
    ("Milan", "Italy"),
    ("Rome", "Italy"),
    ("Lisbon", "Portugal"),
    ("Stockholm", "Sweden"),
    ("Copenhagen", "Denmark"),
    ("Oslo", "Norway"),
    ("Warsaw", "Poland"),
    ("Zurich", "Switzerland"),
    ("Tokyo", "Japan"),
    ("Osaka", "Japan"),
    ("Seoul", "South Korea"),
    ("Singapore", "Singapore"),
    ("Bangalore", "India"),
    ("Mumbai", "India"),
    ("Sydney", "Australia"),
    ("Melbourne", "Australia"),
    ("Auckland", "New Zealand"),
    ("Cape Town", "South Africa"),
    ("Lagos", "Nigeria"),
    ("Nairobi", "Kenya"),
];

/// Mail domains (reserved example domains: the addresses must never reach anyone).
const MAIL_DOMAINS: &[&str] = &["example.com", "example.net", "example.org", "mail.example"];

/// Brands users name as preferred, by category (same order as [`CATEGORIES`]).
const BRANDS: [&[&str]; 8] = [
    &["Apple", "Samsung", "Sony", "Logitech", "Anker", "Bose"],
    &[
        "Penguin Random House",
        "O'Reilly",
        "HarperCollins",
        "Scholastic",
    ],
    &["KitchenAid", "OXO", "Le Creuset", "Dyson", "Instant Pot"],
    &["Nike", "Patagonia", "The North Face", "Garmin", "Yeti"],
    &["Levi's", "Uniqlo", "Adidas", "Zara", "H&M"],
    &["LEGO", "Hasbro", "Mattel", "Ravensburger"],
    &["L'Oréal", "CeraVe", "Clinique", "The Ordinary"],
    &["Lavazza", "Nature's Path", "Barilla", "Kind"],
];

/// Sign-up dates fall in [2016-01-01, 2016-01-01 + JOIN_SPAN_DAYS).
const JOIN_EPOCH_DAYS: i64 = 16_801; // 2016-01-01 as days since 1970-01-01
const JOIN_SPAN_DAYS: u64 = 3_500; // up to late 2025

/// The directory's draws over the shared [`SplitMix64`]. Every reduction to `0..n` is
/// by multiply-high ([`SplitMix64::below_multiply_high`]): the directory was generated
/// that way and `the_data_set_is_pinned` pins it.
trait DirectoryRng {
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize;
    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: usize) -> bool;
    fn pick<T: Copy>(&mut self, items: &[T]) -> T;
}

impl DirectoryRng for SplitMix64 {
    fn below(&mut self, n: usize) -> usize {
        self.below_multiply_high(n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Builds `count` users from `seed`; the same arguments always give the same users.
pub fn generate(seed: u64, count: usize) -> Vec<User> {
    let mut rng = SplitMix64::new(seed);
    let mut emails_taken: HashMap<String, u32> = HashMap::new();
    (1..=count)
        .map(|n| {
            let first = rng.pick(FIRST_NAMES);
            let last = rng.pick(LAST_NAMES);
            let (city, country) = rng.pick(PLACES);
            let domain = rng.pick(MAIL_DOMAINS);
            let email = unique_email(&mut emails_taken, first, last, domain);
            let joined_at = iso_date(JOIN_EPOCH_DAYS + rng.below(JOIN_SPAN_DAYS as usize) as i64);
            let membership_tier = match rng.below(100) {
                0..45 => Tier::Bronze,
                45..75 => Tier::Silver,
                75..93 => Tier::Gold,
                _ => Tier::Platinum,
            };
            let preferences = preferences(&mut rng, membership_tier);
            User {
                id: n.to_string(),
                name: format!("{first} {last}"),
                email,
                city,
                country,
                joined_at,
                membership_tier,
                preferences,
            }
        })
        .collect()
}

fn preferences(rng: &mut SplitMix64, tier: Tier) -> Preferences {
    // One to three distinct categories, kept in catalog order.
    let wanted = 1 + rng.below(3);
    let mut chosen = [false; CATEGORIES.len()];
    let mut picked = 0;
    while picked < wanted {
        let i = rng.below(CATEGORIES.len());
        if !chosen[i] {
            chosen[i] = true;
            picked += 1;
        }
    }
    let categories: Vec<usize> = (0..CATEGORIES.len()).filter(|&i| chosen[i]).collect();

    // One to three brands drawn from the favourite categories' brands.
    let mut brands: Vec<&'static str> = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let category = rng.pick(&categories);
        let brand = rng.pick(BRANDS[category]);
        if !brands.contains(&brand) {
            brands.push(brand);
        }
    }

    // Higher tiers shop in higher bands.
    let floors: &[u32] = match tier {
        Tier::Bronze => &[0, 5, 10],
        Tier::Silver => &[0, 10, 20, 25],
        Tier::Gold => &[10, 25, 50],
        Tier::Platinum => &[25, 50, 100],
    };
    let ceilings: &[u32] = match tier {
        Tier::Bronze => &[50, 75, 100, 150],
        Tier::Silver => &[100, 150, 250, 300],
        Tier::Gold => &[250, 400, 500, 750],
        Tier::Platinum => &[500, 1000, 1500, 2500],
    };
    let price_range = PriceRange {
        min: rng.pick(floors),
        max: rng.pick(ceilings),
    };

    Preferences {
        favorite_categories: categories.into_iter().map(|i| CATEGORIES[i]).collect(),
        preferred_brands: brands,
        price_range,
        newsletter: rng.chance(60),
    }
}

/// `first.last@domain`, lower-case ASCII, with a number appended from the second
/// holder of the same address on (`jane.doe2@...`).
fn unique_email(taken: &mut HashMap<String, u32>, first: &str, last: &str, domain: &str) -> String {
    let local = format!("{}.{}", ascii_slug(first), ascii_slug(last));
    let base = format!("{local}@{domain}");
    let seen = taken.entry(base.clone()).or_insert(0);
    *seen += 1;
    if *seen == 1 {
        base
    } else {
        format!("{local}{seen}@{domain}")
    }
}

/// Lower-case ASCII letters only: accents folded ("Müller" -> "muller"), apostrophes
/// and spaces dropped ("O'Brien" -> "obrien").
fn ascii_slug(name: &str) -> String {
    name.chars()
        .filter_map(|c| {
            let folded = match c {
                'á' | 'à' | 'â' | 'ä' | 'ã' | 'Á' | 'Ä' => 'a',
                'é' | 'è' | 'ê' | 'ë' | 'É' => 'e',
                'í' | 'ì' | 'î' | 'ï' => 'i',
                'ó' | 'ò' | 'ô' | 'ö' | 'õ' | 'Ö' => 'o',
                'ú' | 'ù' | 'û' | 'ü' | 'Ü' => 'u',
                'ç' => 'c',
                'ñ' => 'n',
                c => c,
            };
            folded
                .is_ascii_alphanumeric()
                .then(|| folded.to_ascii_lowercase())
        })
        .collect()
}

/// Formats days since 1970-01-01 as `YYYY-MM-DD` (Hinnant's civil-from-days).
fn iso_date(days_since_epoch: i64) -> String {
    let z = days_since_epoch + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn generation_is_deterministic() {
        assert_eq!(generate(SEED, USER_COUNT), generate(SEED, USER_COUNT));
        assert_eq!(users(), generate(SEED, USER_COUNT).as_slice());
        assert_ne!(generate(SEED, 10), generate(SEED + 1, 10));
    }

    /// Pins the data set: if this fails, the generator changed, and everything that knows
    /// a user by id (docs, demos, other services' tests) now sees different people.
    #[test]
    fn the_data_set_is_pinned() {
        let user = serde_json::to_value(user_by_id("456")).expect("serializable");
        let pinned = serde_json::json!({
            "id": "456",
            "name": "Mateo Martin",
            "email": "mateo.martin@mail.example",
            "city": "Berlin",
            "country": "Germany",
            "joinedAt": "2017-07-25",
            "membershipTier": "silver",
            "preferences": {
                "favoriteCategories": ["Electronics", "Sports & Outdoors", "Clothing"],
                "preferredBrands": ["Garmin", "Zara", "Levi's"],
                "priceRange": { "min": 0, "max": 250 },
                "newsletter": true
            }
        });
        assert_eq!(user, pinned);

        // FNV-1a over the whole serialized directory.
        let all = serde_json::to_vec(users()).expect("serializable");
        let digest = all.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        assert_eq!(digest, PINNED_DIGEST, "directory digest is {digest:#018x}");
    }

    const PINNED_DIGEST: u64 = 0x6f55_7c31_6353_1f16;

    #[test]
    fn user_456_exists_and_ids_are_sequential() {
        assert_eq!(users().len(), USER_COUNT);
        for (i, user) in users().iter().enumerate() {
            assert_eq!(user.id, (i + 1).to_string());
        }
        assert_eq!(user_by_id("456").map(|u| u.id.as_str()), Some("456"));
    }

    #[test]
    fn lookup_by_id_is_exact() {
        assert!(user_by_id("1").is_some());
        assert!(user_by_id("500").is_some());
        for id in ["0", "501", "0456", "+456", " 456", "", "abc", "-1", "99999"] {
            assert!(user_by_id(id).is_none(), "{id:?} should not resolve");
        }
    }

    #[test]
    fn records_are_well_formed() {
        let mut emails = HashSet::new();
        for user in users() {
            assert!(
                emails.insert(user.email.as_str()),
                "duplicate {}",
                user.email
            );
            let (local, domain) = user.email.split_once('@').expect("an @");
            assert!(MAIL_DOMAINS.contains(&domain));
            assert!(local.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
            assert_eq!(user.name.split(' ').count(), 2, "{}", user.name);
            assert!(PLACES.contains(&(user.city, user.country)));
            assert!(user.joined_at.as_str() >= "2016-01-01" && user.joined_at.as_str() < "2026");
            let prefs = &user.preferences;
            assert!((1..=3).contains(&prefs.favorite_categories.len()));
            assert!(
                prefs
                    .favorite_categories
                    .iter()
                    .all(|c| CATEGORIES.contains(c))
            );
            assert!((1..=3).contains(&prefs.preferred_brands.len()));
            assert!(prefs.price_range.min < prefs.price_range.max);
        }
        // Every tier and category actually occurs.
        for tier in Tier::ALL {
            assert!(
                users().iter().any(|u| u.membership_tier == tier),
                "{tier:?}"
            );
        }
        for category in CATEGORIES {
            assert!(
                users()
                    .iter()
                    .any(|u| u.preferences.favorite_categories.contains(&category)),
                "{category}"
            );
        }
    }

    #[test]
    fn user_serializes_with_camel_case_fields() {
        let json = serde_json::to_value(&users()[0]).expect("serializable");
        for key in [
            "id",
            "name",
            "email",
            "city",
            "country",
            "joinedAt",
            "membershipTier",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        let prefs = &json["preferences"];
        for key in [
            "favoriteCategories",
            "preferredBrands",
            "priceRange",
            "newsletter",
        ] {
            assert!(prefs.get(key).is_some(), "missing preferences.{key}");
        }
        assert!(prefs["priceRange"]["min"].is_number());
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(JOIN_EPOCH_DAYS), "2016-01-01");
        assert_eq!(iso_date(19_782), "2024-02-29");
        assert_eq!(iso_date(19_783), "2024-03-01");
        assert_eq!(iso_date(-1), "1969-12-31");
    }

    #[test]
    fn slugs_fold_to_ascii() {
        assert_eq!(ascii_slug("Müller"), "muller");
        assert_eq!(ascii_slug("O'Brien"), "obrien");
        assert_eq!(ascii_slug("São Paulo"), "saopaulo");
    }

    #[test]
    fn emails_get_numbered_on_collision() {
        let mut taken = HashMap::new();
        assert_eq!(
            unique_email(&mut taken, "Jane", "Doe", "example.com"),
            "jane.doe@example.com"
        );
        assert_eq!(
            unique_email(&mut taken, "Jane", "Doe", "example.com"),
            "jane.doe2@example.com"
        );
        assert_eq!(
            unique_email(&mut taken, "Jane", "Doe", "example.org"),
            "jane.doe@example.org"
        );
    }

    #[test]
    fn search_ignores_case_and_counts_all_matches() {
        let (total, page) = search("LONDON", 5);
        let expected = users().iter().filter(|u| u.city == "London").count();
        assert!(expected > 5, "the data set should have several Londoners");
        assert_eq!(total, expected);
        assert_eq!(page.len(), 5);
        let user = user_by_id("456").expect("exists");
        let (_, page) = search(&user.email.to_uppercase(), 10);
        assert!(page.iter().any(|u| u.id == "456"));
        assert_eq!(search("no such person zzz", 10).0, 0);
    }

    #[test]
    fn list_filters_and_pages() {
        let (total, page) = list(&ListFilter::default(), 490, 20);
        assert_eq!(total, USER_COUNT);
        assert_eq!(page.len(), 10);
        assert_eq!(page[0].id, "491");
        assert_eq!(list(&ListFilter::default(), 1000, 20), (USER_COUNT, vec![]));

        let gold = ListFilter {
            tier: Some(Tier::Gold),
            country: Some("japan"),
        };
        let (total, page) = list(&gold, 0, 100);
        assert!(total > 0);
        assert_eq!(page.len(), total.min(100));
        assert!(
            page.iter()
                .all(|u| u.membership_tier == Tier::Gold && u.country == "Japan")
        );
    }

    #[test]
    fn tiers_round_trip() {
        for tier in Tier::ALL {
            assert_eq!(Tier::parse(tier.as_str()), Some(tier));
        }
        assert_eq!(Tier::parse("Gold"), None);
    }
}
