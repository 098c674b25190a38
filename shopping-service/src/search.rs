//! Read-only queries over the catalog: ranked text search ([`SearchIndex`]), attribute
//! filters ([`Filter`]) and per-category summaries. Stock is passed in (a snapshot from
//! the store) since it changes at run time; nothing here holds state besides the
//! search index, built once from the immutable catalog.

use serde_json::{Value, json};

use crate::{
    data::{Catalog, Category, dollars},
    recommend::Scored,
};

/// Splits text into lower-case alphanumeric words, with a light plural stemming so
/// "headphone" and "headphones" meet.
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| stem(&w.to_lowercase()))
        .collect()
}

fn stem(word: &str) -> String {
    if word.len() > 3 && word.ends_with('s') && !word.ends_with("ss") {
        word[..word.len() - 1].to_string()
    } else {
        word.to_string()
    }
}

/// Per-product tokenised fields, with their weight in the ranking.
#[derive(Debug)]
struct Fields {
    /// (weight, tokens) for name, brand, tags, category, description.
    weighted: [(f64, Vec<String>); 5],
    name_lower: String,
}

/// The search index over one catalog.
#[derive(Debug)]
pub struct SearchIndex {
    fields: Vec<Fields>,
}

impl SearchIndex {
    pub fn new(catalog: &Catalog) -> SearchIndex {
        let fields = catalog
            .products
            .iter()
            .map(|p| Fields {
                weighted: [
                    (3.0, tokens(&p.name)),
                    (2.5, tokens(p.brand)),
                    (2.0, tokens(&p.tags.join(" "))),
                    (1.5, tokens(p.category.as_str())),
                    (1.0, tokens(&p.description)),
                ],
                name_lower: p.name.to_lowercase(),
            })
            .collect();
        SearchIndex { fields }
    }

    /// Products matching at least one query word, best first: more query words
    /// matched, then a higher weighted score (name > brand > tags > category >
    /// description; whole words beat prefixes), then rating. Returns the number of
    /// matches and the first `limit`. `None` if the query has no words.
    pub fn search(
        &self,
        catalog: &Catalog,
        query: &str,
        limit: usize,
    ) -> Option<(usize, Vec<Scored>)> {
        let words = tokens(query);
        if words.is_empty() {
            return None;
        }
        let phrase = query.trim().to_lowercase();
        let mut hits: Vec<(usize, Scored)> = self
            .fields
            .iter()
            .enumerate()
            .filter_map(|(idx, f)| {
                let mut matched = 0;
                let mut score = 0.0;
                for w in &words {
                    let best = f
                        .weighted
                        .iter()
                        .filter_map(|(weight, toks)| {
                            if toks.iter().any(|t| t == w) {
                                Some(*weight)
                            } else if w.len() >= 3 && toks.iter().any(|t| t.starts_with(w.as_str()))
                            {
                                Some(weight * 0.7)
                            } else {
                                None
                            }
                        })
                        .fold(0.0, f64::max);
                    if best > 0.0 {
                        matched += 1;
                        score += best;
                    }
                }
                if matched == 0 {
                    return None;
                }
                if words.len() > 1 && f.name_lower.contains(&phrase) {
                    score += 2.0;
                }
                score += catalog.products[idx].rating() / 10.0;
                Some((
                    matched,
                    Scored {
                        idx,
                        score,
                        reasons: Vec::new(),
                    },
                ))
            })
            .collect();
        hits.sort_by(|(ma, a), (mb, b)| {
            mb.cmp(ma)
                .then(
                    b.score
                        .partial_cmp(&a.score)
                        .unwrap_or(std::cmp::Ordering::Equal),
                )
                .then(a.idx.cmp(&b.idx))
        });
        let total = hits.len();
        Some((
            total,
            hits.into_iter().take(limit).map(|(_, s)| s).collect(),
        ))
    }
}

/// Attribute filters; every given condition must hold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Filter {
    pub category: Option<Category>,
    pub min_price: Option<f64>,
    pub max_price: Option<f64>,
    /// `Some(true)`: only products in stock; `Some(false)`: only sold-out ones.
    pub in_stock: Option<bool>,
    pub min_rating: Option<f64>,
}

impl Filter {
    /// Indices of the matching products, in id order.
    pub fn apply(&self, catalog: &Catalog, stock: &[u32]) -> Vec<usize> {
        catalog
            .products
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                self.category.is_none_or(|c| p.category == c)
                    && self.min_price.is_none_or(|m| p.price() >= m)
                    && self.max_price.is_none_or(|m| p.price() <= m)
                    && self
                        .in_stock
                        .is_none_or(|want| (stock.get(*i).copied().unwrap_or(0) > 0) == want)
                    && self.min_rating.is_none_or(|m| p.rating() >= m)
            })
            .map(|(i, _)| i)
            .collect()
    }
}

/// Every category with its product count, in-stock count, price range, average price
/// and average rating.
pub fn category_summaries(catalog: &Catalog, stock: &[u32]) -> Vec<Value> {
    Category::ALL
        .iter()
        .map(|&c| {
            let members: Vec<usize> = (0..catalog.products.len())
                .filter(|&i| catalog.products[i].category == c)
                .collect();
            let prices: Vec<u64> = members.iter().map(|&i| catalog.products[i].price_cents).collect();
            let n = members.len().max(1) as u64;
            let rating_sum: u64 = members
                .iter()
                .map(|&i| u64::from(catalog.products[i].rating_tenths))
                .sum();
            json!({
                "name": c.as_str(),
                "productCount": members.len(),
                "inStockCount": members.iter().filter(|&&i| stock.get(i).copied().unwrap_or(0) > 0).count(),
                "minPrice": dollars(prices.iter().copied().min().unwrap_or(0)),
                "maxPrice": dollars(prices.iter().copied().max().unwrap_or(0)),
                "averagePrice": dollars(prices.iter().sum::<u64>() / n),
                "averageRating": (rating_sum as f64 / n as f64).round() / 10.0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::CATALOG;

    #[test]
    fn tokenising() {
        assert_eq!(
            tokens("Wireless Headphones, 4K!"),
            vec!["wireless", "headphone", "4k"]
        );
        assert_eq!(tokens("glass"), vec!["glass"]);
        assert!(tokens("  !! ").is_empty());
    }

    #[test]
    fn search_ranks_name_matches_first() {
        let index = SearchIndex::new(&CATALOG);
        let (total, hits) = index
            .search(&CATALOG, "wireless headphones", 10)
            .expect("words");
        assert!(total >= hits.len() && !hits.is_empty());
        let first = &CATALOG.products[hits[0].idx];
        assert!(first.name.contains("Wireless Headphones"), "{}", first.name);
        assert!(index.search(&CATALOG, "?!", 10).is_none());
        let (none, _) = index.search(&CATALOG, "zzzzqqq", 10).expect("words");
        assert_eq!(none, 0);
        // Brand search finds that brand's products.
        let (_, hits) = index.search(&CATALOG, "Sonora", 5).expect("words");
        assert!(
            hits.iter()
                .all(|s| CATALOG.products[s.idx].brand == "Sonora")
        );
        // Prefix search.
        let (n, _) = index.search(&CATALOG, "espres", 5).expect("words");
        assert!(n > 0);
    }

    #[test]
    fn filters_combine() {
        let stock: Vec<u32> = CATALOG.products.iter().map(|p| p.initial_stock).collect();
        let f = Filter {
            category: Some(Category::Electronics),
            min_price: Some(50.0),
            max_price: Some(300.0),
            in_stock: Some(true),
            min_rating: Some(4.0),
        };
        let hits = f.apply(&CATALOG, &stock);
        assert!(!hits.is_empty());
        for i in &hits {
            let p = &CATALOG.products[*i];
            assert_eq!(p.category, Category::Electronics);
            assert!((50.0..=300.0).contains(&p.price()) && p.rating() >= 4.0 && stock[*i] > 0);
        }
        assert!(hits.windows(2).all(|w| w[0] < w[1]));
        let sold_out = Filter {
            in_stock: Some(false),
            ..Filter::default()
        }
        .apply(&CATALOG, &stock);
        assert!(!sold_out.is_empty() && sold_out.iter().all(|&i| stock[i] == 0));
        assert_eq!(
            Filter::default().apply(&CATALOG, &stock).len(),
            CATALOG.products.len()
        );
    }

    #[test]
    fn summaries_cover_all_categories() {
        let stock: Vec<u32> = CATALOG.products.iter().map(|p| p.initial_stock).collect();
        let s = category_summaries(&CATALOG, &stock);
        assert_eq!(s.len(), 8);
        let total: u64 = s.iter().filter_map(|c| c["productCount"].as_u64()).sum();
        assert_eq!(total as usize, CATALOG.products.len());
        for c in &s {
            assert!(c["minPrice"].as_f64() <= c["maxPrice"].as_f64());
        }
    }
}
